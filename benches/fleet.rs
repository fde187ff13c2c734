//! The fleet store against the file store in the same run: claims with 1, 5 and 20 processes at
//! once, a whole `checkpoint` process, and 20 processes checkpointing at once, each connecting
//! to the server itself and through `orchestrator fleet pool` (the per-machine pool `run` hosts
//! for its agents).
//!
//! Run with `cargo bench --bench fleet`. It starts a throwaway PostgreSQL cluster of its own
//! (`initdb` and `pg_ctl` into a temp dir, unix socket only), and skips where PostgreSQL is not
//! installed. Prints medians, rates and ratios; asserts nothing but that every task was claimed
//! once and no checkpoint was lost.

use orchestrator::core::stack::{Settings, Task, TaskStack};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TASKS: usize = 400;
/// Concurrent processes, and how many claims each makes in turn.
const CLAIM_LEVELS: [(usize, usize); 3] = [(1, 40), (5, 12), (20, 5)];
const CHECKPOINT_RUNS: usize = 50;
const WRITERS: usize = 20;
const CHECKPOINTS_PER_WRITER: usize = 25;
/// Each machine's clock is this minute plus its number in seconds. `start` makes a session id from the
/// time and checks it only against the sessions of its own machine, so two machines starting in
/// the same second share one id, and one row of `orchestrator.session`, in the store; distinct
/// seconds keep the fleet's sessions apart, as machines' real clocks mostly do.
const NOW_MINUTE: &str = "2025-11-06T00:13";

fn main() {
    let Some(pg) = PgCluster::start_durable() else {
        println!("fleet: SKIPPED: PostgreSQL's initdb and pg_ctl are not installed");
        return;
    };
    let stack = stack_text();
    let home = tempfile::tempdir().expect("temp home");
    let bench = Bench {
        pg,
        stack,
        home: home.path().to_path_buf(),
    };
    println!(
        "fleet: PostgreSQL store (own throwaway cluster, unix socket) beside the file store; each figure is a median"
    );
    let mut rows = Vec::new();
    for (processes, rounds) in CLAIM_LEVELS {
        rows.push(bench.claims(processes, rounds));
    }
    let single = bench.checkpoints();
    let concurrent = bench.concurrent();

    println!();
    println!("| measure | PostgreSQL | file store | ratio |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        println!(
            "| claims, {:>2} processes | {:.0}/s, median {:.1} ms (through the pool {:.0}/s, {:.1} ms) | {:.0}/s, median {:.1} ms | {:.1}x ({:.1}x) |",
            row.processes,
            row.pg.rate,
            ms(row.pg.median),
            row.pooled.rate,
            ms(row.pooled.median),
            row.file.rate,
            ms(row.file.median),
            ms(row.pg.median) / ms(row.file.median),
            ms(row.pooled.median) / ms(row.file.median)
        );
    }
    println!(
        "| `checkpoint` process (git rev-parse {:.2} ms) | {:.2} ms | {:.2} ms | {:.1}x (goal <= 3x) |",
        ms(single.git),
        ms(single.pg),
        ms(single.file),
        ms(single.pg) / ms(single.file)
    );
    println!(
        "| `checkpoint` process through the pool | {:.2} ms | {:.2} ms | {:.1}x (goal <= 3x) |",
        ms(single.pooled),
        ms(single.file),
        ms(single.pooled) / ms(single.file)
    );
    println!(
        "| {WRITERS} processes checkpointing | {:.0}/s, none lost | {:.0}/s, none lost | |",
        concurrent.pg, concurrent.file
    );
    println!(
        "| {WRITERS} processes checkpointing through the pool | {:.0}/s (goal >= 500/s), none lost | {:.0}/s, none lost | |",
        concurrent.pooled, concurrent.file
    );
}

struct Bench {
    pg: PgCluster,
    stack: String,
    home: PathBuf,
}

struct Rate {
    rate: f64,
    median: Duration,
    /// The slowest tenth shows who waits: a lock is not handed out in turn.
    p90: Duration,
}

struct ClaimRow {
    processes: usize,
    pg: Rate,
    pooled: Rate,
    file: Rate,
}

struct Single {
    pg: Duration,
    pooled: Duration,
    file: Duration,
    git: Duration,
}

struct Concurrent {
    pg: f64,
    pooled: f64,
    file: f64,
}

impl Bench {
    /// A workspace with the stack committed; on the fleet store when `store` is given.
    fn machine(&self, number: i64, store: Option<&str>) -> Machine {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("task_stack.json"), &self.stack).expect("write the stack");
        let machine = Machine {
            dir,
            home: self.home.clone(),
            store: store.map(str::to_string),
            pool: None,
            now: format!("{NOW_MINUTE}:{:02}Z", number % 60),
        };
        commit_everything(machine.root(), &machine.home);
        machine
    }

    /// A fresh database holding the stack, and its URL.
    fn database(&self, name: &str) -> String {
        let mut client = client(&self.pg, "postgres");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the database");
        let url = self.pg.url_of(name);
        let seed = self.machine(0, Some(&url));
        seed.ok(&["fleet", "init"]);
        seed.ok(&["fleet", "import"]);
        url
    }

    /// `processes` processes at once, each making `rounds` claims in turn, each claim by an agent
    /// of its own: on the fleet store each process is a machine of its own (connecting itself,
    /// then through one pool), on the file store all share one workspace.
    fn claims(&self, processes: usize, rounds: usize) -> ClaimRow {
        let pg = self.fleet_claims(&format!("claims{processes}"), processes, rounds, false);
        let pooled = self.fleet_claims(&format!("pooled{processes}"), processes, rounds, true);
        let shared = self.machine(0, None);
        let file = claim_run(&vec![&shared; processes], rounds);
        let row = ClaimRow {
            processes,
            pg,
            pooled,
            file,
        };
        println!(
            "claims, {processes:>2} processes x {rounds:>2}: PostgreSQL {:>4.0}/s median {:>6.1} ms p90 {:>6.1} ms   through the pool {:>4.0}/s median {:>6.1} ms p90 {:>6.1} ms   file store {:>4.0}/s median {:>6.1} ms p90 {:>6.1} ms   each task claimed once",
            row.pg.rate,
            ms(row.pg.median),
            ms(row.pg.p90),
            row.pooled.rate,
            ms(row.pooled.median),
            ms(row.pooled.p90),
            row.file.rate,
            ms(row.file.median),
            ms(row.file.p90)
        );
        row
    }

    /// The fleet half of [`Bench::claims`] in a database of its own; checks in the store's
    /// events that each task was claimed once.
    fn fleet_claims(&self, database: &str, processes: usize, rounds: usize, pooled: bool) -> Rate {
        let url = self.database(database);
        let mut machines: Vec<Machine> = (0..processes)
            .map(|n| self.machine(n as i64, Some(&url)))
            .collect();
        let pool = pooled.then(|| Pool::start(&machines[0]));
        if let Some(pool) = &pool {
            for machine in &mut machines {
                machine.pool = Some(pool.dir().to_path_buf());
            }
        }
        let rate = claim_run(&machines.iter().collect::<Vec<_>>(), rounds);
        let mut client = client(&self.pg, database);
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT task_id) FROM orchestrator.event WHERE kind = 'claim'",
                &[],
            )
            .expect("count the claims");
        let (claims, distinct): (i64, i64) = (row.get(0), row.get(1));
        let reclaims: i64 = client
            .query_one(
                "SELECT count(*) FROM orchestrator.event WHERE kind = 'reclaim'",
                &[],
            )
            .expect("count the reclaims")
            .get(0);
        let total = (processes * rounds) as i64;
        assert_eq!(
            (claims, distinct, reclaims),
            (total, total, 0),
            "the store logged claims that are not one per task"
        );
        rate
    }

    /// A whole `checkpoint` process on each store, alternating with git.
    fn checkpoints(&self) -> Single {
        let url = self.database("single");
        let fleet = self.machine(1, Some(&url));
        let pool = Pool::start(&fleet);
        let mut pooled = self.machine(2, Some(&url));
        pooled.pool = Some(pool.dir().to_path_buf());
        let file = self.machine(1, None);
        for m in [&fleet, &pooled, &file] {
            m.ok(&["start", "--agent", "bench"]);
        }
        let (mut on_pg, mut on_pool, mut on_file, mut git) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..CHECKPOINT_RUNS {
            let tokens = (1000 + i).to_string();
            let args = [
                "checkpoint",
                "parsed one more session",
                "--advance",
                "1",
                "--tokens",
                &tokens,
                "--exit-zero",
            ];
            on_pg.push(fleet.timed(&args).0);
            on_pool.push(pooled.timed(&args).0);
            on_file.push(file.timed(&args).0);
            git.push(timed(&mut fleet.git_rev_parse()).0);
        }
        let single = Single {
            pg: median(on_pg),
            pooled: median(on_pool),
            file: median(on_file),
            git: median(git),
        };
        println!(
            "checkpoint process: PostgreSQL {:>6.2} ms (through the pool {:.2} ms)   file store {:>6.2} ms   ratio {:.1}x, through the pool {:.1}x (goal <= 3x)   git rev-parse {:.2} ms (PostgreSQL {:.1}x git, file {:.1}x git)",
            ms(single.pg),
            ms(single.pooled),
            ms(single.file),
            ms(single.pg) / ms(single.file),
            ms(single.pooled) / ms(single.file),
            ms(single.git),
            ms(single.pg) / ms(single.git),
            ms(single.file) / ms(single.git)
        );
        single
    }

    /// 20 processes, each its own session on its own task, checkpointing as fast as they can:
    /// on PostgreSQL each connecting itself, then through one pool, then on the file store.
    fn concurrent(&self) -> Concurrent {
        let (pg_wall, pg_median) = self.fleet_writers("concurrent", false);
        let (pool_wall, pool_median) = self.fleet_writers("pooled", true);

        let shared = self.machine(0, None);
        let file_writers: Vec<(&Machine, String, String)> = (0..WRITERS)
            .map(|n| {
                let agent = format!("writer{n:02}");
                let task = shared.start(&agent);
                (&shared, agent, task)
            })
            .collect();
        let before = children_cpu();
        let (file_wall, file_median) = checkpoint_run(&file_writers);
        println!(
            "  CPU per checkpoint on the file store: the command {:.2} ms",
            ms(children_cpu() - before) / (WRITERS * CHECKPOINTS_PER_WRITER) as f64
        );
        for (_, _, task) in &file_writers {
            assert_eq!(
                shared.done(task),
                CHECKPOINTS_PER_WRITER as u64,
                "checkpoints on {task} were lost"
            );
        }

        let total = (WRITERS * CHECKPOINTS_PER_WRITER) as f64;
        let rates = Concurrent {
            pg: total / pg_wall.as_secs_f64(),
            pooled: total / pool_wall.as_secs_f64(),
            file: total / file_wall.as_secs_f64(),
        };
        println!(
            "concurrent: {WRITERS} processes x {CHECKPOINTS_PER_WRITER} checkpoints: PostgreSQL {:.2} s, {:.0} checkpoints/s, median {:.1} ms   through the pool {:.2} s, {:.0} checkpoints/s (goal >= 500/s), median {:.1} ms   file store {:.2} s, {:.0} checkpoints/s, median {:.1} ms   none lost",
            pg_wall.as_secs_f64(),
            rates.pg,
            ms(pg_median),
            pool_wall.as_secs_f64(),
            rates.pooled,
            ms(pool_median),
            file_wall.as_secs_f64(),
            rates.file,
            ms(file_median)
        );
        rates
    }

    /// The fleet half of [`Bench::concurrent`] in a database of its own: each writer a machine
    /// of its own, all through one pool when `pooled`; checks that no checkpoint was lost.
    fn fleet_writers(&self, database: &str, pooled: bool) -> (Duration, Duration) {
        let (timing, cpu) = self.fleet_writers_cpu(database, pooled);
        let per = |d: Duration| ms(d) / (WRITERS * CHECKPOINTS_PER_WRITER) as f64;
        println!(
            "  CPU per checkpoint{}: the command {:.2} ms, the pool {:.2} ms, the server {:.2} ms (so one server core alone serves {:.0}/s)",
            if pooled { " through the pool" } else { "" },
            per(cpu.commands),
            per(cpu.pool),
            per(cpu.server),
            1000.0 / (per(cpu.server) + per(cpu.pool)),
        );
        timing
    }

    fn fleet_writers_cpu(&self, database: &str, pooled: bool) -> ((Duration, Duration), CpuSplit) {
        let url = self.database(database);
        let mut fleet: Vec<Machine> = (0..WRITERS)
            .map(|n| self.machine(n as i64, Some(&url)))
            .collect();
        let pool = pooled.then(|| Pool::start(&fleet[0]));
        if let Some(pool) = &pool {
            for machine in &mut fleet {
                machine.pool = Some(pool.dir().to_path_buf());
            }
        }
        let writers: Vec<(&Machine, String, String)> = fleet
            .iter()
            .enumerate()
            .map(|(n, m)| {
                let agent = format!("writer{n:02}");
                let task = m.start(&agent);
                (m, agent, task)
            })
            .collect();
        let (commands, server, pool_cpu) = (
            children_cpu(),
            server_cpu(&self.pg),
            pool.as_ref().map_or(Duration::ZERO, Pool::cpu),
        );
        let timing = checkpoint_run(&writers);
        let cpu = CpuSplit {
            commands: children_cpu() - commands,
            server: server_cpu(&self.pg) - server,
            pool: pool.as_ref().map_or(Duration::ZERO, Pool::cpu) - pool_cpu,
        };
        let mut client = client(&self.pg, database);
        for (_, _, task) in &writers {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM orchestrator.event WHERE kind = 'checkpoint' AND task_id = $1),
                            (SELECT (doc->'progress'->>'done')::bigint FROM orchestrator.task WHERE id = $1)",
                    &[task],
                )
                .expect("count the checkpoints");
            let (events, done): (i64, i64) = (row.get(0), row.get(1));
            assert_eq!(
                (events, done),
                (CHECKPOINTS_PER_WRITER as i64, CHECKPOINTS_PER_WRITER as i64),
                "checkpoints on {task} were lost"
            );
        }
        (timing, cpu)
    }
}

/// Where the CPU time of a run went.
struct CpuSplit {
    /// The `checkpoint` processes.
    commands: Duration,
    pool: Duration,
    /// Every process of the cluster, backends that ended included.
    server: Duration,
}

/// User and system time of this process's children that ended (the commands it ran).
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// User and system time from `/proc/<pid>/stat` (proc(5): utime, stime, cutime and cstime are
/// fields 14 to 17, in clock ticks), with the children it waited for when `reaped`.
fn proc_cpu(pid: u32, reaped: bool) -> Option<(Duration, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it start past its `)`.
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split(' ').collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().unwrap_or(0);
    let ppid = field(4) as u32;
    let mut ticks = field(14) + field(15);
    if reaped {
        ticks += field(16) + field(17);
    }
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some((Duration::from_micros(ticks * 1_000_000 / per_second), ppid))
}

/// The server's CPU time so far: the postmaster with the backends it reaped, and the live ones.
fn server_cpu(pg: &PgCluster) -> Duration {
    let postmaster = pg.postmaster_pid();
    let mut total = proc_cpu(postmaster, true).map_or(Duration::ZERO, |(cpu, _)| cpu);
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((cpu, ppid)) = proc_cpu(pid, false)
            && ppid == postmaster
        {
            total += cpu;
        }
    }
    total
}

/// `orchestrator fleet pool` running for the bench's fleet, stopped when dropped.
struct Pool {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Pool {
    /// Starts the pool from `machine`'s workspace and waits for its line on stdout.
    fn start(machine: &Machine) -> Pool {
        let dir = tempfile::tempdir().expect("temp dir for the socket");
        let mut child = machine
            .orchestrator(&["fleet", "pool", "--socket"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fleet pool starts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("piped")),
            &mut line,
        )
        .expect("read the pool's line");
        assert!(
            line.contains("listening"),
            "fleet pool did not start: {line:?}"
        );
        Pool { child, dir }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn cpu(&self) -> Duration {
        proc_cpu(self.child.id(), false).map_or(Duration::ZERO, |(cpu, _)| cpu)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One thread per entry of `machines`, each running `rounds` claims in turn, each by an agent of
/// its own; every task handed out must be a different one.
fn claim_run(machines: &[&Machine], rounds: usize) -> Rate {
    let started = Instant::now();
    let results: Vec<Vec<(Duration, String)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = machines
            .iter()
            .enumerate()
            .map(|(p, machine)| {
                scope.spawn(move || {
                    (0..rounds)
                        .map(|r| {
                            let agent = format!("p{p:02}r{r:02}");
                            let (elapsed, out) =
                                machine.timed(&["start", "--agent", &agent, "--json"]);
                            (elapsed, task_of(&out))
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a claimer"))
            .collect()
    });
    let wall = started.elapsed();
    let (latencies, mut tasks): (Vec<Duration>, Vec<String>) =
        results.into_iter().flatten().unzip();
    let total = tasks.len();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), total, "a task was handed out twice");
    Rate {
        rate: total as f64 / wall.as_secs_f64(),
        median: percentile(&latencies, 50),
        p90: percentile(&latencies, 90),
    }
}

/// Each writer checkpoints its session `CHECKPOINTS_PER_WRITER` times, all at once; the wall
/// time of the whole and the median checkpoint.
fn checkpoint_run(writers: &[(&Machine, String, String)]) -> (Duration, Duration) {
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = writers
            .iter()
            .map(|(machine, agent, _)| {
                scope.spawn(move || {
                    (0..CHECKPOINTS_PER_WRITER)
                        .map(|i| {
                            let message = format!("unit {i}");
                            machine
                                .timed(&[
                                    "checkpoint",
                                    &message,
                                    "--advance",
                                    "1",
                                    "--tokens",
                                    "1000",
                                    "--exit-zero",
                                    "--agent",
                                    agent,
                                ])
                                .0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a writer"))
            .collect()
    });
    (started.elapsed(), median(latencies))
}

fn task_of(start_json: &str) -> String {
    let brief: serde_json::Value = serde_json::from_str(start_json).expect("one JSON object");
    brief["task"]
        .as_str()
        .expect("the claimed task")
        .to_string()
}

struct Machine {
    dir: tempfile::TempDir,
    home: PathBuf,
    store: Option<String>,
    /// `ORCHESTRATOR_POOL`: the commands connect through this pool.
    pool: Option<PathBuf>,
    now: String,
}

impl Machine {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the binary to success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.timed(args).1
    }

    /// Wall time and stdout of one run of the binary, which must succeed.
    fn timed(&self, args: &[&str]) -> (Duration, String) {
        let mut cmd = self.orchestrator(args);
        let (elapsed, out) = timed(&mut cmd);
        (elapsed, out)
    }

    /// Starts a session for `agent`; the task it claimed.
    fn start(&self, agent: &str) -> String {
        task_of(&self.ok(&["start", "--agent", agent, "--json"]))
    }

    /// Units done on `task`, as `task show --json` reports them.
    fn done(&self, task: &str) -> u64 {
        let value: serde_json::Value =
            serde_json::from_str(&self.ok(&["task", "show", task, "--json"])).expect("one object");
        let task = value.get("task").unwrap_or(&value);
        task["progress"]["done"].as_u64().expect("progress.done")
    }

    fn orchestrator(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        cmd.args(args)
            .current_dir(self.root())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("ORCHESTRATOR_NOW", &self.now)
            .env("RUST_LOG", "warn");
        if let Some(url) = &self.store {
            cmd.env("ORCHESTRATOR_STORE", url);
        }
        if let Some(pool) = &self.pool {
            cmd.env("ORCHESTRATOR_POOL", pool);
        }
        cmd
    }

    fn git_rev_parse(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(["rev-parse", "HEAD"])
            .current_dir(self.root())
            .env("HOME", &self.home);
        cmd
    }
}

/// Wall time and stdout of one run of `cmd`, which must succeed (its stderr shown if not).
fn timed(cmd: &mut Command) -> (Duration, String) {
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("the command starts");
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `TASKS` independent tasks of one priority, each with room for every checkpoint of the run.
fn stack_text() -> String {
    let mut stack = TaskStack::new(Settings::default());
    for i in 0..TASKS {
        stack.tasks.push(Task::new(
            format!("task_{i:04}"),
            format!("Integrate sessions {} to {}", i * 40 + 1, i * 40 + 40),
            1,
            1_000_000,
            Vec::new(),
        ));
    }
    stack.to_json()
}

#[path = "common/mod.rs"]
mod common;
/// The tests' throwaway cluster, started with fsync on: figures for a server as users run it.
#[path = "../tests/cli/pg_cluster.rs"]
mod pg_cluster;
use common::{commit_everything, median, ms};
use pg_cluster::PgCluster;

fn client(cluster: &PgCluster, database: &str) -> postgres::Client {
    postgres::Client::connect(&cluster.url_of(database), postgres::NoTls).expect("connect")
}

fn percentile(samples: &[Duration], percent: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

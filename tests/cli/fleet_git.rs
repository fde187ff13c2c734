//! A fleet's work coming home through git: machines with their own clones of one bare remote,
//! one queue on a real PostgreSQL cluster, every wrap commit pushed (replayed onto what other
//! machines pushed first), a real conflict parked on the remote and its task blocked.

use crate::common::{BIN, Ws};
use crate::pg_cluster::PgCluster;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use tempfile::TempDir;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A bare remote holding a workspace of `tasks` one-unit tasks whose settings name the fleet
/// store through `$FLEET_URL`, and the store holding the same stack.
struct Fleet {
    pg: PgCluster,
    remote: TempDir,
}

impl Fleet {
    fn start(tasks: usize) -> Option<Fleet> {
        let pg = PgCluster::start()?;
        let seed = Ws::new();
        for n in 0..tasks {
            let id = format!("t{n:03}");
            seed.ok(&["task", "add", &id, "--title", &id, "--total", "1"]);
        }
        seed.ok(&["config", "set", "store.postgres.url_env", "FLEET_URL"]);
        git(seed.path(), &["init", "-q", "-b", "main"]);
        git(seed.path(), &["add", "-A"]);
        git(
            seed.path(),
            &[
                "-c",
                "user.name=seed",
                "-c",
                "user.email=seed@example.invalid",
                "commit",
                "-q",
                "-m",
                "seed",
            ],
        );
        let remote = tempfile::tempdir().unwrap();
        git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
        git(
            seed.path(),
            &["push", "-q", remote.path().to_str().unwrap(), "main"],
        );
        let fleet = Fleet { pg, remote };
        let machine = fleet.machine();
        machine.ok(&["fleet", "init"]);
        machine.ok(&["fleet", "import"]);
        Some(fleet)
    }

    /// A new machine: its own clone of the remote.
    fn machine(&self) -> Machine {
        let ws = Ws::empty();
        git(
            ws.path(),
            &["clone", "-q", self.remote.path().to_str().unwrap(), "."],
        );
        Machine {
            ws,
            url: self.pg.url(),
        }
    }

    fn remote_git(&self, args: &[&str]) -> String {
        git(self.remote.path(), args)
    }
}

struct Machine {
    ws: Ws,
    url: String,
}

impl Machine {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.ws.command(args);
        cmd.env("FLEET_URL", &self.url).env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(BIN).parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

/// An agent (outside every clone) that does its task's one unit in `work/<task>.txt`.
fn agent() -> (TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nset -e\nmkdir -p work\nprintf '%s\\n' \"$ORCHESTRATOR_TASK\" > \"work/$ORCHESTRATOR_TASK.txt\"\norchestrator checkpoint \"did $ORCHESTRATOR_TASK\" --progress 1 --tokens 100\norchestrator wrap --done --summary \"did $ORCHESTRATOR_TASK\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let shown = path.to_str().unwrap().to_string();
    (dir, shown)
}

/// `orchestrator run ... -- AGENT` on every machine at once, each loop its own agent name;
/// asserts every loop ended with all tasks done (exit 0); returns each one's stderr.
fn run_on_all(machines: &[&Machine], options: &[&str], agent: &str) -> Vec<String> {
    let runs: Vec<_> = machines
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let name = format!("m{n:02}");
            let mut args = vec!["run", "--agent", &name, "--poll", "50ms", "--sleep", "0s"];
            args.extend(options);
            args.extend(["--", agent]);
            m.command(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    runs.into_iter()
        .enumerate()
        .map(|(n, run)| {
            let out = run.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(
                out.status.code(),
                Some(0),
                "machine {n}: {}\n{stderr}",
                String::from_utf8_lossy(&out.stdout),
            );
            stderr
        })
        .collect()
}

#[test]
fn twenty_machines_race_over_two_hundred_tasks_and_every_wrap_commit_reaches_the_remote() {
    const MACHINES: usize = 20;
    const TASKS: usize = 200;
    let Some(fleet) = Fleet::start(TASKS) else {
        return;
    };
    let (_agent_dir, agent) = agent();
    let machines: Vec<Machine> = (0..MACHINES).map(|_| fleet.machine()).collect();
    let machines: Vec<&Machine> = machines.iter().collect();
    let stderrs = run_on_all(&machines, &[], &agent);
    let not_pushed: Vec<String> = stderrs
        .iter()
        .enumerate()
        .flat_map(|(n, stderr)| {
            stderr
                .lines()
                .filter(|l| l.contains("stays on this machine"))
                .map(move |l| format!("machine {n}: {l}"))
        })
        .collect();

    // Every task done, each claimed exactly once, none taken over.
    let pg = &fleet.pg;
    assert_eq!(
        pg.psql("SELECT count(*) FROM orchestrator.task WHERE status = 'done'"),
        TASKS.to_string()
    );
    assert_eq!(
        pg.psql("SELECT count(*) || ':' || count(DISTINCT task_id) FROM orchestrator.event WHERE kind = 'claim'"),
        format!("{TASKS}:{TASKS}")
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM orchestrator.event WHERE kind IN ('reclaim', 'refused')"),
        "0"
    );

    // Every wrap commit is on the remote, with the work it carried.
    let subjects = fleet.remote_git(&["log", "--format=%s", "main"]);
    let wraps = subjects
        .lines()
        .filter(|s| s.starts_with("Session Wrap: "))
        .count();
    assert_eq!(wraps, TASKS, "{}", not_pushed.join("\n"));
    let files = fleet.remote_git(&["ls-tree", "-r", "--name-only", "main", "work/"]);
    assert_eq!(files.lines().count(), TASKS);
    // The remote's task_stack.json is the store's export: every task done.
    let stack: Value =
        serde_json::from_str(&fleet.remote_git(&["show", "main:task_stack.json"])).unwrap();
    let open: Vec<&Value> = stack["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] != "done")
        .collect();
    assert!(open.is_empty(), "{open:?}");
}

#[test]
fn a_wrap_commit_that_conflicts_with_the_remote_is_parked_there_and_its_task_blocked() {
    let Some(fleet) = Fleet::start(2) else { return };
    let a = fleet.machine();
    let b = fleet.machine();
    a.ok(&["start", "--agent", "a"]);
    b.ok(&["start", "--agent", "b"]);
    std::fs::write(a.ws.file("shared.txt"), "a's version\n").unwrap();
    std::fs::write(b.ws.file("shared.txt"), "b's version\n").unwrap();
    a.ok(&["checkpoint", "a", "--progress", "1", "--tokens", "10"]);
    b.ok(&["checkpoint", "b", "--progress", "1", "--tokens", "10"]);
    let first = a.json(&["wrap", "--done", "--summary", "a"]);
    assert_eq!(first["push"]["result"], "pushed", "{first}");

    let second = b.json(&["wrap", "--done", "--summary", "b"]);
    assert_eq!(second["push"]["result"], "conflict", "{second}");
    assert_eq!(second["push"]["paths"], serde_json::json!(["shared.txt"]));
    let parked = second["push"]["parked"].as_str().unwrap();
    assert_eq!(parked, "orchestrator/t001");
    // The work is on the remote, the task blocked with where to find it.
    assert_eq!(
        fleet.remote_git(&["show", &format!("{parked}:shared.txt")]),
        "b's version\n"
    );
    assert_eq!(
        fleet.remote_git(&["show", "main:shared.txt"]),
        "a's version\n"
    );
    let reason = fleet.pg.psql(
        "SELECT status || ' ' || (doc->>'blocked_reason') FROM orchestrator.task WHERE id = 't001'",
    );
    assert!(reason.starts_with("blocked push-conflict:"), "{reason}");
    assert!(reason.contains(parked), "{reason}");
    // b's clone follows the remote again, so its next wrap does not carry the conflict.
    assert_eq!(
        std::fs::read_to_string(b.ws.file("shared.txt")).unwrap(),
        "a's version\n"
    );
    assert_eq!(
        git(b.ws.path(), &["rev-parse", "main"]),
        fleet.remote_git(&["rev-parse", "main"])
    );
}

#[test]
fn workers_in_their_own_worktrees_on_a_fleet_store_integrate_and_push_every_task() {
    let Some(fleet) = Fleet::start(6) else { return };
    let (_agent_dir, agent) = agent();
    let a = fleet.machine();
    let b = fleet.machine();
    run_on_all(&[&a, &b], &["--workers", "2"], &agent);
    assert_eq!(
        fleet
            .pg
            .psql("SELECT count(*) FROM orchestrator.task WHERE status = 'done'"),
        "6"
    );
    let files = fleet.remote_git(&["ls-tree", "-r", "--name-only", "main", "work/"]);
    assert_eq!(files.lines().count(), 6, "{files}");
    let subjects = fleet.remote_git(&["log", "--format=%s", "main"]);
    assert_eq!(
        subjects
            .lines()
            .filter(|s| s.starts_with("Session Wrap: "))
            .count(),
        6,
        "{subjects}"
    );
}

#[test]
fn a_worktree_forked_before_a_push_replayed_its_base_still_integrates() {
    let Some(fleet) = Fleet::start(4) else { return };
    let a = fleet.machine();
    let b = fleet.machine();
    let unit = |m: &Machine, agent: &str, file: &str| {
        m.ok(&["start", "--agent", agent]);
        std::fs::write(m.ws.file(file), format!("{agent}\n")).unwrap();
        m.ok(&[
            "checkpoint",
            "unit",
            "--progress",
            "1",
            "--tokens",
            "10",
            "--agent",
            agent,
        ]);
        m.json(&["wrap", "--done", "--summary", "unit", "--agent", agent])
    };
    assert_eq!(unit(&a, "a", "a.txt")["push"]["result"], "pushed");

    // b's first wrap cannot reach the remote: its commit stays on b's main.
    let away = fleet.remote.path().with_extension("away");
    std::fs::rename(fleet.remote.path(), &away).unwrap();
    assert_eq!(unit(&b, "b", "b.txt")["push"]["result"], "failed");
    std::fs::rename(&away, fleet.remote.path()).unwrap();

    // A session in its own worktree, forked from that commit.
    let brief = b.json(&["start", "--agent", "w", "--worktree"]);
    let worktree = std::path::PathBuf::from(brief["worktree"]["path"].as_str().unwrap());
    std::fs::write(worktree.join("w.txt"), "w\n").unwrap();
    b.ok(&[
        "checkpoint",
        "unit",
        "--progress",
        "1",
        "--tokens",
        "10",
        "--agent",
        "w",
    ]);

    // Another session's wrap pushes, replaying b's main onto a's commit: the worktree's base
    // is no longer on b's main.
    let pushed = unit(&b, "c", "c.txt");
    assert_eq!(pushed["push"]["result"], "pushed", "{pushed}");
    assert_eq!(pushed["push"]["replayed"], 2, "{pushed}");

    let wrapped = b.json(&["wrap", "--done", "--summary", "unit", "--agent", "w"]);
    assert_eq!(wrapped["integrate"]["result"], "integrated", "{wrapped}");
    assert_eq!(wrapped["push"]["result"], "pushed", "{wrapped}");
    let files = fleet.remote_git(&["ls-tree", "--name-only", "main"]);
    for file in ["a.txt", "b.txt", "c.txt", "w.txt"] {
        assert!(files.lines().any(|l| l == file), "{file} missing: {files}");
    }
}

#[test]
fn a_wrap_commit_whose_push_failed_is_pushed_when_the_loop_stops() {
    let Some(fleet) = Fleet::start(2) else { return };
    let (_agent_dir, agent) = agent();
    let m = fleet.machine();
    m.ok(&["start", "--agent", "a"]);
    m.ok(&["checkpoint", "unit", "--progress", "1", "--tokens", "10"]);
    // The remote is out of reach for this wrap: its commit stays here.
    let away = fleet.remote.path().with_extension("away");
    std::fs::rename(fleet.remote.path(), &away).unwrap();
    let wrapped = m.json(&["wrap", "--done", "--summary", "unit"]);
    assert_eq!(wrapped["push"]["result"], "failed", "{wrapped}");
    std::fs::rename(&away, fleet.remote.path()).unwrap();
    let unpushed = git(m.ws.path(), &["rev-parse", "main"]);

    // The loop runs the last task; its own wrap pushes both, and nothing is left as it stops.
    let out = m.run(&["run", "--agent", "b", "--poll", "50ms", "--", &agent]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let remote_log = fleet.remote_git(&["log", "--format=%H", "main"]);
    assert!(
        remote_log.lines().any(|l| l == unpushed.trim()),
        "{remote_log}"
    );

    // A commit left unpushed by the last wrap of a loop goes when the loop stops.
    std::fs::rename(fleet.remote.path(), &away).unwrap();
    m.ok(&["task", "add", "t9", "--title", "t9", "--total", "1"]);
    let out = m.run(&["run", "--agent", "c", "--poll", "50ms", "--", &agent]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let last = git(m.ws.path(), &["rev-parse", "main"]);
    std::fs::rename(&away, fleet.remote.path()).unwrap();
    let out = m.run(&["run", "--agent", "c", "--poll", "50ms", "--", &agent]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(fleet.remote_git(&["rev-parse", "main"]).trim(), last.trim());
}

//! `fleet pool`, the session pooler for the fleet store, against real throwaway clusters:
//! commands through it share one warm server session, a killed pool falls back to direct
//! connections and is replaced, no session state passes from one client to the next, SCRAM
//! authentication, and its refusals.

use crate::common::Ws;
use crate::pg_cluster::PgCluster;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A workspace whose store at `url` holds two tasks.
fn machine(url: &str) -> Ws {
    let ws = Ws::new();
    ws.ok(&[
        "task", "add", "schema", "--title", "Schema", "--total", "40",
    ]);
    ws.ok(&["task", "add", "report", "--title", "Report", "--total", "3"]);
    for args in [&["fleet", "init"][..], &["fleet", "import"]] {
        let out = ws
            .command(args)
            .env("ORCHESTRATOR_STORE", url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    ws
}

/// A command of `ws` on the store at `url`, through the pool in `pool` when given.
fn on_store(ws: &Ws, url: &str, pool: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = ws.command(args);
    cmd.env("ORCHESTRATOR_STORE", url);
    if let Some(dir) = pool {
        cmd.env("ORCHESTRATOR_POOL", dir);
    }
    cmd
}

fn ok(mut cmd: Command) -> String {
    crate::common::success_stdout(&cmd.output().unwrap())
}

/// A `fleet pool` running in the foreground, killed if the test ends first.
struct RunningPool {
    child: Child,
    dir: PathBuf,
}

impl RunningPool {
    /// Starts `fleet pool` in `ws` and waits for its one line on stdout.
    fn start(ws: &Ws, url: &str, extra: &[&str]) -> RunningPool {
        let mut args = vec!["fleet", "pool"];
        args.extend(extra);
        // Its log in a file: a pipe nobody reads would fill and stop the pool.
        let log = tempfile::Builder::new()
            .prefix("pool-log")
            .tempfile_in(ws.home())
            .unwrap();
        let mut child = on_store(ws, url, None, &args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let (_, dir) = line
            .trim_end()
            .split_once(": export ORCHESTRATOR_POOL=")
            .unwrap_or_else(|| {
                let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("the pool's line: {line:?}\nits stderr: {stderr}")
            });
        assert!(line.starts_with("pool for postgresql://"), "{line}");
        assert!(line.contains(&format!(" listening in {dir}: ")), "{line}");
        RunningPool {
            child,
            dir: PathBuf::from(dir),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(".s.PGSQL.5432")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for RunningPool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server processes of sessions started as orchestrator's (application_name), as psql sees
/// them from its own session.
fn orchestrator_backends(pg: &PgCluster) -> Vec<String> {
    let pids = pg.psql(
        "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE application_name = 'orchestrator'",
    );
    pids.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits (a bounded time) for `sql` to give `want` on the server.
fn eventually(pg: &PgCluster, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = pg.psql(sql);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got}, never {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `start` and checkpoints through the pool: they succeed and one server session serves them
/// all, the same one after every command.
fn commands_share_one_backend(pg: &PgCluster, ws: &Ws, pool: &Path) {
    let url = pg.url();
    ok(on_store(
        ws,
        &url,
        Some(pool),
        &["start", "--agent", "alpha"],
    ));
    let first = orchestrator_backends(pg);
    assert_eq!(first.len(), 1, "one warm backend after start: {first:?}");
    for done in 1..=4 {
        let progress = done.to_string();
        ok(on_store(
            ws,
            &url,
            Some(pool),
            &[
                "checkpoint",
                "step",
                "--progress",
                &progress,
                "--tokens",
                "1000",
            ],
        ));
        assert_eq!(orchestrator_backends(pg), first, "after checkpoint {done}");
    }
    assert_eq!(
        pg.psql("SELECT doc->'progress'->>'done' FROM orchestrator.task WHERE id = 'schema'"),
        "4"
    );
}

#[test]
fn checkpoints_through_the_pool_share_one_server_session_and_sigterm_removes_its_socket() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = machine(&pg.url());
    let pool = RunningPool::start(&ws, &pg.url(), &[]);
    assert_eq!(pool.dir, ws.path().join(".orchestrator/pool"));
    let meta = std::fs::metadata(pool.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&pool.dir).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);

    commands_share_one_backend(&pg, &ws, &pool.dir);

    // A second pool on the same socket is refused while the first lives.
    let out = on_store(&ws, &pg.url(), None, &["fleet", "pool"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another pool already listens"), "{stderr}");

    let mut pool = pool;
    pool.signal("TERM");
    let status = pool.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!pool.socket().exists(), "the socket is removed on SIGTERM");
}

#[test]
fn a_killed_pool_leaves_commands_working_directly_and_a_new_pool_replaces_its_socket() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = machine(&pg.url());
    let url = pg.url();
    let mut pool = RunningPool::start(&ws, &url, &[]);
    ok(on_store(
        &ws,
        &url,
        Some(&pool.dir),
        &["start", "--agent", "alpha"],
    ));
    pool.signal("KILL");
    pool.child.wait().unwrap();
    assert!(
        std::fs::symlink_metadata(pool.socket()).is_ok(),
        "kill -9 leaves the socket file"
    );

    // Nothing listens on it: the command connects directly, as without a pool.
    ok(on_store(
        &ws,
        &url,
        Some(&pool.dir),
        &[
            "checkpoint",
            "direct",
            "--progress",
            "1",
            "--tokens",
            "1000",
        ],
    ));
    assert_eq!(
        pg.psql("SELECT doc->'progress'->>'done' FROM orchestrator.task WHERE id = 'schema'"),
        "1"
    );

    let again = RunningPool::start(&ws, &url, &[]);
    assert_eq!(again.dir, pool.dir);
    ok(on_store(
        &ws,
        &url,
        Some(&again.dir),
        &[
            "checkpoint",
            "pooled",
            "--progress",
            "2",
            "--tokens",
            "1000",
        ],
    ));
    assert_eq!(
        orchestrator_backends(&pg).len(),
        1,
        "the new pool keeps the session warm"
    );
}

#[test]
fn no_session_state_passes_from_one_client_to_the_next() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = machine(&pg.url());
    let url = pg.url();
    let pool = RunningPool::start(&ws, &url, &[]);
    ok(on_store(
        &ws,
        &url,
        Some(&pool.dir),
        &["start", "--agent", "alpha"],
    ));
    let warm = orchestrator_backends(&pg);
    assert_eq!(warm.len(), 1);
    let through_pool = format!(
        "host={} port=5432 user=postgres dbname=postgres",
        pool.dir.display()
    );

    // A session advisory lock and a setting, taken by a client that then leaves: the backend
    // it used is the warm one, and neither outlives the client.
    let said = pg.psql_at(
        &through_pool,
        "SELECT pg_advisory_lock(4242); SET work_mem = '7MB'; SELECT pg_backend_pid();",
    );
    assert_eq!(said.lines().last(), Some(warm[0].as_str()), "{said}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0"
    );
    assert_eq!(
        pg.psql_at(
            &through_pool,
            "SELECT current_setting('work_mem') || ' ' || pg_backend_pid()"
        ),
        format!("4MB {}", warm[0])
    );

    // A client killed inside a transaction: its backend is closed, never handed on.
    let mut open = Command::new(pg.psql_bin())
        .args(["-X", "-A", "-t", "-d", &through_pool])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    open.stdin
        .as_mut()
        .unwrap()
        .write_all(b"BEGIN;\nSELECT pg_advisory_xact_lock(77);\n")
        .unwrap();
    eventually(
        &pg,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        "1",
    );
    let in_transaction =
        pg.psql("SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction'");
    assert_eq!(in_transaction, warm[0]);
    open.kill().unwrap();
    open.wait().unwrap();
    eventually(
        &pg,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        "0",
    );
    eventually(
        &pg,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {in_transaction}"),
        "0",
    );
    ok(on_store(
        &ws,
        &url,
        Some(&pool.dir),
        &["checkpoint", "after", "--progress", "1", "--tokens", "1000"],
    ));
    let now = orchestrator_backends(&pg);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(
        now, warm,
        "a new backend, not the one left in a transaction"
    );
}

/// The pool authenticates as the server asks: SCRAM-SHA-256, MD5 or a cleartext password.
#[test]
fn a_server_that_asks_for_a_password_is_served_through_the_pool() {
    for (method, stored) in [
        ("scram-sha-256", "SCRAM-SHA-256$%"),
        ("md5", "md5%"),
        ("password", "SCRAM-SHA-256$%"),
    ] {
        let Some(pg) = PgCluster::start_with_password("s3cret-pool", method) else {
            return;
        };
        assert_eq!(
            pg.psql(&format!(
                "SELECT count(*) FROM pg_authid WHERE rolname = 'postgres' AND rolpassword LIKE '{stored}'"
            )),
            "1",
            "{method}"
        );
        let ws = machine(&pg.url());
        let pool = RunningPool::start(&ws, &pg.url(), &[]);
        commands_share_one_backend(&pg, &ws, &pool.dir);
    }
}

#[test]
fn fleet_pool_on_the_file_store_or_a_socket_path_too_long_is_refused() {
    let ws = Ws::new();
    let error = ws.refused(&["fleet", "pool"]);
    assert!(error.contains("file store"), "{error}");
    assert!(!ws.file(".orchestrator/pool").exists());

    let long = ws.path().join("d".repeat(120));
    let out = on_store(
        &ws,
        "postgresql://fleet@127.0.0.1:1/queue",
        None,
        &["fleet", "pool", "--socket", long.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--socket"), "{stderr}");
    assert!(!long.exists());
}

/// What `run` hosts: `pool::spawn` serves on a thread of its own, and dropping its handle stops
/// it and removes its socket.
#[test]
fn a_spawned_pool_serves_until_its_handle_is_dropped() {
    use orchestrator::store::postgres::{Target, pool};
    let Some(pg) = PgCluster::start() else { return };
    let ws = machine(&pg.url());
    let target = Target {
        url: pg.url(),
        source: "the test".into(),
        timeout: Duration::from_secs(10),
    };
    let dir = ws.path().join("spawned");
    let handle = pool::spawn(&target, &dir).unwrap();
    assert_eq!(handle.dir(), dir);
    commands_share_one_backend(&pg, &ws, &dir);
    drop(handle);
    assert!(!dir.join(".s.PGSQL.5432").exists());
    // The warm backends closed with it; a command still works, directly.
    eventually(
        &pg,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orchestrator'",
        "0",
    );
    ok(on_store(
        &ws,
        &pg.url(),
        Some(&dir),
        &[
            "checkpoint",
            "direct",
            "--progress",
            "5",
            "--tokens",
            "1000",
        ],
    ));
}

/// A pool serves only its own database: a client of another is refused with a message naming
/// the pool's, and a command on another store connects directly.
#[test]
fn a_command_on_another_database_goes_around_the_pool() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = machine(&pg.url());
    let pool = RunningPool::start(&ws, &pg.url(), &[]);
    pg.psql("CREATE DATABASE other");
    let other = pg.url_of("other");
    let elsewhere = machine(&other);
    ok(on_store(
        &elsewhere,
        &other,
        Some(&pool.dir),
        &["start", "--agent", "beta"],
    ));
    ok(on_store(
        &elsewhere,
        &other,
        Some(&pool.dir),
        &[
            "checkpoint",
            "around",
            "--progress",
            "3",
            "--tokens",
            "1000",
        ],
    ));
    assert_eq!(
        pg.psql_at(
            &other,
            "SELECT doc->'progress'->>'done' FROM orchestrator.task WHERE id = 'schema'"
        ),
        "3"
    );
    assert!(
        orchestrator_backends(&pg).is_empty(),
        "the pool opened no session for another database"
    );

    let refused = Command::new(pg.psql_bin())
        .args(["-X", "-A", "-t", "-c", "SELECT 1", "-d"])
        .arg(format!(
            "host={} port=5432 user=postgres dbname=other",
            pool.dir.display()
        ))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("this pool serves database `postgres` as user `postgres` only"),
        "{stderr}"
    );
}

/// A pool that accepts and never answers (here stopped with SIGSTOP: the kernel still queues
/// connections on its socket) costs a command its connect timeout, then it connects directly.
#[test]
fn a_pool_that_never_answers_is_given_up_for_a_direct_connection() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = machine(&pg.url());
    let pool = RunningPool::start(&ws, &pg.url(), &[]);
    ok(on_store(
        &ws,
        &pg.url(),
        Some(&pool.dir),
        &["start", "--agent", "alpha"],
    ));
    pool.signal("STOP");
    let url = format!("{}?connect_timeout=2", pg.url());
    let mut checkpoint = on_store(
        &ws,
        &url,
        Some(&pool.dir),
        &[
            "checkpoint",
            "around",
            "--progress",
            "6",
            "--tokens",
            "1000",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Not a speed assertion: a guard so that a hang fails instead of stalling the suite.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = checkpoint.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = checkpoint.kill();
            pool.signal("CONT");
            panic!("the checkpoint waited on the stopped pool");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    pool.signal("CONT");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        pg.psql("SELECT doc->'progress'->>'done' FROM orchestrator.task WHERE id = 'schema'"),
        "6"
    );
}

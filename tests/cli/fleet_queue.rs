//! Commands on the fleet store, against a real throwaway PostgreSQL cluster: claims with
//! fencing tokens, checkpoints and wraps through the store, expired leases taken over, the
//! fleet's view of its sessions, reaping, and a server that cannot be reached.

use crate::common::{Ws, at_minutes};
use crate::pg_cluster::PgCluster;
use serde_json::Value;
use std::os::unix::process::CommandExt as _;
use std::process::Output;
use std::time::{Duration, Instant};

/// A workspace ("machine") whose stack is `stack` and whose commands use the store at `url`.
struct Machine {
    ws: Ws,
    url: String,
}

impl Machine {
    fn new(url: &str, stack: &str) -> Machine {
        let ws = Ws::new();
        ws.write("task_stack.json", stack);
        Machine {
            ws,
            url: url.to_string(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.ws
            .command(args)
            .env("ORCHESTRATOR_STORE", &self.url)
            .output()
            .unwrap()
    }

    fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args).0
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

/// A store holding three tasks: `schema` (4 units), `claims` after it (6), `report` (3,
/// priority 2); and the stack text every machine starts from.
fn fleet(pg: &PgCluster) -> String {
    let seed = Ws::new();
    seed.ok(&[
        "task",
        "add",
        "schema",
        "--title",
        "Design the schema",
        "--total",
        "4",
    ]);
    seed.ok(&[
        "task", "add", "claims", "--title", "Claims", "--total", "6", "--after", "schema",
    ]);
    seed.ok(&[
        "task",
        "add",
        "report",
        "--title",
        "Cost report",
        "--total",
        "3",
        "--priority",
        "2",
    ]);
    let stack = seed.read("task_stack.json");
    let machine = Machine::new(&pg.url(), &stack);
    machine.ok(&["fleet", "init"]);
    machine.ok(&["fleet", "import"]);
    stack
}

#[test]
fn a_session_claims_checkpoints_and_wraps_through_the_store() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet(&pg);
    let m = Machine::new(&pg.url(), &stack);

    let brief = m.json(&["start", "--agent", "alpha"]);
    assert_eq!(brief["task"], "schema", "{brief}");
    assert_eq!(
        pg.psql("SELECT fencing_token || ':' || (lease_session IS NOT NULL) FROM orchestrator.task WHERE id = 'schema'"),
        "1:true"
    );
    let session = brief["session"].as_str().unwrap().to_string();

    // 160,000 of 200,000 tokens: the warn level, exit 10.
    m.expect(
        10,
        &[
            "checkpoint",
            "tables drafted",
            "--progress",
            "2",
            "--tokens",
            "160000",
        ],
    );
    assert_eq!(
        pg.psql("SELECT doc->'progress'->>'done' FROM orchestrator.task WHERE id = 'schema'"),
        "2"
    );

    let fleet_status = m.json(&["status", "--fleet"]);
    let sessions = fleet_status["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{fleet_status}");
    assert_eq!(sessions[0]["session"], session.as_str());
    assert_eq!(sessions[0]["agent"], "alpha");
    assert_eq!(sessions[0]["task"], "schema");
    assert_eq!(sessions[0]["level"], "warn");
    assert_eq!(sessions[0]["progress"], "2/4");
    assert_eq!(sessions[0]["lease_seconds_left"], 30 * 60);
    // Where it runs, as its start recorded it (the checkpoint added to it, not replaced it).
    let dir = m.ws.path().file_name().unwrap().to_str().unwrap();
    assert!(
        sessions[0]["workspace"].as_str().unwrap().ends_with(dir),
        "{fleet_status}"
    );

    m.ok(&["wrap", "--done", "--summary", "schema done"]);
    assert_eq!(
        pg.psql("SELECT status || ':' || (lease_session IS NULL) FROM orchestrator.task WHERE id = 'schema'"),
        "done:true"
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM orchestrator.session WHERE id = '{session}'"
        )),
        "archived"
    );
    // The repository's copy is the store's export.
    let local: Value = serde_json::from_str(&m.ws.read("task_stack.json")).unwrap();
    assert_eq!(local["tasks"][0]["status"], "done");
    assert_eq!(
        m.ws.read("task_stack.json"),
        m.ok(&["fleet", "export", "-o", "-"])
    );

    let kinds: Vec<String> = m.json(&["fleet", "log"])["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["claim", "checkpoint", "wrap"]);
    // Each names the agent, the checkpoint's taken from its session's row.
    assert_eq!(
        pg.psql("SELECT string_agg(coalesce(agent, '?'), ',' ORDER BY id) FROM orchestrator.event"),
        "alpha,alpha,alpha"
    );
    assert!(
        m.json(&["status", "--fleet"])["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_expired_lease_is_taken_over_with_a_higher_token_and_the_old_session_is_refused() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet(&pg);
    let a = Machine::new(&pg.url(), &stack);
    let b = Machine::new(&pg.url(), &stack);

    let first = a.json(&["start", "--agent", "alpha"]);
    assert_eq!(first["task"], "schema");
    a.ok(&["checkpoint", "half", "--progress", "2", "--tokens", "1000"]);
    // While the lease holds, the other machine gets the next ready task, never the same one.
    let other = b.json(&["start", "--agent", "beta"]);
    assert_eq!(other["task"], "report");

    // Alpha's machine goes silent; its 30-minute lease runs out.
    b.ws.set_now(&at_minutes(31));
    b.ok(&["wrap", "--summary", "report paused"]);
    let (stdout, stderr) = b.expect(0, &["start", "--agent", "beta"]);
    assert!(stdout.contains("schema"), "{stdout}");
    assert!(stderr.contains("took over task `schema`"), "{stderr}");
    assert_eq!(
        pg.psql("SELECT fencing_token FROM orchestrator.task WHERE id = 'schema'"),
        "2"
    );
    // The progress alpha reported is kept for the new holder.
    assert_eq!(
        pg.psql("SELECT doc->'progress'->>'done' FROM orchestrator.task WHERE id = 'schema'"),
        "2"
    );

    // Alpha comes back: its late checkpoint and its wrap are refused, and change nothing.
    a.ws.set_now(&at_minutes(32));
    let before = pg.psql("SELECT doc::text FROM orchestrator.task WHERE id = 'schema'");
    let (_, stderr) = a.expect(
        5,
        &["checkpoint", "late", "--progress", "4", "--tokens", "2000"],
    );
    assert!(stderr.contains("schema"), "{stderr}");
    let (_, stderr) = a.expect(5, &["wrap", "--done", "--summary", "late"]);
    assert!(stderr.contains("lost task `schema`"), "{stderr}");
    assert_eq!(
        pg.psql("SELECT doc::text FROM orchestrator.task WHERE id = 'schema'"),
        before
    );
    let kinds = pg.psql(
        "SELECT string_agg(kind, ',' ORDER BY id) FROM orchestrator.event WHERE task_id = 'schema'",
    );
    assert_eq!(kinds, "claim,checkpoint,reclaim,refused,refused");

    // Its own next start recovers the stale session without touching the task it lost.
    a.ws.set_now(&at_minutes(33));
    let next = a.json(&["start", "--agent", "alpha"]);
    assert_eq!(next["task"], "report", "{next}");
    assert_eq!(next["recovered"].as_array().unwrap().len(), 1, "{next}");
    assert_eq!(
        pg.psql("SELECT doc::text FROM orchestrator.task WHERE id = 'schema'"),
        before
    );
    assert_eq!(
        pg.psql("SELECT fencing_token || ':' || (lease_session = (SELECT id FROM orchestrator.session WHERE agent = 'beta' AND task_id = 'schema')) FROM orchestrator.task WHERE id = 'schema'"),
        "2:true"
    );
}

#[test]
fn reap_releases_leases_that_ran_out_and_the_old_holder_is_refused() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet(&pg);
    let a = Machine::new(&pg.url(), &stack);
    a.ok(&["start", "--agent", "alpha"]);
    let reaped = a.json(&["fleet", "reap"]);
    assert!(reaped["reaped"].as_array().unwrap().is_empty(), "{reaped}");

    a.ws.set_now(&at_minutes(40));
    let reaped = a.json(&["fleet", "reap"]);
    assert_eq!(reaped["reaped"][0]["task"], "schema", "{reaped}");
    assert_eq!(
        pg.psql("SELECT (lease_session IS NULL) || ':' || fencing_token FROM orchestrator.task WHERE id = 'schema'"),
        "true:1"
    );
    a.expect(
        5,
        &["checkpoint", "late", "--progress", "1", "--tokens", "10"],
    );
    let (_, stderr) = a.expect(5, &["wrap", "--summary", "late"]);
    assert!(stderr.contains("its lease was reaped"), "{stderr}");
    let fleet_status = a.json(&["status", "--fleet"]);
    assert_eq!(
        fleet_status["sessions"][0]["state"], "lost",
        "{fleet_status}"
    );
}

#[test]
fn task_commands_write_through_the_store_and_refresh_the_local_copy() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet(&pg);
    let a = Machine::new(&pg.url(), &stack);
    let b = Machine::new(&pg.url(), &stack);
    a.ok(&[
        "task",
        "add",
        "docs",
        "--title",
        "Write the docs",
        "--total",
        "2",
    ]);
    assert_eq!(
        pg.psql("SELECT string_agg(id, ',' ORDER BY position) FROM orchestrator.task"),
        "schema,claims,report,docs"
    );
    assert!(a.ws.read("task_stack.json").contains("Write the docs"));
    // Another machine sees it at once, before any git push.
    assert!(b.ok(&["task", "list"]).contains("docs"));
    b.ok(&["task", "set", "docs", "--total", "5"]);
    assert_eq!(
        pg.psql("SELECT doc->'progress'->>'total' FROM orchestrator.task WHERE id = 'docs'"),
        "5"
    );
    assert!(a.ok(&["task", "show", "docs"]).contains("0/5"));
    a.ok(&["task", "rm", "docs"]);
    assert_eq!(pg.psql("SELECT count(*) FROM orchestrator.task"), "3");
    // Settings too: the store's stack row, seen by every machine.
    a.ok(&["config", "set", "budget.tokens", "123456"]);
    assert_eq!(
        pg.psql("SELECT doc->'settings'->'budget'->>'tokens' FROM orchestrator.stack"),
        "123456"
    );
    assert_eq!(b.ok(&["config", "get", "budget.tokens"]).trim(), "123456");
}

#[test]
fn an_unreachable_store_fails_within_its_timeout_with_exit_6_and_changes_nothing() {
    let ws = Ws::new();
    ws.ok(&["task", "add", "a", "--title", "A", "--total", "1"]);
    let before = ws.snapshot();
    let began = Instant::now();
    // Nothing listens on port 1.
    let out = ws
        .command(&["start", "--agent", "alpha"])
        .env(
            "ORCHESTRATOR_STORE",
            "postgresql://fleet:s3cret@127.0.0.1:1/queue",
        )
        .output()
        .unwrap();
    assert!(began.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the fleet store postgresql://fleet:***@127.0.0.1:1/queue"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert_eq!(ws.snapshot(), before);
}

/// A store whose stack is `stack` with `settings` merged into its settings.
fn fleet_with(pg: &PgCluster, tasks: &[(&str, &str)], settings: Value) -> String {
    let seed = Ws::new();
    for (id, total) in tasks {
        seed.ok(&["task", "add", id, "--title", id, "--total", total]);
    }
    let mut stack: Value = serde_json::from_str(&seed.read("task_stack.json")).unwrap();
    for (key, value) in settings.as_object().unwrap() {
        stack["settings"][key] = value.clone();
    }
    let text = serde_json::to_string_pretty(&stack).unwrap();
    let machine = Machine::new(&pg.url(), &text);
    machine.ok(&["fleet", "init"]);
    machine.ok(&["fleet", "import"]);
    text
}

/// `orchestrator run` on machine `m`, the binary on PATH for its agent.
fn run_on(m: &Machine, args: &[&str]) -> std::process::Command {
    let mut cmd = crate::run::run_command(&m.ws, args);
    cmd.env("ORCHESTRATOR_STORE", &m.url);
    cmd
}

#[test]
fn a_rate_limit_one_loop_meets_pauses_every_loop_of_the_account_on_every_machine() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet_with(
        &pg,
        &[("one", "1"), ("two", "1")],
        serde_json::json!({
            "run": {"rate_limit_exit_codes": [75], "backoff_seconds": 600},
            "agents": {"alpha": {"account": "team"}, "beta": {"account": "team"}},
        }),
    );
    let a = Machine::new(&pg.url(), &stack);
    let b = Machine::new(&pg.url(), &stack);
    crate::run::agent(&a.ws, "limited.sh", "exit 75");
    let out = run_on(
        &a,
        &[
            "run",
            "--agent",
            "alpha",
            "--max-sessions",
            "1",
            "--",
            "./limited.sh",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(20), "{out:?}");
    assert_eq!(
        pg.psql("SELECT account || ' ' || to_char(until AT TIME ZONE 'UTC', 'HH24:MI:SS') FROM orchestrator.quota_pause"),
        "team 00:23:55"
    );

    let fleet_status = b.json(&["status", "--fleet"]);
    assert_eq!(
        fleet_status["pauses"][0]["account"], "team",
        "{fleet_status}"
    );
    assert_eq!(fleet_status["pauses"][0]["until"], "2025-11-06T00:23:55Z");
    // Plain `status` on any machine shows it too.
    let status = b.ok(&["status"]);
    assert!(
        status.contains("paused:   account team until 2025-11-06T00:23:55Z"),
        "{status}"
    );

    // The other machine's loop, another agent on the same account, waits the pause out first.
    crate::run::agent(
        &b.ws,
        "works.sh",
        "orchestrator checkpoint done --progress 1 --tokens 10",
    );
    let out = run_on(
        &b,
        &[
            "run",
            "--agent",
            "beta",
            "--max-sessions",
            "1",
            "--",
            "./works.sh",
        ],
    )
    .env("ORCHESTRATOR_SLEEP_LOG", b.ws.file("sleeps.log"))
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(20), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("paused until 2025-11-06T00:23:55Z"),
        "{stderr}"
    );
    assert_eq!(b.ws.read("sleeps.log").lines().next(), Some("600"));
    let kinds = pg.psql("SELECT string_agg(kind, ',' ORDER BY id) FROM orchestrator.event WHERE kind = 'quota_pause'");
    assert_eq!(kinds, "quota_pause");
}

#[test]
fn a_run_outlives_the_server_stopping_and_restarting_in_the_middle_of_a_session() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet_with(
        &pg,
        &[("one", "1"), ("two", "1")],
        serde_json::json!({"store": {"postgres": {"url_env": "FLEET_URL", "timeout_seconds": 2}}}),
    );
    let m = Machine::new(&pg.url(), &stack);
    // The agent reports its unit, then waits for the test to let it exit.
    crate::run::agent(
        &m.ws,
        "slow.sh",
        "orchestrator checkpoint unit --progress 1 --tokens 10\ntouch started\nwhile [ ! -f go ]; do sleep 0.05; done\nrm -f go started",
    );
    let mut child = crate::run::run_command(
        &m.ws,
        &[
            "run",
            "--agent",
            "alpha",
            "--poll",
            "50ms",
            "--",
            "./slow.sh",
        ],
    )
    .env("FLEET_URL", pg.url())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    crate::run::wait_for("the first session", || m.ws.file("started").exists());
    pg.stop();
    // The agent exits while the server is down: the wrap cannot reach it and is tried again.
    m.ws.write("go", "");
    std::thread::sleep(Duration::from_secs(3));
    pg.start_server();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !m.ws.file("started").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !m.ws.file("started").exists() {
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no second session\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    m.ws.write("go", "");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("trying again"), "{stderr}");
    assert_eq!(
        pg.psql(
            "SELECT string_agg(id || ':' || status, ',' ORDER BY position) FROM orchestrator.task"
        ),
        "one:done,two:done"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM orchestrator.event WHERE kind = 'wrap'"),
        "2"
    );
}

#[test]
fn an_agent_killed_mid_session_loses_its_task_to_another_machine_once_its_lease_runs_out() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet_with(
        &pg,
        &[("one", "3")],
        serde_json::json!({"store": {"postgres": {"url_env": "FLEET_URL"}}}),
    );
    let a = Machine::new(&pg.url(), &stack);
    let b = Machine::new(&pg.url(), &stack);
    // Machine a's loop: the agent reports one unit, then works on and on.
    crate::run::agent(
        &a.ws,
        "busy.sh",
        "orchestrator checkpoint unit --progress 1 --tokens 10\ntouch started\nexec sleep 600",
    );
    let mut run = crate::run::run_command(&a.ws, &["run", "--agent", "alpha", "--", "./busy.sh"])
        .env("FLEET_URL", pg.url())
        .process_group(0)
        .spawn()
        .unwrap();
    crate::run::wait_for("the agent's first unit", || a.ws.file("started").exists());
    let session = pg.psql("SELECT lease_session FROM orchestrator.task WHERE id = 'one'");
    // kill -9 of the loop and its agent: nothing wraps, nothing releases the lease.
    // SAFETY: kill(2) on the process group just spawned; it has no memory-safety preconditions.
    unsafe { libc::kill(-(run.id() as i32), libc::SIGKILL) };
    run.wait().unwrap();
    assert_eq!(
        pg.psql("SELECT fencing_token || ':' || (doc->'progress'->>'done') FROM orchestrator.task WHERE id = 'one'"),
        "1:1"
    );

    // Before the lease runs out, no other machine can have the task.
    b.ws.set_now(&at_minutes(29));
    b.expect(3, &["start", "--agent", "beta"]);
    // After, the next claim takes it over with a higher token, keeping its progress.
    b.ws.set_now(&at_minutes(31));
    let (stdout, stderr) = b.expect(0, &["start", "--agent", "beta", "--json"]);
    assert!(
        stderr.contains(&format!("took over task `one` from session {session}")),
        "{stderr}"
    );
    let brief: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(brief["progress"]["done"], 1, "{brief}");
    assert_eq!(
        pg.psql("SELECT fencing_token FROM orchestrator.task WHERE id = 'one'"),
        "2"
    );

    // The killed agent's late checkpoint and wrap are refused: exit 5, nothing written.
    a.ws.set_now(&at_minutes(32));
    let before = pg.psql("SELECT doc::text FROM orchestrator.task WHERE id = 'one'");
    a.expect(
        5,
        &[
            "checkpoint",
            "late",
            "--progress",
            "3",
            "--tokens",
            "20",
            "--session",
            &session,
        ],
    );
    a.expect(
        5,
        &["wrap", "--done", "--summary", "late", "--session", &session],
    );
    assert_eq!(
        pg.psql("SELECT doc::text FROM orchestrator.task WHERE id = 'one'"),
        before
    );
    let fleet_status = b.json(&["status", "--fleet"]);
    let states: Vec<(String, String)> = fleet_status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["agent"].as_str().unwrap().into(),
                s["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("alpha".to_string(), "lost".to_string()),
            ("beta".to_string(), "live".to_string())
        ]
    );
}

#[test]
fn a_loop_renews_its_lease_in_the_store_under_its_token() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet_with(
        &pg,
        &[("one", "3")],
        serde_json::json!({"store": {"postgres": {"url_env": "FLEET_URL"}}}),
    );
    let a = Machine::new(&pg.url(), &stack);
    crate::run::agent(&a.ws, "busy.sh", "touch started\nexec sleep 600");
    // The real clock: each renewal moves the lease as time passes.
    let mut run = crate::run::run_command(&a.ws, &["run", "--agent", "alpha", "--", "./busy.sh"])
        .env_remove("ORCHESTRATOR_NOW")
        .env("ORCHESTRATOR_TEST_LEASE_RENEWAL_MS", "300")
        .env("FLEET_URL", pg.url())
        .process_group(0)
        .spawn()
        .unwrap();
    crate::run::wait_for("the agent", || a.ws.file("started").exists());
    let first = pg.psql("SELECT extract(epoch FROM lease_expires_at)::bigint FROM orchestrator.task WHERE id = 'one'");
    crate::run::wait_for("a renewal", || {
        pg.psql("SELECT extract(epoch FROM lease_expires_at)::bigint FROM orchestrator.task WHERE id = 'one'") > first
    });
    // The renewal is the claim's: same token, and the task's text agrees with its columns.
    assert_eq!(
        pg.psql("SELECT fencing_token || ':' || (extract(epoch FROM (doc->'claim'->>'lease_expires')::timestamptz) = extract(epoch FROM lease_expires_at)) FROM orchestrator.task WHERE id = 'one'"),
        "1:true"
    );
    // SAFETY: kill(2) on the process group just spawned; it has no memory-safety preconditions.
    unsafe { libc::kill(-(run.id() as i32), libc::SIGKILL) };
    run.wait().unwrap();
}

/// `run` on the fleet store hosts a pool for its agents: their commands are told where it is
/// (`ORCHESTRATOR_POOL`), warm server sessions serve their checkpoints, and the pool's socket
/// goes with the run.
#[test]
fn a_run_hosts_a_pool_that_serves_its_agents_checkpoints_from_warm_server_sessions() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet_with(&pg, &[("one", "5")], serde_json::json!({}));
    let m = Machine::new(&pg.url(), &stack);
    crate::run::agent(
        &m.ws,
        "works.sh",
        r#"printf '%s' "$ORCHESTRATOR_POOL" > pool_seen
for unit in 1 2 3 4 5; do
  orchestrator checkpoint "unit $unit" --progress "$unit" --tokens 10 || exit 1
done"#,
    );
    let out = run_on(
        &m,
        &[
            "run",
            "--agent",
            "alpha",
            "--max-sessions",
            "1",
            "--",
            "./works.sh",
        ],
    )
    .env("RUST_LOG", "orchestrator::store::postgres::pool=debug")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(20),
        "--max-sessions reached: {out:?}"
    );
    let pool = m.ws.path().join(".orchestrator/pool");
    assert_eq!(m.ws.read("pool_seen"), pool.display().to_string());
    assert_eq!(
        stderr.matches("client served by backend").count(),
        5,
        "each checkpoint through the pool: {stderr}"
    );
    // Warm sessions serve them: a checkpoint that starts while its predecessor's session is
    // still being reset (DISCARD ALL) gets a new one, which a loaded machine may see; what
    // must never happen is a new server session per checkpoint.
    let (new, reused) = (
        stderr.matches("new backend").count(),
        stderr.matches("reusing backend").count(),
    );
    assert_eq!(new + reused, 5, "{stderr}");
    assert!(
        reused >= 2,
        "the 5 checkpoints opened {new} server sessions: {stderr}"
    );
    assert!(
        !pool.join(".s.PGSQL.5432").exists(),
        "the pool's socket outlived the run"
    );
    assert_eq!(
        pg.psql("SELECT doc->'progress'->>'done' FROM orchestrator.task WHERE id = 'one'"),
        "5"
    );
}

/// A `start` killed between its claim and its session record leaves the task claimed by a
/// session nobody holds. The next `start` on that machine gives it back once that start is
/// older than the grace and its process is gone, instead of the task waiting out its lease.
#[test]
fn a_start_killed_between_its_claim_and_its_record_has_the_claim_given_back() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet_with(&pg, &[("one", "5")], serde_json::json!({}));
    let m = Machine::new(&pg.url(), &stack);
    let out =
        m.ws.command(&["start", "--agent", "alpha"])
            .env("ORCHESTRATOR_STORE", &m.url)
            .env("ORCHESTRATOR_TEST_CRASH_AFTER", "fleet-claim")
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(86), "{out:?}");
    let dead = pg.psql("SELECT id FROM orchestrator.session WHERE state = 'starting'");
    assert_eq!(
        pg.psql("SELECT fencing_token || ' ' || (doc->'claim'->>'session') FROM orchestrator.task WHERE id = 'one'"),
        format!("1 {dead}")
    );

    // Within the grace the claim is left alone: that start may still be checking out.
    let (_, stderr) = m.expect(3, &["start", "--agent", "beta"]);
    assert!(stderr.contains("no ready task"), "{stderr}");

    pg.psql("UPDATE orchestrator.session SET updated_at = now() - interval '5 minutes' WHERE state = 'starting'");
    let (stdout, stderr) = m.expect(0, &["start", "--agent", "beta", "--json"]);
    assert!(
        stderr.contains(&format!(
            "gave back task `one` of session {dead}: its start (pid "
        )),
        "{stderr}"
    );
    let started: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(started["task"], "one");
    assert_eq!(
        pg.psql("SELECT fencing_token || ' ' || (doc->'claim'->>'agent') FROM orchestrator.task WHERE id = 'one'"),
        "2 beta"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(kind, ',' ORDER BY id) FROM orchestrator.event WHERE session_id = '{dead}'".replace("{dead}", &dead).as_str()),
        "claim,abandoned"
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM orchestrator.session WHERE id = '{dead}'"
        )),
        "archived"
    );
    let (stdout, _) = m.expect(0, &["status", "--fleet"]);
    assert!(!stdout.contains(&format!("session={dead} ")), "{stdout}");
}

/// Each wrap keeps its session's record in the store: `report --fleet` on any machine counts
/// every machine's sessions, while `report` counts its own.
#[test]
fn report_fleet_counts_the_sessions_of_every_machine() {
    let Some(pg) = PgCluster::start() else { return };
    let stack = fleet_with(&pg, &[("one", "4"), ("two", "4")], serde_json::json!({}));
    let a = Machine::new(&pg.url(), &stack);
    let b = Machine::new(&pg.url(), &stack);
    let mut ids = Vec::new();
    for (m, agent, tokens) in [(&a, "alpha", "1200"), (&b, "beta", "3400")] {
        let started = m.json(&["start", "--agent", agent]);
        ids.push(started["session"].as_str().unwrap().to_string());
        m.ok(&[
            "checkpoint",
            "half",
            "--progress",
            "2",
            "--tokens",
            tokens,
            "--agent",
            agent,
        ]);
        m.ok(&["wrap", "--agent", agent]);
    }
    let sessions = |report: &Value| -> Vec<(String, String, u64)> {
        let mut rows: Vec<(String, String, u64)> = report["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["session"].as_str().unwrap().to_string(),
                    s["agent"].as_str().unwrap().to_string(),
                    s["progress_to"].as_u64().unwrap(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let fleet = a.json(&["report", "--fleet"]);
    let mut want = vec![
        (ids[0].clone(), "alpha".to_string(), 2),
        (ids[1].clone(), "beta".to_string(), 2),
    ];
    want.sort();
    assert_eq!(sessions(&fleet), want, "{fleet}");
    let own = a.json(&["report"]);
    assert_eq!(
        sessions(&own),
        vec![(ids[0].clone(), "alpha".to_string(), 2)],
        "{own}"
    );

    let refused = Ws::new().refused(&["report", "--fleet"]);
    assert!(
        refused.contains("report --fleet: this workspace is on the file store"),
        "{refused}"
    );
}

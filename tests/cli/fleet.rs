//! The fleet store on a real, throwaway PostgreSQL cluster: schema migrations, moving a stack in
//! and out, and refusals (unreachable server, foreign schema versions, a URL's password).

use crate::common::Ws;
use crate::pg_cluster::PgCluster;
use std::time::{Duration, Instant};

/// A workspace with three tasks, one of them depending on another, and fields this version does
/// not know at the top, in the settings and in a task: the store must keep them all.
fn workspace() -> Ws {
    let ws = Ws::new();
    for (id, title, total) in [
        ("schema", "Design the schema", "4"),
        ("claims", "Claims with fencing", "6"),
        ("report", "Cost report", "3"),
    ] {
        ws.ok(&["task", "add", id, "--title", title, "--total", total]);
    }
    ws.ok(&["task", "set", "claims", "--after", "schema"]);
    let mut stack = ws.stack();
    stack["x_team"] = "fleet".into();
    stack["settings"]["x_color"] = "blue".into();
    stack["tasks"][2]["x_estimate"] = serde_json::json!({"hours": 3});
    ws.write(
        "task_stack.json",
        &format!("{}\n", serde_json::to_string_pretty(&stack).unwrap()),
    );
    // The binary's own rendering is the reference the export must give back byte for byte.
    ws.ok(&["task", "set", "report", "--priority", "2"]);
    ws
}

fn with_store(ws: &Ws, pg: &PgCluster, args: &[&str]) -> std::process::Output {
    ws.command(args)
        .env("ORCHESTRATOR_STORE", pg.url())
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    crate::common::success_stdout(out)
}

fn error_line(out: &std::process::Output) -> String {
    error_line_exiting(out, 1)
}

fn error_line_exiting(out: &std::process::Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
        .to_string()
}

#[test]
fn init_creates_the_schema_once_and_a_second_run_changes_nothing() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = Ws::new();
    let first = stdout(&with_store(&ws, &pg, &["fleet", "init", "--json"]));
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (first["from"].as_i64(), first["to"].as_i64()),
        (Some(0), Some(1))
    );
    let tables = pg.psql(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'orchestrator'",
    );
    assert_eq!(
        tables,
        "event,quota_pause,schema_version,session,stack,task"
    );

    let second = stdout(&with_store(&ws, &pg, &["fleet", "init"]));
    assert!(
        second.contains("schema version 1 (already current)"),
        "{second}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM orchestrator.schema_version"),
        "1"
    );
}

#[test]
fn a_stack_goes_in_and_comes_back_out_byte_for_byte() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = workspace();
    let original = ws.read("task_stack.json");
    stdout(&with_store(&ws, &pg, &["fleet", "init"]));
    let imported = stdout(&with_store(&ws, &pg, &["fleet", "import", "--json"]));
    let imported: serde_json::Value = serde_json::from_str(&imported).unwrap();
    assert_eq!(
        (imported["tasks"].as_u64(), imported["replaced"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        pg.psql("SELECT string_agg(id || ':' || status || ':' || priority, ',' ORDER BY position) FROM orchestrator.task"),
        "schema:pending:1,claims:pending:2,report:pending:2"
    );

    // To stdout, to a file, and over the workspace's own stack (under its lock).
    let exported = stdout(&with_store(&ws, &pg, &["fleet", "export", "-o", "-"]));
    assert_eq!(exported, original);
    stdout(&with_store(
        &ws,
        &pg,
        &["fleet", "export", "-o", "copy.json"],
    ));
    assert_eq!(ws.read("copy.json"), original);
    ws.write(
        "task_stack.json",
        &original.replace("Cost report", "Changed here"),
    );
    // A local checkpoint still in the journal must not be replayed over the exported stack.
    ws.ok(&["start", "--agent", "local"]);
    ws.expect(12, &["checkpoint", "local work", "--advance", "2"]);
    assert!(ws.file(".orchestrator/journal.jsonl").exists());
    let said = stdout(&with_store(&ws, &pg, &["fleet", "export"]));
    assert!(said.contains("exported 3 tasks"), "{said}");
    assert!(!ws.file(".orchestrator/journal.jsonl").exists());
    assert_eq!(ws.read("task_stack.json"), original);
}

#[test]
fn a_second_import_needs_replace_and_keeps_fencing_tokens() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = workspace();
    stdout(&with_store(&ws, &pg, &["fleet", "init"]));
    stdout(&with_store(&ws, &pg, &["fleet", "import"]));
    pg.psql("UPDATE orchestrator.task SET fencing_token = 7 WHERE id = 'claims'");

    let refused = error_line(&with_store(&ws, &pg, &["fleet", "import"]));
    assert!(refused.contains("already holds 3 tasks"), "{refused}");
    assert!(refused.contains("--replace"), "{refused}");

    ws.ok(&[
        "task",
        "add",
        "docs",
        "--title",
        "Write the docs",
        "--total",
        "1",
    ]);
    let replaced = stdout(&with_store(&ws, &pg, &["fleet", "import", "--replace"]));
    assert!(
        replaced.contains("imported 4 tasks") && replaced.contains("replacing 3"),
        "{replaced}"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(id || '=' || fencing_token, ',' ORDER BY position) FROM orchestrator.task"),
        "schema=0,claims=7,report=0,docs=0"
    );
}

#[test]
fn a_schema_older_or_newer_than_the_binary_is_refused_with_what_to_do() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = workspace();
    // `next` and `status` read the version in the statement that loads the stack.
    for args in [&["fleet", "import"][..], &["next"], &["status"]] {
        let never_initialised = error_line(&with_store(&ws, &pg, args));
        assert!(
            never_initialised
                .contains("schema version 0, this binary needs 1: run `orchestrator fleet init`"),
            "{args:?}: {never_initialised}"
        );
    }

    stdout(&with_store(&ws, &pg, &["fleet", "init"]));
    stdout(&with_store(&ws, &pg, &["fleet", "import"]));
    pg.psql("INSERT INTO orchestrator.schema_version (version, applied_by) VALUES (2, 'orchestrator 9.9.9')");
    let before = pg.psql("SELECT count(*) FROM orchestrator.task");
    for args in [
        &["fleet", "init"][..],
        &["fleet", "export", "-o", "-"],
        &["fleet", "import", "--replace"],
        &["next"],
        &["start", "--agent", "claude"],
    ] {
        let newer = error_line(&with_store(&ws, &pg, args));
        assert!(
            newer.contains("schema version 2, newer than this binary's 1: upgrade orchestrator"),
            "{args:?}: {newer}"
        );
    }
    assert_eq!(pg.psql("SELECT count(*) FROM orchestrator.task"), before);
    assert_eq!(
        pg.psql("SELECT count(*) FROM orchestrator.task WHERE fencing_token > 0"),
        "0",
        "a start on a newer schema claimed a task"
    );
    assert_eq!(
        pg.psql("SELECT max(version) FROM orchestrator.schema_version"),
        "2"
    );
}

#[test]
fn the_url_comes_from_the_variable_the_settings_name_and_its_password_is_never_shown() {
    let Some(pg) = PgCluster::start() else { return };
    let ws = workspace();
    ws.ok(&["config", "set", "store.postgres.url_env", "FLEET_URL"]);
    assert!(!ws.read("task_stack.json").contains("postgresql://"));
    let unset = ws.refused(&["fleet", "init"]);
    assert!(unset.contains("$FLEET_URL, which is not set"), "{unset}");

    let out = ws
        .command(&["fleet", "init"])
        .env("FLEET_URL", pg.url())
        .output()
        .unwrap();
    assert!(stdout(&out).contains("schema version 1 (created)"));

    // A server that is not there: a bounded wait, one line naming the store, no password.
    let gone = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://fleet:hunter2@{}:5432/queue",
        gone.path().to_str().unwrap().replace('/', "%2F")
    );
    let started = Instant::now();
    let out = ws
        .command(&["fleet", "init"])
        .env("FLEET_URL", &url)
        .output()
        .unwrap();
    // Exit 6: the store could not be reached; nothing happened, so it can simply be run again.
    let line = error_line_exiting(&out, 6);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        line.contains("cannot reach the fleet store postgresql://fleet:***@"),
        "{line}"
    );
    assert!(line.contains("$FLEET_URL"), "{line}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
}

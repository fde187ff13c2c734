//! Managing tasks and the stack file.

use crate::common::*;

#[test]
fn init_writes_defaults_handoff_dir_and_gitignore() {
    let ws = Ws::empty();
    ws.ok(&["init", "--db", "crypto.db"]);
    let stack = ws.stack();
    assert_eq!(stack["version"], 1);
    assert_eq!(
        stack["settings"]["budget"],
        serde_json::json!({"tokens": 200000, "warn": 0.75, "shutdown": 0.85})
    );
    assert_eq!(stack["settings"]["database"]["path"], "crypto.db");
    assert_eq!(stack["settings"]["database"]["keep_backups"], 10);
    assert_eq!(stack["settings"]["database"]["backup_dir"], "backups");
    assert_eq!(stack["settings"]["git"]["max_file_mb"], 50);
    assert_eq!(stack["settings"]["lease_minutes"], 30);
    assert!(ws.file("session_handoffs").is_dir());
    let ignore = ws.read(".gitignore");
    for line in [
        ".orchestrator/lock",
        ".orchestrator/sessions/active/",
        ".orchestrator/pool/",
        "backups/crypto.db.backup_*",
        "crypto.db-wal",
    ] {
        assert!(
            ignore.lines().any(|l| l == line),
            "{line} missing from .gitignore:\n{ignore}"
        );
    }
    assert!(
        !ignore.contains(".orchestrator/sessions/archive"),
        "the archive is committed"
    );
}

#[test]
fn init_keeps_an_existing_gitignore() {
    let ws = Ws::empty();
    ws.write(".gitignore", "target/\n.orchestrator/lock\n");
    ws.ok(&["init"]);
    let ignore = ws.read(".gitignore");
    assert!(
        ignore.starts_with("target/\n.orchestrator/lock\n"),
        "{ignore}"
    );
    assert_eq!(ignore.matches(".orchestrator/lock").count(), 1, "{ignore}");
}

#[test]
fn add_list_show_set_done() {
    let ws = Ws::new();
    ws.ok(&[
        "task",
        "add",
        "schema",
        "--title",
        "Design the schema",
        "--total",
        "4",
    ]);
    ws.ok(&[
        "task", "add", "ingest", "--title", "Ingest", "--total", "10", "--after", "schema",
    ]);
    ws.ok(&[
        "task",
        "add",
        "hotfix",
        "--title",
        "hotfix task",
        "--priority",
        "1",
    ]);
    let t = ws.task("ingest");
    assert_eq!(t["priority"], 2);
    assert_eq!(t["depends_on"], serde_json::json!(["schema"]));
    assert_eq!(t["status"], "pending");

    let list = ws.ok(&["task", "list"]);
    let ids: Vec<&str> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["schema", "hotfix", "ingest"],
        "by priority, file order on ties:\n{list}"
    );
    let pending = ws.json(0, &["task", "list", "--status", "pending"]);
    assert_eq!(pending["tasks"].as_array().unwrap().len(), 3);

    ws.ok(&[
        "task",
        "set",
        "ingest",
        "--priority",
        "7",
        "--total",
        "12",
        "--status",
        "blocked",
        "--title",
        "Ingest all",
    ]);
    let t = ws.task("ingest");
    assert_eq!(
        (
            t["priority"].as_i64(),
            t["status"].as_str(),
            t["title"].as_str()
        ),
        (Some(7), Some("blocked"), Some("Ingest all"))
    );
    assert_eq!(ws.progress("ingest"), (0, 12));

    ws.ok(&["task", "done", "schema"]);
    assert_eq!(ws.task("schema")["status"], "done");
    assert_eq!(ws.progress("schema"), (4, 4));
    let show = ws.json(0, &["task", "show", "schema"]);
    assert_eq!(show["task"]["status"], "done");
    assert!(
        ws.ok(&["task", "show", "ingest"])
            .contains("after:    schema")
    );
    assert_eq!(
        ws.json(0, &["task", "list", "--status", "done"])["tasks"][0]["id"],
        "schema"
    );
}

#[test]
fn unknown_fields_survive_every_rewrite() {
    let ws = Ws::new();
    ws.write(
        "task_stack.json",
        r#"{"version": 1, "project": "crypto", "settings": {"budget": {"tokens": 1000, "model": "opus"}, "theme": "dark"},
            "tasks": [{"id": "a", "total_hint": 3, "progress": {"done": 0, "total": 5, "unit": "files"}}]}"#,
    );
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "x", "--progress", "2"]);
    ws.ok(&["wrap"]);
    ws.ok(&["task", "add", "b", "--title", "b task"]);
    let stack = ws.stack();
    assert_eq!(stack["project"], "crypto");
    assert_eq!(stack["settings"]["budget"]["model"], "opus");
    assert_eq!(stack["settings"]["theme"], "dark");
    assert_eq!(stack["tasks"][0]["total_hint"], 3);
    assert_eq!(ws.progress("a"), (2, 5));
}

#[test]
fn the_example_stack_in_the_repository_is_valid() {
    let ws = Ws::empty();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/task_stack.json"
    ))
    .unwrap();
    ws.write("task_stack.json", &example);
    let next = ws.json(0, &["next"]);
    assert!(next["task"].is_string(), "{next}");
}

#[test]
fn advance_clamps_at_the_total_and_at_zero() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    assert_eq!(
        ws.json(12, &["checkpoint", "x", "--advance", "39"])["progress"]["done"],
        39
    );
    assert_eq!(
        ws.json(12, &["checkpoint", "x", "--advance", "5"])["progress"]["done"],
        40
    );
    assert_eq!(
        ws.json(12, &["checkpoint", "x", "--advance", "-50"])["progress"]["done"],
        0
    );
}

#[test]
fn a_checkpoint_records_issues_for_the_handoff() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.expect(
        12,
        &[
            "checkpoint",
            "x",
            "--issue",
            "API rate limit hit twice",
            "--issue",
            "flaky test t_42",
        ],
    );
    ws.ok(&["wrap"]);
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    let issues = handoff.split("## Issues Encountered").nth(1).unwrap();
    assert!(
        issues.contains("- API rate limit hit twice\n- flaky test t_42\n"),
        "{handoff}"
    );
}

fn init_stderr(ws: &Ws, args: &[&str]) -> String {
    let out = ws.run(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_warns_about_a_database_that_is_missing_or_not_sqlite() {
    let ws = Ws::empty();
    let err = init_stderr(&ws, &["init", "--db", "missing.db"]);
    assert!(
        err.contains("--db") && err.contains("missing.db does not exist"),
        "{err}"
    );
    assert!(ws.file("task_stack.json").is_file(), "still initialized");

    let ws = Ws::empty();
    ws.write("notes.db", "just some text, not a database");
    let err = init_stderr(&ws, &["init", "--db", "notes.db"]);
    assert!(err.contains("notes.db is not a SQLite database"), "{err}");

    let ws = Ws::empty();
    let conn = rusqlite::Connection::open(ws.file("data.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (x)").unwrap();
    drop(conn);
    let err = init_stderr(&ws, &["init", "--db", "data.db"]);
    assert!(!err.contains("--db"), "a real database: no warning: {err}");
}

#[test]
fn init_warns_when_the_workspace_is_not_in_git() {
    let ws = Ws::empty();
    let err = init_stderr(&ws, &["init"]);
    assert!(err.contains("is not in a git repository"), "{err}");

    let ws = Ws::empty();
    let status = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(ws.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .unwrap();
    assert!(status.success());
    let err = init_stderr(&ws, &["init"]);
    assert!(!err.contains("git repository"), "{err}");
}

#[test]
fn backups_go_to_a_backups_folder_unless_the_stack_says_otherwise() {
    let ws = Ws::empty();
    let conn = rusqlite::Connection::open(ws.file("data.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        .unwrap();
    drop(conn);
    ws.ok(&["init", "--db", "data.db"]);
    ws.ok(&["task", "add", "a", "--title", "a task"]);
    ws.ok(&["start"]);
    ws.ok(&["wrap"]);
    assert_eq!(ws.files_in("backups"), ["data.db.backup_20251106_001355"]);
    assert!(
        !ws.files_in(".").iter().any(|f| f.contains(".backup_")),
        "none in the root"
    );

    // A stack that leaves backup_dir out gets the folder too (before, it meant the root).
    let mut stack = ws.stack();
    stack["settings"]["database"]
        .as_object_mut()
        .unwrap()
        .remove("backup_dir");
    ws.write("task_stack.json", &stack.to_string());
    ws.set_now(&at_minutes(2));
    ws.ok(&["start"]);
    ws.ok(&["wrap"]);
    assert_eq!(ws.files_in("backups").len(), 2);

    // A stack that names the root keeps backing up there.
    ws.ok(&["config", "set", "database.backup_dir", "."]);
    ws.set_now(&at_minutes(5));
    ws.ok(&["start"]);
    ws.ok(&["wrap"]);
    assert!(ws.file("data.db.backup_20251106_001855").is_file());
}

//! Wrap's effects through the binary: the SQLite backup, metrics, and the git commit.

use crate::common::*;
use rusqlite::Connection;

fn git(ws: &Ws, args: &[&str]) -> String {
    String::from_utf8(git_stdout(ws, args)).unwrap()
}

/// A seed workspace inside a git repository with a first commit.
fn repo(identity: bool) -> Ws {
    let ws = Ws::seed();
    git(&ws, &["init", "-q", "-b", "main"]);
    if identity {
        git(&ws, &["config", "user.name", "Dev"]);
        git(&ws, &["config", "user.email", "dev@example.com"]);
    }
    ws.write("src/lib.rs", "pub fn a() {}\n");
    git(&ws, &["add", "-A"]);
    git(
        &ws,
        &[
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.com",
            "commit",
            "-qm",
            "init",
        ],
    );
    ws
}

fn make_db(path: &std::path::Path, rows: usize, wal: bool) {
    let conn = Connection::open(path).unwrap();
    if wal {
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    }
    conn.execute_batch("CREATE TABLE IF NOT EXISTS qa_pairs (id INTEGER PRIMARY KEY, q TEXT)")
        .unwrap();
    add_rows(path, rows);
}

fn add_rows(path: &std::path::Path, rows: usize) {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO qa_pairs (q) VALUES (?1)",
            [format!("question {i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn with_database(ws: &Ws, extra: serde_json::Value) {
    let mut stack = ws.stack();
    let mut db = serde_json::json!({
        "path": "data.db", "backup_dir": "backups", "keep_backups": 2,
        "metrics": [{"name": "qa_pairs", "query": "SELECT COUNT(*) FROM qa_pairs", "goal": 30000}]
    });
    for (k, v) in extra.as_object().unwrap() {
        db[k] = v.clone();
    }
    stack["settings"]["database"] = db;
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
}

fn head_message(ws: &Ws) -> String {
    git(ws, &["log", "-1", "--format=%B"])
}

#[test]
fn wrap_commits_everything_with_the_spec_message_and_trailers() {
    let ws = repo(true);
    ws.ok(&["start", "--agent", "claude"]);
    ws.write("src/lib.rs", "pub fn a() {}\npub fn b() {}\n");
    ws.write("notes/new.md", "new file\n");
    ws.set_now("2025-11-06T00:15:02Z");
    ws.expect(
        12,
        &["checkpoint", "Database status checked", "--progress", "1"],
    );
    ws.set_now("2025-11-06T00:20:02Z");
    ws.ok(&[
        "checkpoint",
        "Inbox checked",
        "--progress",
        "10",
        "--tokens",
        "143000",
    ]);
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert_eq!(
        head_message(&ws),
        "Session Wrap: integrate_sessions_101_140\n\nToken usage: 71.5% of budget\nDuration: 6 minutes\n\n\
         Progress: 10/40\nCheckpoints: 2\n\nSession: session_20251106_001355\nStarted: 2025-11-06T00:13:55Z\n\n\
         Orchestrator-Session: session_20251106_001355\nOrchestrator-Task: integrate_sessions_101_140\n\n"
    );
    let files = git(&ws, &["show", "--name-only", "--format=", "HEAD"]);
    for committed in [
        "task_stack.json",
        "session_handoffs/handoff_session_20251106_001355.md",
        ".orchestrator/sessions/archive/session_20251106_001355.json",
        "src/lib.rs",
        "notes/new.md",
    ] {
        assert!(
            files.lines().any(|l| l == committed),
            "{committed} not in the commit:\n{files}"
        );
    }
    assert!(
        !files.contains("sessions/active") && !files.contains(".orchestrator/lock"),
        "{files}"
    );
    assert_eq!(
        git(&ws, &["status", "--porcelain"]),
        "",
        "nothing left behind"
    );
    assert_eq!(
        git(&ws, &["log", "-1", "--format=%an <%ae>"]).trim(),
        "Dev <dev@example.com>"
    );
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    let changes = handoff.split("## Changes").nth(1).unwrap();
    assert!(changes.contains("file(s) changed"), "{handoff}");
}

#[test]
fn without_an_identity_the_commit_uses_the_fallback_author() {
    let ws = repo(false);
    ws.ok(&["start"]);
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["commit"]["fallback_identity"], true, "{v}");
    assert_eq!(
        git(&ws, &["log", "-1", "--format=%an <%ae>"]).trim(),
        "orchestrator <orchestrator@localhost>"
    );
}

#[test]
fn outside_a_repository_wrap_skips_the_commit_with_a_warning() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    let out = ws.run(&["wrap", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in a git repository"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["commit"]["result"], "not_a_repository");
}

#[test]
fn ignored_deleted_and_oversized_files() {
    let ws = repo(true);
    let mut stack = ws.stack();
    stack["settings"]["git"]["max_file_mb"] = serde_json::json!(1);
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    ws.write(
        ".gitignore",
        &format!("{}secret.env\n", ws.read(".gitignore")),
    );
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "settings"]);
    ws.ok(&["start"]);
    ws.write("secret.env", "TOKEN=x\n");
    std::fs::remove_file(ws.file("src/lib.rs")).unwrap();
    ws.write("big.bin", &"x".repeat(2 * 1024 * 1024));
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["commit"]["skipped"][0]["path"], "big.bin", "{v}");
    let tree = git(&ws, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(
        !tree.contains("secret.env") && !tree.contains("big.bin") && !tree.contains("src/lib.rs"),
        "{tree}"
    );
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    assert!(handoff.contains("Not committed: `big.bin`"), "{handoff}");
    let out = ws.ok(&["task", "list"]);
    assert!(!out.is_empty());
}

#[test]
fn a_locked_index_fails_the_commit_clearly_and_the_next_wrap_finishes_it() {
    let ws = repo(true);
    ws.ok(&["start"]);
    ws.write(".git/index.lock", "");
    let line = ws.refused(&["wrap"]);
    assert!(line.contains("index.lock"), "{line}");
    std::fs::remove_file(ws.file(".git/index.lock")).unwrap();
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert_eq!(
        v["steps"],
        serde_json::json!(["commit"]),
        "only the commit was left: {v}"
    );
    assert_eq!(
        git(&ws, &["log", "--format=%s"])
            .lines()
            .filter(|l| l.starts_with("Session Wrap"))
            .count(),
        1
    );
}

#[test]
fn no_commit_and_the_setting_skip_the_commit() {
    let ws = repo(true);
    ws.ok(&["start"]);
    let v = ws.json(0, &["wrap", "--no-commit"]);
    assert_eq!(v["commit"]["result"], "skipped");
    assert_eq!(git(&ws, &["log", "--format=%s"]).lines().count(), 1);
}

#[test]
fn checkpoint_commit_uses_the_checkpoint_message() {
    let ws = repo(true);
    ws.ok(&["start"]);
    ws.write("src/lib.rs", "changed\n");
    let v = ws.json(
        12,
        &[
            "checkpoint",
            "Parsed session 101",
            "--advance",
            "1",
            "--commit",
        ],
    );
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert!(
        head_message(&ws)
            .starts_with("Checkpoint: integrate_sessions_101_140: Parsed session 101\n")
    );
    // The setting does the same without the flag.
    let mut stack = ws.stack();
    stack["settings"]["git"]["commit_on_checkpoint"] = serde_json::json!(true);
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    ws.expect(12, &["checkpoint", "Parsed session 102", "--advance", "1"]);
    assert!(
        head_message(&ws)
            .starts_with("Checkpoint: integrate_sessions_101_140: Parsed session 102\n")
    );
}

#[test]
fn wrap_backs_up_the_database_and_reports_metrics() {
    let ws = repo(true);
    with_database(&ws, serde_json::json!({}));
    make_db(&ws.file("data.db"), 19_267, true);
    ws.ok(&["start"]);
    add_rows(&ws.file("data.db"), 4_360);
    ws.set_now(&at_minutes(5));
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["backup"]["result"], "ok", "{v}");
    let name = "data.db.backup_20251106_001855";
    assert_eq!(ws.files_in("backups"), [name]);
    let copy = Connection::open(ws.file(&format!("backups/{name}"))).unwrap();
    let rows: i64 = copy
        .query_row("SELECT COUNT(*) FROM qa_pairs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 23_627);
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    assert!(
        handoff.contains("qa_pairs: 23,627 (79% of 30,000, +4,360 since start)"),
        "{handoff}"
    );
    assert!(
        handoff.contains(&format!("Backup: `backups/{name}`")),
        "{handoff}"
    );
    let tree = git(&ws, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(
        !tree.contains("backup_") && !tree.contains("data.db-wal"),
        "{tree}"
    );
}

#[test]
fn only_the_newest_backups_are_kept() {
    let ws = Ws::seed();
    with_database(&ws, serde_json::json!({"keep_backups": 2}));
    make_db(&ws.file("data.db"), 10, false);
    for minute in [0, 10, 20] {
        ws.set_now(&at_minutes(minute));
        ws.ok(&["start"]);
        ws.ok(&["wrap"]);
    }
    assert_eq!(
        ws.files_in("backups"),
        [
            "data.db.backup_20251106_002355",
            "data.db.backup_20251106_003355"
        ]
    );
}

#[test]
fn a_backup_that_cannot_be_made_stops_wrap_and_leaves_the_session_live() {
    let ws = Ws::seed();
    with_database(&ws, serde_json::json!({"path": "missing.db"}));
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "x", "--progress", "3"]);
    let before = ws.snapshot();
    let line = ws.refused(&["wrap"]);
    assert!(line.contains("missing.db"), "{line}");
    assert!(ws.snapshot() == before, "nothing was marked done");
    ws.expect(12, &["status"]);

    ws.write(
        "missing.db",
        "this is not a database, just text that is long enough to have a header",
    );
    let line = ws.refused(&["wrap"]);
    assert!(line.contains("not a SQLite database"), "{line}");
    assert_eq!(ws.files_in("backups"), Vec::<String>::new());
    // The user can still end the session without the backup.
    let v = ws.json(0, &["wrap", "--no-backup"]);
    assert_eq!(v["backup"]["result"], "skipped");
}

#[test]
fn a_failing_metric_is_reported_and_does_not_stop_the_wrap() {
    let ws = Ws::seed();
    with_database(
        &ws,
        serde_json::json!({"metrics": [
            {"name": "qa_pairs", "query": "SELECT COUNT(*) FROM qa_pairs", "goal": 30000},
            {"name": "broken", "query": "SELECT COUNT(*) FROM no_such_table"}
        ]}),
    );
    make_db(&ws.file("data.db"), 5, false);
    ws.ok(&["start"]);
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["metrics"][1]["name"], "broken");
    assert!(
        v["metrics"][1]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_table"),
        "{v}"
    );
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    assert!(handoff.contains("broken: query failed"), "{handoff}");
    ws.set_now(&at_minutes(1));
    ws.ok(&["start"]);
    let out = ws.ok(&["wrap"]);
    assert!(
        out.contains("metric broken: query failed: no such table: no_such_table"),
        "{out}"
    );
    assert!(out.contains("metric qa_pairs: 5\n"), "{out}");
    assert!(
        handoff.contains("qa_pairs: 5 (0% of 30,000, +0 since start)"),
        "{handoff}"
    );
}

#[test]
fn a_wrap_killed_at_any_step_makes_one_backup_one_handoff_one_commit() {
    for step in [
        "backup",
        "metrics",
        "handoff",
        "stack",
        "archive",
        "commit-pending",
        "commit",
    ] {
        let ws = repo(true);
        with_database(&ws, serde_json::json!({}));
        make_db(&ws.file("data.db"), 100, true);
        git(&ws, &["add", "-A"]);
        git(&ws, &["commit", "-qm", "db settings"]);
        ws.ok(&["start"]);
        ws.expect(12, &["checkpoint", "work", "--progress", "5"]);
        ws.set_now(&at_minutes(3));
        let mut cmd = ws.command(&["wrap"]);
        cmd.env("ORCHESTRATOR_TEST_CRASH_AFTER", step);
        assert_eq!(cmd.output().unwrap().status.code(), Some(86), "{step}");
        ws.set_now(&at_minutes(4));
        ws.ok(&["wrap"]);
        assert_eq!(ws.files_in("backups").len(), 1, "{step}: one backup");
        assert_eq!(
            ws.files_in("session_handoffs").len(),
            2,
            "{step}: one handoff beside .gitkeep"
        );
        let wraps = git(&ws, &["log", "--format=%s"])
            .lines()
            .filter(|l| l.starts_with("Session Wrap"))
            .count();
        assert_eq!(wraps, 1, "{step}: one commit");
        // Untracked: the database's -wal/-shm and backups, which `init --db` would have ignored.
        assert_eq!(
            git(&ws, &["status", "--porcelain", "--untracked-files=no"]),
            "",
            "{step}"
        );
    }
}

#[test]
fn a_stale_session_is_recovered_with_a_handoff_and_a_commit() {
    let ws = repo(true);
    ws.ok(&["start", "--agent", "claude"]);
    ws.set_now(&at_minutes(4));
    ws.expect(12, &["checkpoint", "last words", "--progress", "4"]);
    ws.set_now(&at_minutes(40));
    let v = ws.json(0, &["start", "--agent", "claude"]);
    assert_eq!(v["recovered"][0]["session"], "session_20251106_001355");
    let log = git(&ws, &["log", "--format=%B", "-1"]);
    assert!(
        log.contains("Orchestrator-Session: session_20251106_001355"),
        "{log}"
    );
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    assert!(
        handoff.contains("ended without a wrap") && handoff.contains("last words"),
        "{handoff}"
    );
}

#[test]
fn demo_runs_a_whole_session() {
    let ws = Ws::empty();
    let target = ws.file("demo");
    let v = ws.json(0, &["demo", "--dir", target.to_str().unwrap()]);
    assert!(
        std::path::Path::new(v["handoff"].as_str().unwrap()).is_file(),
        "{v}"
    );
    assert!(
        std::path::Path::new(v["backup"].as_str().unwrap()).is_file(),
        "{v}"
    );
    assert_eq!(v["commit"].as_str().unwrap().len(), 40, "{v}");
    let handoff = std::fs::read_to_string(v["handoff"].as_str().unwrap()).unwrap();
    assert!(
        handoff.contains("qa_pairs: 23,627 (79% of 30,000, +4,360 since start)"),
        "{handoff}"
    );
    let line = ws.refused(&["demo", "--dir", target.to_str().unwrap()]);
    assert!(line.contains("not empty"), "{line}");
}

#[test]
fn a_recovery_whose_commit_fails_still_lets_start_go_on() {
    let ws = repo(true);
    ws.ok(&["start", "--agent", "claude"]);
    ws.write(".git/index.lock", "");
    ws.set_now(&at_minutes(31));
    let out = ws
        .command(&["start", "--agent", "claude", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("index.lock"));
    let archived: serde_json::Value = serde_json::from_str(
        &ws.read(".orchestrator/sessions/archive/session_20251106_001355.json"),
    )
    .unwrap();
    assert_eq!(archived["wrap"]["reason"], "recovered");
    assert!(
        ws.file("session_handoffs/handoff_session_20251106_001355.md")
            .is_file()
    );
}

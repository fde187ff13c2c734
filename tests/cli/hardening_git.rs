//! Issue 9 hardening: commits that must not happen (merges), must not take the live database, must survive live writers and stale git locks.

use crate::common::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

const SESSION: &str = "session_20251106_001355";

fn git_cmd(ws: &Ws, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(ws.path())
        .env("HOME", ws.home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_EDITOR", "true");
    cmd
}

fn git(ws: &Ws, args: &[&str]) -> String {
    let out = git_cmd(ws, args).output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A seed workspace in a git repository with an identity and a first commit of everything.
fn repo() -> Ws {
    let ws = Ws::seed();
    git(&ws, &["init", "-q", "-b", "main"]);
    git(&ws, &["config", "user.name", "Dev"]);
    git(&ws, &["config", "user.email", "dev@example.com"]);
    ws.write("src/lib.rs", "pub fn a() {}\n");
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "init"]);
    ws
}

/// A branch `side` that writes `theirs` (path, text), while `main` writes `ours`.
fn diverge(ws: &Ws, ours: (&str, &str), theirs: (&str, &str)) {
    git(ws, &["checkout", "-q", "-b", "side"]);
    ws.write(theirs.0, theirs.1);
    git(ws, &["add", "-A"]);
    git(ws, &["commit", "-qm", "side"]);
    git(ws, &["checkout", "-q", "main"]);
    ws.write(ours.0, ours.1);
    git(ws, &["add", "-A"]);
    git(ws, &["commit", "-qm", "ours"]);
}

fn head(ws: &Ws) -> String {
    git(ws, &["rev-parse", "HEAD"]).trim().to_string()
}

fn wrap_commits(ws: &Ws) -> usize {
    git(ws, &["log", "--all", "--format=%s"])
        .lines()
        .filter(|l| l.starts_with("Session Wrap") || l.starts_with("Checkpoint:"))
        .count()
}

fn run_json(ws: &Ws, args: &[&str]) -> (Value, String) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ws.run(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "orchestrator {args:?}\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn handoff(ws: &Ws) -> String {
    ws.read(&format!("session_handoffs/handoff_{SESSION}.md"))
}

#[test]
fn a_conflicted_merge_is_not_committed_and_the_skip_is_final() {
    let ws = repo();
    diverge(
        &ws,
        ("src/lib.rs", "pub fn ours() {}\n"),
        ("src/lib.rs", "pub fn theirs() {}\n"),
    );
    let before = head(&ws);
    ws.ok(&["start"]);
    let merge = git_cmd(&ws, &["merge", "side"]).output().unwrap();
    assert!(!merge.status.success(), "the merge must conflict");
    ws.write("notes.md", "work of the session\n");

    let (v, stderr) = run_json(&ws, &["wrap"]);

    let commit = &v["commit"];
    assert_eq!(commit["result"], "skipped", "{v}");
    assert_eq!(commit["state"], "merge", "{v}");
    assert_eq!(
        commit["conflicts"],
        serde_json::json!(["src/lib.rs"]),
        "{v}"
    );
    let reason = commit["reason"].as_str().unwrap();
    assert!(
        reason.contains("unmerged") && reason.contains("src/lib.rs"),
        "{reason}"
    );
    assert!(stderr.contains("src/lib.rs"), "a warning: {stderr}");
    assert_eq!(head(&ws), before, "nothing committed");
    assert!(ws.file(".git/MERGE_HEAD").is_file(), "the merge is kept");
    assert!(
        !git(&ws, &["ls-files", "-u"]).is_empty(),
        "the conflicts are still unmerged in the index"
    );
    let changes = handoff(&ws);
    let changes = changes.split("## Changes").nth(1).unwrap();
    assert!(
        changes.contains("Commit skipped") && changes.contains("src/lib.rs"),
        "{changes}"
    );
    // The plain output says so too.
    ws.set_now(&at_minutes(1));
    ws.ok(&["start"]);
    let text = ws.ok(&["wrap"]);
    assert!(text.contains("commit=skipped"), "{text}");
    assert!(text.contains("commit skipped: "), "{text}");

    // Nothing is left pending: the next start finishes no wrap and commits nothing.
    ws.set_now(&at_minutes(2));
    let (v, _) = run_json(&ws, &["start"]);
    assert_eq!(v["recovered"], serde_json::json!([]), "{v}");
    assert_eq!(head(&ws), before);
    assert_eq!(wrap_commits(&ws), 0);
    assert!(ws.file(".git/MERGE_HEAD").is_file());
}

#[test]
fn a_clean_merge_in_progress_is_left_for_the_user_to_conclude() {
    let ws = repo();
    diverge(
        &ws,
        ("ours.txt", "from main\n"),
        ("theirs.txt", "from side\n"),
    );
    let before = head(&ws);
    ws.ok(&["start"]);
    git(&ws, &["merge", "-q", "--no-commit", "--no-ff", "side"]);
    ws.write("notes.md", "work of the session\n");

    let (v, _) = run_json(
        &ws,
        &[
            "checkpoint",
            "half way",
            "--progress",
            "2",
            "--commit",
            "--exit-zero",
        ],
    );
    assert_eq!(v["commit"]["result"], "skipped", "{v}");
    let text = ws.expect(12, &["checkpoint", "again", "--progress", "3", "--commit"]);
    assert!(text.contains("Commit skipped: "), "{text}");

    let (v, _) = run_json(&ws, &["wrap"]);
    assert_eq!(v["commit"]["result"], "skipped", "{v}");
    assert_eq!(v["commit"]["state"], "merge", "{v}");
    assert_eq!(v["commit"]["conflicts"], serde_json::json!([]), "{v}");
    assert!(
        v["commit"]["reason"]
            .as_str()
            .unwrap()
            .contains("git commit"),
        "{v}"
    );
    assert_eq!(head(&ws), before, "the merge is not concluded by wrap");
    assert!(ws.file(".git/MERGE_HEAD").is_file());
    assert!(handoff(&ws).contains("Commit skipped"));

    // The user concludes the merge: both parents are there.
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "--no-edit"]);
    assert_eq!(
        git(&ws, &["log", "-1", "--format=%P"])
            .split_whitespace()
            .count(),
        2
    );
    assert_eq!(wrap_commits(&ws), 0);
}

#[test]
fn a_cherry_pick_in_progress_is_not_committed() {
    let ws = repo();
    diverge(
        &ws,
        ("src/lib.rs", "pub fn ours() {}\n"),
        ("src/lib.rs", "pub fn theirs() {}\n"),
    );
    let before = head(&ws);
    ws.ok(&["start"]);
    let pick = git_cmd(&ws, &["cherry-pick", "side"]).output().unwrap();
    assert!(!pick.status.success());
    // Resolved and staged, but the cherry-pick is not concluded.
    ws.write("src/lib.rs", "pub fn both() {}\n");
    git(&ws, &["add", "src/lib.rs"]);

    let (v, _) = run_json(&ws, &["wrap"]);

    assert_eq!(v["commit"]["result"], "skipped", "{v}");
    assert_eq!(v["commit"]["state"], "cherry_pick", "{v}");
    assert!(
        v["commit"]["reason"]
            .as_str()
            .unwrap()
            .contains("git cherry-pick --continue"),
        "{v}"
    );
    assert_eq!(head(&ws), before);
    assert!(ws.file(".git/CHERRY_PICK_HEAD").is_file());
}

fn make_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS qa_pairs (id INTEGER PRIMARY KEY, q TEXT);
         INSERT INTO qa_pairs (q) VALUES ('a'), ('b');",
    )
    .unwrap();
}

#[test]
fn init_db_ignores_the_live_database_and_wrap_never_commits_it() {
    let ws = Ws::empty();
    git(&ws, &["init", "-q", "-b", "main"]);
    git(&ws, &["config", "user.name", "Dev"]);
    git(&ws, &["config", "user.email", "dev@example.com"]);
    ws.ok(&["init", "--db", "data.db"]);
    ws.ok(&["task", "add", "t1", "--title", "T", "--total", "4"]);
    assert!(
        ws.read(".gitignore").lines().any(|l| l == "data.db"),
        "{}",
        ws.read(".gitignore")
    );
    make_db(&ws.file("data.db"));
    ws.ok(&["start"]);
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    let tree = git(&ws, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(tree.contains("task_stack.json"), "{tree}");
    assert!(!tree.lines().any(|l| l.contains("data.db")), "{tree}");
}

#[test]
fn the_live_database_is_not_committed_even_without_a_gitignore_line() {
    let ws = repo();
    let mut stack = ws.stack();
    stack["settings"]["database"] =
        serde_json::json!({"path": "db/live.db", "backup_dir": "backups"});
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    std::fs::create_dir_all(ws.file("db")).unwrap();
    make_db(&ws.file("db/live.db"));
    ws.ok(&["start"]);
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    let tree = git(&ws, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(!tree.contains("live.db"), "{tree}");
    assert!(tree.contains("task_stack.json"), "{tree}");
}

#[test]
fn a_tracked_database_keeps_its_committed_version_and_the_handoff_says_so() {
    let ws = repo();
    let mut stack = ws.stack();
    stack["settings"]["database"] = serde_json::json!({"path": "data.db", "backup_dir": "backups"});
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    make_db(&ws.file("data.db"));
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "the database, committed by hand"]);
    let committed = git(&ws, &["rev-parse", "HEAD:data.db"]);
    ws.ok(&["start"]);
    make_db(&ws.file("data.db"));

    let (v, _) = run_json(&ws, &["wrap"]);

    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert_eq!(git(&ws, &["rev-parse", "HEAD:data.db"]), committed);
    let skipped = v["commit"]["skipped"].as_array().unwrap();
    assert!(skipped.iter().any(|s| s["path"] == "data.db"), "{v}");
    assert!(
        handoff(&ws).contains("Not committed: `data.db`"),
        "{}",
        handoff(&ws)
    );
    // The live file did change: only the commit left it out.
    assert_ne!(git(&ws, &["hash-object", "data.db"]), committed);
}

/// Appends lines to `path` until the returned flag is set.
fn keep_appending(path: &Path) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !flag.load(Ordering::Relaxed) {
            writeln!(file, "log line {n}: something happened").unwrap();
            n += 1;
            if n.is_multiple_of(16) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    (stop, writer)
}

#[test]
fn a_log_appended_to_while_wrap_commits_is_committed_as_read() {
    let ws = repo();
    ws.write("app.log", "started\n");
    git(&ws, &["add", "app.log"]);
    git(&ws, &["commit", "-qm", "log"]);
    let (stop, writer) = keep_appending(&ws.file("app.log"));
    for minute in 0..3 {
        ws.set_now(&at_minutes(minute * 10));
        ws.ok(&["start"]);
        ws.expect(12, &["checkpoint", "logged", "--progress", "1", "--commit"]);
        let (v, _) = run_json(&ws, &["wrap"]);
        assert_eq!(v["commit"]["result"], "committed", "{v}");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let committed = git(&ws, &["show", "HEAD:app.log"]);
    let on_disk = ws.read("app.log");
    assert!(
        committed.len() > "started\n".len(),
        "the growth is committed"
    );
    assert!(on_disk.starts_with(&committed), "a prefix of the log");
    assert!(committed.ends_with('\n') || committed.len() < on_disk.len());
}

fn set_mtime(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn a_stale_index_lock_left_by_our_killed_commit_is_removed() {
    let ws = repo();
    ws.ok(&["start"]);
    ws.write("src/lib.rs", "pub fn changed() {}\n");
    // Killed right after recording that it is about to touch git, as a kill -9 inside
    // libgit2 would leave it, with the index lock libgit2 had taken.
    let mut cmd = ws.command(&["wrap"]);
    cmd.env("ORCHESTRATOR_TEST_CRASH_AFTER", "git-owner");
    assert_eq!(cmd.output().unwrap().status.code(), Some(86));
    let owners = ws.files_in(".orchestrator/git_owners");
    assert_eq!(owners.len(), 1, "{owners:?}");
    let record = ws.file(&format!(".orchestrator/git_owners/{}", owners[0]));
    let lock = ws.file(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    set_mtime(&record, Duration::from_secs(300));
    set_mtime(&lock, Duration::from_secs(240));

    let (v, stderr) = run_json(&ws, &["wrap"]);

    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert_eq!(v["steps"], serde_json::json!(["commit"]), "{v}");
    assert!(!lock.exists());
    assert!(
        stderr.contains("removed the stale git lock") && stderr.contains("index.lock"),
        "{stderr}"
    );
    assert_eq!(
        v["commit"]["recovered_locks"][0],
        lock.to_string_lossy().as_ref(),
        "{v}"
    );
    assert_eq!(
        ws.files_in(".orchestrator/git_owners"),
        Vec::<String>::new()
    );
    assert_eq!(
        git(&ws, &["show", "HEAD:src/lib.rs"]),
        "pub fn changed() {}\n"
    );
}

#[test]
fn a_recent_lock_of_our_dead_process_is_not_removed_yet() {
    let ws = repo();
    ws.ok(&["start"]);
    let mut cmd = ws.command(&["wrap"]);
    cmd.env("ORCHESTRATOR_TEST_CRASH_AFTER", "git-owner");
    assert_eq!(cmd.output().unwrap().status.code(), Some(86));
    let lock = ws.file(".git/index.lock");
    std::fs::write(&lock, "").unwrap();

    let line = ws.refused(&["wrap"]);

    assert!(line.contains(&lock.display().to_string()), "{line}");
    assert!(lock.exists(), "too recent to be provably stale");
}

#[test]
fn an_index_lock_we_did_not_create_is_refused_but_start_still_starts() {
    let ws = repo();
    ws.ok(&["start", "--agent", "claude"]);
    ws.write("src/lib.rs", "pub fn changed() {}\n");
    let lock = ws.file(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    set_mtime(&lock, Duration::from_secs(3600));
    let before = head(&ws);

    let line = ws.refused(&["wrap"]);

    assert!(line.contains(&lock.display().to_string()), "{line}");
    assert!(line.contains("delete"), "says what to do: {line}");
    assert!(lock.exists(), "not ours: kept");
    assert_eq!(head(&ws), before);

    // A cron start finishes the cut-off wrap without its commit and starts new work.
    ws.set_now(&at_minutes(1));
    let out = ws.run(&["start", "--agent", "claude", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("index.lock"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["session"], "session_20251106_001455", "{v}");
    assert!(lock.exists());
    assert!(
        !ws.file(&format!(".orchestrator/sessions/active/{SESSION}.json"))
            .exists()
    );
}

/// A `checkpoint --commit` carries the session's trailer too; the wrap after it must still make
/// its own commit of the later work, the handoff and the stack, not take the checkpoint's.
#[test]
fn a_wrap_after_a_checkpoint_commit_makes_its_own_commit() {
    let ws = repo();
    ws.ok(&["start"]);
    ws.write("src/lib.rs", "pub fn a() { 1; }\n");
    let v = ws.json(
        12,
        &["checkpoint", "first half", "--advance", "1", "--commit"],
    );
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    let checkpoint_commit = head(&ws);
    ws.write("src/lib.rs", "pub fn a() { 2; }\n");
    let v = ws.json(0, &["wrap", "--summary", "second half"]);
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert!(v["commit"]["found_existing"].is_null(), "{v}");
    assert_ne!(head(&ws), checkpoint_commit);
    assert!(
        git(&ws, &["log", "-1", "--format=%s"]).starts_with("Session Wrap: "),
        "{}",
        git(&ws, &["log", "--format=%s"])
    );
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
}

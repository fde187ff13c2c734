//! Issue 9 state hardening: exit 1 changes nothing (full disk, read-only), status of a half-done
//! wrap, leases that never move backwards, checkpoints refused from another agent.

use crate::common::*;
use serde_json::Value;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const TASK: &str = "integrate_sessions_101_140";
const FIRST: &str = "session_20251106_001355";

/// A tmpfs of its own, so a test can fill it or make it read-only (chmod does not stop root).
/// Everything mounted is unmounted on drop, innermost first.
struct Tmpfs {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl Tmpfs {
    /// `None` (and a note on stderr) when not root: mounting needs it.
    fn new(test: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED {test}: needs root to mount a tmpfs");
            return None;
        }
        let mut fs = Tmpfs {
            dir: tempfile::tempdir().unwrap(),
            mounts: Vec::new(),
        };
        let path = fs.path().to_path_buf();
        mount(&["-t", "tmpfs", "-o", "size=2m", "tmpfs"], &path);
        fs.mounts.push(path);
        Some(fs)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        let mut file = File::create(self.filler()).unwrap();
        let chunk = vec![0xA5u8; 1 << 16];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(err) => panic!("filling the disk: {err}"),
            }
        }
    }

    /// Shrinks the filler so exactly `pages` pages are free.
    fn leave_free_pages(&self, pages: u64) {
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.filler())
            .unwrap();
        let used = file.metadata().unwrap().len().div_ceil(page);
        file.set_len((used - pages) * page).unwrap();
    }

    fn free(&self) {
        fs::remove_file(self.filler()).unwrap();
    }

    /// The whole file system read-only.
    fn read_only(&self) {
        mount(&["-o", "remount,ro"], self.path());
    }

    fn read_write(&self) {
        mount(&["-o", "remount,rw"], self.path());
    }

    /// One file read-only, the rest of the file system as it was.
    fn read_only_file(&mut self, file: &Path) {
        mount(&["--bind", file.to_str().unwrap()], file);
        self.mounts.push(file.to_path_buf());
        mount(&["-o", "remount,bind,ro"], file);
    }

    fn read_write_file(&self, file: &Path) {
        mount(&["-o", "remount,bind,rw"], file);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for dir in self.mounts.iter().rev() {
            let ok = Command::new("umount").arg(dir).status();
            if !ok.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(dir).status();
            }
        }
    }
}

fn mount(options: &[&str], target: &Path) {
    let status = Command::new("mount")
        .args(options)
        .arg(target)
        .status()
        .expect("mount runs");
    assert!(status.success(), "mount {options:?} {}", target.display());
}

/// The seed workspace (one task of 40) inside `fs`.
fn seed_in(fs: &Tmpfs) -> Ws {
    let ws = Ws::empty_in(fs.path());
    ws.ok(&["init", "--budget", "200000"]);
    ws.ok(&["task", "add", TASK, "--title", "Integrate", "--total", "40"]);
    ws
}

/// Every file and directory under the workspace, with the files' bytes; the sidecar lock file
/// (created by the first command, never removed) is left out.
fn tree(ws: &Ws) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut entries = Vec::new();
    let mut dirs = vec![ws.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path.clone());
                entries.push((path, None));
            } else if path.file_name().is_some_and(|n| n != "lock") {
                let bytes = fs::read(&path).unwrap();
                entries.push((path, Some(bytes)));
            }
        }
    }
    entries.sort();
    entries
}

fn log_lines(ws: &Ws, session: &str) -> usize {
    let path = ws.file(&format!(
        ".orchestrator/sessions/active/{session}.checkpoints.jsonl"
    ));
    match fs::read_to_string(path) {
        Ok(text) => text.lines().count(),
        Err(err) if err.kind() == ErrorKind::NotFound => 0,
        Err(err) => panic!("{err}"),
    }
}

/// Checkpoints as every reader sees them: the session (record and log) and the stack.
fn assert_checkpoints(ws: &Ws, expected: usize) {
    assert_eq!(ws.json(12, &["status"])["checkpoints"], expected);
    let in_stack = ws.task(TASK)["checkpoints"].as_array().unwrap().len();
    assert_eq!(in_stack, expected);
}

#[test]
fn a_fold_on_a_full_disk_keeps_the_acknowledged_checkpoint() {
    let Some(fs) = Tmpfs::new("a_fold_on_a_full_disk_keeps_the_acknowledged_checkpoint") else {
        return;
    };
    let ws = seed_in(&fs);
    ws.ok(&["start", "--agent", "claude"]);
    ws.set_now(&at_minutes(1));
    ws.expect(12, &["checkpoint", "first", "--progress", "1"]);
    // The journal's page has room left: the append fits, the fold's new stack does not.
    fs.fill();
    let stack_before = ws.read("task_stack.json");
    ws.set_now(&at_minutes(2));
    let mut cmd = ws.command(&["checkpoint", "second", "--progress", "2"]);
    cmd.env("ORCHESTRATOR_TEST_FOLD_BYTES", "0");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Acknowledged: the fold comes after, and its failure is only reported.
    assert_eq!(out.status.code(), Some(12), "{stderr}");
    assert!(stderr.contains("folding the journal failed"), "{stderr}");
    assert_eq!(ws.read("task_stack.json"), stack_before, "a torn fold");
    assert_eq!(ws.json(12, &["status"])["progress"]["done"], 2);

    fs.free();
    assert_checkpoints(&ws, 2);
    assert_eq!(log_lines(&ws, FIRST), 2);
    assert_eq!(ws.progress(TASK), (2, 40));
    assert!(!ws.file(".orchestrator/journal.jsonl").exists(), "folded");
}

#[test]
fn a_checkpoint_cut_off_mid_line_by_a_full_disk_is_undone() {
    let Some(fs) = Tmpfs::new("a_checkpoint_cut_off_mid_line_by_a_full_disk_is_undone") else {
        return;
    };
    let ws = seed_in(&fs);
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "first", "--progress", "1"]);
    fs.fill();
    let before = ws.snapshot();
    // Longer than a page: the append writes what fits in the log's last page, then fails.
    let long = "x".repeat(9000);
    ws.refused(&["checkpoint", &long, "--progress", "2"]);
    assert!(ws.snapshot() == before, "a torn append was left behind");

    fs.free();
    ws.expect(12, &["checkpoint", &long, "--progress", "2"]);
    assert_checkpoints(&ws, 2);
    let status = ws.json(12, &["status"]);
    assert_eq!(status["progress"]["done"], 2);
}

#[test]
fn a_checkpoint_in_a_read_only_workspace_changes_nothing() {
    let Some(fs) = Tmpfs::new("a_checkpoint_in_a_read_only_workspace_changes_nothing") else {
        return;
    };
    let ws = seed_in(&fs);
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "first", "--progress", "1"]);
    fs.read_only();
    let before = ws.snapshot();
    ws.refused(&["checkpoint", "second", "--progress", "2"]);
    assert!(ws.snapshot() == before);
    fs.read_write();
    ws.expect(12, &["checkpoint", "second", "--progress", "2"]);
    assert_checkpoints(&ws, 2);
}

#[test]
fn a_checkpoint_whose_journal_cannot_be_written_changes_nothing() {
    let Some(mut fs) = Tmpfs::new("a_checkpoint_whose_journal_cannot_be_written") else {
        return;
    };
    let ws = seed_in(&fs);
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "first", "--progress", "1"]);
    // The session's log can still be written; the stack's journal cannot.
    let journal = ws.file(".orchestrator/journal.jsonl");
    fs.read_only_file(&journal);
    let before = ws.snapshot();
    let out = ws.run(&["checkpoint", "second", "--progress", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("journal.jsonl"), "{stderr}");
    assert!(
        !stderr.contains("cannot put"),
        "the undo itself failed: {stderr}"
    );
    assert!(ws.snapshot() == before, "a failed checkpoint changed files");
    fs.read_write_file(&journal);
    ws.expect(12, &["checkpoint", "second", "--progress", "2"]);
    assert_checkpoints(&ws, 2);
    assert_eq!(log_lines(&ws, FIRST), 2);
}

#[test]
fn task_add_on_a_full_disk_changes_nothing() {
    let Some(fs) = Tmpfs::new("task_add_on_a_full_disk_changes_nothing") else {
        return;
    };
    let ws = seed_in(&fs);
    fs.fill();
    let before = tree(&ws);
    ws.refused(&["task", "add", "another", "--title", "More", "--total", "3"]);
    ws.refused(&["task", "set", TASK, "--priority", "7"]);
    ws.refused(&["task", "done", TASK]);
    assert!(tree(&ws) == before);
    fs.free();
    ws.ok(&["task", "add", "another", "--title", "More", "--total", "3"]);
    assert_eq!(ws.stack()["tasks"].as_array().unwrap().len(), 2);
}

#[test]
fn start_that_cannot_save_the_stack_leaves_no_session_behind() {
    let Some(fs) = Tmpfs::new("start_that_cannot_save_the_stack_leaves_no_session_behind") else {
        return;
    };
    let ws = seed_in(&fs);
    fs.fill();
    // Room for the session record, none left for the stack's new copy.
    fs.leave_free_pages(1);
    let before = tree(&ws);
    ws.refused(&["start", "--agent", "claude"]);
    assert!(tree(&ws) == before, "a failed start left files behind");
    assert_eq!(
        ws.files_in(".orchestrator/sessions/active"),
        Vec::<String>::new()
    );

    fs.free();
    let v = ws.json(0, &["start", "--agent", "claude"]);
    assert_eq!(v["task"], TASK);
}

#[test]
fn init_on_a_nearly_full_disk_changes_nothing() {
    let Some(fs) = Tmpfs::new("init_on_a_nearly_full_disk_changes_nothing") else {
        return;
    };
    let mut failed = 0;
    for pages in 0..3 {
        let ws = Ws::empty_in(fs.path());
        ws.write(".gitignore", "target/\n");
        ws.ok(&["init"]);
        // Initialized once so the lock file exists: the tree below is what init itself makes.
        fs::remove_file(ws.file("task_stack.json")).unwrap();
        ws.write(".gitignore", "target/\n");
        fs::remove_dir_all(ws.file("session_handoffs")).unwrap();
        fs::remove_dir_all(ws.file(".orchestrator/sessions")).unwrap();
        fs.fill();
        fs.leave_free_pages(pages);
        let before = tree(&ws);
        let out = ws.run(&["init"]);
        if out.status.success() {
            fs.free();
            continue;
        }
        failed += 1;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            tree(&ws) == before,
            "init failing with {pages} free pages changed the workspace"
        );
        fs.free();
        ws.ok(&["init"]);
        assert!(ws.read(".gitignore").starts_with("target/\n"));
    }
    assert!(failed > 0, "the disk was never full enough to fail");
}

#[test]
fn a_wrap_cut_off_by_a_full_disk_shows_in_status_and_finishes_later() {
    let Some(fs) = Tmpfs::new("a_wrap_cut_off_by_a_full_disk_shows_in_status") else {
        return;
    };
    // How far a wrap gets depends on how much room is left: find a room where it stops midway.
    for pages in 0..8 {
        let ws = seed_in(&fs);
        ws.ok(&["start", "--agent", "claude"]);
        ws.set_now(&at_minutes(3));
        ws.expect(12, &["checkpoint", "some work", "--progress", "5"]);
        fs.fill();
        fs.leave_free_pages(pages);
        let before = ws.snapshot();
        let out = ws.run(&["wrap", "--summary", "half"]);
        let record = ws.file(&format!(".orchestrator/sessions/active/{FIRST}.json"));
        let half_done = !out.status.success()
            && fs::read_to_string(&record).is_ok_and(|r| r.contains("\"wrap\""));
        if !half_done {
            // Failing before any step is done puts the session back as it was.
            assert!(
                out.status.success() || ws.snapshot() == before,
                "a wrap failing at once with {pages} free pages changed files"
            );
            fs.free();
            continue;
        }
        assert_eq!(out.status.code(), Some(1));
        let finish = format!("orchestrator wrap --session {FIRST}");

        let text = ws.ok(&["status"]);
        assert!(
            text.starts_with(&format!("session=none wrapping={FIRST}\n")),
            "{text}"
        );
        assert!(
            !text.contains("Run `orchestrator start` to begin"),
            "{text}"
        );
        assert!(text.contains(&finish), "{text}");
        assert!(
            text.contains("done:") && text.contains("pending:"),
            "{text}"
        );

        let v = ws.json(0, &["status"]);
        let wrapping = &v["wrapping"][0];
        assert_eq!(wrapping["session"], FIRST);
        assert_eq!(wrapping["state"], "wrapping");
        assert_eq!(wrapping["finish"], finish);
        let names = |key: &str| -> Vec<String> {
            wrapping[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let (done, pending) = (names("done"), names("pending"));
        assert!(done.contains(&"backup".to_string()), "{v}");
        assert!(pending.contains(&"commit".to_string()), "{v}");
        let mut all = [done, pending].concat();
        all.sort();
        assert_eq!(
            all,
            ["archive", "backup", "commit", "handoff", "metrics", "stack"],
            "{v}"
        );

        fs.free();
        ws.ok(&["wrap", "--session", FIRST]);
        assert_eq!(
            ws.json(0, &["status"])["wrapping"],
            Value::Array(vec![]),
            "finished"
        );
        assert!(
            ws.file(&format!(".orchestrator/sessions/archive/{FIRST}.json"))
                .is_file()
        );
        return;
    }
    panic!("no amount of free space stopped the wrap midway");
}

#[test]
fn status_shows_a_cut_off_wrap_and_how_to_finish_it() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    let mut cmd = ws.command(&["wrap", "--summary", "part"]);
    cmd.env("ORCHESTRATOR_TEST_CRASH_AFTER", "handoff");
    assert_eq!(cmd.output().unwrap().status.code(), Some(86));

    let text = ws.ok(&["status"]);
    assert!(
        text.starts_with(&format!("session=none wrapping={FIRST}\n")),
        "{text}"
    );
    assert!(
        text.contains("done:     backup, metrics, handoff"),
        "{text}"
    );
    assert!(text.contains("pending:  stack, archive, commit"), "{text}");
    assert!(
        text.contains(&format!("`orchestrator wrap --session {FIRST}`")),
        "{text}"
    );
    let v = ws.json(0, &["status"]);
    assert_eq!(v["session"], Value::Null);
    assert_eq!(
        v["wrapping"][0]["done"],
        serde_json::json!(["backup", "metrics", "handoff"])
    );
    assert_eq!(
        v["wrapping"][0]["pending"],
        serde_json::json!(["stack", "archive", "commit"])
    );
    assert!(
        v["action"]
            .as_str()
            .unwrap()
            .contains("orchestrator wrap --session"),
        "{v}"
    );

    // Named, the session is described rather than refused.
    let v = ws.json(0, &["status", "--session", FIRST]);
    assert_eq!(v["session"], FIRST);
    assert_eq!(v["state"], "wrapping");

    // Beside a live session of another agent, the half-done wrap is still shown.
    ws.set_now(&at_minutes(1));
    ws.ok(&[
        "task",
        "add",
        "other",
        "--title",
        "other task",
        "--total",
        "2",
    ]);
    ws.ok(&["start", "--agent", "codex", "--task", "other"]);
    let v = ws.json(12, &["status", "--session", "session_20251106_001455"]);
    assert_eq!(v["session"], "session_20251106_001455");
    // `start` finished the cut-off wrap on its way.
    assert_eq!(v["wrapping"], Value::Array(vec![]));
}

#[test]
fn a_clock_stepping_back_never_shortens_a_lease() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    ws.set_now(&at_minutes(20));
    ws.expect(12, &["checkpoint", "later", "--progress", "1"]);
    // The clock steps back 15 minutes: the lease held (until minute 50) stays.
    ws.set_now(&at_minutes(5));
    ws.expect(12, &["checkpoint", "earlier", "--progress", "2"]);
    let status = ws.json(12, &["status"]);
    assert_eq!(status["lease_expires"], at_minutes(50));
    assert_eq!(
        ws.task(TASK)["claim"]["lease_expires"],
        at_minutes(50),
        "the stack's claim keeps the lease too"
    );
    // At minute 40 the session is alive: another agent finds nothing to recover.
    ws.set_now(&at_minutes(40));
    let before = ws.snapshot();
    ws.expect(3, &["start", "--agent", "codex"]);
    assert!(ws.snapshot() == before);
}

#[test]
fn a_recovered_agents_checkpoint_is_refused_not_given_to_the_new_session() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    let record: Value =
        serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/active/{FIRST}.json")))
            .unwrap();
    assert_eq!(record["agent"], "claude");
    assert!(record["pid"].as_u64().is_some_and(|p| p > 0));
    assert!(
        record["parent_pid"].as_u64().is_some_and(|p| p > 0),
        "{record}"
    );
    assert!(record["host"].as_str().is_some_and(|h| !h.is_empty()));

    ws.set_now(&at_minutes(31));
    let v = ws.json(0, &["start", "--agent", "codex"]);
    let second = v["session"].as_str().unwrap().to_string();
    assert_eq!(v["recovered"][0]["session"], FIRST);

    // claude wakes up and checkpoints without naming its session.
    let before = ws.snapshot();
    let mut cmd = ws.command(&["checkpoint", "late work", "--progress", "9"]);
    cmd.env("ORCHESTRATOR_AGENT", "claude");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("agent `claude` has no live session"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&second) && stderr.contains("codex"),
        "{stderr}"
    );
    let line = ws.refused(&["checkpoint", "late work", "--agent", "claude"]);
    assert!(
        line.contains("agent `claude` has no live session"),
        "{line}"
    );
    // Naming the session the agent was given does not get past the check either.
    let line = ws.refused(&[
        "checkpoint",
        "late",
        "--agent",
        "claude",
        "--session",
        &second,
    ]);
    assert!(
        line.contains(&format!("session {second} belongs to agent `codex`")),
        "{line}"
    );
    // Its old session, from the environment: already wrapped, the task lost (exit 5).
    let mut cmd = ws.command(&["checkpoint", "late work"]);
    cmd.env("ORCHESTRATOR_SESSION", FIRST);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already wrapped"));
    assert!(ws.snapshot() == before, "refused checkpoints changed files");

    // The session's own agent checkpoints as before, and so does one that says nothing.
    let mut cmd = ws.command(&["checkpoint", "codex work", "--progress", "3"]);
    cmd.env("ORCHESTRATOR_AGENT", "codex");
    // No token figure anywhere: the level is unknown (exit 12).
    assert_eq!(cmd.output().unwrap().status.code(), Some(12));
    ws.expect(12, &["checkpoint", "anonymous", "--progress", "4"]);
    assert_eq!(ws.json(12, &["status"])["checkpoints"], 2);
}

#[test]
fn an_agent_named_in_the_environment_finds_its_own_session_among_several() {
    let ws = Ws::seed();
    ws.ok(&[
        "task",
        "add",
        "other",
        "--title",
        "other task",
        "--total",
        "4",
    ]);
    ws.ok(&["start", "--agent", "claude"]);
    ws.ok(&["start", "--agent", "codex"]);
    let mut cmd = ws.command(&["checkpoint", "codex did one", "--progress", "1", "--json"]);
    cmd.env("ORCHESTRATOR_AGENT", "codex");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(12),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["task"], "other");
    assert_eq!(ws.progress("other"), (1, 4));
    assert_eq!(ws.progress(TASK), (0, 40));
}

#[test]
fn hook_install_on_a_nearly_full_disk_changes_nothing() {
    let Some(fs) = Tmpfs::new("hook_install_on_a_nearly_full_disk_changes_nothing") else {
        return;
    };
    let mut failed = 0;
    for pages in 0..3 {
        let ws = seed_in(&fs);
        ws.write(".claude/settings.json", "{\"model\": \"opus\"}\n");
        fs.fill();
        fs.leave_free_pages(pages);
        let before = tree(&ws);
        let out = ws.run(&["hook", "install", "claude"]);
        if !out.status.success() {
            failed += 1;
            assert_eq!(out.status.code(), Some(1));
            assert!(
                tree(&ws) == before,
                "hook install failing with {pages} free pages changed the workspace"
            );
        }
        fs.free();
    }
    assert!(failed > 0, "the disk was never full enough to fail");
}

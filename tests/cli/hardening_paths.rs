//! Issue 9, writes outside the workspace: path settings, symlinked state and foreign temp files.

use crate::common::*;
use rusqlite::Connection;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A directory beside the workspace, with a file of the user's that must survive anything.
fn outside() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".notes.tmp.keep"), "mine").unwrap();
    dir
}

/// `outside` as the workspace sees it through `..` (both live in the same temp directory).
fn climbing(outside: &TempDir) -> String {
    format!(
        "../{}",
        outside.path().file_name().unwrap().to_string_lossy()
    )
}

/// Every entry under `dir`, recursively, with its bytes (or its link target), without following
/// symlinks: proves nothing was written, removed or replaced there.
fn listing(dir: &Path) -> Vec<(PathBuf, String, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = path.symlink_metadata().unwrap();
            let (kind, bytes) = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ("link", target.to_string_lossy().into_owned().into_bytes())
            } else if meta.is_dir() {
                dirs.push(path.clone());
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&path).unwrap())
            };
            entries.push((path, kind.to_string(), bytes));
        }
    }
    entries.sort();
    entries
}

/// Sets one settings key of the stack, as a user editing the file would.
fn set_setting(ws: &Ws, key: &str, value: serde_json::Value) {
    let mut stack = ws.stack();
    stack["settings"][key] = value;
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
}

/// A SQLite database `data.db` in the workspace, backed up into `backup_dir`.
fn with_database(ws: &Ws, backup_dir: &str) {
    let conn = Connection::open(ws.file("data.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    set_setting(
        ws,
        "database",
        serde_json::json!({"path": "data.db", "backup_dir": backup_dir}),
    );
}

/// Runs `args` expecting a refusal naming each of `expected`, with the workspace and `outside`
/// exactly as before.
fn assert_refused(ws: &Ws, outside: &Path, args: &[&str], expected: &[&str]) {
    let before = ws.snapshot();
    let outside_before = listing(outside);
    let line = ws.refused(args);
    for part in expected {
        assert!(
            line.contains(part),
            "orchestrator {args:?}: {line:?} lacks {part:?}"
        );
    }
    assert!(
        ws.snapshot() == before,
        "orchestrator {args:?} changed the workspace"
    );
    assert_eq!(
        listing(outside),
        outside_before,
        "orchestrator {args:?} changed {}",
        outside.display()
    );
}

#[test]
fn wrap_refuses_a_handoff_dir_that_climbs_out_of_the_workspace() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    set_setting(&ws, "handoff_dir", climbing(&out).into());
    assert_refused(
        &ws,
        out.path(),
        &["wrap"],
        &["task_stack.json", "settings.handoff_dir", &climbing(&out)],
    );
}

#[test]
fn wrap_refuses_an_absolute_handoff_dir() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    let absolute = out.path().to_string_lossy().into_owned();
    set_setting(&ws, "handoff_dir", absolute.clone().into());
    assert_refused(
        &ws,
        out.path(),
        &["wrap"],
        &["task_stack.json", "settings.handoff_dir", "absolute"],
    );
}

#[test]
fn wrap_refuses_a_handoff_dir_through_a_symlink_that_leads_out() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    symlink(out.path(), ws.file("escape")).unwrap();
    set_setting(&ws, "handoff_dir", "escape/handoffs".into());
    assert_refused(
        &ws,
        out.path(),
        &["wrap"],
        &[
            "task_stack.json",
            "settings.handoff_dir",
            "outside the workspace",
        ],
    );
}

#[test]
fn start_does_not_recover_a_session_into_a_handoff_dir_outside() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    set_setting(&ws, "handoff_dir", climbing(&out).into());
    // Long after the lease ran out: this start would recover the session.
    ws.set_now(&at_minutes(24 * 60));
    assert_refused(
        &ws,
        out.path(),
        &["start"],
        &["task_stack.json", "settings.handoff_dir"],
    );
}

#[test]
fn commands_that_save_the_stack_refuse_a_handoff_dir_outside() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    set_setting(&ws, "handoff_dir", climbing(&out).into());
    for args in [
        &["task", "add", "other", "--title", "other task"][..],
        &["task", "done", "integrate_sessions_101_140"],
        &["checkpoint", "step", "--progress", "2"],
    ] {
        assert_refused(
            &ws,
            out.path(),
            args,
            &["task_stack.json", "settings.handoff_dir"],
        );
    }
}

#[test]
fn init_refuses_a_handoff_dir_that_is_a_symlink_out() {
    let ws = Ws::empty();
    let out = outside();
    symlink(out.path(), ws.file("session_handoffs")).unwrap();
    assert_refused(
        &ws,
        out.path(),
        &["init"],
        &["settings.handoff_dir", "session_handoffs", "outside"],
    );
    assert!(!ws.file("task_stack.json").exists());
    assert!(!ws.file(".orchestrator").exists());
}

#[test]
fn a_relative_backup_dir_that_climbs_out_is_refused() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    with_database(&ws, &climbing(&out));
    assert_refused(
        &ws,
        out.path(),
        &["wrap"],
        &[
            "task_stack.json",
            "settings.database.backup_dir",
            "absolute path",
        ],
    );
}

#[test]
fn a_relative_backup_dir_through_a_symlink_out_is_refused() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    symlink(out.path(), ws.file("backups")).unwrap();
    with_database(&ws, "backups");
    assert_refused(
        &ws,
        out.path(),
        &["wrap"],
        &[
            "task_stack.json",
            "settings.database.backup_dir",
            "outside the workspace",
        ],
    );
}

#[test]
fn an_absolute_backup_dir_outside_is_used_and_only_our_own_temp_files_are_swept() {
    let ws = Ws::seed();
    let out = outside();
    let dir = out.path();
    // Look like ours at a glance, but are not names our backup ever creates.
    let foreign = [".data.db.backup_mine.tmp-keep", ".data.db.backup_x.tmp-1"];
    for name in foreign {
        std::fs::write(dir.join(name), "user").unwrap();
    }
    // Exactly what a killed backup leaves: swept.
    let stale = [
        ".data.db.backup_20200101_000000.tmp-42",
        ".data.db.backup_20200101_000000.tmp-42-journal",
    ];
    for name in stale {
        std::fs::write(dir.join(name), "half").unwrap();
    }
    ws.ok(&["start"]);
    with_database(&ws, &dir.to_string_lossy());
    let v = ws.json(0, &["wrap"]);
    assert_eq!(v["backup"]["result"], "ok", "{v}");
    assert!(dir.join("data.db.backup_20251106_001355").is_file(), "{v}");
    for name in foreign.iter().chain([&".notes.tmp.keep"]) {
        assert!(dir.join(name).exists(), "{name} was deleted");
    }
    for name in stale {
        assert!(!dir.join(name).exists(), "{name} was left behind");
    }
}

#[test]
fn the_workspace_sweep_removes_only_our_own_temp_files() {
    let ws = Ws::seed();
    let stale_stack = format!(".task_stack.json.tmp.{}", dead_pid());
    let stale_session = format!(
        ".orchestrator/sessions/active/.session_20200101_000000.json.tmp.{}",
        dead_pid()
    );
    ws.write(".notes.tmp.keep", "mine");
    ws.write(".draft.tmp.1", "mine");
    ws.write("session_handoffs/.todo.md.tmp.7", "mine");
    ws.write(&stale_stack, "half");
    ws.write(&stale_session, "half");
    ws.ok(&["start"]);
    ws.ok(&["wrap"]);
    for mine in [
        ".notes.tmp.keep",
        ".draft.tmp.1",
        "session_handoffs/.todo.md.tmp.7",
    ] {
        assert_eq!(ws.read(mine), "mine", "{mine}");
    }
    assert!(!ws.file(&stale_stack).exists());
    assert!(!ws.file(&stale_session).exists());
}

/// Moves the workspace's `rel` (created when missing) into `outside` and leaves a symlink to it.
fn move_out(ws: &Ws, rel: &str, out: &Path) {
    let inside = ws.file(rel);
    std::fs::create_dir_all(&inside).unwrap();
    let target = out.join(rel.replace('/', "_"));
    std::fs::rename(&inside, &target).unwrap();
    symlink(&target, &inside).unwrap();
}

#[test]
fn a_symlinked_state_directory_is_refused() {
    let ws = Ws::seed();
    let out = outside();
    move_out(&ws, ".orchestrator", out.path());
    for args in [
        &["start"][..],
        &["task", "add", "other", "--title", "other task"],
        &["task", "list"],
        &["status"],
        &["next"],
    ] {
        assert_refused(&ws, out.path(), args, &[".orchestrator", "symbolic link"]);
    }
}

#[test]
fn a_symlinked_state_subdirectory_is_refused() {
    for rel in [
        "sessions",
        "sessions/active",
        "sessions/archive",
        "cache",
        "runs",
    ] {
        let ws = Ws::seed();
        let out = outside();
        move_out(&ws, &format!(".orchestrator/{rel}"), out.path());
        assert_refused(&ws, out.path(), &["start"], &[rel, "symbolic link"]);
    }
}

#[test]
fn a_symlinked_task_stack_is_refused_and_left_a_symlink() {
    let ws = Ws::seed();
    let out = outside();
    let real = out.path().join("task_stack.json");
    std::fs::rename(ws.file("task_stack.json"), &real).unwrap();
    symlink(&real, ws.file("task_stack.json")).unwrap();
    for args in [
        &["task", "add", "other", "--title", "other task"][..],
        &["start"],
        &["task", "list"],
        &["status"],
        &["next"],
    ] {
        assert_refused(
            &ws,
            out.path(),
            args,
            &["task_stack.json", "symbolic link", "replace it"],
        );
    }
    let meta = ws.file("task_stack.json").symlink_metadata().unwrap();
    assert!(meta.file_type().is_symlink());
}

#[test]
fn a_checkpoint_log_that_is_a_symlink_out_is_refused() {
    let ws = Ws::seed();
    let out = outside();
    ws.ok(&["start"]);
    let log = ".orchestrator/sessions/active/session_20251106_001355.checkpoints.jsonl";
    let target = out.path().join("log.jsonl");
    std::fs::write(&target, "").unwrap();
    symlink(&target, ws.file(log)).unwrap();
    assert_refused(
        &ws,
        out.path(),
        &["checkpoint", "step", "--progress", "2"],
        &["checkpoints.jsonl", "symbolic link"],
    );
}

//! Starting, selecting and recovering sessions.

use crate::common::*;

#[test]
fn a_double_start_of_the_same_agent_exits_4_and_changes_nothing() {
    let ws = Ws::seed();
    ws.ok(&["task", "add", "other", "--title", "other task"]);
    ws.ok(&["start", "--agent", "claude"]);
    let before = ws.snapshot();
    let out = ws.run(&["start", "--agent", "claude"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent `claude` already has a live session session_20251106_001355"),
        "{stderr}"
    );
    assert!(ws.snapshot() == before);
}

#[test]
fn another_agent_gets_the_next_task_and_a_held_task_exits_4() {
    let ws = Ws::seed();
    ws.ok(&["task", "add", "other", "--title", "other task"]);
    assert_eq!(
        ws.json(0, &["start", "--agent", "claude"])["task"],
        "integrate_sessions_101_140"
    );
    let before = ws.snapshot();
    ws.expect(
        4,
        &[
            "start",
            "--agent",
            "codex",
            "--task",
            "integrate_sessions_101_140",
        ],
    );
    assert!(ws.snapshot() == before);
    let second = ws.json(0, &["start", "--agent", "codex"]);
    assert_eq!(second["task"], "other");
    assert_eq!(
        second["session"], "session_20251106_001355_2",
        "same second, so a suffix"
    );
    // Nothing left for a third agent.
    let out = ws.run(&["start", "--agent", "gemini"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("held by session_20251106_001355"));
}

#[test]
fn with_two_live_sessions_one_must_be_named() {
    let ws = Ws::seed();
    ws.ok(&["task", "add", "other", "--title", "other task"]);
    ws.ok(&["start", "--agent", "claude"]);
    ws.ok(&["start", "--agent", "codex"]);
    let line = ws.refused(&["checkpoint", "x"]);
    assert!(line.contains("2 live sessions"), "{line}");
    assert!(
        line.contains("session_20251106_001355 (claude, integrate_sessions_101_140)"),
        "{line}"
    );
    assert!(
        line.contains("session_20251106_001355_2 (codex, other)"),
        "{line}"
    );

    let mut cmd = ws.command(&["checkpoint", "via env", "--advance", "1", "--json"]);
    cmd.env("ORCHESTRATOR_SESSION", "session_20251106_001355_2");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(12),
        "no token figure: level unknown"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["task"], "other");
    let v = ws.json(
        12,
        &[
            "checkpoint",
            "by flag",
            "--session",
            "session_20251106_001355",
            "--progress",
            "2",
        ],
    );
    assert_eq!(v["task"], "integrate_sessions_101_140");
    ws.refused(&["checkpoint", "x", "--session", "session_20251106_999999"]);
}

#[test]
fn no_ready_task_exits_3() {
    let ws = Ws::new();
    assert_eq!(ws.expect(3, &["start"]), "");
    ws.expect(3, &["next"]);
    ws.ok(&["task", "add", "a", "--title", "a task"]);
    ws.ok(&["task", "add", "b", "--title", "b task", "--after", "a"]);
    ws.ok(&["task", "set", "a", "--status", "blocked"]);
    let out = ws.run(&["start"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a: blocked") && stderr.contains("b: waiting on a (blocked)"),
        "{stderr}"
    );
    let next = ws.json(3, &["next"]);
    assert_eq!(next["task"], serde_json::Value::Null);
    assert_eq!(next["others"][1]["reason"], "waiting");
}

#[test]
fn next_explains_why_other_tasks_are_not_ready() {
    let ws = Ws::new();
    ws.ok(&["task", "add", "done_one", "--title", "done_one task"]);
    ws.ok(&["task", "done", "done_one"]);
    ws.ok(&[
        "task",
        "add",
        "low",
        "--title",
        "low task",
        "--priority",
        "5",
    ]);
    ws.ok(&[
        "task",
        "add",
        "urgent",
        "--title",
        "urgent task",
        "--priority",
        "1",
    ]);
    ws.ok(&[
        "task",
        "add",
        "gated",
        "--title",
        "gated task",
        "--priority",
        "1",
        "--after",
        "low",
    ]);
    let out = ws.ok(&["next"]);
    assert!(
        out.starts_with("next=urgent priority=1 progress=0/1 status=pending"),
        "{out}"
    );
    assert!(out.contains("done_one                 done"), "{out}");
    assert!(
        out.contains("low                      ready, after urgent"),
        "{out}"
    );
    assert!(
        out.contains("gated                    waiting on low (pending)"),
        "{out}"
    );
}

#[test]
fn a_checkpoint_renews_the_lease_and_a_stale_session_is_recovered_by_start() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    ws.set_now(&at_minutes(20));
    ws.ok(&[
        "checkpoint",
        "halfway there",
        "--progress",
        "7",
        "--tokens",
        "90000",
    ]);
    // 45 minutes after start but 25 after the checkpoint: still live.
    ws.set_now(&at_minutes(45));
    let before = ws.snapshot();
    ws.expect(4, &["start", "--agent", "claude"]);
    assert!(ws.snapshot() == before);
    let status = ws.json(0, &["status"]);
    assert_eq!(status["stale"], false);

    // 31 minutes after the last checkpoint: the lease has run out.
    ws.set_now(&at_minutes(51));
    assert_eq!(ws.json(0, &["status"])["stale"], true);
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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recovered"][0]["session"], "session_20251106_001355");
    assert_eq!(v["task"], "integrate_sessions_101_140");
    assert_eq!(v["progress"]["done"], 7);
    assert_eq!(v["session"], "session_20251106_010455");

    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    assert!(handoff.contains("- **Ended by:** recovered"), "{handoff}");
    assert!(
        handoff.contains("This session ended without a wrap"),
        "{handoff}"
    );
    assert!(
        handoff.contains("\"halfway there\" at 2025-11-06T00:33:55Z (progress 7)"),
        "{handoff}"
    );
    assert!(
        handoff.contains("- **Duration:** 20 minutes"),
        "ended at its last checkpoint: {handoff}"
    );
    let archived: serde_json::Value = serde_json::from_str(
        &ws.read(".orchestrator/sessions/archive/session_20251106_001355.json"),
    )
    .unwrap();
    assert_eq!(archived["wrap"]["reason"], "recovered");
    assert_eq!(
        ws.files_in(".orchestrator/sessions/active"),
        ["session_20251106_010455.json"]
    );
    assert_eq!(
        ws.task("integrate_sessions_101_140")["claim"]["session"],
        "session_20251106_010455"
    );
}

#[test]
fn a_stale_session_of_another_agent_frees_its_task() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    ws.expect(3, &["start", "--agent", "codex"]);
    ws.set_now(&at_minutes(31));
    let v = ws.json(0, &["start", "--agent", "codex"]);
    assert_eq!(v["task"], "integrate_sessions_101_140");
    assert_eq!(v["recovered"][0]["session"], "session_20251106_001355");
    // The recovered session is gone: its agent lost the task (exit 5) and cannot checkpoint.
    let before = ws.snapshot();
    let out = ws.run(&["checkpoint", "late", "--session", "session_20251106_001355"]);
    assert_eq!(out.status.code(), Some(5));
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(line.contains("already wrapped"), "{line}");
    assert!(
        line.contains("lost task `integrate_sessions_101_140`"),
        "{line}"
    );
    assert!(
        ws.snapshot() == before,
        "a refused checkpoint changed files"
    );
}

#[test]
fn a_claim_without_a_session_file_is_released_by_start() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    // As if `start` had died between writing the stack and the session record.
    std::fs::remove_file(ws.file(".orchestrator/sessions/active/session_20251106_001355.json"))
        .unwrap();
    ws.set_now(&at_minutes(1));
    let v = ws.json(0, &["start", "--agent", "codex"]);
    assert_eq!(v["task"], "integrate_sessions_101_140");
}

#[test]
fn wrapping_twice_is_an_error_not_a_second_handoff() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.ok(&["wrap"]);
    let before = ws.snapshot();
    let line = ws.refused(&["wrap"]);
    assert!(line.contains("no live session"), "{line}");
    let line = ws.refused(&["wrap", "--session", "session_20251106_001355"]);
    assert!(
        line.contains("session session_20251106_001355 was already wrapped"),
        "{line}"
    );
    assert!(ws.snapshot() == before);
}

#[test]
fn the_workspace_is_found_from_a_subdirectory_or_by_flag_or_env() {
    let ws = Ws::seed();
    std::fs::create_dir_all(ws.file("src/deep")).unwrap();
    let mut cmd = ws.command(&["next", "--json"]);
    cmd.current_dir(ws.file("src/deep"));
    assert!(cmd.output().unwrap().status.success());

    let elsewhere = tempfile::tempdir().unwrap();
    let dir = ws.path().to_str().unwrap();
    let mut cmd = ws.command(&["-C", dir, "next"]);
    cmd.current_dir(elsewhere.path());
    assert!(cmd.output().unwrap().status.success());
    let mut cmd = ws.command(&["next"]);
    cmd.current_dir(elsewhere.path())
        .env("ORCHESTRATOR_DIR", dir);
    assert!(cmd.output().unwrap().status.success());
}

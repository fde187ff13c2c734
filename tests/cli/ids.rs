//! Ids that would escape a directory are refused wherever they enter.

use crate::common::*;

const ESCAPING: [&str; 6] = ["../x", "a/b", "/etc/passwd", "", "..", "a\\b"];

#[test]
fn task_ids_that_escape_are_refused_at_every_entry() {
    let ws = Ws::seed();
    for id in ESCAPING {
        let before = ws.snapshot();
        for args in [
            vec!["task", "add", id, "--title", "t"],
            vec!["task", "show", id],
            vec!["task", "done", id],
            vec!["task", "set", id, "--total", "3"],
            vec!["start", "--task", id],
            vec!["task", "add", "ok", "--title", "ok task", "--after", id],
        ] {
            ws.refused(&args);
        }
        assert!(ws.snapshot() == before, "{id:?} changed the workspace");
    }
}

#[test]
fn task_ids_that_escape_are_refused_in_the_stack_file() {
    for id in ["../x", "a/b", "/abs", "", "a\\u0000b"] {
        let ws = Ws::new();
        ws.write(
            "task_stack.json",
            &format!(r#"{{"version": 1, "tasks": [{{"id": "{id}"}}]}}"#),
        );
        let line = ws.refused(&["next"]);
        assert!(line.contains("task_stack.json"), "{line}");
        assert!(line.contains("task id"), "{id:?}: {line}");
    }
}

#[test]
fn session_ids_that_escape_are_refused() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    for id in ESCAPING
        .iter()
        .chain(&["session_20251106_001355/../../x", "session_x"])
    {
        let before = ws.snapshot();
        let line = ws.refused(&["checkpoint", "x", "--session", id]);
        assert!(line.contains("not a session id"), "{id:?}: {line}");
        ws.refused(&["status", "--session", id]);
        ws.refused(&["wrap", "--session", id]);
        let mut cmd = ws.command(&["checkpoint", "x"]);
        cmd.env("ORCHESTRATOR_SESSION", id);
        if !id.is_empty() {
            assert_eq!(
                cmd.output().unwrap().status.code(),
                Some(1),
                "{id:?} via env"
            );
        }
        assert!(ws.snapshot() == before, "{id:?} changed the workspace");
    }
}

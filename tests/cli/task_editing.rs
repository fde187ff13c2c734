//! Changing tasks without editing JSON: remove, dependencies, blocked reasons, done under a
//! live session, and progress that only moves back on purpose.

use crate::common::*;
use serde_json::json;

/// `a` (4 units), then `b` and `c` after `a`.
fn chain() -> Ws {
    let ws = Ws::new();
    ws.ok(&["task", "add", "a", "--title", "a task", "--total", "4"]);
    ws.ok(&["task", "add", "b", "--title", "b task", "--after", "a"]);
    ws.ok(&["task", "add", "c", "--title", "c task", "--after", "a"]);
    ws
}

fn ids(ws: &Ws) -> Vec<String> {
    ws.stack()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rm_removes_a_task_nothing_waits_on() {
    let ws = chain();
    let out = ws.json(0, &["task", "rm", "c"]);
    assert_eq!(out["removed"]["id"], "c");
    assert_eq!(ids(&ws), ["a", "b"]);
    let err = ws.refused(&["task", "rm", "c"]);
    assert!(err.contains("no task `c`"), "{err}");
}

#[test]
fn rm_refuses_a_task_others_depend_on_and_force_drops_the_dependencies() {
    let ws = chain();
    let before = ws.snapshot();
    let err = ws.refused(&["task", "rm", "a"]);
    assert!(
        err.contains("task_stack.json") && err.contains("b, c depend on it"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(ws.snapshot(), before, "a refusal changes nothing");

    let out = ws.ok(&["task", "rm", "a", "--force"]);
    assert!(
        out.contains("Removed a; b, c no longer wait on it"),
        "{out}"
    );
    assert_eq!(ids(&ws), ["b", "c"]);
    assert_eq!(ws.task("b")["depends_on"], json!([]));
    assert_eq!(ws.json(0, &["next"])["task"], "b");
}

#[test]
fn rm_refuses_a_task_a_live_session_holds_even_with_force() {
    let ws = chain();
    ws.ok(&["start"]);
    let before = ws.snapshot();
    for args in [&["task", "rm", "a"][..], &["task", "rm", "a", "--force"]] {
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: busy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("held by live session session_20251106_001355")
                && stderr.contains("orchestrator task done a"),
            "{stderr}"
        );
        assert_eq!(ws.snapshot(), before, "{args:?} changed nothing");
    }
    // Once its lease has run out the session no longer holds it.
    ws.set_now(&at_minutes(31));
    ws.ok(&["task", "rm", "a", "--force"]);
    assert_eq!(ids(&ws), ["b", "c"]);
    // The stale session's recovery still hands off, though its task is gone.
    ws.ok(&["start"]);
    assert_eq!(ws.files_in(".orchestrator/sessions/archive").len(), 1);
}

#[test]
fn set_after_and_not_after_edit_dependencies_and_refuse_a_cycle() {
    let ws = chain();
    ws.ok(&["task", "add", "d", "--title", "d task"]);
    let out = ws.json(0, &["task", "set", "d", "--after", "b", "--after", "c"]);
    assert_eq!(out["task"]["depends_on"], json!(["b", "c"]));
    assert_eq!(out["changed"], json!(["after+=b", "after+=c"]));
    // Again: nothing to add, nothing changed.
    ws.ok(&["task", "set", "d", "--after", "b"]);
    assert_eq!(ws.task("d")["depends_on"], json!(["b", "c"]));

    let before = ws.snapshot();
    let err = ws.refused(&["task", "set", "a", "--after", "d"]);
    assert!(
        err.contains("dependency cycle: a -> d -> b -> a"),
        "the cycle, named: {err}"
    );
    assert_eq!(ws.snapshot(), before);
    let err = ws.refused(&["task", "set", "a", "--after", "a"]);
    assert!(err.contains("dependency cycle: a -> a"), "{err}");
    let err = ws.refused(&["task", "set", "a", "--after", "zz"]);
    assert!(err.contains("--after zz: no task `zz`"), "{err}");
    let err = ws.refused(&["task", "set", "d", "--after", "a", "--not-after", "a"]);
    assert!(err.contains("both --after and --not-after"), "{err}");
    assert_eq!(ws.snapshot(), before);

    ws.ok(&["task", "set", "d", "--not-after", "b"]);
    assert_eq!(ws.task("d")["depends_on"], json!(["c"]));
    assert!(ws.ok(&["task", "show", "d"]).contains("after:    c\n"));
}

#[test]
fn a_blocked_reason_is_shown_by_show_next_and_the_brief_and_goes_with_the_status() {
    let ws = chain();
    ws.ok(&[
        "task",
        "add",
        "other",
        "--title",
        "other task",
        "--priority",
        "9",
    ]);
    ws.ok(&[
        "task",
        "set",
        "a",
        "--status",
        "blocked",
        "--reason",
        "waiting for the API key",
    ]);
    assert_eq!(ws.task("a")["blocked_reason"], "waiting for the API key");
    let show = ws.ok(&["task", "show", "a"]);
    assert!(
        show.contains("blocked:  waiting for the API key\n"),
        "{show}"
    );
    assert_eq!(
        ws.json(0, &["task", "show", "a"])["task"]["blocked_reason"],
        "waiting for the API key"
    );

    let next = ws.ok(&["next"]);
    assert!(
        next.contains("blocked: waiting for the API key"),
        "next says why: {next}"
    );
    let others = ws.json(0, &["next"])["others"].clone();
    assert_eq!(others[0]["reason"], "blocked");
    assert_eq!(others[0]["detail"], "blocked: waiting for the API key");

    let out = ws.run(&["start", "--task", "a"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blocked: waiting for the API key"));

    let brief = ws.ok(&["start"]);
    assert!(
        brief.contains("Blocked:         a: waiting for the API key\n"),
        "the brief lists what is parked: {brief}"
    );
    ws.ok(&["wrap"]);
    let brief = ws.json(0, &["start"]);
    assert_eq!(
        brief["blocked"],
        json!([{"task": "a", "reason": "waiting for the API key"}])
    );
    ws.ok(&["wrap"]);

    // --reason belongs to a blocked task.
    let before = ws.snapshot();
    let err = ws.refused(&["task", "set", "b", "--reason", "x"]);
    assert!(err.contains("add --status blocked"), "{err}");
    assert_eq!(ws.snapshot(), before);

    ws.ok(&["task", "set", "a", "--status", "pending"]);
    assert!(ws.task("a").get("blocked_reason").is_none(), "cleared");
    assert!(!ws.ok(&["task", "show", "a"]).contains("blocked:"));
}

#[test]
fn set_status_done_fills_the_progress_as_task_done_does() {
    let ws = chain();
    let out = ws.json(0, &["task", "set", "a", "--status", "done"]);
    assert_eq!(out["changed"], json!(["status=done", "progress=4"]));
    assert_eq!(ws.progress("a"), (4, 4));
    assert_eq!(ws.task("a")["status"], "done");

    let before = ws.snapshot();
    let err = ws.refused(&["task", "set", "b", "--status", "done", "--progress", "0"]);
    assert!(err.contains("contradicts --status done"), "{err}");
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn done_on_a_held_task_tells_the_session_at_its_next_checkpoint_to_wrap() {
    let ws = chain();
    ws.ok(&["start"]);
    ws.ok(&[
        "checkpoint",
        "first unit",
        "--progress",
        "1",
        "--tokens",
        "1000",
    ]);
    let out = ws.ok(&["task", "done", "a"]);
    assert!(
        out.contains("Session session_20251106_001355 holds it"),
        "{out}"
    );
    assert_eq!(ws.progress("a"), (4, 4));

    // The budget is fine (level ok), but the task is closed: exit 11, wrap now.
    let v = ws.json(
        11,
        &[
            "checkpoint",
            "second unit",
            "--progress",
            "2",
            "--tokens",
            "2000",
        ],
    );
    assert_eq!(v["level"], "ok");
    assert_eq!(v["task_closed"], json!({"status": "done", "reason": null}));
    assert!(
        v["action"]
            .as_str()
            .unwrap()
            .contains("Task `a` was marked done while this session held it: stop and run `orchestrator wrap` now."),
        "{v}"
    );
    assert_eq!(v["progress"], json!({"done": 4, "total": 4}), "not lowered");
    let text = ws.expect(11, &["checkpoint", "third", "--tokens", "2100"]);
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("Task `a` was marked done"),
        "{text}"
    );
    ws.ok(&["checkpoint", "x", "--exit-zero"]);

    ws.ok(&["wrap"]);
    assert_eq!(ws.task("a")["status"], "done");
    assert!(ws.task("a").get("claim").is_none());
    assert_eq!(ws.json(0, &["next"])["task"], "b");
}

#[test]
fn blocked_while_held_also_tells_the_session_why() {
    let ws = chain();
    ws.ok(&["start"]);
    let out = ws.ok(&[
        "task",
        "set",
        "a",
        "--status",
        "blocked",
        "--reason",
        "schema frozen",
    ]);
    assert!(out.contains("holds it"), "{out}");
    let v = ws.json(11, &["checkpoint", "x", "--tokens", "1000"]);
    assert_eq!(
        v["task_closed"],
        json!({"status": "blocked", "reason": "schema frozen"})
    );
    assert!(
        v["action"]
            .as_str()
            .unwrap()
            .contains("marked blocked (schema frozen)")
    );
    ws.ok(&["wrap"]);
    assert_eq!(ws.task("a")["status"], "blocked", "wrap keeps it blocked");
}

#[test]
fn checkpoint_progress_below_the_current_one_is_refused_unless_forced() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.ok(&["checkpoint", "x", "--progress", "10", "--tokens", "1000"]);
    let before = ws.snapshot();
    let err = ws.refused(&["checkpoint", "oops", "--progress", "3"]);
    assert!(
        err.contains("--progress 3 is below the current progress")
            && err.contains("(10/40)")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(ws.snapshot(), before, "nothing recorded");
    let task = "integrate_sessions_101_140";
    assert_eq!(ws.progress(task), (10, 40));
    // The same progress again is no step back.
    ws.ok(&["checkpoint", "same", "--progress", "10", "--tokens", "1000"]);
    ws.ok(&[
        "checkpoint",
        "redo",
        "--progress",
        "3",
        "--force",
        "--tokens",
        "1000",
    ]);
    assert_eq!(ws.progress(task), (3, 40));
}

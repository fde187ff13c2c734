//! Every refused input: exit 1, a one-line message naming the problem, nothing changed.

use crate::common::*;

/// Runs `args` and asserts a refusal whose message contains each of `expected`, with every file
/// in the workspace byte-for-byte as before.
fn assert_refused(ws: &Ws, args: &[&str], expected: &[&str]) {
    let before = ws.snapshot();
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
}

fn with_stack(text: &str) -> Ws {
    let ws = Ws::new();
    ws.write("task_stack.json", text);
    ws
}

const COMMANDS: [&[&str]; 5] = [
    &["task", "list"],
    &["next"],
    &["start"],
    &["task", "add", "new", "--title", "new task"],
    &["status"],
];

#[test]
fn a_stack_that_does_not_parse_is_refused_with_line_and_column() {
    let ws = with_stack("{\n  \"version\": 1,\n  \"tasks\": [\n    {\"id\": \"a\",}\n  ]\n}\n");
    for args in COMMANDS {
        assert_refused(
            &ws,
            args,
            &["task_stack.json", "line 4, column 16", "trailing comma"],
        );
    }
}

#[test]
fn invalid_stacks_are_refused_naming_file_task_and_problem() {
    let cases: &[(&str, &[&str])] = &[
        (r#"{"version": 2, "tasks": []}"#, &["unsupported version 2"]),
        (r#"{"tasks": []}"#, &["missing `version`"]),
        (
            r#"{"version": 1, "tasks": [{"id": "a"}, {"id": "a"}]}"#,
            &["task `a` is defined twice"],
        ),
        (
            r#"{"version": 1, "tasks": [{"id": "a", "depends_on": ["ghost"]}]}"#,
            &["task `a`", "unknown task `ghost`"],
        ),
        (
            r#"{"version": 1, "tasks": [{"id": "a", "depends_on": ["c"]}, {"id": "b", "depends_on": ["a"]}, {"id": "c", "depends_on": ["b"]}]}"#,
            &["dependency cycle: a -> c -> b -> a"],
        ),
        (
            r#"{"version": 1, "tasks": [{"id": "a", "priority": 0}]}"#,
            &["task `a`", "priority must be 1 or more"],
        ),
        (
            r#"{"version": 1, "tasks": [{"id": "a", "priority": -3}]}"#,
            &["task `a`", "got -3"],
        ),
        (
            r#"{"version": 1, "tasks": [{"id": "a", "progress": {"done": 41, "total": 40}}]}"#,
            &[
                "task `a`",
                "progress.done (41) is above progress.total (40)",
            ],
        ),
        (
            r#"{"version": 1, "tasks": [{"id": "a", "progress": {"done": -1, "total": 40}}]}"#,
            &["line 1", "-1"],
        ),
        (
            r#"{"version": 1, "settings": {"budget": {"warn": 0.85, "shutdown": 0.85}}, "tasks": []}"#,
            &["warn (0.85) must be below settings.budget.shutdown (0.85)"],
        ),
        (
            r#"{"version": 1, "settings": {"budget": {"shutdown": 1.2}}, "tasks": []}"#,
            &["settings.budget.shutdown is 1.2"],
        ),
        (
            r#"{"version": 1, "settings": {"budget": {"warn": 0}}, "tasks": []}"#,
            &["settings.budget.warn is 0"],
        ),
        (
            r#"{"version": 1, "tasks": [{"id": "a", "status": "someday"}]}"#,
            &["unknown variant `someday`"],
        ),
    ];
    for (text, expected) in cases {
        let ws = with_stack(text);
        for args in COMMANDS {
            let mut all = vec!["task_stack.json"];
            all.extend_from_slice(expected);
            assert_refused(&ws, args, &all);
        }
    }
}

#[test]
fn bad_command_input_changes_nothing() {
    let ws = Ws::seed();
    ws.ok(&[
        "task",
        "add",
        "other",
        "--title",
        "other task",
        "--total",
        "5",
    ]);
    ws.ok(&["start", "--task", "integrate_sessions_101_140"]);
    ws.expect(12, &["checkpoint", "some", "--progress", "10"]);

    assert_refused(
        &ws,
        &["checkpoint", "too far", "--progress", "41"],
        &["--progress 41 is above the total", "(40)"],
    );
    assert_refused(&ws, &["checkpoint", "  "], &["message cannot be empty"]);
    assert_refused(
        &ws,
        &["task", "add", "other", "--title", "other task"],
        &["task `other` already exists"],
    );
    assert_refused(
        &ws,
        &["task", "add", "x", "--title", "x task", "--after", "ghost"],
        &["unknown task `ghost`"],
    );
    assert_refused(
        &ws,
        &["task", "add", "x", "--title", "x task", "--priority", "0"],
        &["task `x`", "priority must be 1 or more"],
    );
    assert_refused(
        &ws,
        &["task", "add", "x", "--title", "x task", "--total", "0"],
        &["task `x`", "total must be at least 1"],
    );
    assert_refused(
        &ws,
        &["task", "set", "integrate_sessions_101_140", "--total", "5"],
        &["progress.done (10) is above progress.total (5)"],
    );
    assert_refused(
        &ws,
        &["task", "set", "ghost", "--total", "5"],
        &["no task `ghost`"],
    );
    assert_refused(&ws, &["task", "set", "other"], &["nothing to set"]);
    assert_refused(&ws, &["task", "done", "ghost"], &["no task `ghost`"]);
    assert_refused(&ws, &["task", "show", "ghost"], &["no task `ghost`"]);
    assert_refused(
        &ws,
        &["start", "--task", "ghost", "--agent", "b"],
        &["no task `ghost`"],
    );
    assert_refused(
        &ws,
        &["start", "--agent", "bad agent"],
        &["agent name `bad agent` is not allowed"],
    );
    assert_refused(
        &ws,
        &["start", "--agent", "b", "--budget", "0"],
        &["--budget must be above 0"],
    );
    assert_refused(&ws, &["init"], &["already exists"]);
    assert_refused(
        &ws,
        &["wrap", "--reason", " "],
        &["--reason cannot be empty"],
    );
}

#[test]
fn a_cycle_made_through_task_set_is_refused_unwritten() {
    let ws = Ws::new();
    ws.ok(&["task", "add", "a", "--title", "a task"]);
    ws.ok(&["task", "add", "b", "--title", "b task", "--after", "a"]);
    // `task add --after` cannot form a cycle (the new task has no dependents), so edit by hand
    // the way a user would, and check that every command refuses it.
    let text = ws
        .read("task_stack.json")
        .replace("\"depends_on\": []", "\"depends_on\": [\"b\"]");
    ws.write("task_stack.json", &text);
    assert_refused(&ws, &["next"], &["dependency cycle: a -> b -> a"]);
}

#[test]
fn init_refuses_bad_thresholds_and_creates_nothing() {
    let ws = Ws::empty();
    let before = ws.snapshot();
    let line = ws.refused(&["init", "--warn", "0.9", "--shutdown", "0.8"]);
    assert!(
        line.contains("warn (0.9) must be below settings.budget.shutdown (0.8)"),
        "{line}"
    );
    ws.refused(&["init", "--shutdown", "1.5"]);
    ws.refused(&["init", "--budget", "0"]);
    assert!(ws.snapshot() == before);
    assert_eq!(ws.files_in("."), Vec::<String>::new());
}

#[test]
fn no_workspace_is_a_clear_error() {
    let ws = Ws::empty();
    let line = ws.refused(&["status"]);
    assert!(line.contains("no task_stack.json in"), "{line}");
    let line = ws.refused(&["-C", "/nonexistent/dir", "next"]);
    assert!(
        line.contains("/nonexistent/dir has no task_stack.json"),
        "{line}"
    );
}

#[test]
fn a_bad_orchestrator_now_is_refused() {
    let ws = Ws::seed();
    ws.set_now("yesterday");
    let line = ws.refused(&["next"]);
    assert!(line.contains("ORCHESTRATOR_NOW"), "{line}");
}

#[test]
fn usage_errors_exit_2() {
    let ws = Ws::seed();
    ws.expect(2, &["checkpoint"]);
    ws.expect(2, &["checkpoint", "x", "--progress", "1", "--advance", "1"]);
    ws.expect(2, &["checkpoint", "x", "--progress", "-1"]);
    ws.expect(2, &["task", "list", "--status", "someday"]);
    ws.expect(2, &["frobnicate"]);
}

#[test]
fn errors_under_json_stay_on_stderr() {
    let ws = Ws::seed();
    let out = ws.run(&["checkpoint", "x", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{stderr}"
    );
}

//! The seed scenario from the issue, end to end.

use crate::common::*;

#[test]
fn seed_scenario_start_checkpoint_wrap_and_resume() {
    let ws = Ws::seed();
    let start = ws.json(0, &["start", "--agent", "droid"]);
    assert_eq!(start["session"], "session_20251106_001355");
    assert_eq!(start["task"], "integrate_sessions_101_140");
    assert_eq!(
        start["progress"],
        serde_json::json!({"done": 0, "total": 40})
    );
    assert_eq!(start["budget"]["tokens"], 200000);

    ws.set_now("2025-11-06T00:15:02Z");
    let out = ws.expect(
        12,
        &["checkpoint", "Database status checked", "--progress", "1"],
    );
    assert!(
        out.starts_with(
            "level=unknown used=0 budget=200000 pct=0 warn=75 shutdown=85 progress=1/40 source=none"
        ),
        "{out}"
    );
    assert!(
        out.contains("--tokens N"),
        "says how to give the figure: {out}"
    );

    ws.set_now("2025-11-06T00:20:02Z");
    let out = ws.ok(&[
        "checkpoint",
        "Droid inbox checked: 29 files, all already integrated",
        "--progress",
        "10",
        "--tokens",
        "143000",
    ]);
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        "level=ok used=143000 budget=200000 pct=71.5 warn=75 shutdown=85 progress=10/40 source=explicit"
    );
    assert_eq!(
        out.lines().count(),
        2,
        "key=value line then one sentence: {out}"
    );

    let wrap = ws.json(
        0,
        &[
            "wrap",
            "--summary",
            "Inbox checked",
            "--next",
            "Integrate session 111",
        ],
    );
    assert_eq!(wrap["session"], "session_20251106_001355");
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    assert!(
        wrap["handoff"]
            .as_str()
            .unwrap()
            .ends_with("session_handoffs/handoff_session_20251106_001355.md")
    );
    assert!(handoff.contains("Database status checked"), "{handoff}");
    assert!(handoff.contains("Droid inbox checked: 29 files, all already integrated"));
    assert!(handoff.contains("71.5%"));
    assert!(handoff.contains("[#####---------------] 10/40 (25%)"));
    assert!(handoff.contains("- Integrate session 111"));
    assert!(handoff.contains("- Resume integrate_sessions_101_140 from 10/40."));
    assert!(handoff.contains("orchestrator start --task integrate_sessions_101_140 --agent droid"));

    let task = ws.task("integrate_sessions_101_140");
    assert_eq!(
        task["progress"],
        serde_json::json!({"done": 10, "total": 40})
    );
    assert_eq!(task["status"], "in_progress");
    assert!(task.get("claim").is_none(), "the claim is released: {task}");
    assert_eq!(task["checkpoints"].as_array().unwrap().len(), 2);
    assert_eq!(
        ws.files_in(".orchestrator/sessions/active"),
        Vec::<String>::new()
    );
    assert_eq!(
        ws.files_in(".orchestrator/sessions/archive"),
        ["session_20251106_001355.json"]
    );

    ws.set_now("2025-11-06T01:00:00Z");
    let again = ws.json(0, &["start", "--agent", "droid"]);
    assert_eq!(again["session"], "session_20251106_010000");
    assert_eq!(again["task"], "integrate_sessions_101_140");
    assert_eq!(
        again["progress"],
        serde_json::json!({"done": 10, "total": 40})
    );
    assert_eq!(again["resumed"], true);
    assert_eq!(
        again["last_checkpoint"]["message"],
        "Droid inbox checked: 29 files, all already integrated"
    );
    assert_eq!(
        again["last_handoff"],
        "session_handoffs/handoff_session_20251106_001355.md"
    );
}

#[test]
fn plain_start_prints_the_brief() {
    let ws = Ws::seed();
    let out = ws.ok(&["start", "--agent", "claude"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "session=session_20251106_001355 task=integrate_sessions_101_140 progress=0/40 budget=200000 agent=claude"
    );
    assert!(out.contains("Integrate sessions 101-140"));
    assert!(out.contains("Last handoff:    none"));
    assert!(out.contains("warn at 75% (150000), shutdown at 85% (170000)"));
}

#[test]
fn finishing_the_last_unit_marks_the_task_done_and_start_moves_on() {
    let ws = Ws::new();
    ws.ok(&[
        "task",
        "add",
        "first",
        "--title",
        "first task",
        "--total",
        "2",
    ]);
    ws.ok(&[
        "task",
        "add",
        "second",
        "--title",
        "second task",
        "--total",
        "3",
        "--after",
        "first",
    ]);
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "all of it", "--progress", "2"]);
    let wrap = ws.json(0, &["wrap"]);
    assert_eq!(wrap["status"], "done");
    assert_eq!(ws.task("first")["status"], "done");
    ws.set_now(&at_minutes(10));
    assert_eq!(ws.json(0, &["start"])["task"], "second");
}

#[test]
fn wrap_done_marks_the_task_done_whatever_its_progress() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "some", "--progress", "3"]);
    ws.ok(&["wrap", "--done"]);
    let task = ws.task("integrate_sessions_101_140");
    assert_eq!(task["status"], "done");
    assert_eq!(task["progress"]["done"], 40);
    assert_eq!(ws.expect(3, &["start"]), "");
}

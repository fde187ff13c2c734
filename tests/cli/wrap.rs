//! Wrap: the handoff, and finishing a wrap that was cut off.

use crate::common::*;

const STEPS: [&str; 7] = [
    "backup",
    "metrics",
    "handoff",
    "stack",
    "archive",
    "commit-pending",
    "commit",
];

fn crashed_wrap(step: &str) -> Ws {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    ws.set_now(&at_minutes(5));
    ws.ok(&[
        "checkpoint",
        "first part",
        "--progress",
        "12",
        "--tokens",
        "50000",
    ]);
    ws.set_now(&at_minutes(6));
    let mut cmd = ws.command(&["wrap", "--summary", "did a part", "--next", "do the rest"]);
    cmd.env("ORCHESTRATOR_TEST_CRASH_AFTER", step);
    assert_eq!(
        cmd.output().unwrap().status.code(),
        Some(86),
        "the crash hook fired after {step}"
    );
    ws
}

fn assert_wrapped_once(ws: &Ws) {
    assert_eq!(
        ws.files_in("session_handoffs"),
        [".gitkeep", "handoff_session_20251106_001355.md"]
    );
    assert_eq!(
        ws.files_in(".orchestrator/sessions/archive"),
        ["session_20251106_001355.json"]
    );
    let task = ws.task("integrate_sessions_101_140");
    assert!(task.get("claim").is_none() || task["claim"]["session"] != "session_20251106_001355");
    assert_eq!(ws.progress("integrate_sessions_101_140"), (12, 40));
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    assert!(
        handoff.contains("did a part") && handoff.contains("- do the rest"),
        "{handoff}"
    );
    assert!(
        handoff.contains("- **Ended by:** wrap"),
        "the original wrap's reason is kept: {handoff}"
    );
}

#[test]
fn a_wrap_cut_off_after_any_step_is_finished_by_the_next_wrap() {
    for step in STEPS {
        let ws = crashed_wrap(step);
        // Until it is finished, the session is not live: checkpoints are refused.
        let line = ws.refused(&["checkpoint", "late"]);
        assert!(line.contains("no live session"), "{step}: {line}");
        ws.set_now(&at_minutes(7));
        let out = ws.command(&["wrap", "--json"]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["resumed"], true, "{step}");
        let performed: Vec<&str> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let done_before = STEPS.iter().position(|s| *s == step).unwrap();
        for earlier in &STEPS[..=done_before] {
            assert!(
                !performed.contains(earlier),
                "{step}: {earlier} was done twice: {performed:?}"
            );
        }
        assert_wrapped_once(&ws);
        assert_eq!(
            ws.files_in(".orchestrator/sessions/active"),
            Vec::<String>::new(),
            "{step}"
        );
    }
}

#[test]
fn a_wrap_cut_off_is_finished_by_the_next_start() {
    for step in ["handoff", "stack", "commit-pending"] {
        let ws = crashed_wrap(step);
        ws.set_now(&at_minutes(8));
        let v = ws.json(0, &["start", "--agent", "claude"]);
        assert_eq!(
            v["recovered"][0]["session"], "session_20251106_001355",
            "{step}"
        );
        assert_eq!(v["progress"]["done"], 12, "{step}");
        assert_wrapped_once(&ws);
        assert_eq!(
            ws.files_in(".orchestrator/sessions/active"),
            ["session_20251106_002155.json"],
            "{step}"
        );
    }
}

#[test]
fn handoff_sections_are_all_present() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.ok(&["wrap"]);
    let handoff = ws.read("session_handoffs/handoff_session_20251106_001355.md");
    for heading in [
        "## Session",
        "## Progress",
        "## Checkpoints",
        "## Token Usage",
        "## Database",
        "## Changes",
        "## Issues Encountered",
        "## Next Steps",
        "## Resume",
    ] {
        assert!(
            handoff.lines().any(|l| l == heading),
            "missing {heading}:\n{handoff}"
        );
    }
    assert!(handoff.contains("No checkpoints were recorded."));
    assert!(handoff.contains("unknown (no checkpoint reported tokens)"));
}

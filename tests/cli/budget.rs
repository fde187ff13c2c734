//! Budget levels and the exit codes that carry them.

use crate::common::*;

fn live_seed() -> Ws {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    ws
}

#[test]
fn thresholds_set_the_exit_code() {
    let ws = live_seed();
    let out = ws.expect(0, &["checkpoint", "ok", "--tokens", "149999"]);
    assert!(out.starts_with("level=ok "), "{out}");

    let out = ws.expect(10, &["checkpoint", "warn", "--tokens", "150000"]);
    assert!(
        out.starts_with("level=warn used=150000 budget=200000 pct=75 warn=75 shutdown=85"),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .contains("Finish the current unit of work"),
        "{out}"
    );
    assert_eq!(
        ws.expect(10, &["status"])
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .next(),
        Some("level=warn")
    );

    let out = ws.expect(11, &["checkpoint", "shutdown", "--tokens", "170000"]);
    assert!(out.starts_with("level=shutdown used=170000"), "{out}");
    assert!(
        out.lines().nth(1).unwrap().contains("orchestrator wrap"),
        "{out}"
    );
    ws.expect(11, &["status"]);

    ws.expect(
        0,
        &["checkpoint", "quiet", "--tokens", "190000", "--exit-zero"],
    );
    ws.expect(0, &["status", "--exit-zero"]);
}

#[test]
fn checkpoint_json_carries_every_key() {
    let ws = live_seed();
    let v = ws.json(
        10,
        &["checkpoint", "x", "--progress", "10", "--tokens", "152340"],
    );
    for key in [
        "session", "task", "level", "used", "budget", "pct", "warn", "shutdown", "progress",
        "source", "action",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["level"], "warn");
    assert_eq!(v["used"], 152340);
    assert_eq!(v["pct"], 76.2);
    assert_eq!(v["warn"], 75.0);
    assert_eq!(v["shutdown"], 85.0);
    assert_eq!(v["progress"], serde_json::json!({"done": 10, "total": 40}));
    assert_eq!(v["source"], "explicit");
}

#[test]
fn tokens_are_a_gauge_and_carry_over_between_checkpoints() {
    let ws = live_seed();
    ws.expect(10, &["checkpoint", "a", "--tokens", "160000"]);
    // The context shrank (compaction): the latest figure counts, not a sum.
    let v = ws.json(0, &["checkpoint", "b", "--tokens", "20000"]);
    assert_eq!(v["used"], 20000);
    let v = ws.json(0, &["checkpoint", "c"]);
    assert_eq!(v["used"], 20000);
}

#[test]
fn start_budget_overrides_the_setting_for_that_session() {
    let ws = Ws::seed();
    ws.ok(&["start", "--budget", "100000"]);
    let v = ws.json(10, &["checkpoint", "x", "--tokens", "80000"]);
    assert_eq!(v["budget"], 100000);
    assert_eq!(v["pct"], 80.0);
}

#[test]
fn status_without_a_session_says_so() {
    let ws = Ws::seed();
    let out = ws.ok(&["status"]);
    assert!(out.starts_with("session=none"), "{out}");
    assert_eq!(ws.json(0, &["status"])["session"], serde_json::Value::Null);
}

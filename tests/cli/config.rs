//! `config get|set|list`: every setting reachable by a dotted key, validated, atomic.

use crate::common::*;
use serde_json::json;

#[test]
fn get_prints_values_and_defaults_the_file_leaves_out() {
    let ws = Ws::new();
    assert_eq!(ws.ok(&["config", "get", "budget.warn"]), "0.75\n");
    assert_eq!(
        ws.ok(&["config", "get", "handoff_dir"]),
        "session_handoffs\n"
    );
    assert_eq!(
        ws.json(0, &["config", "get", "git.commit_on_wrap"]),
        json!({"key": "settings.git.commit_on_wrap", "value": true})
    );
    // `run` is left out of the file at its defaults; its values are still answered.
    assert!(ws.stack()["settings"].get("run").is_none());
    assert_eq!(ws.ok(&["config", "get", "run.backoff_seconds"]), "60\n");
    // An optional setting that is not set.
    assert_eq!(ws.ok(&["config", "get", "budget.compact_at"]), "null\n");
    assert_eq!(ws.ok(&["config", "get", "settings.lease_minutes"]), "30\n");
}

#[test]
fn set_changes_one_setting_and_keeps_everything_else() {
    let ws = Ws::new();
    ws.ok(&["task", "add", "a", "--title", "a task", "--total", "3"]);
    let v = ws.json(0, &["config", "set", "budget.shutdown", "0.8"]);
    assert_eq!(
        v,
        json!({"key": "settings.budget.shutdown", "value": 0.8, "previous": 0.85})
    );
    let out = ws.ok(&["config", "set", "budget.warn", "0.7"]);
    assert_eq!(out, "settings.budget.warn = 0.7 (was 0.75)\n");
    ws.ok(&["config", "set", "git.commit_on_checkpoint", "true"]);
    ws.ok(&["config", "set", "lease_minutes", "45"]);
    ws.ok(&["config", "set", "budget.compact_at", "0.9"]);
    let settings = ws.stack()["settings"].clone();
    assert_eq!(
        settings["budget"],
        json!({"tokens": 200000, "warn": 0.7, "shutdown": 0.8, "compact_at": 0.9})
    );
    assert_eq!(settings["git"]["commit_on_checkpoint"], true);
    assert_eq!(settings["lease_minutes"], 45);
    assert_eq!(ws.progress("a"), (0, 3), "tasks untouched");
    // null unsets an optional setting.
    ws.ok(&["config", "set", "budget.compact_at", "null"]);
    assert!(ws.stack()["settings"]["budget"].get("compact_at").is_none());
    // The brief uses the new thresholds.
    let brief = ws.ok(&["start"]);
    assert!(
        brief.contains("warn at 70%") && brief.contains("shutdown at 80%"),
        "{brief}"
    );
}

#[test]
fn set_reaches_nested_sections_and_named_maps() {
    let ws = Ws::new();
    // A section that is not in the file yet is made.
    ws.ok(&["config", "set", "run.backoff_seconds", "5"]);
    assert_eq!(ws.stack()["settings"]["run"]["backoff_seconds"], 5);
    ws.ok(&[
        "config",
        "set",
        "run.rate_limit_patterns",
        r#"["slow down"]"#,
    ]);
    assert_eq!(
        ws.stack()["settings"]["run"]["rate_limit_patterns"],
        json!(["slow down"])
    );
    // A new meter, then its fields; an agent bound to it.
    ws.ok(&["config", "set", "meters.api.limit", "100"]);
    ws.ok(&["config", "set", "meters.api.kind", "gauge"]);
    ws.ok(&["config", "set", "agents.claude.meters", r#"["api"]"#]);
    let settings = ws.stack()["settings"].clone();
    assert_eq!(
        settings["meters"]["api"],
        json!({"limit": 100, "warn": 0.75, "shutdown": 0.85, "kind": "gauge", "source": "usage"})
    );
    assert_eq!(settings["agents"]["claude"], json!({"meters": ["api"]}));
    assert_eq!(ws.ok(&["config", "get", "meters.api.limit"]), "100\n");
    // Database: the path first, then its fields; a number-like name stays a string.
    ws.ok(&["config", "set", "database.path", "2025.db"]);
    assert_eq!(ws.stack()["settings"]["database"]["path"], "2025.db");
    assert_eq!(
        ws.ok(&["config", "get", "database.backup_dir"]),
        "backups\n"
    );
    ws.ok(&["config", "set", "database.backup_dir", "."]);
    ws.ok(&["config", "set", "database.keep_backups", "3"]);
    assert_eq!(
        ws.stack()["settings"]["database"],
        json!({"path": "2025.db", "backup_dir": ".", "keep_backups": 3, "metrics": []})
    );
}

#[test]
fn a_bad_value_or_an_unknown_key_is_refused_and_changes_nothing() {
    let ws = Ws::new();
    ws.write(
        "task_stack.json",
        r#"{"version": 1, "settings": {"budget": {"tokens": 1000, "warn": 0.75, "shutdown": 0.85}, "theme": "dark"}, "tasks": []}"#,
    );
    let before = ws.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (
            &["config", "set", "budget.warn", "0.9"],
            "settings.budget.warn (0.9) must be below settings.budget.shutdown (0.85)",
        ),
        (
            &["config", "set", "budget.tokens", "lots"],
            "settings.budget.tokens: invalid type: string \"lots\"",
        ),
        (
            &["config", "set", "budget.tokens", "0"],
            "settings.budget.tokens must be above 0",
        ),
        (
            &["config", "set", "budget.tokens", "-5"],
            "settings.budget.tokens: invalid",
        ),
        (
            &["config", "set", "handoff_dir", "../out"],
            "settings.handoff_dir `../out` uses `..`",
        ),
        (
            &["config", "set", "meters.tokens.limit", "5"],
            "`tokens` is the token budget",
        ),
        (
            &["config", "set", "meters.api.kind", "gauge"],
            "missing field `limit`",
        ),
        (
            &["config", "set", "agents.claude.meters", r#"["nope"]"#],
            "unknown meter `nope`",
        ),
        (
            &["config", "set", "budget.bogus", "1"],
            "unknown setting `settings.budget.bogus`",
        ),
        (
            &["config", "set", "theme", "light"],
            "unknown setting `settings.theme`",
        ),
        (
            &["config", "set", "budget.warn.x", "1"],
            "unknown setting `settings.budget.warn.x`",
        ),
        (&["config", "set", "budget..warn", "1"], "not a setting key"),
        (
            &["config", "get", "budget.bogus"],
            "unknown setting `settings.budget.bogus`",
        ),
    ];
    for (args, expected) in cases {
        let err = ws.refused(args);
        assert!(
            err.contains("task_stack.json") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert_eq!(ws.snapshot(), before, "{args:?} changed nothing");
    }
}

#[test]
fn set_refuses_a_directory_that_leads_out_through_a_symlink() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.file("out")).unwrap();
    let before = ws.snapshot();
    let err = ws.refused(&["config", "set", "handoff_dir", "out/handoffs"]);
    assert!(err.contains("leads outside the workspace"), "{err}");
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn set_takes_the_lock_and_gives_up_busy_while_another_holds_it() {
    let ws = Ws::new();
    // Held as another process would hold it (std's `File::lock`, an exclusive flock).
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(ws.file(".orchestrator/lock"))
        .unwrap();
    held.lock().unwrap();
    let before = ws.snapshot();
    let out = ws
        .command(&["config", "set", "budget.warn", "0.7"])
        .env("ORCHESTRATOR_LOCK_TIMEOUT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "busy while the lock is held");
    assert_eq!(ws.snapshot(), before);
    drop(held);
    ws.ok(&["config", "set", "budget.warn", "0.7"]);
}

#[test]
fn list_shows_every_setting_the_stack_holds() {
    let ws = Ws::empty();
    ws.ok(&["init", "--db", "data.db"]);
    let list = ws.ok(&["config", "list"]);
    for line in [
        "budget.tokens = 200000",
        "budget.warn = 0.75",
        "database.path = data.db",
        "database.backup_dir = backups",
        "git.commit_on_wrap = true",
        "handoff_dir = session_handoffs",
        "lease_minutes = 30",
    ] {
        assert!(list.lines().any(|l| l == line), "{line} in:\n{list}");
    }
    let v = ws.json(0, &["config", "list"]);
    assert_eq!(v["settings"]["budget"]["shutdown"], 0.85);
}

//! Meters: `settings.meters`, `checkpoint --usage`, agents bound to their meters, token figures
//! read from Claude Code and Codex transcripts (the compaction warning is in hook_lifecycle).

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

use crate::common::*;

/// Sets `settings.<key>` in the workspace's stack, as a user editing the file would.
fn set_setting(ws: &Ws, key: &str, value: Value) {
    let mut stack = ws.stack();
    stack["settings"][key] = value;
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
}

fn with_meters(agents: Value) -> Ws {
    let ws = Ws::seed();
    set_setting(
        &ws,
        "meters",
        json!({
            "api_calls": {"limit": 100, "warn": 0.5, "shutdown": 0.9, "kind": "counter"},
            "queue_depth": {"limit": 10, "kind": "gauge"},
        }),
    );
    set_setting(&ws, "agents", agents);
    ws
}

#[test]
fn counters_add_up_gauges_take_the_latest_and_the_worst_meter_sets_the_level() {
    let ws = with_meters(json!({}));
    ws.ok(&["start", "--agent", "droid"]);
    let out = ws.ok(&[
        "checkpoint",
        "a",
        "--tokens",
        "1000",
        "--usage",
        "api_calls=20",
        "--usage",
        "queue_depth=4",
    ]);
    assert!(
        out.contains("meter=api_calls kind=counter used=20 limit=100 pct=20 level=ok source=usage"),
        "{out}"
    );
    assert!(
        out.contains("meter=queue_depth kind=gauge used=4 limit=10"),
        "{out}"
    );

    let v = ws.json(
        10,
        &[
            "checkpoint",
            "b",
            "--tokens",
            "1000",
            "--usage",
            "api_calls=35",
            "--usage",
            "queue_depth=2",
        ],
    );
    assert_eq!(v["level"], "warn");
    assert_eq!(v["limiting"], "api_calls");
    assert_eq!(v["used"], 1000, "the token figures stay the token meter's");
    let meters = v["meters"].as_array().unwrap();
    assert_eq!(meters[0]["name"], "api_calls");
    assert_eq!(meters[0]["used"], 55, "a counter adds up");
    assert_eq!(meters[0]["level"], "warn");
    assert_eq!(meters[1]["used"], 2, "a gauge takes the latest value");
    assert!(
        v["action"]
            .as_str()
            .unwrap()
            .starts_with("Meter `api_calls` is at 55% of its limit (55/100)."),
        "{v}"
    );

    let out = ws.expect(11, &["checkpoint", "c", "--usage", "api_calls=40"]);
    assert!(out.starts_with("level=shutdown used=1000 "), "{out}");
    assert!(
        out.contains("Stop now and run `orchestrator wrap`"),
        "{out}"
    );
    // The values live in the session: status sees them, and the handoff records them.
    ws.expect(11, &["status"]);
    ws.ok(&["wrap", "--no-commit"]);
    let handoffs = ws.files_in("session_handoffs");
    let handoff = ws.read(&format!("session_handoffs/{}", handoffs.last().unwrap()));
    assert!(handoff.contains("- **Meter `api_calls`:** 95"), "{handoff}");
}

#[test]
fn an_agent_bound_to_its_meters_ignores_the_others() {
    let ws = with_meters(json!({"droid": {"meters": ["queue_depth"]}}));
    ws.ok(&["start", "--agent", "droid"]);
    // api_calls at 99% does not apply to droid; only queue_depth does.
    let v = ws.json(12, &["checkpoint", "a", "--usage", "api_calls=99"]);
    assert_eq!(
        v["level"], "unknown",
        "api_calls does not apply; tokens are unknown"
    );
    let names: Vec<&str> = v["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["queue_depth"]);
    ws.expect(11, &["checkpoint", "b", "--usage", "queue_depth=10"]);
}

#[test]
fn usage_for_an_unknown_or_transcript_meter_is_refused_and_changes_nothing() {
    let ws = with_meters(json!({}));
    let mut stack = ws.stack();
    stack["settings"]["meters"]["context"] =
        json!({"limit": 1000, "kind": "gauge", "source": "transcript"});
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    ws.ok(&["start"]);
    let before = ws.snapshot();
    let err = ws.refused(&["checkpoint", "x", "--usage", "tokenz=3"]);
    assert!(err.contains("--usage tokenz"), "{err}");
    assert!(
        err.contains("task_stack.json has no meter `tokenz`"),
        "{err}"
    );
    assert!(
        err.contains("known: api_calls, queue_depth, context"),
        "{err}"
    );
    let err = ws.refused(&["checkpoint", "x", "--usage", "context=3"]);
    assert!(err.contains("read from the transcript"), "{err}");
    assert_eq!(ws.snapshot(), before);
    // A malformed NAME=N is clap's usage error.
    let out = ws.run(&["checkpoint", "x", "--usage", "api_calls"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn invalid_meter_settings_are_refused_naming_the_setting() {
    for (meters, agents, problem) in [
        (
            json!({"calls": {"limit": 0}}),
            json!({}),
            "settings.meters.calls.limit must be above 0",
        ),
        (
            json!({"calls": {"limit": 5, "warn": 0.9, "shutdown": 0.5}}),
            json!({}),
            "settings.meters.calls.warn (0.9) must be below settings.meters.calls.shutdown (0.5)",
        ),
        (
            json!({"calls": {"limit": 5, "kind": "meter"}}),
            json!({}),
            "unknown variant `meter`",
        ),
        (
            json!({"calls": {"limit": 5}}),
            json!({"droid": {"meters": ["slots"]}}),
            "settings.agents.droid.meters names unknown meter `slots`",
        ),
        (
            json!({"tokens": {"limit": 5}}),
            json!({}),
            "`tokens` is the token budget",
        ),
    ] {
        let ws = Ws::seed();
        set_setting(&ws, "meters", meters);
        set_setting(&ws, "agents", agents);
        let before = ws.snapshot();
        let err = ws.refused(&["start"]);
        assert!(err.contains("task_stack.json"), "{err}");
        assert!(err.contains(problem), "{problem}: {err}");
        assert_eq!(ws.snapshot(), before);
    }
}

// --- transcripts -------------------------------------------------------------------------

fn assistant(id: &str, fill: u64) -> Value {
    json!({"type": "assistant", "isSidechain": false, "message": {
        "id": id, "model": "claude-sonnet-4-5", "role": "assistant",
        "content": [{"type": "text", "text": "working"}],
        "usage": {"input_tokens": 3, "cache_creation_input_tokens": 1000,
                  "cache_read_input_tokens": fill - 1003, "output_tokens": 50}}})
}

/// A seed workspace with a live session reading `transcript.jsonl`.
fn with_transcript() -> (Ws, PathBuf) {
    let ws = Ws::seed();
    let path = ws.file("transcript.jsonl");
    append(&path, &line(&assistant("msg_0", 20_000)));
    ws.ok(&[
        "start",
        "--agent",
        "claude",
        "--transcript",
        "transcript.jsonl",
    ]);
    (ws, path)
}

fn checkpoint_json(ws: &Ws, code: i32) -> Value {
    ws.json(code, &["checkpoint", "step", "--advance", "1"])
}

#[test]
fn checkpoint_and_status_read_the_fill_from_the_transcript() {
    let (ws, path) = with_transcript();
    let brief = ws.ok(&["status"]);
    assert!(
        brief.starts_with("level=ok used=20000 budget=200000 pct=10 warn=75 shutdown=85 progress=0/40 source=transcript"),
        "{brief}"
    );
    // The same response written once per content block, a sidechain, a synthetic message,
    // a zero usage, a malformed line and invalid UTF-8: only the main-chain response counts.
    append(&path, &line(&assistant("msg_1", 152_000)));
    append(&path, &line(&assistant("msg_1", 152_000)));
    let mut side = assistant("msg_side", 190_000);
    side["isSidechain"] = json!(true);
    append(&path, &line(&side));
    let mut synthetic = assistant("msg_syn", 199_000);
    synthetic["message"]["model"] = json!("<synthetic>");
    append(&path, &line(&synthetic));
    append(
        &path,
        &line(
            &json!({"type": "assistant", "message": {"id": "msg_z", "usage": {"input_tokens": 0}}}),
        ),
    );
    append(&path, b"{\"type\": \"assistant\", this is not json\n");
    append(&path, b"\xff\xfe not utf-8 \xc3\x28\n");
    append(
        &path,
        &line(&json!({"type": "user", "message": {"content": "hi"}})),
    );
    append(&path, &line(&json!({"type": "some_future_record", "x": 1})));

    let v = checkpoint_json(&ws, 10);
    assert_eq!(v["source"], "transcript");
    assert_eq!(v["used"], 152_000);
    assert_eq!(v["level"], "warn");
    assert_eq!(v["transcript"], json!(path));
    // The figure is recorded with the checkpoint, in the stack and the session.
    let task = ws.task("integrate_sessions_101_140");
    assert_eq!(task["checkpoints"][0]["tokens"], 152_000);

    // An explicit figure wins over the transcript.
    let v = ws.json(0, &["checkpoint", "x", "--tokens", "5000"]);
    assert_eq!(
        (v["source"].as_str(), v["used"].as_u64()),
        (Some("explicit"), Some(5000))
    );

    append(&path, &line(&assistant("msg_2", 172_400)));
    let out = ws.expect(11, &["status"]);
    assert!(
        out.starts_with("level=shutdown used=172400 budget=200000 pct=86.2 "),
        "{out}"
    );
    assert!(out.contains("source=transcript"), "{out}");
    // wrap reports the transcript's figure.
    ws.ok(&["wrap", "--no-commit"]);
    let archive = ws.files_in(".orchestrator/sessions/archive");
    let record: Value =
        serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{}", archive[0])))
            .unwrap();
    assert_eq!(record["tokens"]["used"], 172_400);
    assert_eq!(record["tokens"]["source"], "transcript");
}

#[test]
fn a_compact_boundary_makes_the_fill_unknown_until_the_next_response() {
    let (ws, path) = with_transcript();
    append(&path, &line(&assistant("msg_1", 180_000)));
    assert_eq!(checkpoint_json(&ws, 11)["used"], 180_000);
    append(
        &path,
        &line(
            &json!({"type": "system", "subtype": "compact_boundary", "content": "Conversation compacted"}),
        ),
    );
    let v = checkpoint_json(&ws, 0);
    assert_eq!(v["compacted"], true);
    assert_eq!(v["used"], 0);
    assert!(
        v["action"]
            .as_str()
            .unwrap()
            .contains("compacted its context"),
        "{v}"
    );
    append(&path, &line(&assistant("msg_2", 31_000)));
    let v = checkpoint_json(&ws, 0);
    assert_eq!(
        (v["compacted"].as_bool(), v["used"].as_u64()),
        (Some(false), Some(31_000))
    );
}

#[test]
fn a_line_split_across_two_appends_is_read_once_whole() {
    let (ws, path) = with_transcript();
    let whole = line(&assistant("msg_1", 160_000));
    let (first, rest) = whole.split_at(whole.len() / 2);
    append(&path, first);
    // Half a line is not a record yet: the figure stays the previous one.
    assert_eq!(checkpoint_json(&ws, 0)["used"], 20_000);
    append(&path, rest);
    assert_eq!(checkpoint_json(&ws, 10)["used"], 160_000);
    // Read once: a later response of the same id replaces it rather than adding up.
    assert_eq!(checkpoint_json(&ws, 10)["used"], 160_000);
    // The transcript read positions; the stack's index lives beside them.
    let cache: Vec<String> = ws
        .files_in(".orchestrator/cache")
        .into_iter()
        .filter(|name| name.starts_with("transcript-"))
        .collect();
    assert_eq!(cache.len(), 1, "{cache:?}");
    // The cache file is the JSON state, then its checksum line.
    let cache_text = ws.read(&format!(".orchestrator/cache/{}", cache[0]));
    let state: Value = serde_json::from_str(cache_text.lines().next().unwrap()).unwrap();
    assert_eq!(state["path"], json!(path));
    assert_eq!(
        state["state"]["offset"].as_u64(),
        Some(std::fs::metadata(&path).unwrap().len())
    );
    assert_eq!(
        state["state"]["cumulative"].as_u64(),
        Some(20_050 + 160_050),
        "each message id counted once"
    );
}

#[test]
fn a_truncated_or_replaced_transcript_is_read_again_from_the_start() {
    let (ws, path) = with_transcript();
    append(&path, &line(&assistant("msg_1", 160_000)));
    assert_eq!(checkpoint_json(&ws, 10)["used"], 160_000);
    // Truncated in place, then a smaller history written.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    append(&path, &line(&assistant("msg_9", 40_000)));
    assert_eq!(checkpoint_json(&ws, 0)["used"], 40_000);
    // Replaced by a new file (a new inode) that is longer than what was read.
    let replacement = ws.file("replacement.jsonl");
    for i in 0..20 {
        append(
            &replacement,
            &line(&assistant(&format!("r{i}"), 100_000 + i)),
        );
    }
    std::fs::rename(&replacement, &path).unwrap();
    assert_eq!(checkpoint_json(&ws, 0)["used"], 100_019);
}

#[test]
fn a_missing_transcript_falls_back_to_the_last_figure_with_a_warning() {
    let (ws, path) = with_transcript();
    ws.ok(&["checkpoint", "a"]);
    std::fs::remove_file(&path).unwrap();
    let out = ws.run(&["checkpoint", "b", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["used"], 20_000);
    assert_eq!(
        v["source"], "transcript",
        "the recorded figure keeps its source"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("transcript.jsonl"), "{stderr}");
}

#[test]
fn the_claude_code_session_id_finds_the_transcript() {
    let ws = Ws::seed();
    let config = ws.home().join("claude-config");
    let project = config.join("projects").join("-work-project");
    std::fs::create_dir_all(&project).unwrap();
    let id = "3f2a9c1e-0000-4000-8000-000000000001";
    let path = project.join(format!("{id}.jsonl"));
    append(&path, &line(&assistant("m", 161_000)));

    let mut start = ws.command(&["start", "--agent", "claude", "--json"]);
    start
        .env("CLAUDE_CODE_SESSION_ID", id)
        .env("CLAUDE_CONFIG_DIR", &config);
    let out = start.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let brief: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(brief["transcript"], json!(path));

    // The session remembers it: a checkpoint without the variables still reads it.
    assert_eq!(checkpoint_json(&ws, 10)["used"], 161_000);

    // Under the default config dir, ~/.claude, found at checkpoint time too.
    let ws = Ws::seed();
    ws.ok(&["start"]);
    let project = ws.home().join(".claude/projects/-x");
    std::fs::create_dir_all(&project).unwrap();
    append(
        &project.join(format!("{id}.jsonl")),
        &line(&assistant("m", 90_000)),
    );
    let mut checkpoint = ws.command(&["checkpoint", "a", "--json"]);
    checkpoint.env("CLAUDE_CODE_SESSION_ID", id);
    let out = checkpoint.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["source"].as_str(), v["used"].as_u64()),
        (Some("transcript"), Some(90_000))
    );
    // Remembered by the session: status reads it without the variable.
    append(
        &project.join(format!("{id}.jsonl")),
        &line(&assistant("m2", 95_000)),
    );
    let v = ws.json(0, &["status"]);
    assert_eq!(
        (v["source"].as_str(), v["used"].as_u64()),
        (Some("transcript"), Some(95_000))
    );
}

#[test]
fn a_codex_rollout_gives_the_fill_against_its_context_window() {
    let ws = Ws::seed();
    let dir = ws.home().join(".codex/sessions/2025/11/06");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rollout-2025-11-06T00-13-55-abc.jsonl");
    let token_count = |last: u64, total: u64| {
        json!({"timestamp": "2025-11-06T00:14:00Z", "type": "event_msg", "payload": {
            "type": "token_count", "info": {
                "total_token_usage": {"total_tokens": total},
                "last_token_usage": {"total_tokens": last},
                "model_context_window": 272_000}}})
    };
    append(
        &path,
        &line(&json!({"type": "session_meta", "payload": {"id": "abc", "cwd": "/w"}})),
    );
    append(&path, &line(&token_count(50_000, 50_000)));
    append(
        &path,
        &line(&json!({"type": "response_item", "payload": {"type": "message", "content": []}})),
    );
    append(&path, &line(&token_count(210_000, 260_000)));
    append(
        &path,
        &line(&json!({"type": "event_msg", "payload": {"type": "token_count", "info": null}})),
    );
    let path_arg = path.to_str().unwrap();
    ws.ok(&["start", "--agent", "codex", "--transcript", path_arg]);
    let v = checkpoint_json(&ws, 10);
    assert_eq!(v["used"], 210_000);
    assert_eq!(v["budget"], 272_000, "the model's window is the limit");
    assert_eq!(v["pct"], 77.2);
}

#[test]
fn a_transcript_meter_counts_the_sessions_tokens() {
    let (ws, path) = with_transcript();
    set_setting(
        &ws,
        "meters",
        json!({"session_tokens": {"limit": 400_000, "kind": "counter", "source": "transcript"}}),
    );
    append(&path, &line(&assistant("msg_1", 30_000)));
    append(&path, &line(&assistant("msg_2", 40_000)));
    let v = checkpoint_json(&ws, 0);
    assert_eq!(v["meters"][0]["used"], 20_050 + 30_050 + 40_050);
    append(&path, &line(&assistant("msg_3", 100_000)));
    append(&path, &line(&assistant("msg_4", 100_000)));
    append(&path, &line(&assistant("msg_5", 100_000)));
    let v = checkpoint_json(&ws, 11);
    assert_eq!(v["limiting"], "session_tokens");
    assert_eq!(v["used"], 100_000);
}

#[test]
fn a_100_mb_transcript_is_read_whole_once_then_incrementally() {
    let ws = Ws::seed();
    let path = ws.file("big.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let filler = "x".repeat(4000);
        let mut i = 0u64;
        let mut written = 0usize;
        while written < 100 * 1024 * 1024 {
            let mut record = assistant(&format!("msg_{}", i / 3), 10_000 + i % 150_000);
            record["message"]["content"][0]["text"] = json!(filler);
            let bytes = line(&record);
            written += bytes.len();
            out.write_all(&bytes).unwrap();
            i += 1;
        }
    }
    ws.ok(&["start", "--transcript", "big.jsonl"]);
    let v = ws.json(0, &["status"]);
    assert_eq!(v["source"], "transcript");
    let first = v["used"].as_u64().unwrap();

    append(&path, &line(&assistant("msg_last", 165_000)));
    let v = ws.json(10, &["status"]);
    assert_eq!(v["used"], 165_000);
    assert_ne!(first, 165_000);
    // The transcript read positions; the stack's index lives beside them.
    let cache: Vec<String> = ws
        .files_in(".orchestrator/cache")
        .into_iter()
        .filter(|name| name.starts_with("transcript-"))
        .collect();
    // The cache file is the JSON state, then its checksum line.
    let cache_text = ws.read(&format!(".orchestrator/cache/{}", cache[0]));
    let state: Value = serde_json::from_str(cache_text.lines().next().unwrap()).unwrap();
    assert_eq!(
        state["state"]["offset"].as_u64(),
        Some(std::fs::metadata(&path).unwrap().len())
    );
    assert!(
        ws.read(&format!(".orchestrator/cache/{}", cache[0])).len() < 16 * 1024,
        "the cached state stays small however long the transcript"
    );
}

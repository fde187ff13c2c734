//! Token figures from real transcript shapes (issue 10, points 1-8): subagents, nested cache
//! writes, Codex's full context, format detection, the unknown level, the last line, light
//! compaction and `/clear`. Every fixture line is shaped as the tool writes it; the sources are
//! quoted in the research notes, /work/wt/research/issue10-formats.md (section numbers below).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use crate::common::*;

/// A Claude Code 1.0.113 assistant line, verbatim but for the shortened content (notes §1.2:
/// pasted by a user in developerisnow/ai_documentation_docs,
/// graphiti-getzep/implement-neo4j-graphiti-with-claude-code-sessions.md).
const CLAUDE_LINE: &str = r##"{"parentUuid":"bfd636c5-3a0f-4afb-9b05-ee3f414944a8","isSidechain":false,"userType":"external","cwd":"/Users/user/__Repositories/HypeTrain/repositories/hypetrain-garden","sessionId":"cd336f00-1ac8-48a6-a345-8790b68cd87c","version":"1.0.113","gitBranch":"main","message":{"id":"msg_012vB2RA8M8TjspxpqjQ71K4","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","content":[{"type":"tool_use","id":"toolu_0186JxWK5zweJ668U8Kf7Lvx","name":"Write","input":{"file_path":"/Users/user/README.md","content":"# BUG-503"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":306,"cache_read_input_tokens":147449,"cache_creation":{"ephemeral_5m_input_tokens":306,"ephemeral_1h_input_tokens":0},"output_tokens":8,"service_tier":"standard"}},"requestId":"req_011CT9uFRGTsw9xDwb2qqehZ","type":"assistant","uuid":"c072c529-6d58-415b-9ef1-4954bed0eb60","timestamp":"2025-09-15T08:52:10.933Z"}"##;

/// [`CLAUDE_LINE`] with its id, request, sidechain flag and cache read changed; the usage block
/// otherwise that of a real 2.1.47 line (notes §1.2, index id 16944007931): 1 input, 266 cache
/// writes (all 1h), `output` out.
fn claude(id: &str, sidechain: bool, cache_read: u64, output: u64) -> Value {
    let mut v: Value = serde_json::from_str(CLAUDE_LINE).unwrap();
    v["message"]["id"] = json!(id);
    v["requestId"] = json!(format!("req_{id}"));
    v["isSidechain"] = json!(sidechain);
    v["message"]["usage"] = json!({"input_tokens":1,"cache_creation_input_tokens":266,
        "cache_read_input_tokens":cache_read,
        "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":266},
        "output_tokens":output,"service_tier":"standard","inference_geo":"not_available"});
    v
}

/// A subagent's record as Claude Code 2.1.47 writes it in `subagents/agent-<id>.jsonl` (notes
/// §2.2: `isSidechain: true`, `agentId`, the parent's `sessionId`).
fn subagent(id: &str, cache_read: u64, output: u64) -> Value {
    let mut v = claude(id, true, cache_read, output);
    v["agentId"] = json!("a241764");
    v["slug"] = json!("structured-doodling-boole");
    v["version"] = json!("2.1.47");
    v
}

/// A seed workspace with a transcript meter counting the session's total tokens.
fn with_total_meter() -> Ws {
    let ws = Ws::seed();
    let mut stack = ws.stack();
    stack["settings"]["meters"] =
        json!({"total": {"limit": 100_000_000, "kind": "counter", "source": "transcript"}});
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    ws
}

fn start_on(ws: &Ws, transcript: &Path) {
    ws.ok(&[
        "start",
        "--agent",
        "claude",
        "--transcript",
        transcript.to_str().unwrap(),
    ]);
}

fn checkpoint(ws: &Ws, code: i32) -> Value {
    ws.json(code, &["checkpoint", "step", "--advance", "1"])
}

fn total(v: &Value) -> u64 {
    v["meters"][0]["used"].as_u64().unwrap()
}

fn stderr_of(ws: &Ws, args: &[&str]) -> (Option<i32>, String, String) {
    let out = ws.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn subagents_count_in_the_total_and_apart_never_in_the_fill() {
    let ws = with_total_meter();
    let session = "7195cfed-d73e-458f-9a6c-6a0e85c59b83";
    let dir = ws.home().join(".claude/projects/-work");
    let main = dir.join(format!("{session}.jsonl"));
    append(&main, &line(&claude("msg_main1", false, 100_000, 20)));
    // Claude Code 1.x: a Task subagent's response inline, on the sidechain.
    append(&main, &line(&claude("msg_inline", true, 190_000, 10)));
    start_on(&ws, &main);
    // Claude Code 2.x: `<session>/subagents/agent-<id>.jsonl` (notes §2.1), one response
    // written as two content-block records, and a `/btw` replay of a main-chain response
    // (same message.id, another requestId: ccusage issue #913).
    let agent = dir.join(session).join("subagents/agent-a241764.jsonl");
    append(&agent, &line(&subagent("msg_sub", 5_000, 2)));
    append(&agent, &line(&subagent("msg_sub", 5_000, 30)));
    let mut replay = subagent("msg_main1", 100_000, 20);
    replay["requestId"] = json!("req_replayed");
    append(&agent, &line(&replay));

    let v = checkpoint(&ws, 0);
    assert_eq!(v["used"], 1 + 266 + 100_000, "the fill is the main chain's");
    let (main_total, inline, sub) = (100_287, 190_277, 5_297);
    assert_eq!(v["subagent_tokens"], inline + sub);
    assert_eq!(total(&v), main_total + inline + sub);
    let v = ws.json(0, &["status"]);
    assert_eq!(v["subagent_tokens"], inline + sub);
    assert_eq!(
        total(&v),
        main_total + inline + sub,
        "read once, counted once"
    );
}

#[test]
fn nested_cache_writes_count_when_the_flat_figure_is_zero() {
    // Before Claude Code 2.1.152 (CHANGELOG) the flat figure could be 0 with the writes only in
    // the nested breakdown; shape from the notes §3 (index id 61937930548) plus the flat 0.
    let ws = Ws::seed();
    let path = ws.file("t.jsonl");
    append(
        &path,
        br#"{"type":"assistant","timestamp":"2026-03-20T12:00:00Z","requestId":"req-1","message":{"id":"msg-1","model":"claude-opus-4-6","usage":{"input_tokens":100,"cache_creation_input_tokens":0,"cache_read_input_tokens":150000,"output_tokens":10,"cache_creation":{"ephemeral_5m_input_tokens":3000,"ephemeral_1h_input_tokens":4000}}}}
"#,
    );
    start_on(&ws, &path);
    let v = checkpoint(&ws, 10);
    assert_eq!(v["used"], 100 + 7_000 + 150_000);
    assert_eq!(v["level"], "warn");
}

/// A real rollout `token_count` (notes §5.4, verbatim from openai/codex issue #5276).
const CODEX_TOKEN_COUNT: &str = r#"{"timestamp":"2025-10-17T05:54:20.209Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":26549,"cached_input_tokens":22272,"output_tokens":1590,"reasoning_output_tokens":1152,"total_tokens":28139},"last_token_usage":{"input_tokens":6245,"cached_input_tokens":5376,"output_tokens":407,"reasoning_output_tokens":320,"total_tokens":6652},"model_context_window":272000},"rate_limits":{"primary":null,"secondary":null}}}"#;

/// The same info after codex-rs `TokenUsageInfo::fill_to_context_window(272000)` (notes §5.4).
const CODEX_FILLED: &str = r#"{"timestamp":"2025-10-17T05:55:01.000Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":0,"cached_input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,"total_tokens":272000},"last_token_usage":{"input_tokens":0,"cached_input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,"total_tokens":243861},"model_context_window":272000},"rate_limits":{"primary":null,"secondary":null}}}"#;

/// A rollout's first line (notes §5.2, a measured 0.125.0 payload).
const CODEX_META: &str = r#"{"timestamp":"2026-04-29T10:58:39.732Z","type":"session_meta","payload":{"id":"019dd8e4-15dd-7143-95e8-219014341717","timestamp":"2026-04-29T10:58:39.732Z","cwd":"/Users/alice","originator":"codex-tui","cli_version":"0.125.0","source":"cli","model_provider":"openai"}}"#;

#[test]
fn a_codex_context_filled_to_the_window_is_the_shutdown_level_and_the_total_stays() {
    let ws = with_total_meter();
    let path = ws
        .home()
        .join(".codex/sessions/2025/10/17/rollout-2025-10-17T05-50-00-abc.jsonl");
    append(
        &path,
        format!("{CODEX_META}\n{CODEX_TOKEN_COUNT}\n").as_bytes(),
    );
    start_on(&ws, &path);
    let v = checkpoint(&ws, 0);
    assert_eq!(
        (v["used"].as_u64(), v["budget"].as_u64()),
        (Some(6652), Some(272_000))
    );
    assert_eq!(total(&v), 28_139);
    append(&path, format!("{CODEX_FILLED}\n").as_bytes());
    let v = checkpoint(&ws, 11);
    assert_eq!(
        (v["level"].as_str(), v["used"].as_u64()),
        (Some("shutdown"), Some(272_000))
    );
    assert_eq!(
        total(&v),
        28_139,
        "the reset is neither spend nor a step back"
    );
}

#[test]
fn the_format_comes_from_the_content_and_a_file_without_usage_is_not_a_zero() {
    // A rollout under another name is still read as a rollout.
    let ws = Ws::seed();
    let renamed = ws.file("codex-session.log");
    append(
        &renamed,
        format!("{CODEX_META}\n{CODEX_TOKEN_COUNT}\n").as_bytes(),
    );
    start_on(&ws, &renamed);
    let v = checkpoint(&ws, 0);
    assert_eq!(
        (v["source"].as_str(), v["used"].as_u64()),
        (Some("transcript"), Some(6652))
    );
    assert_eq!(v["budget"], 272_000);

    // Lines with no `type`: no format, no figure. A warning, source none, level unknown.
    let ws = Ws::seed();
    let odd = ws.file("rollout-2025-11-06T00-13-55-x.jsonl");
    append(
        &odd,
        b"{\"input_tokens\": 150000}\n{\"usage\": {\"total_tokens\": 190000}}\n",
    );
    start_on(&ws, &odd);
    let (code, stdout, stderr) = stderr_of(&ws, &["checkpoint", "a", "--json"]);
    assert_eq!(code, Some(12), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("unknown"), Some("none"))
    );
    assert!(
        stderr.contains("no record with a token usage in it (format: not recognised)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rollout-2025-11-06T00-13-55-x.jsonl"),
        "{stderr}"
    );
}

/// `codex exec --json` output, verbatim from the official docs/exec.md (notes §6.2), then a
/// second turn whose usage is the thread's running total (openai/codex #17539, notes §6.3).
const CODEX_EXEC: &str = r#"{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Searching for README files**"}}
{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"2025-09-11\nAGENTS.md\n","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Yep, there is a `README.md` in the repository root."}}
{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}
{"type":"turn.started"}
{"type":"turn.completed","usage":{"input_tokens":40000,"cached_input_tokens":30000,"cache_write_input_tokens":0,"output_tokens":300,"reasoning_output_tokens":100}}
"#;

#[test]
fn codex_exec_output_gives_the_last_total_and_asks_for_the_fill() {
    let ws = with_total_meter();
    let path = ws.file("exec.jsonl");
    append(&path, CODEX_EXEC.as_bytes());
    start_on(&ws, &path);
    let (code, stdout, stderr) = stderr_of(&ws, &["checkpoint", "a", "--json"]);
    assert_eq!(code, Some(12), "no fill in exec output: {stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(total(&v), 40_300, "the last running total, not the sum");
    assert!(stderr.contains("`codex exec --json` output"), "{stderr}");
    let v = ws.json(0, &["checkpoint", "b", "--tokens", "90000"]);
    assert_eq!((v["level"].as_str(), total(&v)), (Some("ok"), 40_300));
}

#[test]
fn no_token_figure_is_the_unknown_level_with_its_own_exit_code() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "droid"]);
    let out = ws.expect(12, &["checkpoint", "a", "--advance", "1"]);
    assert!(out.starts_with("level=unknown used=0 "), "{out}");
    assert!(out.contains(" source=none"), "{out}");
    assert!(out.contains("`--tokens N`"), "{out}");
    assert!(
        out.contains("orchestrator start --transcript PATH"),
        "{out}"
    );
    let v = ws.json(12, &["status"]);
    assert_eq!(
        (v["level"].as_str(), v["limiting"].as_str()),
        (Some("unknown"), Some("tokens"))
    );
    ws.ok(&["status", "--exit-zero"]);
    ws.ok(&["checkpoint", "b", "--exit-zero"]);
    // Once a figure is given, it stands for the session until the next one.
    ws.ok(&["checkpoint", "c", "--tokens", "1000"]);
    ws.ok(&["checkpoint", "d"]);
    assert_eq!(ws.json(0, &["status"])["source"], "explicit");
}

#[test]
fn run_does_not_stop_an_agent_whose_level_is_unknown() {
    let ws = Ws::new();
    ws.ok(&[
        "task",
        "add",
        "alpha",
        "--title",
        "alpha task",
        "--total",
        "1",
    ]);
    let script = ws.file("agent.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\norchestrator checkpoint started >/dev/null\nsleep 1\norchestrator checkpoint done --advance 1 --exit-zero >/dev/null\norchestrator wrap --summary ok >/dev/null\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let mut cmd = ws.command(&[
        "run",
        "--poll",
        "50ms",
        "--grace",
        "100ms",
        "--",
        "./agent.sh",
    ]);
    let bin_dir = Path::new(BIN).parent().unwrap();
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = ws.files_in(".orchestrator/sessions/archive");
    let record: Value =
        serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{}", archive[0])))
            .unwrap();
    assert_eq!(
        record["wrap"]["reason"], "wrap",
        "the agent wrapped itself: {record}"
    );
    let runs = ws.files_in(".orchestrator/runs");
    let log = ws.read(&format!(".orchestrator/runs/{}", runs[0]));
    assert!(log.contains("\"level\":\"unknown\""), "{log}");
    assert!(!log.contains("shutdown"), "{log}");
}

#[test]
fn a_last_line_without_its_newline_is_counted_once() {
    let ws = with_total_meter();
    let path = ws.file("t.jsonl");
    append(&path, &line(&claude("msg_1", false, 20_000, 5)));
    start_on(&ws, &path);
    let last = line(&claude("msg_2", false, 160_000, 5));
    let (body, newline) = last.split_at(last.len() - 1);
    append(&path, body);
    let v = checkpoint(&ws, 10);
    assert_eq!(v["used"], 160_267);
    assert_eq!(total(&v), 20_272 + 160_272);
    append(&path, newline);
    let v = checkpoint(&ws, 10);
    assert_eq!(total(&v), 20_272 + 160_272, "the newline adds nothing");
    append(&path, &line(&claude("msg_3", false, 30_000, 5)));
    let v = checkpoint(&ws, 0);
    assert_eq!(
        (v["used"].as_u64(), total(&v)),
        (Some(30_267), 20_272 + 160_272 + 30_272)
    );
}

#[test]
fn a_microcompact_boundary_lowers_the_fill_by_what_it_saved() {
    let ws = Ws::seed();
    let path = ws.file("t.jsonl");
    append(&path, &line(&claude("msg_1", false, 165_000, 5)));
    start_on(&ws, &path);
    assert_eq!(checkpoint(&ws, 10)["used"], 165_267);
    // Claude Code's createMicrocompactBoundaryMessage (notes §4.1, CCB src/utils/messages.ts)
    // with the common fields every persisted record has.
    append(
        &path,
        br#"{"parentUuid":"c072c529-6d58-415b-9ef1-4954bed0eb60","isSidechain":false,"userType":"external","cwd":"/w","sessionId":"s","version":"2.1.88","gitBranch":"main","type":"system","subtype":"microcompact_boundary","content":"Context microcompacted","isMeta":false,"timestamp":"2026-04-01T10:00:00.000Z","uuid":"0b7e9a52-4c1d-4f0e-8d7a-2e5b9c3f1a60","level":"info","microcompactMetadata":{"trigger":"auto","preTokens":165267,"tokensSaved":40000,"compactedToolIds":["toolu_01A"],"clearedAttachmentUUIDs":[]}}
"#,
    );
    let v = checkpoint(&ws, 0);
    assert_eq!(
        (v["used"].as_u64(), v["compacted"].as_bool()),
        (Some(125_267), Some(false))
    );
}

/// A Claude Code project directory under the sanitized home with `<id>.jsonl` holding one
/// response that fills the context to `cache_read + 267`.
fn claude_session(ws: &Ws, id: &str, cache_read: u64) -> PathBuf {
    let path = ws.home().join(format!(".claude/projects/-work/{id}.jsonl"));
    append(
        &path,
        &line(&claude(&format!("msg_{id}"), false, cache_read, 5)),
    );
    path
}

#[test]
fn after_clear_a_session_found_from_the_environment_follows_the_new_transcript() {
    let ws = Ws::seed();
    let (first, second) = (
        "3f2a9c1e-0000-4000-8000-000000000001",
        "3f2a9c1e-0000-4000-8000-000000000002",
    );
    let old = claude_session(&ws, first, 160_000);
    let new = claude_session(&ws, second, 20_000);
    let mut start = ws.command(&["start", "--agent", "claude", "--json"]);
    start.env("CLAUDE_CODE_SESSION_ID", first);
    assert!(start.output().unwrap().status.success());
    let record = |ws: &Ws| -> Value {
        serde_json::from_str(&ws.read(".orchestrator/sessions/active/session_20251106_001355.json"))
            .unwrap()
    };
    assert_eq!(record(&ws)["transcript_origin"], "environment");

    // `/clear`: a new session id, a new file.
    let mut cmd = ws.command(&["checkpoint", "after clear", "--json"]);
    cmd.env("CLAUDE_CODE_SESSION_ID", second);
    let out = cmd.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["used"].as_u64(), v["transcript"].as_str()),
        (Some(20_267), new.to_str())
    );
    // Remembered: a command without the variable reads the new file too.
    let v = ws.json(0, &["status"]);
    assert_eq!(
        (v["used"].as_u64(), v["transcript"].as_str()),
        (Some(20_267), new.to_str())
    );
    assert_ne!(v["transcript"].as_str(), old.to_str());

    // A transcript given with --transcript is never swapped for the environment's.
    let ws = Ws::seed();
    let given = claude_session(&ws, first, 160_000);
    claude_session(&ws, second, 20_000);
    start_on(&ws, &given);
    assert_eq!(record(&ws)["transcript_origin"], "given");
    let mut cmd = ws.command(&["checkpoint", "x", "--json"]);
    cmd.env("CLAUDE_CODE_SESSION_ID", second);
    let v: Value = serde_json::from_slice(&cmd.output().unwrap().stdout).unwrap();
    assert_eq!(
        (v["used"].as_u64(), v["transcript"].as_str()),
        (Some(160_267), given.to_str())
    );
}

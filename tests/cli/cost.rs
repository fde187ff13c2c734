//! Cost (issue 17): tokens per model from real transcript shapes, priced by the embedded table or
//! `settings.pricing`; unknown models unpriced, never $0; the `cost_usd` meter; `run --max-cost`.
//! Fixture lines have the shapes the tools write; sources in /work/wt/research/issue10-formats.md
//! (section numbers below) and in each fixture's comment.

use serde_json::{Value, json};
use std::path::Path;

use crate::common::*;
use crate::run::{agent, final_line, git_workspace, run, stderr};

/// A Claude Code 1.0.113 assistant line, verbatim but for the shortened content (notes §1.2:
/// pasted by a user in developerisnow/ai_documentation_docs,
/// graphiti-getzep/implement-neo4j-graphiti-with-claude-code-sessions.md). Model
/// `claude-opus-4-1-20250805`; 4 input, 306 cache writes (all 5-minute), 147449 cache reads,
/// 8 output.
pub const OPUS_LINE: &str = r##"{"parentUuid":"bfd636c5-3a0f-4afb-9b05-ee3f414944a8","isSidechain":false,"userType":"external","cwd":"/Users/user/__Repositories/HypeTrain/repositories/hypetrain-garden","sessionId":"cd336f00-1ac8-48a6-a345-8790b68cd87c","version":"1.0.113","gitBranch":"main","message":{"id":"msg_012vB2RA8M8TjspxpqjQ71K4","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","content":[{"type":"tool_use","id":"toolu_0186JxWK5zweJ668U8Kf7Lvx","name":"Write","input":{"file_path":"/Users/user/README.md","content":"# BUG-503"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":306,"cache_read_input_tokens":147449,"cache_creation":{"ephemeral_5m_input_tokens":306,"ephemeral_1h_input_tokens":0},"output_tokens":8,"service_tier":"standard"}},"requestId":"req_011CT9uFRGTsw9xDwb2qqehZ","type":"assistant","uuid":"c072c529-6d58-415b-9ef1-4954bed0eb60","timestamp":"2025-09-15T08:52:10.933Z"}"##;

/// Its cost at Claude Opus 4.1's prices ($15 input, $18.75 5-minute write, $1.50 hit, $75 output).
const OPUS_LINE_USD: f64 = (4.0 * 15.0 + 306.0 * 18.75 + 147_449.0 * 1.5 + 8.0 * 75.0) / 1e6;

/// A Claude Code 2.1.x record: `message.model` first, as 2.1.x writes it (notes §1.2), with the
/// usage block of a real 2.1.47 line (1 input, 266 cache writes all 1-hour, 15213 cache reads).
fn sonnet_2_1_47(output: u64) -> Value {
    json!({"parentUuid":"2b5bd718-65fb-4a77-aca2-a43e5c87187a","isSidechain":false,"userType":"external",
        "cwd":"/Users/zhangjiabei/Desktop/ecomcrm","sessionId":"7195cfed-d73e-458f-9a6c-6a0e85c59b83",
        "version":"2.1.47","gitBranch":"main","slug":"structured-doodling-boole",
        "message":{"model":"claude-sonnet-4-6","id":"msg_013bvMSiYfR4UNfGChnyyFta","type":"message","role":"assistant",
            "content":[{"type":"text","text":"Done."}],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":1,"cache_creation_input_tokens":266,"cache_read_input_tokens":15213,
                "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":266},
                "output_tokens":output,"service_tier":"standard","inference_geo":"not_available"}},
        "requestId":"req_011CYGcJiBvvnPwUeHeMzTxe","type":"assistant","uuid":"21fb4c22-18f3-4383-bdc2-dc2a5e9e6a2b",
        "timestamp":"2026-02-19T02:08:35.084Z"})
}

/// The same shape under a model no table knows.
fn unknown_model() -> Value {
    let mut v = sonnet_2_1_47(5);
    v["message"]["model"] = json!("claude-opus-9-9");
    v["message"]["id"] = json!("msg_unknown");
    v["requestId"] = json!("req_unknown");
    v["message"]["usage"] = json!({"input_tokens": 10, "output_tokens": 5});
    v
}

fn set_settings(ws: &Ws, key: &str, value: Value) {
    let mut stack = ws.stack();
    stack["settings"][key] = value;
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
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

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn model<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["cost"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == name)
        .unwrap_or_else(|| panic!("no model {name} in {v}"))
}

#[test]
fn several_models_both_cache_durations_and_an_unknown_model_are_priced_apart() {
    let ws = Ws::seed();
    let transcript = ws.home().join(".claude/projects/-work/s.jsonl");
    append(&transcript, format!("{OPUS_LINE}\n").as_bytes());
    // One response written as two content-block records: the larger output wins, counted once.
    append(&transcript, &line(&sonnet_2_1_47(2)));
    append(&transcript, &line(&sonnet_2_1_47(50)));
    append(&transcript, &line(&unknown_model()));
    start_on(&ws, &transcript);

    let v = ws.json(0, &["checkpoint", "step", "--advance", "1"]);
    let sonnet_usd = (1.0 * 3.0 + 266.0 * 6.0 + 15_213.0 * 0.3 + 50.0 * 15.0) / 1e6;
    let total = v["cost_usd"].as_f64().unwrap();
    assert!(close(total, OPUS_LINE_USD + sonnet_usd), "{v}");

    let opus = model(&v, "claude-opus-4-1-20250805");
    assert_eq!(
        opus["tokens"],
        json!({"input": 4, "output": 8, "cache_write_5m": 306, "cache_write_1h": 0, "cache_read": 147449})
    );
    assert!(close(opus["cost_usd"].as_f64().unwrap(), OPUS_LINE_USD));
    let sonnet = model(&v, "claude-sonnet-4-6");
    assert_eq!(
        sonnet["tokens"],
        json!({"input": 1, "output": 50, "cache_write_5m": 0, "cache_write_1h": 266, "cache_read": 15213})
    );
    let unknown = model(&v, "claude-opus-9-9");
    assert_eq!(unknown["cost_usd"], Value::Null, "unpriced, never $0");
    assert_eq!(v["cost"]["unpriced_tokens"], 15);
    assert_eq!(v["cost"]["unpriced_models"], json!(["claude-opus-9-9"]));

    let text = ws.ok(&["status"]);
    assert!(
        text.contains("cost_usd=0.2345 models=3 unpriced=claude-opus-9-9 unpriced_tokens=15"),
        "{text}"
    );
    let status = ws.json(0, &["status"]);
    assert!(close(status["cost_usd"].as_f64().unwrap(), total));

    // The session records its cost, and keeps it in the archive.
    ws.ok(&["wrap", "--no-commit"]);
    let archive = ws.files_in(".orchestrator/sessions/archive");
    let record: Value =
        serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{}", archive[0])))
            .unwrap();
    assert!(close(record["cost"]["cost_usd"].as_f64().unwrap(), total));
    assert_eq!(record["cost"]["models"].as_array().unwrap().len(), 3);
    // The handoff carries it too: in its front matter, and by model under Token Usage.
    let handoffs = ws.files_in("session_handoffs");
    let handoff = ws.read(&format!("session_handoffs/{}", handoffs.last().unwrap()));
    let front_cost: f64 = handoff
        .lines()
        .find_map(|l| l.strip_prefix("cost_usd: "))
        .unwrap_or_else(|| panic!("no cost_usd in the front matter:\n{handoff}"))
        .parse()
        .unwrap();
    assert!(close(front_cost, total), "{handoff}");
    let cost_line = handoff
        .lines()
        .find(|l| l.starts_with("- **Cost:** "))
        .unwrap_or_else(|| panic!("no cost line:\n{handoff}"));
    assert!(
        cost_line.starts_with("- **Cost:** $0.23 (")
            && cost_line.contains("claude-opus-4-1-20250805: $")
            && cost_line.contains("claude-opus-9-9: no price"),
        "{cost_line}"
    );
    let log = ws.json(0, &["log"]);
    assert!(close(
        log["sessions"][0]["cost_usd"].as_f64().unwrap(),
        total
    ));
}

#[test]
fn a_subagent_on_another_model_is_priced_at_its_own_model() {
    let ws = Ws::seed();
    let session = "cd336f00-1ac8-48a6-a345-8790b68cd87c";
    let dir = ws.home().join(".claude/projects/-work");
    let main = dir.join(format!("{session}.jsonl"));
    append(&main, format!("{OPUS_LINE}\n").as_bytes());
    // Claude Code 2.x writes a subagent's records beside the session, in
    // `<session>/subagents/agent-<id>.jsonl`, all on the sidechain (notes §2.1, §2.2).
    let mut sub = sonnet_2_1_47(40);
    sub["isSidechain"] = json!(true);
    sub["agentId"] = json!("a241764");
    sub["message"]["model"] = json!("claude-haiku-4-5-20251001");
    append(
        &dir.join(session).join("subagents/agent-a241764.jsonl"),
        &line(&sub),
    );
    start_on(&ws, &main);
    let v = ws.json(0, &["checkpoint", "step"]);
    let haiku_usd = (1.0 * 1.0 + 266.0 * 2.0 + 15_213.0 * 0.1 + 40.0 * 5.0) / 1e6;
    assert!(
        close(
            model(&v, "claude-haiku-4-5-20251001")["cost_usd"]
                .as_f64()
                .unwrap(),
            haiku_usd
        ),
        "{v}"
    );
    assert!(close(
        v["cost_usd"].as_f64().unwrap(),
        OPUS_LINE_USD + haiku_usd
    ));
}

#[test]
fn only_unknown_models_leave_the_cost_unknown_and_settings_pricing_prices_them() {
    let ws = Ws::seed();
    let transcript = ws.home().join(".claude/projects/-work/s.jsonl");
    append(&transcript, &line(&unknown_model()));
    start_on(&ws, &transcript);
    let v = ws.json(0, &["checkpoint", "step"]);
    assert_eq!(v["cost_usd"], Value::Null, "{v}");
    assert!(ws.ok(&["status"]).contains("cost_usd=unknown models=1"));

    set_settings(
        &ws,
        "pricing",
        json!({"claude-opus-9-9": {"input": 100, "output": 1000},
               "claude-sonnet-4-6": {"input": 0, "output": 0}}),
    );
    let v = ws.json(0, &["checkpoint", "step"]);
    assert!(close(
        v["cost_usd"].as_f64().unwrap(),
        (10.0 * 100.0 + 5.0 * 1000.0) / 1e6
    ));
    ws.write("task_stack.json", &{
        let mut stack = ws.stack();
        stack["settings"]["pricing"] = json!({"x": {"input": -1, "output": 1}});
        serde_json::to_string_pretty(&stack).unwrap()
    });
    let err = ws.refused(&["status"]);
    assert!(err.contains("settings.pricing.x.input"), "{err}");
}

/// A Codex 0.12x `turn_context` line: the payload measured from a real session (notes §5.3,
/// index id 59657024784, instructions shortened) under the `RolloutLine` envelope
/// (`{timestamp, type, payload}`, codex-rs `protocol.rs` `RolloutItem::TurnContext`, whose
/// `TurnContextItem` carries `model: String`).
fn turn_context(model: &str) -> Value {
    json!({"timestamp":"2025-10-17T05:54:10.000Z","type":"turn_context","payload":
        {"turn_id":"019df7b2-1df3-7e01-b2f9-f9283453cd1c","cwd":"/Users/alice","current_date":"2026-05-05",
         "timezone":"Asia/Shanghai","approval_policy":"never","sandbox_policy":{"type":"danger-full-access"},
         "model":model,"personality":"pragmatic",
         "collaboration_mode":{"mode":"default","settings":{"model":model,"reasoning_effort":"xhigh","developer_instructions":"…"}},
         "effort":"xhigh","summary":"none","truncation_policy":{"mode":"tokens","limit":10000}}})
}

/// The real `token_count` line of openai/codex issue #5276 (notes §5.4), verbatim.
const TOKEN_COUNT: &str = r#"{"timestamp":"2025-10-17T05:54:20.209Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":26549,"cached_input_tokens":22272,"output_tokens":1590,"reasoning_output_tokens":1152,"total_tokens":28139},"last_token_usage":{"input_tokens":6245,"cached_input_tokens":5376,"output_tokens":407,"reasoning_output_tokens":320,"total_tokens":6652},"model_context_window":272000},"rate_limits":{"primary":null,"secondary":null}}}"#;

#[test]
fn codex_tokens_are_priced_at_the_model_of_the_latest_turn_context() {
    let ws = Ws::seed();
    let rollout = ws
        .home()
        .join(".codex/sessions/2025/10/17/rollout-2025-10-17T05-54-10-abc.jsonl");
    append(&rollout, &line(&turn_context("gpt-5.5")));
    append(&rollout, format!("{TOKEN_COUNT}\n").as_bytes());
    // A repeated event adds nothing.
    append(&rollout, format!("{TOKEN_COUNT}\n").as_bytes());
    // The user switches model; the next request (the line's last_token_usage again) is priced
    // at the new one.
    append(&rollout, &line(&turn_context("gpt-5.4")));
    let mut next: Value = serde_json::from_str(TOKEN_COUNT).unwrap();
    next["payload"]["info"]["total_token_usage"] = json!({"input_tokens":26549 + 6245,
        "cached_input_tokens":22272 + 5376,"output_tokens":1590 + 407,
        "reasoning_output_tokens":1152 + 320,"total_tokens":28139 + 6652});
    append(&rollout, &line(&next));
    ws.ok(&[
        "start",
        "--agent",
        "codex",
        "--transcript",
        rollout.to_str().unwrap(),
    ]);
    let v = ws.json(0, &["checkpoint", "step"]);
    // input_tokens include the cached ones; output includes the reasoning.
    let first = ((26_549.0 - 22_272.0) * 5.0 + 22_272.0 * 0.5 + 1_590.0 * 30.0) / 1e6;
    let second = ((6_245.0 - 5_376.0) * 2.5 + 5_376.0 * 0.25 + 407.0 * 15.0) / 1e6;
    assert!(
        close(v["cost_usd"].as_f64().unwrap(), first + second),
        "{v}"
    );
    assert_eq!(
        model(&v, "gpt-5.5")["tokens"],
        json!({"input": 4277, "output": 1590, "cache_write_5m": 0, "cache_write_1h": 0, "cache_read": 22272})
    );
    assert_eq!(model(&v, "gpt-5.4")["tokens"]["cache_read"], 5376);
}

#[test]
fn a_cost_meter_warns_and_shuts_down_on_spend() {
    let ws = Ws::seed();
    set_settings(
        &ws,
        "meters",
        json!({"cost_usd": {"limit": 1, "warn": 0.2, "shutdown": 0.5, "source": "transcript"}}),
    );
    let transcript = ws.home().join(".claude/projects/-work/s.jsonl");
    append(&transcript, format!("{OPUS_LINE}\n").as_bytes());
    start_on(&ws, &transcript);
    // $0.2276 of $1: past warn (20%).
    let v = ws.json(10, &["checkpoint", "step"]);
    assert_eq!(v["limiting"], "cost_usd", "{v}");
    let meter = &v["meters"][0];
    assert!(close(meter["used"].as_f64().unwrap(), OPUS_LINE_USD));
    assert_eq!(meter["limit"], 1);
    let text = ws.expect(10, &["status"]);
    assert!(
        text.contains("meter=cost_usd kind=counter used=0.2276 limit=1 pct=22.8 level=warn"),
        "{text}"
    );
    // Three more responses: $0.91, past shutdown (50%).
    for n in 0..3 {
        let mut more: Value = serde_json::from_str(OPUS_LINE).unwrap();
        more["message"]["id"] = json!(format!("msg_more_{n}"));
        append(&transcript, &line(&more));
    }
    ws.json(11, &["checkpoint", "step"]);
}

#[test]
fn run_stops_with_25_once_its_sessions_cost_more_than_max_cost() {
    let ws = git_workspace(&[("alpha", 50)]);
    ws.write("opus_line.jsonl", &format!("{OPUS_LINE}\n"));
    // A Claude-like agent: its transcript is where Claude Code keeps it, found from
    // CLAUDE_CODE_SESSION_ID as under Claude Code.
    agent(
        &ws,
        "spend.sh",
        r#"export CLAUDE_CODE_SESSION_ID="$ORCHESTRATOR_SESSION"
mkdir -p "$HOME/.claude/projects/-work"
cp opus_line.jsonl "$HOME/.claude/projects/-work/$ORCHESTRATOR_SESSION.jsonl"
orchestrator checkpoint step --advance 1 --exit-zero >/dev/null"#,
    );
    let out = run(
        &ws,
        &[
            "run",
            "--json",
            "--max-cost",
            "0.3",
            "--poll",
            "50ms",
            "--",
            "./spend.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(25), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stop"], "max_cost");
    assert_eq!(v["sessions"], 2, "$0.23 after one session, $0.46 after two");
    assert!(close(v["cost_usd"].as_f64().unwrap(), 2.0 * OPUS_LINE_USD));
    assert_eq!(ws.progress("alpha"), (2, 50));

    let out = run(&ws, &["run", "--max-cost", "nothing", "--", "./spend.sh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(final_line(&out).is_empty());
}

#[test]
fn version_verbose_names_the_date_of_the_price_table() {
    let ws = Ws::empty();
    let text = ws.ok(&["--version", "--verbose"]);
    assert!(text.starts_with("orchestrator "), "{text}");
    let date = text
        .lines()
        .find_map(|l| l.strip_prefix("prices: embedded table of "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        chrono::NaiveDate::parse_from_str(&date[..10], "%Y-%m-%d").is_ok(),
        "{text}"
    );
    assert!(!ws.ok(&["--version"]).contains("prices"));
}

//! Issue 10, hooks: subagent calls, failed tool calls, PreCompact and SessionEnd, the opt-in
//! SessionStart, the wording of the alerts, `hook install/uninstall claude` (quoting, timeouts,
//! the Bash permission, `--check`) and the per-agent compaction warning.
//!
//! Every event below has the shape of the example input in the Claude Code hooks reference
//! (code.claude.com/docs/en/hooks, mirrored at github:ericbuess/claude-code-docs docs/hooks.md
//! @ ec68a5b2; quoted in /work/wt/research/issue10-hooks.md §1.3).

use serde_json::{Value, json};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use crate::hooks::{append, assistant, starting};

const TASK: &str = "integrate_sessions_101_140";
const CLAUDE_SESSION: &str = "abc123";
const SHUTDOWN_ALERT: &str = "Context is at 86% (172k/200k), past the shutdown threshold; the task's handoff is written by `orchestrator wrap`.";

// --- fixtures --------------------------------------------------------------------------------

fn transcript_at(ws: &Ws, fill: u64) -> PathBuf {
    let path = ws
        .home()
        .join(".claude/projects/-home-user-my-project")
        .join(format!("{CLAUDE_SESSION}.jsonl"));
    append(&path, &assistant("msg_1", fill));
    path
}

/// PostToolUse for Bash, as in the reference's example: `tool_response` with `stdout`, `stderr`,
/// `interrupted`, `isImage`; `duration_ms` optional (2.1.119).
fn post_tool_use(ws: &Ws, transcript: &Path) -> Value {
    json!({
        "session_id": CLAUDE_SESSION,
        "transcript_path": transcript,
        "cwd": ws.path(),
        "permission_mode": "default",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "cargo test", "description": "Run tests"},
        "tool_response": {"stdout": "ok", "stderr": "", "interrupted": false, "isImage": false},
        "tool_use_id": "toolu_01ABC123",
        "duration_ms": 4187
    })
}

/// PostToolUseFailure, as in the reference's example: no `tool_response`; `error` starts with
/// `Exit code N` for a Bash command that ran and exited non-zero; `is_interrupt` optional.
fn post_tool_use_failure(ws: &Ws, transcript: &Path) -> Value {
    json!({
        "session_id": CLAUDE_SESSION,
        "transcript_path": transcript,
        "cwd": ws.path(),
        "permission_mode": "default",
        "hook_event_name": "PostToolUseFailure",
        "tool_name": "Bash",
        "tool_input": {"command": "orchestrator checkpoint \"parsed 3 files\" --progress 4", "description": "Checkpoint"},
        "tool_use_id": "toolu_01ABC123",
        "error": "Exit code 11\nlevel=shutdown used=172002 budget=200000",
        "is_interrupt": false,
        "duration_ms": 180
    })
}

/// A tool event fired inside a subagent: the common fields plus `agent_id` and `agent_type`
/// ("Present only when the hook fires inside a subagent call", 2.1.69).
fn in_subagent(mut event: Value) -> Value {
    event["agent_id"] = json!("def456");
    event["agent_type"] = json!("Explore");
    event
}

/// SessionStart, as in the reference's example (no `permission_mode`; `model` optional).
fn session_start(ws: &Ws, transcript: &Path) -> Value {
    json!({
        "session_id": CLAUDE_SESSION,
        "transcript_path": transcript,
        "cwd": ws.path(),
        "hook_event_name": "SessionStart",
        "source": "startup",
        "model": "claude-sonnet-4-6"
    })
}

/// PreCompact, as in the reference's example: `trigger` and `custom_instructions` (empty for
/// `auto`).
fn pre_compact(ws: &Ws, transcript: &Path, trigger: &str) -> Value {
    json!({
        "session_id": CLAUDE_SESSION,
        "transcript_path": transcript,
        "cwd": ws.path(),
        "hook_event_name": "PreCompact",
        "trigger": trigger,
        "custom_instructions": ""
    })
}

/// SessionEnd, as in the reference's example: `reason` (`clear`, `resume`, `logout`,
/// `prompt_input_exit`, `other`).
fn session_end(ws: &Ws, transcript: &Path, reason: &str) -> Value {
    json!({
        "session_id": CLAUDE_SESSION,
        "transcript_path": transcript,
        "cwd": ws.path(),
        "hook_event_name": "SessionEnd",
        "reason": reason
    })
}

// --- running the hook ------------------------------------------------------------------------

fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `hook claude` with `event` and `env`; asserts exit 0 and returns stdout as JSON (None
/// when empty).
fn hook_env(ws: &Ws, event: &Value, env: &[(&str, &str)]) -> Option<Value> {
    let mut cmd = ws.command(&["hook", "claude"]);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = run_with_stdin(cmd, &serde_json::to_vec(event).unwrap());
    parse_hook_output(&out)
}

fn parse_hook_output(out: &Output) -> Option<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    if stdout.is_empty() {
        return None;
    }
    Some(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")))
}

fn hook(ws: &Ws, event: &Value) -> Option<Value> {
    hook_env(ws, event, &[])
}

fn context_of(output: Option<Value>, name: &str) -> String {
    let output = output.unwrap_or_else(|| panic!("{name}: the hook printed nothing"));
    assert_eq!(
        output["hookSpecificOutput"]["hookEventName"], name,
        "{output}"
    );
    output["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap()
        .to_string()
}

fn only_session(ws: &Ws) -> Value {
    let files = ws.files_in(".orchestrator/sessions/active");
    assert_eq!(files.len(), 1, "{files:?}");
    serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/active/{}", files[0]))).unwrap()
}

/// A seeded workspace whose claude session reads a transcript at `fill`.
fn live_claude_session(fill: u64) -> (Ws, PathBuf) {
    let ws = Ws::seed();
    let transcript = transcript_at(&ws, fill);
    ws.ok(&[
        "start",
        "--agent",
        "claude",
        "--transcript",
        transcript.to_str().unwrap(),
    ]);
    (ws, transcript)
}

fn set_agent_setting(ws: &Ws, key: &str, value: Value) {
    let mut stack = ws.stack();
    stack["settings"]["agents"]["claude"][key] = value;
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
}

// --- 9. subagents ----------------------------------------------------------------------------

#[test]
fn tool_events_inside_a_subagent_get_nothing_and_the_main_thread_gets_the_alert() {
    let (ws, transcript) = live_claude_session(172_002);
    for event in [
        post_tool_use(&ws, &transcript),
        post_tool_use_failure(&ws, &transcript),
    ] {
        let before = ws.snapshot();
        assert_eq!(hook(&ws, &in_subagent(event.clone())), None, "{event}");
        assert_eq!(ws.snapshot(), before);
        let name = event["hook_event_name"].as_str().unwrap();
        assert_eq!(context_of(hook(&ws, &event), name), SHUTDOWN_ALERT);
    }
    // `--agent` sessions carry `agent_type` alone: that is the main thread.
    let mut main_with_agent_type = post_tool_use(&ws, &transcript);
    main_with_agent_type["agent_type"] = json!("security-reviewer");
    assert_eq!(
        context_of(hook(&ws, &main_with_agent_type), "PostToolUse"),
        SHUTDOWN_ALERT
    );
}

// --- 10b. failed tool calls ------------------------------------------------------------------

#[test]
fn a_failed_checkpoint_call_brings_the_level_through_post_tool_use_failure() {
    let (ws, transcript) = live_claude_session(100_000);
    // ok: nothing, not even an empty object.
    let out = run_with_stdin(
        ws.command(&["hook", "claude"]),
        &serde_json::to_vec(&post_tool_use_failure(&ws, &transcript)).unwrap(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);

    // `checkpoint` exits 10 at warn and 11 at shutdown: exactly the calls that fail in Bash.
    append(&transcript, &assistant("msg_2", 152_000));
    ws.expect(10, &["checkpoint", "parsed", "--progress", "1"]);
    let text = context_of(
        hook(&ws, &post_tool_use_failure(&ws, &transcript)),
        "PostToolUseFailure",
    );
    assert_eq!(
        text,
        "Context is at 76% (152k/200k), past the warn threshold; `orchestrator checkpoint` records the unit in progress and `orchestrator wrap` writes the task's handoff."
    );
    append(&transcript, &assistant("msg_3", 172_002));
    ws.expect(11, &["checkpoint", "parsed more", "--progress", "2"]);
    let text = context_of(
        hook(&ws, &post_tool_use_failure(&ws, &transcript)),
        "PostToolUseFailure",
    );
    assert_eq!(text, SHUTDOWN_ALERT);
}

// --- 12. wording -----------------------------------------------------------------------------

#[test]
fn alerts_state_facts_and_not_orders() {
    let (ws, transcript) = live_claude_session(172_002);
    let text = context_of(hook(&ws, &post_tool_use(&ws, &transcript)), "PostToolUse");
    assert_eq!(text, SHUTDOWN_ALERT);
    for order in ["run ", "now", "must", "You ", "IMPORTANT", "STOP"] {
        assert!(!text.contains(order), "{order:?} in {text}");
    }
}

// --- 11. SessionStart, PreCompact, SessionEnd ------------------------------------------------

#[test]
fn opening_claude_code_claims_nothing_by_default_and_briefs_a_live_session() {
    let ws = Ws::seed();
    let transcript = transcript_at(&ws, 20_000);
    let before = ws.snapshot();
    assert_eq!(hook(&ws, &session_start(&ws, &transcript)), None);
    assert_eq!(ws.snapshot(), before);
    assert_eq!(ws.task(TASK)["status"], "pending");

    // A session of the agent is live (as `run` or `start` opens it): its brief.
    ws.ok(&["start", "--agent", "claude"]);
    let brief = context_of(hook(&ws, &session_start(&ws, &transcript)), "SessionStart");
    // At `startup` nothing was done yet on this fresh task: `start`'s own wording.
    assert!(brief.contains(&format!("Start {TASK}")), "{brief}");
    assert_eq!(only_session(&ws)["transcript"], json!(transcript));

    // Opting in starts one.
    let opted = starting(Ws::seed());
    let transcript = transcript_at(&opted, 20_000);
    let brief = context_of(
        hook(&opted, &session_start(&opted, &transcript)),
        "SessionStart",
    );
    assert!(brief.contains(&format!("Start {TASK}")), "{brief}");
    assert_eq!(only_session(&opted)["agent"], "claude");
}

#[test]
fn a_run_session_is_found_from_the_environment_run_sets() {
    let ws = Ws::seed();
    let transcript = transcript_at(&ws, 20_000);
    // `run` opens the session under its agent name and names it in the agent's environment.
    ws.ok(&["start", "--agent", "claude-runner"]);
    let id = only_session(&ws)["id"].as_str().unwrap().to_string();
    let env = [
        ("ORCHESTRATOR_SESSION", id.as_str()),
        ("ORCHESTRATOR_AGENT", "claude-runner"),
        ("ORCHESTRATOR_RUN", "run_1"),
    ];
    let brief = context_of(
        hook_env(&ws, &session_start(&ws, &transcript), &env),
        "SessionStart",
    );
    assert!(brief.contains(&id), "{brief}");
    // The run wraps its own session when the agent exits: SessionEnd leaves it alone.
    let before = ws.snapshot();
    assert_eq!(
        hook_env(&ws, &session_end(&ws, &transcript, "other"), &env),
        None
    );
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn pre_compact_records_the_figure_and_the_compaction_and_the_handoff_shows_it() {
    let (ws, transcript) = live_claude_session(160_500);
    assert_eq!(hook(&ws, &pre_compact(&ws, &transcript, "auto")), None);
    let session = only_session(&ws);
    assert_eq!(session["tokens"]["used"], 160_500);
    assert_eq!(session["tokens"]["source"], "transcript");
    assert_eq!(
        session["compactions"],
        json!([{"at": T0, "trigger": "auto", "tokens": 160_500}])
    );
    // A subagent's or another transcript's PreCompact is not ours.
    let before = ws.snapshot();
    let mut other = pre_compact(&ws, &ws.home().join("other.jsonl"), "manual");
    other["agent_id"] = json!("def456");
    assert_eq!(hook(&ws, &other), None);
    assert_eq!(ws.snapshot(), before);

    let v = ws.json(0, &["wrap", "--summary", "s", "--next", "n", "--no-commit"]);
    let handoff = ws.read(v["handoff"].as_str().unwrap());
    assert!(
        handoff
            .contains("- **Compactions:** 1 (auto at 2025-11-06T00:13:55Z, 160,500 tokens before)"),
        "{handoff}"
    );
}

#[test]
fn session_end_releases_the_task_at_once_and_the_next_start_wraps_the_session() {
    let (ws, transcript) = live_claude_session(20_000);
    let id = only_session(&ws)["id"].clone();

    // `/clear` and `/resume` keep the same Claude Code going: nothing happens.
    let before = ws.snapshot();
    for reason in ["clear", "resume"] {
        assert_eq!(hook(&ws, &session_end(&ws, &transcript, reason)), None);
        assert_eq!(ws.snapshot(), before, "{reason}");
    }

    let stack_before = ws.read("task_stack.json");
    assert_eq!(
        hook(&ws, &session_end(&ws, &transcript, "prompt_input_exit")),
        None
    );
    // One journal record, whatever the size of the stack: the file itself is not rewritten.
    assert_eq!(ws.read("task_stack.json"), stack_before);
    assert!(
        ws.read(".orchestrator/journal.jsonl")
            .contains("\"lease_expires\":\"2025-11-06T00:13:55Z\",\"end\":true"),
        "{}",
        ws.read(".orchestrator/journal.jsonl")
    );
    assert_eq!(only_session(&ws)["lease_expires"], T0);
    assert_eq!(ws.task(TASK)["claim"]["lease_expires"], T0);

    // Another agent takes the task at once; the released session is wrapped with a handoff.
    let v = ws.json(0, &["start", "--agent", "other"]);
    assert_eq!(v["task"], TASK);
    assert_eq!(v["recovered"][0]["session"], id);
    assert!(
        ws.file(v["recovered"][0]["handoff"].as_str().unwrap())
            .is_file()
    );
}

#[test]
fn session_end_wraps_or_keeps_as_the_setting_says() {
    let (ws, transcript) = live_claude_session(20_000);
    set_agent_setting(&ws, "on_session_end", json!("wrap"));
    assert_eq!(hook(&ws, &session_end(&ws, &transcript, "logout")), None);
    assert!(ws.files_in(".orchestrator/sessions/active").is_empty());
    let handoffs = ws.files_in("session_handoffs");
    assert!(handoffs.iter().any(|h| h.ends_with(".md")), "{handoffs:?}");
    let handoff = handoffs.iter().find(|h| h.ends_with(".md")).unwrap();
    assert!(
        ws.read(&format!("session_handoffs/{handoff}"))
            .contains("- **Ended by:** session-end")
    );

    let (ws, transcript) = live_claude_session(20_000);
    set_agent_setting(&ws, "on_session_end", json!("keep"));
    let before = ws.snapshot();
    assert_eq!(hook(&ws, &session_end(&ws, &transcript, "other")), None);
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn session_end_does_not_wait_for_a_held_lock() {
    let (ws, transcript) = live_claude_session(20_000);
    let lock = File::options()
        .write(true)
        .open(ws.file(".orchestrator/lock"))
        .unwrap();
    lock.lock().unwrap();
    let before = ws.snapshot();
    let started = std::time::Instant::now();
    assert_eq!(hook(&ws, &session_end(&ws, &transcript, "other")), None);
    // Not a timing assertion on speed: the hook gave up on the lock instead of waiting 60 s.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(ws.snapshot(), before);
    drop(lock);
}

// --- 10. hook install / uninstall / --check ---------------------------------------------------

const EXISTING: &str = r#"{
  "permissions": { "allow": ["Bash(cargo test:*)"], "deny": ["Bash(curl:*)"] },
  "hooks": {
    "PostToolUse": [
      { "matcher": "Edit|Write", "hooks": [{ "type": "command", "command": "prettier --write", "timeout": 30 }] }
    ]
  },
  "model": "opus"
}
"#;

fn json_file(ws: &Ws, rel: &str) -> Value {
    serde_json::from_str(&ws.read(rel)).unwrap()
}

/// The command string of our hook for `event` in the written settings.
fn our_command(ws: &Ws, event: &str) -> String {
    let settings = json_file(ws, ".claude/settings.json");
    settings["hooks"][event]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["hooks"].as_array().unwrap())
        .map(|h| h["command"].as_str().unwrap().to_string())
        .find(|c| c.ends_with("hook claude"))
        .unwrap_or_else(|| panic!("no hook of ours for {event}: {settings}"))
}

#[test]
fn an_install_under_a_path_with_a_space_runs_under_sh() {
    let (ws, transcript) = live_claude_session(172_002);
    let tools = tempfile::tempdir().unwrap();
    let dir = tools.path().join("my tools");
    std::fs::create_dir(&dir).unwrap();
    let executable = dir.join("orchestrator");
    std::os::unix::fs::symlink(BIN, &executable).unwrap();

    ws.ok(&[
        "hook",
        "install",
        "claude",
        "--command",
        executable.to_str().unwrap(),
    ]);
    let command = our_command(&ws, "PostToolUse");
    assert_eq!(command, format!("'{}' hook claude", executable.display()));
    // Claude Code runs shell-form hooks with `sh -c` (hooks reference, "Exec form and shell
    // form"), in the project directory, with the event on stdin.
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(&command)
        .current_dir(ws.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", ws.home())
        .env("ORCHESTRATOR_NOW", T0)
        .env("RUST_LOG", "warn");
    let out = run_with_stdin(
        sh,
        &serde_json::to_vec(&post_tool_use(&ws, &transcript)).unwrap(),
    );
    assert_eq!(
        context_of(parse_hook_output(&out), "PostToolUse"),
        SHUTDOWN_ALERT
    );
}

#[test]
fn install_writes_timeouts_and_the_permission_keeps_everything_and_uninstall_takes_it_out() {
    let ws = Ws::new();
    ws.write(".claude/settings.json", EXISTING);
    let v = ws.json(0, &["hook", "install", "claude"]);
    assert_eq!(
        v["permissions_added"],
        json!(["Bash(orchestrator *)", "Bash(orchestrator:*)"])
    );
    let shared = json_file(&ws, ".claude/settings.json");
    for event in [
        "SessionStart",
        "UserPromptSubmit",
        "PostToolUse",
        "PostToolUseFailure",
        "PreCompact",
        "SessionEnd",
    ] {
        let ours: Vec<&Value> = shared["hooks"][event]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["hooks"].as_array().unwrap())
            .filter(|h| h["command"] == "orchestrator hook claude")
            .collect();
        assert_eq!(ours.len(), 1, "{event}: {shared}");
        assert_eq!(ours[0]["timeout"], 30, "{event}");
        assert_eq!(ours[0]["type"], "command", "{event}");
    }
    // The user's own allow rules stay in the shared file, untouched.
    assert_eq!(
        shared["permissions"],
        json!({ "allow": ["Bash(cargo test:*)"], "deny": ["Bash(curl:*)"] })
    );
    assert_eq!(
        json_file(&ws, ".claude/settings.local.json"),
        json!({"permissions": {"allow": ["Bash(orchestrator *)", "Bash(orchestrator:*)"]}})
    );
    assert!(
        ws.read(".gitignore")
            .lines()
            .any(|l| l == ".claude/settings.local.json")
    );

    // Idempotent.
    let before = ws.snapshot();
    let v = ws.json(0, &["hook", "install", "claude"]);
    assert_eq!(v["added"], json!([]));
    assert_eq!(v["updated"], json!([]));
    assert_eq!(v["permissions_added"], json!([]));
    assert_eq!(ws.snapshot(), before);

    // Uninstall: the shared file as it was (key order included), the local file gone.
    let v = ws.json(0, &["hook", "uninstall", "claude"]);
    assert_eq!(v["removed_hooks"].as_array().unwrap().len(), 6, "{v}");
    assert_eq!(v["backups"], json!([ws.file(".claude/settings.json.bak")]));
    let restored = serde_json::to_string_pretty(&json_file(&ws, ".claude/settings.json")).unwrap();
    let original =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(EXISTING).unwrap()).unwrap();
    assert_eq!(restored, original);
    assert!(!ws.file(".claude/settings.local.json").exists());
    let out = ws.ok(&["hook", "uninstall", "claude"]);
    assert!(out.contains("nothing changed"), "{out}");

    // Installed into a project without Claude Code settings, uninstalled: nothing left over.
    let fresh = Ws::new();
    fresh.ok(&["hook", "install", "claude"]);
    fresh.ok(&["hook", "uninstall", "claude"]);
    assert!(
        !fresh.file(".claude").exists(),
        "{:?}",
        fresh.files_in(".claude")
    );
}

#[test]
fn an_old_install_without_timeouts_is_brought_up_to_date() {
    let ws = Ws::new();
    // What orchestrator wrote before: no timeout, three events.
    ws.write(
        ".claude/settings.json",
        r#"{"hooks": {
  "SessionStart": [{ "hooks": [{ "type": "command", "command": "orchestrator hook claude" }] }],
  "PostToolUse": [{ "matcher": "*", "hooks": [{ "type": "command", "command": "orchestrator hook claude" }] }],
  "UserPromptSubmit": [{ "hooks": [{ "type": "command", "command": "orchestrator hook claude" }] }]
}}"#,
    );
    let v = ws.json(0, &["hook", "install", "claude"]);
    assert_eq!(
        v["updated"],
        json!(["SessionStart", "UserPromptSubmit", "PostToolUse"])
    );
    assert_eq!(
        v["added"],
        json!(["PostToolUseFailure", "PreCompact", "SessionEnd"])
    );
    let shared = json_file(&ws, ".claude/settings.json");
    assert_eq!(
        shared["hooks"]["SessionStart"][0]["hooks"][0]["timeout"],
        30
    );
}

#[test]
fn check_says_what_is_missing_and_never_writes_trust() {
    let ws = Ws::new();
    let out = ws.run(&["hook", "install", "claude", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("missing: no orchestrator hook for PostToolUseFailure"),
        "{text}"
    );
    assert!(
        text.contains("no `Bash(orchestrator *)` permission"),
        "{text}"
    );
    assert!(text.contains("is not marked trusted"), "{text}");
    assert!(!ws.file(".claude").exists());

    ws.ok(&["hook", "install", "claude"]);
    let v = ws.json(1, &["hook", "install", "claude", "--check"]);
    assert_eq!(v["ok"], false);
    assert_eq!(v["trusted"], Value::Null);
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{v}");

    // The user trusted the folder (Claude Code writes this when the dialog is accepted; the
    // key is the folder itself outside a repository).
    let key = ws.path().canonicalize().unwrap();
    let claude_json =
        json!({"projects": {key.to_str().unwrap(): {"hasTrustDialogAccepted": false}}});
    let config = ws.home().join(".claude.json");
    std::fs::write(&config, claude_json.to_string()).unwrap();
    let v = ws.json(1, &["hook", "install", "claude", "--check"]);
    assert_eq!(v["trusted"], false);
    std::fs::write(
        &config,
        json!({"projects": {key.to_str().unwrap(): {"hasTrustDialogAccepted": true}}}).to_string(),
    )
    .unwrap();
    let before = std::fs::read(&config).unwrap();
    let v = ws.json(0, &["hook", "install", "claude", "--check"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(std::fs::read(&config).unwrap(), before);

    // A local file git tracks is repository-supplied: its allow rules need trust.
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(ws.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .status()
            .unwrap();
        assert!(status.success());
    };
    git(&["init", "-q"]);
    git(&["add", "-f", ".claude/settings.local.json"]);
    std::fs::write(
        &config,
        json!({"projects": {key.to_str().unwrap(): {"hasTrustDialogAccepted": true}}}).to_string(),
    )
    .unwrap();
    let v = ws.json(1, &["hook", "install", "claude", "--check"]);
    assert_eq!(v["local_settings_tracked"], true);
    assert!(
        v["problems"][0].as_str().unwrap().contains("git tracks"),
        "{v}"
    );
}

// --- 13. the compaction warning ---------------------------------------------------------------

fn stderr_of(ws: &Ws, args: &[&str]) -> String {
    String::from_utf8_lossy(&ws.run(args).stderr).into_owned()
}

#[test]
fn a_new_user_sees_no_compaction_warning() {
    let ws = Ws::empty();
    for args in [
        &["init"][..],
        &["task", "add", "t", "--title", "t task", "--total", "4"],
        &["start"],
        &["status"],
        &[
            "checkpoint",
            "did one",
            "--progress",
            "1",
            "--tokens",
            "1000",
        ],
    ] {
        let err = stderr_of(&ws, args);
        assert!(!err.contains("compact"), "{args:?}: {err}");
    }
}

#[test]
fn a_stated_compaction_point_is_warned_about_at_init_in_status_and_in_the_brief_only() {
    let ws = Ws::empty();
    let err = stderr_of(&ws, &["init", "--compact-at", "0.8"]);
    assert!(
        err.contains("the shutdown threshold (85%) is not below where the agent compacts its context on its own (80%, settings.agents.claude.compact_at)"),
        "{err}"
    );
    assert_eq!(
        ws.stack()["settings"]["agents"]["claude"]["compact_at"],
        0.8
    );
    ws.ok(&["task", "add", "t", "--title", "t task", "--total", "4"]);
    let brief = ws.ok(&["start", "--agent", "claude"]);
    assert!(
        brief.contains("Compaction:      the shutdown threshold (85%)"),
        "{brief}"
    );
    assert!(stderr_of(&ws, &["status"]).contains("compacts"));
    // Not on every command.
    let err = stderr_of(
        &ws,
        &["checkpoint", "x", "--progress", "1", "--tokens", "10"],
    );
    assert!(!err.contains("compact"), "{err}");

    // Another agent has no stated point: its brief says nothing.
    let other = Ws::empty();
    other.ok(&["init", "--compact-at", "codex=0.9", "--shutdown", "0.8"]);
    other.ok(&["task", "add", "t", "--title", "t task"]);
    let brief = other.ok(&["start", "--agent", "claude"]);
    assert!(!brief.contains("Compaction:"), "{brief}");

    // The deprecated setting is still read, and named as deprecated.
    let old = Ws::new();
    let mut stack = old.stack();
    stack["settings"]["budget"]["compact_at"] = json!(0.835);
    old.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    let err = stderr_of(&old, &["status"]);
    assert!(
        err.contains(
            "settings.budget.compact_at, deprecated for settings.agents.<name>.compact_at"
        ),
        "{err}"
    );

    let bad = Ws::empty();
    let err = bad.refused(&["init", "--compact-at", "claude=1.5"]);
    assert!(
        err.contains("settings.agents.claude.compact_at is 1.5"),
        "{err}"
    );
}

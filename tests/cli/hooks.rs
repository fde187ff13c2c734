//! `orchestrator hook claude` (a Claude Code hook event on stdin: the brief at SessionStart, a
//! wrap alert after tool uses and prompts, never a broken agent session) and
//! `orchestrator hook install claude` (our hooks merged into `.claude/settings.json`).

use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::common::*;

const TASK: &str = "integrate_sessions_101_140";
const CLAUDE_SESSION: &str = "3f1c2a9e-7b4d-4e1a-9c55-0d2b8e6f1a77";

// --- fixtures --------------------------------------------------------------------------------

/// A main-chain assistant record whose context fill (input + cache creation + cache read) is
/// `fill`, as Claude Code writes it.
pub fn assistant(id: &str, fill: u64) -> Value {
    json!({"type": "assistant", "isSidechain": false, "message": {
        "id": id, "model": "claude-sonnet-4-5", "role": "assistant",
        "content": [{"type": "text", "text": "working"}],
        "usage": {"input_tokens": 2, "cache_creation_input_tokens": 1000,
                  "cache_read_input_tokens": fill - 1002, "output_tokens": 50}}})
}

pub fn append(path: &Path, record: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut line = serde_json::to_vec(record).unwrap();
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(&line)
        .unwrap();
}

/// Where Claude Code keeps the transcript of session `name`: under `$HOME/.claude/projects`,
/// outside the workspace (so workspace snapshots do not see it). Not created.
fn transcript_path(ws: &Ws, name: &str) -> PathBuf {
    ws.home()
        .join(".claude/projects/-work-proj")
        .join(format!("{name}.jsonl"))
}

/// A transcript with a user prompt and one response filling the context to `fill`.
fn transcript_at(ws: &Ws, name: &str, fill: u64) -> PathBuf {
    let path = transcript_path(ws, name);
    append(
        &path,
        &json!({"type": "user", "isSidechain": false, "message": {"role": "user", "content": "go on"}}),
    );
    append(&path, &assistant("msg_1", fill));
    path
}

/// A Claude Code hook event with the fields Claude Code sends for `name`.
fn event(name: &str, cwd: &Path, transcript: &Path) -> Value {
    let mut event = json!({
        "session_id": CLAUDE_SESSION,
        "transcript_path": transcript,
        "cwd": cwd,
        "hook_event_name": name,
    });
    let extra = match name {
        "SessionStart" => json!({"source": "startup"}),
        "PostToolUse" => json!({
            "tool_name": "Bash",
            "tool_input": {"command": "cargo test"},
            "tool_response": {"stdout": "ok", "stderr": "", "interrupted": false},
        }),
        "UserPromptSubmit" => json!({"prompt": "continue"}),
        _ => json!({}),
    };
    for (key, value) in extra.as_object().unwrap() {
        event[key] = value.clone();
    }
    event
}

/// `ws` with `settings.agents.claude.on_session_start` set to `start`: the SessionStart hook
/// then starts a session when none is live (the default only briefs a live one).
pub(crate) fn starting(ws: Ws) -> Ws {
    let mut stack = ws.stack();
    stack["settings"]["agents"] = json!({"claude": {"on_session_start": "start"}});
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    ws
}

// --- running the hook ------------------------------------------------------------------------

/// Runs `hook claude` in `cwd` with `stdin`; asserts exit 0.
fn run_hook_in(ws: &Ws, cwd: &Path, stdin: &[u8]) -> Output {
    let mut child = ws
        .command(&["hook", "claude"])
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut pipe = child.stdin.take().unwrap();
    // The hook may stop reading early on garbage; a closed pipe is not the test's concern.
    if let Err(err) = pipe.write_all(stdin) {
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "hook claude must always exit 0\nstdin: {}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(stdin),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A caught panic still prints its message: the hook must handle bad input, not crash on it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

/// Runs `hook claude` in `cwd`; stdout must be empty (`None`) or exactly one JSON object.
fn hook_raw_in(ws: &Ws, cwd: &Path, stdin: &[u8]) -> Option<Value> {
    let out = run_hook_in(ws, cwd, stdin);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    if stdout.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {stdout:?}"));
    assert!(value.is_object(), "stdout is not a JSON object: {stdout}");
    Some(value)
}

fn hook_in(ws: &Ws, cwd: &Path, event: &Value) -> Option<Value> {
    hook_raw_in(ws, cwd, &serde_json::to_vec(event).unwrap())
}

/// Runs `hook claude` from the workspace directory.
fn hook(ws: &Ws, event: &Value) -> Option<Value> {
    hook_in(ws, ws.path(), event)
}

/// The `additionalContext` of hook output for `name`, checking the output's whole shape.
fn context_of(output: Option<Value>, name: &str) -> String {
    let output = output.unwrap_or_else(|| panic!("{name}: the hook printed nothing"));
    let top: Vec<&String> = output.as_object().unwrap().keys().collect();
    assert_eq!(top, ["hookSpecificOutput"], "{output}");
    let specific = &output["hookSpecificOutput"];
    assert_eq!(specific["hookEventName"], name, "{output}");
    specific["additionalContext"]
        .as_str()
        .unwrap_or_else(|| panic!("no additionalContext string: {output}"))
        .to_string()
}

fn active_sessions(ws: &Ws) -> Vec<String> {
    ws.files_in(".orchestrator/sessions/active")
}

/// The only live session's record.
fn only_session(ws: &Ws) -> Value {
    let files = active_sessions(ws);
    assert_eq!(files.len(), 1, "{files:?}");
    serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/active/{}", files[0]))).unwrap()
}

// --- SessionStart ----------------------------------------------------------------------------

#[test]
fn session_start_starts_a_session_on_the_transcript_and_hands_over_the_brief() {
    let ws = starting(Ws::seed());
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 20_000);

    let brief = context_of(
        hook(&ws, &event("SessionStart", ws.path(), &transcript)),
        "SessionStart",
    );
    let session = only_session(&ws);
    let id = session["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("session_"), "{session}");
    assert_eq!(session["agent"], "claude");
    assert_eq!(session["task"], TASK);
    assert_eq!(session["transcript"], json!(transcript));
    assert!(brief.contains(TASK), "{brief}");
    assert!(brief.contains(&id), "{brief}");
    assert!(brief.contains(&format!("Start {TASK} at 0/40")), "{brief}");
    assert!(
        brief.contains(&format!(
            "read from the transcript {}",
            transcript.display()
        )),
        "{brief}"
    );
    let task = ws.task(TASK);
    assert_eq!(task["status"], "in_progress");
    assert_eq!(task["claim"]["session"], json!(id));
    assert_eq!(task["claim"]["agent"], "claude");

    // After a compaction Claude Code starts again: same session, the brief again.
    let mut again = event("SessionStart", ws.path(), &transcript);
    again["source"] = json!("compact");
    let brief = context_of(hook(&ws, &again), "SessionStart");
    assert!(brief.contains(&format!("Resume {TASK}")), "{brief}");
    assert!(brief.contains(&id), "{brief}");
    assert_eq!(only_session(&ws)["id"], json!(id));
}

#[test]
fn session_start_with_a_new_transcript_moves_the_live_session_onto_it() {
    let ws = starting(Ws::seed());
    let first = transcript_at(&ws, "first", 20_000);
    context_of(
        hook(&ws, &event("SessionStart", ws.path(), &first)),
        "SessionStart",
    );
    let id = only_session(&ws)["id"].clone();

    // `/clear` begins a new transcript in the same Claude Code session.
    let second = transcript_at(&ws, "second", 172_002);
    let mut clear = event("SessionStart", ws.path(), &second);
    clear["source"] = json!("clear");
    let brief = context_of(hook(&ws, &clear), "SessionStart");
    assert!(brief.contains("Resume"), "{brief}");
    let session = only_session(&ws);
    assert_eq!(session["id"], id);
    assert_eq!(session["transcript"], json!(second));
    let alert = context_of(
        hook(&ws, &event("PostToolUse", ws.path(), &second)),
        "PostToolUse",
    );
    assert_eq!(
        alert,
        "Context is at 86% (172k/200k), past the shutdown threshold; the task's handoff is written by `orchestrator wrap`."
    );
}

#[test]
fn session_start_with_no_ready_task_says_no_session_was_started() {
    let ws = starting(Ws::new());
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 20_000);
    let before = ws.snapshot();

    let text = context_of(
        hook(&ws, &event("SessionStart", ws.path(), &transcript)),
        "SessionStart",
    );
    assert!(text.contains("did not start a session"), "{text}");
    assert!(text.contains("no ready task"), "{text}");
    assert!(active_sessions(&ws).is_empty());
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn session_start_finds_the_workspace_from_the_event_cwd() {
    let ws = starting(Ws::seed());
    let elsewhere = tempfile::tempdir().unwrap();
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 20_000);
    std::fs::create_dir_all(ws.file("src/deep")).unwrap();

    // Claude Code runs hooks from wherever; the event says where the agent works.
    let brief = context_of(
        hook_in(
            &ws,
            elsewhere.path(),
            &event("SessionStart", &ws.file("src/deep"), &transcript),
        ),
        "SessionStart",
    );
    assert!(brief.contains(TASK), "{brief}");
    assert_eq!(only_session(&ws)["transcript"], json!(transcript));
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);

    append(&transcript, &assistant("msg_2", 172_002));
    let alert = context_of(
        hook_in(
            &ws,
            elsewhere.path(),
            &event("UserPromptSubmit", ws.path(), &transcript),
        ),
        "UserPromptSubmit",
    );
    assert_eq!(
        alert,
        "Context is at 86% (172k/200k), past the shutdown threshold; the task's handoff is written by `orchestrator wrap`."
    );
}

// --- PostToolUse / UserPromptSubmit ------------------------------------------------------------

#[test]
fn usage_events_are_silent_below_warn_then_tell_the_agent_to_wrap() {
    for name in ["PostToolUse", "UserPromptSubmit"] {
        let ws = starting(Ws::seed());
        let transcript = transcript_at(&ws, CLAUDE_SESSION, 100_000);
        context_of(
            hook(&ws, &event("SessionStart", ws.path(), &transcript)),
            "SessionStart",
        );

        // 100k of 200k: ok, nothing to say.
        assert_eq!(
            hook(&ws, &event(name, ws.path(), &transcript)),
            None,
            "{name}"
        );

        // 152k: warn.
        append(&transcript, &assistant("msg_2", 152_000));
        let text = context_of(hook(&ws, &event(name, ws.path(), &transcript)), name);
        assert_eq!(
            text,
            "Context is at 76% (152k/200k), past the warn threshold; `orchestrator checkpoint` records the unit in progress and `orchestrator wrap` writes the task's handoff."
        );

        // 172,002: shutdown.
        append(&transcript, &assistant("msg_3", 172_002));
        let text = context_of(hook(&ws, &event(name, ws.path(), &transcript)), name);
        assert_eq!(
            text,
            "Context is at 86% (172k/200k), past the shutdown threshold; the task's handoff is written by `orchestrator wrap`."
        );
    }
}

#[test]
fn a_usage_event_reads_the_event_transcript_when_the_session_has_none() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 172_002);
    let text = context_of(
        hook(&ws, &event("PostToolUse", ws.path(), &transcript)),
        "PostToolUse",
    );
    assert_eq!(
        text,
        "Context is at 86% (172k/200k), past the shutdown threshold; the task's handoff is written by `orchestrator wrap`."
    );
}

#[test]
fn a_usage_event_of_another_transcript_does_not_report_the_live_session() {
    let ws = starting(Ws::seed());
    let ours = transcript_at(&ws, "ours", 20_000);
    context_of(
        hook(&ws, &event("SessionStart", ws.path(), &ours)),
        "SessionStart",
    );
    // A second Claude Code session in the same project, nearly full.
    let theirs = transcript_at(&ws, "theirs", 172_002);
    let before = ws.snapshot();
    for name in ["PostToolUse", "UserPromptSubmit"] {
        assert_eq!(hook(&ws, &event(name, ws.path(), &theirs)), None, "{name}");
    }
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn usage_events_without_a_live_session_print_nothing_and_start_nothing() {
    let ws = Ws::seed();
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 172_002);
    let before = ws.snapshot();
    for name in ["PostToolUse", "UserPromptSubmit"] {
        assert_eq!(
            hook(&ws, &event(name, ws.path(), &transcript)),
            None,
            "{name}"
        );
    }
    assert!(active_sessions(&ws).is_empty());
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn a_missing_transcript_is_silent_and_changes_nothing() {
    let ws = starting(Ws::seed());
    let transcript = transcript_path(&ws, CLAUDE_SESSION);
    assert!(!transcript.exists());
    // Claude Code may fire SessionStart before its transcript exists.
    let brief = context_of(
        hook(&ws, &event("SessionStart", ws.path(), &transcript)),
        "SessionStart",
    );
    assert!(brief.contains(TASK), "{brief}");
    assert_eq!(only_session(&ws)["transcript"], json!(transcript));
    let stack = ws.read("task_stack.json");
    let before = ws.snapshot();

    for name in ["PostToolUse", "UserPromptSubmit"] {
        assert_eq!(
            hook(&ws, &event(name, ws.path(), &transcript)),
            None,
            "{name}"
        );
    }
    assert_eq!(ws.read("task_stack.json"), stack);
    assert_eq!(ws.snapshot(), before);

    // Once the transcript shows up it is read.
    append(&transcript, &assistant("msg_1", 172_002));
    let text = context_of(
        hook(&ws, &event("PostToolUse", ws.path(), &transcript)),
        "PostToolUse",
    );
    assert_eq!(
        text,
        "Context is at 86% (172k/200k), past the shutdown threshold; the task's handoff is written by `orchestrator wrap`."
    );
}

#[test]
fn checkpoint_reads_the_transcript_bound_at_session_start() {
    let ws = starting(Ws::seed());
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 20_000);
    context_of(
        hook(&ws, &event("SessionStart", ws.path(), &transcript)),
        "SessionStart",
    );
    append(&transcript, &assistant("msg_2", 172_002));

    let v = ws.json(11, &["checkpoint", "x"]);
    assert_eq!(v["source"], "transcript");
    assert_eq!(v["used"], 172_002);
    assert_eq!(v["level"], "shutdown");
    assert_eq!(v["transcript"], json!(transcript));
}

// --- input the hook does not act on ------------------------------------------------------------

#[test]
fn garbage_on_stdin_exits_zero_prints_nothing_and_changes_nothing() {
    // A live session at the shutdown level: any event that got through would print an alert.
    let ws = starting(Ws::seed());
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 20_000);
    context_of(
        hook(&ws, &event("SessionStart", ws.path(), &transcript)),
        "SessionStart",
    );
    append(&transcript, &assistant("msg_2", 172_002));
    let valid = event("PostToolUse", ws.path(), &transcript);
    let mut nameless = valid.clone();
    nameless.as_object_mut().unwrap().remove("hook_event_name");
    let mut numeric_name = valid.clone();
    numeric_name["hook_event_name"] = json!(42);
    let valid_text = serde_json::to_string(&valid).unwrap();
    let truncated = &valid_text[..valid_text.len() / 2];
    let mut not_utf8 = b"{\"hook_event_name\": \"PostToolUse\", \"cwd\": \"\xff\xfe\"}".to_vec();
    not_utf8.extend_from_slice(b"\n\xc3\x28");

    let before = ws.snapshot();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"this is not json\n".to_vec()),
        ("empty", Vec::new()),
        ("whitespace", b" \n\t\n".to_vec()),
        ("null", b"null".to_vec()),
        ("a JSON array", b"[]".to_vec()),
        (
            "an array holding the event",
            serde_json::to_vec(&json!([valid])).unwrap(),
        ),
        ("a JSON string", b"\"PostToolUse\"".to_vec()),
        ("invalid UTF-8", b"\xff\xfe\x00\x80garbage".to_vec()),
        ("invalid UTF-8 inside JSON", not_utf8),
        ("truncated JSON", truncated.as_bytes().to_vec()),
        ("an empty object", b"{}".to_vec()),
        ("no hook_event_name", serde_json::to_vec(&nameless).unwrap()),
        (
            "a numeric hook_event_name",
            serde_json::to_vec(&numeric_name).unwrap(),
        ),
    ];
    for (what, input) in inputs {
        let out = run_hook_in(&ws, ws.path(), &input);
        assert!(
            out.stdout.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(ws.snapshot(), before, "{what}");
    }

    // The same session still gets its alert from a well-formed event.
    let text = context_of(hook(&ws, &valid), "PostToolUse");
    assert_eq!(
        text,
        "Context is at 86% (172k/200k), past the shutdown threshold; the task's handoff is written by `orchestrator wrap`."
    );
}

#[test]
fn unknown_events_are_ignored() {
    let ws = starting(Ws::seed());
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 20_000);
    context_of(
        hook(&ws, &event("SessionStart", ws.path(), &transcript)),
        "SessionStart",
    );
    append(&transcript, &assistant("msg_2", 172_002));
    let before = ws.snapshot();
    for name in [
        "Stop",
        "Notification",
        "PreToolUse",
        "SubagentStop",
        "StopFailure",
        "sessionstart",
        "",
    ] {
        assert_eq!(
            hook(&ws, &event(name, ws.path(), &transcript)),
            None,
            "{name:?}"
        );
        assert_eq!(ws.snapshot(), before, "{name:?}");
    }
}

#[test]
fn outside_any_workspace_the_hook_stays_silent() {
    let ws = Ws::seed();
    let transcript = transcript_at(&ws, CLAUDE_SESSION, 172_002);
    let project = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let before = ws.snapshot();

    for name in ["SessionStart", "PostToolUse", "UserPromptSubmit"] {
        // The event's cwd is a project without orchestrator, the hook runs elsewhere.
        let e = event(name, project.path(), &transcript);
        assert_eq!(hook_in(&ws, elsewhere.path(), &e), None, "{name}");
        // No cwd in the event: the process's own directory decides.
        let mut e = e.clone();
        e.as_object_mut().unwrap().remove("cwd");
        assert_eq!(hook_in(&ws, elsewhere.path(), &e), None, "{name} (no cwd)");
    }
    assert_eq!(std::fs::read_dir(project.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    assert_eq!(ws.snapshot(), before);
}

// --- hook install claude -----------------------------------------------------------------------

const EXISTING_SETTINGS: &str = r#"{
  "permissions": {
    "allow": ["Bash(cargo test:*)", "Read(~/.zshrc)"],
    "deny": ["Bash(curl:*)"]
  },
  "model": "claude-sonnet-4-5",
  "hooks": {
    "PostToolUse": [
      {
        "matcher": "Edit|Write",
        "hooks": [{ "type": "command", "command": "prettier --write \"$FILE\"", "timeout": 30 }]
      }
    ]
  },
  "env": { "RUST_BACKTRACE": "1" }
}
"#;

const OURS: &str = "orchestrator hook claude";
/// The events `hook install claude` registers, in order.
const ALL_EVENTS: [&str; 6] = [
    "SessionStart",
    "UserPromptSubmit",
    "PostToolUse",
    "PostToolUseFailure",
    "PreCompact",
    "SessionEnd",
];

/// The commands of every hook registered for `event`, in order.
fn commands(settings: &Value, event: &str) -> Vec<String> {
    settings["hooks"][event]
        .as_array()
        .unwrap_or_else(|| panic!("no hooks.{event}: {settings}"))
        .iter()
        .flat_map(|group| group["hooks"].as_array().unwrap().iter())
        .map(|hook| hook["command"].as_str().unwrap().to_string())
        .collect()
}

fn settings(ws: &Ws) -> Value {
    serde_json::from_str(&ws.read(".claude/settings.json")).unwrap()
}

#[test]
fn install_adds_our_hooks_to_existing_settings_keeping_everything_with_a_backup() {
    let ws = Ws::new();
    ws.write(".claude/settings.json", EXISTING_SETTINGS);
    let old: Value = serde_json::from_str(EXISTING_SETTINGS).unwrap();

    let v = ws.json(0, &["hook", "install", "claude"]);
    assert_eq!(v["added"], json!(ALL_EVENTS));
    assert_eq!(v["command"], OURS);
    assert_eq!(v["created"], false);
    assert_eq!(
        std::fs::read(ws.file(".claude/settings.json.bak")).unwrap(),
        EXISTING_SETTINGS.as_bytes()
    );

    let new = settings(&ws);
    // Every setting kept, in its place.
    let keys: Vec<&String> = new.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["permissions", "model", "hooks", "env"], "{new}");
    assert_eq!(new["permissions"], old["permissions"]);
    assert_eq!(new["model"], old["model"]);
    assert_eq!(new["env"], old["env"]);
    // The other tool's hook first and untouched, ours after it.
    let post = new["hooks"]["PostToolUse"].as_array().unwrap();
    assert_eq!(post.len(), 2, "{new}");
    assert_eq!(post[0], old["hooks"]["PostToolUse"][0]);
    assert_eq!(post[1]["matcher"], "*");
    assert_eq!(
        commands(&new, "PostToolUse"),
        ["prettier --write \"$FILE\"", OURS]
    );
    for event in ["SessionStart", "UserPromptSubmit"] {
        assert_eq!(commands(&new, event), [OURS], "{event}");
        assert_eq!(new["hooks"][event][0]["hooks"][0]["type"], "command");
    }
}

#[test]
fn installing_twice_changes_nothing() {
    let ws = Ws::new();
    ws.write(".claude/settings.json", EXISTING_SETTINGS);
    ws.ok(&["hook", "install", "claude"]);
    let before = ws.snapshot();

    let v = ws.json(0, &["hook", "install", "claude"]);
    assert_eq!(v["added"], json!([]));
    assert_eq!(v["backup"], Value::Null);
    assert_eq!(ws.snapshot(), before);
    // The backup still holds the user's original file, not our first install.
    assert_eq!(
        ws.read(".claude/settings.json.bak"),
        EXISTING_SETTINGS,
        "the second install overwrote the backup"
    );

    let out = ws.ok(&["hook", "install", "claude"]);
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn install_refuses_settings_that_are_not_json_and_leaves_them_alone() {
    let ws = Ws::new();
    let broken = "{\n  \"model\": \"opus\",\n  // a comment\n}\n";
    ws.write(".claude/settings.json", broken);
    let before = ws.snapshot();

    let err = ws.refused(&["hook", "install", "claude"]);
    assert!(err.contains(".claude/settings.json"), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    assert_eq!(ws.read(".claude/settings.json"), broken);
    assert!(!ws.file(".claude/settings.json.bak").exists());
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn install_in_a_workspace_without_claude_settings_creates_them() {
    let ws = Ws::new();
    assert!(!ws.file(".claude").exists());

    let v = ws.json(0, &["hook", "install", "claude"]);
    assert_eq!(v["created"], true);
    assert_eq!(v["backup"], Value::Null);
    assert_eq!(v["added"], json!(ALL_EVENTS));
    let new = settings(&ws);
    for event in ALL_EVENTS {
        assert_eq!(commands(&new, event), [OURS], "{event}");
    }
    assert_eq!(
        ws.files_in(".claude"),
        ["settings.json", "settings.local.json"]
    );
}

#[test]
fn install_with_another_command_path_registers_that_path() {
    let ws = Ws::new();
    let v = ws.json(
        0,
        &[
            "hook",
            "install",
            "claude",
            "--command",
            "/opt/bin/orchestrator",
        ],
    );
    assert_eq!(v["command"], "/opt/bin/orchestrator hook claude");
    let new = settings(&ws);
    assert_eq!(
        commands(&new, "SessionStart"),
        ["/opt/bin/orchestrator hook claude"]
    );
    // Already installed under another path: not added twice.
    let v = ws.json(0, &["hook", "install", "claude"]);
    assert_eq!(v["added"], json!([]));
}

//! The brief (issue 13): one bounded text in `start`, `start --json`, the SessionStart hook and
//! `run`, carrying the task's context and the open issues and next steps that outlive sessions.

use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

const TASK: &str = "integrate_sessions_101_140";
/// Claude Code caps a hook's `additionalContext` at 10,000 characters (hooks reference,
/// code.claude.com/docs/en/hooks; /work/wt/research/issue10-hooks.md §2.2).
const HOOK_CONTEXT_CAP: usize = 10_000;

/// Writes an executable agent script from a child `sh`, never from this process: a write
/// descriptor opened here could be inherited by a sibling test's spawn (ETXTBSY, see run.rs).
fn agent(ws: &Ws, name: &str, body: &str) -> PathBuf {
    let path = ws.file(name);
    let mut writer = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!("#!/bin/sh\n{body}\n");
    writer
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(writer.wait().unwrap().success(), "cannot write {name}");
    path
}

/// The brief of a new session, from `start --json`.
fn brief_of_start(ws: &Ws, args: &[&str]) -> String {
    let mut all = vec!["start"];
    all.extend_from_slice(args);
    let started = ws.json(0, &all);
    started["brief"]
        .as_str()
        .expect("start --json has `brief`")
        .to_string()
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[test]
fn next_steps_outlive_a_session_whose_agent_exited() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.ok(&[
        "checkpoint",
        "half the inbox",
        "--progress",
        "2",
        "--tokens",
        "1000",
    ]);
    ws.ok(&[
        "wrap",
        "--summary",
        "inbox half done",
        "--next",
        "Dedupe the second half of the inbox",
        "--next",
        "Check sessions 120-125 for encoding",
    ]);
    // The next session's agent dies without a wrap: `run` wraps it with no next steps.
    agent(&ws, "quit.sh", "exit 1");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let out = ws
        .command(&[
            "run",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "./quit.sh",
        ])
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        ws.files_in(".orchestrator/sessions/active").is_empty(),
        "{out:?}"
    );

    let brief = brief_of_start(&ws, &[]);
    let newest = brief.find("#2 Check sessions 120-125").expect(&brief);
    let older = brief.find("#1 Dedupe the second half").expect(&brief);
    assert!(newest < older, "newest first:\n{brief}");
    assert!(brief.contains("Last session:"), "{brief}");
    assert!(brief.contains("agent-exited"), "{brief}");
    // They live on the task, not only in the handoff that is now the last one.
    let steps = &ws.task(TASK)["next_steps"];
    assert_eq!(steps.as_array().unwrap().len(), 2, "{steps}");
}

#[test]
fn checkpoint_issues_stay_open_until_resolved() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.ok(&[
        "checkpoint",
        "found problems",
        "--issue",
        "inbox has duplicates",
        "--issue",
        "session 121 is truncated",
        "--tokens",
        "1000",
    ]);
    ws.ok(&["wrap", "--next", "re-import 121"]);
    let shown = ws.ok(&["task", "show", TASK]);
    assert!(shown.contains("#2  session 121 is truncated"), "{shown}");
    assert!(shown.contains("#3  re-import 121"), "{shown}");

    ws.ok(&["start"]);
    // An unknown number is refused and nothing is recorded.
    let before = ws.snapshot();
    let err = ws.refused(&["checkpoint", "fixed", "--resolve", "9", "--tokens", "1000"]);
    assert!(
        err.contains("no open issue or next step numbered 9"),
        "{err}"
    );
    assert_eq!(before, ws.snapshot());

    let out = ws.ok(&[
        "checkpoint",
        "fixed the duplicates",
        "--resolve",
        "1",
        "--tokens",
        "1000",
    ]);
    assert!(out.contains("Resolved #1."), "{out}");
    let task = ws.task(TASK);
    let issues: Vec<&str> = task["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap())
        .collect();
    assert_eq!(issues, ["session 121 is truncated"]);
    let shown = ws.json(0, &["task", "show", TASK]);
    assert_eq!(shown["task"]["issues"][0]["n"], 2);
    assert_eq!(shown["task"]["next_steps"][0]["text"], "re-import 121");

    ws.ok(&["task", "set", TASK, "--clear-next", "--clear-issues"]);
    let task = ws.task(TASK);
    assert!(
        task.get("issues").is_none() && task.get("next_steps").is_none(),
        "{task}"
    );
}

/// A stack whose task has `count` open items, each long, written as `task_stack.json` keeps
/// them (docs/formats.md): 500 real checkpoints would only make the test slow.
fn stack_with_open_items(ws: &Ws, count: u64) {
    let mut stack = ws.stack();
    let items: Vec<Value> = (1..=count)
        .map(|n| {
            json!({"n": n, "text": format!("item {n}: {}", "detail ".repeat(40)),
                   "at": T0, "session": "session_20251105_000000"})
        })
        .collect();
    let (issues, steps): (Vec<Value>, Vec<Value>) = items
        .into_iter()
        .partition(|i| i["n"].as_u64().unwrap() % 2 == 0);
    stack["tasks"][0]["issues"] = json!(issues);
    stack["tasks"][0]["next_steps"] = json!(steps);
    stack["tasks"][0]["description"] = json!("Import sessions 101 to 140 into the QA database.");
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
}

#[test]
fn the_brief_stays_under_the_hook_cap_with_500_open_items_and_keeps_the_newest() {
    let ws = Ws::seed();
    stack_with_open_items(&ws, 500);
    let brief = brief_of_start(&ws, &[]);
    assert!(
        utf16_len(&brief) <= HOOK_CONTEXT_CAP,
        "{}",
        utf16_len(&brief)
    );
    assert!(brief.contains("#500 item 500:"), "{brief}");
    assert!(brief.contains("#499 item 499:"), "{brief}");
    assert!(!brief.contains("#1 item 1:"), "{brief}");
    assert!(
        brief.contains("older open item(s) omitted: `orchestrator task show integrate_sessions_101_140` lists them all"),
        "{brief}"
    );
    // Trimmed between lines: the fixed part, to the last command, is whole.
    assert!(
        brief.contains("Description:     Import sessions 101 to 140"),
        "{brief}"
    );
    assert!(brief.ends_with("[--done]\n"), "{brief}");
    // `task show` has every one.
    let shown = ws.ok(&["task", "show", TASK]);
    assert!(shown.contains("#1  item 1:"), "{shown}");
}

#[test]
fn start_json_brief_is_the_plain_brief() {
    let plain_ws = Ws::seed();
    let json_ws = Ws::seed();
    for ws in [&plain_ws, &json_ws] {
        ws.ok(&[
            "task",
            "set",
            TASK,
            "--description",
            "Import sessions\n101 to 140",
            "--acceptance",
            "every session in the db",
        ]);
    }
    let plain = plain_ws.ok(&["start"]);
    let brief = brief_of_start(&json_ws, &[]);
    assert_eq!(plain, brief);
    assert!(
        brief.contains("Description:     Import sessions 101 to 140\n"),
        "{brief}"
    );
    assert!(
        brief.contains("Acceptance:      every session in the db\n"),
        "{brief}"
    );
}

#[test]
fn the_session_start_hook_hands_over_the_same_brief() {
    let ws = Ws::seed();
    stack_with_open_items(&ws, 30);
    let transcript = ws.home().join(".claude/projects/-work-proj/3f2a.jsonl");
    let brief = brief_of_start(
        &ws,
        &[
            "--agent",
            "claude",
            "--transcript",
            transcript.to_str().unwrap(),
        ],
    );
    // The fields Claude Code sends with every hook event, and SessionStart's `source` (hooks
    // reference, "Common input fields" and "SessionStart input"; research notes §1).
    let event = json!({
        "session_id": "3f2a5d0e-7c1b-4e8a-9d6f-0b1c2d3e4f5a",
        "transcript_path": transcript,
        "cwd": ws.path(),
        "hook_event_name": "SessionStart",
        "source": "startup",
    });
    let mut child = ws
        .command(&["hook", "claude"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let output: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        output["hookSpecificOutput"]["hookEventName"],
        "SessionStart"
    );
    let context = output["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert_eq!(context, brief);
}

#[test]
fn titles_are_required_and_not_blank() {
    let ws = Ws::new();
    let before = ws.snapshot();
    let out = ws.run(&["task", "add", "untitled"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--title"));
    let err = ws.refused(&["task", "add", "blank", "--title", "  \n "]);
    assert_eq!(
        err,
        "error: --title cannot be empty: say in a line what the task is"
    );
    assert_eq!(before, ws.snapshot());
    ws.ok(&["task", "add", "a", "--title", "A task"]);
    ws.refused(&["task", "set", "a", "--title", ""]);
    assert_eq!(ws.task("a")["title"], "A task");
}

#[test]
fn a_description_file_is_read_and_a_missing_one_named() {
    let ws = Ws::new();
    ws.write("desc.md", "Load the CSVs.\nThen check the row counts.\n");
    ws.ok(&[
        "task",
        "add",
        "load",
        "--title",
        "Load data",
        "--description-file",
        "desc.md",
        "--notes",
        "ask Ana about the 2019 files",
    ]);
    let shown = ws.ok(&["task", "show", "load"]);
    assert!(
        shown.contains("description:\n  Load the CSVs.\n  Then check the row counts.\n"),
        "{shown}"
    );
    assert!(
        shown.contains("notes:\n  ask Ana about the 2019 files\n"),
        "{shown}"
    );
    let before = ws.snapshot();
    let err = ws.refused(&["task", "set", "load", "--description-file", "nope.md"]);
    assert!(
        err.contains("--description-file nope.md: cannot read it"),
        "{err}"
    );
    assert_eq!(before, ws.snapshot());
}

fn git(ws: &Ws, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
        .args(args)
        .current_dir(ws.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[test]
fn the_brief_says_what_the_last_session_changed_and_the_git_state() {
    let ws = Ws::seed();
    git(&ws, &["init", "-q", "-b", "main"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "seed"]);
    ws.ok(&["start"]);
    ws.write("import.py", "print('import')\n");
    git(&ws, &["add", "import.py"]);
    git(&ws, &["commit", "-q", "-m", "Add the importer"]);
    ws.ok(&[
        "checkpoint",
        "importer",
        "--progress",
        "1",
        "--tokens",
        "1000",
    ]);
    ws.ok(&["wrap", "--summary", "importer written"]);
    ws.write("notes.txt", "scratch\n");

    let brief = brief_of_start(&ws, &[]);
    assert!(
        brief.contains("ended 2025-11-06T00:13:55Z: wrap; progress 0/40 -> 1/40"),
        "{brief}"
    );
    assert!(brief.contains("  summary: importer written\n"), "{brief}");
    // The agent's file and commit; not our stack, handoff or wrap commit.
    assert!(brief.contains("  files (1): import.py\n"), "{brief}");
    assert!(brief.contains("  commit: Add the importer\n"), "{brief}");
    assert!(!brief.contains("Session Wrap"), "{brief}");
    assert!(
        brief.contains("Git:             branch main; 1 uncommitted file(s): notes.txt\n"),
        "{brief}"
    );
}

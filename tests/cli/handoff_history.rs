//! Issue 13: the handoff says what changed (front matter, files, commits, the agent's last
//! output), `orchestrator log` reads the history, and a session that changed nothing collapses.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::run::agent;

const SESSION: &str = "session_20251106_001355";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `init`, the given tasks, and everything committed in a new repository.
fn git_workspace(tasks: &[(&str, &str, u64)]) -> Ws {
    let ws = Ws::new();
    for (id, title, total) in tasks {
        ws.ok(&[
            "task",
            "add",
            id,
            "--title",
            title,
            "--total",
            &total.to_string(),
        ]);
    }
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-qm", "seed"]);
    ws
}

/// The handoff's front matter, parsed by a YAML parser.
fn front_matter(handoff: &str) -> BTreeMap<String, serde_yaml_ng::Value> {
    let body = handoff
        .strip_prefix("---\n")
        .unwrap_or_else(|| panic!("no front matter:\n{handoff}"));
    let (yaml, _) = body
        .split_once("\n---\n")
        .unwrap_or_else(|| panic!("unclosed front matter:\n{handoff}"));
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("not YAML ({e}):\n{yaml}"))
}

fn text(value: &serde_yaml_ng::Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

fn archived(ws: &Ws, session: &str) -> Value {
    serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{session}.json")))
        .unwrap()
}

#[test]
fn the_front_matter_is_yaml_even_with_hostile_text() {
    let title = "Ingest \"raw\" #1: \\ yes\n---\nstatus: done\n# forged: 1/2 \u{2192} 3/4 (x)\x1b[31m 'q' \u{2028}end";
    let summary = "key: value # not a comment\n---\n- [a, {b: c}]\t\"quoted\" \\n & *alias !tag %dir @at `tick` \u{feff}\u{85}";
    let ws = Ws::new();
    ws.ok(&["task", "add", "t1", "--title", title, "--total", "4"]);
    ws.ok(&["start", "--agent", "claude"]);
    ws.ok(&[
        "checkpoint",
        "did one",
        "--progress",
        "1",
        "--tokens",
        "30000",
    ]);
    ws.set_now(&at_minutes(6));
    ws.ok(&["wrap", "--summary", summary]);
    let handoff = ws.read(&format!("session_handoffs/handoff_{SESSION}.md"));
    let yaml = front_matter(&handoff);

    let one_line = |s: &str| {
        s.chars()
            .filter(|&c| !c.is_control() || c == '\n' || c == '\t')
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(text(&yaml["title"]), one_line(title), "{handoff}");
    assert_eq!(
        text(&yaml["summary"]),
        "key: value # not a comment",
        "the summary's first line: {handoff}"
    );
    assert_eq!(text(&yaml["task"]), "t1");
    assert_eq!(text(&yaml["session"]), SESSION);
    assert_eq!(text(&yaml["agent"]), "claude");
    assert_eq!(text(&yaml["reason"]), "wrap");
    assert_eq!(text(&yaml["started"]), "2025-11-06T00:13:55Z");
    assert_eq!(text(&yaml["ended"]), "2025-11-06T00:19:55Z");
    assert_eq!(text(&yaml["status"]), "in_progress");
    assert_eq!(yaml["progress_from"].as_u64(), Some(0));
    assert_eq!(yaml["progress_to"].as_u64(), Some(1));
    assert_eq!(yaml["progress_total"].as_u64(), Some(4));
    assert_eq!(yaml["tokens_pct"].as_f64(), Some(15.0));
    assert_eq!(yaml["changed_nothing"].as_bool(), Some(false));
    // Outside git nothing is known about files and commits.
    assert!(yaml["files_changed"].is_null() && yaml["commits"].is_null());
    // `--tokens` figures name no model: no price, and no $0 either.
    assert!(yaml["cost_usd"].is_null());
    // The title's `status: done` line did not become a key, nor its `---` the end of the block.
    assert_eq!(yaml.len(), 17, "{yaml:?}");

    let after = handoff.split_once("\n---\n").unwrap().1;
    let h1 = after.lines().find(|l| !l.is_empty()).unwrap();
    assert_eq!(h1, "# t1: 0/4 \u{2192} 1/4 (wrapped)");
    // The rest of the handoff keeps its structure: one H1, the forged one is not a heading.
    assert_eq!(
        handoff.lines().filter(|l| l.starts_with("# ")).count(),
        1,
        "{handoff}"
    );
}

#[test]
fn the_handoff_lists_the_changed_files_and_the_agents_commits_without_our_bookkeeping() {
    let ws = git_workspace(&[("ingest", "Ingest the inbox", 40)]);
    ws.write("notes.txt", "one\ntwo\nthree\n");
    git(ws.path(), &["add", "notes.txt"]);
    git(ws.path(), &["commit", "-qm", "notes"]);
    ws.ok(&["start", "--agent", "claude"]);
    ws.write("src/parse.rs", "fn a() {}\nfn b() {}\nfn c() {}\n");
    git(ws.path(), &["add", "src/parse.rs"]);
    git(
        ws.path(),
        &["commit", "-qm", "parse: read the inbox\n\nbody line"],
    );
    ws.write("notes.txt", "one\nthree\nfour\nfive\n");
    // 55 more files: the list stops at 50 and says how many more.
    for i in 0..55 {
        ws.write(&format!("zdata/f{i:02}.txt"), "x\n");
    }
    ws.expect(12, &["checkpoint", "parsed", "--progress", "4"]);
    ws.set_now(&at_minutes(10));
    ws.ok(&[
        "wrap",
        "--summary",
        "Parsed the inbox.\nMore detail.",
        "--next",
        "go on",
    ]);

    let handoff = ws.read(&format!("session_handoffs/handoff_{SESSION}.md"));
    let changes = handoff
        .split_once("\n## Changes\n")
        .unwrap()
        .1
        .split_once("\n## ")
        .unwrap()
        .0;
    assert!(
        changes.contains(
            "- 57 file(s) changed, 60 insertion(s)(+), 1 deletion(s)(-) since the session started"
        ),
        "{changes}"
    );
    assert!(changes.contains("- `src/parse.rs` +3 -0\n"), "{changes}");
    assert!(changes.contains("- `notes.txt` +2 -1\n"), "{changes}");
    assert_eq!(
        changes.lines().filter(|l| l.starts_with("- `")).count(),
        50,
        "{changes}"
    );
    assert!(changes.contains("- ... and 7 more file(s)\n"), "{changes}");
    assert!(
        changes.contains("- Commit: parse: read the inbox\n"),
        "{changes}"
    );
    for ours in ["task_stack.json", "session_handoffs", ".orchestrator"] {
        assert!(
            !changes
                .lines()
                .any(|l| l.starts_with("- `") && l.contains(ours)),
            "{ours} is bookkeeping: {changes}"
        );
    }
    let yaml = front_matter(&handoff);
    assert_eq!(yaml["files_changed"].as_u64(), Some(57));
    assert_eq!(yaml["commits"].as_u64(), Some(1));

    // The archive keeps them for the next brief.
    let journal = &archived(&ws, SESSION)["wrap"];
    assert_eq!(journal["changes"]["files_changed"], 57);
    assert_eq!(journal["changes"]["files"].as_array().unwrap().len(), 50);
    assert_eq!(
        journal["changes"]["commit_subjects"],
        serde_json::json!(["parse: read the inbox"])
    );
    assert_eq!(
        journal["progress"],
        serde_json::json!({"done": 4, "total": 40})
    );

    // `log` names the wrap commit, found by its trailer (the archive is committed in it).
    let head = git(ws.path(), &["rev-parse", "HEAD"]);
    assert_eq!(ws.json(0, &["log"])["sessions"][0]["commit"], head.trim());
    assert!(ws.ok(&["log"]).trim_end().ends_with(&head[..12]));

    // The wrap commit keeps the SPEC's subject and adds the summary's first line.
    let message = git(ws.path(), &["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("Session Wrap: ingest\n\nSummary: Parsed the inbox.\n\n"),
        "{message}"
    );
}

#[test]
fn a_session_run_wrapped_after_the_agent_failed_keeps_its_last_output() {
    let ws = git_workspace(&[("alpha", "Alpha", 5)]);
    agent(
        &ws,
        "crash.sh",
        "cat > /dev/null\norchestrator checkpoint 'got going' --advance 1 >/dev/null\n\
         for i in $(seq 1 40); do echo \"step $i\"; done\n\
         printf '\\033[31mError:\\033[0m disk \\033]0;title\\007on fire\\r\\n'\nexit 1",
    );
    let mut cmd = ws.command(&[
        "run",
        "--max-sessions",
        "1",
        "--poll",
        "50ms",
        "--",
        "./crash.sh",
    ]);
    let bin_dir = Path::new(BIN).parent().unwrap();
    cmd.env(
        "PATH",
        format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
    );
    let out = cmd.output().unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
    let archive = ws.files_in(".orchestrator/sessions/archive");
    assert_eq!(archive.len(), 1, "{out:?}");
    let session = archive[0].trim_end_matches(".json");
    let handoff = ws.read(&format!("session_handoffs/handoff_{session}.md"));
    assert!(
        handoff.contains("\n# alpha: 0/5 \u{2192} 1/5 (agent-exited)\n"),
        "{handoff}"
    );
    let output = handoff.split_once("\n## Agent Output\n").unwrap().1;
    let output = output.split_once("\n## ").map_or(output, |(o, _)| o);
    let quoted: Vec<&str> = output.lines().filter(|l| l.starts_with("> ")).collect();
    assert_eq!(quoted.len(), 30, "bounded to the last 30 lines: {output}");
    assert_eq!(quoted[0], "> step 12");
    assert_eq!(quoted[29], "> Error: disk on fire");
    assert!(
        !handoff.contains('\x1b') && !handoff.contains('\x07') && !handoff.contains('\r'),
        "{handoff:?}"
    );
    assert_eq!(
        archived(&ws, session)["wrap"]["agent_output"]
            .as_str()
            .unwrap()
            .lines()
            .last(),
        Some("Error: disk on fire")
    );
}

#[test]
fn log_lists_thirty_sessions_newest_first_and_filters_them() {
    let ws = Ws::new();
    ws.ok(&["task", "add", "alpha", "--title", "Alpha", "--total", "100"]);
    ws.ok(&["task", "add", "beta", "--title", "Beta", "--total", "100"]);
    for i in 0..30i64 {
        let (task, agent) = (
            if i % 2 == 0 { "alpha" } else { "beta" },
            if i % 3 == 0 { "codex" } else { "claude" },
        );
        ws.set_now(&at_minutes(i * 60));
        ws.ok(&["start", "--agent", agent, "--task", task]);
        let done = (i / 2 + 1).to_string();
        ws.run(&[
            "checkpoint",
            "unit",
            "--progress",
            &done,
            "--tokens",
            "20000",
        ]);
        ws.set_now(&at_minutes(i * 60 + 10));
        ws.ok(&["wrap"]);
    }
    ws.set_now(&at_minutes(29 * 60 + 10));
    let ended = |v: &Value| -> Vec<String> {
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["ended"].as_str().unwrap().to_string())
            .collect()
    };

    let all = ws.json(0, &["log"]);
    let times = ended(&all);
    assert_eq!(times.len(), 30);
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first: {times:?}"
    );
    let newest = &all["sessions"][0];
    assert_eq!(newest["task"], "beta");
    assert_eq!(newest["agent"], "claude");
    assert_eq!(newest["reason"], "wrap");
    assert_eq!(newest["progress_from"]["done"], 14);
    assert_eq!(newest["progress_to"]["done"], 15);
    assert_eq!(newest["tokens_pct"], 10.0);

    let alpha = ws.json(0, &["log", "--task", "alpha"]);
    let sessions = alpha["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 15);
    assert!(sessions.iter().all(|s| s["task"] == "alpha"));

    let codex = ws.json(0, &["log", "--agent", "codex"]);
    assert_eq!(codex["sessions"].as_array().unwrap().len(), 10);
    assert!(
        codex["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["agent"] == "codex")
    );

    // Sessions 24..=29 ended within the last 5 hours, and on 2025-11-07.
    assert_eq!(ended(&ws.json(0, &["log", "--since", "5h"])), times[..6]);
    assert_eq!(
        ended(&ws.json(0, &["log", "--since", "2025-11-07"])),
        times[..6]
    );
    assert_eq!(
        ended(&ws.json(0, &["log", "--since", "2025-11-07T05:23:55+01:00"])),
        times[..2]
    );

    assert_eq!(ended(&ws.json(0, &["log", "-n", "5"])), times[..5]);
    let few = ws.json(
        0,
        &["log", "--task", "beta", "--agent", "claude", "-n", "3"],
    );
    let few = few["sessions"].as_array().unwrap();
    assert_eq!(few.len(), 3);
    assert!(
        few.iter()
            .all(|s| s["task"] == "beta" && s["agent"] == "claude")
    );

    // The text: one line per session, newest first.
    let lines: Vec<String> = ws.ok(&["log"]).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 30);
    assert!(
        lines[0].starts_with("2025-11-07 05:23  claude  beta   14/100 \u{2192} 15/100"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(" 10%  wrapped  "), "{}", lines[0]);
    assert!(
        lines[29].starts_with("2025-11-06 00:23  codex   alpha"),
        "{}",
        lines[29]
    );

    let bad = ws.refused(&["log", "--since", "last week"]);
    assert!(bad.contains("--since"), "{bad}");
}

#[test]
fn a_session_that_changed_nothing_gets_a_one_line_handoff_and_the_pointer_stays() {
    let ws = git_workspace(&[("ingest", "Ingest the inbox", 40)]);
    ws.ok(&["start", "--agent", "claude"]);
    ws.write("out.txt", "result\n");
    ws.expect(12, &["checkpoint", "did two", "--progress", "2"]);
    ws.set_now(&at_minutes(10));
    ws.ok(&["wrap", "--next", "do the third"]);
    let with_content = format!("session_handoffs/handoff_{SESSION}.md");
    assert_eq!(ws.task("ingest")["last_handoff"], with_content);

    ws.set_now(&at_minutes(20));
    let second = ws.json(0, &["start", "--agent", "claude"])["session"]
        .as_str()
        .unwrap()
        .to_string();
    ws.set_now(&at_minutes(25));
    ws.ok(&[
        "wrap",
        "--reason",
        "agent-exited",
        "--summary",
        "The agent exited (exit 1).",
    ]);

    let handoff = ws.read(&format!("session_handoffs/handoff_{second}.md"));
    let yaml = front_matter(&handoff);
    assert_eq!(yaml["changed_nothing"].as_bool(), Some(true));
    let body: Vec<&str> = handoff
        .split_once("\n---\n")
        .unwrap()
        .1
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        body,
        [
            "# ingest: 2/40 \u{2192} 2/40 (agent-exited)".to_string(),
            format!(
                "No progress, no file changed and no commit in this session; the last handoff with content is `{with_content}`."
            )
        ],
        "{handoff}"
    );
    assert_eq!(
        ws.task("ingest")["last_handoff"],
        with_content,
        "the task still points at the handoff with content"
    );
    // It is still logged.
    let log = ws.json(0, &["log"]);
    assert_eq!(log["sessions"][0]["session"], second.as_str());
    assert_eq!(log["sessions"][0]["reason"], "agent-exited");
    assert_eq!(log["sessions"][0]["files_changed"], 0);
}

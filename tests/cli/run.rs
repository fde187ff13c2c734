//! `orchestrator run`: the loop over sessions, driven by fake agents written as shell scripts
//! that call the real binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Writes an executable agent script into the workspace.
///
/// A child process writes it, never this one: under `cargo test` the tests share one process,
/// and a write descriptor opened here is inherited by any process another test thread spawns
/// at that moment; executing the script while that copy is open fails with ETXTBSY ("Text file
/// busy", rust-lang/rust#114554). A single-threaded `sh` has no such sibling.
pub fn agent(ws: &Ws, name: &str, body: &str) -> PathBuf {
    let path = ws.file(name);
    let mut writer = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!("#!/bin/sh\n{body}\n");
    std::io::Write::write_all(&mut writer.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(writer.wait().unwrap().success(), "cannot write {name}");
    path
}

/// The binary's directory first on PATH, so agents can call `orchestrator`.
pub fn run_command(ws: &Ws, args: &[&str]) -> Command {
    let mut cmd = ws.command(args);
    let bin_dir = Path::new(BIN).parent().unwrap();
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    cmd
}

pub fn run(ws: &Ws, args: &[&str]) -> Output {
    run_command(ws, args).output().unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

pub fn git_workspace(tasks: &[(&str, u64)]) -> Ws {
    let ws = Ws::new();
    for (id, total) in tasks {
        ws.ok(&[
            "task",
            "add",
            id,
            "--title",
            id,
            "--total",
            &total.to_string(),
        ]);
    }
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "-A"]);
    git(
        ws.path(),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "seed",
        ],
    );
    ws
}

pub fn archived(ws: &Ws) -> Vec<Value> {
    ws.files_in(".orchestrator/sessions/archive")
        .iter()
        .map(|name| {
            serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{name}")))
                .unwrap()
        })
        .collect()
}

pub fn final_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const WORKER: &str = r#"
cat > /dev/null
orchestrator checkpoint "first half" --advance 1 --tokens 40000 > /dev/null
orchestrator checkpoint "second half" --advance 1 --tokens 90000 > /dev/null
echo "worked on $ORCHESTRATOR_TASK"
"#;

#[test]
fn the_loop_runs_every_task_to_done_with_a_handoff_and_commit_per_session() {
    let ws = git_workspace(&[("alpha", 2), ("beta", 2), ("gamma", 2)]);
    agent(&ws, "worker.sh", WORKER);
    let out = run(
        &ws,
        &[
            "run",
            "--agent",
            "fake",
            "--poll",
            "50ms",
            "--",
            "./worker.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = final_line(&out);
    assert!(line.starts_with("run=run_20251106_001355_"), "{line}");
    assert!(line.ends_with("stop=all_done sessions=3 exit=0"), "{line}");

    for id in ["alpha", "beta", "gamma"] {
        assert_eq!(ws.task(id)["status"], "done", "{id}");
        assert_eq!(ws.progress(id), (2, 2));
    }
    let sessions = archived(&ws);
    assert_eq!(sessions.len(), 3);
    for session in &sessions {
        assert_eq!(session["wrap"]["reason"], "agent-exited");
        assert_eq!(session["checkpoints"].as_array().unwrap().len(), 2);
        assert_eq!(session["tokens"]["used"], 90_000);
    }
    assert_eq!(
        ws.files_in("session_handoffs").len(),
        4,
        "three handoffs and .gitkeep"
    );
    let log = git(ws.path(), &["log", "--format=%s"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "Session Wrap: gamma",
            "Session Wrap: beta",
            "Session Wrap: alpha",
            "seed"
        ]
    );
    assert!(
        stderr(&out).contains("worked on beta"),
        "the agent's output is passed through"
    );

    // The run log has one line per event.
    let logs = ws.files_in(".orchestrator/runs");
    assert_eq!(logs.len(), 1);
    let events: Vec<Value> = ws
        .read(&format!(".orchestrator/runs/{}", logs[0]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"stopped"));
    assert_eq!(kinds.iter().filter(|k| **k == "session_started").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "session_ended").count(), 3);
    // Never committed: the run logs stay out of git.
    assert!(!git(ws.path(), &["ls-files"]).contains(".orchestrator/runs"));
}

#[test]
fn an_agent_that_wraps_itself_is_not_wrapped_again() {
    let ws = git_workspace(&[("alpha", 1)]);
    agent(
        &ws,
        "tidy.sh",
        "orchestrator checkpoint done --advance 1 >/dev/null\norchestrator wrap --summary 'all good' >/dev/null",
    );
    let out = run(&ws, &["run", "--poll", "50ms", "--", "./tidy.sh"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sessions = archived(&ws);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["wrap"]["reason"], "wrap");
    assert_eq!(sessions[0]["wrap"]["summary"], "all good");
}

#[test]
fn the_brief_reaches_the_agent_by_stdin_placeholders_and_environment_without_a_shell() {
    let ws = Ws::new();
    ws.ok(&[
        "task",
        "add",
        "alpha",
        "--title",
        "Import $(touch pwned) `touch pwned2`; touch pwned3",
    ]);
    agent(
        &ws,
        "echo.sh",
        r#"cat > stdin.txt
printf '%s' "$1" > arg1.txt
printf '%s|%s|%s|%s' "$ORCHESTRATOR_SESSION" "$ORCHESTRATOR_TASK" "$ORCHESTRATOR_DIR" "$2" > env.txt
orchestrator checkpoint x --advance 1 > /dev/null"#,
    );
    let out = run(
        &ws,
        &[
            "run",
            "--poll",
            "50ms",
            "--",
            "./echo.sh",
            "{brief}",
            "{session}/{task}",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdin = ws.read("stdin.txt");
    assert!(
        stdin.contains("Import $(touch pwned) `touch pwned2`; touch pwned3"),
        "{stdin}"
    );
    assert_eq!(
        ws.read("arg1.txt"),
        stdin,
        "{{brief}} is the same brief as stdin"
    );
    let env = ws.read("env.txt");
    let session = "session_20251106_001355";
    assert_eq!(
        env,
        format!("{session}|alpha|{}|{session}/alpha", ws.path().display())
    );
    for file in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !ws.file(file).exists(),
            "{file} was created: a shell ran the title"
        );
    }
}

#[test]
fn an_agent_that_never_makes_progress_trips_the_breaker() {
    let ws = git_workspace(&[("alpha", 5)]);
    agent(&ws, "idle.sh", "echo thinking");
    let out = run(
        &ws,
        &["run", "--breaker", "2", "--poll", "50ms", "--", "./idle.sh"],
    );
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    assert!(
        final_line(&out).contains("stop=no_progress sessions=2"),
        "{out:?}"
    );
    assert_eq!(archived(&ws).len(), 2);
    assert_eq!(ws.progress("alpha"), (0, 5));
    assert_eq!(ws.task("alpha")["status"], "in_progress");
}

#[test]
fn commits_by_the_agent_count_as_progress() {
    let ws = git_workspace(&[("alpha", 5)]);
    // Each session commits work but reports no units; the breaker must not trip.
    agent(
        &ws,
        "committer.sh",
        "echo $ORCHESTRATOR_SESSION >> work.txt\ngit add work.txt && git -c user.name=a -c user.email=a@a commit -qm 'agent work'",
    );
    let out = run(
        &ws,
        &[
            "run",
            "--breaker",
            "2",
            "--max-sessions",
            "3",
            "--poll",
            "50ms",
            "--",
            "./committer.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(
        final_line(&out).contains("stop=max_sessions sessions=3"),
        "{out:?}"
    );
}

#[test]
fn a_crashing_agent_is_wrapped_as_agent_exited_and_failures_trip_the_breaker() {
    let ws = git_workspace(&[("alpha", 5)]);
    agent(
        &ws,
        "crash.sh",
        "orchestrator checkpoint 'got going' --advance 1 >/dev/null\necho 'segfault' >&2\nexit 3",
    );
    let out = run(
        &ws,
        &[
            "run",
            "--breaker",
            "2",
            "--poll",
            "50ms",
            "--",
            "./crash.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(24), "{}", stderr(&out));
    assert!(
        final_line(&out).contains("stop=agent_failures sessions=2"),
        "{out:?}"
    );
    let sessions = archived(&ws);
    assert_eq!(sessions.len(), 2);
    for session in &sessions {
        assert_eq!(session["wrap"]["reason"], "agent-exited");
        let summary = session["wrap"]["summary"].as_str().unwrap();
        assert!(summary.contains("exit 3"), "{summary}");
    }
    // The work each session did is kept.
    assert_eq!(ws.progress("alpha"), (2, 5));
    let handoff = ws.read(&format!(
        "session_handoffs/handoff_{}.md",
        sessions[0]["id"].as_str().unwrap()
    ));
    assert!(handoff.contains("exit 3"), "{handoff}");
}

#[test]
fn an_agent_that_ignores_the_shutdown_level_is_stopped_after_the_grace_period() {
    let ws = git_workspace(&[("alpha", 5)]);
    // Ignores SIGTERM too, so only the SIGKILL one grace period later ends it.
    agent(
        &ws,
        "stubborn.sh",
        "orchestrator checkpoint 'deep in it' --advance 1 --tokens 190000 >/dev/null\ntrap '' TERM\nwhile true; do sleep 0.05; done",
    );
    let began = Instant::now();
    let out = run(
        &ws,
        &[
            "run",
            "--grace",
            "300ms",
            "--poll",
            "50ms",
            "--max-sessions",
            "1",
            "--",
            "./stubborn.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(began.elapsed() < Duration::from_secs(20));
    let err = stderr(&out);
    assert!(
        err.contains("at the shutdown level; the agent has 300ms to wrap"),
        "{err}"
    );
    assert!(
        err.contains("did not wrap within 300ms; stopping it"),
        "{err}"
    );
    let sessions = archived(&ws);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["wrap"]["reason"], "shutdown-level");
    assert_eq!(ws.progress("alpha"), (1, 5));
    assert!(
        ws.files_in(".orchestrator/sessions/active").is_empty(),
        "the session was wrapped"
    );
}

#[test]
fn stop_file_max_sessions_and_max_duration_end_the_loop_with_their_codes() {
    let ws = git_workspace(&[("alpha", 50)]);
    agent(
        &ws,
        "step.sh",
        "sleep 0.2\norchestrator checkpoint step --advance 1 >/dev/null\ntrue",
    );
    let out = run(
        &ws,
        &[
            "run",
            "--max-sessions",
            "2",
            "--poll",
            "50ms",
            "--",
            "./step.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20));
    assert!(final_line(&out).contains("stop=max_sessions sessions=2"));
    assert_eq!(ws.progress("alpha"), (2, 50));

    let out = run(
        &ws,
        &[
            "run",
            "--max-duration",
            "100ms",
            "--poll",
            "50ms",
            "--",
            "./step.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    assert!(
        final_line(&out).contains("stop=max_duration sessions=1"),
        "{out:?}"
    );
    assert_eq!(
        ws.progress("alpha"),
        (3, 50),
        "the running session finished"
    );

    ws.write(".orchestrator/STOP", "");
    let out = run(&ws, &["run", "--json", "--", "./step.sh"]);
    assert_eq!(out.status.code(), Some(22));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stop"], "stop_file");
    assert_eq!(v["sessions"], 0);
    assert_eq!(ws.progress("alpha"), (3, 50));
}

#[test]
fn a_rate_limited_agent_is_backed_off_with_the_wait_printed_and_does_not_trip_the_breaker() {
    let ws = git_workspace(&[("alpha", 5)]);
    let mut stack = ws.stack();
    stack["settings"]["run"] =
        serde_json::json!({"backoff_seconds": 0, "rate_limit_exit_codes": [75]});
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    agent(
        &ws,
        "limited.sh",
        "echo 'Error: 429 Too Many Requests' >&2\nexit 1",
    );
    let out = run(
        &ws,
        &[
            "run",
            "--breaker",
            "1",
            "--max-sessions",
            "3",
            "--poll",
            "50ms",
            "--",
            "./limited.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches("reported a rate limit without a reset time; pausing every loop of this workspace for 0ms").count(),
        3,
        "{err}"
    );
    assert!(
        archived(&ws)
            .iter()
            .all(|s| s["wrap"]["reason"] == "rate-limited")
    );

    agent(&ws, "coded.sh", "exit 75");
    let out = run(
        &ws,
        &[
            "run",
            "--breaker",
            "1",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "./coded.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20));
    assert!(stderr(&out).contains("rate limit"));
}

pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn spawn_run(ws: &Ws, args: &[&str]) -> Child {
    run_command(ws, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_stops_the_agent_wraps_the_session_and_exits_143() {
    let ws = git_workspace(&[("alpha", 5)]);
    agent(
        &ws,
        "slow.sh",
        "orchestrator checkpoint started --advance 1 >/dev/null\ntouch started\nsleep 60",
    );
    let began = Instant::now();
    let child = spawn_run(
        &ws,
        &["run", "--grace", "5s", "--poll", "50ms", "--", "./slow.sh"],
    );
    wait_for("the agent to start", || ws.file("started").exists());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "the agent was stopped, not waited for"
    );
    assert!(
        final_line(&out).contains("stop=terminated sessions=1"),
        "{out:?}"
    );
    let sessions = archived(&ws);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["wrap"]["reason"], "interrupted");
    assert_eq!(ws.progress("alpha"), (1, 5));
    assert!(ws.files_in(".orchestrator/sessions/active").is_empty());
    assert_eq!(
        ws.task("alpha")["claim"],
        Value::Null,
        "the claim is released"
    );
}

#[test]
fn four_loops_in_parallel_do_every_task_exactly_once() {
    let tasks: Vec<(String, u64)> = (0..20).map(|i| (format!("task_{i:02}"), 1)).collect();
    let refs: Vec<(&str, u64)> = tasks.iter().map(|(id, n)| (id.as_str(), *n)).collect();
    let ws = git_workspace(&refs);
    agent(
        &ws,
        "one.sh",
        "echo \"$ORCHESTRATOR_TASK $ORCHESTRATOR_SESSION\" >> claims.log\norchestrator checkpoint done --advance 1 --tokens 1000 >/dev/null",
    );
    let loops: Vec<Child> = (0..4)
        .map(|i| {
            let name = format!("worker{i}");
            spawn_run(
                &ws,
                &["run", "--agent", &name, "--poll", "50ms", "--", "./one.sh"],
            )
        })
        .collect();
    let mut total_sessions = 0;
    for child in loops {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let line = final_line(&out);
        assert!(line.contains("stop=all_done"), "{line}");
        let sessions: u64 = line
            .split(' ')
            .find_map(|kv| kv.strip_prefix("sessions="))
            .unwrap()
            .parse()
            .unwrap();
        total_sessions += sessions;
    }
    assert_eq!(total_sessions, 20);
    for (id, _) in &tasks {
        assert_eq!(ws.task(id)["status"], "done", "{id}");
    }
    // Every task was worked on by exactly one session.
    let mut claimed: Vec<String> = ws
        .read("claims.log")
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    claimed.sort();
    let expected: Vec<String> = tasks.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(claimed, expected);
    let mut archived_tasks: Vec<String> = archived(&ws)
        .iter()
        .map(|s| s["task"].as_str().unwrap().to_string())
        .collect();
    archived_tasks.sort();
    assert_eq!(archived_tasks, expected);
    assert_eq!(
        git(ws.path(), &["log", "--format=%s"])
            .lines()
            .filter(|s| s.starts_with("Session Wrap:"))
            .count(),
        20
    );
}

#[test]
fn status_lists_every_live_session() {
    let ws = Ws::seed();
    ws.ok(&["task", "add", "other", "--title", "other task"]);
    ws.ok(&["start", "--agent", "claude"]);
    ws.ok(&["start", "--agent", "codex"]);
    ws.expect(
        10,
        &[
            "checkpoint",
            "x",
            "--tokens",
            "160000",
            "--session",
            "session_20251106_001355",
        ],
    );
    let out = ws.expect(10, &["status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("session=session_20251106_001355 agent=claude task=integrate_sessions_101_140 level=warn used=160000"),
        "{out}"
    );
    assert!(
        lines[1]
            .starts_with("session=session_20251106_001355_2 agent=codex task=other level=unknown"),
        "{out}"
    );
    assert!(
        lines[2].contains("2 live sessions; worst level warn"),
        "{out}"
    );
    let v = ws.json(10, &["status"]);
    assert_eq!(v["level"], "warn");
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(v["sessions"][1]["agent"], "codex");
}

#[test]
fn bad_run_arguments_are_refused_before_anything_runs() {
    let ws = Ws::seed();
    let before = ws.snapshot();
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "the command is required");
    let out = ws.run(&["run", "--grace", "soon", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ws.run(&["run", "--breaker", "0", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = ws.refused(&["run", "--agent", "bad name", "--", "true"]);
    assert!(err.contains("agent name"), "{err}");
    assert_eq!(ws.snapshot(), before);
    // A command that does not exist: the session it got is wrapped, and the error names it.
    let err = ws.refused(&["run", "--", "./no-such-agent"]);
    assert!(err.contains("no-such-agent"), "{err}");
    assert!(ws.files_in(".orchestrator/sessions/active").is_empty());
    assert_eq!(ws.task("integrate_sessions_101_140")["claim"], Value::Null);
}

#[test]
fn the_loop_renews_its_agents_lease_through_the_journal_without_rewriting_the_stack() {
    let ws = git_workspace(&[("alpha", 5), ("beta", 5)]);
    agent(
        &ws,
        "slow.sh",
        "touch started\nwhile [ ! -f go ]; do sleep 0.05; done\norchestrator checkpoint done --progress 5 --tokens 10",
    );
    // The real clock: a renewal moves the lease only as time passes.
    let mut cmd = run_command(
        &ws,
        &[
            "run",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "./slow.sh",
        ],
    );
    cmd.env_remove("ORCHESTRATOR_NOW")
        .env("ORCHESTRATOR_TEST_LEASE_RENEWAL_MS", "200");
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the agent", || ws.file("started").exists());
    let stack = ws.read("task_stack.json");
    let journal = ws.file(".orchestrator/journal.jsonl");
    let lease_records = || {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"lease\""))
            .count()
    };
    wait_for("two renewals", || lease_records() >= 2);
    // Renewed in the journal; the stack itself untouched however large it is.
    assert_eq!(ws.read("task_stack.json"), stack);
    let renewed: Value = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .rfind(|l| l.contains("\"lease\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(renewed["lease"]["task"], "alpha", "{renewed}");
    // Readers see the renewed lease, folded over the stack.
    let shown = ws
        .command(&["task", "show", "alpha", "--json"])
        .env_remove("ORCHESTRATOR_NOW")
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        shown["task"]["claim"]["lease_expires"], renewed["lease"]["lease_expires"],
        "{shown}"
    );
    ws.write("go", "");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.progress("alpha"), (5, 5));
}

//! `orchestrator run` left alone (issue 14): the agent command checked before claiming,
//! timeouts, quota resets read from the agents' own wordings, stop and resume, the notifier,
//! the breaker across restarts. Fake agents are shell scripts; waits are recorded through
//! `ORCHESTRATOR_SLEEP_LOG`, never slept.

use crate::common::*;
use crate::run::{
    agent, archived, final_line, git_workspace, run, run_command, spawn_run, stderr, wait_for,
};
use serde_json::{Value, json};

fn set_run_settings(ws: &Ws, settings: Value) {
    let mut stack = ws.stack();
    stack["settings"]["run"] = settings;
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
}

/// `run` with its waits recorded in `sleeps.log` instead of slept.
/// `run` with its waits recorded instead of slept, on a machine whose zone is UTC.
fn run_logged(ws: &Ws, args: &[&str]) -> std::process::Output {
    run_command(ws, args)
        .env("TZ", "UTC")
        .env("ORCHESTRATOR_SLEEP_LOG", ws.file("sleeps.log"))
        .output()
        .unwrap()
}

fn sleeps(ws: &Ws) -> Vec<f64> {
    std::fs::read_to_string(ws.file("sleeps.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn an_agent_command_that_cannot_run_claims_nothing() {
    let ws = git_workspace(&[("alpha", 2)]);
    ws.write("not_executable.sh", "#!/bin/sh\nexit 0\n");
    std::fs::create_dir(ws.file("a_directory")).unwrap();
    let before = ws.snapshot();
    for (command, problem) in [
        ("/nonexistent/agent", "`/nonexistent/agent` does not exist"),
        ("./no-such-agent", "`./no-such-agent` does not exist"),
        (
            "no-such-agent-xyz",
            "`no-such-agent-xyz` is not found on PATH",
        ),
        ("./not_executable.sh", "is not executable"),
        ("./a_directory", "is not a file"),
    ] {
        let out = run(&ws, &["run", "--", command]);
        assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(problem), "{command}: {err}");
        assert!(err.contains("no session was started"), "{err}");
        assert_eq!(ws.snapshot(), before, "{command}: something was written");
    }
    assert_eq!(ws.task("alpha")["claim"], Value::Null);
}

#[test]
fn a_hung_agent_is_timed_out_and_a_silent_one_is_stopped_as_idle() {
    let ws = git_workspace(&[("alpha", 5)]);
    // It prints, so only the session timeout can stop it.
    agent(
        &ws,
        "hung.sh",
        "cat >/dev/null\nwhile true; do echo working; sleep 0.2; done",
    );
    let out = run(
        &ws,
        &[
            "run",
            "--session-timeout",
            "1s",
            "--grace",
            "1s",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "./hung.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    let sessions = archived(&ws);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["wrap"]["reason"], "timeout");
    assert!(
        stderr(&out).contains("--session-timeout"),
        "{}",
        stderr(&out)
    );

    // Silent, and it ignores SIGTERM: SIGKILL follows after the grace.
    agent(
        &ws,
        "silent.sh",
        "trap '' TERM\ncat >/dev/null\necho started\nsleep 30",
    );
    set_run_settings(&ws, json!({"idle_timeout": "1s"}));
    let out = run(
        &ws,
        &[
            "run",
            "--grace",
            "1s",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "./silent.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    let reasons: Vec<Value> = archived(&ws)
        .iter()
        .map(|s| s["wrap"]["reason"].clone())
        .collect();
    assert!(reasons.contains(&json!("idle")), "{reasons:?}");
    assert!(
        stderr(&out).contains("printed nothing for 1s"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ws.task("alpha")["claim"], Value::Null);
}

#[test]
fn a_quota_reset_time_is_waited_for_by_every_loop_and_resume_ends_it() {
    let ws = git_workspace(&[("alpha", 5)]);
    set_run_settings(&ws, json!({"max_backoff_seconds": 86400}));
    // Claude Code's wording as reported in anthropics/claude-code #79136 (v2.1.215), with the
    // zone the issue quotes: "You've hit your session limit · resets 5pm (UTC)", then the
    // `/login` line.
    agent(
        &ws,
        "claude.sh",
        "cat >/dev/null\necho \"You've hit your session limit · resets 5pm (UTC)\" >&2\necho '/login to switch to an API usage-billed account.' >&2\nexit 1",
    );
    let out = run_logged(
        &ws,
        &[
            "run",
            "--max-sessions",
            "2",
            "--poll",
            "50ms",
            "--",
            "./claude.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    // T0 is 00:13:55 UTC: 16h46m05s to 5pm.
    assert_eq!(sleeps(&ws), vec![60365.0]);
    let err = stderr(&out);
    assert!(err.contains("resets at 2025-11-06T17:00:00Z"), "{err}");
    assert!(err.contains("resuming at"), "{err}");
    assert!(
        archived(&ws)
            .iter()
            .all(|s| s["wrap"]["reason"] == "rate-limited")
    );

    // Another loop of the workspace (another agent name, same account) waits too.
    agent(&ws, "other.sh", "cat >/dev/null");
    let out = run_logged(
        &ws,
        &[
            "run",
            "--agent",
            "other",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "./other.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert_eq!(sleeps(&ws), vec![60365.0, 60365.0]);

    let status = ws.json(0, &["status"]);
    assert_eq!(status["paused_until"], "2025-11-06T17:00:00Z");
    assert!(
        ws.ok(&["status"])
            .contains("paused:   until 2025-11-06T17:00:00Z")
    );
    let resumed = ws.ok(&["resume"]);
    assert!(
        resumed.starts_with("stop_removed=false pause_removed=true"),
        "{resumed}"
    );
    assert_eq!(ws.json(0, &["status"])["paused_until"], Value::Null);
}

#[test]
fn a_reset_later_than_the_longest_wait_is_bounded_and_no_time_means_doubling() {
    let ws = git_workspace(&[("alpha", 5)]);
    // The 2025 Codex wording (research notes, §6.3): a wait, not a clock time.
    agent(
        &ws,
        "codex.sh",
        "cat >/dev/null\necho \"You've hit your usage limit. To get more access now, send a request to your admin or try again in 3 days 6 hours 57 minutes.\"\nexit 1",
    );
    let out = run_logged(
        &ws,
        &[
            "run",
            "--max-sessions",
            "2",
            "--poll",
            "50ms",
            "--",
            "./codex.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert_eq!(sleeps(&ws), vec![3600.0], "bounded by max_backoff_seconds");
    ws.ok(&["resume"]);
    std::fs::remove_file(ws.file("sleeps.log")).unwrap();

    // [CC-HOOKS]'s StopFailure example text: a rate limit with no reset time.
    agent(
        &ws,
        "limited.sh",
        "cat >/dev/null\necho 'API Error: Rate limit reached' >&2\nexit 1",
    );
    set_run_settings(&ws, json!({"backoff_seconds": 5}));
    let out = run_logged(
        &ws,
        &[
            "run",
            "--max-sessions",
            "3",
            "--poll",
            "50ms",
            "--",
            "./limited.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert_eq!(sleeps(&ws), vec![5.0, 10.0]);
}

#[test]
fn rate_limit_words_the_agent_echoed_do_not_trigger_a_backoff() {
    let ws = git_workspace(&[("alpha", 5)]);
    // A source file that talks about rate limits, shown by the agent as part of its work.
    ws.write(
        "limiter.rs",
        "// Retries on a rate limit: \"429 Too Many Requests\".\n// You've hit your usage limit. Try again at 3:28 PM.\nfn retry() {}\n",
    );
    agent(&ws, "reader.sh", "cat >/dev/null\ncat limiter.rs\nexit 0");
    let out = run_logged(
        &ws,
        &[
            "run",
            "--max-sessions",
            "2",
            "--poll",
            "50ms",
            "--",
            "./reader.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(sleeps(&ws).is_empty());
    assert!(!ws.file(".orchestrator/PAUSE").exists());
    assert!(
        archived(&ws)
            .iter()
            .all(|s| s["wrap"]["reason"] == "agent-exited")
    );

    // The same file shown before a crash whose own last lines say nothing of a limit.
    agent(
        &ws,
        "crasher.sh",
        "cat >/dev/null\ncat limiter.rs\nfor i in 1 2 3 4 5 6 7; do echo \"test $i failed\"; done\nexit 1",
    );
    let out = run_logged(
        &ws,
        &[
            "run",
            "--reset-breaker",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "./crasher.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(sleeps(&ws).is_empty());
    assert!(
        archived(&ws)
            .iter()
            .all(|s| s["wrap"]["reason"] != "rate-limited")
    );
}

#[test]
fn stop_waits_for_the_session_and_stop_now_wraps_it_at_once() {
    let ws = git_workspace(&[("alpha", 50)]);
    agent(
        &ws,
        "step.sh",
        "cat >/dev/null\ntouch started\nwhile [ ! -e go ]; do sleep 0.05; done\nrm -f go started\norchestrator checkpoint step --advance 1 >/dev/null\ntrue",
    );
    let child = spawn_run(&ws, &["run", "--poll", "50ms", "--", "./step.sh"]);
    wait_for("the agent to start", || ws.file("started").exists());
    let stop = ws.ok(&["stop"]);
    assert!(stop.starts_with("stop=after_session loops=1"), "{stop}");
    assert!(
        ws.ok(&["status", "--exit-zero"])
            .contains("stop:     pending")
    );
    assert_eq!(ws.json(0, &["status", "--exit-zero"])["stop_pending"], true);
    ws.write("go", "");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(22), "{}", stderr(&out));
    assert!(
        final_line(&out).contains("stop=stop_file sessions=1"),
        "{out:?}"
    );
    assert_eq!(
        ws.progress("alpha"),
        (1, 50),
        "the session finished its work"
    );

    ws.ok(&["resume"]);
    assert!(!ws.file(".orchestrator/STOP").exists());
    agent(&ws, "slow.sh", "cat >/dev/null\ntouch started\nsleep 60");
    let child = spawn_run(
        &ws,
        &["run", "--grace", "5s", "--poll", "50ms", "--", "./slow.sh"],
    );
    wait_for("the agent to start", || ws.file("started").exists());
    let stop = ws.ok(&["stop", "--now"]);
    assert!(stop.starts_with("stop=now loops=1"), "{stop}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(22), "{}", stderr(&out));
    let sessions = archived(&ws);
    assert_eq!(sessions.len(), 2);
    assert!(
        sessions
            .iter()
            .any(|s| s["wrap"]["reason"] == "interrupted")
    );
    assert!(
        ws.files_in(".orchestrator/runs")
            .iter()
            .all(|f| !f.ends_with(".pid"))
    );
    assert_eq!(ws.task("alpha")["claim"], Value::Null);
}

#[test]
fn the_notifier_gets_the_events_in_order_and_its_failure_is_not_fatal() {
    let ws = git_workspace(&[("alpha", 5)]);
    agent(
        &ws,
        "notify.sh",
        "read -r line\necho \"$ORCHESTRATOR_EVENT $(echo \"$line\" | sed 's/.*\"event\":\"\\([a-z_]*\\)\".*/\\1/')\" >> events.log",
    );
    // Rate limited once (no reset time), then a plain failure: the breaker trips.
    agent(
        &ws,
        "flaky.sh",
        "cat >/dev/null\nif [ ! -e once ]; then touch once; echo 'API Error: Rate limit reached' >&2; else echo boom >&2; fi\nexit 1",
    );
    set_run_settings(&ws, json!({"backoff_seconds": 0}));
    let notifier = ws.file("notify.sh").display().to_string();
    let out = run_logged(
        &ws,
        &[
            "run",
            "--breaker-failures",
            "1",
            "--on-event",
            &notifier,
            "--poll",
            "50ms",
            "--",
            "./flaky.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(24), "{}", stderr(&out));
    assert_eq!(
        ws.read("events.log"),
        "backoff backoff\nbreaker breaker\nstopped stopped\n"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--reset-breaker"),
        "the stop line says what to do"
    );

    std::fs::remove_file(ws.file("events.log")).unwrap();
    ws.ok(&["task", "done", "alpha"]);
    let out = run(
        &ws,
        &[
            "run",
            "--breaker-failures",
            "1",
            "--on-event",
            &notifier,
            "--poll",
            "50ms",
            "--",
            "./flaky.sh",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(24),
        "the breaker's count survived: {}",
        stderr(&out)
    );
    let out = run(
        &ws,
        &[
            "run",
            "--reset-breaker",
            "--on-event",
            &notifier,
            "--poll",
            "50ms",
            "--",
            "./flaky.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ws.read("events.log"),
        "breaker breaker\nstopped stopped\nall_done all_done\nstopped stopped\n"
    );

    // A notifier that fails is logged; the loop goes on.
    agent(&ws, "broken.sh", "exit 3");
    let broken = ws.file("broken.sh").display().to_string();
    let out = run(&ws, &["run", "--on-event", &broken, "--", "./flaky.sh"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("the notifier"), "{}", stderr(&out));
}

#[test]
fn the_breaker_survives_a_restart_until_reset() {
    let ws = git_workspace(&[("alpha", 5)]);
    agent(&ws, "idle.sh", "cat >/dev/null");
    let args = [
        "run",
        "--breaker-no-progress",
        "2",
        "--max-sessions",
        "1",
        "--poll",
        "50ms",
        "--",
        "./idle.sh",
    ];
    let out = run(&ws, &args);
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    let out = run(&ws, &args);
    assert_eq!(
        out.status.code(),
        Some(23),
        "the count went on across the restart"
    );
    let stop = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stop.contains("--reset-breaker"), "{stop}");
    // A cron restart stops at once, with no session.
    let out = run(&ws, &args);
    assert_eq!(out.status.code(), Some(23));
    assert!(final_line(&out).contains("sessions=0"), "{out:?}");
    let mut reset = args.to_vec();
    reset.insert(1, "--reset-breaker");
    let out = run(&ws, &reset);
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    // Another agent name has its own count.
    let out = run(
        &ws,
        &[
            "run",
            "--agent",
            "other",
            "--breaker",
            "1",
            "--",
            "./idle.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(23));
    assert_eq!(archived(&ws).len(), 4);
}

#[test]
fn the_session_line_shows_done_over_total_without_repeated_words() {
    let ws = git_workspace(&[("alpha", 20)]);
    agent(&ws, "idle.sh", "cat >/dev/null");
    let out = run(&ws, &["run", "--max-sessions", "1", "--", "./idle.sh"]);
    let err = stderr(&out);
    assert!(err.contains("agent on task alpha, 0/20 done"), "{err}");
    assert!(!err.contains("orchestrator run: orchestrator run"), "{err}");
}

#[test]
fn on_a_terminal_the_live_line_is_cleared_before_any_other_message() {
    let ws = git_workspace(&[("alpha", 20)]);
    // Past the shutdown level (85% of 200000), then deaf to it: the loop's messages come while
    // the live line is on the screen.
    agent(
        &ws,
        "deaf.sh",
        "cat >/dev/null\norchestrator checkpoint heavy --tokens 190000 >/dev/null\nsleep 5",
    );
    let run_line = format!(
        "{} run --max-sessions 1 --grace 1s --poll 50ms -- ./deaf.sh",
        BIN
    );
    // util-linux script(1) gives the loop a pseudo-terminal for stderr.
    let out = std::process::Command::new("script")
        .args(["-qec", &run_line, "/dev/null"])
        .current_dir(ws.path())
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                std::path::Path::new(BIN).parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", ws.home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("ORCHESTRATOR_NOW", ws.now())
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        screen.contains("tokens 95%"),
        "the live line was shown: {screen:?}"
    );
    assert!(screen.contains("is at the shutdown level"), "{screen:?}");
    for (at, _) in screen.match_indices("orchestrator run:") {
        let before = &screen[..at];
        assert!(
            before.is_empty() || before.ends_with('\n') || before.ends_with("\x1b[2K"),
            "a message runs into the live line: {:?}",
            &before[before.len().saturating_sub(60)..]
        );
    }
}

#[test]
fn stop_now_never_signals_a_process_that_took_a_dead_loops_pid() {
    let ws = git_workspace(&[("alpha", 5)]);
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    // The pid file a killed loop left, its number now another program's.
    ws.write(
        ".orchestrator/runs/run_20251106_001355_1.pid",
        &format!("{}\n", stranger.id()),
    );
    let stop = ws.ok(&["stop", "--now"]);
    assert!(stop.starts_with("stop=now loops=0"), "{stop}");
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the stranger was signalled"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

/// The issue's own example: a named zone that is not the machine's (the test runs with TZ=UTC),
/// read with the IANA database, in daylight saving time or not as on the reset's date.
#[test]
fn a_reset_time_in_a_named_zone_is_read_in_that_zone() {
    let ws = git_workspace(&[("alpha", 5)]);
    set_run_settings(&ws, json!({"max_backoff_seconds": 86400}));
    // Claude Code's error reference wording (code.claude.com/docs/en/errors, "Usage limits"),
    // with the zone in parentheses as anthropics/claude-code #21562 shows it.
    agent(
        &ws,
        "claude.sh",
        "cat >/dev/null\necho \"You've hit your session limit · resets 5pm (Europe/Paris)\" >&2\nexit 1",
    );
    let out = run_logged(
        &ws,
        &[
            "run",
            "--max-sessions",
            "2",
            "--poll",
            "50ms",
            "--",
            "./claude.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    // T0 is 2025-11-06 00:13:55 UTC; 5pm in Paris (CET, UTC+1) is 16:00 UTC: 15h46m05s.
    assert_eq!(sleeps(&ws), vec![56765.0]);
    assert!(stderr(&out).contains("resets at 2025-11-06T16:00:00Z"));
}

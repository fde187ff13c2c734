//! `orchestrator run -- CMD [ARGS...]`: the perpetual loop. Start a session on the next ready
//! task, run the agent command on it, watch its meters, make sure the session is wrapped when
//! the agent exits, and go on until a stop condition (`core::run::StopReason`).

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod unattended;
use unattended::{
    LoopOptions, PidFile, RunSpend, back_off, check_agent_command, honour_pause, save_breaker,
    start_breaker, timeout_message, wrap_reason,
};

use super::start::{StartArgs, check_agent_name, open_session};
use super::wrap::{WrapArgs, wrap_session};
use super::{Context, SessionArg};
use crate::agents::process::{AgentProcess, describe_exit};
use crate::clock;
use crate::core::budget::{Level, format_pct};
use crate::core::quota;
use crate::core::run::{Breaker, Placeholders, SessionOutcome, StopReason, expand, is_agent_work};
use crate::core::session::{Session, renewed_lease};
use crate::core::stack::{LeaseWrite, Status};
use crate::error::{Failure, code};
use crate::live_line;
use crate::meters;
use crate::store::Workspace;
use crate::store::postgres::pool::{self, PoolHandle};
use crate::store::undo::Undo;
use crate::wrap::vcs;

/// Drive an agent command session after session until the work is done or a stop condition
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Who is working; parallel loops on one workspace need different names
    #[arg(
        long,
        env = "ORCHESTRATOR_AGENT",
        default_value = "agent",
        value_name = "NAME"
    )]
    pub agent: String,
    /// Stop after this many sessions
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<u32>,
    /// Start no session after this long (like 8h; a running session finishes)
    #[arg(long, value_name = "D", value_parser = crate::core::run::parse_duration)]
    pub max_duration: Option<Duration>,
    /// Start no session once the sessions of this run cost more than this many US dollars (as
    /// priced from their transcripts; a running session finishes)
    #[arg(long, value_name = "USD", value_parser = crate::core::run::parse_usd)]
    pub max_cost: Option<f64>,
    /// Pause between sessions
    #[arg(long, value_name = "D", default_value = "0s", value_parser = crate::core::run::parse_duration)]
    pub sleep: Duration,
    /// How long the agent has to wrap after the shutdown level or a signal, before it is stopped
    /// (SIGTERM, then SIGKILL after the same again)
    #[arg(long, value_name = "D", default_value = "2m", value_parser = crate::core::run::parse_duration)]
    pub grace: Duration,
    /// Stop after this many sessions in a row without progress, or agent failures in a row
    /// (sets both thresholds; default 3)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker: Option<u32>,
    /// Stop after this many sessions in a row without progress (default: --breaker)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_no_progress: Option<u32>,
    /// Stop after this many agent failures in a row (default: --breaker)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failures: Option<u32>,
    /// Start the breaker's counts from zero (they are kept across restarts of `run`)
    #[arg(long)]
    pub reset_breaker: bool,
    /// Stop a session that runs longer than this (like 2h): SIGTERM, then SIGKILL after --grace;
    /// the session is wrapped as `timeout` (default: settings.run.session_timeout)
    #[arg(long, value_name = "D", value_parser = crate::core::run::parse_duration)]
    pub session_timeout: Option<Duration>,
    /// Stop an agent that prints nothing for this long, the same way; wrapped as `idle`
    /// (default: settings.run.idle_timeout)
    #[arg(long, value_name = "D", value_parser = crate::core::run::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// A command told of the loop's events (stopped, breaker, backoff, all_done), split on
    /// spaces and run without a shell, with the event as JSON on stdin (default:
    /// settings.run.on_event)
    #[arg(long, value_name = "CMD")]
    pub on_event: Option<String>,
    /// How often the agent's usage is checked while it runs
    #[arg(long, value_name = "D", default_value = "1s", value_parser = crate::core::run::parse_duration)]
    pub poll: Duration,
    /// Token budget for each session (default: settings.budget.tokens)
    #[arg(long, value_name = "N")]
    pub budget: Option<u64>,
    /// Run this many loops in parallel, each session in its own git worktree, loop k as agent
    /// NAME-k; one summary line when all have stopped
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// The agent command and its arguments, run without a shell; `{brief}`, `{session}` and
    /// `{task}` in them are filled in
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(ctx: &Context, args: RunArgs) -> Result<u8> {
    let agent = args.agent.trim().to_string();
    check_agent_name(&agent)?;
    if args.budget == Some(0) {
        return Err(Failure::user("--budget must be above 0"));
    }
    if args.max_sessions == Some(0) {
        return Err(Failure::user("--max-sessions must be at least 1"));
    }
    let ws = ctx.workspace()?;
    // Refuse a broken stack before anything runs.
    let settings = ws.load_stack()?.settings.run;
    check_agent_command(&ws, &args.command)?;
    let mut options = LoopOptions::new(&args, &settings);
    let agents_pool = AgentsPool::for_run(&ws);
    options.pool = agents_pool.as_ref().map(|pool| pool.dir.clone());
    let signals = Signals::install()?;
    let run_id = format!(
        "run_{}_{}",
        ctx.now.format("%Y%m%d_%H%M%S"),
        std::process::id()
    );
    let _pid_file = PidFile::write(&ws, &run_id)?;
    let worktrees = args.workers > 1;
    if !worktrees {
        let end = run_loop(&ws, &args, &options, &signals, &agent, &run_id, false)?;
        let json = json!({
            "run": run_id,
            "stop": end.stop.as_str(),
            "sessions": end.sessions,
            "exit": end.stop.exit_code(),
            "cost_usd": crate::core::pricing::round_usd(end.spent_usd),
            "log": end.log,
            "message": end.stop.describe(),
        });
        let text = format!(
            "run={run_id} stop={} sessions={} exit={}\nStopped: {}.\n",
            end.stop.as_str(),
            end.sessions,
            end.stop.exit_code(),
            end.stop.describe()
        );
        ctx.emit(json, &text);
        return Ok(end.stop.exit_code());
    }
    // N loops in this process, each its own agent NAME-k, its own log and worktrees; they share
    // the signal flags, so Ctrl-C stops every agent and each session is wrapped.
    let results: Vec<Result<LoopEnd>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=args.workers)
            .map(|k| {
                let (ws, args, options, signals) = (&ws, &args, &options, &signals);
                let agent = format!("{agent}-{k}");
                let run_id = format!("{run_id}_w{k}");
                scope.spawn(move || run_loop(ws, args, options, signals, &agent, &run_id, true))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker loop panicked")))
            })
            .collect()
    });
    let mut ends = Vec::new();
    for result in results {
        ends.push(result?);
    }
    // The run's stop is the most telling of its loops': the highest exit code.
    let worst = ends
        .iter()
        .max_by_key(|e| e.stop.exit_code())
        .map(|e| e.stop)
        .unwrap_or(StopReason::AllDone);
    let sessions: u32 = ends.iter().map(|e| e.sessions).sum();
    let json = json!({
        "run": run_id,
        "workers": args.workers,
        "stop": worst.as_str(),
        "sessions": sessions,
        "exit": worst.exit_code(),
        "cost_usd": crate::core::pricing::round_usd(ends.iter().map(|e| e.spent_usd).sum()),
        "logs": ends.iter().map(|e| &e.log).collect::<Vec<_>>(),
        "loops": ends.iter().map(|e| json!({"agent": e.agent, "stop": e.stop.as_str(), "sessions": e.sessions})).collect::<Vec<_>>(),
        "message": worst.describe(),
    });
    let text = format!(
        "run={run_id} workers={} stop={} sessions={sessions} exit={}\nStopped: {}.\n",
        args.workers,
        worst.as_str(),
        worst.exit_code(),
        worst.describe()
    );
    ctx.emit(json, &text);
    Ok(worst.exit_code())
}

/// The fleet pool a run's agents connect through: each `checkpoint` they run is a process of
/// its own, and a new server session costs the server more than the checkpoint does.
struct AgentsPool {
    dir: PathBuf,
    /// Served by this run, on a thread of its own, until the run ends; `None` when a pool
    /// already listened there (`fleet pool`, or another run on this workspace).
    _hosted: Option<PoolHandle>,
}

impl AgentsPool {
    /// On the fleet store, a pool in `.orchestrator/pool`: this run's own, or the one already
    /// there. Without one, agents connect to the server themselves, as before: a pool only
    /// saves time, so failing to make one is no reason to stop.
    fn for_run(ws: &Workspace) -> Option<AgentsPool> {
        let fleet = ws.fleet()?;
        if let Some(dir) = pool::from_env() {
            // Agents inherit it with the rest of the environment.
            tracing::debug!("agents use the pool in {} they inherit", dir.display());
            return None;
        }
        let dir = ws.state_dir().join("pool");
        match pool::spawn(fleet.target(), &dir) {
            Ok(handle) => Some(AgentsPool {
                dir,
                _hosted: Some(handle),
            }),
            Err(err) if pool::is_live(&dir) => {
                tracing::debug!("{err:#}: agents use that pool");
                Some(AgentsPool { dir, _hosted: None })
            }
            Err(err) => {
                tracing::info!("agents connect to the fleet store themselves: {err:#}");
                None
            }
        }
    }
}

/// How one loop ended.
struct LoopEnd {
    agent: String,
    stop: StopReason,
    sessions: u32,
    log: std::path::PathBuf,
    /// What its sessions cost, as their records price them.
    spent_usd: f64,
}

/// One loop: sessions of `agent` until a stop condition; `worktrees`: each in its own worktree.
fn run_loop(
    ws: &Workspace,
    args: &RunArgs,
    options: &LoopOptions,
    signals: &Signals,
    agent: &str,
    run_id: &str,
    worktrees: bool,
) -> Result<LoopEnd> {
    let mut log = RunLog::create(ws, run_id)?;
    log.event(
        "run_started",
        json!({"agent": agent, "command": args.command, "pid": std::process::id()}),
    );
    let mut runner = Runner {
        ws,
        args,
        options,
        signals,
        agent,
        log,
    };
    let began = Instant::now();
    let mut loop_state = LoopState {
        sessions: 0,
        breaker: start_breaker(ws, agent, args)?,
        rate_limits_in_row: 0,
        honoured_pause: None,
        spent_usd: 0.0,
        unreachable_in_row: 0,
    };
    let stop = loop {
        if let Some(reason) =
            stop_before_session(ws, args, &options.spent, signals, &loop_state, began)
        {
            break reason;
        }
        if honour_pause(&mut runner, &mut loop_state.honoured_pause)? {
            continue;
        }
        let now = clock::now()?;
        let session_ctx = Context::inner_for(ws, now);
        let start = StartArgs {
            task: None,
            agent: agent.to_string(),
            budget: args.budget,
            transcript: None,
            transcript_origin: None,
            worktree: worktrees,
            in_place: false,
        };
        let (brief, brief_text) = match open_session(&session_ctx, start) {
            Ok(opened) => opened,
            Err(err) if crate::error::exit_code(&err) == code::NOTHING_TO_DO => {
                match idle(ws, now)? {
                    Idle::AllDone => break StopReason::AllDone,
                    Idle::Blocked => break StopReason::NothingReady,
                    Idle::OthersWorking => {
                        runner
                            .log
                            .event("waiting", json!({"why": format!("{err:#}")}));
                        pause(ws, signals, args.sleep.max(Duration::from_secs(1)));
                        continue;
                    }
                }
            }
            // The fleet store is down or restarting: nothing was claimed; wait and try again.
            Err(err) if crate::error::exit_code(&err) == code::UNREACHABLE => {
                loop_state.unreachable_in_row += 1;
                let wait = unreachable_wait(loop_state.unreachable_in_row);
                runner.log.event(
                    "store_unreachable",
                    json!({"error": format!("{err:#}"), "retry_in_seconds": wait.as_secs()}),
                );
                live_line::say(&format!(
                    "the fleet store cannot be reached; trying again in {}",
                    describe_wait(wait)
                ));
                pause(ws, signals, wait);
                continue;
            }
            Err(err) => {
                runner
                    .log
                    .event("error", json!({"error": format!("{err:#}")}));
                return Err(err);
            }
        };
        loop_state.unreachable_in_row = 0;
        loop_state.sessions += 1;
        let session_id = brief["session"].as_str().unwrap_or_default().to_string();
        let task = brief["task"].as_str().unwrap_or_default().to_string();
        live_line::say(&format!(
            "session {session_id}: {agent} on task {task}, {}/{} done",
            brief["progress"]["done"], brief["progress"]["total"]
        ));
        runner.log.event(
            "session_started",
            json!({"session": session_id, "task": task, "progress": brief["progress"]}),
        );
        let (outcome, final_output) = drive(&mut runner, &session_id, &task, &brief_text)?;
        let cost = session_cost(ws, &session_id);
        loop_state.spent_usd += cost;
        options.spent.add(cost);
        tell_merge_conflict(&mut runner, &session_id);
        let tripped = loop_state.breaker.record(outcome);
        save_breaker(ws, agent, &loop_state.breaker);
        if let Some(reason) = tripped {
            break reason;
        }
        if outcome.rate_limited {
            loop_state.rate_limits_in_row += 1;
            back_off(&mut runner, loop_state.rate_limits_in_row, &final_output)?;
        } else {
            loop_state.rate_limits_in_row = 0;
            pause(ws, signals, args.sleep);
        }
    };

    if matches!(stop, StopReason::NoProgress | StopReason::AgentFailures) {
        let breaker = &loop_state.breaker;
        runner.notify(
            "breaker",
            json!({"reason": stop.as_str(), "without_progress": breaker.without_progress,
                   "failures": breaker.failures, "message": stop.describe()}),
        );
    }
    if stop == StopReason::AllDone {
        runner.notify(
            "all_done",
            json!({"sessions": loop_state.sessions, "message": stop.describe()}),
        );
    }
    // A wrap whose push failed for good left its commit here: no later wrap of this loop will
    // carry it to the shared remote, so the loop does as it stops.
    if let Ok(stack) = ws.load_view()
        && let Some(pushed) = crate::wrap::publish::push_leftovers(ws, &stack.settings)
    {
        if pushed["result"] == "pushed" {
            live_line::say(&format!(
                "pushed commits left unpushed to {}/{}",
                pushed["remote"].as_str().unwrap_or_default(),
                pushed["branch"].as_str().unwrap_or_default()
            ));
        }
        runner.log.event("pushed", pushed);
    }
    runner.log.event(
        "stopped",
        json!({"reason": stop.as_str(), "sessions": loop_state.sessions, "exit": stop.exit_code()}),
    );
    runner.notify(
        "stopped",
        json!({"reason": stop.as_str(), "sessions": loop_state.sessions, "exit": stop.exit_code(), "message": stop.describe()}),
    );
    Ok(LoopEnd {
        agent: agent.to_string(),
        stop,
        sessions: loop_state.sessions,
        log: runner.log.path.clone(),
        spent_usd: loop_state.spent_usd,
    })
}

struct LoopState {
    sessions: u32,
    breaker: Breaker,
    rate_limits_in_row: u32,
    /// The end of the last pause this loop waited out: with a fixed test clock, the same
    /// record must not be waited for twice.
    honoured_pause: Option<chrono::DateTime<chrono::Utc>>,
    /// What this run's sessions cost, as their records price them.
    spent_usd: f64,
    /// Claims in a row that found the fleet store unreachable: the wait before the next.
    unreachable_in_row: u32,
}

/// What a finished session cost, from its archived record (0 when it recorded no cost).
fn session_cost(ws: &Workspace, session_id: &str) -> f64 {
    ws.load_session(&ws.archive_path(session_id))
        .ok()
        .and_then(|s| s.cost)
        .and_then(|c| c.cost_usd)
        .unwrap_or(0.0)
}

fn stop_before_session(
    ws: &Workspace,
    args: &RunArgs,
    spent: &RunSpend,
    signals: &Signals,
    state: &LoopState,
    began: Instant,
) -> Option<StopReason> {
    if let Some(reason) = signals.received() {
        // `orchestrator stop --now` writes the stop file, then signals: a stop, not a crash.
        if reason == StopReason::Terminated && ws.stop_file().exists() {
            return Some(StopReason::StopFile);
        }
        return Some(reason);
    }
    if ws.stop_file().exists() {
        return Some(StopReason::StopFile);
    }
    // Counts carried over from an earlier run (a restart does not reset the breaker).
    if let Some(reason) = state.breaker.tripped() {
        return Some(reason);
    }
    if args.max_sessions.is_some_and(|max| state.sessions >= max) {
        return Some(StopReason::MaxSessions);
    }
    if args.max_duration.is_some_and(|max| began.elapsed() >= max) {
        return Some(StopReason::MaxDuration);
    }
    if args.max_cost.is_some_and(|max| spent.usd() > max) {
        return Some(StopReason::MaxCost);
    }
    None
}

enum Idle {
    AllDone,
    /// Other live sessions hold the remaining work; it may come back or unblock.
    OthersWorking,
    Blocked,
}

fn idle(ws: &Workspace, now: chrono::DateTime<chrono::Utc>) -> Result<Idle> {
    let stack = ws.load_stack()?;
    if stack
        .tasks
        .iter()
        .all(|t| matches!(t.status, Status::Done | Status::Skipped))
    {
        return Ok(Idle::AllDone);
    }
    let others = ws
        .active_sessions()?
        .iter()
        .any(|s| s.is_wrapping() || !s.is_stale(now))
        // On a fleet store: sessions on other machines hold tasks, or a ready task was being
        // claimed by one at the moment this loop tried (it may come back).
        || (ws.fleet().is_some()
            && (stack
                .tasks
                .iter()
                .any(|t| t.claim.as_ref().is_some_and(|c| c.is_live(now)))
                || crate::core::select::select_next(&stack, now).chosen.is_some()));
    Ok(if others {
        Idle::OthersWorking
    } else {
        Idle::Blocked
    })
}

/// Why the loop stopped the agent, which becomes the wrap's reason.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stopping {
    ShutdownLevel,
    Signal(StopReason),
    /// `--session-timeout`.
    Timeout,
    /// `--idle-timeout`.
    Idle,
}

/// The agent has been asked to stop; SIGKILL follows at `kill_at`.
#[derive(Clone, Copy)]
struct StopState {
    why: Stopping,
    kill_at: Instant,
    killed: bool,
}

impl StopState {
    fn new(why: Stopping, grace: Duration) -> Self {
        StopState {
            why,
            kill_at: Instant::now() + grace,
            killed: false,
        }
    }
}

/// How often a watched session's lease is renewed.
const LEASE_RENEWAL: Duration = Duration::from_secs(60);
/// Test-only: the renewal interval in milliseconds, so a test sees renewals without waiting
/// minutes.
const LEASE_RENEWAL_VAR: &str = "ORCHESTRATOR_TEST_LEASE_RENEWAL_MS";

fn lease_renewal() -> Duration {
    std::env::var(LEASE_RENEWAL_VAR)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(LEASE_RENEWAL, Duration::from_millis)
}

/// What every session of one run shares.
struct Runner<'a> {
    ws: &'a Workspace,
    args: &'a RunArgs,
    options: &'a LoopOptions,
    signals: &'a Signals,
    agent: &'a str,
    log: RunLog,
}

/// Runs the agent on one session until it exits, then makes sure the session is wrapped.
/// Gives the outcome and the agent's final output (where a quota reset time is read).
fn drive(
    runner: &mut Runner,
    session_id: &str,
    task: &str,
    brief: &str,
) -> Result<(SessionOutcome, String)> {
    let (ws, args, signals, agent) = (runner.ws, runner.args, runner.signals, runner.agent);
    let options = runner.options;
    let log = &mut runner.log;
    let started_session = ws.load_active(session_id)?;
    let placeholders = Placeholders {
        brief,
        session: session_id,
        task,
    };
    let (program, rest) = args
        .command
        .split_first()
        .context("the agent command is empty")?;
    let argv: Vec<String> = rest.iter().map(|a| expand(a, &placeholders)).collect();
    let mut env = vec![
        ("ORCHESTRATOR_SESSION", session_id.to_string()),
        ("ORCHESTRATOR_TASK", task.to_string()),
        ("ORCHESTRATOR_DIR", ws.root().display().to_string()),
        ("ORCHESTRATOR_AGENT", agent.to_string()),
        ("ORCHESTRATOR_RUN", log.run_id.clone()),
    ];
    if let Some(pool) = &options.pool {
        env.push(("ORCHESTRATOR_POOL", pool.display().to_string()));
    }
    // A session in its own worktree: the agent works there, and is told so.
    let workdir = crate::wrap::session_workdir(ws, &started_session);
    if started_session.worktree.is_some() {
        env.push(("ORCHESTRATOR_WORKTREE", workdir.display().to_string()));
    }
    let mut program = expand(program, &placeholders);
    // A relative path to the program means the workspace's, wherever the agent works.
    if program.contains('/') && Path::new(&program).is_relative() {
        program = ws.root().join(&program).display().to_string();
    }
    let mut process = match AgentProcess::spawn(&program, &argv, &env, &workdir, brief.to_string())
    {
        Ok(process) => process,
        Err(err) => {
            // The session must not stay claimed by an agent that never ran.
            finish_session(
                ws,
                session_id,
                "agent-failed-to-start",
                &format!("{err:#}"),
                None,
            )?;
            return Err(err);
        }
    };
    log.event(
        "agent_started",
        json!({"session": session_id, "pid": process.pid(), "program": program}),
    );

    let display = std::io::stderr().is_terminal();
    let watch_started = Instant::now();
    let mut shutdown_seen: Option<Instant> = None;
    let mut stopping: Option<StopState> = None;
    let mut last_level = Level::Ok;
    let mut last_renewal = Instant::now();
    let renewal = lease_renewal();
    loop {
        if process.try_wait()?.is_some() {
            break;
        }
        if stopping.is_none()
            && let Some(reason) = signals.received()
        {
            let signal = if reason == StopReason::Interrupted {
                libc::SIGINT
            } else {
                libc::SIGTERM
            };
            live_line::say(&format!(
                "{}; passing it to the agent, which has {} to finish",
                reason.describe(),
                describe_wait(args.grace)
            ));
            process.signal(signal);
            log.event(
                "signal_forwarded",
                json!({"session": session_id, "signal": signal}),
            );
            stopping = Some(StopState::new(Stopping::Signal(reason), args.grace));
        }
        if stopping.is_none()
            && let Some(why) = options.timed_out(watch_started.elapsed(), process.silent_for())
        {
            live_line::say(&timeout_message(why, options, args.grace));
            process.signal(libc::SIGTERM);
            log.event(
                "agent_stopped",
                json!({"session": session_id, "signal": libc::SIGTERM, "why": wrap_reason(why)}),
            );
            stopping = Some(StopState::new(why, args.grace));
        }
        if let Some(state) = stopping.as_mut()
            && !state.killed
            && Instant::now() >= state.kill_at
        {
            process.signal(libc::SIGKILL);
            log.event("agent_killed", json!({"session": session_id}));
            state.killed = true;
        }

        if let Some(session) = live_session(ws, session_id) {
            let level = watch_level(ws, &session, display, watch_started);
            if level != last_level {
                log.event(
                    "level",
                    json!({"session": session_id, "level": level.as_str()}),
                );
                last_level = level;
            }
            if level == Level::Shutdown && shutdown_seen.is_none() {
                shutdown_seen = Some(Instant::now());
                live_line::say(&format!(
                    "session {session_id} is at the shutdown level; the agent has {} to wrap",
                    describe_wait(args.grace)
                ));
            }
            if stopping.is_none() && shutdown_seen.is_some_and(|seen| seen.elapsed() >= args.grace)
            {
                live_line::say(&format!(
                    "the agent did not wrap within {}; stopping it",
                    describe_wait(args.grace)
                ));
                process.signal(libc::SIGTERM);
                log.event(
                    "agent_stopped",
                    json!({"session": session_id, "signal": libc::SIGTERM, "why": "shutdown level"}),
                );
                stopping = Some(StopState::new(Stopping::ShutdownLevel, args.grace));
            }
            if last_renewal.elapsed() >= renewal {
                // A workspace lock that stays busy (another process hangs holding it) must not
                // end the loop under a working agent: the lease still has most of its time, so
                // the next poll tries again.
                match renew_lease(ws, session_id) {
                    Ok(()) => last_renewal = Instant::now(),
                    Err(err) => tracing::warn!("cannot renew the lease of {session_id}: {err:#}"),
                }
            }
        }
        std::thread::sleep(args.poll);
    }
    let (status, tail) = process.finish()?;
    live_line::clear();
    let exit = describe_exit(status);
    log.event(
        "agent_exited",
        json!({"session": session_id, "exit": exit, "code": status.code()}),
    );

    let settings = through_outages("read the stack", || ws.load_stack())?
        .settings
        .run;
    let rate_limited = settings.is_rate_limited(status.code(), &tail);
    let (reason, summary) = match stopping.map(|state| state.why) {
        Some(Stopping::ShutdownLevel) => (
            "shutdown-level",
            format!(
                "The agent passed the shutdown level and did not wrap within the grace period; orchestrator run stopped it ({exit})."
            ),
        ),
        Some(Stopping::Signal(reason)) => (
            "interrupted",
            format!(
                "The loop was {} and stopped the agent ({exit}).",
                reason.describe()
            ),
        ),
        Some(why @ (Stopping::Timeout | Stopping::Idle)) => (
            wrap_reason(why),
            format!(
                "{} ({exit}).",
                timeout_message(why, options, args.grace)
                    .replace("; stopping it", "; the loop stopped it")
            ),
        ),
        None if rate_limited => (
            "rate-limited",
            format!("The agent stopped on a rate limit ({exit}) without wrapping."),
        ),
        None => (
            "agent-exited",
            format!("The agent exited ({exit}) without wrapping."),
        ),
    };
    // The agent ended on its own: its last words go into the handoff.
    let output = stopping.is_none().then_some(tail.as_str());
    let wrapped_by_us = finish_session(ws, session_id, reason, &summary, output)?;
    if wrapped_by_us {
        live_line::say(&format!("{summary} Wrapped it as `{reason}`."));
    }

    let stack = through_outages("read the stack", || ws.load_stack())?;
    let task_now = stack.task(task);
    let units_moved = task_now.is_some_and(|t| {
        t.progress.done != started_session.progress_at_start.done
            || (t.status == Status::Done
                && started_session.progress_at_start.done < t.progress.total)
    });
    // A worktree kept after its wrap (a conflict) holds the agent's commits on its branch; one
    // integrated and removed has brought them onto the main work tree's branch.
    let commits_in = match &started_session.worktree {
        Some(wt) if wt.workdir.exists() => wt.workdir.as_path(),
        _ => ws.root(),
    };
    let commits = vcs::messages_since(commits_in, started_session.git_head_at_start.as_deref())
        .unwrap_or_else(|err| {
            tracing::warn!("cannot read the commits of the session: {err:#}");
            Vec::new()
        })
        .iter()
        .filter(|m| is_agent_work(m, session_id))
        .count();
    // The loop's own stop is not the agent failing; a crash, a non-zero exit or a hang is.
    let failed = match stopping.map(|state| state.why) {
        None => !status.success(),
        Some(why) => matches!(why, Stopping::Timeout | Stopping::Idle),
    };
    let outcome = SessionOutcome {
        progressed: units_moved || commits > 0,
        failed,
        rate_limited,
    };
    log.event(
        "session_ended",
        json!({
            "session": session_id, "task": task, "exit": exit, "wrapped_by_run": wrapped_by_us,
            "reason": reason, "progress": task_now.map(|t| t.progress), "agent_commits": commits,
            "progressed": outcome.progressed, "failed": failed, "rate_limited": rate_limited,
        }),
    );
    Ok((outcome, quota::final_output(&tail)))
}

/// A session whose worktree did not integrate cleanly needs a person: log it and notify.
fn tell_merge_conflict(runner: &mut Runner, session_id: &str) {
    let Ok(record) = runner.ws.load_session(&runner.ws.archive_path(session_id)) else {
        return;
    };
    let Some(integrate) = record.wrap.as_ref().and_then(|w| w.steps.integrate.clone()) else {
        return;
    };
    if integrate["result"] != "conflict" {
        return;
    }
    let message = format!(
        "task {} is blocked: {} conflicts with {} in {}; resolve it in its worktree, then run `orchestrator worktree integrate {}`",
        record.task,
        integrate["branch"].as_str().unwrap_or_default(),
        integrate["base"].as_str().unwrap_or_default(),
        integrate["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        record.task
    );
    live_line::say(&message);
    let fields = json!({"session": session_id, "task": record.task, "branch": integrate["branch"],
                        "paths": integrate["paths"], "message": message});
    runner.log.event("merge_conflict", fields.clone());
    runner.notify("merge_conflict", fields);
}

/// The session if it is still live (the agent has not wrapped it).
fn live_session(ws: &Workspace, session_id: &str) -> Option<Session> {
    if !ws.active_path(session_id).exists() {
        return None;
    }
    ws.load_active(session_id).ok().filter(|s| !s.is_wrapping())
}

fn watch_level(ws: &Workspace, session: &Session, display: bool, since: Instant) -> Level {
    let Ok(stack) = ws.load_stack() else {
        return Level::Ok;
    };
    let report = meters::current(ws, &stack, session);
    if display {
        let progress = &report.json["progress"];
        let usage = report.json["pct"].as_f64().unwrap_or(0.0);
        live_line::show(&format!(
            "{} {} {}/{} done, tokens {}%, {}, {}s",
            session.id,
            session.task,
            progress["done"],
            progress["total"],
            format_pct(usage),
            report.level,
            since.elapsed().as_secs()
        ));
    }
    report.level
}

/// Wraps the session unless the agent already did; true when this call wrapped it.
fn finish_session(
    ws: &Workspace,
    session_id: &str,
    reason: &str,
    summary: &str,
    agent_output: Option<&str>,
) -> Result<bool> {
    if !ws.active_path(session_id).exists() {
        return Ok(false);
    }
    let ctx = Context::inner_for(ws, clock::now()?);
    let args = WrapArgs {
        summary: Some(summary.to_string()),
        next: Vec::new(),
        done: false,
        no_backup: false,
        no_commit: false,
        reason: reason.to_string(),
        agent: None,
        session: SessionArg {
            session: Some(session_id.to_string()),
        },
        agent_output: agent_output.map(str::to_string),
    };
    // A fleet store that is down or restarting: the wrap's journal keeps what was done, and
    // the same wrap is tried again.
    through_outages(&format!("wrap session {session_id}"), || {
        wrap_session(&ctx, args.clone())
    })
    .with_context(|| format!("cannot wrap session {session_id} after its agent exited"))?;
    Ok(true)
}

/// How many times an operation is tried again while the fleet store cannot be reached (about
/// eight minutes in all), before the loop gives up.
const ATTEMPTS_UNREACHABLE: u32 = 12;

/// `op`, tried again while it fails because the fleet store cannot be reached (exit 6: it
/// wrote nothing, or its journal says what it did), waiting longer each time.
fn through_outages<T>(what: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(err)
                if crate::error::exit_code(&err) == code::UNREACHABLE
                    && attempt < ATTEMPTS_UNREACHABLE =>
            {
                attempt += 1;
                let wait = unreachable_wait(attempt);
                tracing::warn!(
                    "cannot {what}: {err:#}; trying again in {}",
                    describe_wait(wait)
                );
                std::thread::sleep(wait);
            }
            result => return result,
        }
    }
}

/// The wait before trying an unreachable fleet store again: doubling from a second, at most a
/// minute.
fn unreachable_wait(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The agent is alive while the loop watches it: keep its lease from running out even when it
/// goes long without a checkpoint, so no `start` recovers a session that is still working.
fn renew_lease(ws: &Workspace, session_id: &str) -> Result<()> {
    let lock = ws.lock()?;
    let Some(mut session) = live_session(ws, session_id) else {
        return Ok(());
    };
    // The session's own task only, and a journal record: the cost does not grow with the stack.
    let mut stack = ws.load_task_view(&session.task)?;
    let now = clock::now()?;
    let expires = renewed_lease(
        session.lease_expires,
        now,
        Session::lease(stack.settings.lease_minutes),
    );
    session.lease_expires = expires;
    // Rewriting the record folds the checkpoint log into it: both come back if the renewal fails.
    let mut undo = Undo::new();
    undo.before_replace(&ws.active_path(&session.id))?;
    undo.before_replace(&ws.checkpoint_log_path(&session.id))?;
    let holds = stack
        .task(&session.task)
        .and_then(|t| t.claim.as_ref())
        .is_some_and(|c| c.session == session.id);
    if holds {
        let write = LeaseWrite {
            task: session.task.clone(),
            session: session.id.clone(),
            token: session.fence,
            lease_expires: expires,
            end: false,
        };
        ws.renew_lease(&lock, &mut stack, &write)?;
    }
    ws.save_active(&lock, &session)?;
    undo.commit();
    Ok(())
}

/// Sleeps, waking early for a signal or the stop file.
fn pause(ws: &Workspace, signals: &Signals, duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if signals.received().is_some() || ws.stop_file().exists() {
            return;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
}

fn describe_wait(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", duration.as_millis())
    } else if secs < 120.0 {
        format!("{}s", secs.round())
    } else {
        format!("{}m", (secs / 60.0).round())
    }
}

/// SIGINT and SIGTERM, noted instead of killing the loop, so it can stop the agent and wrap.
struct Signals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Self> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupt))
            .context("cannot handle SIGINT")?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&terminate))
            .context("cannot handle SIGTERM")?;
        Ok(Signals {
            interrupt,
            terminate,
        })
    }

    fn received(&self) -> Option<StopReason> {
        if self.terminate.load(Ordering::Relaxed) {
            Some(StopReason::Terminated)
        } else if self.interrupt.load(Ordering::Relaxed) {
            Some(StopReason::Interrupted)
        } else {
            None
        }
    }
}

/// `.orchestrator/runs/<run-id>.jsonl`: one line per event, appended as it happens.
struct RunLog {
    run_id: String,
    path: std::path::PathBuf,
    file: File,
}

impl RunLog {
    fn create(ws: &Workspace, run_id: &str) -> Result<Self> {
        let dir = ws.runs_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{run_id}.jsonl"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(RunLog {
            run_id: run_id.to_string(),
            path,
            file,
        })
    }

    fn event(&mut self, event: &str, mut fields: Value) {
        let at = clock::now().map(clock::format).unwrap_or_default();
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), json!(event));
            map.insert("at".into(), json!(at));
        }
        let mut line = fields.to_string();
        line.push('\n');
        // The log is a record for humans; failing to write it must not stop the work.
        if let Err(err) = self.file.write_all(line.as_bytes()) {
            tracing::warn!("cannot write {}: {err}", self.path.display());
        }
    }
}

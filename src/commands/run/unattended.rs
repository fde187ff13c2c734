//! What `orchestrator run` needs to be left alone: the agent command checked before anything is
//! claimed, session and idle timeouts, the quota pause all loops share, the breaker kept across
//! restarts, the pid file `stop --now` signals, and the user's event notifier.

use anyhow::Result;
use chrono::{DateTime, Offset as _, Utc};
use serde_json::{Value, json};
use std::time::Duration;

use super::{RunArgs, Runner, Stopping, describe_wait};
use crate::agents::notify::notify;
use crate::agents::process::resolve_program;
use crate::clock;
use crate::core::quota::{LocalZone, reset_time};
use crate::core::run::{Breaker, RunSettings};
use crate::error::Failure;
use crate::live_line;
use crate::store::Workspace;
use crate::store::run_state::{BreakerCounts, Pause};

/// The run's options once flags and `settings.run` are combined.
pub(super) struct LoopOptions {
    pub session_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub on_event: Vec<String>,
    pub settings: RunSettings,
    /// What the run's sessions cost so far, over all its loops: `--max-cost` is the run's limit,
    /// not each worker's.
    pub spent: RunSpend,
    /// The fleet pool its agents' commands connect through (`ORCHESTRATOR_POOL`), if any.
    pub pool: Option<std::path::PathBuf>,
}

/// US dollars, counted in millionths so that loops on several threads can add to them.
#[derive(Default)]
pub(super) struct RunSpend(std::sync::atomic::AtomicU64);

impl RunSpend {
    pub fn add(&self, usd: f64) {
        let micro = (usd.max(0.0) * 1_000_000.0).round() as u64;
        self.0
            .fetch_add(micro, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn usd(&self) -> f64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1_000_000.0
    }
}

impl LoopOptions {
    pub fn new(args: &RunArgs, settings: &RunSettings) -> Self {
        let (session_timeout, idle_timeout) = settings.timeouts();
        LoopOptions {
            session_timeout: args.session_timeout.or(session_timeout),
            idle_timeout: args.idle_timeout.or(idle_timeout),
            on_event: match &args.on_event {
                Some(command) => command.split_whitespace().map(String::from).collect(),
                None => settings.on_event.clone(),
            },
            settings: settings.clone(),
            spent: RunSpend::default(),
            pool: None,
        }
    }

    /// Whether the agent has run too long, or been silent too long.
    pub fn timed_out(&self, running: Duration, silent: Duration) -> Option<Stopping> {
        if self.session_timeout.is_some_and(|limit| running >= limit) {
            Some(Stopping::Timeout)
        } else if self.idle_timeout.is_some_and(|limit| silent >= limit) {
            Some(Stopping::Idle)
        } else {
            None
        }
    }
}

pub(super) fn wrap_reason(why: Stopping) -> &'static str {
    match why {
        Stopping::Timeout => "timeout",
        Stopping::Idle => "idle",
        Stopping::ShutdownLevel => "shutdown-level",
        Stopping::Signal(_) => "interrupted",
    }
}

pub(super) fn timeout_message(why: Stopping, options: &LoopOptions, grace: Duration) -> String {
    let limit = |d: Option<Duration>| describe_wait(d.unwrap_or_default());
    match why {
        Stopping::Idle => format!(
            "the agent printed nothing for {} (--idle-timeout); stopping it (SIGKILL after {})",
            limit(options.idle_timeout),
            describe_wait(grace)
        ),
        _ => format!(
            "the session ran for {} (--session-timeout); stopping it (SIGKILL after {})",
            limit(options.session_timeout),
            describe_wait(grace)
        ),
    }
}

/// Refuses an agent command that cannot run, before any session is claimed.
pub(super) fn check_agent_command(ws: &Workspace, command: &[String]) -> Result<()> {
    let program = command.first().map(String::as_str).unwrap_or_default();
    // A placeholder in the program is only known per session.
    if program.contains('{') {
        return Ok(());
    }
    resolve_program(program, std::env::var_os("PATH").as_deref(), ws.root())
        .map(|_| ())
        .map_err(|problem| Failure::user(format!("{problem}; no session was started")))
}

/// `.orchestrator/runs/<run>.pid` while the loop runs, for `orchestrator stop --now`.
pub(super) struct PidFile<'a> {
    ws: &'a Workspace,
    run_id: String,
}

impl<'a> PidFile<'a> {
    pub fn write(ws: &'a Workspace, run_id: &str) -> Result<Self> {
        ws.write_run_pid(run_id)?;
        Ok(PidFile {
            ws,
            run_id: run_id.to_string(),
        })
    }
}

impl Drop for PidFile<'_> {
    fn drop(&mut self) {
        self.ws.remove_run_pid(&self.run_id);
    }
}

/// The breaker with this agent's counts from earlier runs, unless `--reset-breaker`.
pub(super) fn start_breaker(ws: &Workspace, agent: &str, args: &RunArgs) -> Result<Breaker> {
    let both = args.breaker.unwrap_or(3);
    let mut breaker = Breaker::with_limits(
        args.breaker_no_progress.unwrap_or(both),
        args.breaker_failures.unwrap_or(both),
    );
    if args.reset_breaker {
        ws.save_breaker(agent, BreakerCounts::default())?;
        return Ok(breaker);
    }
    let counts = ws.load_breaker(agent);
    breaker.without_progress = counts.without_progress;
    breaker.failures = counts.failures;
    Ok(breaker)
}

pub(super) fn save_breaker(ws: &Workspace, agent: &str, breaker: &Breaker) {
    let counts = BreakerCounts {
        without_progress: breaker.without_progress,
        failures: breaker.failures,
    };
    // The counts are a safeguard; failing to keep them must not stop the work.
    if let Err(err) = ws.save_breaker(agent, counts) {
        tracing::warn!("cannot keep the breaker's counts: {err:#}");
    }
}

/// The machine's zone: its offset now, and its IANA name from `TZ` or `/etc/localtime`.
fn local_zone() -> LocalZone {
    let offset = chrono::Local::now().offset().fix();
    let name = std::env::var("TZ")
        .ok()
        .map(|tz| tz.trim_start_matches(':').to_string())
        .filter(|tz| !tz.is_empty())
        .or_else(|| {
            let target = std::fs::read_link("/etc/localtime").ok()?;
            let text = target.to_string_lossy().into_owned();
            text.split_once("zoneinfo/").map(|(_, n)| n.to_string())
        });
    LocalZone { offset, name }
}

/// After a rate limit: the wait until the reset the agent printed (bounded by
/// `max_backoff_seconds`), else the doubling backoff, recorded as the workspace's pause.
pub(super) fn back_off(runner: &mut Runner, nth: u32, final_output: &str) -> Result<()> {
    let settings = &runner.options.settings;
    let now = clock::now()?;
    let resets = reset_time(final_output, now, &local_zone()).filter(|at| *at > now);
    let max = Duration::from_secs(settings.max_backoff_seconds);
    let wait = match resets {
        Some(at) => (at - now).to_std().unwrap_or_default().min(max),
        None => settings.backoff(nth),
    };
    let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
    let reason = final_output
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut pause = runner.ws.extend_pause(&Pause {
        until,
        reason: reason.clone(),
        agent: runner.agent.to_string(),
    })?;
    // On a fleet store the pause is the account's, for every loop on every machine.
    if runner.ws.fleet().is_some() {
        let account = runner.account()?;
        match runner.ws.fleet_set_pause(&account, &pause, now) {
            Ok(Some(shared)) => pause.until = pause.until.max(shared),
            Ok(None) => {}
            Err(err) => tracing::warn!("cannot share the pause through the fleet store: {err:#}"),
        }
    }
    let message = match resets {
        Some(at) => format!(
            "the agent hit a limit that resets at {}; pausing every loop of this workspace until {} ({})",
            clock::format(at),
            clock::format(pause.until),
            describe_wait(wait)
        ),
        None => format!(
            "the agent reported a rate limit without a reset time; pausing every loop of this workspace for {} (backoff {nth} in a row)",
            describe_wait(wait)
        ),
    };
    live_line::say(&message);
    let fields = json!({
        "seconds": wait.as_secs_f64(), "in_row": nth, "until": clock::format(pause.until),
        "resets_at": resets.map(clock::format), "agent_said": reason,
    });
    runner.log.event("backoff", fields.clone());
    let mut event = fields;
    event["message"] = json!(message);
    runner.notify("backoff", event);
    Ok(())
}

/// Waits out the workspace's pause, if one is ahead; true when it waited (the caller checks the
/// stop conditions again).
pub(super) fn honour_pause(
    runner: &mut Runner,
    honoured: &mut Option<DateTime<Utc>>,
) -> Result<bool> {
    let now = clock::now()?;
    let shared = match runner.ws.fleet() {
        Some(_) => {
            let account = runner.account()?;
            runner.ws.fleet_pause(&account, now).unwrap_or_else(|err| {
                tracing::warn!("cannot read the account's pause from the fleet store: {err:#}");
                None
            })
        }
        None => None,
    };
    let local = runner.ws.load_pause().filter(|p| p.until > now);
    let Some(pause) = [local, shared]
        .into_iter()
        .flatten()
        .max_by_key(|p| p.until)
    else {
        return Ok(false);
    };
    if pause.until <= now || *honoured == Some(pause.until) {
        return Ok(false);
    }
    let max = Duration::from_secs(runner.options.settings.max_backoff_seconds);
    let wait = (pause.until - now).to_std().unwrap_or_default().min(max);
    live_line::say(&format!(
        "paused until {} ({} from now): {} reported a limit",
        clock::format(pause.until),
        describe_wait(wait),
        pause.agent
    ));
    runner.log.event(
        "paused",
        json!({"until": clock::format(pause.until), "seconds": wait.as_secs_f64()}),
    );
    let (ws, signals) = (runner.ws, runner.signals);
    let fleet = ws.fleet().is_some();
    let slept = clock::sleep(wait, || {
        signals.received().is_some()
            || ws.stop_file().exists()
            || (!fleet && !ws.pause_file().exists())
    });
    *honoured = Some(pause.until);
    if slept || fleet || !ws.pause_file().exists() {
        let at = clock::format(clock::now()?);
        live_line::say(&format!("resuming at {at}"));
        runner.log.event("resumed", json!({"at": at}));
    }
    Ok(true)
}

impl Runner<'_> {
    /// The account whose quota this loop's agent uses (see `Workspace::quota_account`).
    pub(super) fn account(&self) -> Result<String> {
        let settings = self.ws.load_view()?.settings;
        Ok(crate::store::Workspace::quota_account(
            &settings, self.agent,
        ))
    }

    /// Tells the user's notifier, if any; its failure is logged, never fatal.
    pub(super) fn notify(&mut self, event: &str, mut fields: Value) {
        if self.options.on_event.is_empty() {
            return;
        }
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), json!(event));
            map.insert("run".into(), json!(self.log.run_id));
            map.insert("agent".into(), json!(self.agent));
            map.insert("dir".into(), json!(self.ws.root().display().to_string()));
            map.insert(
                "at".into(),
                json!(clock::now().map(clock::format).unwrap_or_default()),
            );
        }
        if let Err(problem) = notify(&self.options.on_event, &fields, self.ws.root()) {
            tracing::warn!("{problem}");
            self.log
                .event("notify_failed", json!({"event": event, "error": problem}));
        }
    }
}

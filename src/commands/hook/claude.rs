//! `orchestrator hook claude`: answers one Claude Code hook event.
//!
//! Claude Code runs `hook claude` on its own events with the event as JSON on stdin (shapes:
//! hooks reference, code.claude.com/docs/en/hooks; research notes
//! /work/wt/research/issue10-hooks.md §1-2). At `SessionStart` the hook hands over the brief of
//! the agent's live session (and starts one only when `settings.agents.<name>.on_session_start`
//! says `start`); after each tool use, failed tool use (a Bash call exiting non-zero, such as
//! `checkpoint` at warn or shutdown) and prompt it states the level when it is warn or shutdown;
//! `PreCompact` records the figure and the compaction for the handoff; `SessionEnd` releases or
//! wraps the session (`on_session_end`). Calls made inside a subagent (`agent_id` in the input)
//! get nothing: the main thread owns the session.
//!
//! Whatever happens, the hook exits 0, within its deadline, and prints one hook JSON object or
//! nothing ("Exit code 0 with no output means the hook has no decision to report", which no
//! version reports as a hook error): a broken hook must never break the agent's session, so
//! problems only go to stderr. Text for the agent states facts, as the reference advises ("Write
//! the text as factual statements rather than imperative system instructions").

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::commands::start::{StartArgs, brief, open_session};
use crate::commands::wrap::{WrapArgs, wrap_session};
use crate::commands::{Context, SessionArg};
use crate::core::budget::{Level, format_pct};
use crate::core::meters::{OnSessionEnd, OnSessionStart, TOKENS};
use crate::core::session::{Compaction, Session, TokenReading, TranscriptOrigin};
use crate::core::stack::LeaseWrite;
use crate::core::text::{json_escape_controls, strip_controls};
use crate::error::Failure;
use crate::meters::{self, Tokens, kilo};
use crate::store::Workspace;
use crate::store::undo::Undo;

/// Handle one Claude Code hook event (JSON on stdin); prints hook JSON or nothing, exits 0
#[derive(Debug, Args)]
pub struct HookClaudeArgs {
    /// The agent name of the sessions the hook starts and follows
    #[arg(
        long,
        env = "ORCHESTRATOR_AGENT",
        default_value = "claude",
        value_name = "NAME"
    )]
    pub agent: String,
}

/// The part of a Claude Code hook event the hook uses; other fields are ignored. Only
/// `hook_event_name` is required: the reference's examples leave fields out per event.
#[derive(Debug, Deserialize)]
struct HookEvent {
    hook_event_name: String,
    #[serde(default)]
    transcript_path: Option<PathBuf>,
    #[serde(default)]
    cwd: Option<PathBuf>,
    /// "Present only when the hook fires inside a subagent call" (2.1.69 on).
    #[serde(default)]
    agent_id: Option<String>,
    /// `SessionEnd`: `clear`, `resume`, `logout`, `prompt_input_exit`, `other`.
    #[serde(default)]
    reason: Option<String>,
    /// `PreCompact`: `manual` or `auto`.
    #[serde(default)]
    trigger: Option<String>,
    /// `SessionStart`: `startup`, `resume`, `clear`, `compact` or (2.1.214 on) `fork`.
    #[serde(default)]
    source: Option<String>,
}

/// How long the hook may take in all, unless [`DEADLINE_ENV`] says otherwise. Claude Code
/// cancels a command hook after its `timeout`; `hook install` writes 30 s
/// ([`crate::agents::claude_settings::HOOK_TIMEOUT_SECS`]), and hooks installed without one get
/// 60 s (before 2.1.3), 600 s (after) or 30 s (`UserPromptSubmit`). Answering within 25 s, with
/// room for the process to start, means the agent is never held up by us.
const DEADLINE: Duration = Duration::from_secs(25);
/// Seconds replacing [`DEADLINE`], for a hook given another `timeout` in the settings.
const DEADLINE_ENV: &str = "ORCHESTRATOR_HOOK_TIMEOUT";
/// Claude Code's events are a few KB, more with a large tool response; past this the event is
/// not read to its end (and so ignored).
const MAX_EVENT_LEN: u64 = 64 * 1024 * 1024;
/// How long `PreCompact` and `SessionEnd` wait for the workspace lock: SessionEnd hooks share a
/// budget of 1.5 s unless a configured `timeout` raises it, and compaction waits for us.
const LIFECYCLE_LOCK_WAIT: Duration = Duration::from_secs(1);
/// Set by `orchestrator run` in the agent's environment, which hooks inherit.
const RUN_ENV: &str = "ORCHESTRATOR_RUN";
const SESSION_ENV: &str = "ORCHESTRATOR_SESSION";

pub fn run(ctx: &Context, args: HookClaudeArgs) {
    let deadline = match std::env::var(DEADLINE_ENV) {
        Err(_) => DEADLINE,
        Ok(text) => match text.trim().parse::<f64>().map(Duration::try_from_secs_f64) {
            Ok(Ok(deadline)) => deadline,
            _ => {
                tracing::warn!(
                    "hook: {DEADLINE_ENV}={text} is not a number of seconds; using {} s",
                    DEADLINE.as_secs()
                );
                DEADLINE
            }
        },
    };
    // The work runs on a thread the deadline does not wait for: whatever it blocks on (stdin
    // never closed, the workspace lock, a slow disk), the hook answers in time. Returning from
    // main ends the thread; whatever it had half done is finished by the next command, as after
    // Claude Code's own kill at its timeout.
    let (done, outcome) = mpsc::channel();
    // The hook's answer is Claude Code's JSON on stdout, never shaped by --quiet or colours.
    let ctx = Context {
        store: ctx.store.clone(),
        ..Context::inner(ctx.dir.clone(), ctx.now)
    };
    std::thread::spawn(move || {
        let _ = done.send(answer(&ctx, &args));
    });
    match outcome.recv_timeout(deadline) {
        Ok(Ok(Some(output))) => crate::commands::output::print_stdout(&format!(
            "{}\n",
            json_escape_controls(&output.to_string())
        )),
        Ok(Ok(None)) => {}
        Ok(Err(err)) => tracing::warn!("hook: {err:#}"),
        Err(RecvTimeoutError::Timeout) => tracing::warn!(
            "hook: no answer within {} s ({DEADLINE_ENV}); the event was ignored so that the agent goes on",
            deadline.as_secs_f64()
        ),
        // The thread panicked; its message is already on stderr.
        Err(RecvTimeoutError::Disconnected) => {
            tracing::warn!("hook: internal error; the event was ignored")
        }
    }
}

/// Reads the event from stdin and handles it.
fn answer(ctx: &Context, args: &HookClaudeArgs) -> Result<Option<Value>> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_EVENT_LEN)
        .read_to_end(&mut input)
        .context("cannot read the event from stdin")?;
    handle(ctx, args, &input)
}

fn handle(ctx: &Context, args: &HookClaudeArgs, input: &[u8]) -> Result<Option<Value>> {
    let event: HookEvent =
        serde_json::from_slice(input).context("stdin is not a Claude Code hook event")?;
    let ws = match &ctx.dir {
        Some(dir) => Workspace::find(Some(dir))?,
        None => {
            let start = match &event.cwd {
                Some(cwd) => cwd.clone(),
                None => std::env::current_dir().context("cannot read the current directory")?,
            };
            match Workspace::find_from(&start) {
                Some(ws) => ws,
                // Not an orchestrated project: stay out of the way.
                None => return Ok(None),
            }
        }
    };
    let ctx = Context::inner_for(&ws, ctx.now);
    let name = event.hook_event_name.as_str();
    // Tool events fire inside subagents too; the subagent is not the one to wrap the session.
    if event.agent_id.is_some() {
        return Ok(None);
    }
    let context = match name {
        "SessionStart" => session_start(&ctx, &ws, args, &event)?,
        "PostToolUse" | "PostToolUseFailure" | "UserPromptSubmit" => {
            usage_alert(&ws, args, &event, ctx.now)?
        }
        "PreCompact" => {
            pre_compact(&ws, args, &event, ctx.now)?;
            None
        }
        "SessionEnd" => {
            session_end(&ctx, &ws, args, &event)?;
            None
        }
        _ => None,
    };
    // The context is text the agent reads as if printed: no control bytes, as in `emit`.
    Ok(context.map(|text| {
        json!({"hookSpecificOutput": {"hookEventName": name, "additionalContext": strip_controls(&text)}})
    }))
}

/// The brief of the agent's live session; with `on_session_start: start`, of a new one.
fn session_start(
    ctx: &Context,
    ws: &Workspace,
    args: &HookClaudeArgs,
    event: &HookEvent,
) -> Result<Option<String>> {
    if let Some(session) = own_session(ws, args, event, ctx.now, true)? {
        let session = bind_transcript(ws, session, event.transcript_path.as_deref())?;
        let stack = ws.load_stack()?;
        let task = stack.task(&session.task).with_context(|| {
            format!(
                "{}: task `{}` of session {} is no longer in the stack",
                ws.stack_path().display(),
                session.task,
                session.id
            )
        })?;
        // Past `startup` the agent's context held this session's work (`resume`, `clear`,
        // `compact`, `fork`): the brief says to resume it. At `startup` it is `start`'s text.
        let continuing = event.source.as_deref().is_some_and(|s| s != "startup");
        let (_, text) = brief(ws, &stack, &session, task, continuing, &[]);
        return Ok(Some(text));
    }
    let stack = ws.load_stack()?;
    let on_start = stack
        .settings
        .agents
        .get(&args.agent)
        .map_or(OnSessionStart::default(), |a| a.on_session_start);
    if on_start != OnSessionStart::Start {
        // Opening Claude Code in the project claims nothing unless the settings ask for it.
        return Ok(None);
    }
    let start = StartArgs {
        task: None,
        agent: args.agent.clone(),
        budget: None,
        transcript: event.transcript_path.clone(),
        transcript_origin: Some(TranscriptOrigin::Hook),
        worktree: false,
        in_place: true,
    };
    match open_session(ctx, start) {
        Ok((_, text)) => Ok(Some(text)),
        // Nothing to do or a refusal is news for the agent, not a hook failure.
        Err(err) => match err.downcast_ref::<Failure>() {
            Some(failure) => Ok(Some(format!(
                "orchestrator did not start a session: {}",
                failure.message
            ))),
            None => Err(err),
        },
    }
}

/// At the warn or shutdown level, one sentence of facts: the figure, the threshold it is past,
/// and what `orchestrator wrap` does.
fn usage_alert(
    ws: &Workspace,
    args: &HookClaudeArgs,
    event: &HookEvent,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>> {
    let Some(mut session) = own_session(ws, args, event, now, false)? else {
        return Ok(None);
    };
    if session.transcript.is_none() && event.transcript_path.is_some() {
        session.transcript = event.transcript_path.clone();
        session.transcript_origin = Some(TranscriptOrigin::Hook);
    }
    let report = meters::current(ws, &ws.load_stack()?, &session);
    let Some(meter) = report.limiting else {
        return Ok(None);
    };
    let what = if meter.name == TOKENS {
        "Context".to_string()
    } else {
        format!("Meter `{}`", meter.name)
    };
    let (used, limit) = if meter.name == TOKENS {
        (kilo(meter.usage.used), kilo(meter.usage.limit))
    } else {
        (meter.used_text(), meter.limit_text())
    };
    let consequence = match report.level {
        Level::Shutdown => {
            "past the shutdown threshold; the task's handoff is written by `orchestrator wrap`"
        }
        Level::Warn => {
            "past the warn threshold; `orchestrator checkpoint` records the unit in progress and `orchestrator wrap` writes the task's handoff"
        }
        _ => return Ok(None),
    };
    Ok(Some(format!(
        "{what} is at {}% ({used}/{limit}), {consequence}.",
        format_pct(meter.usage.pct())
    )))
}

/// Records the figure before the compaction and the compaction itself in the session, so that
/// the handoff shows the context was summarised. Never blocks compaction: prints nothing.
fn pre_compact(
    ws: &Workspace,
    args: &HookClaudeArgs,
    event: &HookEvent,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let Some(mut session) = own_session(ws, args, event, now, false)? else {
        return Ok(());
    };
    if session.transcript.is_none() {
        session.transcript = event.transcript_path.clone();
    }
    // Read before the lock, as `checkpoint` does: other agents never wait for our transcript.
    let used = Tokens::measure(ws, &session, None).from_transcript();
    let lock = ws.lock_within(LIFECYCLE_LOCK_WAIT)?;
    let mut current = ws.load_active(&session.id)?;
    if current.is_wrapping() {
        return Ok(());
    }
    if current.transcript.is_none() {
        current.transcript = session.transcript;
    }
    if let Some(used) = used {
        current.tokens = Some(TokenReading {
            used,
            source: "transcript".into(),
            at: now,
        });
    }
    current.compactions.push(Compaction {
        at: now,
        trigger: event.trigger.clone().unwrap_or_else(|| "unknown".into()),
        tokens: used,
    });
    ws.save_active(&lock, &current)
}

/// Releases or wraps the session when Claude Code closes, per `on_session_end`. Not for
/// `/clear` and `/resume` (the same Claude Code goes on, and SessionStart follows), nor under
/// `orchestrator run`, which wraps its session itself when the agent exits.
fn session_end(
    ctx: &Context,
    ws: &Workspace,
    args: &HookClaudeArgs,
    event: &HookEvent,
) -> Result<()> {
    if std::env::var_os(RUN_ENV).is_some_and(|v| !v.is_empty())
        || matches!(event.reason.as_deref(), Some("clear" | "resume"))
    {
        return Ok(());
    }
    let Some(session) = own_session(ws, args, event, ctx.now, false)? else {
        return Ok(());
    };
    let stack = ws.load_stack()?;
    let on_end = stack
        .settings
        .agents
        .get(&args.agent)
        .map_or(OnSessionEnd::default(), |a| a.on_session_end);
    match on_end {
        OnSessionEnd::Keep => Ok(()),
        OnSessionEnd::Wrap => {
            let wrap = WrapArgs {
                summary: None,
                next: Vec::new(),
                done: false,
                no_backup: false,
                no_commit: false,
                reason: "session-end".into(),
                agent: Some(args.agent.clone()),
                session: SessionArg {
                    session: Some(session.id),
                },
                agent_output: None,
            };
            wrap_session(ctx, wrap).map(|_| ())
        }
        OnSessionEnd::Release => {
            // Ending the lease frees the task at once; the next `start` wraps the session as it
            // does every session whose lease ran out. Two small writes: within SessionEnd's budget.
            let lock = ws.lock_within(LIFECYCLE_LOCK_WAIT)?;
            let mut current = ws.load_active(&session.id)?;
            if current.is_wrapping() || current.lease_expires <= ctx.now {
                return Ok(());
            }
            // The session's own task and one journal record: whatever the size of the stack.
            let mut stack = ws.load_task_view(&current.task)?;
            current.lease_expires = ctx.now;
            let holds = stack
                .task(&current.task)
                .and_then(|task| task.claim.as_ref())
                .is_some_and(|claim| claim.session == current.id);
            let mut undo = Undo::new();
            undo.before_replace(&ws.active_path(&current.id))?;
            undo.before_replace(&ws.checkpoint_log_path(&current.id))?;
            if holds {
                let write = LeaseWrite {
                    task: current.task.clone(),
                    session: current.id.clone(),
                    token: current.fence,
                    lease_expires: ctx.now,
                    end: true,
                };
                ws.renew_lease(&lock, &mut stack, &write)?;
            }
            ws.save_active(&lock, &current)?;
            undo.commit();
            Ok(())
        }
    }
}

/// The live session this Claude Code session works in: the one reading its transcript, else
/// the agent's session. A session already reading another transcript is taken only at
/// SessionStart (`/clear` or a restarted agent begins a new transcript); after that, the hook
/// of a second Claude Code session must not report the first one's usage.
fn own_session(
    ws: &Workspace,
    args: &HookClaudeArgs,
    event: &HookEvent,
    now: chrono::DateTime<chrono::Utc>,
    at_session_start: bool,
) -> Result<Option<Session>> {
    let live: Vec<Session> = ws
        .active_sessions()?
        .into_iter()
        .filter(|s| !s.is_wrapping() && !s.is_stale(now))
        .collect();
    let by_transcript = event.transcript_path.as_deref().and_then(|path| {
        live.iter()
            .position(|s| s.transcript.as_deref() == Some(path))
    });
    // `orchestrator run` names its session in the agent's environment.
    let by_run = std::env::var(SESSION_ENV)
        .ok()
        .and_then(|id| live.iter().position(|s| s.id == id.trim()));
    let index = by_transcript.or(by_run).or_else(|| {
        live.iter()
            .position(|s| s.agent == args.agent && (at_session_start || s.transcript.is_none()))
    });
    Ok(index.map(|i| live.into_iter().nth(i).expect("index is in range")))
}

/// Points the session at the agent's current transcript, so `checkpoint` and `status` read it.
fn bind_transcript(ws: &Workspace, session: Session, transcript: Option<&Path>) -> Result<Session> {
    let Some(path) = transcript else {
        return Ok(session);
    };
    if session.transcript.as_deref() == Some(path) {
        return Ok(session);
    }
    let lock = ws.lock()?;
    let mut session = ws.load_active(&session.id)?;
    if !session.is_wrapping() {
        session.transcript = Some(path.to_path_buf());
        session.transcript_origin = Some(TranscriptOrigin::Hook);
        ws.save_active(&lock, &session)?;
    }
    Ok(session)
}

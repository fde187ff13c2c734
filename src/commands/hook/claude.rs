//! `orchestrator hook claude`: answers one Claude Code hook event.
//!
//! Claude Code runs `hook claude` on its own events with the event as JSON on stdin. At
//! SessionStart the hook hands the agent its brief (starting a session when none is live); after
//! each tool use and prompt it reads the transcript and, at the warn or shutdown level, tells the
//! agent to wrap. Whatever happens, the hook exits 0, within its deadline, and prints valid hook
//! JSON or nothing: a broken hook must never break the agent's session, so problems only go to
//! stderr.

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::commands::Context;
use crate::commands::start::{StartArgs, brief, open_session};
use crate::core::budget::{Level, format_pct};
use crate::core::meters::TOKENS;
use crate::core::session::{Session, TranscriptOrigin};
use crate::core::text::{json_escape_controls, strip_controls};
use crate::error::Failure;
use crate::meters::{self, kilo};
use crate::store::Workspace;

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

/// The part of a Claude Code hook event the hook uses; other fields are ignored.
#[derive(Debug, Deserialize)]
struct HookEvent {
    hook_event_name: String,
    #[serde(default)]
    transcript_path: Option<PathBuf>,
    #[serde(default)]
    cwd: Option<PathBuf>,
}

/// How long the hook may take in all, unless [`DEADLINE_ENV`] says otherwise. Claude Code
/// cancels a command hook after its `timeout`: "60-second execution limit by default" in the
/// hooks reference (https://docs.anthropic.com/en/docs/claude-code/hooks), 600 s for command
/// hooks in later versions (https://code.claude.com/docs/en/hooks). Answering within the
/// shorter one, with room for the process to start, means the agent is never held up by us.
const DEADLINE: Duration = Duration::from_secs(45);
/// Seconds replacing [`DEADLINE`], for a hook given another `timeout` in the settings.
const DEADLINE_ENV: &str = "ORCHESTRATOR_HOOK_TIMEOUT";
/// Claude Code's events are a few KB, more with a large tool response; past this the event is
/// not read to its end (and so ignored).
const MAX_EVENT_LEN: u64 = 64 * 1024 * 1024;

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
    let ctx = Context {
        dir: ctx.dir.clone(),
        json: ctx.json,
        now: ctx.now,
    };
    std::thread::spawn(move || {
        let _ = done.send(answer(&ctx, &args));
    });
    match outcome.recv_timeout(deadline) {
        Ok(Ok(Some(output))) => println!("{}", json_escape_controls(&output.to_string())),
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
    let ctx = Context {
        dir: Some(ws.root().to_path_buf()),
        json: false,
        now: ctx.now,
    };
    let name = event.hook_event_name.as_str();
    let context = match name {
        "SessionStart" => Some(session_start(&ctx, &ws, args, &event)?),
        "PostToolUse" | "UserPromptSubmit" => usage_alert(&ws, args, &event, ctx.now)?,
        _ => None,
    };
    // The context is text the agent reads as if printed: no control bytes, as in `emit`.
    Ok(context.map(|text| {
        json!({"hookSpecificOutput": {"hookEventName": name, "additionalContext": strip_controls(&text)}})
    }))
}

/// The brief of the agent's live session, or of a new one.
fn session_start(
    ctx: &Context,
    ws: &Workspace,
    args: &HookClaudeArgs,
    event: &HookEvent,
) -> Result<String> {
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
        let (_, text) = brief(ws, &stack, &session, task, true, &[]);
        return Ok(text);
    }
    let start = StartArgs {
        task: None,
        agent: args.agent.clone(),
        budget: None,
        transcript: event.transcript_path.clone(),
        transcript_origin: Some(TranscriptOrigin::Hook),
    };
    match open_session(ctx, start) {
        Ok((_, text)) => Ok(text),
        // Nothing to do or a refusal is news for the agent, not a hook failure.
        Err(err) => match err.downcast_ref::<Failure>() {
            Some(failure) => Ok(format!(
                "orchestrator did not start a session: {}",
                failure.message
            )),
            None => Err(err),
        },
    }
}

/// At the warn or shutdown level, the one line that tells the agent to wrap up.
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
    // Unknown means the transcript the hook names gives no figure: nothing the agent can act on
    // at every tool call (`checkpoint` says how to give the figure).
    if matches!(report.level, Level::Ok | Level::Unknown) {
        return Ok(None);
    }
    let meter = report
        .limiting
        .expect("a level above ok has a limiting meter");
    let what = if meter.name == TOKENS {
        "Context".to_string()
    } else {
        format!("Meter {}", meter.name)
    };
    let (used, limit) = if meter.name == TOKENS {
        (kilo(meter.usage.used), kilo(meter.usage.limit))
    } else {
        (meter.usage.used.to_string(), meter.usage.limit.to_string())
    };
    let advice = match report.level {
        Level::Shutdown => "run orchestrator wrap now",
        _ => "finish the current unit of work, checkpoint it, then run orchestrator wrap",
    };
    Ok(Some(format!(
        "{what} {}% ({used}/{limit}): {advice}",
        format_pct(meter.usage.pct())
    )))
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
    let index = by_transcript.or_else(|| {
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

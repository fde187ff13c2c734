//! `orchestrator status`: the live session's task, progress and usage.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Context, select_session};
use crate::cli::StatusArgs;
use crate::core::budget::{Level, format_pct, round1};
use crate::core::session::{Session, describe_duration};
use crate::core::stack::{Progress, TaskStack};
use crate::error::code;

/// The budget report shared by `checkpoint` and `status`: JSON, the `key=value` line plus one
/// sentence, and the level that decides the exit code.
pub fn budget_report(
    stack: &TaskStack,
    session: &Session,
    progress: Progress,
    source: &str,
) -> (Value, String, Level) {
    let budget = &stack.settings.budget;
    let usage = session.usage(budget);
    let level = usage.level();
    let json = json!({
        "session": session.id,
        "task": session.task,
        "level": level,
        "used": usage.used,
        "budget": usage.limit,
        "pct": usage.pct(),
        "warn": round1(budget.warn * 100.0),
        "shutdown": round1(budget.shutdown * 100.0),
        "progress": progress,
        "source": source,
        "action": level.action(),
    });
    let text = format!(
        "level={level} used={} budget={} pct={} warn={} shutdown={} progress={progress} source={source}\n{}\n",
        usage.used,
        usage.limit,
        format_pct(usage.pct()),
        format_pct(budget.warn * 100.0),
        format_pct(budget.shutdown * 100.0),
        level.action()
    );
    (json, text, level)
}

pub fn token_source(session: &Session) -> &str {
    session
        .tokens
        .as_ref()
        .map_or("none", |t| t.source.as_str())
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stack = ws.load_stack()?;
    let live: Vec<Session> = ws
        .active_sessions()?
        .into_iter()
        .filter(|s| !s.is_wrapping())
        .collect();
    if live.is_empty() && args.session.session.is_none() {
        let json = json!({"session": null, "sessions": [], "action": "Run `orchestrator start` to begin a session."});
        ctx.emit(
            json,
            "session=none\nNo live session. Run `orchestrator start` to begin one.\n",
        );
        return Ok(code::OK);
    }
    let session = select_session(&ws, args.session.session.as_deref(), false)?;
    let progress = stack
        .task(&session.task)
        .map_or(session.progress_at_start, |t| t.progress);
    let (mut json, mut text, level) =
        budget_report(&stack, &session, progress, token_source(&session));
    let elapsed = ctx.now - session.started;
    let stale = session.is_stale(ctx.now);
    json["agent"] = json!(session.agent);
    json["started"] = json!(session.started);
    json["elapsed_minutes"] = json!(elapsed.num_minutes());
    json["lease_expires"] = json!(session.lease_expires);
    json["stale"] = json!(stale);
    json["checkpoints"] = json!(session.checkpoints.len());
    json["sessions"] = json!(
        live.iter()
            .map(|s| json!({"session": s.id, "agent": s.agent, "task": s.task}))
            .collect::<Vec<_>>()
    );
    text.push_str(&format!(
        "\nsession:  {}\nagent:    {}\ntask:     {}\nstarted:  {} ({} ago)\nlease:    {}{}\n",
        session.id,
        session.agent,
        session.task,
        crate::clock::format(session.started),
        describe_duration(elapsed),
        crate::clock::format(session.lease_expires),
        if stale {
            " (expired: the next `start` recovers this session)"
        } else {
            ""
        }
    ));
    ctx.emit(json, &text);
    Ok(if args.exit_zero {
        code::OK
    } else {
        level.exit_code()
    })
}

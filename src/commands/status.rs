//! `orchestrator status`: the live session's task, progress and usage.

use anyhow::Result;
use serde_json::json;

use super::{Context, select_session};
use crate::cli::StatusArgs;
use crate::core::budget::Level;
use crate::core::session::{Session, describe_duration};
use crate::core::stack::TaskStack;
use crate::error::code;
use crate::store::Workspace;
use crate::usage;

pub fn run(ctx: &Context, args: StatusArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stack = ws.load_stack()?;
    usage::warn_about_compaction(&ws, &stack);
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
    if live.len() > 1 && args.session.session.is_none() {
        return list(ctx, &ws, &stack, &live, args.exit_zero);
    }
    let session = select_session(&ws, args.session.session.as_deref(), false)?;
    let (mut json, mut text, level) = session_report(ctx, &ws, &stack, &session);
    let elapsed = ctx.now - session.started;
    let stale = session.is_stale(ctx.now);
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

/// Several live sessions (parallel agents): one line each, and the worst level decides the exit.
fn list(
    ctx: &Context,
    ws: &Workspace,
    stack: &TaskStack,
    live: &[Session],
    exit_zero: bool,
) -> Result<u8> {
    let mut worst = Level::Ok;
    let mut text = String::new();
    let mut sessions = Vec::new();
    for session in live {
        let (json, report_text, level) = session_report(ctx, ws, stack, session);
        worst = worst.max(level);
        let stale = session.is_stale(ctx.now);
        let first_line = report_text.lines().next().unwrap_or_default();
        text.push_str(&format!(
            "session={} agent={} task={} {first_line} started={}{}\n",
            session.id,
            session.agent,
            session.task,
            crate::clock::format(session.started),
            if stale { " stale=true" } else { "" }
        ));
        sessions.push(json);
    }
    text.push_str(&format!(
        "{} live sessions; worst level {worst}. Name one with --session ID for its details.\n",
        live.len()
    ));
    let json = json!({"session": null, "level": worst, "sessions": sessions});
    ctx.emit(json, &text);
    Ok(if exit_zero {
        code::OK
    } else {
        worst.exit_code()
    })
}

/// One session's usage report, with who holds it and since when.
fn session_report(
    ctx: &Context,
    ws: &Workspace,
    stack: &TaskStack,
    session: &Session,
) -> (serde_json::Value, String, Level) {
    let report = usage::current(ws, stack, session);
    let mut json = report.json;
    json["agent"] = json!(session.agent);
    json["started"] = json!(session.started);
    json["elapsed_minutes"] = json!((ctx.now - session.started).num_minutes());
    json["lease_expires"] = json!(session.lease_expires);
    json["stale"] = json!(session.is_stale(ctx.now));
    (json, report.text, report.level)
}

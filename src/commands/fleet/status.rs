//! `orchestrator status --fleet`: every live session on every machine, and the quota pauses.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Context, workspace_fleet};
use crate::core::budget::Usage;
use crate::core::session::describe_duration;
use crate::error::code;

pub fn run(ctx: &Context) -> Result<u8> {
    let (_ws, stack, fleet) = workspace_fleet(ctx)?;
    let sessions = fleet.with(|pg| pg.fleet_sessions())?;
    let pauses = fleet.with(|pg| pg.pauses(ctx.now))?;
    let budget = &stack.settings.budget;
    let mut entries = Vec::new();
    let mut text = format!(
        "fleet={} sessions={}\n",
        fleet.target().display(),
        sessions.len()
    );
    for session in &sessions {
        let number = |key: &str| session.summary.get(key).and_then(Value::as_u64);
        let used = number("tokens_used").unwrap_or(0);
        let limit = number("budget").unwrap_or(budget.tokens);
        let usage = Usage {
            used,
            limit,
            warn: budget.warn,
            shutdown: budget.shutdown,
        };
        let level = if used == 0 {
            "unknown"
        } else {
            usage.level().as_str()
        };
        let lease_left = session
            .lease_expires
            .map(|expires| expires - ctx.now)
            .filter(|left| left.num_seconds() > 0);
        let lease_text = match (&lease_left, session.holds_lease) {
            (Some(left), _) => describe_duration(*left),
            (None, true) => "expired".to_string(),
            (None, false) => "lost".to_string(),
        };
        let progress = match (
            number("progress_done"),
            stack.task(&session.task).map(|t| t.progress.total),
        ) {
            (Some(done), Some(total)) => format!("{done}/{total}"),
            _ => "?".to_string(),
        };
        text.push_str(&format!(
            "session={} host={} agent={} task={} state={} level={level} progress={progress} lease={}\n",
            session.id,
            session.host,
            session.agent,
            session.task,
            session.state,
            lease_text.replace(' ', "_")
        ));
        entries.push(json!({
            "session": session.id,
            "host": session.host,
            "agent": session.agent,
            "task": session.task,
            "state": session.state,
            "level": level,
            "tokens_used": used,
            "budget": limit,
            "progress": progress,
            "lease_expires": session.lease_expires.map(crate::clock::format),
            "lease_seconds_left": lease_left.map(|left| left.num_seconds()),
            "workspace": session.summary.get("workspace"),
        }));
    }
    let mut paused = Vec::new();
    for (account, until, reason) in &pauses {
        text.push_str(&format!(
            "paused account={account} until={} reason={}\n",
            crate::clock::format(*until),
            crate::core::text::one_line(reason)
        ));
        paused.push(
            json!({"account": account, "until": crate::clock::format(*until), "reason": reason}),
        );
    }
    ctx.emit(
        json!({"store": fleet.target().display(), "sessions": entries, "pauses": paused}),
        &text,
    );
    Ok(code::OK)
}

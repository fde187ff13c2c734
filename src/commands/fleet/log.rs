//! `orchestrator fleet log`: what happened on the fleet store, oldest first.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{Context, workspace_fleet};
use crate::error::code;

/// Show the fleet store's events: claims, takeovers of expired leases, checkpoints, refused
/// writes, wraps, reaps and quota pauses, from every machine
#[derive(Debug, Args)]
pub struct FleetLogArgs {
    /// How many of the newest events to show
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: i64,
    /// Only events of this task
    #[arg(long)]
    pub task: Option<String>,
}

pub fn run(ctx: &Context, args: FleetLogArgs) -> Result<u8> {
    let (_ws, _stack, fleet) = workspace_fleet(ctx)?;
    let limit = args.limit.max(1);
    let events = fleet.with(|pg| pg.events(limit, args.task.as_deref()))?;
    let mut text = String::new();
    let mut entries = Vec::new();
    for event in &events {
        text.push_str(&format!(
            "{} {} host={} agent={} session={} task={} {}\n",
            crate::clock::format(event.at),
            event.kind,
            event.host,
            event.agent.as_deref().unwrap_or("-"),
            event.session.as_deref().unwrap_or("-"),
            event.task.as_deref().unwrap_or("-"),
            event.detail
        ));
        entries.push(json!({
            "id": event.id,
            "at": crate::clock::format(event.at),
            "kind": event.kind,
            "host": event.host,
            "agent": event.agent,
            "session": event.session,
            "task": event.task,
            "detail": event.detail,
        }));
    }
    if events.is_empty() {
        text.push_str("no events\n");
    }
    ctx.emit(json!({"events": entries}), &text);
    Ok(code::OK)
}

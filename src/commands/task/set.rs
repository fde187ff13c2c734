//! `orchestrator task set`: change a task's priority, total, progress, status or title.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{find, task_json};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::stack::Status;
use crate::error::Failure;

/// Change a task's priority, total, status or title
#[derive(Debug, Args)]
pub struct TaskSetArgs {
    /// The task to change
    #[arg(value_name = "ID")]
    pub id: String,
    /// New priority; 1 is the most urgent
    #[arg(long, value_name = "N")]
    pub priority: Option<i64>,
    /// New number of units of work (not below the units done)
    #[arg(long, value_name = "N")]
    pub total: Option<u64>,
    /// New number of units done (not above the total)
    #[arg(long, value_name = "N")]
    pub progress: Option<u64>,
    /// New status
    #[arg(long, value_name = "S")]
    pub status: Option<Status>,
    /// New title
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
}

pub fn run(ctx: &Context, args: TaskSetArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    let task = find(&ws, &mut stack, &args.id)?;
    let mut changed = Vec::new();
    if let Some(priority) = args.priority {
        task.priority = priority;
        changed.push(format!("priority={priority}"));
    }
    if let Some(total) = args.total {
        task.progress.total = total;
        changed.push(format!("total={total}"));
    }
    if let Some(done) = args.progress {
        task.progress.done = done;
        changed.push(format!("progress={done}"));
    }
    if let Some(status) = args.status {
        task.status = status;
        changed.push(format!("status={status}"));
    }
    if let Some(title) = args.title {
        task.title = title;
        changed.push("title".to_string());
    }
    if changed.is_empty() {
        return Err(Failure::user(
            "nothing to set: give --priority, --total, --progress, --status or --title",
        ));
    }
    let json = json!({"task": task_json(task), "changed": changed});
    let text = format!("Updated {}: {}", task.id, changed.join(" "));
    // save_stack validates: a total below progress or a priority of 0 is refused unwritten.
    ws.save_stack(&lock, &stack)?;
    let quiet = Shape {
        quiet: Quiet::Nothing,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, quiet);
    Ok(0)
}

//! `orchestrator task done`: mark a task done, its progress full.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{find, task_json};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::stack::Status;

/// Mark a task done
#[derive(Debug, Args)]
pub struct TaskDoneArgs {
    /// The task to mark done
    #[arg(value_name = "ID")]
    pub id: String,
}

pub fn run(ctx: &Context, args: TaskDoneArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    let task = find(&ws, &mut stack, &args.id)?;
    task.status = Status::Done;
    task.progress.done = task.progress.total;
    let json = json!({"task": task_json(task)});
    let text = format!("Marked {} done ({})", task.id, task.progress);
    ws.save_stack(&lock, &stack)?;
    let quiet = Shape {
        quiet: Quiet::Nothing,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, quiet);
    Ok(0)
}

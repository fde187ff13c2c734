//! `orchestrator task done`: mark a task done, its progress full.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{find, task_json, tell_holder};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::stack::Status;

/// Mark a task done (a live session holding it is told to wrap at its next checkpoint)
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
    task.set_status(Status::Done);
    let mut json = json!({"task": task_json(task)});
    let mut text = format!("Marked {} done ({})", task.id, task.progress);
    tell_holder(ctx, task, &mut text, &mut json);
    ws.save_stack(&lock, &stack)?;
    let quiet = Shape {
        quiet: Quiet::Nothing,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, quiet);
    Ok(0)
}

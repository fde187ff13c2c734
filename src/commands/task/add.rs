//! `orchestrator task add`: a new task, after every existing one unless given a priority.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{ContextArgs, check_title, task_json};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::ids::check_task_id;
use crate::core::stack::Task;
use crate::error::Failure;

/// Add a task
#[derive(Debug, Args)]
pub struct TaskAddArgs {
    /// The new task's id (letters, digits, `_`, `-`, `.`)
    #[arg(value_name = "ID")]
    pub id: String,
    /// What the task is, in a line (shown in briefs and lists; required)
    #[arg(long, value_name = "T")]
    pub title: String,
    /// 1 is the most urgent; default: after every existing task
    #[arg(long, value_name = "N")]
    pub priority: Option<i64>,
    /// Units of work in the task
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub total: u64,
    /// A task that must be done first (repeatable)
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
    #[command(flatten)]
    pub context: ContextArgs,
}

pub fn run(ctx: &Context, args: TaskAddArgs) -> Result<u8> {
    check_task_id(&args.id).map_err(Failure::user)?;
    let title = check_title(&args.title)?;
    let description_file = args.context.read_description_file()?;
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    if stack.task(&args.id).is_some() {
        return Err(Failure::user(format!(
            "{}: task `{}` already exists",
            ws.stack_path().display(),
            args.id
        )));
    }
    let priority = args
        .priority
        .unwrap_or_else(|| stack.tasks.iter().map(|t| t.priority).max().unwrap_or(0) + 1);
    let mut task = Task::new(args.id.clone(), title, priority, args.total, args.after);
    args.context.apply(description_file, &mut task);
    stack.tasks.push(task);
    ws.save_stack(&lock, &stack)?;
    let task = stack.task(&args.id).expect("just added");
    ctx.emit_shaped(
        json!({"task": task_json(task)}),
        &format!(
            "Added {} (priority {}, 0/{})",
            task.id, task.priority, task.progress.total
        ),
        Shape {
            quiet: Quiet::Nothing,
            ..Shape::default()
        },
    );
    Ok(0)
}

//! `orchestrator task list`: the tasks in priority order, with who holds them.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::task_json;
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::stack::{Status, Task};
use crate::core::text::one_line;

/// List tasks in priority order
#[derive(Debug, Args)]
pub struct TaskListArgs {
    /// Only the tasks with this status
    #[arg(long, value_name = "S")]
    pub status: Option<Status>,
}

pub fn run(ctx: &Context, args: TaskListArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stack = ws.load_stack()?;
    let mut tasks: Vec<&Task> = stack
        .tasks
        .iter()
        .filter(|t| args.status.is_none_or(|s| t.status == s))
        .collect();
    tasks.sort_by_key(|t| t.priority);
    let width = tasks.iter().map(|t| t.id.len()).max().unwrap_or(2).max(2);
    let header = format!(
        "{:<width$}  {:>3}  {:<11}  {:>9}  TITLE",
        "ID", "PRI", "STATUS", "PROGRESS"
    );
    let mut rows = String::new();
    for task in &tasks {
        let held = match &task.claim {
            Some(claim) if claim.is_live(ctx.now) => format!("  [held by {}]", claim.session),
            _ => String::new(),
        };
        rows.push_str(&format!(
            "{:<width$}  {:>3}  {:<11}  {:>9}  {}{held}\n",
            task.id,
            task.priority,
            task.status.as_str(),
            task.progress.to_string(),
            one_line(&task.title)
        ));
    }
    let json = json!({"tasks": tasks.iter().map(|t| task_json(t)).collect::<Vec<_>>()});
    let text = format!("{header}\n{rows}");
    // The rows are the data; --quiet drops only the header, for scripts that cut columns.
    let shape = Shape {
        quiet: Quiet::Text(rows),
        headings: &[&header],
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, shape);
    Ok(0)
}

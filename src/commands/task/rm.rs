//! `orchestrator task rm`: remove a task no other task waits on and no live session holds.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{find, live_holder, task_json};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::error::Failure;

/// Remove a task. Refused while other tasks depend on it (unless --force) and, even with
/// --force, while a live session holds it
#[derive(Debug, Args)]
pub struct TaskRmArgs {
    /// The task to remove
    pub id: String,
    /// Also remove the dependency on it from the tasks that wait on it
    #[arg(long)]
    pub force: bool,
}

pub fn run(ctx: &Context, args: TaskRmArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    let path = ws.stack_path();
    let task = find(&ws, &mut stack, &args.id)?.clone();
    // A live agent whose task vanished could neither checkpoint nor hand off its work: it is
    // told to stop through `task done` instead, which --force does not replace.
    let holder = live_holder(ctx, &task).or_else(|| {
        ws.active_sessions().ok().and_then(|sessions| {
            sessions
                .into_iter()
                .find(|s| s.task == task.id && !s.is_wrapping() && !s.is_stale(ctx.now))
                .map(|s| s.id)
        })
    });
    if let Some(session) = holder {
        return Err(Failure::busy(format!(
            "task `{}` is held by live session {session}; run `orchestrator task done {}` (the session is told to wrap) or wrap the session, then remove it (--force does not remove a held task)",
            task.id, task.id
        )));
    }
    let dependents: Vec<String> = stack
        .dependents(&task.id)
        .into_iter()
        .map(str::to_string)
        .collect();
    if !dependents.is_empty() && !args.force {
        return Err(Failure::user(format!(
            "{}: task `{}` cannot be removed: {} depend{} on it; drop that with `orchestrator task set ID --not-after {}`, or pass --force to remove the dependencies with the task",
            path.display(),
            task.id,
            dependents.join(", "),
            if dependents.len() == 1 { "s" } else { "" },
            task.id
        )));
    }
    for other in &mut stack.tasks {
        other.depends_on.retain(|d| *d != task.id);
    }
    stack.tasks.retain(|t| t.id != task.id);
    ws.save_stack(&lock, &stack)?;
    let mut text = format!("Removed {}", task.id);
    if !dependents.is_empty() {
        text.push_str(&format!(
            "; {} no longer wait{} on it",
            dependents.join(", "),
            if dependents.len() == 1 { "s" } else { "" }
        ));
    }
    ctx.emit_shaped(
        json!({"removed": task_json(&task), "dependencies_removed_from": dependents}),
        &text,
        Shape {
            quiet: Quiet::Nothing,
            ..Shape::default()
        },
    );
    Ok(0)
}

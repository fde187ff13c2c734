//! `orchestrator task set`: change a task's fields, context, open items or dependencies.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{ContextArgs, check_title, find, task_json, tell_holder};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::ids::check_task_id;
use crate::core::stack::Status;
use crate::error::Failure;

/// Change a task's priority, total, progress, status, title, context or dependencies
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
    /// New status (done also sets the progress to the total)
    #[arg(long, value_name = "S")]
    pub status: Option<Status>,
    /// Why the task is blocked: with --status blocked, or on a task already blocked
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// New title
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
    /// Make the task wait until this one is done (repeatable)
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
    /// No longer wait on this task (repeatable)
    #[arg(long = "not-after", value_name = "ID")]
    pub not_after: Vec<String>,
    #[command(flatten)]
    pub context: ContextArgs,
    /// Drop every open next step (see `task show`)
    #[arg(long)]
    pub clear_next: bool,
    /// Drop every open issue (see `task show`)
    #[arg(long)]
    pub clear_issues: bool,
}

pub fn run(ctx: &Context, args: TaskSetArgs) -> Result<u8> {
    let title = args.title.as_deref().map(check_title).transpose()?;
    let description_file = args.context.read_description_file()?;
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    let path = ws.stack_path();
    find(&ws, &mut stack, &args.id)?;
    for (flag, dep) in args
        .after
        .iter()
        .map(|d| ("--after", d))
        .chain(args.not_after.iter().map(|d| ("--not-after", d)))
    {
        check_task_id(dep).map_err(|e| Failure::user(format!("{flag}: {e}")))?;
        if stack.task(dep).is_none() {
            return Err(Failure::user(format!(
                "{}: {flag} {dep}: no task `{dep}`",
                path.display()
            )));
        }
    }
    if let Some(dep) = args.after.iter().find(|d| args.not_after.contains(d)) {
        return Err(Failure::user(format!(
            "task `{dep}` is given to both --after and --not-after"
        )));
    }

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
        if status == Status::Done
            && let Some(done) = args.progress
            && done != task.progress.total
        {
            return Err(Failure::user(format!(
                "--progress {done} contradicts --status done, which sets the progress of task `{}` to its total ({})",
                task.id, task.progress.total
            )));
        }
        let before = task.progress.done;
        task.set_status(status);
        changed.push(format!("status={status}"));
        if task.progress.done != before && args.progress.is_none() {
            changed.push(format!("progress={}", task.progress.done));
        }
    }
    if let Some(reason) = args.reason {
        if task.status != Status::Blocked {
            return Err(Failure::user(format!(
                "--reason says why a task is blocked, and task `{}` is {}: add --status blocked",
                task.id, task.status
            )));
        }
        let reason = reason.trim();
        task.blocked_reason = (!reason.is_empty()).then(|| reason.to_string());
        changed.push("reason".to_string());
    }
    if let Some(title) = title {
        task.title = title;
        changed.push("title".to_string());
    }
    changed.extend(args.context.apply(description_file, task));
    if args.clear_next {
        task.next_steps.clear();
        changed.push("next_steps=[]".to_string());
    }
    if args.clear_issues {
        task.issues.clear();
        changed.push("issues=[]".to_string());
    }
    for dep in &args.after {
        if !task.depends_on.contains(dep) {
            task.depends_on.push(dep.clone());
            changed.push(format!("after+={dep}"));
        }
    }
    for dep in &args.not_after {
        if task.depends_on.contains(dep) {
            task.depends_on.retain(|d| d != dep);
            changed.push(format!("after-={dep}"));
        }
    }
    if changed.is_empty() && args.after.is_empty() && args.not_after.is_empty() {
        return Err(Failure::user(
            "nothing to set: give --priority, --total, --progress, --status, --reason, --title, --description, --acceptance, --notes, --clear-next, --clear-issues, --after or --not-after",
        ));
    }
    let task = task.clone();
    if let Some(cycle) = stack.find_cycle() {
        return Err(Failure::user(format!(
            "{}: --after would make a dependency cycle: {}",
            path.display(),
            cycle.join(" -> ")
        )));
    }
    let mut json = json!({"task": task_json(&task), "changed": changed});
    let mut text = if changed.is_empty() {
        format!("Task {} unchanged", task.id)
    } else {
        format!("Updated {}: {}", task.id, changed.join(" "))
    };
    if args.status.is_some_and(|s| !s.is_open()) {
        tell_holder(ctx, &task, &mut text, &mut json);
    }
    // save_stack validates: a total below progress or a priority of 0 is refused unwritten.
    ws.save_stack(&lock, &stack)?;
    let quiet = Shape {
        quiet: Quiet::Nothing,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, quiet);
    Ok(0)
}

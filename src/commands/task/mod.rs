//! `orchestrator task add|list|show|done|set`: manage tasks without editing JSON by hand.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Context;
use crate::core::ids::check_task_id;
use crate::core::stack::{Status, Task, TaskStack};
use crate::core::text::one_line;
use crate::error::Failure;
use crate::store::Workspace;

/// Add, list, show and change tasks
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Add a task
    Add(TaskAddArgs),
    /// List tasks in priority order
    List(TaskListArgs),
    /// Show one task with its recent checkpoints
    Show(TaskIdArg),
    /// Mark a task done
    Done(TaskIdArg),
    /// Change a task's priority, total, status or title
    Set(TaskSetArgs),
}

#[derive(Debug, Args)]
pub struct TaskAddArgs {
    pub id: String,
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
    /// 1 is the most urgent; default: after every existing task
    #[arg(long, value_name = "N")]
    pub priority: Option<i64>,
    /// Units of work in the task
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub total: u64,
    /// A task that must be done first (repeatable)
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskListArgs {
    #[arg(long, value_name = "S")]
    pub status: Option<Status>,
}

#[derive(Debug, Args)]
pub struct TaskIdArg {
    pub id: String,
}

#[derive(Debug, Args)]
pub struct TaskSetArgs {
    pub id: String,
    #[arg(long, value_name = "N")]
    pub priority: Option<i64>,
    #[arg(long, value_name = "N")]
    pub total: Option<u64>,
    #[arg(long, value_name = "N")]
    pub progress: Option<u64>,
    #[arg(long, value_name = "S")]
    pub status: Option<Status>,
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
}

pub fn run(ctx: &Context, cmd: TaskCommand) -> Result<u8> {
    match cmd {
        TaskCommand::Add(args) => add(ctx, args),
        TaskCommand::List(args) => list(ctx, args),
        TaskCommand::Show(args) => show(ctx, args),
        TaskCommand::Done(args) => done(ctx, args),
        TaskCommand::Set(args) => set(ctx, args),
    }
}

pub fn task_json(task: &Task) -> Value {
    json!({
        "id": task.id,
        "title": task.title,
        "priority": task.priority,
        "status": task.status,
        "progress": task.progress,
        "depends_on": task.depends_on,
        "claim": task.claim,
        "last_checkpoint": task.checkpoints.last(),
    })
}

fn find<'a>(ws: &Workspace, stack: &'a mut TaskStack, id: &str) -> Result<&'a mut Task> {
    check_task_id(id).map_err(Failure::user)?;
    let path = ws.stack_path();
    stack
        .task_mut(id)
        .ok_or_else(|| Failure::user(format!("{}: no task `{id}`", path.display())))
}

fn add(ctx: &Context, args: TaskAddArgs) -> Result<u8> {
    check_task_id(&args.id).map_err(Failure::user)?;
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
    let task = Task::new(
        args.id.clone(),
        args.title.unwrap_or_default(),
        priority,
        args.total,
        args.after,
    );
    stack.tasks.push(task);
    ws.save_stack(&lock, &stack)?;
    let task = stack.task(&args.id).expect("just added");
    ctx.emit(
        json!({"task": task_json(task)}),
        &format!(
            "Added {} (priority {}, 0/{})",
            task.id, task.priority, task.progress.total
        ),
    );
    Ok(0)
}

fn list(ctx: &Context, args: TaskListArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stack = ws.load_stack()?;
    let mut tasks: Vec<&Task> = stack
        .tasks
        .iter()
        .filter(|t| args.status.is_none_or(|s| t.status == s))
        .collect();
    tasks.sort_by_key(|t| t.priority);
    let width = tasks.iter().map(|t| t.id.len()).max().unwrap_or(2).max(2);
    let mut text = format!(
        "{:<width$}  {:>3}  {:<11}  {:>9}  TITLE\n",
        "ID", "PRI", "STATUS", "PROGRESS"
    );
    for task in &tasks {
        let held = match &task.claim {
            Some(claim) if claim.is_live(ctx.now) => format!("  [held by {}]", claim.session),
            _ => String::new(),
        };
        text.push_str(&format!(
            "{:<width$}  {:>3}  {:<11}  {:>9}  {}{held}\n",
            task.id,
            task.priority,
            task.status.as_str(),
            task.progress.to_string(),
            one_line(&task.title)
        ));
    }
    let json = json!({"tasks": tasks.iter().map(|t| task_json(t)).collect::<Vec<_>>()});
    ctx.emit(json, &text);
    Ok(0)
}

fn show(ctx: &Context, args: TaskIdArg) -> Result<u8> {
    let ws = ctx.workspace()?;
    let mut stack = ws.load_stack()?;
    let task = find(&ws, &mut stack, &args.id)?.clone();
    let mut text = format!(
        "{}  {}\nstatus:   {}\npriority: {}\nprogress: {} ({:.0}%)\n",
        task.id,
        one_line(&task.title),
        task.status,
        task.priority,
        task.progress,
        task.progress.percent()
    );
    if !task.depends_on.is_empty() {
        text.push_str(&format!("after:    {}\n", task.depends_on.join(", ")));
    }
    if let Some(claim) = &task.claim {
        text.push_str(&format!(
            "claim:    {} (agent {}, pid {} on {}, lease until {})\n",
            claim.session,
            claim.agent,
            claim.pid,
            claim.host,
            crate::clock::format(claim.lease_expires)
        ));
    }
    if !task.checkpoints.is_empty() {
        text.push_str("recent checkpoints:\n");
        for cp in task.checkpoints.iter().rev().take(10) {
            text.push_str(&format!(
                "  {}  {:>5}  {}\n",
                cp.at.format("%Y-%m-%d %H:%M:%S"),
                cp.progress,
                one_line(&cp.message)
            ));
        }
    }
    let mut json = task_json(&task);
    json["checkpoints"] = json!(task.checkpoints);
    ctx.emit(json!({"task": json}), &text);
    Ok(0)
}

fn done(ctx: &Context, args: TaskIdArg) -> Result<u8> {
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    let task = find(&ws, &mut stack, &args.id)?;
    task.status = Status::Done;
    task.progress.done = task.progress.total;
    let json = json!({"task": task_json(task)});
    let text = format!("Marked {} done ({})", task.id, task.progress);
    ws.save_stack(&lock, &stack)?;
    ctx.emit(json, &text);
    Ok(0)
}

fn set(ctx: &Context, args: TaskSetArgs) -> Result<u8> {
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
    ctx.emit(json, &text);
    Ok(0)
}

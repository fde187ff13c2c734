//! `orchestrator task add|list|show|done|set|rm`: manage tasks without editing JSON by hand.

mod add;
mod done;
mod list;
mod rm;
mod set;
mod show;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use super::Context;
use crate::core::ids::check_task_id;
use crate::core::stack::{Status, Task, TaskStack};
use crate::error::Failure;
use crate::store::Workspace;
use add::TaskAddArgs;
use done::TaskDoneArgs;
use list::TaskListArgs;
use rm::TaskRmArgs;
use set::TaskSetArgs;
use show::TaskShowArgs;

/// Add, list, show, change and remove tasks
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    Add(TaskAddArgs),
    List(TaskListArgs),
    Show(TaskShowArgs),
    Done(TaskDoneArgs),
    Set(TaskSetArgs),
    Rm(TaskRmArgs),
}

pub fn run(ctx: &Context, cmd: TaskCommand) -> Result<u8> {
    match cmd {
        TaskCommand::Add(args) => add::run(ctx, args),
        TaskCommand::List(args) => list::run(ctx, args),
        TaskCommand::Show(args) => show::run(ctx, args),
        TaskCommand::Done(args) => done::run(ctx, args),
        TaskCommand::Set(args) => set::run(ctx, args),
        TaskCommand::Rm(args) => rm::run(ctx, args),
    }
}

/// `--status` takes the stack's own status names, and `--help` lists them. The impl sits here,
/// not on the type in `core/`, so the pure model does not depend on the command line.
impl clap::ValueEnum for Status {
    fn value_variants<'a>() -> &'a [Self] {
        &Status::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            Status::Pending => "not started yet",
            Status::InProgress => "started by a session",
            Status::Done => "finished; never picked again",
            Status::Blocked => "not picked until its status changes",
            Status::Skipped => "left out; never picked",
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
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
        "blocked_reason": task.blocked_reason(),
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

/// The session whose live claim holds the task, if one does.
fn live_holder(ctx: &Context, task: &Task) -> Option<String> {
    task.claim
        .as_ref()
        .filter(|claim| claim.is_live(ctx.now))
        .map(|claim| claim.session.clone())
}

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
    let code = match cmd {
        TaskCommand::Add(args) => add::run(ctx, args),
        TaskCommand::List(args) => list::run(ctx, args),
        TaskCommand::Show(args) => show::run(ctx, args),
        TaskCommand::Done(args) => done::run(ctx, args),
        TaskCommand::Set(args) => set::run(ctx, args),
        TaskCommand::Rm(args) => rm::run(ctx, args),
    }?;
    // After every task command the stack file is current and complete: the checkpoint journal
    // is folded into it. After the command, so that a refused one (exit 1) changes nothing.
    // The command itself succeeded: a fold that fails is reported, and the next writer folds.
    if let Ok(ws) = Workspace::find(ctx.dir.as_deref())
        && ws.journal_path().exists()
        && let Err(err) = ws.lock().and_then(|lock| ws.fold_journal(&lock))
    {
        tracing::warn!("cannot fold the checkpoint journal into the stack: {err:#}");
    }
    Ok(code)
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

/// The task's context options, shared by `task add` and `task set`.
#[derive(Debug, clap::Args)]
pub struct ContextArgs {
    /// What the task is about, beyond its title (shown in the brief; "" clears it)
    #[arg(long, value_name = "TEXT", conflicts_with = "description_file")]
    pub description: Option<String>,
    /// Read the description from this file
    #[arg(long, value_name = "FILE")]
    pub description_file: Option<std::path::PathBuf>,
    /// What "done" means for this task (shown in the brief; "" clears it)
    #[arg(long, value_name = "TEXT")]
    pub acceptance: Option<String>,
    /// Free notes about the task (shown by `task show`; "" clears them)
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
}

impl ContextArgs {
    /// Reads `--description-file` (before the lock is taken) and applies the options to
    /// `task`, returning the names of the fields changed.
    pub fn apply(&self, description_file: Option<String>, task: &mut Task) -> Vec<String> {
        let mut changed = Vec::new();
        let given = |text: &str| {
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_string())
        };
        if let Some(text) = self.description.as_deref().or(description_file.as_deref()) {
            task.description = given(text);
            changed.push("description".to_string());
        }
        if let Some(text) = &self.acceptance {
            task.acceptance = given(text);
            changed.push("acceptance".to_string());
        }
        if let Some(text) = &self.notes {
            task.notes = given(text);
            changed.push("notes".to_string());
        }
        changed
    }

    /// The text of `--description-file`, if given.
    pub fn read_description_file(&self) -> Result<Option<String>> {
        let Some(path) = &self.description_file else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|err| {
            Failure::user(format!(
                "--description-file {}: cannot read it: {err}",
                path.display()
            ))
        })?;
        String::from_utf8(bytes).map(Some).map_err(|_| {
            Failure::user(format!(
                "--description-file {}: not UTF-8 text",
                path.display()
            ))
        })
    }
}

/// A title is what briefs and lists show of a task: it must say something.
fn check_title(title: &str) -> Result<String> {
    let title = title.trim();
    if title.is_empty() {
        return Err(Failure::user(
            "--title cannot be empty: say in a line what the task is",
        ));
    }
    Ok(title.to_string())
}

fn find<'a>(ws: &Workspace, stack: &'a mut TaskStack, id: &str) -> Result<&'a mut Task> {
    check_task_id(id).map_err(Failure::user)?;
    let path = ws.stack_path();
    stack
        .task_mut(id)
        .ok_or_else(|| Failure::user(format!("{}: no task `{id}`", path.display())))
}

/// Tells, in the text and as `held_by`, which live session holds a task just closed: the claim
/// stays, and that session's next checkpoint says the task is closed and to wrap.
fn tell_holder(ctx: &Context, task: &Task, text: &mut String, json: &mut Value) {
    let Some(session) = live_holder(ctx, task) else {
        return;
    };
    text.push_str(&format!(
        "\nSession {session} holds it: its next checkpoint tells it the task is {} and to wrap.",
        task.status
    ));
    json["held_by"] = json!(session);
}

/// The session whose live claim holds the task, if one does.
fn live_holder(ctx: &Context, task: &Task) -> Option<String> {
    task.claim
        .as_ref()
        .filter(|claim| claim.is_live(ctx.now))
        .map(|claim| claim.session.clone())
}

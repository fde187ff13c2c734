//! `orchestrator worktree integrate`: finish a session's integration after a merge conflict.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::commands::Context;
use crate::core::ids::check_task_id;
use crate::error::{Failure, code};
use crate::wrap::{self, worktree};

/// Bring a task's worktree branch onto the base branch once its conflict is resolved there;
/// the task is unblocked and the worktree removed
#[derive(Debug, Args)]
pub struct WorktreeIntegrateArgs {
    /// The task whose worktree to integrate
    #[arg(value_name = "TASK")]
    pub task: String,
}

pub fn run(ctx: &Context, args: WorktreeIntegrateArgs) -> Result<u8> {
    check_task_id(&args.task).map_err(|e| Failure::user(format!("TASK: {e}")))?;
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    let Some(record) = worktree::read_record(ws.root(), &args.task)? else {
        return Err(Failure::user(format!(
            "task `{}` has no worktree in {}",
            args.task,
            ws.display(&ws.worktrees_dir())
        )));
    };
    if let Some(live) = ws
        .active_sessions()?
        .into_iter()
        .find(|s| s.task == args.task)
    {
        return Err(Failure::busy(format!(
            "session {} still works on task `{}`; it integrates the worktree when it wraps",
            live.id, args.task
        )));
    }
    let done = wrap::integrate_resolved(&ws, &lock, &mut stack, &record)?;
    drop(lock);
    let head = done.head.clone().unwrap_or_else(|| "unchanged".into());
    let text = format!(
        "task={} base={} head={} status={}\nIntegrated {} onto {}{}.\n",
        done.task,
        record.worktree.base,
        &head[..head.len().min(12)],
        done.status,
        record.worktree.branch,
        record.worktree.base,
        if done.branch_deleted {
            "; the worktree and the branch are removed"
        } else {
            ""
        }
    );
    ctx.emit(
        json!({"task": done.task, "base": record.worktree.base, "branch": record.worktree.branch,
               "head": done.head, "status": done.status, "branch_deleted": done.branch_deleted}),
        &text,
    );
    Ok(code::OK)
}

//! `orchestrator worktree prune`: remove the worktrees whose work is safely on the base branch.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::commands::Context;
use crate::wrap::worktree;

/// Remove the worktrees of wrapped sessions whose branch is integrated and that hold nothing
/// uncommitted (their merged branches too); every other one is kept and listed
#[derive(Debug, Args)]
pub struct WorktreePruneArgs {}

pub fn run(ctx: &Context, _args: WorktreePruneArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let live = ws.active_sessions()?;
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    for record in worktree::records(ws.root())? {
        let wt = &record.worktree;
        let why_kept = if live.iter().any(|s| s.task == record.task) {
            Some("its session is live".to_string())
        } else if record.conflict.is_some() {
            Some(
                "its integration conflicted: resolve it, then `orchestrator worktree integrate`"
                    .to_string(),
            )
        } else if worktree::unintegrated(ws.root(), wt)? {
            Some(format!("{} has commits {} lacks", wt.branch, wt.base))
        } else if !worktree::uncommitted(&wt.path, &worktree::our_files(wt))?.is_empty() {
            Some("it holds uncommitted files".to_string())
        } else {
            None
        };
        match why_kept {
            Some(why) => kept.push(json!({"task": record.task, "path": wt.workdir, "why": why})),
            None => {
                let branch_deleted = worktree::remove(ws.root(), &record.task, wt, true, None)?;
                crate::store::file::remove_if_exists(&worktree::record_path(
                    ws.root(),
                    &record.task,
                ))?;
                removed.push(json!({"task": record.task, "path": wt.workdir, "branch_deleted": branch_deleted}));
            }
        }
    }
    // A worktree nobody recorded holds nothing a session made, unless someone worked in it.
    for (task, wt) in worktree::orphans(ws.root())? {
        let why_kept = if worktree::unintegrated(ws.root(), &wt)? {
            Some(format!("{} has commits {} lacks", wt.branch, wt.base))
        } else if !worktree::uncommitted(&wt.path, &worktree::our_files(&wt))?.is_empty() {
            Some("it holds uncommitted files".to_string())
        } else {
            None
        };
        match why_kept {
            Some(why) => kept.push(json!({"task": task, "path": wt.workdir, "why": why})),
            None => {
                let branch_deleted = worktree::remove(ws.root(), &task, &wt, true, None)?;
                removed.push(
                    json!({"task": task, "path": wt.workdir, "branch_deleted": branch_deleted}),
                );
            }
        }
    }
    drop(lock);
    let mut text = format!("removed={} kept={}\n", removed.len(), kept.len());
    for row in &removed {
        text.push_str(&format!(
            "removed {}\n",
            row["path"].as_str().unwrap_or_default()
        ));
    }
    for row in &kept {
        text.push_str(&format!(
            "kept {}: {}\n",
            row["path"].as_str().unwrap_or_default(),
            row["why"].as_str().unwrap_or_default()
        ));
    }
    ctx.emit(json!({"removed": removed, "kept": kept}), &text);
    Ok(0)
}

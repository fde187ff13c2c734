//! `orchestrator worktree list`: every session worktree, its owner and what is not integrated.

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use crate::commands::Context;
use crate::store::Workspace;
use crate::wrap::worktree::{self, WorktreeRecord};

/// List the sessions' worktrees: branch, owning session, live or wrapped, unintegrated commits,
/// uncommitted files, conflict
#[derive(Debug, Args)]
pub struct WorktreeListArgs {}

pub fn run(ctx: &Context, _args: WorktreeListArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let rows = describe_all(&ws)?;
    let mut text = String::new();
    if rows.is_empty() {
        text.push_str("no worktrees\n");
    }
    for row in &rows {
        text.push_str(&format!(
            "task={} branch={} session={} state={} unintegrated={} uncommitted={}{}\n  {}\n",
            row["task"].as_str().unwrap_or_default(),
            row["branch"].as_str().unwrap_or_default(),
            row["session"].as_str().unwrap_or("none"),
            row["state"].as_str().unwrap_or_default(),
            row["unintegrated"],
            row["uncommitted"].as_array().map_or(0, Vec::len),
            match row["conflict"].as_array() {
                Some(paths) => format!(
                    " conflict={}",
                    paths
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => String::new(),
            },
            row["path"].as_str().unwrap_or_default(),
        ));
    }
    ctx.emit(json!({"worktrees": rows}), &text);
    Ok(0)
}

/// One JSON row per worktree: `state` is `live` while its session runs, `conflict` when its
/// integration stopped on one, `orphan` when no record names it (a `start` killed while making
/// it), else `wrapped`.
pub(super) fn describe_all(ws: &Workspace) -> Result<Vec<Value>> {
    let live = ws.active_sessions()?;
    let mut rows = Vec::new();
    for record in worktree::records(ws.root())? {
        rows.push(describe(
            ws,
            &record,
            live.iter().any(|s| s.task == record.task),
        ));
    }
    for (task, wt) in worktree::orphans(ws.root())? {
        rows.push(json!({
            "task": task,
            "branch": wt.branch,
            "base": wt.base,
            "path": wt.workdir,
            "exists": true,
            "session": null,
            "agent": null,
            "state": "orphan",
            "unintegrated": worktree::unintegrated(ws.root(), &wt).unwrap_or(true),
            "uncommitted": worktree::uncommitted(&wt.path, &worktree::our_files(&wt)).unwrap_or_default(),
            "conflict": null,
        }));
    }
    Ok(rows)
}

fn describe(ws: &Workspace, record: &WorktreeRecord, live: bool) -> Value {
    let wt = &record.worktree;
    let state = if live {
        "live"
    } else if record.conflict.is_some() {
        "conflict"
    } else {
        "wrapped"
    };
    json!({
        "task": record.task,
        "branch": wt.branch,
        "base": wt.base,
        "path": wt.workdir,
        "exists": wt.path.exists(),
        "session": record.session,
        "agent": record.agent,
        "state": state,
        "unintegrated": worktree::unintegrated(ws.root(), wt).unwrap_or(true),
        "uncommitted": worktree::uncommitted(&wt.path, &worktree::our_files(wt)).unwrap_or_default(),
        "conflict": record.conflict.as_ref().map(|c| &c.paths),
    })
}

//! After a wrap: its commit goes to the shared remote (a fleet's clones meet there), and a
//! commit that conflicts with what other machines pushed blocks its task.
//!
//! This runs without the workspace lock: a push may wait on the network for as long as its
//! attempts and timeouts allow, and no other agent of this machine should wait with it. It
//! changes nothing the wrap recorded: a failed push leaves the commit on the local branch,
//! and the next wrap pushes it with its own.

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

use super::WrapReport;
use super::push::{PushOutcome, PushRequest, push_with_retry};
use crate::core::stack::{PUSH_ATTEMPTS, Settings, Status};
use crate::store::Workspace;

/// The longest a single `git push` or `git fetch` may take before it is killed.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a wrap waits for its turn to push on a fleet store.
const PUSH_TURN_WAIT: Duration = Duration::from_secs(120);

/// The fleet's push turn, given back when dropped.
struct PushTurn<'a>(&'a std::sync::Arc<crate::store::postgres::Fleet>);

impl Drop for PushTurn<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.0.with(|pg| pg.end_push_turn()) {
            tracing::warn!("cannot end the push turn (it ends with the connection): {err:#}");
        }
    }
}

/// The remote a wrap pushes to: `settings.git.remote`, else `origin` on a fleet store.
pub fn remote(ws: &Workspace, settings: &Settings) -> Option<String> {
    settings
        .git
        .remote
        .clone()
        .or_else(|| ws.fleet().map(|_| "origin".to_string()))
}

/// Pushes the branch the wrap committed on; `None` when nothing is to be pushed (no remote
/// set, a wrap without commit, not in git). Never fails the wrap: a failure is in the value.
pub fn publish(ws: &Workspace, settings: &Settings, report: &WrapReport) -> Option<Value> {
    let remote = remote(ws, settings)?;
    // `--no-commit` (or commit_on_wrap off), or no repository: nothing of this wrap to push.
    if report.commit.is_null()
        || report.commit["result"] == "skipped"
        || report.commit["result"] == "not_a_repository"
    {
        return None;
    }
    match push(ws, settings, Some(report), &remote) {
        Ok(value) => value,
        Err(err) => {
            tracing::warn!("the wrap's commit stays on this machine: {err:#}");
            Some(json!({"result": "failed", "remote": remote, "error": format!("{err:#}")}))
        }
    }
}

/// Pushes what earlier wraps left unpushed (their push failed for good): `run` does it as it
/// stops, so the last wrap of a loop does not wait for a next wrap that never comes. A
/// conflict parks the branch as `orchestrator/unpushed-<host>`.
pub fn push_leftovers(ws: &Workspace, settings: &Settings) -> Option<Value> {
    let remote = remote(ws, settings)?;
    match push(ws, settings, None, &remote) {
        Ok(value) => value,
        Err(err) => {
            tracing::warn!("commits stay on this machine unpushed: {err:#}");
            Some(json!({"result": "failed", "remote": remote, "error": format!("{err:#}")}))
        }
    }
}

/// `report`: the wrap whose commit this pushes (its task is blocked on a conflict).
fn push(
    ws: &Workspace,
    settings: &Settings,
    report: Option<&WrapReport>,
    remote: &str,
) -> Result<Option<Value>> {
    let Ok(repo) = git2::Repository::discover(ws.root()) else {
        return Ok(None);
    };
    let workdir = repo
        .workdir()
        .ok_or_else(|| anyhow!("{} is a bare repository", ws.root().display()))?
        .to_path_buf();
    let head = repo.head().context("reading HEAD")?;
    let Some(branch) = head
        .is_branch()
        .then(|| head.shorthand().map(str::to_string))
        .flatten()
    else {
        tracing::warn!("HEAD is not on a branch: the wrap's commit is not pushed");
        return Ok(None);
    };
    drop(head);
    let stack_rel = repo_relative(&workdir, &ws.stack_path());
    let regenerate = |path: &str| -> Result<Option<Vec<u8>>> {
        // The stack is the fleet store's export: the store's current text is the resolution.
        match (ws.fleet(), &stack_rel) {
            (Some(fleet), Some(rel)) if rel == path => {
                let stack = fleet.with(|pg| pg.export())?;
                Ok(Some(stack.to_json().into_bytes()))
            }
            _ => Ok(None),
        }
    };
    let park = match report {
        Some(report) => format!("orchestrator/{}", report.task),
        None => format!("orchestrator/unpushed-{}", crate::store::host_name()),
    };
    // On a fleet store, machines take turns to push: racing, each loser fetches and replays,
    // and under twenty machines some lose every attempt. Without a turn in time (or the
    // store), the push races as it would without a store.
    let turn =
        ws.fleet().and_then(
            |fleet| match fleet.with(|pg| pg.take_push_turn(PUSH_TURN_WAIT)) {
                Ok(true) => Some(PushTurn(fleet)),
                Ok(false) => {
                    tracing::warn!("no push turn within {PUSH_TURN_WAIT:?}: pushing anyway");
                    None
                }
                Err(err) => {
                    tracing::warn!("cannot take a push turn: {err:#}");
                    None
                }
            },
        );
    let outcome = push_with_retry(&PushRequest {
        workdir: &workdir,
        remote,
        branch: &branch,
        attempts: settings.git.push_attempts.unwrap_or(PUSH_ATTEMPTS),
        timeout: NETWORK_TIMEOUT,
        regenerate: &regenerate,
        park_branch: &park,
    });
    drop(turn);
    let outcome = outcome?;
    Ok(Some(match outcome {
        PushOutcome::NoRemote => return Ok(None),
        PushOutcome::UpToDate => {
            json!({"result": "up_to_date", "remote": remote, "branch": branch})
        }
        PushOutcome::Pushed {
            tip,
            attempts,
            replayed,
        } => json!({"result": "pushed", "remote": remote, "branch": branch, "tip": tip,
                    "attempts": attempts, "replayed": replayed}),
        PushOutcome::Conflict { paths, parked } => {
            // Following first: blocking rewrites task_stack.json, the store's export.
            follow_remote(&workdir, remote, &branch, &|path| {
                ws.fleet().is_some() && stack_rel.as_deref() == Some(path)
            });
            if let Some(report) = report {
                block_task(ws, report, remote, &branch, &paths, &parked)?;
            } else {
                tracing::warn!(
                    "unpushed commits conflict with {remote}/{branch} on {}: kept on {remote} as {parked}",
                    paths.join(", ")
                );
            }
            json!({"result": "conflict", "remote": remote, "branch": branch, "paths": paths,
                   "parked": parked})
        }
    }))
}

/// The task whose wrap commit conflicts with the remote is blocked, saying where its work is.
fn block_task(
    ws: &Workspace,
    report: &WrapReport,
    remote: &str,
    branch: &str,
    paths: &[String],
    parked: &str,
) -> Result<()> {
    let reason = format!(
        "push-conflict: the wrap commit of session {} conflicts with {remote}/{branch} on {}; it is kept on {remote} as the branch {parked}: merge it into {branch} by hand, then `orchestrator task set {} --status pending`",
        report.session,
        paths.join(", "),
        report.task
    );
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    if let Some(task) = stack.task_mut(&report.task) {
        task.status = Status::Blocked;
        task.blocked_reason = Some(reason);
        ws.save_stack(&lock, &stack)?;
    }
    Ok(())
}

/// After parking a conflicting commit on the remote, this clone follows the remote's branch
/// again (its files as well, where the user has not changed them), so that the next wrap does
/// not carry the conflict along. The work is on the parked branch.
fn follow_remote(workdir: &Path, remote: &str, branch: &str, regenerated: &dyn Fn(&str) -> bool) {
    let moved = (|| -> Result<()> {
        let repo = git2::Repository::open(workdir)?;
        let local_ref = format!("refs/heads/{branch}");
        let from = repo.refname_to_id(&local_ref)?;
        let to = repo.refname_to_id(&format!("refs/remotes/{remote}/{branch}"))?;
        if from == to {
            return Ok(());
        }
        super::worktree::update_work_tree(&repo, from, to, regenerated)?;
        repo.reference_matching(
            &local_ref,
            to,
            true,
            from,
            "orchestrator: follow the remote after a push conflict",
        )?;
        Ok(())
    })();
    if let Err(err) = moved {
        tracing::warn!(
            "the local {branch} still holds the conflicting commit (it is also on the remote): {err:#}"
        );
    }
}

fn repo_relative(workdir: &Path, path: &Path) -> Option<String> {
    let workdir = workdir.canonicalize().ok()?;
    let path = path.canonicalize().ok()?;
    path.strip_prefix(&workdir)
        .ok()
        .map(|rel| rel.to_string_lossy().replace('\\', "/"))
}

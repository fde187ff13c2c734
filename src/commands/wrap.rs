//! `orchestrator wrap`: end the session gracefully (see `crate::wrap` for the steps).

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use super::{Context, SessionArg, agent_arg, select_session};
use crate::core::session::TokenReading;
use crate::error::{Failure, code};
use crate::meters::{Measured, Tokens};
use crate::store::undo::Undo;
use crate::wrap::{self, WrapOptions, WrapReport};

/// End the session gracefully: backup, handoff, progress saved, session archived, commit
#[derive(Debug, Clone, Args)]
pub struct WrapArgs {
    /// What this session achieved
    #[arg(long, value_name = "TEXT")]
    pub summary: Option<String>,
    /// What the next session should do (repeatable)
    #[arg(long = "next", value_name = "TEXT")]
    pub next: Vec<String>,
    /// The task is finished: mark it done
    #[arg(long)]
    pub done: bool,
    /// Skip the database backup
    #[arg(long)]
    pub no_backup: bool,
    /// Skip the git commit
    #[arg(long)]
    pub no_commit: bool,
    /// Why the session ends
    #[arg(long, value_name = "TEXT", default_value = "wrap")]
    pub reason: String,
    /// Who is wrapping: refused when the session belongs to another agent
    #[arg(long, env = "ORCHESTRATOR_AGENT", value_name = "NAME")]
    pub agent: Option<String>,
    #[command(flatten)]
    pub session: SessionArg,
    /// Set by `run` only: what the agent printed last, for the handoff.
    #[arg(skip)]
    pub agent_output: Option<String>,
}

pub fn run(ctx: &Context, args: WrapArgs) -> Result<u8> {
    let report = wrap_session(ctx, args)?;
    let (json, text) = describe(&report);
    ctx.emit(json, &text);
    Ok(code::OK)
}

/// Wraps the session `args` names (or the only one), or finishes its cut-off wrap.
pub(super) fn wrap_session(ctx: &Context, args: WrapArgs) -> Result<WrapReport> {
    let reason = args.reason.trim().to_string();
    if reason.is_empty() {
        return Err(Failure::user("--reason cannot be empty"));
    }
    let agent = agent_arg(args.agent.as_deref())?;
    let ws = ctx.workspace()?;
    let named = args.session.session.as_deref();
    // The transcript is read before the lock is taken, so other agents' commands never wait
    // for it (see `checkpoint`).
    let early = select_session(&ws, named, agent, true)
        .ok()
        .filter(|session| !session.is_wrapping())
        .map(|session| Measured::read(&ws, &session));
    let lock = ws.lock()?;
    let mut stack = ws.load_stack()?;
    let mut session = select_session(&ws, named, agent, true)?;
    ws.clean_temp_files(&lock, &[ws.root().join(&stack.settings.handoff_dir)]);
    let fresh = !session.is_wrapping();
    // A session that lost its task (its lease ran out and another took it, or `fleet reap`
    // released it) must not write it: refused, changing nothing. A later `start` here wraps
    // it as recovered.
    if fresh
        && ws.fleet().is_some()
        && let Some(holder) = stack.task(&session.task).and_then(|task| {
            wrap::lost_to(task, &session).or_else(|| {
                let ours = task.claim.as_ref().is_some_and(|c| c.session == session.id);
                (!ours && session.fence != 0).then(|| "no session (its lease was reaped)".into())
            })
        })
    {
        ws.note_lost(
            &crate::core::stack::Lost {
                task: session.task.clone(),
                session: session.id.clone(),
                holder: Some(holder.clone()),
            },
            &session.agent,
            ctx.now,
        );
        return Err(Failure::lost(format!(
            "session {} lost task `{}`: {holder} holds it now (its fencing token is newer); nothing was written",
            session.id, session.task
        )));
    }
    // The session's files as they are, to put back if the wrap fails at once. Saved as hard
    // links, so putting them back needs no space even when a full disk failed the wrap.
    let mut undo = Undo::new();
    if fresh {
        undo.before_replace(&ws.active_path(&session.id))?;
        undo.before_replace(&ws.checkpoint_log_path(&session.id))?;
        let options = WrapOptions {
            reason,
            summary: args.summary,
            next_steps: args.next,
            mark_done: args.done,
            backup: !args.no_backup,
            commit: !args.no_commit && stack.settings.git.commit_on_wrap,
            agent_output: args.agent_output,
        };
        // The wrap's figures (handoff, commit message) use the transcript's latest fill.
        let measured = match early {
            Some(measured) if measured.is_of(&session) => measured,
            _ => Measured::read(&ws, &session),
        };
        let tokens = Tokens::from_measured(&session, None, &measured);
        measured.save();
        if let Some(used) = tokens.from_transcript() {
            session.tokens = Some(TokenReading {
                used,
                source: "transcript".into(),
                at: ctx.now,
            });
        }
        if let Some(cost) = tokens.cost(&stack.settings.pricing) {
            session.cost = Some(cost);
        }
        wrap::begin(&mut session, options, ctx.now, ctx.now);
        ws.save_active(&lock, &session)?;
    } else if let Some(journal) = session.wrap.as_mut() {
        eprintln!(
            "finishing the wrap of {} begun at {}",
            session.id,
            crate::clock::format(journal.begun)
        );
        // Lets a user get past a step that keeps failing (a lost database, a broken repo).
        if args.no_backup
            && journal
                .steps
                .backup
                .as_ref()
                .is_none_or(|b| b["result"] == "pending")
        {
            journal.backup_enabled = false;
        }
        if args.no_commit
            && journal
                .steps
                .commit
                .as_ref()
                .is_none_or(|c| c["result"] == "pending")
        {
            journal.commit_enabled = false;
        }
    }

    let session_id = session.id.clone();
    let report = match wrap::finish(&ws, &lock, &mut stack, session, ctx.now) {
        Ok(report) => report,
        Err(err) => {
            // Failing before any step completed (a backup that cannot be made) leaves the session
            // live, as if wrap had never run (dropping the undo). Past that, the journal is kept:
            // `status` shows the half-done wrap and the next `wrap` or `start` finishes it.
            let begun = ws
                .load_active(&session_id)
                .is_ok_and(|s| s.wrap.is_some_and(|j| j.steps.metrics.is_some()));
            if begun || !fresh {
                undo.commit();
            }
            return Err(err);
        }
    };
    undo.commit();
    // The wrap's stack step wrote the journal's records into the stack it committed; what is
    // left of the journal is retired. The wrap is done whatever happens here.
    // (A fleet store has no journal here; its export was written by the stack step and
    // committed, and must stay as committed for the push to replay onto other machines' work.)
    if ws.fleet().is_none()
        && let Err(err) = ws.fold_journal(&lock)
    {
        tracing::warn!("wrapped, but folding the checkpoint journal failed: {err:#}");
    }
    drop(lock);
    // Outside the lock: a push waits on the network, and other agents here must not.
    let mut report = report;
    report.push = wrap::publish::publish(&ws, &stack.settings, &report);
    Ok(report)
}

pub fn describe(report: &WrapReport) -> (Value, String) {
    let commit = match report.commit["result"].as_str() {
        Some("committed") => report.commit["oid"]
            .as_str()
            .map_or("committed".into(), |o| o[..o.len().min(12)].to_string()),
        Some(other) => other.to_string(),
        None => "none".into(),
    };
    let backup = match report.backup["result"].as_str() {
        Some("ok") => report.backup["path"].as_str().unwrap_or("ok").to_string(),
        Some(other) => other.to_string(),
        None => "none".into(),
    };
    let handoff = report.handoff.display().to_string();
    let json = json!({
        "session": report.session,
        "task": report.task,
        "reason": report.reason,
        "handoff": handoff,
        "backup": report.backup,
        "metrics": report.metrics,
        "commit": report.commit,
        "steps": report.steps,
        "integrate": report.integrate,
        "worktree": report.worktree.as_ref().map(|wt| json!({"path": wt.workdir, "branch": wt.branch, "base": wt.base})),
        "resumed": report.resumed,
        "progress": report.progress,
        "status": report.status,
        "push": report.push,
    });
    let next = if report.status.is_open() {
        format!(
            "the next `orchestrator start` resumes {} from {}",
            report.task, report.progress
        )
    } else {
        format!(
            "task {} is {}; the next `orchestrator start` picks the next task",
            report.task, report.status
        )
    };
    let mut text = format!(
        "session={} task={} progress={} status={} handoff={handoff} backup={backup} commit={commit}\nWrapped {}; {next}.\n",
        report.session, report.task, report.progress, report.status, report.session
    );
    for metric in &report.metrics {
        match (&metric.error, metric.value) {
            (Some(err), _) => {
                text.push_str(&format!("metric {}: query failed: {err}\n", metric.name))
            }
            (None, Some(value)) => text.push_str(&format!("metric {}: {value}\n", metric.name)),
            (None, None) => {}
        }
    }
    if let (Some(integrate), Some(wt)) = (&report.integrate, &report.worktree) {
        let line = match integrate["result"].as_str() {
            Some("integrated") => format!("integrated {} onto {}", wt.branch, wt.base),
            Some("nothing") => format!("{} had nothing {} lacks", wt.branch, wt.base),
            Some("branch") => format!(
                "left the work on {} for a pull request (settings.parallel.integrate = branch)",
                wt.branch
            ),
            Some("conflict") => format!(
                "merge conflict: task {} is blocked; {}",
                report.task,
                crate::wrap::conflict_reason(
                    &report.task,
                    wt,
                    &integrate["paths"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                )
            ),
            _ => format!(
                "not integrated: {}",
                integrate["reason"]
                    .as_str()
                    .or(integrate["error"].as_str())
                    .unwrap_or("unknown")
            ),
        };
        text.push_str(&line);
        text.push('\n');
    }
    if let Some(push) = &report.push {
        let remote = push["remote"].as_str().unwrap_or("the remote");
        let branch = push["branch"].as_str().unwrap_or_default();
        let line = match push["result"].as_str() {
            Some("pushed") if push["replayed"].as_u64().unwrap_or(0) > 0 => format!(
                "pushed to {remote}/{branch} after replaying onto commits other machines pushed first ({} attempts)",
                push["attempts"]
            ),
            Some("pushed") => format!("pushed to {remote}/{branch}"),
            Some("up_to_date") => format!("{remote}/{branch} already had this commit"),
            Some("conflict") => format!(
                "not pushed: the commit conflicts with {remote}/{branch}; it is kept there as {}, and task {} is blocked",
                push["parked"].as_str().unwrap_or_default(),
                report.task
            ),
            _ => format!(
                "not pushed (the commit stays here; the next wrap pushes it): {}",
                push["error"].as_str().unwrap_or("unknown")
            ),
        };
        text.push_str(&line);
        text.push('\n');
    }
    // A commit skipped for the repository's state (a merge...) needs the user: say why.
    if report.commit["state"].is_string()
        && let Some(reason) = report.commit["reason"].as_str()
    {
        text.push_str(&format!("commit skipped: {reason}\n"));
    }
    for lock in report.commit["recovered_locks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        text.push_str(&format!(
            "removed the stale git lock {} (left by a killed commit)\n",
            lock.as_str().unwrap_or_default()
        ));
    }
    if let Some(skipped) = report.commit["skipped"]
        .as_array()
        .filter(|s| !s.is_empty())
    {
        for file in skipped {
            text.push_str(&format!(
                "not committed: {} ({})\n",
                file["path"].as_str().unwrap_or_default(),
                file["reason"].as_str().unwrap_or_default()
            ));
        }
    }
    (json, text)
}

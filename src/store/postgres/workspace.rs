//! The workspace's operations when a fleet store holds the queue: the stack, claims and
//! checkpoints go to PostgreSQL; session records stay on this machine (each machine wraps its
//! own sessions), with a summary of each in the store for `status --fleet`; `task_stack.json`
//! is the store's export, written after every whole-stack save for the wrap to commit.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Claimed, Fleet, Origin, UnfinishedStart};
use crate::core::session::{CheckpointEvent, Session};
use crate::core::stack::{CheckpointWrite, Claim, Loaded, TaskStack};
use crate::error::Failure;
use crate::store::{Workspace, WorkspaceLock};

/// How old a start's reservation must be before a dead one's claim is given back: longer than
/// a start takes, worktree checkout included.
pub const UNFINISHED_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

impl Workspace {
    /// The stack (or, with `only`, its settings and those tasks) from the fleet store.
    pub(in crate::store) fn fleet_stack(
        &self,
        fleet: &Arc<Fleet>,
        only: Option<&[&str]>,
    ) -> Result<TaskStack> {
        let stack = fleet.with_load(|pg| pg.load_stack(only))?;
        self.check_settings_paths(&stack.settings)?;
        Ok(stack)
    }

    /// Saves what the command changed (compare and swap per task), then refreshes
    /// `task_stack.json` from the store.
    pub(in crate::store) fn fleet_save(
        &self,
        lock: &WorkspaceLock,
        fleet: &Arc<Fleet>,
        stack: &TaskStack,
    ) -> Result<()> {
        stack
            .validate()
            .map_err(|invalid| Failure::user(format!("{}: {invalid}", fleet.target().display())))?;
        fleet.with(|pg| pg.save_stack(stack))?;
        self.fleet_export_here(lock, fleet)
    }

    /// Writes the store's stack to `task_stack.json`, the copy that the wrap commits.
    pub(in crate::store) fn fleet_export_here(
        &self,
        lock: &WorkspaceLock,
        fleet: &Arc<Fleet>,
    ) -> Result<()> {
        let mut exported = fleet.with(|pg| pg.export())?;
        exported.loaded = Loaded::default();
        self.save_stack_file(lock, &exported)
    }

    pub(in crate::store) fn fleet_checkpoint(
        &self,
        fleet: &Arc<Fleet>,
        stack: &mut TaskStack,
        write: &CheckpointWrite,
        event: &CheckpointEvent,
    ) -> Result<()> {
        let Some(task) = stack.task(&write.task).cloned() else {
            return Err(Failure::user(format!(
                "the fleet store {}: task `{}` of session {} is no longer in the stack",
                fleet.target().display(),
                write.task,
                write.session
            )));
        };
        let loaded_text = stack
            .loaded
            .0
            .as_ref()
            .and_then(|texts| texts.lock().ok()?.get(&write.task).cloned());
        // The agent is the session row's, looked up by the statement itself: no second read of
        // the session record on the checkpoint's path.
        let origin = Origin {
            host: &crate::store::host_name(),
            agent: "",
            session: &write.session,
        };
        let mut summary = json!({
            "progress_done": write.progress,
            "lease_expires": crate::clock::format(event.lease_expires),
        });
        if let Some(tokens) = &event.tokens {
            summary["tokens_used"] = json!(tokens.used);
        }
        let written = fleet.with(|pg| {
            pg.append_checkpoint(
                write,
                &task,
                loaded_text,
                &summary,
                &origin,
                event.checkpoint.at,
            )
        })?;
        if let Some(entry) = stack.task_mut(&write.task) {
            *entry = written;
        }
        Ok(())
    }

    /// Claims the first of `candidates` no other machine holds; `None` when all are taken.
    pub fn fleet_claim_first(
        &self,
        fleet: &Arc<Fleet>,
        candidates: &[&str],
        claim: &Claim,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>> {
        let origin = Origin {
            host: &crate::store::host_name(),
            agent: &claim.agent,
            session: &claim.session,
        };
        fleet.with(|pg| pg.claim_first(candidates, claim, &origin, now))
    }

    /// Logs, on a fleet store, a write refused because its session lost the task.
    pub fn note_lost(&self, lost: &crate::core::stack::Lost, agent: &str, now: DateTime<Utc>) {
        if let Some(fleet) = self.fleet() {
            let origin = Origin {
                host: &crate::store::host_name(),
                agent,
                session: &lost.session,
            };
            let _ = fleet.with(|pg| {
                pg.record_refusal(lost, &origin, now);
                Ok(())
            });
        }
    }

    /// The account whose quota `agent` draws on: its `settings.agents.<name>.account`, else
    /// the agent's name (a `run --workers` loop's `NAME-N` counts as `NAME`).
    pub fn quota_account(settings: &crate::core::stack::Settings, agent: &str) -> String {
        let base = agent
            .rsplit_once('-')
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(agent, |(base, _)| base);
        [agent, base]
            .iter()
            .find_map(|name| settings.agents.get(name)?.account.clone())
            .unwrap_or_else(|| base.to_string())
    }

    /// On a fleet store, pauses every loop of `account` on every machine (a later pause
    /// already recorded wins); returns the pause in force.
    pub fn fleet_set_pause(
        &self,
        account: &str,
        pause: &crate::store::run_state::Pause,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let Some(fleet) = self.fleet() else {
            return Ok(None);
        };
        let host = crate::store::host_name();
        let origin = Origin {
            host: &host,
            agent: &pause.agent,
            session: "",
        };
        fleet
            .with(|pg| pg.set_pause(account, pause.until, &pause.reason, &origin, now))
            .map(Some)
    }

    /// On a fleet store, the pause on `account` that holds at `now`.
    pub fn fleet_pause(
        &self,
        account: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::store::run_state::Pause>> {
        let Some(fleet) = self.fleet() else {
            return Ok(None);
        };
        Ok(fleet
            .with(|pg| pg.pause(account, now))?
            .map(|(until, reason)| crate::store::run_state::Pause {
                until,
                reason,
                agent: format!("a loop on account {account}"),
            }))
    }

    /// A session id unused on every machine of the fleet (and here), reserved in the store.
    pub fn fleet_session_id(
        &self,
        fleet: &Arc<Fleet>,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let host = crate::store::host_name();
        let origin = Origin {
            host: &host,
            agent,
            session: "",
        };
        fleet.with(|pg| pg.reserve_session_id(now, &|id| self.session_id_taken(id), &origin))
    }

    /// Gives back a claim (and the reserved session id) that a failed `start` took.
    /// Gives back the claims of starts on this machine that died (killed) between their claim
    /// and their session record: without this their task would wait for its lease to run out.
    /// Only starts older than [`UNFINISHED_GRACE`] whose process is gone count, so a start
    /// still checking out a worktree, or one on another machine of the same host name a moment
    /// ago, is left alone. The ones given back.
    pub fn fleet_release_unfinished_starts(
        &self,
        fleet: &Arc<Fleet>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UnfinishedStart>> {
        let host = crate::store::host_name();
        let unfinished = fleet.with(|pg| pg.unfinished_starts(&host, UNFINISHED_GRACE))?;
        let mut released = Vec::new();
        for start in unfinished {
            let pid = libc::pid_t::try_from(start.pid).unwrap_or(0);
            if pid <= 0
                || crate::store::file::process_alive(pid)
                || self.active_path(&start.session).exists()
            {
                continue;
            }
            fleet.with(|pg| pg.release_unfinished(&start, &host, now))?;
            released.push(start);
        }
        Ok(released)
    }

    pub fn fleet_unclaim(&self, fleet: &Arc<Fleet>, claim: Option<(&str, u64)>, session: &str) {
        let given_back = fleet.with(|pg| {
            if let Some((task, token)) = claim {
                pg.unclaim(task, session, token)?;
            }
            pg.drop_reserved_session(session)
        });
        if let Err(err) = given_back {
            tracing::warn!(
                "cannot give back what session {session} reserved (its lease runs out by itself): {err:#}"
            );
        }
    }

    pub(in crate::store) fn fleet_save_session(
        &self,
        fleet: &Arc<Fleet>,
        session: &Session,
    ) -> Result<()> {
        let origin = origin_of(session);
        let state = if session.is_wrapping() {
            "wrapping"
        } else {
            "live"
        };
        fleet.with(|pg| {
            pg.save_session(
                &session.id,
                &session.task,
                &origin,
                state,
                &session_summary(self, session),
                session.started,
            )
        })
    }

    pub(in crate::store) fn fleet_end_session(
        &self,
        fleet: &Arc<Fleet>,
        session: &Session,
    ) -> Result<()> {
        let origin = origin_of(session);
        let at = session
            .wrap
            .as_ref()
            .map_or_else(|| session.last_activity(), |w| w.ended);
        let record = serde_json::to_string(session).context("serializing a session")?;
        fleet.with(|pg| pg.end_session(&origin, &session.task, &record, at))
    }

    /// Every machine's archived sessions, from the store; a record this binary cannot read is
    /// skipped with a warning.
    pub fn fleet_archived_sessions(&self, fleet: &Arc<Fleet>) -> Result<Vec<Session>> {
        let records = fleet.with(|pg| pg.archived_records())?;
        Ok(records
            .iter()
            .filter_map(|text| match serde_json::from_str::<Session>(text) {
                Ok(session) => Some(session),
                Err(err) => {
                    tracing::warn!("skipping a session record in the fleet store: {err}");
                    None
                }
            })
            .collect())
    }
}

/// What the store keeps of a session for `status --fleet`: where it runs and how far it is.
pub fn session_summary(ws: &Workspace, session: &Session) -> Value {
    json!({
        "workspace": ws.root().display().to_string(),
        "pid": session.pid,
        "budget": session.budget,
        "tokens_used": session.tokens_used(),
        "progress_done": session.checkpoints.last().map_or(session.progress_at_start.done, |c| c.progress),
        "lease_expires": crate::clock::format(session.lease_expires),
    })
}

/// A session as the author of the store's writes and events.
fn origin_of(session: &Session) -> Origin<'_> {
    Origin {
        host: &session.host,
        agent: &session.agent,
        session: &session.id,
    }
}

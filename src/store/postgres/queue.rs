//! The task queue on PostgreSQL: loading the stack, claims with `FOR UPDATE SKIP LOCKED` and
//! fencing tokens, checkpoints under their token, whole-stack saves by compare and swap, the
//! fleet's sessions and events.
//!
//! Every operation is one transaction, or one statement: a server that stops answering leaves
//! either all of it or none. Times are the caller's clock (`ORCHESTRATOR_NOW` in tests), never
//! the server's `now()`, so that a lease means the same to every reader. References:
//! `SELECT ... FOR UPDATE SKIP LOCKED`
//! (<https://www.postgresql.org/docs/15/sql-select.html#SQL-FOR-UPDATE-SHARE>), data-modifying
//! statements in `WITH` (<https://www.postgresql.org/docs/15/queries-with.html#QUERIES-WITH-MODIFYING>).

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use postgres::types::Type;
use serde_json::{Value, json};
use std::collections::HashMap;

use super::{PgStore, sql, top_level_json};
use crate::core::stack::{
    CheckpointWrite, Claim, ClaimWrite, LeaseWrite, Loaded, Lost, Status, Task, TaskStack,
};
use crate::error::Failure;

/// How many times a checkpoint re-reads its task when another write changed it in between
/// (an edit from another machine); past that the agent is told to try again.
const CHECKPOINT_RETRIES: usize = 5;

/// The advisory lock whose holder is the one machine pushing to the shared remote: the
/// others wait their turn instead of racing, fetching and replaying again and again.
const PUSH_TURN_LOCK: i64 = 0x6f72_6368_7075_7368; // "orchpush"

/// A live session as the fleet sees it (`status --fleet`).
#[derive(Debug, Clone)]
pub struct FleetSession {
    pub id: String,
    pub host: String,
    pub agent: String,
    pub task: String,
    pub state: String,
    /// The summary each machine writes (see [`session_summary`]).
    pub summary: Value,
    pub lease_expires: Option<DateTime<Utc>>,
    /// Whether the task's lease is still this session's.
    pub holds_lease: bool,
}

/// One line of `fleet log`.
#[derive(Debug, Clone)]
pub struct FleetEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub host: String,
    pub agent: Option<String>,
    pub session: Option<String>,
    pub task: Option<String>,
    pub kind: String,
    pub detail: Value,
}

/// Who a write comes from, for the event log.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub host: &'a str,
    pub agent: &'a str,
    pub session: &'a str,
}

/// A `start` that reserved a session id and never recorded the session (see
/// [`PgStore::unfinished_starts`]).
#[derive(Debug, Clone)]
pub struct UnfinishedStart {
    pub session: String,
    /// The process that ran it, on the same host.
    pub pid: u32,
    pub agent: String,
    /// The task it claimed and its token, if it got that far.
    pub claim: Option<(String, u64)>,
}

/// A claim the queue gave: the task as it now is, and whose expired lease it took over.
#[derive(Debug)]
pub struct Claimed {
    pub task: Task,
    pub token: u64,
    pub reclaimed_from: Option<Claim>,
}

impl PgStore {
    /// The stack, or (with `only`) its top level and the tasks named, as one consistent
    /// snapshot. `loaded` keeps each task's text for [`PgStore::save_stack`]'s compare and swap.
    pub fn load_stack(&mut self, only: Option<&[&str]>) -> Result<TaskStack> {
        let display = self.target.display();
        // One statement is one snapshot: the top level and the tasks agree, in one round trip.
        let ids: Option<Vec<String>> =
            only.map(|ids| ids.iter().map(|id| id.to_string()).collect());
        // A connection's first load reads the schema's version in the same statement.
        let rows = self.client.query_typed(
            "SELECT NULL::text, doc::text, -1 AS position,
                    (SELECT max(version) FROM orchestrator.schema_version)
             FROM orchestrator.stack
             UNION ALL
             SELECT id, doc::text, position, NULL FROM orchestrator.task
             WHERE $1::text[] IS NULL OR id = ANY($1)
             ORDER BY 3",
            &[(&ids, Type::TEXT_ARRAY)],
        );
        let rows = match rows {
            Ok(rows) => rows,
            // No schema, or one this binary does not know: say which.
            Err(err) if !self.schema_checked && err.as_db_error().is_some() => {
                self.check_schema()?;
                return Err(sql(&display, err));
            }
            Err(err) => return Err(sql(&display, err)),
        };
        let mut rows = rows.into_iter();
        let top: Option<(String, Option<i32>)> = match rows.next() {
            Some(row) if row.get::<_, Option<String>>(0).is_none() => {
                Some((row.get(1), row.get(3)))
            }
            _ => None,
        };
        if !self.schema_checked {
            match &top {
                Some((_, version)) => self.accept_schema(version.unwrap_or(0))?,
                None => self.check_schema()?,
            }
        }
        let top = top.map(|(doc, _)| doc);
        let Some(top) = top else {
            return Err(Failure::user(format!(
                "the fleet store {display} holds no stack yet: `orchestrator fleet import` puts one in"
            )));
        };
        let mut stack: TaskStack = serde_json::from_str(&top).with_context(|| {
            format!("the fleet store {display}: its stack row is not a task stack")
        })?;
        let mut texts = HashMap::with_capacity(rows.len() + 1);
        for row in rows {
            let id: String = row.get::<_, Option<String>>(0).unwrap_or_default();
            let doc: String = row.get(1);
            let task: Task = serde_json::from_str(&doc)
                .with_context(|| format!("the fleet store {display}: task {id} is not a task"))?;
            stack.tasks.push(task);
            texts.insert(id, doc);
        }
        texts.insert(Loaded::TOP.to_string(), top);
        stack.loaded = Loaded::new(texts);
        if only.is_none() {
            stack.validate().map_err(|invalid| {
                Failure::user(format!("the fleet store {display}: {invalid}"))
            })?;
        }
        Ok(stack)
    }

    /// Writes what `stack` changed since it was loaded, in one transaction: each changed task
    /// only if it is still as loaded (compare and swap on its text), new tasks appended,
    /// removed ones deleted. A task another machine changed meanwhile fails the whole save
    /// (exit 4, nothing written): the command is run again on the new state.
    pub fn save_stack(&mut self, stack: &TaskStack) -> Result<()> {
        let display = self.target.display();
        let Some(loaded) = &stack.loaded.0 else {
            return Err(anyhow::anyhow!(
                "internal: a stack saved to the fleet store must have been loaded from it"
            ));
        };
        let mut loaded = loaded.lock().expect("the loaded texts are never poisoned");
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        // One whole-stack writer at a time; claims and checkpoints go on (they lock rows).
        let current_top: String = tx
            .query_one("SELECT doc::text FROM orchestrator.stack FOR UPDATE", &[])
            .map_err(|e| sql(&display, e))?
            .get(0);
        let mut written: Vec<(String, String)> = Vec::new();
        let top = top_level_json(stack);
        if loaded.get(Loaded::TOP) != Some(&top) {
            if loaded.get(Loaded::TOP) != Some(&current_top) {
                return Err(changed_elsewhere(&display, "the stack's settings"));
            }
            tx.execute(
                "UPDATE orchestrator.stack SET doc = $1::text::json, revision = revision + 1, updated_at = now()",
                &[&top],
            )
            .map_err(|e| sql(&display, e))?;
            written.push((Loaded::TOP.to_string(), top));
        }
        let update = tx
            .prepare(
                "UPDATE orchestrator.task
                 SET doc = $2::text::json, status = $3, priority = $4, fencing_token = $5,
                     lease_session = $6, lease_expires_at = $7, updated_at = now()
                 WHERE id = $1 AND doc::text = $8",
            )
            .map_err(|e| sql(&display, e))?;
        let insert = tx
            .prepare(
                "INSERT INTO orchestrator.task
                 (id, position, status, priority, doc, fencing_token, lease_session, lease_expires_at)
                 SELECT $1, coalesce(max(position), -1) + 1, $3, $4, $2::text::json, $5, $6, $7
                 FROM orchestrator.task
                 ON CONFLICT (id) DO NOTHING",
            )
            .map_err(|e| sql(&display, e))?;
        for task in &stack.tasks {
            let text = serde_json::to_string(task).context("serializing a task")?;
            let old = loaded.get(&task.id);
            if old == Some(&text) {
                continue;
            }
            let (status, priority, token, session, expires) = columns(task);
            let changed = match old {
                Some(old) => tx.execute(
                    &update,
                    &[
                        &task.id, &text, &status, &priority, &token, &session, &expires, old,
                    ],
                ),
                None => tx.execute(
                    &insert,
                    &[
                        &task.id, &text, &status, &priority, &token, &session, &expires,
                    ],
                ),
            }
            .map_err(|e| sql(&display, e))?;
            if changed != 1 {
                return Err(changed_elsewhere(&display, &format!("task `{}`", task.id)));
            }
            written.push((task.id.clone(), text));
        }
        let kept: std::collections::HashSet<&str> =
            stack.tasks.iter().map(|t| t.id.as_str()).collect();
        let removed: Vec<(String, String)> = loaded
            .iter()
            .filter(|(id, _)| id.as_str() != Loaded::TOP && !kept.contains(id.as_str()))
            .map(|(id, text)| (id.clone(), text.clone()))
            .collect();
        for (id, old) in &removed {
            let deleted = tx
                .execute(
                    "DELETE FROM orchestrator.task WHERE id = $1 AND doc::text = $2",
                    &[id, old],
                )
                .map_err(|e| sql(&display, e))?;
            if deleted != 1 {
                return Err(changed_elsewhere(&display, &format!("task `{id}`")));
            }
        }
        tx.commit().map_err(|e| sql(&display, e))?;
        for (id, text) in written {
            loaded.insert(id, text);
        }
        for (id, _) in removed {
            loaded.remove(&id);
        }
        Ok(())
    }

    /// Claims the first of `candidates` (ready tasks, in the order selection would pick them)
    /// that no other claim holds or is taking right now, in one transaction: the row is locked
    /// with `FOR UPDATE SKIP LOCKED`, so two machines never get the same task and neither waits
    /// for the other. The task's fencing token goes up by one; an expired lease is taken over.
    pub fn claim_first(
        &mut self,
        candidates: &[&str],
        claim: &Claim,
        origin: &Origin<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>> {
        let display = self.target.display();
        let ids: Vec<String> = candidates.iter().map(|id| id.to_string()).collect();
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        // Typed statements, here and in the rest of a claim: one round trip each, where a
        // prepared one takes two (prepare, then run).
        let row = tx
            .query_typed_opt(
                "SELECT id, doc::text FROM orchestrator.task
                 WHERE id = ANY($1) AND status IN ('pending', 'in_progress')
                   AND (lease_expires_at IS NULL OR lease_expires_at <= $2)
                 ORDER BY array_position($1, id)
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED",
                &[(&ids, Type::TEXT_ARRAY), (&now, Type::TIMESTAMPTZ)],
            )
            .map_err(|e| sql(&display, e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.get(0);
        let old_text: String = row.get(1);
        let mut task: Task = serde_json::from_str(&old_text)
            .with_context(|| format!("the fleet store {display}: task {id} is not a task"))?;
        let previous = task.claim.clone();
        let write = ClaimWrite {
            task: id.clone(),
            token: task.fence + 1,
            claim: claim.clone(),
        };
        write
            .apply(&mut task)
            .map_err(|lost| Failure::lost(lost.to_string()))?;
        let text = serde_json::to_string(&task).context("serializing a task")?;
        let (status, priority, token, session, expires) = columns(&task);
        tx.execute_typed(
            "UPDATE orchestrator.task
             SET doc = $2::text::json, status = $3, priority = $4, fencing_token = $5,
                 lease_session = $6, lease_expires_at = $7, updated_at = now()
             WHERE id = $1",
            &[
                (&id, Type::TEXT),
                (&text, Type::TEXT),
                (&status, Type::TEXT),
                (&priority, Type::INT8),
                (&token, Type::INT8),
                (&session, Type::TEXT),
                (&expires, Type::TIMESTAMPTZ),
            ],
        )
        .map_err(|e| sql(&display, e))?;
        let (kind, detail) = match &previous {
            Some(old) => {
                tx.execute_typed(
                    "UPDATE orchestrator.session SET state = 'lost', updated_at = now()
                     WHERE id = $1 AND state <> 'archived'",
                    &[(&old.session, Type::TEXT)],
                )
                .map_err(|e| sql(&display, e))?;
                (
                    "reclaim",
                    json!({"token": token, "from_session": old.session, "from_host": old.host,
                           "lease_expired": crate::clock::format(old.lease_expires)}),
                )
            }
            None => ("claim", json!({"token": token})),
        };
        insert_event(&mut tx, &display, origin, Some(&id), kind, &detail, now)?;
        tx.commit().map_err(|e| sql(&display, e))?;
        Ok(Some(Claimed {
            task,
            token: write.token,
            reclaimed_from: previous,
        }))
    }

    /// Gives a claim back (a `start` that failed after claiming): only while the token is
    /// still the task's.
    pub fn unclaim(&mut self, task: &str, session: &str, token: u64) -> Result<()> {
        let display = self.target.display();
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        let row = tx
            .query_opt(
                "SELECT doc::text FROM orchestrator.task WHERE id = $1 AND fencing_token = $2 AND lease_session = $3 FOR UPDATE",
                &[&task, &(token as i64), &session],
            )
            .map_err(|e| sql(&display, e))?;
        if let Some(row) = row {
            let mut entry: Task = serde_json::from_str(row.get::<_, &str>(0))
                .with_context(|| format!("the fleet store {display}: task {task} is not a task"))?;
            entry.claim = None;
            write_task(&mut tx, &display, &entry)?;
        }
        tx.commit().map_err(|e| sql(&display, e))
    }

    /// A checkpoint under its claim's token (an `origin` without its agent takes the session
    /// row's): one statement writes the task (only while the
    /// token and the lease's session are still its own, and the task is as `loaded` had it),
    /// the session's summary and the event. A task changed in between by another write is
    /// read again and the checkpoint applied to it; a stale token is refused (exit 5) and
    /// nothing is written. Returns the task as written.
    pub fn append_checkpoint(
        &mut self,
        write: &CheckpointWrite,
        loaded: &Task,
        loaded_text: Option<String>,
        summary: &Value,
        origin: &Origin<'_>,
        now: DateTime<Utc>,
    ) -> Result<Task> {
        let display = self.target.display();
        let mut base = loaded.clone();
        let mut base_text = match loaded_text {
            Some(text) => text,
            None => serde_json::to_string(loaded).context("serializing a task")?,
        };
        let detail = json!({
            "progress": write.progress,
            "token": write.token,
            "message": one_line_of(&write.checkpoint.message),
        })
        .to_string();
        let summary = summary.to_string();
        for _ in 0..CHECKPOINT_RETRIES {
            let mut applied = base.clone();
            if let Err(lost) = write.apply(&mut applied) {
                self.record_refusal(&lost, origin, now);
                return Err(Failure::lost(lost.to_string()));
            }
            let text = serde_json::to_string(&applied).context("serializing a task")?;
            let (status, _, _, _, expires) = columns(&applied);
            let rows = self
                .client
                .query_typed(
                    "WITH t AS (
                         UPDATE orchestrator.task
                         SET doc = $2::text::json, status = $3, lease_expires_at = $4, updated_at = now()
                         WHERE id = $1 AND fencing_token = $5 AND lease_session = $6 AND doc::text = $7
                         RETURNING id
                     ), s AS (
                         UPDATE orchestrator.session SET doc = (doc::jsonb || $8::text::jsonb)::json, updated_at = now()
                         WHERE id = $6 AND EXISTS (SELECT 1 FROM t)
                     )
                     INSERT INTO orchestrator.event (at, host, agent, session_id, task_id, kind, detail)
                     SELECT $9, $10, coalesce(nullif($11, ''), (SELECT agent FROM orchestrator.session WHERE id = $6)),
                            $6, id, 'checkpoint', $12::text::json FROM t
                     RETURNING id",
                    &[
                        (&write.task, Type::TEXT),
                        (&text, Type::TEXT),
                        (&status, Type::TEXT),
                        (&expires, Type::TIMESTAMPTZ),
                        (&(write.token as i64), Type::INT8),
                        (&write.session, Type::TEXT),
                        (&base_text, Type::TEXT),
                        (&summary, Type::TEXT),
                        (&now, Type::TIMESTAMPTZ),
                        (&origin.host, Type::TEXT),
                        (&origin.agent, Type::TEXT),
                        (&detail, Type::TEXT),
                    ],
                )
                .map_err(|e| sql(&display, e))?;
            if rows.len() == 1 {
                return Ok(applied);
            }
            // Not written: who holds the task now, and is it as we read it?
            let current = self
                .client
                .query_opt(
                    "SELECT doc::text FROM orchestrator.task WHERE id = $1",
                    &[&write.task],
                )
                .map_err(|e| sql(&display, e))?;
            let Some(current) = current else {
                return Err(Failure::user(format!(
                    "the fleet store {display}: task `{}` of session {} is no longer in the stack",
                    write.task, write.session
                )));
            };
            let current_text: String = current.get(0);
            let task: Task = serde_json::from_str(&current_text).with_context(|| {
                format!(
                    "the fleet store {display}: task {} is not a task",
                    write.task
                )
            })?;
            if let Err(lost) = task.check_token(&write.session, write.token) {
                self.record_refusal(&lost, origin, now);
                return Err(Failure::lost(lost.to_string()));
            }
            base = task;
            base_text = current_text;
        }
        Err(Failure::busy(format!(
            "the fleet store {display}: task `{}` kept changing under this checkpoint; nothing was written: checkpoint again",
            write.task
        )))
    }

    /// Renews a claim's lease under its token, in one transaction (the row locked while it is
    /// read and written); a stale token is refused (exit 5) with nothing written.
    pub fn renew_lease(&mut self, write: &LeaseWrite) -> Result<Task> {
        let display = self.target.display();
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        let row = tx
            .query_opt(
                "SELECT doc::text FROM orchestrator.task WHERE id = $1 FOR UPDATE",
                &[&write.task],
            )
            .map_err(|e| sql(&display, e))?;
        let Some(row) = row else {
            return Err(Failure::user(format!(
                "the fleet store {display}: task `{}` of session {} is no longer in the stack",
                write.task, write.session
            )));
        };
        let mut task: Task = serde_json::from_str(row.get::<_, &str>(0)).with_context(|| {
            format!(
                "the fleet store {display}: task {} is not a task",
                write.task
            )
        })?;
        write
            .apply(&mut task)
            .map_err(|lost| Failure::lost(lost.to_string()))?;
        write_task(&mut tx, &display, &task)?;
        tx.commit().map_err(|e| sql(&display, e))?;
        Ok(task)
    }

    /// Logs a write refused for a stale token; the refusal itself stands whatever happens here.
    pub fn record_refusal(&mut self, lost: &Lost, origin: &Origin<'_>, now: DateTime<Utc>) {
        let detail = json!({"holder": lost.holder}).to_string();
        let logged = self.client.execute(
            "INSERT INTO orchestrator.event (at, host, agent, session_id, task_id, kind, detail)
             VALUES ($1, $2, coalesce(nullif($3, ''), (SELECT agent FROM orchestrator.session WHERE id = $4)),
                     $4, $5, 'refused', $6::text::json)",
            &[
                &now,
                &origin.host,
                &origin.agent,
                &origin.session,
                &lost.task,
                &detail,
            ],
        );
        if let Err(err) = logged {
            tracing::warn!("cannot log the refused write: {err}");
        }
    }

    /// A session id no machine of the fleet has used, reserved by inserting its row: two
    /// machines starting in the same second get different ids (and so different handoff and
    /// archive files in the shared repository).
    pub fn reserve_session_id(
        &mut self,
        now: DateTime<Utc>,
        taken_here: &dyn Fn(&str) -> bool,
        origin: &Origin<'_>,
    ) -> Result<String> {
        let display = self.target.display();
        let base = crate::core::ids::new_session_id(now, |_| false);
        for _ in 0..50 {
            let used: std::collections::HashSet<String> = self
                .client
                .query_typed(
                    "SELECT id FROM orchestrator.session WHERE id = $1 OR id LIKE $1 || '\\_%'",
                    &[(&base, Type::TEXT)],
                )
                .map_err(|e| sql(&display, e))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let id =
                crate::core::ids::new_session_id(now, |id| used.contains(id) || taken_here(id));
            let inserted = self
                .client
                .execute_typed(
                    "INSERT INTO orchestrator.session (id, task_id, agent, host, state, doc, started_at)
                     VALUES ($1, '', $2, $3, 'starting', json_build_object('pid', $5::bigint), $4)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        (&id, Type::TEXT),
                        (&origin.agent, Type::TEXT),
                        (&origin.host, Type::TEXT),
                        (&now, Type::TIMESTAMPTZ),
                        (&i64::from(std::process::id()), Type::INT8),
                    ],
                )
                .map_err(|e| sql(&display, e))?;
            if inserted == 1 {
                return Ok(id);
            }
        }
        Err(Failure::busy(format!(
            "the fleet store {display}: no free session id after 50 tries; start again"
        )))
    }

    /// Drops a reserved session row that never became a session (a `start` that failed).
    /// Starts on `host` that reserved a session id at least `grace` ago (by the server's clock)
    /// and never recorded their session: each with the process that made it, and the claim it
    /// left, if any.
    pub fn unfinished_starts(
        &mut self,
        host: &str,
        grace: std::time::Duration,
    ) -> Result<Vec<UnfinishedStart>> {
        let display = self.target.display();
        let rows = self
            .client
            .query_typed(
                "SELECT s.id, (s.doc->>'pid')::bigint, s.agent, t.id, t.fencing_token
                 FROM orchestrator.session s
                 LEFT JOIN orchestrator.task t ON t.lease_session = s.id
                 WHERE s.host = $1 AND s.state = 'starting'
                   AND s.updated_at < now() - make_interval(secs => $2)",
                &[(&host, Type::TEXT), (&grace.as_secs_f64(), Type::FLOAT8)],
            )
            .map_err(|e| sql(&display, e))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let pid = u32::try_from(row.get::<_, Option<i64>>(1)?).ok()?;
                let task: Option<String> = row.get(3);
                let token: Option<i64> = row.get(4);
                Some(UnfinishedStart {
                    session: row.get(0),
                    pid,
                    agent: row.get(2),
                    claim: task.zip(token.map(|t| t as u64)),
                })
            })
            .collect())
    }

    /// Gives back what a start that died before recording its session left: its claim; its
    /// session row is archived, and the whole logged as `abandoned`.
    pub fn release_unfinished(
        &mut self,
        start: &UnfinishedStart,
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let display = self.target.display();
        if let Some((task, token)) = &start.claim {
            self.unclaim(task, &start.session, *token)?;
        }
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        // Archived, not deleted: its id stays taken, so its events never mix with a later
        // session's.
        let ended = tx
            .execute(
                "UPDATE orchestrator.session SET state = 'archived', updated_at = now()
                 WHERE id = $1 AND state = 'starting'",
                &[&start.session],
            )
            .map_err(|e| sql(&display, e))?;
        if ended > 0 {
            let origin = Origin {
                host,
                agent: &start.agent,
                session: &start.session,
            };
            insert_event(
                &mut tx,
                &display,
                &origin,
                start.claim.as_ref().map(|(task, _)| task.as_str()),
                "abandoned",
                &json!({"pid": start.pid}),
                now,
            )?;
        }
        tx.commit().map_err(|e| sql(&display, e))
    }

    pub fn drop_reserved_session(&mut self, id: &str) -> Result<()> {
        let display = self.target.display();
        self.client
            .execute(
                "DELETE FROM orchestrator.session WHERE id = $1 AND state = 'starting'",
                &[&id],
            )
            .map_err(|e| sql(&display, e))?;
        Ok(())
    }

    /// Creates or updates a session's row: what `status --fleet` shows of it.
    pub fn save_session(
        &mut self,
        id: &str,
        task: &str,
        origin: &Origin<'_>,
        state: &str,
        summary: &Value,
        started: DateTime<Utc>,
    ) -> Result<()> {
        let display = self.target.display();
        let summary = summary.to_string();
        self.client
            .execute_typed(
                "INSERT INTO orchestrator.session (id, task_id, agent, host, state, doc, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6::text::json, $7)
                 ON CONFLICT (id) DO UPDATE
                 SET state = CASE WHEN orchestrator.session.state = 'lost' THEN 'lost' ELSE excluded.state END,
                     task_id = excluded.task_id, agent = excluded.agent, host = excluded.host,
                     doc = excluded.doc, updated_at = now()",
                &[
                    (&id, Type::TEXT),
                    (&task, Type::TEXT),
                    (&origin.agent, Type::TEXT),
                    (&origin.host, Type::TEXT),
                    (&state, Type::TEXT),
                    (&summary, Type::TEXT),
                    (&started, Type::TIMESTAMPTZ),
                ],
            )
            .map_err(|e| sql(&display, e))?;
        Ok(())
    }

    /// The session is over (wrapped): its row stays, archived, for the log, with the whole
    /// `record` the machine archived (for `report --fleet`).
    pub fn end_session(
        &mut self,
        origin: &Origin<'_>,
        task: &str,
        record: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let display = self.target.display();
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        let ended = tx
            .execute(
                "UPDATE orchestrator.session
                 SET state = 'archived', updated_at = now(),
                     doc = (doc::jsonb || jsonb_build_object('record', $2::text::jsonb))::json
                 WHERE id = $1 AND state <> 'archived'",
                &[&origin.session, &record],
            )
            .map_err(|e| sql(&display, e))?;
        if ended > 0 {
            insert_event(
                &mut tx,
                &display,
                origin,
                Some(task),
                "wrap",
                &json!({}),
                now,
            )?;
        }
        tx.commit().map_err(|e| sql(&display, e))
    }

    /// The records of every archived session, on every machine, oldest first (rows archived
    /// without one, by an older binary or an abandoned start, are left out).
    pub fn archived_records(&mut self) -> Result<Vec<String>> {
        let display = self.target.display();
        let rows = self
            .client
            .query(
                "SELECT (doc->'record')::text FROM orchestrator.session
                 WHERE state = 'archived' AND doc->'record' IS NOT NULL
                 ORDER BY started_at, id",
                &[],
            )
            .map_err(|e| sql(&display, e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Every session not yet archived, on every machine, oldest first.
    pub fn fleet_sessions(&mut self) -> Result<Vec<FleetSession>> {
        let display = self.target.display();
        let rows = self
            .client
            .query(
                "SELECT s.id, s.host, s.agent, s.task_id, s.state, s.doc::text,
                        t.lease_expires_at, t.lease_session = s.id
                 FROM orchestrator.session s
                 LEFT JOIN orchestrator.task t ON t.id = s.task_id
                 WHERE s.state NOT IN ('archived', 'starting')
                 ORDER BY s.started_at, s.id",
                &[],
            )
            .map_err(|e| sql(&display, e))?;
        Ok(rows
            .iter()
            .map(|row| {
                let holds: Option<bool> = row.get(7);
                FleetSession {
                    id: row.get(0),
                    host: row.get(1),
                    agent: row.get(2),
                    task: row.get(3),
                    state: row.get(4),
                    summary: serde_json::from_str(row.get::<_, &str>(5)).unwrap_or(Value::Null),
                    lease_expires: if holds == Some(true) {
                        row.get(6)
                    } else {
                        None
                    },
                    holds_lease: holds == Some(true),
                }
            })
            .collect())
    }

    /// The newest `limit` events (of `task` only, when given), oldest first.
    pub fn events(&mut self, limit: i64, task: Option<&str>) -> Result<Vec<FleetEvent>> {
        let display = self.target.display();
        let rows = self
            .client
            .query(
                "SELECT id, at, host, agent, session_id, task_id, kind, detail::text FROM (
                     SELECT * FROM orchestrator.event WHERE $2::text IS NULL OR task_id = $2
                     ORDER BY id DESC LIMIT $1
                 ) newest ORDER BY id",
                &[&limit, &task],
            )
            .map_err(|e| sql(&display, e))?;
        Ok(rows
            .iter()
            .map(|row| FleetEvent {
                id: row.get(0),
                at: row.get(1),
                host: row.get(2),
                agent: row.get(3),
                session: row.get(4),
                task: row.get(5),
                kind: row.get(6),
                detail: serde_json::from_str(row.get::<_, &str>(7)).unwrap_or(Value::Null),
            })
            .collect())
    }

    /// Releases every lease that ran out by `now` (their sessions are lost: a later write of
    /// theirs is refused) and returns the tasks released with their former holders.
    pub fn reap(
        &mut self,
        origin: &Origin<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Claim)>> {
        let display = self.target.display();
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        let rows = tx
            .query(
                "SELECT id, doc::text FROM orchestrator.task
                 WHERE lease_expires_at <= $1 ORDER BY position FOR UPDATE SKIP LOCKED",
                &[&now],
            )
            .map_err(|e| sql(&display, e))?;
        let mut reaped = Vec::new();
        for row in rows {
            let id: String = row.get(0);
            let mut task: Task = serde_json::from_str(row.get::<_, &str>(1))
                .with_context(|| format!("the fleet store {display}: task {id} is not a task"))?;
            let Some(claim) = task.claim.take() else {
                continue;
            };
            write_task(&mut tx, &display, &task)?;
            tx.execute(
                "UPDATE orchestrator.session SET state = 'lost', updated_at = now()
                 WHERE id = $1 AND state <> 'archived'",
                &[&claim.session],
            )
            .map_err(|e| sql(&display, e))?;
            let detail = json!({"from_session": claim.session, "from_host": claim.host,
                                "lease_expired": crate::clock::format(claim.lease_expires)});
            insert_event(&mut tx, &display, origin, Some(&id), "reap", &detail, now)?;
            reaped.push((id, claim));
        }
        tx.commit().map_err(|e| sql(&display, e))?;
        Ok(reaped)
    }

    /// Takes the fleet's push turn (a session advisory lock: released by
    /// [`PgStore::end_push_turn`], or by the server when this connection ends, so a killed
    /// process never keeps it), waiting at most `wait`. `false`: not had in time.
    pub fn take_push_turn(&mut self, wait: std::time::Duration) -> Result<bool> {
        let display = self.target.display();
        let deadline = std::time::Instant::now() + wait;
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            let had: bool = self
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&PUSH_TURN_LOCK])
                .map_err(|e| sql(&display, e))?
                .get(0);
            if had {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
        }
    }

    pub fn end_push_turn(&mut self) -> Result<()> {
        let display = self.target.display();
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&PUSH_TURN_LOCK])
            .map_err(|e| sql(&display, e))?;
        Ok(())
    }

    /// Pauses every loop using `account` until `until` (a later pause already there wins).
    pub fn set_pause(
        &mut self,
        account: &str,
        until: DateTime<Utc>,
        reason: &str,
        origin: &Origin<'_>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>> {
        let display = self.target.display();
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        let until: DateTime<Utc> = tx
            .query_one(
                "INSERT INTO orchestrator.quota_pause (account, until, reason, set_by, set_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account) DO UPDATE
                 SET until = greatest(orchestrator.quota_pause.until, excluded.until),
                     reason = CASE WHEN excluded.until >= orchestrator.quota_pause.until
                                   THEN excluded.reason ELSE orchestrator.quota_pause.reason END,
                     set_by = excluded.set_by, set_at = excluded.set_at
                 RETURNING until",
                &[&account, &until, &reason, &origin.host, &now],
            )
            .map_err(|e| sql(&display, e))?
            .get(0);
        let detail =
            json!({"account": account, "until": crate::clock::format(until), "reason": reason});
        insert_event(&mut tx, &display, origin, None, "quota_pause", &detail, now)?;
        tx.commit().map_err(|e| sql(&display, e))?;
        Ok(until)
    }

    /// The pause on `account` that still holds at `now`, with its reason.
    pub fn pause(
        &mut self,
        account: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(DateTime<Utc>, String)>> {
        let display = self.target.display();
        Ok(self
            .client
            .query_opt(
                "SELECT until, reason FROM orchestrator.quota_pause WHERE account = $1 AND until > $2",
                &[&account, &now],
            )
            .map_err(|e| sql(&display, e))?
            .map(|row| (row.get(0), row.get(1))))
    }

    /// Every pause still holding at `now`: account, until, reason.
    pub fn pauses(&mut self, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>, String)>> {
        let display = self.target.display();
        Ok(self
            .client
            .query(
                "SELECT account, until, reason FROM orchestrator.quota_pause WHERE until > $1 ORDER BY account",
                &[&now],
            )
            .map_err(|e| sql(&display, e))?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect())
    }
}

/// The columns kept beside a task's text, for the queries that select on them.
fn columns(
    task: &Task,
) -> (
    &'static str,
    i64,
    i64,
    Option<String>,
    Option<DateTime<Utc>>,
) {
    let (session, expires) = match &task.claim {
        Some(claim) => (Some(claim.session.clone()), Some(claim.lease_expires)),
        None => (None, None),
    };
    (
        status_text(task.status),
        task.priority,
        task.fence as i64,
        session,
        expires,
    )
}

fn status_text(status: Status) -> &'static str {
    status.as_str()
}

fn write_task(tx: &mut postgres::Transaction<'_>, display: &str, task: &Task) -> Result<()> {
    let text = serde_json::to_string(task).context("serializing a task")?;
    let (status, priority, token, session, expires) = columns(task);
    tx.execute(
        "UPDATE orchestrator.task
         SET doc = $2::text::json, status = $3, priority = $4, fencing_token = $5,
             lease_session = $6, lease_expires_at = $7, updated_at = now()
         WHERE id = $1",
        &[
            &task.id, &text, &status, &priority, &token, &session, &expires,
        ],
    )
    .map_err(|e| sql(display, e))?;
    Ok(())
}

fn insert_event(
    tx: &mut postgres::Transaction<'_>,
    display: &str,
    origin: &Origin<'_>,
    task: Option<&str>,
    kind: &str,
    detail: &Value,
    now: DateTime<Utc>,
) -> Result<()> {
    let detail = detail.to_string();
    let session = (!origin.session.is_empty()).then_some(origin.session);
    let agent = (!origin.agent.is_empty()).then_some(origin.agent);
    tx.execute_typed(
        "INSERT INTO orchestrator.event (at, host, agent, session_id, task_id, kind, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::json)",
        &[
            (&now, Type::TIMESTAMPTZ),
            (&origin.host, Type::TEXT),
            (&agent, Type::TEXT),
            (&session, Type::TEXT),
            (&task, Type::TEXT),
            (&kind, Type::TEXT),
            (&detail, Type::TEXT),
        ],
    )
    .map_err(|e| sql(display, e))?;
    Ok(())
}

fn changed_elsewhere(display: &str, what: &str) -> anyhow::Error {
    Failure::busy(format!(
        "the fleet store {display}: {what} changed on another machine since this command read it; nothing was written: run the command again"
    ))
}

fn one_line_of(text: &str) -> String {
    crate::core::text::one_line(text)
        .chars()
        .take(200)
        .collect()
}

//! The wrap engine: a graceful, resumable shutdown of one session.
//!
//! Each step is recorded in the session's wrap journal as soon as it completes, and the journal
//! is saved before the next step begins. A wrap cut off anywhere is finished by the next `wrap`
//! or `start`, which skips what the journal says is done: one backup, one handoff, one commit.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub mod backup;
pub mod handoff;
pub mod publish;
pub mod push;
pub mod vcs;
pub mod worktree;

/// Tests only: libgit2 reads the global, XDG and system config from $HOME and /etc, not from
/// GIT_CONFIG_GLOBAL. Points those search paths at an empty directory, once per process, so
/// no identity or setting of this machine leaks into a test.
#[cfg(test)]
pub(crate) fn isolate_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let empty = tempfile::tempdir().unwrap().keep();
        for level in [
            git2::ConfigLevel::Global,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::System,
            git2::ConfigLevel::ProgramData,
        ] {
            // SAFETY: runs once, before any test opens a repository.
            unsafe { git2::opts::set_search_path(level, &empty).unwrap() };
        }
    });
}

use crate::core::session::{
    ChangedFile, MetricValue, REASON_RECOVERED, Session, SessionChanges, SessionWorktree,
    WrapJournal, WrapSteps,
};
use crate::core::stack::{Integrate, OpenKind, Status, TaskStack};
use crate::core::text::one_line;
use crate::store::{Workspace, WorkspaceLock};
use git2::Oid;
use handoff::{HandoffInput, thousands};

pub struct WrapOptions {
    pub reason: String,
    pub summary: Option<String>,
    pub next_steps: Vec<String>,
    pub mark_done: bool,
    pub backup: bool,
    pub commit: bool,
    /// What the agent printed last, raw (`run`, when the agent ended on its own).
    pub agent_output: Option<String>,
}

#[derive(Debug)]
pub struct WrapReport {
    pub session: String,
    pub task: String,
    pub reason: String,
    pub handoff: PathBuf,
    pub backup: Value,
    pub metrics: Vec<MetricValue>,
    pub commit: Value,
    /// A worktree session's integration (see `integrate_step`).
    pub integrate: Option<Value>,
    pub worktree: Option<SessionWorktree>,
    /// The steps this call performed (fewer than all when it finished a cut-off wrap).
    pub steps: Vec<&'static str>,
    pub resumed: bool,
    pub progress: crate::core::stack::Progress,
    pub status: Status,
    /// The push to the shared remote after the wrap (see [`publish`]), when there is one.
    pub push: Option<Value>,
}

/// Opens the wrap journal. `ended` is when the session's work ended.
pub fn begin(
    session: &mut Session,
    options: WrapOptions,
    now: DateTime<Utc>,
    ended: DateTime<Utc>,
) {
    session.wrap = Some(WrapJournal {
        begun: now,
        ended,
        reason: options.reason,
        summary: options.summary,
        next_steps: options.next_steps,
        mark_done: options.mark_done,
        backup_enabled: options.backup,
        commit_enabled: options.commit,
        steps: WrapSteps::default(),
        agent_output: options
            .agent_output
            .as_deref()
            .map(crate::core::text::output_tail)
            .filter(|tail| !tail.is_empty()),
        progress: None,
        changes: None,
    });
}

/// Whether [`recover`] has anything to do: a session whose wrap was cut off or whose lease ran
/// out, or a claim that no live session backs.
pub fn needs_recovery(stack: &TaskStack, sessions: &[Session], now: DateTime<Utc>) -> bool {
    let live = |id: &str| {
        sessions
            .iter()
            .any(|s| s.id == id && !s.is_wrapping() && !s.is_stale(now))
    };
    sessions.iter().any(|s| s.is_wrapping() || s.is_stale(now))
        || stack
            .tasks
            .iter()
            .any(|t| t.claim.as_ref().is_some_and(|c| !live(&c.session)))
}

/// Wraps every session whose wrap was cut off or whose lease ran out, and releases claims
/// that no session file backs (left by a start killed between its two writes).
pub fn recover(
    ws: &Workspace,
    lock: &WorkspaceLock,
    stack: &mut TaskStack,
    sessions: Vec<Session>,
    now: DateTime<Utc>,
) -> Result<Vec<WrapReport>> {
    let mut reports = Vec::new();
    let mut remaining = Vec::new();
    for mut session in sessions {
        if session.is_wrapping() {
            tracing::info!("finishing the cut-off wrap of {}", session.id);
        } else if session.is_stale(now) {
            tracing::warn!(
                "session {} is stale (lease ran out at {}); recovering it",
                session.id,
                session.lease_expires
            );
            let options = WrapOptions {
                reason: REASON_RECOVERED.into(),
                summary: None,
                next_steps: Vec::new(),
                mark_done: false,
                backup: true,
                commit: stack.settings.git.commit_on_wrap,
                agent_output: None,
            };
            let ended = session.last_activity();
            begin(&mut session, options, now, ended);
            ws.save_active(lock, &session)?;
        } else {
            remaining.push(session.id);
            continue;
        }
        reports.push(finish_wrap(ws, lock, stack, session, now, true)?);
    }
    // On a fleet store a claim with no session here is another machine's; an expired one is
    // taken over by the next claim (or `fleet reap`).
    if ws.fleet().is_some() {
        return Ok(reports);
    }
    let mut released = false;
    for task in &mut stack.tasks {
        if let Some(claim) = &task.claim
            && !remaining.contains(&claim.session)
        {
            tracing::warn!(
                "releasing task `{}`: its session {} no longer exists",
                task.id,
                claim.session
            );
            task.claim = None;
            released = true;
        }
    }
    if released {
        ws.save_stack(lock, stack)?;
    }
    Ok(reports)
}

/// Runs every step the journal does not mark done.
pub fn finish(
    ws: &Workspace,
    lock: &WorkspaceLock,
    stack: &mut TaskStack,
    session: Session,
    now: DateTime<Utc>,
) -> Result<WrapReport> {
    finish_wrap(ws, lock, stack, session, now, false)
}

/// `finish`; `by_start` when `start` finishes the wrap before opening a new session: then a
/// commit that fails (a git lock that is not provably stale) is recorded as failed, and the
/// changes stay in the work tree for the next wrap, so that `start` can still start work.
fn finish_wrap(
    ws: &Workspace,
    lock: &WorkspaceLock,
    stack: &mut TaskStack,
    mut session: Session,
    now: DateTime<Utc>,
    by_start: bool,
) -> Result<WrapReport> {
    let mut journal = session.wrap.take().expect("finish() needs a begun wrap");
    let resumed = journal.steps != WrapSteps::default();
    let recovering = journal.reason == REASON_RECOVERED;
    let mut performed = Vec::new();
    let save = |session: &mut Session, journal: &WrapJournal, step: &'static str| -> Result<()> {
        session.wrap = Some(journal.clone());
        ws.save_active(lock, session)?;
        session.wrap = None;
        crash_point(step);
        Ok(())
    };

    if journal.steps.backup.is_none() || is_pending(journal.steps.backup.as_ref()) {
        let result = match backup_step(ws, stack, &mut session, &mut journal, now, lock) {
            Ok(value) => value,
            // A recovery must not wedge every later `start`: record the failure and go on.
            Err(err) if recovering => {
                tracing::warn!("backup of recovered session {} failed: {err:#}", session.id);
                json!({"result": "failed", "error": format!("{err:#}")})
            }
            Err(err) => return Err(err),
        };
        journal.steps.backup = Some(result);
        save(&mut session, &journal, "backup")?;
        performed.push("backup");
    }

    if journal.steps.metrics.is_none() {
        journal.steps.metrics = Some(read_metrics(ws, stack));
        save(&mut session, &journal, "metrics")?;
        performed.push("metrics");
    }

    if let Some(wt) = session.worktree.clone() {
        if journal.steps.branch_commit.is_none() || is_pending(journal.steps.branch_commit.as_ref())
        {
            journal.steps.branch_commit = Some(json!({"result": "pending"}));
            save(&mut session, &journal, "branch-commit-pending")?;
            let result = match branch_commit_step(ws, stack, &session, &journal, &wt) {
                Ok(value) => value,
                Err(err) if recovering || by_start => {
                    tracing::warn!("commit on {} failed: {err:#}", wt.branch);
                    json!({"result": "failed", "error": format!("{err:#}")})
                }
                Err(err) => return Err(err),
            };
            journal.steps.branch_commit = Some(result);
            // Measured now, before the integration moves the branch onto others' work.
            let (changes, _) = measure_changes(ws, &session, stack, false);
            journal.changes = changes;
            save(&mut session, &journal, "branch-commit")?;
            performed.push("branch_commit");
        }
        if journal.steps.integrate.is_none() || is_pending(journal.steps.integrate.as_ref()) {
            let result = match integrate_step(ws, stack, &mut session, &mut journal, &wt, lock) {
                Ok(value) => value,
                Err(err) if recovering || by_start => {
                    tracing::warn!("integrating {} failed: {err:#}", wt.branch);
                    json!({"result": "failed", "error": format!("{err:#}")})
                }
                Err(err) => return Err(err),
            };
            journal.steps.integrate = Some(result);
            save(&mut session, &journal, "integrate")?;
            performed.push("integrate");
        }
    }

    let task = stack.task(&session.task).cloned();
    let (mut progress, mut status, title) = match &task {
        Some(t) => (t.progress, t.status, t.title.clone()),
        None => (session.progress_at_start, Status::InProgress, String::new()),
    };
    if journal.mark_done {
        progress.done = progress.total;
    }
    if journal.mark_done || progress.is_complete() {
        status = Status::Done;
    } else if status == Status::Pending {
        status = Status::InProgress;
    }
    let conflict = journal
        .steps
        .integrate
        .as_ref()
        .filter(|i| i["result"] == "conflict")
        .map(|i| {
            i["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        });
    let status_after_conflict = status;
    if conflict.is_some() {
        status = Status::Blocked;
    }
    let handoff_rel =
        Path::new(&stack.settings.handoff_dir).join(format!("handoff_{}.md", session.id));
    let handoff_path = ws.root().join(&handoff_rel);

    if journal.steps.handoff.is_none() {
        let (changes, mut change_notes) = if session.worktree.is_some() {
            (journal.changes.take(), Vec::new())
        } else {
            measure_changes(ws, &session, stack, journal.commit_enabled)
        };
        journal.changes = changes;
        if let Some(wt) = &session.worktree {
            change_notes.extend(integration_lines(&session, &journal, wt));
        }
        journal.progress = Some(progress);
        let last_with_content = task.as_ref().and_then(|t| t.last_handoff.clone());
        let input = HandoffInput {
            session: &session,
            journal: &journal,
            title: if title.is_empty() {
                &session.task
            } else {
                &title
            },
            progress,
            status,
            budget: &stack.settings.budget,
            database: database_lines(stack, &session, &journal),
            changes: change_lines(&journal, change_notes),
            last_handoff: last_with_content.as_deref(),
        };
        crate::store::file::write_atomic(&handoff_path, handoff::render(&input).as_bytes())?;
        journal.steps.handoff = Some(handoff_rel.to_string_lossy().into_owned());
        save(&mut session, &journal, "handoff")?;
        performed.push("handoff");
    }

    if !journal.steps.stack {
        match stack.task_mut(&session.task) {
            // Another session claimed the task since (its lease ran out): what this one did
            // is in its handoff and commit, but the task is the new holder's to write.
            Some(task) if lost_to(task, &session).is_some() => tracing::warn!(
                "session {} lost task `{}` to {}: the task is left as that session has it",
                session.id,
                session.task,
                lost_to(task, &session).unwrap_or_default()
            ),
            Some(task) => {
                task.progress = progress;
                task.status = status;
                if let (Some(paths), Some(wt)) = (&conflict, &session.worktree) {
                    task.blocked_reason = Some(conflict_reason(&session.task, wt, paths));
                }
                // A session that moved nothing leaves the pointer on the last handoff with content.
                if !journal.changed_nothing(&session, progress) {
                    task.last_handoff = Some(handoff_rel.to_string_lossy().into_owned());
                }
                task.last_session = Some(session.id.clone());
                // Next steps outlive this handoff: they stay on the task until resolved, so a
                // later session that leaves none (an agent that exited) does not lose them.
                for step in &journal.next_steps {
                    task.add_open_item(OpenKind::NextStep, step, journal.ended, &session.id);
                }
                if task.claim.as_ref().is_some_and(|c| c.session == session.id) {
                    task.claim = None;
                }
                ws.save_stack(lock, stack)?;
                if let (Some(paths), Some(wt)) = (&conflict, &session.worktree) {
                    save_record(
                        ws,
                        lock,
                        &session,
                        wt,
                        Some(Some(worktree::Conflict {
                            paths: paths.clone(),
                            status_after: status_after_conflict,
                        })),
                    )?;
                }
            }
            None => tracing::warn!(
                "task `{}` is no longer in the stack; nothing to update",
                session.task
            ),
        }
        journal.steps.stack = true;
        save(&mut session, &journal, "stack")?;
        performed.push("stack");
    }

    if !journal.steps.archive {
        journal.steps.archive = true;
        session.wrap = Some(journal.clone());
        ws.save_archive(lock, &session)?;
        session.wrap = None;
        save(&mut session, &journal, "archive")?;
        performed.push("archive");
    }

    if journal.steps.commit.is_none() || is_pending(journal.steps.commit.as_ref()) {
        let message = handoff::commit_message(&session, &journal, &stack.settings.budget, progress);
        journal.steps.commit = Some(json!({"result": "pending"}));
        save(&mut session, &journal, "commit-pending")?;
        let result = match commit_step(ws, stack, &session, &journal, &message, &handoff_rel) {
            Ok(value) => value,
            // As with the backup: a recovery records the failure rather than block `start`.
            Err(err) if recovering || by_start => {
                tracing::warn!("commit of recovered session {} failed: {err:#}", session.id);
                json!({"result": "failed", "error": format!("{err:#}")})
            }
            Err(err) => return Err(err),
        };
        journal.steps.commit = Some(result);
        save(&mut session, &journal, "commit")?;
        performed.push("commit");
    }

    if let Some(wt) = &session.worktree
        && journal.steps.cleanup.is_none()
    {
        let result = cleanup_step(ws, lock, &session, &journal, wt)?;
        journal.steps.cleanup = Some(result);
        save(&mut session, &journal, "cleanup")?;
        performed.push("cleanup");
    }

    ws.remove_active(lock, &session.id)?;
    Ok(WrapReport {
        session: session.id.clone(),
        task: session.task.clone(),
        reason: journal.reason.clone(),
        handoff: handoff_path,
        backup: journal.steps.backup.clone().unwrap_or(Value::Null),
        metrics: journal.steps.metrics.clone().unwrap_or_default(),
        commit: journal.steps.commit.clone().unwrap_or(Value::Null),
        integrate: journal.steps.integrate.clone(),
        worktree: session.worktree.clone(),
        steps: performed,
        resumed,
        progress,
        status,
        push: None,
    })
}

/// Who holds `task` now, when a claim since `session`'s raised its fencing token.
pub fn lost_to(task: &crate::core::stack::Task, session: &Session) -> Option<String> {
    (session.fence != 0 && task.fence != session.fence).then(|| {
        task.claim
            .as_ref()
            .map_or_else(|| "a later session".to_string(), |c| c.session.clone())
    })
}

fn is_pending(step: Option<&Value>) -> bool {
    step.is_some_and(|v| v["result"] == "pending")
}

pub(crate) use crate::store::crash_point;

fn backup_step(
    ws: &Workspace,
    stack: &TaskStack,
    session: &mut Session,
    journal: &mut WrapJournal,
    now: DateTime<Utc>,
    lock: &WorkspaceLock,
) -> Result<Value> {
    let Some(db) = &stack.settings.database else {
        return Ok(json!({"result": "skipped", "reason": "no database configured"}));
    };
    if !journal.backup_enabled {
        return Ok(json!({"result": "skipped", "reason": "--no-backup"}));
    }
    let db_path = ws.root().join(&db.path);
    let backup_dir = ws.root().join(&db.backup_dir);
    if !db_path.exists() {
        return Err(crate::error::Failure::user(format!(
            "database {} does not exist (settings.database.path in {})",
            db_path.display(),
            crate::store::STACK_FILE
        )));
    }
    // The name is fixed before the copy starts, so a resumed wrap finds a finished copy
    // instead of making a second one.
    let name = match journal
        .steps
        .backup
        .as_ref()
        .and_then(|v| v["name"].as_str())
    {
        Some(name) => name.to_string(),
        None => {
            let name = backup::backup_file_name(&db_path, now);
            journal.steps.backup = Some(json!({"result": "pending", "name": name}));
            session.wrap = Some(journal.clone());
            ws.save_active(lock, session)?;
            session.wrap = None;
            name
        }
    };
    // The workspace lock is held, so no other backup of this database is running.
    for temp in backup::remove_stale_temp_files(&backup_dir, &db_path) {
        tracing::info!(
            "removed the temp file of a killed backup: {}",
            temp.display()
        );
    }
    // Like `mkdir -p`; after the database check, so a wrong path creates nothing.
    if db_path.is_file() && !backup_dir.exists() {
        std::fs::create_dir_all(&backup_dir).with_context(|| {
            format!(
                "cannot create the backup directory {}",
                backup_dir.display()
            )
        })?;
    }
    let final_path = backup_dir.join(&name);
    let bytes = if final_path.exists() {
        backup::verify_backup(&final_path)?;
        std::fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0)
    } else {
        let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        backup::backup_database(&db_path, &backup_dir, &name, show_progress)?.bytes
    };
    let removed = backup::prune_backups(&backup_dir, &db_path, db.keep_backups)?;
    Ok(json!({
        "result": "ok",
        "name": name,
        "path": ws.display(&final_path).to_string(),
        "bytes": bytes,
        "verified": "quick_check",
        "removed": removed.iter().map(|p| ws.display(p).to_string()).collect::<Vec<_>>(),
    }))
}

/// Reads the configured metrics; failures are values, not errors.
pub fn read_metrics(ws: &Workspace, stack: &TaskStack) -> Vec<MetricValue> {
    let Some(db) = &stack.settings.database else {
        return Vec::new();
    };
    if db.metrics.is_empty() {
        return Vec::new();
    }
    let specs: Vec<backup::MetricSpec> = db
        .metrics
        .iter()
        .map(|m| backup::MetricSpec {
            name: m.name.clone(),
            query: m.query.clone(),
            goal: m.goal,
        })
        .collect();
    backup::read_metrics(&ws.root().join(&db.path), &specs)
        .into_iter()
        .map(|r| MetricValue {
            name: r.name,
            value: r.value,
            error: r.error,
        })
        .collect()
}

fn database_lines(stack: &TaskStack, session: &Session, journal: &WrapJournal) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(backup) = &journal.steps.backup {
        lines.push(match backup["result"].as_str() {
            Some("ok") => {
                let removed = backup["removed"].as_array().map_or(0, Vec::len);
                format!(
                    "Backup: `{}` ({} bytes, verified with PRAGMA quick_check){}",
                    backup["path"].as_str().unwrap_or_default(),
                    thousands(backup["bytes"].as_u64().unwrap_or(0)),
                    if removed > 0 {
                        format!("; removed {removed} old backup(s)")
                    } else {
                        String::new()
                    }
                )
            }
            Some("skipped") => format!(
                "Backup: skipped ({})",
                backup["reason"].as_str().unwrap_or_default()
            ),
            _ => format!(
                "Backup: FAILED: {}",
                backup["error"].as_str().unwrap_or("unknown error")
            ),
        });
    }
    for metric in journal.steps.metrics.iter().flatten() {
        let baseline = session
            .metrics_at_start
            .iter()
            .find(|m| m.name == metric.name)
            .and_then(|m| m.value);
        lines.push(match (&metric.error, metric.value) {
            (Some(err), _) => format!("{}: query failed: {err}", metric.name),
            (None, Some(value)) => {
                let goal = stack
                    .settings
                    .database
                    .iter()
                    .flat_map(|db| &db.metrics)
                    .find(|m| m.name == metric.name)
                    .and_then(|m| m.goal);
                format!(
                    "{}: {}",
                    metric.name,
                    backup::describe_metric(value, goal, baseline)
                )
            }
            (None, None) => format!("{}: no value", metric.name),
        });
    }
    lines
}

/// What the session changed since it started, our bookkeeping (the stack, the handoffs, the
/// state directory) left out, and the notes the handoff adds about the commit to come.
fn measure_changes(
    ws: &Workspace,
    session: &Session,
    stack: &TaskStack,
    commit_enabled: bool,
) -> (Option<SessionChanges>, Vec<String>) {
    let since = session.git_head_at_start.as_deref();
    let workdir = session_workdir(ws, session);
    // Sharing the work tree, the session's commit takes only its bookkeeping: what else
    // changed there is not counted as its change (it may be another session's).
    let sharing = if session.worktree.is_none() {
        sharing_sessions(ws, session)
    } else {
        Vec::new()
    };
    let own = [PathBuf::from(crate::store::STACK_FILE)];
    let only = (!sharing.is_empty()).then_some(&own[..]);
    let plan = match with_request_in(ws, stack, &workdir, only, "", |req| {
        vcs::plan_commit(req, since)
    }) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            return (
                None,
                vec!["Not a git repository: nothing is committed.".into()],
            );
        }
        Err(err) => return (None, vec![format!("Could not read the git state: {err:#}")]),
    };
    let prefix = &plan.workdir_prefix;
    let handoff_dir = format!(
        "{prefix}{}/",
        stack.settings.handoff_dir.trim_end_matches('/')
    );
    let bookkeeping = |path: &str| {
        path == format!("{prefix}{}", crate::store::STACK_FILE)
            || path.starts_with(&handoff_dir)
            || path.starts_with(&format!("{prefix}{}/", crate::store::STATE_DIR))
    };
    let mut changes = SessionChanges::default();
    for file in plan.files.iter().filter(|f| !bookkeeping(&f.path)) {
        changes.files_changed += 1;
        changes.insertions += file.insertions;
        changes.deletions += file.deletions;
        if changes.files.len() < SessionChanges::MAX_FILES {
            changes.files.push(ChangedFile {
                path: file.path.clone(),
                insertions: file.insertions,
                deletions: file.deletions,
            });
        }
    }
    match vcs::messages_since(&workdir, since) {
        Ok(messages) => {
            let agents: Vec<&String> = messages
                .iter()
                .filter(|m| crate::core::run::is_agent_work(m, &session.id))
                .collect();
            changes.commits = agents.len();
            changes.commit_subjects = agents
                .iter()
                .take(SessionChanges::MAX_COMMITS)
                .map(|m| one_line(m.lines().next().unwrap_or_default()))
                .collect();
        }
        Err(err) => tracing::warn!("cannot read the commits of the session: {err:#}"),
    }
    if !sharing.is_empty() {
        changes.notes.push(format!(
            "**Work tree not committed:** other sessions work in this same tree ({}); only this \
             session's bookkeeping is committed, and the tree's changes wait for the next wrap \
             that finds no other session live in it.",
            sharing.join(", ")
        ));
    }
    if commit_enabled && let Some(blocker) = &plan.blocked {
        changes
            .notes
            .push(format!("**Commit skipped:** {}.", blocker.reason));
    }
    for skipped in &plan.skipped {
        changes.notes.push(format!(
            "Not committed: `{}` ({})",
            skipped.path, skipped.reason
        ));
    }
    (Some(changes), Vec::new())
}

/// The `## Changes` lines: the totals, each file, the agent's commits, then `notes`.
fn change_lines(journal: &WrapJournal, notes: Vec<String>) -> Vec<String> {
    let Some(changes) = &journal.changes else {
        return notes;
    };
    let mut lines = vec![format!(
        "{} file(s) changed, {} insertion(s)(+), {} deletion(s)(-) since the session started \
         (the stack, handoffs and .orchestrator/ left out)",
        changes.files_changed, changes.insertions, changes.deletions
    )];
    for file in &changes.files {
        lines.push(format!(
            "`{}` +{} -{}",
            file.path, file.insertions, file.deletions
        ));
    }
    let unlisted = changes.files_changed - changes.files.len();
    if unlisted > 0 {
        lines.push(format!("... and {unlisted} more file(s)"));
    }
    for subject in &changes.commit_subjects {
        lines.push(format!("Commit: {subject}"));
    }
    let unlisted = changes.commits - changes.commit_subjects.len();
    if unlisted > 0 {
        lines.push(format!("... and {unlisted} more commit(s)"));
    }
    lines.extend(changes.notes.iter().cloned());
    lines.extend(notes);
    lines
}

/// The never-committed entries, split into plain paths and patterns for the commit.
fn excluded(stack: &TaskStack) -> (Vec<PathBuf>, Vec<String>) {
    let (globs, paths): (Vec<String>, Vec<String>) = crate::store::never_committed(&stack.settings)
        .into_iter()
        .partition(|entry| entry.contains('*'));
    let paths = paths
        .iter()
        .map(|p| PathBuf::from(p.trim_end_matches('/')))
        .collect();
    (paths, globs)
}

/// Runs `f` with the commit request for this workspace.
fn with_request<T>(
    ws: &Workspace,
    stack: &TaskStack,
    message: &str,
    f: impl FnOnce(&vcs::CommitRequest) -> T,
) -> T {
    with_request_in(ws, stack, ws.root(), None, message, f)
}

/// Runs `f` with the commit request for `workdir` (the workspace, or its place in a session's
/// worktree, where the bookkeeping is left out too: it is committed by the main workspace only,
/// so branches never conflict over it), committing `only` those paths when given.
fn with_request_in<T>(
    ws: &Workspace,
    stack: &TaskStack,
    workdir: &Path,
    only: Option<&[PathBuf]>,
    message: &str,
    f: impl FnOnce(&vcs::CommitRequest) -> T,
) -> T {
    let (mut exclude, exclude_globs) = excluded(stack);
    if workdir != ws.root() {
        exclude.extend([
            PathBuf::from(crate::store::STACK_FILE),
            PathBuf::from(stack.settings.handoff_dir.trim_end_matches('/')),
            PathBuf::from(crate::store::STATE_DIR),
        ]);
    }
    let owner_dir = ws.git_owners_dir();
    f(&vcs::CommitRequest {
        workdir,
        message,
        exclude: &exclude,
        exclude_globs: &exclude_globs,
        max_file_bytes: stack.settings.git.max_file_mb.saturating_mul(1024 * 1024),
        owner_dir: Some(&owner_dir),
        only,
    })
}

/// Where the session's agent works: its worktree, or the workspace.
pub fn session_workdir(ws: &Workspace, session: &Session) -> PathBuf {
    match &session.worktree {
        Some(wt) => wt.workdir.clone(),
        None => ws.root().to_path_buf(),
    }
}

fn commit_step(
    ws: &Workspace,
    stack: &TaskStack,
    session: &Session,
    journal: &WrapJournal,
    message: &str,
    handoff_rel: &Path,
) -> Result<Value> {
    if !journal.commit_enabled {
        return Ok(
            json!({"result": "skipped", "reason": "commit disabled (--no-commit or settings.git.commit_on_wrap)"}),
        );
    }
    // A wrap cut off after git wrote the commit but before the journal said so: find it.
    if let Some(oid) = vcs::find_commit_with_trailer(
        ws.root(),
        session.git_head_at_start.as_deref(),
        handoff::WRAP_SUBJECT_PREFIX,
        "Orchestrator-Session",
        &session.id,
    )? {
        return Ok(json!({"result": "committed", "oid": oid, "found_existing": true}));
    }
    // A worktree session's work came back through its branch; other live sessions in this work
    // tree have changes of their own in it: either way only this session's bookkeeping is its
    // own to commit here.
    let sharing = if session.worktree.is_some() {
        Vec::new()
    } else {
        sharing_sessions(ws, session)
    };
    if session.worktree.is_none() && sharing.is_empty() {
        let outcome = with_request(ws, stack, message, vcs::commit_all)?;
        return Ok(commit_json(outcome));
    }
    let own = bookkeeping_paths(ws, session, handoff_rel);
    let outcome = with_request_in(ws, stack, ws.root(), Some(&own), message, vcs::commit_all)?;
    let mut value = commit_json(outcome);
    if !sharing.is_empty() {
        value["deferred"] =
            json!({"reason": "other live sessions share the work tree", "sessions": sharing});
    }
    Ok(value)
}

/// This session's own files in the workspace: the stack, its handoff, its archived record.
fn bookkeeping_paths(ws: &Workspace, session: &Session, handoff_rel: &Path) -> Vec<PathBuf> {
    vec![
        PathBuf::from(crate::store::STACK_FILE),
        handoff_rel.to_path_buf(),
        ws.archive_path(&session.id)
            .strip_prefix(ws.root())
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    ]
}

/// The other live sessions working in the workspace's own work tree (not in worktrees of
/// their own): their uncommitted changes there are not this session's to commit.
pub fn sharing_sessions(ws: &Workspace, session: &Session) -> Vec<String> {
    let now = crate::clock::now().unwrap_or_else(|_| chrono::Utc::now());
    ws.active_sessions()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s.id != session.id && s.worktree.is_none() && !s.is_wrapping() && !s.is_stale(now)
        })
        .map(|s| s.id)
        .collect()
}

/// The subject of the commit of a worktree session's changes on its branch.
pub const WORK_SUBJECT_PREFIX: &str = "Session Work: ";

/// Commits what the agent left uncommitted in its worktree, on its branch.
fn branch_commit_step(
    ws: &Workspace,
    stack: &TaskStack,
    session: &Session,
    journal: &WrapJournal,
    wt: &SessionWorktree,
) -> Result<Value> {
    if !journal.commit_enabled {
        return Ok(
            json!({"result": "skipped", "reason": "commit disabled (--no-commit or settings.git.commit_on_wrap)"}),
        );
    }
    if !wt.workdir.exists() {
        return Ok(
            json!({"result": "skipped", "reason": format!("the worktree {} is gone", wt.path.display())}),
        );
    }
    if let Some(oid) = vcs::find_commit_with_trailer(
        &wt.workdir,
        session.git_head_at_start.as_deref(),
        WORK_SUBJECT_PREFIX,
        "Orchestrator-Session",
        &session.id,
    )? {
        return Ok(json!({"result": "committed", "oid": oid, "found_existing": true}));
    }
    let summary = handoff::summary_paragraph(journal);
    let message = format!(
        "{WORK_SUBJECT_PREFIX}{task}\n\n{summary}Orchestrator-Session: {id}\nOrchestrator-Task: {task}\n",
        task = session.task,
        id = session.id,
    );
    let message = crate::core::text::strip_controls(&message).into_owned();
    let outcome = with_request_in(ws, stack, &wt.workdir, None, &message, vcs::commit_all)?;
    Ok(commit_json(outcome))
}

/// Brings the session's branch onto the base branch as `settings.parallel.integrate` says.
/// The plan is recorded (`pending`, with the base branch's old and new tips) before anything
/// moves, so a wrap killed in the middle finishes the same move instead of making another.
fn integrate_step(
    ws: &Workspace,
    stack: &TaskStack,
    session: &mut Session,
    journal: &mut WrapJournal,
    wt: &SessionWorktree,
    lock: &WorkspaceLock,
) -> Result<Value> {
    let committed = journal.steps.branch_commit.as_ref();
    match committed.and_then(|c| c["result"].as_str()) {
        Some("committed" | "nothing_to_commit") => {}
        _ => {
            let why = committed
                .and_then(|c| c["reason"].as_str().or(c["error"].as_str()))
                .unwrap_or("the session's changes were not committed on its branch");
            return Ok(
                json!({"result": "skipped", "reason": format!("{why}; the work stays on {} in {}", wt.branch, wt.path.display())}),
            );
        }
    }
    let mode = stack.settings.parallel.integrate;
    if mode == Integrate::Branch {
        return Ok(json!({"result": "branch", "branch": wt.branch, "base": wt.base}));
    }
    let main = ws.root();
    if let Some(pending) = journal.steps.integrate.clone()
        && let (Some(from), Some(to)) = (pending["from"].as_str(), pending["to"].as_str())
    {
        let (from, to) = (Oid::from_str(from)?, Oid::from_str(to)?);
        if worktree::apply(main, wt, from, to)? {
            return Ok(integrated(mode, wt, to, &pending));
        }
    }
    let message = format!(
        "Merge {} into {}\n\nOrchestrator-Session: {}\nOrchestrator-Task: {}\n",
        wt.branch, wt.base, session.id, session.task
    );
    // The base branch moves only under the workspace lock, which is held: a second try only
    // follows a user's own commit made meanwhile.
    for _ in 0..3 {
        match worktree::plan(main, wt, mode, &message)? {
            worktree::Plan::Nothing => {
                return Ok(json!({"result": "nothing", "mode": mode.as_str(), "base": wt.base}));
            }
            worktree::Plan::Conflict(paths) => {
                return Ok(
                    json!({"result": "conflict", "mode": mode.as_str(), "base": wt.base, "branch": wt.branch, "paths": paths}),
                );
            }
            worktree::Plan::Move {
                from,
                to,
                branch_tip,
                commits,
                fast_forward,
            } => {
                let pending = json!({"result": "pending", "mode": mode.as_str(), "from": from.to_string(), "to": to.to_string(), "branch_tip": branch_tip.to_string(), "commits": commits, "fast_forward": fast_forward});
                journal.steps.integrate = Some(pending.clone());
                session.wrap = Some(journal.clone());
                ws.save_active(lock, session)?;
                session.wrap = None;
                crash_point("integrate-pending");
                if worktree::apply(main, wt, from, to)? {
                    return Ok(integrated(mode, wt, to, &pending));
                }
            }
        }
    }
    anyhow::bail!(
        "the base branch {} keeps moving; run `orchestrator wrap` again",
        wt.base
    )
}

fn integrated(mode: Integrate, wt: &SessionWorktree, to: Oid, pending: &Value) -> Value {
    json!({"result": "integrated", "mode": mode.as_str(), "base": wt.base, "head": to.to_string(),
           "branch_tip": pending["branch_tip"], "commits": pending["commits"],
           "fast_forward": pending["fast_forward"]})
}

/// A worktree whose branch is integrated (or left for a pull request) has done its job: it
/// goes, and the branch too once the base branch holds it. One with anything uncommitted in
/// it, or whose integration did not happen, is kept.
fn cleanup_step(
    ws: &Workspace,
    lock: &WorkspaceLock,
    session: &Session,
    journal: &WrapJournal,
    wt: &SessionWorktree,
) -> Result<Value> {
    let result = journal
        .steps
        .integrate
        .as_ref()
        .and_then(|i| i["result"].as_str())
        .unwrap_or_default();
    if !matches!(result, "integrated" | "nothing" | "branch") {
        save_record(ws, lock, session, wt, None).ok();
        return Ok(
            json!({"result": "kept", "reason": format!("integration {result}"), "path": wt.path}),
        );
    }
    let left = worktree::uncommitted(&wt.path, &worktree::our_files(wt))?;
    if !left.is_empty() {
        save_record(ws, lock, session, wt, None).ok();
        return Ok(
            json!({"result": "kept", "reason": "uncommitted files in the worktree", "files": left, "path": wt.path}),
        );
    }
    let integrated_tip = journal
        .steps
        .integrate
        .as_ref()
        .and_then(|i| i["branch_tip"].as_str())
        .and_then(|tip| Oid::from_str(tip).ok());
    let branch_deleted = worktree::remove(
        ws.root(),
        &session.task,
        wt,
        result != "branch",
        integrated_tip,
    )?;
    crate::store::file::remove_if_exists(&worktree::record_path(ws.root(), &session.task))?;
    Ok(json!({"result": "removed", "branch_deleted": branch_deleted}))
}

/// Writes the worktree's record: its owner, and the conflict `conflict` names (None keeps the
/// one recorded, if any; a new session's start passes `Some(None)` to clear it).
pub fn save_record(
    ws: &Workspace,
    _lock: &WorkspaceLock,
    session: &Session,
    wt: &SessionWorktree,
    conflict: Option<Option<worktree::Conflict>>,
) -> Result<()> {
    let conflict = match conflict {
        Some(conflict) => conflict,
        None => worktree::read_record(ws.root(), &session.task)?.and_then(|r| r.conflict),
    };
    let record = worktree::WorktreeRecord {
        task: session.task.clone(),
        worktree: wt.clone(),
        session: session.id.clone(),
        agent: session.agent.clone(),
        conflict,
    };
    crate::store::file::write_json(&worktree::record_path(ws.root(), &session.task), &record)
}

/// Why a task whose integration conflicted is blocked, and what to do about it.
pub fn conflict_reason(task: &str, wt: &SessionWorktree, paths: &[String]) -> String {
    format!(
        "merge-conflict: {} conflicts with {} in {}; resolve it in {} (`git rebase {}` there, fix \
         the files, `git add` them, `git rebase --continue`), then run `orchestrator worktree \
         integrate {task}`",
        wt.branch,
        wt.base,
        paths.join(", "),
        wt.workdir.display(),
        wt.base
    )
}

/// The handoff's lines about the worktree and its integration.
fn integration_lines(
    session: &Session,
    journal: &WrapJournal,
    wt: &SessionWorktree,
) -> Vec<String> {
    let Some(integrate) = &journal.steps.integrate else {
        return Vec::new();
    };
    let line = match integrate["result"].as_str() {
        Some("integrated") => format!(
            "**Integrated:** {} onto {} ({}), {} commit(s)",
            wt.branch,
            wt.base,
            integrate["mode"].as_str().unwrap_or_default(),
            integrate["commits"]
        ),
        Some("nothing") => format!(
            "**Integrated:** nothing on {} that {} lacks",
            wt.branch, wt.base
        ),
        Some("branch") => format!(
            "**Left on its branch:** {} (settings.parallel.integrate = branch): open a pull request, or merge it into {}",
            wt.branch, wt.base
        ),
        Some("conflict") => {
            let paths: Vec<String> = integrate["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            format!(
                "**Merge conflict, nothing lost:** {}. The task is blocked until it is resolved; {} keeps the work.",
                conflict_reason(&session.task, wt, &paths),
                wt.branch
            )
        }
        _ => format!(
            "**Not integrated:** {}",
            integrate["reason"]
                .as_str()
                .or(integrate["error"].as_str())
                .unwrap_or("unknown")
        ),
    };
    vec![line]
}

/// Commits the whole work tree as a wrap would, with `message` (`demo`).
pub fn commit_workspace(
    ws: &Workspace,
    stack: &TaskStack,
    message: &str,
) -> Result<vcs::CommitOutcome> {
    with_request(ws, stack, message, vcs::commit_all)
}

/// Commits the session's work as a wrap would, with `message` (used by `checkpoint --commit`):
/// in its worktree, on its branch; in a work tree other live sessions share, only the stack.
pub fn commit_session_work(
    ws: &Workspace,
    stack: &TaskStack,
    session: &Session,
    message: &str,
) -> Result<vcs::CommitOutcome> {
    if let Some(wt) = &session.worktree {
        return with_request_in(ws, stack, &wt.workdir, None, message, vcs::commit_all);
    }
    if sharing_sessions(ws, session).is_empty() {
        return with_request(ws, stack, message, vcs::commit_all);
    }
    let own = [PathBuf::from(crate::store::STACK_FILE)];
    with_request_in(ws, stack, ws.root(), Some(&own), message, vcs::commit_all)
}

pub fn commit_json(outcome: vcs::CommitOutcome) -> Value {
    match outcome {
        vcs::CommitOutcome::NotARepository => {
            tracing::warn!("the workspace is not in a git repository; skipping the commit");
            json!({"result": "not_a_repository"})
        }
        other => {
            if let vcs::CommitOutcome::Committed { detached: true, .. } = &other {
                tracing::warn!("HEAD is detached; the commit is not on any branch");
            }
            serde_json::to_value(other).unwrap_or(Value::Null)
        }
    }
}

/// What [`integrate_resolved`] did.
pub struct Resolved {
    pub task: String,
    pub head: Option<String>,
    pub status: Status,
    pub branch_deleted: bool,
}

/// Finishes the integration of a task's worktree after its conflict was resolved by hand:
/// commits what is left uncommitted there on its branch, brings the branch onto the base
/// branch, gives the task back the status its wrap meant it to have, commits that on the base
/// branch and removes the worktree (and the merged branch). Refused, changing nothing in
/// git, while it still conflicts or the worktree is mid-rebase/merge.
pub fn integrate_resolved(
    ws: &Workspace,
    lock: &WorkspaceLock,
    stack: &mut TaskStack,
    record: &worktree::WorktreeRecord,
) -> Result<Resolved> {
    let wt = &record.worktree;
    let task_id = &record.task;
    if wt.workdir.exists() {
        let message = format!(
            "{WORK_SUBJECT_PREFIX}{task_id}\n\nThe conflict resolved by hand.\n\nOrchestrator-Task: {task_id}\n"
        );
        let outcome = with_request_in(ws, stack, &wt.workdir, None, &message, vcs::commit_all)?;
        if let vcs::CommitOutcome::Skipped { reason, .. } = &outcome {
            return Err(crate::error::Failure::user(format!(
                "{}: {reason}",
                wt.workdir.display()
            )));
        }
    }
    let mode = match stack.settings.parallel.integrate {
        Integrate::Branch => Integrate::Rebase,
        mode => mode,
    };
    let message = format!(
        "Merge {} into {}\n\nOrchestrator-Task: {task_id}\n",
        wt.branch, wt.base
    );
    let mut head = None;
    let mut branch_tip = None;
    for attempt in 0..3 {
        match worktree::plan(ws.root(), wt, mode, &message)? {
            worktree::Plan::Nothing => break,
            worktree::Plan::Conflict(paths) => {
                return Err(crate::error::Failure::user(format!(
                    "{} still conflicts with {} in {}; {}",
                    wt.branch,
                    wt.base,
                    paths.join(", "),
                    conflict_reason(task_id, wt, &paths)
                        .split_once("; ")
                        .map_or("", |(_, how)| how)
                )));
            }
            worktree::Plan::Move {
                from,
                to,
                branch_tip: tip,
                ..
            } => {
                if worktree::apply(ws.root(), wt, from, to)? {
                    head = Some(to.to_string());
                    branch_tip = Some(tip);
                    break;
                }
                if attempt == 2 {
                    anyhow::bail!("the base branch {} keeps moving; try again", wt.base);
                }
            }
        }
    }
    let status = record
        .conflict
        .as_ref()
        .map_or(Status::InProgress, |c| c.status_after);
    if let Some(task) = stack.task_mut(task_id)
        && task.status == Status::Blocked
    {
        task.set_status(status);
        ws.save_stack(lock, stack)?;
    }
    let message = format!(
        "Integrate: {task_id}\n\n{} brought onto {} after a conflict was resolved.\n\nOrchestrator-Task: {task_id}\n",
        wt.branch, wt.base
    );
    let own = [PathBuf::from(crate::store::STACK_FILE)];
    with_request_in(ws, stack, ws.root(), Some(&own), &message, vcs::commit_all)?;
    let left = worktree::uncommitted(&wt.path, &worktree::our_files(wt))?;
    let branch_deleted = if left.is_empty() {
        let deleted = worktree::remove(ws.root(), task_id, wt, true, branch_tip)?;
        crate::store::file::remove_if_exists(&worktree::record_path(ws.root(), task_id))?;
        deleted
    } else {
        false
    };
    Ok(Resolved {
        task: task_id.clone(),
        head,
        status,
        branch_deleted,
    })
}

//! `orchestrator start`: open a session on the next task and print the brief.

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::{Map, Value, json};
use std::path::PathBuf;

use super::Context;
use super::output::Shape;
use crate::agents;
use crate::core::brief::{
    self as core_brief, BriefFacts, Changes, Dependency, GitState, LastSession, MAX_LISTED,
};
use crate::core::ids::{check_task_id, new_session_id};
use crate::core::meters;
use crate::core::select::{pick_next, readiness, ready_in_order, select_next};
use crate::core::session::{Session, TokenReading, TranscriptOrigin};
use crate::core::stack::{Claim, Progress, Status, Task, TaskStack};
use crate::core::text::{one_line, strip_controls};
use crate::error::{Failure, code};
use crate::store::Workspace;
use crate::store::undo::Undo;
use crate::wrap::{self, vcs};

/// Begin a session on the next (or named) task and print the brief
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Work on this task instead of the next one
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Who is working (one live session per agent)
    #[arg(
        long,
        env = "ORCHESTRATOR_AGENT",
        default_value = "agent",
        value_name = "NAME"
    )]
    pub agent: String,
    /// Token budget for this session (default: settings.budget.tokens)
    #[arg(long, value_name = "N")]
    pub budget: Option<u64>,
    /// The agent's transcript file, to read token usage from
    #[arg(long, value_name = "PATH")]
    pub transcript: Option<PathBuf>,
    /// Work in a git worktree of the session's own, on the branch orchestrator/<task-id>,
    /// integrated into the current branch at wrap (default: settings.parallel.worktrees)
    #[arg(long)]
    pub worktree: bool,
    /// Where `transcript` came from when not the command line (a hook's input).
    #[arg(skip)]
    pub transcript_origin: Option<TranscriptOrigin>,
    /// Set by the SessionStart hook: its agent already runs where it runs, so the session never
    /// gets a worktree of its own, whatever settings.parallel.worktrees says.
    #[arg(skip)]
    pub in_place: bool,
}

pub fn run(ctx: &Context, args: StartArgs) -> Result<u8> {
    let (json, text) = open_session(ctx, args)?;
    let shape = Shape {
        labels: BRIEF_LABELS,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, shape);
    Ok(code::OK)
}

/// The brief's labels, bold on a terminal.
const BRIEF_LABELS: &[&str] = &[
    "Task:",
    "Progress:",
    "Last checkpoint:",
    "Description:",
    "Acceptance:",
    "Depends on:",
    "Open issues:",
    "Next steps:",
    "Last session:",
    "Last handoff:",
    "Git:",
    "Worktree:",
    "Budget:",
    "Usage:",
    "Meter:",
    "Session:",
    "Exit codes:",
    "Open items:",
    "When done:",
];

/// Opens a session and returns its brief (JSON and text).
pub(super) fn open_session(ctx: &Context, args: StartArgs) -> Result<(Value, String)> {
    let agent = args.agent.trim().to_string();
    check_agent_name(&agent)?;
    if let Some(id) = &args.task {
        check_task_id(id).map_err(|e| Failure::user(format!("--task: {e}")))?;
    }
    if args.budget == Some(0) {
        return Err(Failure::user("--budget must be above 0"));
    }
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let sessions = ws.active_sessions()?;
    // Selection needs no task's checkpoints, and the claim goes to the journal: a view does,
    // unless a recovery will rewrite the stack. (A fleet store's view is already the whole
    // stack, and other machines' claims always look like work for a recovery.)
    let mut stack = ws.load_view()?;
    if ws.fleet().is_none() && wrap::needs_recovery(&stack, &sessions, ctx.now) {
        stack = ws.load_stack()?;
    }
    if let Some(fleet) = ws.fleet() {
        let released = ws.fleet_release_unfinished_starts(fleet, ctx.now)?;
        for start in &released {
            eprintln!(
                "gave back {} of session {}: its start (pid {}) died before recording the session",
                match &start.claim {
                    Some((task, _)) => format!("task `{task}`"),
                    None => "the id".to_string(),
                },
                start.session,
                start.pid
            );
        }
        if released.iter().any(|start| start.claim.is_some()) {
            stack = ws.load_view()?;
        }
    }

    // Refuse a double start before touching anything.
    if let Some(live) = sessions
        .iter()
        .find(|s| s.agent == agent && !s.is_wrapping() && !s.is_stale(ctx.now))
    {
        return Err(Failure::busy(format!(
            "agent `{agent}` already has a live session {} on task `{}` (lease until {}); checkpoint or wrap it first",
            live.id,
            live.task,
            crate::clock::format(live.lease_expires)
        )));
    }
    if let Some(id) = &args.task
        && let Some(holder) = sessions
            .iter()
            .find(|s| &s.task == id && !s.is_wrapping() && !s.is_stale(ctx.now))
    {
        return Err(Failure::busy(format!(
            "task `{id}` is held by live session {} (agent {})",
            holder.id, holder.agent
        )));
    }

    ws.clean_temp_files(&lock, &[ws.root().join(&stack.settings.handoff_dir)]);
    let recovered = wrap::recover(&ws, &lock, &mut stack, sessions, ctx.now)?;
    for report in &recovered {
        // The path comes from settings.handoff_dir: no control byte of it reaches the terminal.
        // A stale session is wrapped as `recovered`; a half-done wrap keeps its own reason.
        let how = if report.reason == crate::core::session::REASON_RECOVERED {
            "its lease ran out".to_string()
        } else {
            format!("finished its `{}` wrap", report.reason)
        };
        eprintln!(
            "recovered session {} ({how}): handoff {}",
            report.session,
            strip_controls(&report.handoff.display().to_string())
        );
    }

    let mut task_id = match &args.task {
        Some(id) => {
            let task = stack.task(id).ok_or_else(|| {
                Failure::user(format!("{}: no task `{id}`", ws.stack_path().display()))
            })?;
            if let Err(reason) = readiness(&stack, task, ctx.now) {
                return Err(Failure::nothing_to_do(format!(
                    "task `{id}` is not ready: {reason}"
                )));
            }
            id.clone()
        }
        None => {
            // Every other task's reason only when none is ready: on a large stack the reasons
            // cost more than the pick.
            match pick_next(&stack, ctx.now) {
                Some(task) => task.id.clone(),
                None => {
                    let selection = select_next(&stack, ctx.now);
                    let why: Vec<String> = selection
                        .others
                        .iter()
                        .map(|(t, r)| format!("{}: {r}", t.id))
                        .collect();
                    let detail = if why.is_empty() {
                        "the stack has no tasks".to_string()
                    } else {
                        why.join("; ")
                    };
                    return Err(Failure::nothing_to_do(format!("no ready task ({detail})")));
                }
            }
        }
    };

    // On a fleet store the id is reserved there: machines starting in the same second must
    // not share one (their handoffs and records meet in the shared repository).
    let fleet = ws.fleet().cloned();
    let id = match &fleet {
        Some(fleet) => ws.fleet_session_id(fleet, &agent, ctx.now)?,
        None => new_session_id(ctx.now, |id| ws.session_id_taken(id)),
    };
    let mut give_back = fleet.clone().map(|fleet| GiveBack {
        ws: &ws,
        fleet,
        claim: None,
        session: id.clone(),
        armed: true,
    });
    let expires = ctx.now + Session::lease(stack.settings.lease_minutes);
    let host = crate::store::host_name();
    let pid = std::process::id();
    let claim = Claim {
        session: id.clone(),
        agent: agent.clone(),
        host: host.clone(),
        pid,
        lease_expires: expires,
        extra: Map::new(),
    };
    // On a fleet store the claim comes first: another machine may take the chosen task at
    // any moment, so the store picks the first ready task nobody holds, and the session is
    // built around the task it got. Until the session record is saved, a failure gives the
    // claim back.
    let fleet_token = match &fleet {
        Some(fleet) => {
            let candidates: Vec<String> = match &args.task {
                Some(id) => vec![id.clone()],
                None => ready_in_order(&stack, ctx.now)
                    .iter()
                    .map(|t| t.id.clone())
                    .collect(),
            };
            let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
            let Some(claimed) = ws.fleet_claim_first(fleet, &candidates, &claim, ctx.now)? else {
                return Err(Failure::nothing_to_do(match &args.task {
                    Some(id) => format!("task `{id}` was claimed by another session meanwhile"),
                    None => {
                        "no ready task: sessions on other machines took every ready one meanwhile"
                            .to_string()
                    }
                }));
            };
            if let Some(from) = &claimed.reclaimed_from {
                eprintln!(
                    "took over task `{}` from session {} on {} (agent {}), whose lease ran out at {}",
                    claimed.task.id,
                    from.session,
                    from.host,
                    from.agent,
                    crate::clock::format(from.lease_expires)
                );
            }
            task_id = claimed.task.id.clone();
            match stack.task_mut(&task_id) {
                Some(entry) => *entry = claimed.task.clone(),
                None => stack.tasks.push(claimed.task.clone()),
            }
            if let Some(give_back) = give_back.as_mut() {
                give_back.claim = Some((task_id.clone(), claimed.token));
            }
            crate::store::crash_point("fleet-claim");
            Some(claimed.token)
        }
        None => None,
    };

    // The setting asks for worktrees where git can make them; `--worktree` insists.
    let use_worktree = args.worktree
        || (stack.settings.parallel.worktrees
            && !args.in_place
            && {
                let in_git = vcs::in_repository(ws.root()).unwrap_or(false);
                if !in_git {
                    tracing::warn!(
                        "settings.parallel.worktrees is set, but the workspace is not in a git repository: the session works in the workspace itself"
                    );
                }
                in_git
            });
    let worktree = if use_worktree {
        let wt = wrap::worktree::ensure(ws.root(), &task_id)?;
        // A workspace made before worktrees existed lacks the `.gitignore` line: without it a
        // `git add -A` in the main tree would take the worktrees in as embedded repositories.
        if let Err(err) = wrap::worktree::exclude_everywhere(
            ws.root(),
            &format!(
                "{}.orchestrator/worktrees/",
                wrap::worktree::workspace_prefix(&wt)
            ),
        ) {
            tracing::warn!("cannot keep the worktrees out of git add: {err:#}");
        }
        let carried = agents::claude_settings::carry_into_worktree(ws.root(), &wt.workdir)
            .and_then(|written| match written {
                Some(_) => wrap::worktree::our_files(&wt)
                    .iter()
                    .try_for_each(|rel| wrap::worktree::exclude_everywhere(ws.root(), rel)),
                None => Ok(()),
            });
        if let Err(err) = carried {
            tracing::warn!(
                "cannot give the worktree {} the project's Claude Code settings: {err:#}",
                wt.workdir.display()
            );
        }
        Some(wt)
    } else {
        None
    };
    let sharing: Vec<String> = if use_worktree {
        Vec::new()
    } else {
        ws.active_sessions()?
            .into_iter()
            .filter(|s| s.worktree.is_none() && !s.is_wrapping() && !s.is_stale(ctx.now))
            .map(|s| format!("{} ({})", s.id, s.agent))
            .collect()
    };
    if !sharing.is_empty() && vcs::in_repository(ws.root()).unwrap_or(false) {
        eprintln!(
            "warning: another session works in this same tree ({}): each wrap commits only its own bookkeeping while others are live, and the work tree's changes wait for the last one; give each session its own worktree with `start --worktree` (or settings.parallel.worktrees)",
            name_a_few(&sharing)
        );
    }

    let budget = args.budget.unwrap_or(stack.settings.budget.tokens);
    let metrics_at_start = wrap::read_metrics(&ws, &stack);
    let task = stack.task_mut(&task_id).expect("the chosen task exists");
    let (transcript, transcript_origin) = match &args.transcript {
        Some(path) => (
            Some(
                std::path::absolute(path)
                    .with_context(|| format!("--transcript {}", path.display()))?,
            ),
            Some(args.transcript_origin.unwrap_or(TranscriptOrigin::Given)),
        ),
        None => {
            let found = agents::claude::session_transcript();
            let origin = found.is_some().then_some(TranscriptOrigin::Environment);
            (found, origin)
        }
    };
    if let Some(path) = &transcript {
        if !path.exists() {
            tracing::warn!(
                "transcript {} does not exist yet; usage is read from it once it does",
                path.display()
            );
        } else if !path.is_file() {
            tracing::warn!(
                "transcript {} is not a regular file; usage cannot be read from it",
                path.display()
            );
        }
    }
    let session = Session {
        id: id.clone(),
        agent: agent.clone(),
        task: task_id.clone(),
        started: ctx.now,
        lease_expires: expires,
        host: host.clone(),
        pid,
        parent_pid: Some(std::os::unix::process::parent_id()),
        budget,
        tokens: None::<TokenReading>,
        transcript,
        transcript_origin,
        meters: Default::default(),
        progress_at_start: task.progress,
        git_head_at_start: vcs::head_oid(
            worktree
                .as_ref()
                .map_or(ws.root(), |wt| wt.workdir.as_path()),
        )
        .unwrap_or_else(|err| {
            tracing::warn!("cannot read git HEAD: {err:#}");
            None
        }),
        metrics_at_start,
        checkpoints: Vec::new(),
        issues: Vec::new(),
        wrap: None,
        worktree: worktree.clone(),
        compactions: Vec::new(),
        fence: 0,
        cost: None,
        extra: Map::new(),
    };
    let mut session = session;
    // The claim first: a crash before the session record leaves a claim that no session backs,
    // which the next `start` releases. A record that cannot be saved (a full disk) undoes the
    // claim. Recoveries done above are finished wraps of other sessions and stay.
    let mut undo = Undo::new();
    undo.before_replace(&ws.active_path(&id))?;
    if worktree.is_some() {
        undo.before_replace(&wrap::worktree::record_path(ws.root(), &task_id))?;
    }
    session.fence = match fleet_token {
        Some(token) => token,
        None => {
            ws.claim(&lock, &mut undo, &mut stack, &task_id, claim)?
                .fence
        }
    };
    ws.save_active(&lock, &session)?;
    if let Some(give_back) = give_back.as_mut() {
        give_back.armed = false;
    }
    if let Some(wt) = &worktree {
        wrap::save_record(&ws, &lock, &session, wt, Some(None))?;
    }
    undo.commit();
    ws.reindex_if_stale(&lock);
    // The whole task for the brief: the view has none of its checkpoints.
    let task = ws
        .load_task_view(&task_id)?
        .task(&task_id)
        .cloned()
        .ok_or_else(|| Failure::user(format!("task `{task_id}` vanished")))?;
    drop(lock);

    Ok(brief(&ws, &stack, &session, &task, false, &recovered))
}

pub(super) fn brief(
    ws: &Workspace,
    stack: &TaskStack,
    session: &Session,
    task: &Task,
    continuing: bool,
    recovered: &[wrap::WrapReport],
) -> (Value, String) {
    let budget = &stack.settings.budget;
    let meters = meters::applicable(
        &stack.settings.meters,
        &stack.settings.agents,
        &session.agent,
    );
    let last_checkpoint = task.checkpoints.last();
    let last_handoff = last_handoff(ws, task);
    // Work happened on this task before this session, or in it (`continuing`: the hook after a
    // compaction or `/clear`): it resumes. Derived from what is recorded, so the hook's copy of
    // a fresh session's brief is `start`'s text.
    let resumed = continuing
        || session.progress_at_start.done > 0
        || task.last_session.is_some()
        || task.checkpoints.iter().any(|cp| cp.session != session.id);
    // What is parked and why: the agent may hold what unblocks it, and should not work around it.
    let blocked: Vec<&Task> = stack
        .tasks
        .iter()
        .filter(|t| t.status == Status::Blocked)
        .collect();
    let compaction_warning = stack.settings.compaction_warning(&session.agent);
    let mut budget_lines = vec![format!(
        "Budget:          {} tokens; warn at {:.0}% ({}), shutdown at {:.0}% ({})",
        session.budget,
        budget.warn * 100.0,
        (session.budget as f64 * budget.warn).round() as u64,
        budget.shutdown * 100.0,
        (session.budget as f64 * budget.shutdown).round() as u64
    )];
    if let Some(path) = &session.transcript {
        budget_lines.push(format!(
            "Usage:           read from the transcript {}",
            one_line(&path.display().to_string())
        ));
    }
    if let Some(warning) = &compaction_warning {
        budget_lines.push(format!("Compaction:      {warning}"));
    }
    for (name, meter) in &meters {
        let feed = match meter.source {
            meters::MeterSource::Usage => format!("; report with --usage {name}=N"),
            meters::MeterSource::Transcript => "; read from the transcript".to_string(),
        };
        budget_lines.push(format!(
            "Meter:           {name} ({}) limit {}; warn at {}%, shutdown at {}%{feed}",
            meter.kind.as_str(),
            meter.limit,
            crate::core::budget::format_pct(meter.warn * 100.0),
            crate::core::budget::format_pct(meter.shutdown * 100.0),
        ));
    }
    let bookkeeping = bookkeeping(stack);
    let facts = BriefFacts {
        session_id: &session.id,
        agent: &session.agent,
        budget_tokens: session.budget,
        uses_transcript: session.transcript.is_some(),
        resumed,
        task,
        dependencies: task
            .depends_on
            .iter()
            .filter_map(|id| stack.task(id))
            .map(|dep| Dependency {
                id: dep.id.clone(),
                status: dep.status,
                progress: dep.progress,
            })
            .collect(),
        last_session: last_session(ws, task, &bookkeeping),
        last_handoff: last_handoff.clone(),
        git: vcs::work_tree_state(
            &wrap::session_workdir(ws, session),
            &bookkeeping,
            MAX_LISTED,
        )
        .unwrap_or_else(|err| {
            tracing::warn!("cannot read the git state: {err:#}");
            None
        })
        .map(|state| GitState {
            branch: state.branch,
            uncommitted: state.uncommitted,
            listed: state.listed,
        }),
        budget_lines,
        blocked: blocked
            .iter()
            .map(|t| (t.id.clone(), t.blocked_reason().map(str::to_string)))
            .collect(),
    };
    // The brief also reaches the agent through the hook and `run`, not only through `emit`.
    let mut text = core_brief::render(&facts);
    if let Some(wt) = &session.worktree {
        text.push_str(&format!(
            "Worktree:        {} (branch {}): work and commit there; `orchestrator wrap` brings it onto {}\n",
            wt.workdir.display(),
            wt.branch,
            wt.base
        ));
    }
    let text = strip_controls(&text).into_owned();
    let json = json!({
        "session": session.id,
        "agent": session.agent,
        "task": task.id,
        "title": task.title,
        "progress": task.progress,
        "resumed": resumed,
        "last_checkpoint": last_checkpoint,
        "last_handoff": last_handoff,
        "budget": {"tokens": session.budget, "warn": budget.warn, "shutdown": budget.shutdown},
        "transcript": session.transcript,
        "meters": meters.iter().map(|(name, m)| json!({"name": name, "kind": m.kind.as_str(), "limit": m.limit, "source": m.source})).collect::<Vec<_>>(),
        "lease_expires": session.lease_expires,
        "blocked": blocked.iter().map(|t| json!({"task": t.id, "reason": t.blocked_reason()})).collect::<Vec<_>>(),
        "compaction_warning": compaction_warning,
        "recovered": recovered.iter().map(|r| json!({"session": r.session, "handoff": r.handoff})).collect::<Vec<_>>(),
        "brief": text,
        "worktree": session.worktree.as_ref().map(|wt| json!({"path": wt.workdir, "branch": wt.branch, "base": wt.base})),
    });
    (json, text)
}

/// Workspace paths that are our own bookkeeping, not the agent's work: left out of what the
/// brief says changed.
fn bookkeeping(stack: &TaskStack) -> Vec<String> {
    let mut paths = vec![
        format!("{}/", crate::store::STATE_DIR),
        crate::store::STACK_FILE.to_string(),
        format!("{}/", stack.settings.handoff_dir.trim_end_matches('/')),
    ];
    paths.extend(
        crate::store::never_committed(&stack.settings)
            .into_iter()
            .filter(|p| !p.contains('*')),
    );
    paths
}

/// The last wrapped session on the task, from its archived record, and what it changed in git
/// (its start commit to its wrap commit, else to HEAD). Any read that fails leaves it out.
fn last_session(ws: &Workspace, task: &Task, bookkeeping: &[String]) -> Option<LastSession> {
    let id = task.last_session.as_deref()?;
    let record = ws
        .load_session(&ws.archive_path(id))
        .map_err(|err| tracing::warn!("cannot read the last session {id}: {err:#}"))
        .ok()?;
    let journal = record.wrap.as_ref()?;
    let end = match journal
        .steps
        .commit
        .as_ref()
        .and_then(|c| c["oid"].as_str())
    {
        Some(oid) => Some(oid.to_string()),
        None => vcs::head_oid(ws.root()).ok().flatten(),
    };
    let changes = end.and_then(|end| {
        vcs::range_changes(
            ws.root(),
            record.git_head_at_start.as_deref(),
            &end,
            wrap::handoff::WRAP_SUBJECT_PREFIX,
            bookkeeping,
            MAX_LISTED,
        )
        .map_err(|err| tracing::warn!("cannot read what session {id} changed: {err:#}"))
        .ok()
        .flatten()
    });
    Some(LastSession {
        id: record.id.clone(),
        agent: record.agent.clone(),
        ended: journal.ended,
        reason: journal.reason.clone(),
        summary: journal.summary.clone(),
        progress_from: record.progress_at_start,
        progress_to: record.checkpoints.last().map(|cp| Progress {
            done: cp.progress,
            total: record.progress_at_start.total,
        }),
        changes: changes.map(|c| Changes {
            subjects: c.subjects,
            commits: c.commits,
            files: c.files,
            files_changed: c.files_changed,
        }),
    })
}

/// The newest handoff written for this task, as a path relative to the workspace.
fn last_handoff(ws: &Workspace, task: &Task) -> Option<String> {
    let path = task.last_handoff.as_ref()?;
    ws.root().join(path).is_file().then(|| path.clone())
}

pub(super) fn check_agent_name(agent: &str) -> Result<()> {
    let ok = !agent.is_empty()
        && agent.len() <= 64
        && agent
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Failure::user(format!(
            "agent name `{}` is not allowed: use 1-64 letters, digits, `_`, `-`, `.` or `@`",
            agent.escape_debug()
        )))
    }
}

/// What a `start` failing before its session record gives back to the fleet store: its
/// reserved session id, and its claim once it has one.
struct GiveBack<'a> {
    ws: &'a Workspace,
    fleet: std::sync::Arc<crate::store::postgres::Fleet>,
    claim: Option<(String, u64)>,
    session: String,
    armed: bool,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        if self.armed {
            let claim = self
                .claim
                .as_ref()
                .map(|(task, token)| (task.as_str(), *token));
            self.ws.fleet_unclaim(&self.fleet, claim, &self.session);
        }
    }
}

/// The first three of `names`, and how many more: a warning stays one readable line however many
/// sessions share the tree.
fn name_a_few(names: &[String]) -> String {
    const SHOWN: usize = 3;
    match names.len() {
        n if n <= SHOWN => names.join(", "),
        n => format!("{} and {} more", names[..SHOWN].join(", "), n - SHOWN),
    }
}

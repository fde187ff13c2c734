//! `orchestrator checkpoint`: the agent reports progress and usage; we answer with the level.

use anyhow::Result;
use clap::Args;
use serde_json::{Map, json};

use std::collections::BTreeMap;

use super::output::{Quiet, Shape};
use super::{Context, SessionArg, agent_arg, select_session};
use crate::core::budget::Level;
use crate::core::meters::MeterSource;
use crate::core::session::{
    CheckpointEvent, Session, TokenReading, TranscriptOrigin, renewed_lease,
};
use crate::core::stack::{Checkpoint, CheckpointWrite, TaskStack};
use crate::core::text::one_line;
use crate::error::{Failure, code};
use crate::meters::{Measured, Tokens, report};
use crate::store::Workspace;
use crate::store::undo::Undo;
use crate::wrap;

/// Record progress and token usage; prints the budget level
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// What was just done
    pub message: String,
    /// Units of the task now done
    #[arg(long, value_name = "N", conflicts_with = "advance")]
    pub progress: Option<u64>,
    /// Units done since the last checkpoint (negative to correct)
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub advance: Option<i64>,
    /// Accept a --progress below the task's current progress (refused without it)
    #[arg(long)]
    pub force: bool,
    /// Tokens in use now (the current context fill, not an increment; default: read from the
    /// session's transcript when it has one)
    #[arg(long, value_name = "N")]
    pub tokens: Option<u64>,
    /// Feed a meter of settings.meters: a counter adds N, a gauge takes N (repeatable)
    #[arg(long = "usage", value_name = "NAME=N", value_parser = crate::core::meters::parse_usage)]
    pub usage: Vec<(String, u64)>,
    /// A problem worth telling the next session (repeatable)
    #[arg(long = "issue", value_name = "TEXT")]
    pub issues: Vec<String>,
    /// Resolve the task's open issue or next step numbered N, as the brief and `task show`
    /// number them (repeatable)
    #[arg(long = "resolve", value_name = "N")]
    pub resolve: Vec<u64>,
    /// Commit the work tree with git after recording (also: settings.git.commit_on_checkpoint)
    #[arg(long)]
    pub commit: bool,
    /// Exit 0 whatever the budget level
    #[arg(long)]
    pub exit_zero: bool,
    /// Who is checkpointing: refused when the session belongs to another agent (a stale agent
    /// whose session was recovered), and picks this agent's session among several
    #[arg(long, env = "ORCHESTRATOR_AGENT", value_name = "NAME")]
    pub agent: Option<String>,
    #[command(flatten)]
    pub session: SessionArg,
}

pub fn run(ctx: &Context, args: CheckpointArgs) -> Result<u8> {
    let message = args.message.trim();
    if message.is_empty() {
        return Err(Failure::user("checkpoint message cannot be empty"));
    }
    let agent = agent_arg(args.agent.as_deref())?;
    let ws = ctx.workspace()?;
    let named = args.session.session.as_deref();
    // The transcript is read before the lock is taken: however long a large transcript takes,
    // other agents' commands do not wait for it. A selection that fails here fails again below,
    // under the lock, with its message.
    let early = select_session(&ws, named, agent, false)
        .ok()
        .map(|session| Measured::read(&ws, &session));
    let lock = ws.lock()?;
    let mut session = select_session(&ws, named, agent, false)?;
    // The settings and this task only: the checkpoint goes to the journal, and the stack is not
    // written back from here.
    let mut stack = ws.load_task_view(&session.task)?;
    let meters = record_usage(&ws, &stack, &session, &args.usage)?;
    let lease = Session::lease(stack.settings.lease_minutes);
    let stack_path = ws.stack_path();
    let task = stack.task(&session.task).ok_or_else(|| {
        Failure::user(format!(
            "{}: task `{}` of session {} is no longer in the stack",
            stack_path.display(),
            session.task,
            session.id
        ))
    })?;
    task.check_token(&session.id, session.fence)
        .map_err(|lost| {
            ws.note_lost(&lost, &session.agent, ctx.now);
            Failure::lost(format!("{lost}; {LOST_HINT}"))
        })?;

    if let Some(unknown) = args
        .resolve
        .iter()
        .find(|&&n| !task.open_items().any(|(_, item)| item.n == n))
    {
        return Err(Failure::user(format!(
            "--resolve {unknown}: task `{}` has no open issue or next step numbered {unknown} (see `orchestrator task show {}`)",
            task.id, task.id
        )));
    }
    let issues: Vec<String> = args
        .issues
        .iter()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect();

    let total = task.progress.total;
    let current = task.progress.done;
    // Closed while this session held it (`task done`, `task set --status`): the checkpoint is
    // recorded, the progress someone else settled stays, and the session is told to wrap.
    let closed = !task.status.is_open();
    let done = match (args.progress, args.advance) {
        _ if closed => current,
        (Some(n), _) if n > total => {
            return Err(Failure::user(format!(
                "--progress {n} is above the total of task `{}` ({total})",
                task.id
            )));
        }
        (Some(n), _) if n < current && !args.force => {
            return Err(Failure::user(format!(
                "--progress {n} is below the current progress of task `{}` ({current}/{total}); pass --force to lower it",
                task.id
            )));
        }
        (Some(n), _) => n,
        (None, Some(k)) => {
            let target = i128::from(task.progress.done) + i128::from(k);
            if target > i128::from(total) {
                tracing::warn!("--advance {k} would pass the total; progress stops at {total}");
            }
            target.clamp(0, i128::from(total)) as u64
        }
        (None, None) => task.progress.done,
    };
    let measured = match early {
        Some(measured) if measured.is_of(&session) => measured,
        // Rebound to another transcript meanwhile: that read is bounded too.
        _ => Measured::read(&ws, &session),
    };
    let tokens = Tokens::from_measured(&session, args.tokens, &measured);
    let recorded_tokens = args.tokens.or(tokens.from_transcript());
    let new_transcript = tokens
        .transcript
        .clone()
        .filter(|found| session.transcript.as_ref() != Some(found));
    let checkpoint = Checkpoint {
        at: ctx.now,
        session: session.id.clone(),
        message: message.to_string(),
        progress: done,
        tokens: recorded_tokens,
        extra: Map::new(),
    };
    let expires = renewed_lease(session.lease_expires, ctx.now, lease);
    let write = CheckpointWrite {
        task: session.task.clone(),
        session: session.id.clone(),
        token: session.fence,
        progress: done,
        checkpoint: checkpoint.clone(),
        resolved: args.resolve.clone(),
        issues: issues.clone(),
        lease_expires: expires,
    };
    let event = CheckpointEvent {
        seq: session.checkpoints.len(),
        checkpoint,
        tokens: recorded_tokens.map(|used| TokenReading {
            used,
            source: tokens.source.clone(),
            at: ctx.now,
        }),
        issues,
        meters,
        cost: tokens.cost(&stack.settings.pricing),
        // Remembered, so `status` and `run` find it without the agent's environment. Only a
        // transcript found from the environment differs from the session's (a first find, or a
        // new file after `/clear`).
        transcript: new_transcript.clone(),
        transcript_origin: new_transcript
            .is_some()
            .then_some(TranscriptOrigin::Environment),
        lease_expires: expires,
    };

    // Two fsynced appends (the session's log, the stack's journal) instead of a rewrite of the
    // stack. A failure (a full disk, a read-only directory) undoes them: exit 1 leaves no
    // checkpoint that a retry would record a second time.
    let mut undo = Undo::new();
    ws.append_checkpoint(&lock, &mut undo, &mut stack, &write, &event)?;
    undo.commit();
    measured.save();
    let progress = stack
        .task(&session.task)
        .map_or(session.progress_at_start, |t| t.progress);
    // Acknowledged already: a fold that fails is reported, and the next writer folds. A commit
    // takes the stack as it stands, so it is folded first.
    let commits = args.commit || stack.settings.git.commit_on_checkpoint;
    let folded = if commits {
        ws.fold_journal(&lock)
    } else {
        ws.fold_journal_if_large(&lock)
    };
    if let Err(err) = folded {
        tracing::warn!("checkpoint recorded, but folding the journal failed: {err:#}");
    }
    ws.reindex_if_stale(&lock);
    let commit = commits.then(|| {
        let message = wrap::handoff::checkpoint_commit_message(&session, message, progress);
        // The checkpoint is recorded whatever happens here: a failed commit is reported, not fatal.
        match wrap::commit_session_work(&ws, &stack, &session, &message) {
            Ok(outcome) => wrap::commit_json(outcome),
            Err(err) => {
                tracing::warn!("checkpoint recorded, but the commit failed: {err:#}");
                json!({"result": "failed", "error": format!("{err:#}")})
            }
        }
    });
    drop(lock);
    session.apply(event);

    let report = report(&stack, &session, progress, &tokens);
    let (mut json, mut text, level) = (report.json, report.text, report.level);
    json["checkpoints"] = json!(session.checkpoints.len());
    let closed_task = stack.task(&session.task).filter(|_| closed);
    if let Some(task) = closed_task {
        let why = match task.blocked_reason() {
            Some(reason) => format!(" ({})", one_line(reason)),
            None => String::new(),
        };
        let action = format!(
            "Task `{}` was marked {}{why} while this session held it: stop and run `orchestrator wrap` now.",
            task.id, task.status
        );
        let budget_action = json["action"].as_str().unwrap_or_default().to_string();
        text = text.replacen(&budget_action, &action, 1);
        json["action"] = json!(action);
        json["task_closed"] = json!({"status": task.status, "reason": task.blocked_reason()});
    }
    if !args.resolve.is_empty() {
        let numbers: Vec<String> = args.resolve.iter().map(|n| format!("#{n}")).collect();
        text.push_str(&format!("Resolved {}.\n", numbers.join(", ")));
        json["resolved"] = json!(args.resolve);
    }
    if let Some(commit) = commit {
        text.push_str(&match commit["result"].as_str() {
            Some("committed") => format!(
                "Committed {}.\n",
                commit["oid"].as_str().unwrap_or_default()
            ),
            Some("nothing_to_commit") => "Nothing to commit.\n".to_string(),
            Some("not_a_repository") => "Not a git repository: nothing committed.\n".to_string(),
            Some("skipped") => format!(
                "Commit skipped: {}\n",
                commit["reason"].as_str().unwrap_or_default()
            ),
            _ => format!(
                "Commit failed: {}\n",
                commit["error"].as_str().unwrap_or("unknown error")
            ),
        });
        json["commit"] = commit;
    }
    let shape = Shape {
        quiet: Quiet::Keys(MACHINE_KEYS),
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, shape);
    Ok(if args.exit_zero {
        code::OK
    } else if closed {
        // 11 is "wrap now" to every agent the brief taught; `level` still says the budget's.
        Level::Shutdown.exit_code()
    } else {
        level.exit_code()
    })
}

/// What an agent that lost its task should do.
const LOST_HINT: &str =
    "stop working on it: run `orchestrator start` for a new session (exit 5: the task was lost)";

/// The lines of a usage report that `--quiet` keeps: the level line and one line per meter.
pub(super) const MACHINE_KEYS: &[&str] = &["level=", "meter="];

/// The meters' values after this checkpoint's `--usage`, refused before anything is written
/// when a name is not a meter the agent can feed.
fn record_usage(
    ws: &Workspace,
    stack: &TaskStack,
    session: &Session,
    usage: &[(String, u64)],
) -> Result<BTreeMap<String, u64>> {
    let mut values = BTreeMap::new();
    for (name, reported) in usage {
        let meter = stack.settings.meters.get(name).ok_or_else(|| {
            let known: Vec<&str> = stack.settings.meters.iter().map(|(n, _)| n).collect();
            Failure::user(format!(
                "--usage {name}: {} has no meter `{name}` in settings.meters ({})",
                ws.stack_path().display(),
                if known.is_empty() {
                    "it defines none".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                }
            ))
        })?;
        if meter.source == MeterSource::Transcript {
            return Err(Failure::user(format!(
                "--usage {name}: meter `{name}` is read from the transcript, not fed by --usage"
            )));
        }
        let current = values
            .get(name)
            .or_else(|| session.meters.get(name))
            .copied()
            .unwrap_or(0);
        values.insert(name.clone(), meter.kind.record(current, *reported));
    }
    Ok(values)
}

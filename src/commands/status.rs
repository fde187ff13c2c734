//! `orchestrator status`: the live session's task, progress and usage.

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use super::output::{Quiet, Shape};
use super::{Context, SessionArg, select_session};
use crate::core::budget::Level;
use crate::core::session::{Session, describe_duration};
use crate::core::stack::TaskStack;
use crate::error::code;
use crate::meters;
use crate::store::Workspace;

/// Show the live session: task, progress, usage against the thresholds
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 0 whatever the budget level
    #[arg(long)]
    pub exit_zero: bool,
    /// Every live session on every machine of the fleet store (host, agent, task, level,
    /// lease left), and the quota pauses
    #[arg(long)]
    pub fleet: bool,
    #[command(flatten)]
    pub session: SessionArg,
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<u8> {
    if args.fleet {
        return super::fleet::status::run(ctx);
    }
    let ws = ctx.workspace()?;
    let sessions = ws.active_sessions()?;
    // The settings and the sessions' own tasks: never the whole stack.
    let tasks: Vec<&str> = sessions.iter().map(|s| s.task.as_str()).collect();
    let stack = ws.load_tasks_view(&tasks)?;
    meters::warn_about_compaction(&ws, &stack);
    // A wrap cut off halfway (a full disk, a kill) is neither live nor gone: shown with its steps.
    let (wrapping, live): (Vec<Session>, Vec<Session>) =
        sessions.into_iter().partition(Session::is_wrapping);
    let wrapping_json: Vec<Value> = wrapping.iter().map(wrapping_entry).collect();
    let wrapping_text: String = wrapping.iter().map(wrapping_lines).collect();
    let named = args.session.session.as_deref();
    if let Some(session) = named.and_then(|id| wrapping.iter().find(|s| s.id == id)) {
        let mut json = wrapping_entry(session);
        json["action"] = json!(finish_action(session));
        let text = format!(
            "session={} state=wrapping\n{}",
            session.id,
            wrapping_lines(session)
        );
        emit(ctx, &ws, json, &text, shape(Quiet::FirstLine));
        return Ok(code::OK);
    }
    if live.is_empty() && named.is_none() {
        let (json, text) = match wrapping.first() {
            None => (
                json!({"session": null, "sessions": [], "wrapping": [], "action": "Run `orchestrator start` to begin a session."}),
                "session=none\nNo live session. Run `orchestrator start` to begin one.\n"
                    .to_string(),
            ),
            Some(first) => {
                let ids: Vec<&str> = wrapping.iter().map(|s| s.id.as_str()).collect();
                (
                    json!({"session": null, "sessions": [], "wrapping": wrapping_json, "action": finish_action(first)}),
                    format!(
                        "session=none wrapping={}\nNo live session, but a wrap is half done.\n{wrapping_text}",
                        ids.join(",")
                    ),
                )
            }
        };
        emit(ctx, &ws, json, &text, shape(Quiet::FirstLine));
        return Ok(code::OK);
    }
    if live.len() > 1 && named.is_none() {
        let (mut json, mut text, level) = list(ctx, &ws, &stack, &live);
        json["wrapping"] = json!(wrapping_json);
        text.push_str(&wrapping_text);
        emit(ctx, &ws, json, &text, shape(Quiet::Keys(&["session="])));
        return Ok(if args.exit_zero {
            code::OK
        } else {
            level.exit_code()
        });
    }
    let session = select_session(&ws, named, None, false)?;
    let (mut json, mut text, level) = session_report(ctx, &ws, &stack, &session);
    let elapsed = ctx.now - session.started;
    let stale = session.is_stale(ctx.now);
    json["checkpoints"] = json!(session.checkpoints.len());
    json["wrapping"] = json!(wrapping_json);
    json["sessions"] = json!(
        live.iter()
            .map(|s| json!({"session": s.id, "agent": s.agent, "task": s.task}))
            .collect::<Vec<_>>()
    );
    text.push_str(&format!(
        "\nsession:  {}\nagent:    {}\ntask:     {}\nstarted:  {} ({} ago) by pid {}{} on {}\nlease:    {}{}\n",
        session.id,
        session.agent,
        session.task,
        crate::clock::format(session.started),
        describe_duration(elapsed),
        session.pid,
        session
            .parent_pid
            .map(|p| format!(" (parent {p})"))
            .unwrap_or_default(),
        session.host,
        crate::clock::format(session.lease_expires),
        if stale {
            " (expired: the next `start` recovers this session)"
        } else {
            ""
        }
    ));
    text.push_str(&wrapping_text);
    emit(
        ctx,
        &ws,
        json,
        &text,
        shape(Quiet::Keys(super::checkpoint::MACHINE_KEYS)),
    );
    Ok(if args.exit_zero {
        code::OK
    } else {
        level.exit_code()
    })
}

/// Prints the view with what the `run` loops of the workspace are told: a pending stop
/// (`orchestrator stop`) and a quota pause.
fn emit(ctx: &Context, ws: &Workspace, mut json: Value, text: &str, shape: Shape) {
    let stop = ws.stop_file().exists();
    let pause = ws.load_pause().filter(|p| p.until > ctx.now);
    let mut text = text.to_string();
    if stop {
        text.push_str("stop:     pending: `run` loops stop after their current session (`orchestrator resume` cancels)\n");
    }
    if let Some(pause) = &pause {
        text.push_str(&format!(
            "paused:   until {} ({} reported a limit: {}); `orchestrator resume` ends it\n",
            crate::clock::format(pause.until),
            pause.agent,
            pause.reason
        ));
    }
    // On a fleet store, the accounts' pauses every machine's loops honour.
    let shared = match ws.fleet() {
        Some(fleet) => fleet.with(|pg| pg.pauses(ctx.now)).unwrap_or_else(|err| {
            tracing::warn!("cannot read the fleet's quota pauses: {err:#}");
            Vec::new()
        }),
        None => Vec::new(),
    };
    for (account, until, reason) in &shared {
        text.push_str(&format!(
            "paused:   account {account} until {} (on every machine: {})\n",
            crate::clock::format(*until),
            crate::core::text::one_line(reason)
        ));
    }
    if let Value::Object(map) = &mut json {
        map.insert("stop_pending".into(), json!(stop));
        map.insert(
            "paused_until".into(),
            json!(pause.map(|p| crate::clock::format(p.until))),
        );
        if ws.fleet().is_some() {
            map.insert(
                "fleet_pauses".into(),
                json!(shared
                    .iter()
                    .map(|(account, until, reason)| json!({"account": account, "until": crate::clock::format(*until), "reason": reason}))
                    .collect::<Vec<_>>()),
            );
        }
    }
    ctx.emit_shaped(json, &text, shape);
}

/// What --quiet keeps of this view, and the labels shown bold on a terminal.
fn shape(quiet: Quiet<'static>) -> Shape<'static> {
    Shape {
        quiet,
        labels: &[
            "session:", "agent:", "task:", "started:", "lease:", "done:", "pending:", "stop:",
            "paused:",
        ],
        ..Shape::default()
    }
}

/// Several live sessions (parallel agents): one line each, and the worst level decides the exit.
fn list(
    ctx: &Context,
    ws: &Workspace,
    stack: &TaskStack,
    live: &[Session],
) -> (Value, String, Level) {
    let mut worst = Level::Ok;
    let mut text = String::new();
    let mut sessions = Vec::new();
    for session in live {
        let (json, report_text, level) = session_report(ctx, ws, stack, session);
        worst = worst.max(level);
        let stale = session.is_stale(ctx.now);
        let first_line = report_text.lines().next().unwrap_or_default();
        text.push_str(&format!(
            "session={} agent={} task={} {first_line} started={}{}\n",
            session.id,
            session.agent,
            session.task,
            crate::clock::format(session.started),
            if stale { " stale=true" } else { "" }
        ));
        sessions.push(json);
    }
    text.push_str(&format!(
        "{} live sessions; worst level {worst}. Name one with --session ID for its details.\n",
        live.len()
    ));
    let json = json!({"session": null, "level": worst, "sessions": sessions});
    (json, text, worst)
}

/// How to finish a half-done wrap.
fn finish_action(session: &Session) -> String {
    format!(
        "Finish the wrap of {} with `orchestrator wrap --session {}` (the next `orchestrator start` also finishes it).",
        session.id, session.id
    )
}

/// A session whose wrap was cut off: which steps are done, which are pending.
fn wrapping_entry(session: &Session) -> Value {
    let journal = session.wrap.as_ref();
    let (done, pending) = journal
        .map(|j| j.step_states(session.worktree.is_some()))
        .unwrap_or_default();
    json!({
        "session": session.id,
        "state": "wrapping",
        "agent": session.agent,
        "task": session.task,
        "reason": journal.map(|j| j.reason.as_str()),
        "begun": journal.map(|j| j.begun),
        "done": done,
        "pending": pending,
        "finish": format!("orchestrator wrap --session {}", session.id),
    })
}

fn wrapping_lines(session: &Session) -> String {
    let Some(journal) = &session.wrap else {
        return String::new();
    };
    let (done, pending) = journal.step_states(session.worktree.is_some());
    let names = |steps: Vec<&str>| {
        if steps.is_empty() {
            "none".to_string()
        } else {
            steps.join(", ")
        }
    };
    format!(
        "\nSession {} (agent {}, task {}) is half wrapped: its wrap ({}) began at {} and stopped before the end.\ndone:     {}\npending:  {}\n{}\n",
        session.id,
        session.agent,
        session.task,
        journal.reason,
        crate::clock::format(journal.begun),
        names(done),
        names(pending),
        finish_action(session)
    )
}

/// One session's usage report, with who holds it and since when.
fn session_report(
    ctx: &Context,
    ws: &Workspace,
    stack: &TaskStack,
    session: &Session,
) -> (serde_json::Value, String, Level) {
    let report = meters::current(ws, stack, session);
    let mut json = report.json;
    json["agent"] = json!(session.agent);
    json["started"] = json!(session.started);
    json["elapsed_minutes"] = json!((ctx.now - session.started).num_minutes());
    json["lease_expires"] = json!(session.lease_expires);
    json["stale"] = json!(session.is_stale(ctx.now));
    json["state"] = json!("live");
    json["host"] = json!(session.host);
    json["pid"] = json!(session.pid);
    json["parent_pid"] = json!(session.parent_pid);
    (json, report.text, report.level)
}

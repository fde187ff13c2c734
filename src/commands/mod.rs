//! One file per command, a folder for a command with subcommands, its clap `Args` beside it.
//! Each returns the process exit code, or an error for `main` to print.

mod checkpoint;
mod completions;
mod config;
mod demo;
mod fleet;
mod hook;
mod init;
mod log;
mod man;
mod next;
pub mod output;
mod report;
mod resume;
mod run;
mod start;
mod status;
mod stop;
mod task;
mod watch;
mod worktree;
mod wrap;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::borrow::Cow;
use std::path::PathBuf;

use crate::cli::Cli;
use crate::core::session::Session;
use crate::core::text::{json_escape_controls, strip_controls};
use crate::error::Failure;
use crate::store::Workspace;
use checkpoint::CheckpointArgs;
use completions::CompletionsArgs;
use config::ConfigCommand;
use fleet::FleetCommand;
use hook::HookCommand;
use init::InitArgs;
use log::LogArgs;
use man::ManArgs;
use output::Shape;
use report::ReportArgs;
use resume::ResumeArgs;
use run::RunArgs;
use start::StartArgs;
use status::StatusArgs;
use stop::StopArgs;
use task::TaskCommand;
use watch::WatchArgs;
use worktree::WorktreeCommand;
use wrap::WrapArgs;

/// The subcommands. A command's arguments, and its help text, live in its own file.
#[derive(Debug, Subcommand)]
pub enum Command {
    Init(InitArgs),
    #[command(subcommand)]
    Task(TaskCommand),
    /// Show the task `start` would pick, and why the others are not ready
    Next,
    Start(StartArgs),
    Checkpoint(CheckpointArgs),
    Status(StatusArgs),
    Wrap(WrapArgs),
    Log(LogArgs),
    Report(ReportArgs),
    Watch(WatchArgs),
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build a scratch workspace (or fill the empty --dir) and run one whole session in it
    Demo,
    Run(RunArgs),
    Stop(StopArgs),
    Resume(ResumeArgs),
    #[command(subcommand)]
    Hook(HookCommand),
    #[command(subcommand)]
    Fleet(FleetCommand),
    #[command(subcommand)]
    Worktree(WorktreeCommand),
    Completions(CompletionsArgs),
    Man(ManArgs),
}

/// `--session`, shared by the commands that act on a live session.
#[derive(Debug, Clone, Args)]
pub struct SessionArg {
    /// The session (default: $ORCHESTRATOR_SESSION, else the only live session)
    #[arg(long, env = "ORCHESTRATOR_SESSION", value_name = "ID")]
    pub session: Option<String>,
}

/// What every command gets: where to work, how to print, and what time it is.
pub struct Context {
    pub dir: Option<PathBuf>,
    pub json: bool,
    /// `--quiet`: only the machine part of the text (see [`output::Quiet`]).
    pub quiet: bool,
    /// Styles on stdout: decided once, here, by [`Context::color_for`]; never under `--json`.
    pub color: bool,
    pub now: DateTime<Utc>,
    /// `--store URL` (or `ORCHESTRATOR_STORE`): the fleet store, over settings.store.
    pub store: Option<String>,
}

impl Context {
    /// The workspace the command acts on. One found above the current directory is named on
    /// stderr: inside someone else's workspace (a clone's example stack, say) a command would
    /// otherwise act on it silently.
    pub fn workspace(&self) -> Result<Workspace> {
        let ws = Workspace::find(self.dir.as_deref())?.with_store_flag(self.store.clone());
        if ws.found_above() {
            eprintln!(
                "note: using workspace {} (found above the current directory)",
                strip_controls(&ws.root().display().to_string())
            );
        }
        Ok(ws)
    }

    /// A context for a command run from inside another (`run`, the hook): plain text, no
    /// `--quiet`, no colours, whatever the outer command was given.
    pub fn inner(dir: Option<PathBuf>, now: DateTime<Utc>) -> Context {
        Context {
            dir,
            json: false,
            quiet: false,
            color: false,
            now,
            store: None,
        }
    }

    /// [`Context::inner`] for a command on `ws`, with the store it was given.
    pub fn inner_for(ws: &Workspace, now: DateTime<Utc>) -> Context {
        Context {
            store: ws.store_flag().map(str::to_string),
            ..Context::inner(Some(ws.root().to_path_buf()), now)
        }
    }

    /// Whether a stream (stdout for the commands' text, stderr for the logs) gets colours: the
    /// one place that decides, from the environment (`NO_COLOR`, `CLICOLOR_FORCE`, `CLICOLOR`,
    /// `TERM`; see [`output::wants_color`]) and whether the stream is a terminal.
    pub fn color_for(stream: &impl std::io::IsTerminal) -> bool {
        output::wants_color(&output::ColorEnv::read(), stream.is_terminal())
    }

    /// Machine output on stdout: the JSON object under `--json`, else the text (under
    /// `--quiet` its first line). Either way no terminal control byte from user text reaches
    /// the terminal; JSON values keep the data.
    pub fn emit(&self, json: Value, text: &str) {
        self.emit_shaped(json, text, Shape::default());
    }

    /// [`Context::emit`] with the command's own [`Shape`]: what `--quiet` keeps, what is bold.
    pub fn emit_shaped(&self, json: Value, text: &str, shape: Shape) {
        if self.json {
            output::print_stdout(&format!("{}\n", json_escape_controls(&json.to_string())));
            return;
        }
        let text = strip_controls(text);
        let text = if self.quiet {
            match shape.quiet.select(&text) {
                Cow::Borrowed(part) => Cow::Borrowed(part),
                Cow::Owned(part) => Cow::Owned(strip_controls(&part).into_owned()),
            }
        } else {
            text
        };
        if text.is_empty() {
            return;
        }
        let text = if self.color {
            Cow::Owned(output::paint(&text, &shape))
        } else {
            text
        };
        if text.ends_with('\n') {
            output::print_stdout(&text);
        } else {
            output::print_stdout(&format!("{text}\n"));
        }
    }
}

pub fn run(cli: Cli) -> Result<u8> {
    let json = cli.global.json;
    let now = match (&cli.command, crate::clock::now()) {
        (_, Ok(now)) => now,
        // The Claude Code hook exits 0 whatever happens; a bad clock override is only logged.
        (Command::Hook(HookCommand::Claude(_)), Err(err)) => {
            tracing::warn!("{err:#}");
            Utc::now()
        }
        // They describe the command line and never read the clock.
        (Command::Completions(_) | Command::Man(_), Err(_)) => Utc::now(),
        (_, Err(err)) => return Err(err),
    };
    let ctx = Context {
        dir: cli.global.dir,
        json,
        quiet: cli.global.quiet,
        color: !json && Context::color_for(&std::io::stdout()),
        now,
        store: cli.global.store,
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Task(cmd) => task::run(&ctx, cmd),
        Command::Next => next::run(&ctx),
        Command::Start(args) => start::run(&ctx, args),
        Command::Checkpoint(args) => checkpoint::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Wrap(args) => wrap::run(&ctx, args),
        Command::Log(args) => log::run(&ctx, args),
        Command::Report(args) => report::run(&ctx, args),
        Command::Watch(args) => watch::run(&ctx, args),
        Command::Config(cmd) => config::run(&ctx, cmd),
        Command::Demo => demo::run(&ctx),
        Command::Hook(cmd) => hook::run(&ctx, cmd),
        Command::Worktree(cmd) => worktree::run(&ctx, cmd),
        Command::Run(args) => run::run(&ctx, args),
        Command::Stop(args) => stop::run(&ctx, args),
        Command::Resume(args) => resume::run(&ctx, args),
        Command::Fleet(cmd) => fleet::run(&ctx, cmd),
        Command::Completions(args) => completions::run(&ctx, args),
        Command::Man(args) => man::run(&ctx, args),
    }
}

/// Which session a command means: `--session`/`ORCHESTRATOR_SESSION`, else the only one.
/// `agent` (`--agent`/`ORCHESTRATOR_AGENT`), when given, must own the session: a stale agent
/// whose session was recovered must not write into the session that took its task over.
/// Without it and without a name, the only live session is meant, whoever owns it.
/// `include_wrapping` lets `wrap` pick up a session whose wrap was cut off.
pub fn select_session(
    ws: &Workspace,
    named: Option<&str>,
    agent: Option<&str>,
    include_wrapping: bool,
) -> Result<Session> {
    if let Some(id) = named {
        crate::core::ids::check_session_id(id)
            .map_err(|e| Failure::user(format!("--session: {e}")))?;
        if ws.active_path(id).exists() {
            let session = ws.load_active(id)?;
            if let Some(agent) = agent
                && session.agent != agent
            {
                return Err(Failure::user(format!(
                    "session {id} belongs to agent `{}`, not `{agent}`; {}",
                    session.agent,
                    ENDED_HINT.replace("{agent}", agent)
                )));
            }
            if session.is_wrapping() && !include_wrapping {
                return Err(Failure::user(format!(
                    "session {id} is being wrapped; run `orchestrator wrap --session {id}` to finish it"
                )));
            }
            return Ok(session);
        }
        if ws.archive_path(id).exists() {
            // Recovered because its lease ran out: its claim is gone, and its agent lost the
            // task (exit 5), as a write under a stale token does.
            let recovered = ws.load_session(&ws.archive_path(id)).ok().filter(|s| {
                s.wrap
                    .as_ref()
                    .is_some_and(|w| w.reason == crate::core::session::REASON_RECOVERED)
            });
            let message = format!("session {id} was already wrapped; start a new one");
            return Err(match recovered {
                Some(record) => Failure::lost(format!(
                    "{message} (its lease ran out and it was recovered: it lost task `{}`)",
                    record.task
                )),
                None => Failure::user(message),
            });
        }
        return Err(Failure::user(format!(
            "no session {id} in {}",
            ws.display(&ws.active_dir())
        )));
    }
    // Chosen from the records alone: only the session chosen replays its checkpoint log, so a
    // command does not read every other live session's.
    let live: Vec<Session> = ws
        .active_records()?
        .into_iter()
        .filter(|s| include_wrapping || !s.is_wrapping())
        .collect();
    let describe = |sessions: &[Session]| -> String {
        sessions
            .iter()
            .map(|s| format!("{} ({}, {})", s.id, s.agent, s.task))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut sessions = match agent {
        Some(agent) => {
            let (mine, others): (Vec<Session>, Vec<Session>) =
                live.into_iter().partition(|s| s.agent == agent);
            if mine.is_empty() && !others.is_empty() {
                return Err(Failure::user(format!(
                    "agent `{agent}` has no live session (live: {}); {}",
                    describe(&others),
                    ENDED_HINT.replace("{agent}", agent)
                )));
            }
            mine
        }
        None => live,
    };
    match sessions.len() {
        0 => Err(Failure::user(
            "no live session; run `orchestrator start` first",
        )),
        1 => ws.replay_log(sessions.remove(0)),
        _ => Err(Failure::user(format!(
            "{} live sessions: {}; name one with --session or ORCHESTRATOR_SESSION",
            sessions.len(),
            describe(&sessions)
        ))),
    }
}

/// `--agent`/`ORCHESTRATOR_AGENT` of a command that acts on a session, checked as `start` does.
pub fn agent_arg(agent: Option<&str>) -> Result<Option<&str>> {
    let Some(agent) = agent.map(str::trim) else {
        return Ok(None);
    };
    start::check_agent_name(agent).map_err(|e| Failure::user(format!("--agent: {e:#}")))?;
    Ok(Some(agent))
}

/// What a refused agent should do: its session most likely outlived its lease and was recovered.
const ENDED_HINT: &str = "if your session's lease ran out it was recovered and wrapped: run `orchestrator start --agent {agent}` for a new one";

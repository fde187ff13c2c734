//! Command-line types. Parsing only; behaviour lives in `commands/`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

use crate::core::stack::Status;

#[derive(Debug, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Keeps AI coding agents working through a task queue across context-limited sessions",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Workspace directory (holds task_stack.json); default: search from the current directory up
    #[arg(
        short = 'C',
        long = "dir",
        global = true,
        env = "ORCHESTRATOR_DIR",
        value_name = "DIR"
    )]
    pub dir: Option<PathBuf>,
    /// Print exactly one JSON object on stdout
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create task_stack.json, the handoff directory and .gitignore entries
    Init(InitArgs),
    /// Add, list, show and change tasks
    #[command(subcommand)]
    Task(TaskCommand),
    /// Show the task `start` would pick, and why the others are not ready
    Next,
    /// Begin a session on the next (or named) task and print the brief
    Start(StartArgs),
    /// Record progress and token usage; prints the budget level
    Checkpoint(CheckpointArgs),
    /// Show the live session: task, progress, usage against the thresholds
    Status(StatusArgs),
    /// End the session gracefully: backup, handoff, progress saved, session archived, commit
    Wrap(WrapArgs),
    /// Build a scratch workspace (or fill the empty --dir) and run one whole session in it
    Demo,
    /// Drive an agent command session after session until the work is done or a stop condition
    Run(RunArgs),
    /// Connect to an agent's hooks: `hook claude` handles an event, `hook install claude` sets it up
    #[command(subcommand)]
    Hook(HookCommand),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Who is working; parallel loops on one workspace need different names
    #[arg(
        long,
        env = "ORCHESTRATOR_AGENT",
        default_value = "agent",
        value_name = "NAME"
    )]
    pub agent: String,
    /// Stop after this many sessions
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<u32>,
    /// Start no session after this long (like 8h; a running session finishes)
    #[arg(long, value_name = "D", value_parser = crate::core::run::parse_duration)]
    pub max_duration: Option<Duration>,
    /// Pause between sessions
    #[arg(long, value_name = "D", default_value = "0s", value_parser = crate::core::run::parse_duration)]
    pub sleep: Duration,
    /// How long the agent has to wrap after the shutdown level or a signal, before it is stopped
    /// (SIGTERM, then SIGKILL after the same again)
    #[arg(long, value_name = "D", default_value = "2m", value_parser = crate::core::run::parse_duration)]
    pub grace: Duration,
    /// Stop after this many sessions in a row without progress, or agent failures in a row
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker: u32,
    /// How often the agent's usage is checked while it runs
    #[arg(long, value_name = "D", default_value = "1s", value_parser = crate::core::run::parse_duration)]
    pub poll: Duration,
    /// Token budget for each session (default: settings.budget.tokens)
    #[arg(long, value_name = "N")]
    pub budget: Option<u64>,
    /// The agent command and its arguments, run without a shell; `{brief}`, `{session}` and
    /// `{task}` in them are filled in
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Handle one Claude Code hook event (JSON on stdin); prints hook JSON or nothing, exits 0
    Claude(HookClaudeArgs),
    /// Add orchestrator's hooks to the agent's project settings (.claude/settings.json)
    Install(HookInstallArgs),
}

#[derive(Debug, Args)]
pub struct HookClaudeArgs {
    /// The agent name of the sessions the hook starts and follows
    #[arg(
        long,
        env = "ORCHESTRATOR_AGENT",
        default_value = "claude",
        value_name = "NAME"
    )]
    pub agent: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HookAgent {
    Claude,
}

#[derive(Debug, Args)]
pub struct HookInstallArgs {
    /// Which agent's settings to change
    pub agent: HookAgent,
    /// The command the hooks run, as the agent's shell will find it
    #[arg(long, default_value = "orchestrator", value_name = "CMD")]
    pub command: String,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// SQLite database to back up at every wrap
    #[arg(long, value_name = "PATH")]
    pub db: Option<String>,
    /// Token budget per session
    #[arg(long, value_name = "N")]
    pub budget: Option<u64>,
    /// Warn threshold, a fraction of the budget (0.75 = 75%)
    #[arg(long, value_name = "F")]
    pub warn: Option<f64>,
    /// Shutdown threshold, a fraction of the budget (0.85 = 85%)
    #[arg(long, value_name = "F")]
    pub shutdown: Option<f64>,
    /// Where your agent compacts its context on its own, a fraction of the budget
    /// (Claude Code: about 0.835)
    #[arg(long, value_name = "F")]
    pub compact_at: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Add a task
    Add(TaskAddArgs),
    /// List tasks in priority order
    List(TaskListArgs),
    /// Show one task with its recent checkpoints
    Show(TaskIdArg),
    /// Mark a task done
    Done(TaskIdArg),
    /// Change a task's priority, total, status or title
    Set(TaskSetArgs),
}

#[derive(Debug, Args)]
pub struct TaskAddArgs {
    pub id: String,
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
    /// 1 is the most urgent; default: after every existing task
    #[arg(long, value_name = "N")]
    pub priority: Option<i64>,
    /// Units of work in the task
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub total: u64,
    /// A task that must be done first (repeatable)
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskListArgs {
    #[arg(long, value_name = "S")]
    pub status: Option<Status>,
}

#[derive(Debug, Args)]
pub struct TaskIdArg {
    pub id: String,
}

#[derive(Debug, Args)]
pub struct TaskSetArgs {
    pub id: String,
    #[arg(long, value_name = "N")]
    pub priority: Option<i64>,
    #[arg(long, value_name = "N")]
    pub total: Option<u64>,
    #[arg(long, value_name = "N")]
    pub progress: Option<u64>,
    #[arg(long, value_name = "S")]
    pub status: Option<Status>,
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
}

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
}

#[derive(Debug, Args)]
pub struct SessionArg {
    /// The session (default: $ORCHESTRATOR_SESSION, else the only live session)
    #[arg(long, env = "ORCHESTRATOR_SESSION", value_name = "ID")]
    pub session: Option<String>,
}

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

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 0 whatever the budget level
    #[arg(long)]
    pub exit_zero: bool,
    #[command(flatten)]
    pub session: SessionArg,
}

#[derive(Debug, Args)]
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
}

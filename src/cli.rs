//! The top-level command line: global options and the subcommand; each command's own arguments
//! live beside it in `commands/`.

use clap::{Args, Parser};
use std::path::PathBuf;

use crate::commands::Command;

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
    /// Print only the machine line (like `level=ok used=...`), no sentences
    ///
    /// checkpoint and status keep their `level=` and `meter=` lines (several live sessions:
    /// their `session=` lines); start, next, wrap and run their first `key=value` line; task
    /// list its rows and task show all of it; demo the workspace's path; man --out-dir the
    /// pages' paths; init, task add|set|done and hook install print nothing. Logs on stderr are
    /// cut to errors unless RUST_LOG says otherwise. `--json` output is unchanged.
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// The fleet store's PostgreSQL URL (`file`: the files), else settings.store
    ///
    /// Takes the place of settings.store.postgres.url_env. The URL carries the password: prefer
    /// the environment variable to the command line, which other users can see.
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATOR_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub store: Option<String>,
}

/// `--version --verbose` (in either order, before any `--`): the version, then what the binary
/// embeds that ages: the date of its price table. clap answers `--version` alone.
pub fn verbose_version<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Option<String> {
    let args: Vec<_> = args.into_iter().skip(1).take_while(|a| a != "--").collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    ((has("--version") || has("-V")) && has("--verbose")).then(|| {
        format!(
            "orchestrator {}\nprices: embedded table of {} ({} models; settings.pricing overrides it)\n",
            env!("CARGO_PKG_VERSION"),
            crate::core::pricing::TABLE_DATE,
            crate::core::pricing::embedded().len()
        )
    })
}

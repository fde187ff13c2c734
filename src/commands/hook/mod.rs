//! `orchestrator hook`: connects orchestrator to an agent's own hooks, one file per subcommand:
//! `hook claude` handles a Claude Code event, `hook install claude` sets the hooks and the
//! permission up (`--check` reports what is missing, in `check`), `hook uninstall claude` takes
//! them out again.

mod check;
mod claude;
mod install;
mod uninstall;

use anyhow::Result;
use clap::Subcommand;

use super::Context;
use crate::error::code;
use claude::HookClaudeArgs;
use install::HookInstallArgs;
use uninstall::HookUninstallArgs;

/// Connect to an agent's hooks: `hook claude` handles an event, `hook install claude` sets it
/// up, `hook uninstall claude` removes it
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    Claude(HookClaudeArgs),
    Install(HookInstallArgs),
    Uninstall(HookUninstallArgs),
}

/// The agents whose settings `hook install` and `hook uninstall` edit.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HookAgent {
    Claude,
}

pub fn run(ctx: &Context, command: HookCommand) -> Result<u8> {
    match command {
        HookCommand::Claude(args) => {
            claude::run(ctx, args);
            Ok(code::OK)
        }
        HookCommand::Install(args) => install::run(ctx, args),
        HookCommand::Uninstall(args) => uninstall::run(ctx, args),
    }
}

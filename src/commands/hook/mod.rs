//! `orchestrator hook`: connects orchestrator to an agent's own hooks, one file per subcommand:
//! `hook claude` handles a Claude Code event, `hook install claude` sets the hooks up.

mod claude;
mod install;

use anyhow::Result;
use clap::Subcommand;

use super::Context;
use crate::error::code;
use claude::HookClaudeArgs;
use install::HookInstallArgs;

/// Connect to an agent's hooks: `hook claude` handles an event, `hook install claude` sets it up
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    Claude(HookClaudeArgs),
    Install(HookInstallArgs),
}

pub fn run(ctx: &Context, command: HookCommand) -> Result<u8> {
    match command {
        HookCommand::Claude(args) => {
            claude::run(ctx, args);
            Ok(code::OK)
        }
        HookCommand::Install(args) => install::run(ctx, args),
    }
}

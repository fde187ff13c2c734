//! `orchestrator worktree list|prune|integrate`: the sessions' own git worktrees.

mod integrate;
mod list;
mod prune;

use anyhow::Result;
use clap::Subcommand;

use super::Context;
use integrate::WorktreeIntegrateArgs;
use list::WorktreeListArgs;
use prune::WorktreePruneArgs;

/// The sessions' git worktrees: what exists, who owns it, what is not integrated yet
#[derive(Debug, Subcommand)]
pub enum WorktreeCommand {
    List(WorktreeListArgs),
    Prune(WorktreePruneArgs),
    Integrate(WorktreeIntegrateArgs),
}

pub fn run(ctx: &Context, cmd: WorktreeCommand) -> Result<u8> {
    match cmd {
        WorktreeCommand::List(args) => list::run(ctx, args),
        WorktreeCommand::Prune(args) => prune::run(ctx, args),
        WorktreeCommand::Integrate(args) => integrate::run(ctx, args),
    }
}

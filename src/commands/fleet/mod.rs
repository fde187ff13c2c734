//! `orchestrator fleet init|import|export|log|reap|pool`: the PostgreSQL store that lets machines share one
//! task queue (see `store::postgres`).

mod export;
mod import;
mod init;
mod log;
mod pool;
mod reap;
pub(super) mod status;

use anyhow::Result;
use clap::Subcommand;

use super::Context;
use crate::core::stack::Settings;
use crate::error::Failure;
use crate::store::postgres::{self, PgStore};
use export::FleetExportArgs;
use import::FleetImportArgs;
use init::FleetInitArgs;
use log::FleetLogArgs;
use pool::FleetPoolArgs;
use reap::FleetReapArgs;

/// The fleet store on PostgreSQL: create its schema, move a task stack in and out, read its
/// events, release expired leases, pool this machine's connections
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    Init(FleetInitArgs),
    Import(FleetImportArgs),
    Export(FleetExportArgs),
    Log(FleetLogArgs),
    Reap(FleetReapArgs),
    Pool(FleetPoolArgs),
}

pub fn run(ctx: &Context, cmd: FleetCommand) -> Result<u8> {
    match cmd {
        FleetCommand::Init(args) => init::run(ctx, args),
        FleetCommand::Import(args) => import::run(ctx, args),
        FleetCommand::Export(args) => export::run(ctx, args),
        FleetCommand::Log(args) => log::run(ctx, args),
        FleetCommand::Reap(args) => reap::run(ctx, args),
        FleetCommand::Pool(args) => pool::run(ctx, args),
    }
}

/// The workspace's fleet store, for the commands that act on a workspace using one.
fn workspace_fleet(
    ctx: &Context,
) -> Result<(
    crate::store::Workspace,
    crate::core::stack::TaskStack,
    std::sync::Arc<postgres::Fleet>,
)> {
    let ws = ctx.workspace()?;
    let stack = ws.load_view()?;
    let fleet = ws.fleet().cloned().ok_or_else(|| {
        Failure::user(format!(
            "{}: this workspace uses no fleet store: give --store URL, set ORCHESTRATOR_STORE, or settings.store.postgres.url_env",
            ws.stack_path().display()
        ))
    })?;
    Ok((ws, stack, fleet))
}

/// Connects to the store named by `--store`/`ORCHESTRATOR_STORE`, else by `settings.store`.
fn connect(ctx: &Context, settings: Option<&Settings>) -> Result<PgStore> {
    let target = postgres::target(
        ctx.store.as_deref(),
        settings.and_then(|s| s.store.as_ref()),
    )?
    .ok_or_else(|| {
        Failure::user(
            "no fleet store: give --store URL, set ORCHESTRATOR_STORE, or name the variable that holds the URL in settings.store.postgres.url_env",
        )
    })?;
    PgStore::connect(&target)
}

/// The workspace's settings when they are needed to find the store (no `--store`).
fn workspace_settings(ctx: &Context) -> Result<Option<Settings>> {
    if ctx.store.as_deref().is_some_and(|s| !s.is_empty()) {
        return Ok(None);
    }
    Ok(Some(ctx.workspace()?.load_stack_file()?.settings))
}

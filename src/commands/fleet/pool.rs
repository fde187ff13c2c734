//! `orchestrator fleet pool`: a session pooler for this machine's commands, in the foreground.

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

use super::Context;
use crate::error::{Failure, code};
use crate::store::postgres::pool::{self, Pool};

/// Keep warm connections to the fleet store for this machine's commands: each `checkpoint`
/// that finds `ORCHESTRATOR_POOL` naming the pool's directory borrows one instead of opening
/// its own (a new server session costs the server more than most checkpoints). Runs until
/// SIGTERM or SIGINT; a command that cannot use the pool connects directly
#[derive(Debug, Args)]
pub struct FleetPoolArgs {
    /// The directory of the pool's socket (`.s.PGSQL.5432`; made if missing, mode 0700)
    /// [default: .orchestrator/pool in the workspace]
    #[arg(long, value_name = "DIR")]
    pub socket: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: FleetPoolArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let settings = ws.load_stack_file()?.settings;
    let fleet = ws.fleet_for(&settings)?.cloned().ok_or_else(|| {
        Failure::user(format!(
            "{}: this workspace uses the file store, which needs no pool: give --store URL, set ORCHESTRATOR_STORE, or settings.store.postgres.url_env",
            ws.stack_path().display()
        ))
    })?;
    let dir = args.socket.unwrap_or_else(|| ws.state_dir().join("pool"));
    let dir =
        std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let socket = pool::socket_path(&dir);
    let length = socket.as_os_str().len();
    if length > pool::MAX_SOCKET_PATH {
        return Err(Failure::user(format!(
            "{}: {length} bytes, longer than a unix socket path may be ({}): give a shorter directory with --socket DIR",
            socket.display(),
            pool::MAX_SOCKET_PATH
        )));
    }
    let target = fleet.target();
    let pool = Pool::bind(target, &dir).map_err(|err| Failure::user(format!("{err:#}")))?;
    let stop = pool.stopper();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot handle SIGTERM and SIGINT")?;
    }
    let display = target.display();
    let shown = dir.display();
    ctx.emit(
        json!({"store": display, "socket_dir": dir, "export": format!("ORCHESTRATOR_POOL={shown}")}),
        &format!("pool for {display} listening in {shown}: export ORCHESTRATOR_POOL={shown}"),
    );
    pool.serve()?;
    Ok(code::OK)
}

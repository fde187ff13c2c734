//! `orchestrator resume`: undo `orchestrator stop` and end a quota pause, so `run` loops start
//! sessions again.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::Context;
use crate::error::code;

/// Let `run` start sessions again: remove the stop file and any quota pause
#[derive(Debug, Args)]
pub struct ResumeArgs {}

pub fn run(ctx: &Context, _args: ResumeArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stopped = {
        let _lock = ws.lock()?;
        let existed = ws.stop_file().exists();
        crate::store::file::remove_file_if_exists(&ws.stop_file())?;
        existed
    };
    let paused = ws.remove_pause()?;
    let text = format!(
        "stop_removed={stopped} pause_removed={paused}\n{}\n",
        match (stopped, paused) {
            (false, false) => "Nothing to resume: no stop file, no pause.",
            _ => "`run` loops start sessions again; a stopped loop must be started again.",
        }
    );
    ctx.emit(
        json!({"stop_removed": stopped, "pause_removed": paused}),
        &text,
    );
    Ok(code::OK)
}

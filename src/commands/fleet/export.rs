//! `orchestrator fleet export`: write the fleet store's task stack out as task_stack.json.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

use super::{Context, connect, workspace_settings};
use crate::error::code;
use crate::store::file::write_atomic;

/// Write the fleet store's stack out as a task_stack.json (default: the workspace's, under its
/// lock)
#[derive(Debug, Args)]
pub struct FleetExportArgs {
    /// Where to write it instead (`-` for stdout); replaced atomically
    #[arg(short = 'o', long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: FleetExportArgs) -> Result<u8> {
    let to_stdout = args
        .out
        .as_deref()
        .is_some_and(|out| out.as_os_str() == "-");
    let settings = workspace_settings(ctx)?;
    let mut store = connect(ctx, settings.as_ref())?;
    let stack = store.export()?;
    if to_stdout {
        crate::commands::output::print_stdout(&stack.to_json());
        return Ok(code::OK);
    }
    let path = match args.out {
        Some(path) => {
            write_atomic(&path, stack.to_json().as_bytes())?;
            path
        }
        None => {
            let ws = ctx.workspace()?;
            let lock = ws.lock()?;
            // Local checkpoints not yet folded would otherwise be replayed over the store's stack.
            ws.fold_journal(&lock)?;
            ws.save_stack_file(&lock, &stack)?;
            ws.stack_path()
        }
    };
    let display = store.target().display();
    ctx.emit(
        json!({"store": display, "file": path.display().to_string(), "tasks": stack.tasks.len()}),
        &format!(
            "exported {} tasks from {display} to {}",
            stack.tasks.len(),
            path.display()
        ),
    );
    Ok(code::OK)
}

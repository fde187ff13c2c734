//! `orchestrator fleet import`: put a task stack into the fleet store.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

use super::{Context, connect};
use crate::core::stack::TaskStack;
use crate::error::{Failure, code};
use crate::store::file::read_text;

/// Put a task stack (default: the workspace's task_stack.json) into the fleet store
#[derive(Debug, Args)]
pub struct FleetImportArgs {
    /// The stack file to import (default: the workspace's task_stack.json)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace the tasks the store holds (refused while a session holds a live lease)
    #[arg(long)]
    pub replace: bool,
}

pub fn run(ctx: &Context, args: FleetImportArgs) -> Result<u8> {
    let (path, stack) = match args.file {
        Some(path) => {
            let text = read_text(&path)?;
            let stack = TaskStack::parse(&text)
                .map_err(|invalid| Failure::user(format!("{}: {invalid}", path.display())))?;
            (path, stack)
        }
        None => {
            let ws = ctx.workspace()?;
            let stack = ws.load_stack_file()?;
            (ws.stack_path(), stack)
        }
    };
    let mut store = connect(ctx, Some(&stack.settings))?;
    let imported = store.import(&stack, args.replace, ctx.now)?;
    let display = store.target().display();
    let replaced = if imported.replaced > 0 {
        format!(", replacing {}", imported.replaced)
    } else {
        String::new()
    };
    ctx.emit(
        json!({
            "store": display,
            "file": path.display().to_string(),
            "tasks": imported.tasks,
            "replaced": imported.replaced,
        }),
        &format!(
            "imported {} tasks from {} into {display}{replaced}",
            imported.tasks,
            path.display()
        ),
    );
    Ok(code::OK)
}

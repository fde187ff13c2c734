//! `orchestrator config get`: one setting's value, its default when the file leaves it out.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{key_path, plain, refusal};
use crate::commands::Context;
use crate::core::config::{full_key, get};

/// Print a setting's value (its default when task_stack.json leaves it out; null when unset)
#[derive(Debug, Args)]
pub struct ConfigGetArgs {
    /// A dotted key under settings: budget.warn, database.backup_dir, meters.NAME.limit
    pub key: String,
}

pub fn run(ctx: &Context, args: ConfigGetArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stack = ws.load_stack()?;
    let path = key_path(&ws, &args.key)?;
    let value = get(&stack.settings, &path).map_err(|err| refusal(&ws, err))?;
    let text = plain(&value);
    ctx.emit(json!({"key": full_key(&path), "value": value}), &text);
    Ok(0)
}

//! `orchestrator config set`: change one setting, validated as loading validates, atomically.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{key_path, plain, refusal};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::config::{full_key, get, set};

/// Change a setting. VALUE is read as JSON when it is JSON (0.8, true, ["a"], null to unset
/// an optional setting), else as a string; a value or key that is refused changes nothing
#[derive(Debug, Args)]
pub struct ConfigSetArgs {
    /// A dotted key under settings: budget.warn, git.commit_on_wrap, agents.NAME.meters
    pub key: String,
    /// The new value
    #[arg(allow_hyphen_values = true)]
    pub value: String,
}

pub fn run(ctx: &Context, args: ConfigSetArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let lock = ws.lock()?;
    let stack = ws.load_stack()?;
    let path = key_path(&ws, &args.key)?;
    let previous = get(&stack.settings, &path).map_err(|err| refusal(&ws, err))?;
    let updated = set(&stack, &path, &args.value).map_err(|err| refusal(&ws, err))?;
    // A directory setting must not lead out of the workspace through a symlink either.
    ws.check_settings_paths(&updated.settings)?;
    let value = get(&updated.settings, &path).map_err(|err| refusal(&ws, err))?;
    ws.save_stack(&lock, &updated)?;
    let key = full_key(&path);
    let text = format!("{key} = {} (was {})", plain(&value), plain(&previous));
    ctx.emit_shaped(
        json!({"key": key, "value": value, "previous": previous}),
        &text,
        Shape {
            quiet: Quiet::Nothing,
            ..Shape::default()
        },
    );
    Ok(0)
}

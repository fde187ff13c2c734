//! `orchestrator config list`: every setting the stack holds, defaults included, one a line.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::plain;
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::config::list;

/// List the settings as `key = value` lines (sections left at their defaults and out of the
/// file, such as run, are not listed; `config get` answers for them)
#[derive(Debug, Args)]
pub struct ConfigListArgs {}

pub fn run(ctx: &Context, _args: ConfigListArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stack = ws.load_stack()?;
    let mut text = String::new();
    for (key, value) in list(&stack.settings) {
        text.push_str(&format!("{key} = {}\n", plain(&value)));
    }
    // The list is data: `--quiet` keeps all of it.
    let quiet = Quiet::Text(text.clone());
    ctx.emit_shaped(
        json!({"settings": stack.settings}),
        &text,
        Shape {
            quiet,
            ..Shape::default()
        },
    );
    Ok(0)
}

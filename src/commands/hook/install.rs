//! `orchestrator hook install claude`: adds orchestrator's hooks to the agent's settings.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::agents::claude;
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::error::{Failure, code};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HookAgent {
    Claude,
}

/// Add orchestrator's hooks to the agent's project settings (.claude/settings.json)
#[derive(Debug, Args)]
pub struct HookInstallArgs {
    /// Which agent's settings to change
    pub agent: HookAgent,
    /// The command the hooks run, as the agent's shell will find it
    #[arg(long, default_value = "orchestrator", value_name = "CMD")]
    pub command: String,
}

pub fn run(ctx: &Context, args: HookInstallArgs) -> Result<u8> {
    let HookAgent::Claude = args.agent;
    let command = format!("{} hook claude", args.command.trim());
    let ws = ctx.workspace()?;
    let outcome = claude::install(ws.root(), &command)
        .map_err(|err| Failure::user(crate::error::one_line(&err)))?;
    let path = outcome.path.display();
    let text = if outcome.added.is_empty() {
        format!("{path} already runs `{command}`; nothing changed.\n")
    } else {
        let backup = match &outcome.backup {
            Some(backup) => format!(" (the old file is kept as {})", backup.display()),
            None => String::new(),
        };
        format!(
            "Added `{command}` to {path} for {}{backup}.\n",
            outcome.added.join(", ")
        )
    };
    let json = json!({
        "settings": outcome.path,
        "command": command,
        "added": outcome.added,
        "backup": outcome.backup,
        "created": outcome.created,
    });
    let quiet = Shape {
        quiet: Quiet::Nothing,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, quiet);
    Ok(code::OK)
}

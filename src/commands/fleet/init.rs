//! `orchestrator fleet init`: create or upgrade the fleet store's schema.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{Context, connect, workspace_settings};
use crate::error::code;

/// Create the fleet store's schema, or bring it to this binary's version (running it twice
/// changes nothing; a schema newer than the binary is refused)
#[derive(Debug, Args)]
pub struct FleetInitArgs {}

pub fn run(ctx: &Context, _args: FleetInitArgs) -> Result<u8> {
    let settings = workspace_settings(ctx)?;
    let mut store = connect(ctx, settings.as_ref())?;
    let migrated = store.migrate()?;
    let what = if migrated.from == migrated.to {
        "already current".to_string()
    } else if migrated.from == 0 {
        "created".to_string()
    } else {
        format!("upgraded from version {}", migrated.from)
    };
    let display = store.target().display();
    ctx.emit(
        json!({"store": display, "from": migrated.from, "to": migrated.to}),
        &format!(
            "fleet store {display}: schema version {} ({what})",
            migrated.to
        ),
    );
    Ok(code::OK)
}

//! `orchestrator fleet reap`: release the leases that ran out, on every machine's behalf.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{Context, workspace_fleet};
use crate::error::code;
use crate::store::postgres::Origin;

/// Release every task whose lease ran out (its session's machine died or lost the store):
/// the tasks are ready again, and a late write of the old session is refused (exit 5). The
/// next `start` does the same for the task it claims; reap frees them all at once
#[derive(Debug, Args)]
pub struct FleetReapArgs {}

pub fn run(ctx: &Context, _args: FleetReapArgs) -> Result<u8> {
    let (_ws, _stack, fleet) = workspace_fleet(ctx)?;
    let host = crate::store::host_name();
    let origin = Origin {
        host: &host,
        agent: "",
        session: "",
    };
    let reaped = fleet.with(|pg| pg.reap(&origin, ctx.now))?;
    let mut text = format!("reaped={}\n", reaped.len());
    for (task, claim) in &reaped {
        text.push_str(&format!(
            "released task `{task}` from session {} on {} (lease ran out at {})\n",
            claim.session,
            claim.host,
            crate::clock::format(claim.lease_expires)
        ));
    }
    let json = json!({
        "reaped": reaped.iter().map(|(task, claim)| json!({
            "task": task,
            "session": claim.session,
            "host": claim.host,
            "lease_expires": crate::clock::format(claim.lease_expires),
        })).collect::<Vec<_>>(),
    });
    ctx.emit(json, &text);
    Ok(code::OK)
}

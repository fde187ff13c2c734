//! `orchestrator stop [--now]`: ask the `run` loops of the workspace to stop, after their
//! current session (the STOP file) or now (the STOP file, then SIGTERM to each loop, which
//! passes it to its agent and wraps the session).

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;

use super::Context;
use crate::error::code;

/// Stop the `run` loops of this workspace after their current session (or now)
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Stop now: each loop stops its agent (which has --grace to wrap) and wraps the session
    #[arg(long)]
    pub now: bool,
}

pub fn run(ctx: &Context, args: StopArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let path = ws.stop_file();
    {
        let _lock = ws.lock()?;
        std::fs::create_dir_all(ws.state_dir())
            .with_context(|| format!("cannot create {}", ws.state_dir().display()))?;
        let note = format!(
            "written by `orchestrator stop{}` at {}\n",
            if args.now { " --now" } else { "" },
            crate::clock::format(ctx.now)
        );
        crate::store::file::write_atomic(&path, note.as_bytes())?;
    }
    let loops = ws.running_loops();
    let mut signalled = Vec::new();
    if args.now {
        for pid in &loops {
            // SAFETY: kill(2) sends a signal to one process; no memory is touched.
            if unsafe { libc::kill(*pid, libc::SIGTERM) } == 0 {
                signalled.push(*pid);
            } else {
                tracing::warn!(
                    "cannot signal the loop {pid}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    let when = if args.now { "now" } else { "after_session" };
    let text = if args.now {
        format!(
            "stop=now loops={}\nSignalled {} running loop(s); each stops its agent and wraps. `orchestrator resume` lets `run` start again.\n",
            signalled.len(),
            signalled.len()
        )
    } else {
        format!(
            "stop=after_session loops={}\n{} running loop(s) stop after their current session. `orchestrator resume` cancels.\n",
            loops.len(),
            loops.len()
        )
    };
    ctx.emit(
        json!({"stop": when, "loops": loops, "signalled": signalled, "file": path.display().to_string()}),
        &text,
    );
    Ok(code::OK)
}

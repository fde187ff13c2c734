//! `orchestrator completions SHELL`: the shell's completion script for every command and option.

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use serde_json::json;
use std::io::Write;

use super::Context;
use crate::cli::Cli;
use crate::error::code;

/// Print a shell completion script
///
/// For example `orchestrator completions bash > ~/.local/share/bash-completion/completions/orchestrator`,
/// `orchestrator completions zsh > ~/.zfunc/_orchestrator` or
/// `orchestrator completions fish > ~/.config/fish/completions/orchestrator.fish`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in
    pub shell: Shell,
}

pub fn run(ctx: &Context, args: CompletionsArgs) -> Result<u8> {
    let script = script(args.shell);
    if ctx.json {
        ctx.emit(
            json!({"shell": args.shell.to_string(), "script": String::from_utf8_lossy(&script)}),
            "",
        );
    } else {
        // The script as generated: not through `emit`, which would shape it as text.
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&script)
            .and_then(|()| stdout.flush())
            .context("cannot write the completion script to stdout")?;
    }
    Ok(code::OK)
}

fn script(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
}

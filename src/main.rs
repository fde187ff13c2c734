//! `orchestrator`: keeps AI coding agents working through a task queue across sessions.

use clap::Parser;
use orchestrator::{cli, commands, error};
use std::process::ExitCode;

fn main() -> ExitCode {
    if let Some(text) = cli::verbose_version(std::env::args_os()) {
        commands::output::print_stdout(&text);
        return ExitCode::SUCCESS;
    }
    let cli = cli::Cli::parse();
    init_tracing(cli.global.quiet);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", error::one_line(&err));
            ExitCode::from(error::exit_code(&err))
        }
    }
}

/// Logs go to stderr so stdout stays machine-readable; `RUST_LOG` tunes them, else warnings
/// (errors only under `--quiet`).
fn init_tracing(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(commands::Context::color_for(&std::io::stderr()))
        .without_time()
        .init();
}

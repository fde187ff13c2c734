//! `orchestrator config get|set|list`: read and change settings without editing JSON by hand.

mod get;
mod list;
mod set;

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use super::Context;
use crate::core::config::{ConfigError, parse_key};
use crate::error::Failure;
use crate::store::Workspace;
use get::ConfigGetArgs;
use list::ConfigListArgs;
use set::ConfigSetArgs;

/// Read and change the settings in task_stack.json (dotted keys: budget.warn, meters.api.limit)
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    Get(ConfigGetArgs),
    Set(ConfigSetArgs),
    List(ConfigListArgs),
}

pub fn run(ctx: &Context, cmd: ConfigCommand) -> Result<u8> {
    match cmd {
        ConfigCommand::Get(args) => get::run(ctx, args),
        ConfigCommand::Set(args) => set::run(ctx, args),
        ConfigCommand::List(args) => list::run(ctx, args),
    }
}

/// The key as a path, refused with the stack's name when it is not one.
fn key_path(ws: &Workspace, key: &str) -> Result<Vec<String>> {
    parse_key(key).map_err(|err| refusal(ws, err))
}

fn refusal(ws: &Workspace, err: ConfigError) -> anyhow::Error {
    Failure::user(format!("{}: {err}", ws.stack_path().display()))
}

/// A value as a person reads it: a string bare, anything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

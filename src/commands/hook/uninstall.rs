//! `orchestrator hook uninstall claude`: takes out of Claude Code's settings exactly what
//! `hook install claude` put in: our hooks and our allow rules, and whatever removing them left
//! empty.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::HookAgent;
use crate::agents::claude_settings::{
    self as settings, LOCAL_FILE, SHARED_FILE, SettingsFile, permission_rules,
};
use crate::commands::Context;
use crate::error::{Failure, code, one_line};
use crate::store::undo::Undo;

/// Remove orchestrator's hooks and permission from the agent's project settings
#[derive(Debug, Args)]
pub struct HookUninstallArgs {
    /// Which agent's settings to change
    pub agent: HookAgent,
    /// The executable given to `hook install --command`, whose permission is removed too
    #[arg(long, default_value = "orchestrator", value_name = "PATH")]
    pub command: String,
}

pub fn run(ctx: &Context, args: HookUninstallArgs) -> Result<u8> {
    let HookAgent::Claude = args.agent;
    let rules = permission_rules(args.command.trim());
    let ws = ctx.workspace()?;
    let user_error = |err: anyhow::Error| Failure::user(one_line(&err));
    let mut shared = SettingsFile::read(&ws.root().join(SHARED_FILE)).map_err(user_error)?;
    let mut local = SettingsFile::read(&ws.root().join(LOCAL_FILE)).map_err(user_error)?;
    let hooks = settings::remove_hooks(&mut shared.value)
        .map_err(|problem| Failure::user(one_line(&shared.error(problem))))?;
    let permissions = settings::remove_permissions(&mut local.value, &rules)
        .map_err(|problem| Failure::user(one_line(&local.error(problem))))?;

    let mut changed = Vec::new();
    if !hooks.is_empty() {
        changed.push(&shared);
    }
    if !permissions.is_empty() {
        changed.push(&local);
    }
    let _lock = ws.lock()?;
    let mut undo = Undo::new();
    let backups = settings::write_all(&changed, &mut undo)?;
    undo.commit();
    settings::remove_empty_dirs(&changed);

    let text = if changed.is_empty() {
        "No orchestrator hook or permission in Claude Code's project settings; nothing changed.\n"
            .to_string()
    } else {
        let mut text = String::new();
        if !hooks.is_empty() {
            text.push_str(&format!(
                "Removed orchestrator's hooks from {} ({}).\n",
                shared.path.display(),
                hooks.join(", ")
            ));
        }
        if !permissions.is_empty() {
            text.push_str(&format!(
                "Removed {} from {}.\n",
                permissions.join(", "),
                local.path.display()
            ));
        }
        for backup in &backups {
            text.push_str(&format!("The old file is kept as {}.\n", backup.display()));
        }
        text
    };
    let json = json!({
        "settings": shared.path,
        "local_settings": local.path,
        "removed_hooks": hooks,
        "removed_permissions": permissions,
        "backups": backups,
    });
    ctx.emit(json, &text);
    Ok(code::OK)
}

//! `orchestrator hook install claude`: adds orchestrator's hooks and Bash permission to Claude
//! Code's project settings (where each goes, and why, is in `agents::claude_settings`).

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::HookAgent;
use crate::agents::claude_settings::{
    self as settings, LOCAL_FILE, SHARED_FILE, SettingsFile, hook_command, permission_rules,
};
use crate::commands::Context;
use crate::commands::init::add_ignore_lines;
use crate::commands::output::{Quiet, Shape};
use crate::error::{Failure, code, one_line};
use crate::store::undo::Undo;

/// Add orchestrator's hooks (.claude/settings.json) and the permission to run it from the
/// agent's Bash tool (.claude/settings.local.json, kept out of git)
#[derive(Debug, Args)]
pub struct HookInstallArgs {
    /// Which agent's settings to change
    pub agent: HookAgent,
    /// The orchestrator executable the hooks run: a name on the agent's PATH or a path (quoted
    /// for the shell as needed)
    #[arg(long, default_value = "orchestrator", value_name = "PATH")]
    pub command: String,
    /// Change nothing; exit 1 and say what is missing (hooks, permission, folder trust)
    #[arg(long)]
    pub check: bool,
}

pub fn run(ctx: &Context, args: HookInstallArgs) -> Result<u8> {
    let HookAgent::Claude = args.agent;
    let executable = args.command.trim();
    if executable.is_empty() {
        return Err(Failure::user("--command cannot be empty"));
    }
    if args.check {
        return super::check::run(ctx, executable);
    }
    let command = hook_command(executable);
    let rules = permission_rules(executable);
    let ws = ctx.workspace()?;
    let user_error = |err: anyhow::Error| Failure::user(one_line(&err));
    let mut shared = SettingsFile::read(&ws.root().join(SHARED_FILE)).map_err(user_error)?;
    let mut local = SettingsFile::read(&ws.root().join(LOCAL_FILE)).map_err(user_error)?;
    let edit = settings::merge_hooks(&mut shared.value, &command)
        .map_err(|problem| Failure::user(one_line(&shared.error(problem))))?;
    let permissions = settings::merge_permissions(&mut local.value, &rules)
        .map_err(|problem| Failure::user(one_line(&local.error(problem))))?;

    let _lock = ws.lock()?;
    let mut undo = Undo::new();
    let mut changed = Vec::new();
    if !edit.added.is_empty() || !edit.updated.is_empty() {
        changed.push(&shared);
    }
    if !permissions.is_empty() {
        changed.push(&local);
    }
    let backups = settings::write_all(&changed, &mut undo)?;
    let gitignore = ws.root().join(".gitignore");
    undo.before_replace(&gitignore)?;
    let ignored = add_ignore_lines(&gitignore, &[LOCAL_FILE.to_string()])?;
    undo.commit();

    let shared_backup = backups.iter().find(|b| b.starts_with(&shared.path));
    let mut text = String::new();
    if changed.is_empty() && ignored.is_empty() {
        text.push_str(&format!(
            "{} already runs `{command}` and {} already allows it; nothing changed.\n",
            shared.path.display(),
            local.path.display()
        ));
    } else {
        if !edit.added.is_empty() {
            text.push_str(&format!(
                "Added `{command}` to {} for {}.\n",
                shared.path.display(),
                edit.added.join(", ")
            ));
        }
        if !edit.updated.is_empty() {
            text.push_str(&format!(
                "Brought orchestrator's hook for {} up to date (command, timeout {} s).\n",
                edit.updated.join(", "),
                settings::HOOK_TIMEOUT_SECS
            ));
        }
        if !permissions.is_empty() {
            text.push_str(&format!(
                "Allowed {} in {}.\n",
                permissions.join(", "),
                local.path.display()
            ));
        }
        if !ignored.is_empty() {
            text.push_str(&format!("Added {LOCAL_FILE} to .gitignore.\n"));
        }
        for backup in &backups {
            text.push_str(&format!("The old file is kept as {}.\n", backup.display()));
        }
    }
    text.push_str(
        "Interactive sessions run these hooks once the folder is trusted; `orchestrator hook install claude --check` says whether it is.\n",
    );
    let json = json!({
        "settings": shared.path,
        "local_settings": local.path,
        "command": command,
        "added": edit.added,
        "updated": edit.updated,
        "permissions_added": permissions,
        "gitignore_added": ignored,
        "backup": shared_backup,
        "backups": backups,
        "created": !shared.existed(),
    });
    let quiet = Shape {
        quiet: Quiet::Nothing,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, quiet);
    Ok(code::OK)
}

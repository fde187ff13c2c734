//! `orchestrator hook install claude --check`: what Claude Code still needs for the hooks to run
//! and for the agent to call orchestrator, read from its settings files; changes nothing.

use anyhow::Result;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use crate::agents::claude_settings::{
    self as settings, LOCAL_FILE, SHARED_FILE, SettingsFile, permission_rules,
};
use crate::commands::Context;
use crate::error::{Failure, code, one_line};
use crate::wrap::vcs;

pub(super) fn run(ctx: &Context, executable: &str) -> Result<u8> {
    let ws = ctx.workspace()?;
    let read = |path: &Path| SettingsFile::read(path).map_err(|err| Failure::user(one_line(&err)));
    let shared = read(&ws.root().join(SHARED_FILE))?;
    let local = read(&ws.root().join(LOCAL_FILE))?;
    let user = match settings::user_settings_path() {
        Some(path) => Some(read(&path)?),
        None => None,
    };
    let repo = vcs::tracked_in_repo(ws.root(), &local.path).unwrap_or_else(|err| {
        tracing::warn!("cannot read the git index: {err:#}");
        None
    });
    let local_tracked = repo.as_ref().is_some_and(|(_, tracked)| *tracked);
    // Trust is kept for the repository root, or for the folder itself outside a repository.
    let trust_key: PathBuf = match &repo {
        Some((root, _)) => root.clone(),
        None => ws.root().to_path_buf(),
    };

    let mut problems = Vec::new();
    // Hooks merge across settings files, so one of ours anywhere counts.
    let files: Vec<&SettingsFile> = [Some(&shared), Some(&local), user.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    for (index, &event) in settings::HOOK_EVENTS.iter().enumerate() {
        let states: Vec<Option<bool>> = files
            .iter()
            .map(|file| settings::installed_hooks(&file.value)[index].1)
            .collect();
        if states.contains(&Some(true)) {
            continue;
        }
        if states.contains(&Some(false)) {
            problems.push(format!(
                "the {event} hook has no explicit timeout (the default differs between Claude Code versions); rerun `orchestrator hook install claude`"
            ));
        } else {
            problems.push(format!(
                "no orchestrator hook for {event} in {}",
                shared.path.display()
            ));
        }
    }

    // Allow rules count without trust only from user settings and an untracked local file.
    let allows = |file: &SettingsFile| {
        settings::missing_rules(&file.value, &permission_rules("orchestrator"))
            .is_ok_and(|missing| missing.len() < 2)
    };
    let in_user = user.as_ref().is_some_and(allows);
    let in_local = allows(&local);
    let allowed_untrusted = in_user || (in_local && !local_tracked);
    if !allowed_untrusted {
        let rule = &permission_rules(executable)[0];
        problems.push(if in_local {
            format!(
                "git tracks {}, so Claude Code applies its `{rule}` only in a trusted folder and never in `claude -p`; untrack it (`git rm --cached {LOCAL_FILE}`)",
                local.path.display()
            )
        } else {
            format!(
                "no `{rule}` permission in {} or your user settings: the agent's Bash calls to orchestrator need approval, which `claude -p` cannot give",
                local.path.display()
            )
        });
    }

    let trusted = settings::is_trusted(&trust_key);
    if trusted != Some(true) {
        problems.push(format!(
            "{} is not marked trusted in ~/.claude.json (projects[\"{}\"].hasTrustDialogAccepted): interactive sessions hold back every hook until the trust dialog is accepted (run `claude` there once); `claude -p` runs are not held back",
            trust_key.display(),
            trust_key.display()
        ));
    }

    let ok = problems.is_empty();
    let text = if ok {
        format!(
            "Claude Code is set up: hooks for {}, the permission to run orchestrator, and {} is trusted.\n",
            settings::HOOK_EVENTS.join(", "),
            trust_key.display()
        )
    } else {
        problems.iter().map(|p| format!("missing: {p}\n")).collect()
    };
    let json = json!({
        "ok": ok,
        "problems": problems,
        "settings": shared.path,
        "local_settings": local.path,
        "local_settings_tracked": local_tracked,
        "trusted": trusted.map_or(Value::Null, Value::Bool),
        "trust_path": trust_key,
    });
    ctx.emit(json, &text);
    Ok(if ok { code::OK } else { code::ERROR })
}

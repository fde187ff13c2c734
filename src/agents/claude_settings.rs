//! Claude Code's settings files as orchestrator needs them: its hooks, the Bash permission, trust.
//!
//! Where each piece goes follows the settings and permissions references (research notes
//! /work/wt/research/issue10-hooks.md §2.6 and §3, from code.claude.com/docs/en/settings,
//! /permissions and /hooks as of Claude Code 2.1.240):
//!
//! - The hooks go in the shared project file `.claude/settings.json`. A `claude -p` session
//!   "never shows the dialog and treats the folder as trusted", so its hooks run there; an
//!   interactive session holds back the hooks of every settings file until the folder is trusted,
//!   so no other file would do better.
//! - The permission (`Bash(orchestrator *)`) goes in `.claude/settings.local.json`. Project
//!   `permissions.allow` rules are applied only in a trusted folder, and `claude -p` never
//!   trusts one ("Not used … this workspace has not been trusted"); the local file is exempt
//!   while git does not track it. Our wrap commit stages like `git add -A`, so the file is
//!   among the paths orchestrator never commits (`store::never_committed`) and `hook install`
//!   adds it to `.gitignore`.
//! - Trust is kept per absolute path in `~/.claude.json`
//!   (`projects["<repo root>"].hasTrustDialogAccepted`); it is only ever read here.
//!
//! The files belong to the user and hold much more than our entries (permissions, model, other
//! tools' hooks), so an edit never loses or reorders anything: we append our own matcher groups
//! and rules, refuse a file we do not understand instead of "repairing" it, keep a `.bak` of the
//! old bytes, and replace the file atomically. Installing is idempotent.

use std::borrow::Cow;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use serde_json::{Map, Value, json};

use crate::store;
use crate::store::undo::Undo;

/// The Claude Code hook events orchestrator listens to, in the order they are installed.
/// `PostToolUseFailure` is how a Bash call exiting non-zero (our `checkpoint` at warn and
/// shutdown) reaches hooks; `PreCompact` (1.0.48) and `SessionEnd` (1.0.85) close the lifecycle.
pub const HOOK_EVENTS: [&str; 6] = [
    "SessionStart",
    "UserPromptSubmit",
    "PostToolUse",
    "PostToolUseFailure",
    "PreCompact",
    "SessionEnd",
];

/// The `timeout` (seconds) written on every installed hook. The default changed from 60 s
/// (hooks reference until 2025-12) to 600 s (CHANGELOG 2.1.3), `UserPromptSubmit`'s is 30 s, and
/// SessionEnd hooks share a 1.5 s budget that is "raised to the highest per-hook timeout
/// configured in settings files, up to 60 seconds": an explicit 30 s gives every version the same
/// bound and gives `SessionEnd` time to release or wrap. The hook answers within its own
/// deadline below this (`commands::hook::claude`).
pub const HOOK_TIMEOUT_SECS: u64 = 30;

/// The project settings file holding the hooks.
pub const SHARED_FILE: &str = ".claude/settings.json";
/// The project settings file holding the permission.
pub const LOCAL_FILE: &str = ".claude/settings.local.json";

/// `word` as one `sh -c` word: as it is when it needs no quoting, else single-quoted (nothing
/// is expanded inside single quotes, unlike the double quotes of the reference's examples).
/// Claude Code runs a hook's `command` with `sh -c` on macOS and Linux (hooks reference,
/// "Exec form and shell form"); the exec form (`args`) needs 2.1.139, and how older versions
/// treat it is not documented, so the shell form is used.
pub fn shell_word(word: &str) -> Cow<'_, str> {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// The hook command running `executable`: `'/opt/my tools/orchestrator' hook claude`.
pub fn hook_command(executable: &str) -> String {
    format!("{} hook claude", shell_word(executable))
}

/// The allow rules that let the agent's Bash tool run `executable`: the current form
/// (`Bash(orchestrator *)`, 2.1.0 on, "enforces a word boundary" and also matches the bare
/// command) and the older `Bash(orchestrator:*)` prefix form, "an equivalent way to write a
/// trailing wildcard" (permissions reference; research notes §3.2). The brief tells the agent to
/// run `orchestrator …`, so that name is always allowed; a path that needs no quoting is allowed
/// as written too.
pub fn permission_rules(executable: &str) -> Vec<String> {
    let mut names = vec!["orchestrator"];
    let executable = executable.trim();
    if executable != "orchestrator" && matches!(shell_word(executable), Cow::Borrowed(_)) {
        names.push(executable);
    }
    names
        .into_iter()
        .flat_map(|name| [format!("Bash({name} *)"), format!("Bash({name}:*)")])
        .collect()
}

// ---------------------------------------------------------------------------
// Hooks: the pure JSON edits

/// What an edit of the hooks did.
#[derive(Debug, Default, PartialEq)]
pub struct HookEdit {
    /// Events our hook was added to.
    pub added: Vec<&'static str>,
    /// Events whose hook of ours was brought up to date (command or timeout).
    pub updated: Vec<&'static str>,
}

/// A hook counts as ours if its command ends with the words `hook claude`, so an install made
/// with another path to the binary is recognised.
fn is_ours(hook: &Value) -> bool {
    hook.get("command")
        .and_then(Value::as_str)
        .is_some_and(|command| {
            command
                .split_whitespace()
                .rev()
                .take(2)
                .eq(["claude", "hook"])
        })
}

fn our_hook(command: &str) -> Value {
    json!({ "type": "command", "command": command, "timeout": HOOK_TIMEOUT_SECS })
}

fn group(event: &str, command: &str) -> Value {
    let hooks = json!([our_hook(command)]);
    // Tool events are matched by tool name; `*` is "match all" on every version.
    if event.starts_with("PostToolUse") {
        json!({ "matcher": "*", "hooks": hooks })
    } else {
        json!({ "hooks": hooks })
    }
}

/// The `hooks` object of `settings`, or an error when a part we would touch has a shape we
/// cannot safely edit. Checked whole before any edit, so that an error changes nothing.
fn check_hooks(settings: &Value) -> Result<Option<&Map<String, Value>>, String> {
    let Value::Object(top) = settings else {
        return Err("top level is not a JSON object".to_owned());
    };
    let hooks = match top.get("hooks") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(hooks)) => hooks,
        Some(_) => return Err("`hooks` is not an object".to_owned()),
    };
    for (event, groups) in hooks {
        if !matches!(groups, Value::Array(_) | Value::Null) && HOOK_EVENTS.contains(&event.as_str())
        {
            return Err(format!("`hooks.{event}` is not an array"));
        }
    }
    Ok(Some(hooks))
}

/// Adds a matcher group running `command` to every event of [`HOOK_EVENTS`] without a hook of
/// ours, and brings each hook of ours to `command` and [`HOOK_TIMEOUT_SECS`].
pub fn merge_hooks(settings: &mut Value, command: &str) -> Result<HookEdit, String> {
    check_hooks(settings)?;
    let top = settings.as_object_mut().expect("checked above");
    let hooks = top
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    if hooks.is_null() {
        *hooks = Value::Object(Map::new());
    }
    let hooks = hooks.as_object_mut().expect("checked above");
    let wanted = our_hook(command);
    let mut edit = HookEdit::default();
    for event in HOOK_EVENTS {
        let groups = hooks.entry(event).or_insert_with(|| json!([]));
        if groups.is_null() {
            *groups = json!([]);
        }
        let groups = groups.as_array_mut().expect("checked above");
        let mut found = false;
        let mut changed = false;
        // Groups or hooks of an unexpected shape are not ours, and Claude Code is the one to
        // complain about them, not us.
        for hook in groups
            .iter_mut()
            .filter_map(|group| group.get_mut("hooks")?.as_array_mut())
            .flatten()
            .filter(|hook| is_ours(hook))
        {
            found = true;
            for key in ["command", "timeout"] {
                if hook.get(key) != wanted.get(key) {
                    hook[key] = wanted[key].clone();
                    changed = true;
                }
            }
        }
        if !found {
            groups.push(group(event, command));
            edit.added.push(event);
        } else if changed {
            edit.updated.push(event);
        }
    }
    Ok(edit)
}

/// Removes every hook of ours, then the groups, events and `hooks` object that removing them
/// left empty; returns the events a hook was removed from.
pub fn remove_hooks(settings: &mut Value) -> Result<Vec<String>, String> {
    if check_hooks(settings)?.is_none() {
        return Ok(Vec::new());
    }
    let top = settings.as_object_mut().expect("checked above");
    let hooks = top["hooks"].as_object_mut().expect("checked above");
    let mut removed = Vec::new();
    for (event, groups) in hooks.iter_mut() {
        let Some(groups) = groups.as_array_mut() else {
            continue;
        };
        let before = groups.len();
        let mut touched = false;
        groups.retain_mut(|group| {
            let Some(list) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
                return true;
            };
            let had = list.len();
            list.retain(|hook| !is_ours(hook));
            if list.len() == had {
                return true;
            }
            touched = true;
            !list.is_empty()
        });
        if touched || groups.len() != before {
            removed.push(event.clone());
        }
    }
    hooks.retain(|event, groups| {
        !(removed.contains(event) && groups.as_array().is_some_and(Vec::is_empty))
    });
    if hooks.is_empty() && !removed.is_empty() {
        top.remove("hooks");
    }
    Ok(removed)
}

// ---------------------------------------------------------------------------
// Permissions: the pure JSON edits

fn allow_list(settings: &Value) -> Result<Option<&Vec<Value>>, String> {
    let Value::Object(top) = settings else {
        return Err("top level is not a JSON object".to_owned());
    };
    let permissions = match top.get("permissions") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(permissions)) => permissions,
        Some(_) => return Err("`permissions` is not an object".to_owned()),
    };
    match permissions.get("allow") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(allow)) => Ok(Some(allow)),
        Some(_) => Err("`permissions.allow` is not an array".to_owned()),
    }
}

/// The rules of `rules` that `settings` does not allow yet.
pub fn missing_rules(settings: &Value, rules: &[String]) -> Result<Vec<String>, String> {
    let allow = allow_list(settings)?;
    Ok(rules
        .iter()
        .filter(|rule| !allow.is_some_and(|allow| allow.iter().any(|r| r == rule.as_str())))
        .cloned()
        .collect())
}

/// Appends the rules `settings.permissions.allow` lacks; returns them.
pub fn merge_permissions(settings: &mut Value, rules: &[String]) -> Result<Vec<String>, String> {
    let missing = missing_rules(settings, rules)?;
    if missing.is_empty() {
        return Ok(missing);
    }
    let top = settings.as_object_mut().expect("checked above");
    let permissions = top.entry("permissions").or_insert_with(|| json!({}));
    if permissions.is_null() {
        *permissions = json!({});
    }
    let allow = permissions
        .as_object_mut()
        .expect("checked above")
        .entry("allow")
        .or_insert_with(|| json!([]));
    if allow.is_null() {
        *allow = json!([]);
    }
    let allow = allow.as_array_mut().expect("checked above");
    allow.extend(missing.iter().map(|rule| json!(rule)));
    Ok(missing)
}

/// Removes `rules` from `settings.permissions.allow`, then the `allow` and `permissions` that
/// removing them left empty; returns the rules removed.
pub fn remove_permissions(settings: &mut Value, rules: &[String]) -> Result<Vec<String>, String> {
    let present: Vec<String> = match allow_list(settings)? {
        None => return Ok(Vec::new()),
        Some(allow) => rules
            .iter()
            .filter(|rule| allow.iter().any(|r| r == rule.as_str()))
            .cloned()
            .collect(),
    };
    if present.is_empty() {
        return Ok(present);
    }
    let top = settings.as_object_mut().expect("checked above");
    let permissions = top["permissions"].as_object_mut().expect("checked above");
    let allow = permissions["allow"].as_array_mut().expect("checked above");
    allow.retain(|rule| !rules.iter().any(|r| rule == r.as_str()));
    if allow.is_empty() {
        permissions.remove("allow");
    }
    if permissions.is_empty() {
        top.remove("permissions");
    }
    Ok(present)
}

// ---------------------------------------------------------------------------
// The files

/// One settings file read for an edit.
#[derive(Debug)]
pub struct SettingsFile {
    pub path: PathBuf,
    /// The bytes on disk before the edit; `None` when there was no file.
    old: Option<Vec<u8>>,
    pub value: Value,
}

impl SettingsFile {
    /// Reads `path`; no file (or an empty one, what an editor or `touch` leaves) is `{}`.
    pub fn read(path: &Path) -> Result<SettingsFile> {
        let old = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        let value = match old.as_deref() {
            None => json!({}),
            Some(bytes) if bytes.trim_ascii().is_empty() => json!({}),
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|err| anyhow!("{}: not valid JSON: {err}", path.display()))?,
        };
        Ok(SettingsFile {
            path: path.to_path_buf(),
            old,
            value,
        })
    }

    pub fn existed(&self) -> bool {
        self.old.is_some()
    }

    /// The same message shape as a read error: the file, then the problem.
    pub fn error(&self, problem: String) -> anyhow::Error {
        anyhow!("{}: {problem}", self.path.display())
    }

    fn backup_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".bak");
        self.path.with_file_name(name)
    }
}

/// Writes the edited files, each after saving its old bytes to `<file>.bak`. A file an edit
/// left `{}` is not written: removed if it existed, not created if it did not (see
/// [`remove_empty_dirs`] for the directory). Either every file is written or, on error, each is put back (exit 1 changes
/// nothing). Returns the backups made.
pub fn write_all(files: &[&SettingsFile], undo: &mut Undo) -> Result<Vec<PathBuf>> {
    let mut backups = Vec::new();
    for file in files {
        let empty = file.value.as_object().is_some_and(Map::is_empty);
        if let Some(dir) = file.path.parent() {
            undo.before_create_dir_all(dir);
        }
        if empty {
            // Nothing but our entries was in it: removing it loses nothing of the user's, so
            // no backup either.
            if file.old.is_some() {
                undo.before_replace(&file.path)?;
                fs::remove_file(&file.path)
                    .with_context(|| format!("cannot remove {}", file.path.display()))?;
            }
            continue;
        }
        if let Some(old) = &file.old {
            let backup = file.backup_path();
            undo.before_replace(&backup)?;
            store::file::write_atomic(&backup, old)?;
            backups.push(backup);
        }
        undo.before_replace(&file.path)?;
        let mut text = serde_json::to_string_pretty(&file.value)
            .with_context(|| format!("cannot serialize {}", file.path.display()))?;
        text.push('\n');
        store::file::write_atomic(&file.path, text.as_bytes())?;
    }
    Ok(backups)
}

/// Removes the directories of `files` that are left empty (the `.claude` that install made),
/// once the edit is committed.
pub fn remove_empty_dirs(files: &[&SettingsFile]) {
    for dir in files.iter().filter_map(|file| file.path.parent()) {
        // Fails, as it should, while anything is left in it.
        let _ = fs::remove_dir(dir);
    }
}

/// Claude Code's user settings file: `$CLAUDE_CONFIG_DIR/settings.json`, else
/// `~/.claude/settings.json` (settings reference; `CLAUDE_CONFIG_DIR` in the env-vars reference).
pub fn user_settings_path() -> Option<PathBuf> {
    super::claude::config_dir().map(|dir| dir.join("settings.json"))
}

/// Whether the folder `root` is trusted per `~/.claude.json`:
/// `projects["<path>"].hasTrustDialogAccepted`, "where `<path>` is the repository root, or the
/// folder itself outside a repository" (permissions reference, "Project allow rules and
/// workspace trust"). `None` when the file cannot be read. Never written: trust is the user's.
pub fn is_trusted(trust_key: &Path) -> Option<bool> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let text = fs::read(PathBuf::from(home).join(".claude.json")).ok()?;
    let config: Value = serde_json::from_slice(&text).ok()?;
    let entry = &config["projects"][trust_key.to_string_lossy().as_ref()];
    Some(entry["hasTrustDialogAccepted"] == Value::Bool(true))
}

/// The hooks of ours `settings` has: per event, whether one is there and whether it has an
/// explicit `timeout`.
pub fn installed_hooks(settings: &Value) -> Vec<(&'static str, Option<bool>)> {
    HOOK_EVENTS
        .iter()
        .map(|&event| {
            let ours: Vec<&Value> = settings["hooks"][event]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|group| group.get("hooks")?.as_array())
                .flatten()
                .filter(|hook| is_ours(hook))
                .collect();
            let state =
                (!ours.is_empty()).then(|| ours.iter().any(|hook| hook["timeout"].is_number()));
            (event, state)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Session worktrees

/// Gives a session's worktree the project's Claude Code settings the main work tree has, so an
/// agent started there behaves as it does in the main tree. Two things would be missing:
///
/// - `.claude/settings.local.json` (our Bash permission, the user's own local settings) is
///   never committed, so a checkout of the branch lacks it. Claude Code's own worktrees copy it
///   in for the same reason (worktrees reference, code.claude.com/docs/en/worktrees:
///   `.worktreeinclude` "copies gitignored files such as `.claude/settings.local.json`"); it is
///   copied here, and being untracked it applies "without the trust step" in a folder Claude
///   Code has never trusted (permissions reference, research note issue10-hooks.md §3.6).
/// - the hooks of `.claude/settings.json` when that file is not committed as it is (the branch
///   has another version or none): Claude Code "reads it only from the folder you start in"
///   (settings reference, §3 of the note). They are added to the worktree's local file, which
///   is merged with every other settings file; "hook entries merge across settings levels" and
///   a handler defined in more than one file "runs once" (hooks reference, §2.6).
///
/// The main tree's project permissions are not carried: they are trust-gated there too.
/// Returns the file written, if any.
pub fn carry_into_worktree(main: &Path, workdir: &Path) -> Result<Option<PathBuf>> {
    let local = SettingsFile::read(&main.join(LOCAL_FILE))?;
    let shared_path = main.join(SHARED_FILE);
    let shared = SettingsFile::read(&shared_path)?;
    let shared_here = fs::read(workdir.join(SHARED_FILE)).ok();
    let carry_hooks =
        shared.existed() && shared_here.as_deref() != fs::read(&shared_path).ok().as_deref();
    if !local.existed() && !carry_hooks {
        return Ok(None);
    }
    let mut value = local.value;
    if !value.is_object() {
        return Err(anyhow!(
            "{}: top level is not a JSON object",
            local.path.display()
        ));
    }
    if carry_hooks && let Some(Value::Object(events)) = shared.value.get("hooks") {
        let hooks = value
            .as_object_mut()
            .expect("checked above")
            .entry("hooks")
            .or_insert_with(|| json!({}));
        if !hooks.is_object() {
            *hooks = json!({});
        }
        let hooks = hooks.as_object_mut().expect("made an object above");
        for (event, groups) in events {
            let Value::Array(groups) = groups else {
                continue;
            };
            let into = hooks.entry(event.clone()).or_insert_with(|| json!([]));
            if let Value::Array(into) = into {
                for group in groups {
                    if !into.contains(group) {
                        into.push(group.clone());
                    }
                }
            }
        }
    }
    let target = workdir.join(LOCAL_FILE);
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(&value)
        .with_context(|| format!("cannot serialize {}", target.display()))?;
    text.push('\n');
    store::file::write_atomic(&target, text.as_bytes())?;
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "orchestrator hook claude";

    /// Compares including key order, which `Value`'s `==` ignores.
    fn assert_same_order(actual: &Value, expected: &Value) {
        assert_eq!(
            serde_json::to_string_pretty(actual).unwrap(),
            serde_json::to_string_pretty(expected).unwrap()
        );
    }

    #[test]
    fn words_are_quoted_only_when_the_shell_needs_it() {
        assert_eq!(shell_word("orchestrator"), "orchestrator");
        assert_eq!(
            shell_word("/usr/local/bin/orchestrator"),
            "/usr/local/bin/orchestrator"
        );
        assert_eq!(
            shell_word("/opt/my tools/orchestrator"),
            "'/opt/my tools/orchestrator'"
        );
        assert_eq!(shell_word("/opt/it's/$HOME"), r"'/opt/it'\''s/$HOME'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn existing_settings_and_hooks_are_kept_in_order_and_ours_appended() {
        let mut settings = json!({
            "permissions": { "allow": ["Bash(cargo test:*)"] },
            "hooks": {
                "PostToolUse": [{ "matcher": "Edit", "hooks": [{ "type": "command", "command": "prettier --write" }] }],
                "Stop": [{ "hooks": [{ "type": "command", "command": "notify-send done" }] }]
            },
            "model": "opus"
        });
        let original = settings.clone();
        let edit = merge_hooks(&mut settings, CMD).unwrap();
        assert_eq!(edit.added, HOOK_EVENTS);
        assert_eq!(
            settings["hooks"]["PostToolUse"][0],
            original["hooks"]["PostToolUse"][0]
        );
        assert_eq!(
            settings["hooks"]["PostToolUse"][1],
            json!({ "matcher": "*", "hooks": [{ "type": "command", "command": CMD, "timeout": 30 }] })
        );
        // Uninstall gives back the very same document, key order included.
        assert_eq!(
            remove_hooks(&mut settings).unwrap().len(),
            HOOK_EVENTS.len()
        );
        assert_same_order(&settings, &original);
    }

    #[test]
    fn an_old_install_is_brought_up_to_date_and_a_second_merge_changes_nothing() {
        let mut settings = json!({ "hooks": {
            "SessionStart": [{ "hooks": [{ "type": "command", "command": "/opt/bin/orchestrator hook claude" }] }]
        }});
        let edit = merge_hooks(&mut settings, CMD).unwrap();
        assert_eq!(edit.updated, ["SessionStart"]);
        assert_eq!(edit.added.len(), HOOK_EVENTS.len() - 1);
        assert_eq!(
            settings["hooks"]["SessionStart"][0]["hooks"][0],
            our_hook(CMD)
        );
        let again = settings.clone();
        assert_eq!(
            merge_hooks(&mut settings, CMD).unwrap(),
            HookEdit::default()
        );
        assert_eq!(settings, again);
    }

    #[test]
    fn shapes_we_cannot_edit_are_refused_before_any_change() {
        for (text, problem) in [
            ("[]", "top level is not a JSON object"),
            (r#"{"hooks": []}"#, "`hooks` is not an object"),
            (
                r#"{"hooks": {"SessionStart": null, "PostToolUse": {"matcher": "*"}}}"#,
                "`hooks.PostToolUse` is not an array",
            ),
        ] {
            let mut settings: Value = serde_json::from_str(text).unwrap();
            let before = settings.clone();
            assert_eq!(merge_hooks(&mut settings, CMD).unwrap_err(), problem);
            assert_eq!(settings, before);
        }
        let mut settings = json!({ "permissions": { "allow": "Bash(*)" } });
        assert_eq!(
            merge_permissions(&mut settings, &permission_rules("orchestrator")).unwrap_err(),
            "`permissions.allow` is not an array"
        );
    }

    #[test]
    fn permissions_are_added_once_and_removed_exactly() {
        let mut settings =
            json!({ "permissions": { "allow": ["Read"], "deny": ["Bash(curl *)"] } });
        let rules = permission_rules("/usr/local/bin/orchestrator");
        assert_eq!(
            rules,
            [
                "Bash(orchestrator *)",
                "Bash(orchestrator:*)",
                "Bash(/usr/local/bin/orchestrator *)",
                "Bash(/usr/local/bin/orchestrator:*)"
            ]
        );
        assert_eq!(merge_permissions(&mut settings, &rules).unwrap(), rules);
        assert!(merge_permissions(&mut settings, &rules).unwrap().is_empty());
        assert_eq!(remove_permissions(&mut settings, &rules).unwrap(), rules);
        assert_eq!(
            settings,
            json!({ "permissions": { "allow": ["Read"], "deny": ["Bash(curl *)"] } })
        );
        let mut only_ours = json!({});
        merge_permissions(&mut only_ours, &rules).unwrap();
        remove_permissions(&mut only_ours, &rules).unwrap();
        assert_eq!(only_ours, json!({}));
        // A path that needs quoting is not written into a rule: the name is.
        assert_eq!(
            permission_rules("/opt/my tools/orchestrator"),
            ["Bash(orchestrator *)", "Bash(orchestrator:*)"]
        );
    }
}

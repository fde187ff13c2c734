//! Claude Code: its transcript format, where it keeps its transcripts, and its hook settings.
//!
//! Transcript (`~/.claude/projects/*/<session>.jsonl`): the context fill is the latest
//! main-chain assistant record's `input_tokens` + cache writes + `cache_read_input_tokens`, where
//! the cache writes are the larger of the flat `cache_creation_input_tokens` and the nested
//! `cache_creation.ephemeral_5m_input_tokens + ephemeral_1h_input_tokens` (before 2.1.152 the flat
//! figure could be 0 with the writes only in the nested breakdown). `<synthetic>` records and
//! zero-sum usages are ignored. A `system`/`compact_boundary` record after the last counted usage
//! makes the fill unknown (`compacted: true`) until the next counted assistant record; a
//! `system`/`microcompact_boundary` (old tool results cleared) lowers the fill by its
//! `microcompactMetadata.tokensSaved`.
//!
//! The cumulative total sums input + cache writes + cache read + output over distinct responses,
//! deduplicated as ccusage does: by `message.id` + `requestId`, the larger usage winning (Claude
//! Code writes one record per content block of a response, the last with the final output
//! count). Subagents count in it, but not in the fill: the sidechain records of the main file
//! (`isSidechain: true`, Claude Code 1.x) and the files Claude Code 2.x writes beside it,
//! `<session>/subagents/agent-*.jsonl` (and `subagents/workflows/<run>/agent-*.jsonl`). A sidechain
//! copy of a main-chain response (same `message.id`, another `requestId`: a `/btw` side question
//! replays the conversation) is not counted again.
//!
//! Bounds of the deduplication: responses are remembered for the last [`RECENT_MESSAGES`]
//! distinct ones of each file, which covers the consecutive records of one response even with
//! many subagents writing in parallel; main-chain message ids for the last [`MAIN_IDS`], which
//! covers a replay of the live context (a 200k-token context holds about that many responses
//! only if each, with its tool result, averages under 200 tokens); a replayed response older
//! than that would be counted a second time. Counted records without a `message.id` cannot be
//! deduplicated and are each added once.
//!
//! Hooks: `orchestrator hook install claude` registers orchestrator's hooks in a
//! Claude Code project settings file (`.claude/settings.json`).
//!
//! That file belongs to the user and usually holds much more than our hooks
//! (permissions, model, other tools' hooks), so installing must never lose or
//! reorder anything in it: we only append our own matcher groups, refuse files
//! we do not understand instead of "repairing" them, keep a `.bak` of the old
//! bytes, and replace the file atomically so a crash leaves either the old or
//! the new version. Installing is idempotent so it is safe to run from setup
//! scripts on every checkout.
//!
//! [`merge_hooks`] is the pure JSON edit; [`install`] does the file handling.

use std::borrow::Cow;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use crate::store;
use crate::store::undo::Undo;

use super::{Main, TranscriptState, fnv1a};

/// How many distinct responses per file are remembered for deduplication.
pub const RECENT_MESSAGES: usize = 64;
/// How many main-chain message ids are remembered to recognise sidechain replays.
pub const MAIN_IDS: usize = 1024;
/// How deep under `<session>/subagents/` subagent transcripts are looked for
/// (`workflows/<run>/agent-*.jsonl` is two levels down).
const SUBAGENT_DEPTH: usize = 3;

// ---------------------------------------------------------------------------
// Transcript

#[derive(Deserialize)]
struct ClaudeLine<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    subtype: Option<Cow<'a, str>>,
    #[serde(rename = "isSidechain", default)]
    is_sidechain: Option<bool>,
    #[serde(rename = "requestId", borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<ClaudeMessage<'a>>,
    #[serde(rename = "microcompactMetadata", default)]
    microcompact: Option<Microcompact>,
}

#[derive(Deserialize)]
struct ClaudeMessage<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<ClaudeUsage>,
}

#[derive(Deserialize)]
struct ClaudeUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Microcompact {
    #[serde(rename = "tokensSaved", default)]
    tokens_saved: Option<u64>,
}

impl ClaudeUsage {
    /// Cache writes: the flat figure, or the nested breakdown when it says more.
    fn cache_writes(&self) -> u64 {
        let nested = self.cache_creation.as_ref().map_or(0, |c| {
            c.ephemeral_5m_input_tokens.unwrap_or(0) + c.ephemeral_1h_input_tokens.unwrap_or(0)
        });
        self.cache_creation_input_tokens.unwrap_or(0).max(nested)
    }
}

/// The fields every Claude Code record has and no other format's lines have together.
#[derive(Deserialize)]
struct ClaudeHead {
    #[serde(rename = "type", default)]
    kind: Option<IgnoredAny>,
    #[serde(default)]
    payload: Option<IgnoredAny>,
    #[serde(default)]
    message: Option<IgnoredAny>,
    #[serde(default)]
    uuid: Option<IgnoredAny>,
    #[serde(rename = "sessionId", default)]
    session_id: Option<IgnoredAny>,
    #[serde(rename = "leafUuid", default)]
    leaf_uuid: Option<IgnoredAny>,
}

/// Whether a JSON line is a Claude Code record: a `type` with a `message`, `uuid`,
/// `sessionId` or (summaries) `leafUuid`, and no Codex `payload`.
pub(super) fn recognises(text: &str) -> bool {
    serde_json::from_str::<ClaudeHead>(text).is_ok_and(|h| {
        h.kind.is_some()
            && h.payload.is_none()
            && (h.message.is_some()
                || h.uuid.is_some()
                || h.session_id.is_some()
                || h.leaf_uuid.is_some())
    })
}

/// Applies one Claude Code line; returns false if it could not be decoded.
pub(super) fn apply_line(body: &[u8], state: &mut TranscriptState, main: Main) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let Ok(rec) = serde_json::from_str::<ClaudeLine>(text) else {
        return false;
    };
    // Every record of a subagent's own file is on a sidechain.
    let sidechain = rec.is_sidechain == Some(true) || matches!(main, Main::Of(_));
    match rec.kind.as_deref() {
        Some("system") if !sidechain => match rec.subtype.as_deref() {
            Some("compact_boundary") => {
                state.compacted = true;
                state.fill = None;
            }
            Some("microcompact_boundary") => {
                let saved = rec.microcompact.and_then(|m| m.tokens_saved).unwrap_or(0);
                state.fill = state.fill.map(|fill| fill.saturating_sub(saved));
            }
            _ => {}
        },
        Some("assistant") => {
            let Some(msg) = rec.message else { return true };
            if msg.model.as_deref() == Some("<synthetic>") {
                return true;
            }
            let Some(u) = msg.usage else { return true };
            let context = u.input_tokens.unwrap_or(0)
                + u.cache_writes()
                + u.cache_read_input_tokens.unwrap_or(0);
            if context == 0 {
                return true;
            }
            // 32 bits: a false match among 1024 ids is a one-in-four-million chance per sidechain response.
            let id_hash = msg.id.as_deref().map(|id| fnv1a(id.as_bytes()) as u32);
            if sidechain {
                let replayed = id_hash.is_some_and(|hash| match main {
                    Main::Itself => state.has_main_id(hash),
                    Main::Of(main) => main.knows_main_id(hash),
                });
                if replayed {
                    return true;
                }
            } else {
                state.fill = Some(context);
                state.compacted = false;
            }
            state.records += 1;
            let total = context + u.output_tokens.unwrap_or(0);
            let key = msg.id.map(|id| match rec.request_id {
                Some(request) => format!("{id} {request}"),
                None => id.into_owned(),
            });
            let added = count_response(state, key, total);
            if sidechain {
                state.subagent += added;
            } else if let Some(hash) = id_hash
                && state.main_ids.back() != Some(&hash)
                && !state.has_main_id(hash)
            {
                state.push_main_id(hash, MAIN_IDS);
            }
        }
        _ => {}
    }
    true
}

/// Adds a response's total to the cumulative once per `key`, the larger usage winning; returns
/// what was added.
fn count_response(state: &mut TranscriptState, key: Option<String>, total: u64) -> u64 {
    let Some(key) = key else {
        state.cumulative += total;
        return total;
    };
    let recent = &mut state.recent_messages;
    let added = match recent.iter_mut().rev().find(|(seen, _)| *seen == key) {
        Some((_, counted)) => {
            let added = total.saturating_sub(*counted);
            *counted += added;
            added
        }
        None => {
            if recent.len() == RECENT_MESSAGES {
                recent.pop_front();
            }
            recent.push_back((key, total));
            total
        }
    };
    state.cumulative += added;
    added
}

/// The transcripts of a session's subagents: `agent-*.jsonl` under `<session>/subagents/`
/// beside `<session>.jsonl` (Claude Code 2.x; see the research notes' section 2.1), in path order.
pub fn subagent_transcripts(transcript: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (transcript.parent(), transcript.file_stem()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut dirs = vec![(dir.join(stem).join("subagents"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() && depth + 1 < SUBAGENT_DEPTH {
                dirs.push((path, depth + 1));
            } else if kind.is_file() && name.starts_with("agent-") && name.ends_with(".jsonl") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Where Claude Code keeps a session's transcript:
/// `<claude_config_dir>/projects/*/<session_id>.jsonl` (first match, project
/// directories taken in name order). Session ids containing path separators or
/// `..` are rejected.
pub fn find_transcript(claude_config_dir: &Path, session_id: &str) -> Option<PathBuf> {
    if session_id.is_empty()
        || session_id.contains(['/', '\\'])
        || session_id.contains("..")
        || session_id.contains('\0')
    {
        return None;
    }
    let file_name = format!("{session_id}.jsonl");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(claude_config_dir.join("projects"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join(&file_name))
        .find(|p| p.is_file())
}

/// Claude Code's configuration directory: `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("CLAUDE_CONFIG_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".claude"))
        })
}

/// The transcript of the Claude Code session this process runs under, found from
/// `CLAUDE_CODE_SESSION_ID` (Claude Code sets it for the commands its agent runs).
pub fn session_transcript() -> Option<PathBuf> {
    let id = std::env::var("CLAUDE_CODE_SESSION_ID").ok()?;
    find_transcript(&config_dir()?, id.trim())
}

// ---------------------------------------------------------------------------
// Hooks

/// The Claude Code hook events orchestrator listens to.
pub const HOOK_EVENTS: [&str; 3] = ["SessionStart", "PostToolUse", "UserPromptSubmit"];

/// Adds a matcher group running `command` to every event in [`HOOK_EVENTS`]
/// that does not already run orchestrator, and returns the events it added
/// (empty when everything was already installed).
///
/// A hook counts as ours if its command is `command` or ends with the words
/// `hook claude`, so an install made with another path to the binary is not
/// duplicated. A missing or `null` `hooks` (or event) is treated as empty.
/// On error `settings` is left unchanged; the message names no file, the
/// caller adds it.
pub fn merge_hooks(settings: &mut Value, command: &str) -> Result<Vec<&'static str>, String> {
    let Value::Object(top) = settings else {
        return Err("top level is not a JSON object".to_owned());
    };
    // Check every event before editing so an error leaves `settings` as it was.
    let missing = missing_events(top.get("hooks"), command)?;
    if missing.is_empty() {
        return Ok(missing);
    }

    let hooks = top
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    if hooks.is_null() {
        *hooks = Value::Object(Map::new());
    }
    let hooks = hooks.as_object_mut().expect("`hooks` checked above");
    for &event in &missing {
        let groups = hooks.entry(event).or_insert_with(|| json!([]));
        if groups.is_null() {
            *groups = json!([]);
        }
        groups
            .as_array_mut()
            .expect("event checked above")
            .push(group(event, command));
    }
    Ok(missing)
}

/// The events of [`HOOK_EVENTS`] that have no hook of ours yet, or an error if
/// the `hooks` section has a shape we cannot safely add to.
fn missing_events(hooks: Option<&Value>, command: &str) -> Result<Vec<&'static str>, String> {
    let hooks = match hooks {
        None | Some(Value::Null) => return Ok(HOOK_EVENTS.to_vec()),
        Some(Value::Object(hooks)) => hooks,
        Some(_) => return Err("`hooks` is not an object".to_owned()),
    };
    let mut missing = Vec::new();
    for event in HOOK_EVENTS {
        match hooks.get(event) {
            None | Some(Value::Null) => missing.push(event),
            Some(Value::Array(groups)) => {
                // Groups or hooks of an unexpected shape are not ours, and
                // Claude Code is the one to complain about them, not us.
                let installed = groups
                    .iter()
                    .filter_map(|group| group.get("hooks")?.as_array())
                    .flatten()
                    .any(|hook| is_ours(hook, command));
                if !installed {
                    missing.push(event);
                }
            }
            Some(_) => return Err(format!("`hooks.{event}` is not an array")),
        }
    }
    Ok(missing)
}

fn is_ours(hook: &Value, command: &str) -> bool {
    let Some(existing) = hook.get("command").and_then(Value::as_str) else {
        return false;
    };
    existing == command
        || existing
            .split_whitespace()
            .rev()
            .take(2)
            .eq(["claude", "hook"])
}

fn group(event: &str, command: &str) -> Value {
    let hooks = json!([{ "type": "command", "command": command }]);
    // PostToolUse fires per tool, and Claude Code matches tools by `matcher`.
    if event == "PostToolUse" {
        json!({ "matcher": "*", "hooks": hooks })
    } else {
        json!({ "hooks": hooks })
    }
}

/// What [`install`] did.
#[derive(Debug)]
pub struct InstallOutcome {
    /// The settings file, `<project>/.claude/settings.json`.
    pub path: PathBuf,
    /// Events a hook was added to; empty when already installed (and then
    /// nothing was written).
    pub added: Vec<&'static str>,
    /// Copy of the previous file, when one existed and was changed.
    pub backup: Option<PathBuf>,
    /// The settings file did not exist before.
    pub created: bool,
}

/// Adds orchestrator's hooks (running `command`) to
/// `<project_dir>/.claude/settings.json`, creating it if needed.
///
/// A file that is not valid JSON or has a `hooks` section of the wrong shape is
/// refused and left untouched. When the file changes, its old bytes are first
/// saved to `settings.json.bak`.
pub fn install(project_dir: &Path, command: &str) -> Result<InstallOutcome> {
    let dir = project_dir.join(".claude");
    let path = dir.join("settings.json");

    let old = match fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut settings = match old.as_deref() {
        // An empty file is what an editor or `touch` leaves; it means no settings.
        None => json!({}),
        Some(bytes) if bytes.trim_ascii().is_empty() => json!({}),
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|err| anyhow!("{}: not valid JSON: {err}", path.display()))?,
    };
    let added =
        merge_hooks(&mut settings, command).map_err(|err| anyhow!("{}: {err}", path.display()))?;

    let mut outcome = InstallOutcome {
        path,
        added,
        backup: None,
        created: old.is_none(),
    };
    if outcome.added.is_empty() {
        return Ok(outcome);
    }

    // Both writes go through the workspace's atomic replace: a crash leaves the old or the new
    // file, never a torn one. A failed second write takes the first back (exit 1 changes nothing).
    let mut undo = Undo::new();
    undo.before_create_dir_all(&dir);
    if let Some(old) = &old {
        let backup = dir.join("settings.json.bak");
        undo.before_replace(&backup)?;
        store::file::write_atomic(&backup, old)?;
        outcome.backup = Some(backup);
    }
    let mut text = serde_json::to_string_pretty(&settings)
        .with_context(|| format!("cannot serialize {}", outcome.path.display()))?;
    text.push('\n');
    undo.before_replace(&outcome.path)?;
    store::file::write_atomic(&outcome.path, text.as_bytes())?;
    undo.commit();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "orchestrator hook claude";

    fn settings_path(dir: &Path) -> PathBuf {
        dir.join(".claude/settings.json")
    }

    fn backup_path(dir: &Path) -> PathBuf {
        dir.join(".claude/settings.json.bak")
    }

    fn write_settings(dir: &Path, text: &str) {
        fs::create_dir_all(dir.join(".claude")).unwrap();
        fs::write(settings_path(dir), text).unwrap();
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Compares including key order, which `Value`'s `==` ignores.
    fn assert_same_order(actual: &Value, expected: &Value) {
        assert_eq!(
            serde_json::to_string_pretty(actual).unwrap(),
            serde_json::to_string_pretty(expected).unwrap()
        );
    }

    fn ours() -> Value {
        json!({
            "SessionStart": [{ "hooks": [{ "type": "command", "command": CMD }] }],
            "PostToolUse": [{ "matcher": "*", "hooks": [{ "type": "command", "command": CMD }] }],
            "UserPromptSubmit": [{ "hooks": [{ "type": "command", "command": CMD }] }],
        })
    }

    /// Asserts that install fails naming the file and `problem`, and leaves
    /// the file byte-for-byte as it was, without a backup.
    fn assert_refused(text: &str, problem: &str) {
        let dir = tempfile::tempdir().unwrap();
        write_settings(dir.path(), text);
        let err = install(dir.path(), CMD).unwrap_err();
        let message = format!("{err:#}");
        let path = settings_path(dir.path());
        assert!(
            message.starts_with(&format!("{}: ", path.display())),
            "{message}"
        );
        assert!(message.contains(problem), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert!(!backup_path(dir.path()).exists());
        assert_eq!(fs::read_dir(dir.path().join(".claude")).unwrap().count(), 1);
    }

    #[test]
    fn fresh_project_gets_a_new_file_with_all_events() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = install(dir.path(), CMD).unwrap();

        assert_eq!(outcome.path, settings_path(dir.path()));
        assert_eq!(outcome.added, HOOK_EVENTS);
        assert!(outcome.created);
        assert_eq!(outcome.backup, None);
        let text = fs::read_to_string(&outcome.path).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        assert_same_order(&read_json(&outcome.path), &json!({ "hooks": ours() }));
        // Only the settings file: no backup, no leftover temporary file.
        assert_eq!(fs::read_dir(dir.path().join(".claude")).unwrap().count(), 1);
    }

    #[test]
    fn existing_settings_and_hooks_are_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{
  "permissions": { "allow": ["Bash(cargo test:*)"], "deny": [] },
  "hooks": {
    "PostToolUse": [
      { "matcher": "Edit", "hooks": [{ "type": "command", "command": "prettier --write", "timeout": 30 }] }
    ],
    "Stop": [{ "hooks": [{ "type": "command", "command": "notify-send done" }] }]
  },
  "model": "opus"
}"#;
        write_settings(dir.path(), old);
        let outcome = install(dir.path(), CMD).unwrap();

        assert_eq!(outcome.added, HOOK_EVENTS);
        assert!(!outcome.created);
        let ours = |matcher: bool| {
            let hooks = json!([{ "type": "command", "command": CMD }]);
            if matcher {
                json!({ "matcher": "*", "hooks": hooks })
            } else {
                json!({ "hooks": hooks })
            }
        };
        let expected = json!({
            "permissions": { "allow": ["Bash(cargo test:*)"], "deny": [] },
            "hooks": {
                "PostToolUse": [
                    { "matcher": "Edit", "hooks": [{ "type": "command", "command": "prettier --write", "timeout": 30 }] },
                    ours(true),
                ],
                "Stop": [{ "hooks": [{ "type": "command", "command": "notify-send done" }] }],
                "SessionStart": [ours(false)],
                "UserPromptSubmit": [ours(false)],
            },
            "model": "opus",
        });
        assert_same_order(&read_json(&outcome.path), &expected);
    }

    #[test]
    fn second_install_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), CMD).unwrap();
        let before = fs::read(settings_path(dir.path())).unwrap();

        let outcome = install(dir.path(), CMD).unwrap();
        assert!(outcome.added.is_empty());
        assert_eq!(outcome.backup, None);
        assert!(!outcome.created);
        assert_eq!(fs::read(settings_path(dir.path())).unwrap(), before);
        assert!(!backup_path(dir.path()).exists());
    }

    #[test]
    fn install_from_another_binary_path_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), CMD).unwrap();
        let before = fs::read(settings_path(dir.path())).unwrap();

        let outcome = install(dir.path(), "/usr/local/bin/orchestrator hook claude").unwrap();
        assert!(outcome.added.is_empty());
        assert_eq!(fs::read(settings_path(dir.path())).unwrap(), before);
        assert!(!backup_path(dir.path()).exists());
    }

    #[test]
    fn only_missing_events_are_added() {
        let mut settings = json!({
            "hooks": {
                "SessionStart": [{ "hooks": [{ "type": "command", "command": "/opt/bin/orchestrator  hook\tclaude" }] }],
                "PostToolUse": [{ "matcher": "*", "hooks": [{ "type": "command", "command": "other hook claude-ish" }] }],
                "UserPromptSubmit": null,
            }
        });
        let added = merge_hooks(&mut settings, CMD).unwrap();
        assert_eq!(added, ["PostToolUse", "UserPromptSubmit"]);
        assert_eq!(
            settings["hooks"]["SessionStart"].as_array().unwrap().len(),
            1
        );
        assert_eq!(
            settings["hooks"]["PostToolUse"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            settings["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"],
            CMD
        );
    }

    #[test]
    fn backup_holds_the_exact_old_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // Odd formatting and no trailing newline: the backup must not be re-serialized.
        let old = "{\"model\":\"opus\" ,\r\n  \"hooks\": null}";
        write_settings(dir.path(), old);
        fs::write(backup_path(dir.path()), "stale backup").unwrap();

        let outcome = install(dir.path(), CMD).unwrap();
        assert_eq!(outcome.backup, Some(backup_path(dir.path())));
        assert_eq!(fs::read(backup_path(dir.path())).unwrap(), old.as_bytes());
        assert_same_order(
            &read_json(&outcome.path),
            &json!({ "model": "opus", "hooks": ours() }),
        );
    }

    #[test]
    fn empty_file_counts_as_no_settings() {
        let dir = tempfile::tempdir().unwrap();
        write_settings(dir.path(), " \n\t");
        let outcome = install(dir.path(), CMD).unwrap();
        assert_eq!(outcome.added, HOOK_EVENTS);
        assert!(!outcome.created);
        assert_eq!(fs::read(backup_path(dir.path())).unwrap(), b" \n\t");
        assert_same_order(&read_json(&outcome.path), &json!({ "hooks": ours() }));
    }

    #[test]
    fn invalid_json_is_refused() {
        assert_refused(
            "{\n  \"model\":\n}",
            "not valid JSON: expected value at line 3 column 1",
        );
        assert_refused("{\"a\": 1} trailing", "not valid JSON: trailing characters");
    }

    #[test]
    fn hooks_array_is_refused() {
        assert_refused(r#"{"hooks": []}"#, "`hooks` is not an object");
    }

    #[test]
    fn event_object_is_refused() {
        assert_refused(
            r#"{"hooks": {"PostToolUse": {"matcher": "*"}}}"#,
            "`hooks.PostToolUse` is not an array",
        );
    }

    #[test]
    fn top_level_array_is_refused() {
        assert_refused("[]", "top level is not a JSON object");
    }

    #[test]
    fn merge_error_leaves_settings_unchanged() {
        // SessionStart alone would be addable; the bad UserPromptSubmit must
        // stop the edit before it starts.
        let mut settings = json!({ "hooks": { "UserPromptSubmit": "nope" } });
        let before = settings.clone();
        assert!(merge_hooks(&mut settings, CMD).is_err());
        assert_same_order(&settings, &before);
    }

    #[test]
    fn find_transcript_in_projects() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path();
        assert_eq!(find_transcript(cfg, "abc"), None);
        std::fs::create_dir_all(cfg.join("projects/-work-a")).unwrap();
        std::fs::create_dir_all(cfg.join("projects/-work-b")).unwrap();
        std::fs::create_dir_all(cfg.join("projects/-work-c/abc.jsonl")).unwrap(); // a dir, not a file
        fs::write(cfg.join("projects/-work-b/abc.jsonl"), b"").unwrap();
        fs::write(cfg.join("projects/-work-b/other.jsonl"), b"").unwrap();
        assert_eq!(
            find_transcript(cfg, "abc"),
            Some(cfg.join("projects/-work-b/abc.jsonl"))
        );
        fs::write(cfg.join("projects/-work-a/abc.jsonl"), b"").unwrap();
        assert_eq!(
            find_transcript(cfg, "abc"),
            Some(cfg.join("projects/-work-a/abc.jsonl"))
        );
        assert_eq!(find_transcript(cfg, "missing"), None);
        assert_eq!(find_transcript(cfg, ""), None);
        assert_eq!(find_transcript(cfg, "../projects/-work-a/abc"), None);
    }
}

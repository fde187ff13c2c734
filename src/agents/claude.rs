//! Claude Code: its transcript format and where it keeps its transcripts (its settings files,
//! where the hooks go, are in [`super::claude_settings`]).
//!
//! Transcript (`~/.claude/projects/*/<session>.jsonl`): the context fill is the latest
//! main-chain assistant record's `input_tokens + cache_creation_input_tokens +
//! cache_read_input_tokens`. Sidechain records, `<synthetic>` records and zero-sum usages are
//! ignored. A `system`/`compact_boundary` record after the last counted usage makes the fill
//! unknown (`compacted: true`) until the next counted assistant record. The cumulative total sums
//! input + cache creation + cache read + output over distinct `message.id`s; when one id appears
//! several times (one record per content block) the **latest** usage seen for that id is the one
//! counted. Ids are remembered for the last 64 distinct messages, which covers the consecutive
//! records of one response. Counted records without a `message.id` cannot be deduplicated and are
//! each added once.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::TranscriptState;

/// How many distinct message ids are remembered for deduplication.
const RECENT_MESSAGES: usize = 64;

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
    #[serde(borrow, default)]
    message: Option<ClaudeMessage<'a>>,
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
}

/// Applies one Claude Code line; returns false if it could not be decoded.
pub(super) fn apply_line(body: &[u8], state: &mut TranscriptState) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let Ok(rec) = serde_json::from_str::<ClaudeLine>(text) else {
        return false;
    };
    if rec.is_sidechain == Some(true) {
        return true;
    }
    match rec.kind.as_deref() {
        Some("system") if rec.subtype.as_deref() == Some("compact_boundary") => {
            state.compacted = true;
            state.fill = None;
        }
        Some("assistant") => {
            let Some(msg) = rec.message else { return true };
            if msg.model.as_deref() == Some("<synthetic>") {
                return true;
            }
            let Some(u) = msg.usage else { return true };
            let fill = u.input_tokens.unwrap_or(0)
                + u.cache_creation_input_tokens.unwrap_or(0)
                + u.cache_read_input_tokens.unwrap_or(0);
            if fill == 0 {
                return true;
            }
            state.fill = Some(fill);
            state.compacted = false;
            let total = fill + u.output_tokens.unwrap_or(0);
            match msg.id {
                Some(id) => {
                    // Latest usage for an id wins: replace its earlier contribution.
                    let recent = &mut state.recent_messages;
                    match recent.iter_mut().rev().find(|(seen, _)| *seen == id) {
                        Some((_, counted)) => {
                            state.cumulative = state.cumulative - *counted + total;
                            *counted = total;
                        }
                        None => {
                            if recent.len() == RECENT_MESSAGES {
                                recent.pop_front();
                            }
                            recent.push_back((id.into_owned(), total));
                            state.cumulative += total;
                        }
                    }
                }
                None => state.cumulative += total,
            }
        }
        _ => {}
    }
    true
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

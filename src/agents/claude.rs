//! Claude Code: its transcript format and where it keeps its transcripts (its settings files,
//! where the hooks go, are in [`super::claude_settings`]).
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

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use memchr::memmem;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Main, TranscriptState, fnv1a};
use crate::core::pricing::{NO_MODEL, TokenParts};

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
    /// The tokens by price: the 1-hour writes from the nested breakdown, the rest of the cache
    /// writes ([`Self::cache_writes`]) at the 5-minute price (ccusage prices a flat figure
    /// without a breakdown that way too).
    fn parts(&self) -> TokenParts {
        let one_hour = self
            .cache_creation
            .as_ref()
            .and_then(|c| c.ephemeral_1h_input_tokens)
            .unwrap_or(0);
        let writes = self.cache_writes();
        TokenParts {
            input: self.input_tokens.unwrap_or(0),
            output: self.output_tokens.unwrap_or(0),
            cache_write_5m: writes - one_hour.min(writes),
            cache_write_1h: one_hour.min(writes),
            cache_read: self.cache_read_input_tokens.unwrap_or(0),
        }
    }

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
    if !may_count(body) {
        return true;
    }
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
            let model = msg.model.as_deref().unwrap_or(NO_MODEL);
            let added = count_response(state, key, total, u.parts(), model);
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

/// Whether a line can move a figure: only a record with a `usage` key or a compaction boundary
/// does. Most of a transcript's bytes are tool results and prompts, which are passed over
/// unparsed (so a garbled one is not counted in `skipped_lines`: it could not have counted).
/// Inside a JSON string a quote is escaped, so `"usage"` with its quotes only matches a key,
/// or a rare string that is exactly that word: then the line is parsed and ignored as before.
fn may_count(body: &[u8]) -> bool {
    static USAGE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    static BOUNDARY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"compact_boundary\""));
    USAGE.find(body).is_some() || BOUNDARY.find(body).is_some()
}

/// Adds a response's total to the cumulative once per `key`, the larger usage winning, and its
/// tokens to its model's; returns what was added to the cumulative.
fn count_response(
    state: &mut TranscriptState,
    key: Option<String>,
    total: u64,
    parts: TokenParts,
    model: &str,
) -> u64 {
    let Some(key) = key else {
        state.cumulative += total;
        state.add_model_tokens(model, &parts);
        return total;
    };
    let recent = &mut state.recent_messages;
    let (added, priced) = match recent.iter_mut().rev().find(|(seen, _, _)| *seen == key) {
        Some((_, counted, counted_parts)) => {
            let added = total.saturating_sub(*counted);
            *counted += added;
            let priced = parts.beyond(counted_parts);
            if added > 0 {
                *counted_parts = parts;
            }
            (
                added,
                if added > 0 {
                    priced
                } else {
                    TokenParts::default()
                },
            )
        }
        None => {
            if recent.len() == RECENT_MESSAGES {
                recent.pop_front();
            }
            recent.push_back((key, total, parts));
            (total, parts)
        }
    };
    state.cumulative += added;
    state.add_model_tokens(model, &priced);
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

//! Codex: its rollout transcript format.
//!
//! A rollout (`rollout-*.jsonl`): the fill is `payload.info.last_token_usage.total_tokens` of the
//! last `event_msg` / `token_count` event, the window is `payload.info.model_context_window`, and
//! the cumulative total is `payload.info.total_token_usage.total_tokens`. A missing or null value
//! leaves the previous one in place.

use serde::Deserialize;
use std::borrow::Cow;

use super::TranscriptState;

#[derive(Deserialize)]
struct CodexHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<CodexPayloadHead<'a>>,
}

#[derive(Deserialize)]
struct CodexPayloadHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct CodexTokenCount {
    payload: CodexTokenPayload,
}

#[derive(Deserialize)]
struct CodexTokenPayload {
    #[serde(default)]
    info: Option<CodexInfo>,
}

#[derive(Deserialize)]
struct CodexInfo {
    #[serde(default)]
    last_token_usage: Option<CodexUsage>,
    #[serde(default)]
    total_token_usage: Option<CodexUsage>,
    #[serde(default)]
    model_context_window: Option<u64>,
}

#[derive(Deserialize)]
struct CodexUsage {
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// Applies one Codex line; returns false if it could not be decoded.
pub(super) fn apply_line(body: &[u8], state: &mut TranscriptState) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    // Two passes: the head is decoded for every line (payloads of other event
    // types have arbitrary shapes), the token details only for token_count.
    let Ok(head) = serde_json::from_str::<CodexHead>(text) else {
        return false;
    };
    let is_token_count = head.kind.as_deref() == Some("event_msg")
        && head.payload.and_then(|p| p.kind).as_deref() == Some("token_count");
    if !is_token_count {
        return true;
    }
    let Ok(rec) = serde_json::from_str::<CodexTokenCount>(text) else {
        return false;
    };
    let Some(info) = rec.payload.info else {
        return true;
    };
    if let Some(fill) = info.last_token_usage.and_then(|u| u.total_tokens) {
        state.fill = Some(fill);
    }
    if let Some(total) = info.total_token_usage.and_then(|u| u.total_tokens) {
        state.cumulative = total;
    }
    if let Some(window) = info.model_context_window {
        state.context_window = Some(window);
    }
    true
}

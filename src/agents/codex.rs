//! Codex: its rollout transcript format and the JSONL `codex exec --json` prints.
//!
//! A rollout (`rollout-*.jsonl`, each line `{timestamp, type, payload}`): the fill is
//! `payload.info.last_token_usage.total_tokens` of the last `event_msg` / `token_count` event, the
//! window is `payload.info.model_context_window`, and the cumulative total follows
//! `payload.info.total_token_usage.total_tokens`, adding what each event adds to it. A missing or
//! null value leaves the previous one in place.
//!
//! When the context window is exceeded, Codex writes a `token_count` filled to the window
//! (codex-rs `TokenUsageInfo::fill_to_context_window`): a `total_token_usage` whose parts are all
//! 0 and whose `total_tokens` is the window, and a `last_token_usage` that is no real spend. That
//! reads as a full context (fill = window), and the total does not go backwards: the next event
//! counts from the window it was reset to. A variant seen in forks sets
//! `last_token_usage.input_tokens` to the window instead; that reads as full too.
//!
//! Tokens by model, for pricing: the model is the `payload.model` of the latest `turn_context`
//! line (codex-rs `protocol.rs`: `RolloutItem::TurnContext(TurnContextItem)`, serialised with
//! `tag = "type", content = "payload"`, and `TurnContextItem { cwd, approval_policy,
//! sandbox_policy, model: String, effort, summary, .. }`, written once per user turn; the
//! `session_meta` line names only the provider). What each `token_count` adds to
//! `total_token_usage` is priced at that model: `input_tokens - cached_input_tokens` as input,
//! `cached_input_tokens` as cache reads, `output_tokens` (reasoning included) as output.
//!
//! `codex exec --json` (`thread.started`, `turn.completed`, `item.*`): `turn.completed.usage` is
//! the thread's running total (codex-rs fills it from the last `total_token_usage`), so the
//! last one counts, never their sum; a resumed thread goes on from its total, a new thread adds
//! its own. It has no per-request figure, so it gives the cumulative total but no fill.

use serde::Deserialize;
use std::borrow::Cow;

use super::TranscriptState;
use crate::core::pricing::{NO_MODEL, TokenParts};

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

/// codex-rs `TokenUsage`; `input_tokens` includes the cached ones, `output_tokens` the reasoning.
#[derive(Deserialize)]
struct CodexUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cached_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    reasoning_output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl CodexUsage {
    /// The tokens by price: `input_tokens` includes the cached ones.
    fn parts(&self) -> TokenParts {
        parts(
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
        )
    }

    /// What `fill_to_context_window` writes: every part written as 0, only `total_tokens` set.
    fn is_filled_to_window(&self) -> bool {
        [
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.reasoning_output_tokens,
        ]
        .iter()
        .all(|part| *part == Some(0))
            && self.total_tokens.unwrap_or(0) > 0
    }
}

/// Whether a JSON line is a rollout line: `type` and `payload`, as `RolloutLine` serialises.
pub(super) fn recognises_rollout(text: &str) -> bool {
    serde_json::from_str::<CodexHead>(text).is_ok_and(|h| h.kind.is_some() && h.payload.is_some())
}

/// Whether a JSON line is a `codex exec --json` event: a `type` of `thread.*`, `turn.*` or
/// `item.*` (codex-rs `exec_events.rs` `ThreadEvent`).
pub(super) fn recognises_exec(text: &str) -> bool {
    serde_json::from_str::<CodexHead>(text).is_ok_and(|h| {
        h.payload.is_none()
            && h.kind.as_deref().is_some_and(|k| {
                ["thread.", "turn.", "item."]
                    .iter()
                    .any(|prefix| k.starts_with(prefix))
            })
    })
}

/// Applies one rollout line; returns false if it could not be decoded.
pub(super) fn apply_line(body: &[u8], state: &mut TranscriptState) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    // Two passes: the head is decoded for every line (payloads of other event
    // types have arbitrary shapes), the token details only for token_count.
    let Ok(head) = serde_json::from_str::<CodexHead>(text) else {
        return false;
    };
    if head.kind.as_deref() == Some("turn_context") {
        let Ok(turn) = serde_json::from_str::<CodexTurnContext>(text) else {
            return false;
        };
        if let Some(model) = turn.payload.model.filter(|m| !m.is_empty()) {
            state.model = Some(model.into_owned());
        }
        return true;
    }
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
    if let Some(window) = info.model_context_window {
        state.context_window = Some(window);
    }
    let (last, total) = (info.last_token_usage, info.total_token_usage);
    if last.is_none() && total.is_none() {
        return true;
    }
    state.records += 1;
    let window = state.context_window;
    let filled = total.as_ref().is_some_and(CodexUsage::is_filled_to_window);
    let input_at_window = last
        .as_ref()
        .and_then(|u| u.input_tokens)
        .zip(window)
        .is_some_and(|(input, window)| input >= window);
    if filled || input_at_window {
        // The context is full. The filled total is a reset, not spend: the next event counts
        // from it.
        let at = total.as_ref().and_then(|u| u.total_tokens);
        state.fill = window
            .or(at)
            .max(last.as_ref().and_then(|u| u.total_tokens));
        if filled {
            state.codex_total = at;
            state.codex_parts = Some(TokenParts::default());
            return true;
        }
    } else if let Some(fill) = last.as_ref().and_then(|u| u.total_tokens) {
        state.fill = Some(fill);
    }
    if let Some((now, now_parts)) = total.and_then(|u| Some((u.total_tokens?, u.parts()))) {
        let last_parts = last
            .as_ref()
            .map_or_else(TokenParts::default, CodexUsage::parts);
        let (added, priced) = match state.codex_total {
            Some(before) if now >= before => (
                now - before,
                now_parts.beyond(&state.codex_parts.unwrap_or_default()),
            ),
            // Gone backwards without a fill: count this request, never a negative.
            Some(_) => (last.and_then(|u| u.total_tokens).unwrap_or(0), last_parts),
            None => (now, now_parts),
        };
        state.cumulative += added;
        state.codex_total = Some(now);
        state.codex_parts = Some(now_parts);
        let model = state.model.clone();
        state.add_model_tokens(model.as_deref().unwrap_or(NO_MODEL), &priced);
    }
    true
}

/// A `turn_context` line: only its model is read.
#[derive(Deserialize)]
struct CodexTurnContext<'a> {
    #[serde(borrow)]
    payload: CodexTurnPayload<'a>,
}

#[derive(Deserialize)]
struct CodexTurnPayload<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

/// Codex counts: `input` includes `cached`, which is priced as a cache read.
fn parts(input: Option<u64>, cached: Option<u64>, output: Option<u64>) -> TokenParts {
    let (input, cached) = (input.unwrap_or(0), cached.unwrap_or(0));
    TokenParts {
        input: input.saturating_sub(cached),
        cache_read: cached.min(input),
        output: output.unwrap_or(0),
        ..TokenParts::default()
    }
}

#[derive(Deserialize)]
struct ExecEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thread_id: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<ExecUsage>,
}

/// codex-rs `exec_events.rs` `Usage` (newer releases add `reasoning_output_tokens` and
/// `cache_write_input_tokens`, ignored here: `output_tokens` already includes the reasoning).
#[derive(Deserialize)]
struct ExecUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cached_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// Applies one `codex exec --json` line; returns false if it could not be decoded.
pub(super) fn apply_exec_line(body: &[u8], state: &mut TranscriptState) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let Ok(event) = serde_json::from_str::<ExecEvent>(text) else {
        return false;
    };
    match event.kind.as_deref() {
        Some("thread.started") => {
            let thread = event.thread_id.map(Cow::into_owned);
            if thread != state.codex_thread {
                // Another thread: its totals start from 0, on top of what was counted.
                state.codex_thread = thread;
                state.codex_total = None;
                state.codex_parts = None;
            }
        }
        Some("turn.completed") => {
            let Some(usage) = event.usage else {
                return true;
            };
            let now = usage.input_tokens.unwrap_or(0) + usage.output_tokens.unwrap_or(0);
            // All zero: the turn saw no token count, which says nothing.
            if now == 0 {
                return true;
            }
            state.records += 1;
            let before = state.codex_total.unwrap_or(0);
            if now > before {
                state.cumulative += now - before;
                state.codex_total = Some(now);
                // The JSON names no model: these tokens are unpriced.
                let now_parts = parts(
                    usage.input_tokens,
                    usage.cached_input_tokens,
                    usage.output_tokens,
                );
                let priced = now_parts.beyond(&state.codex_parts.unwrap_or_default());
                state.codex_parts = Some(now_parts);
                state.add_model_tokens(NO_MODEL, &priced);
            }
        }
        _ => {}
    }
    true
}

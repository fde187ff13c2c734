//! Measuring a session's usage right now, over every meter, and the report `checkpoint`, `status`
//! and the hooks print from it. The rules are in `core::meters`; the figures come from `agents`.
//!
//! The token figure comes from, in order: `checkpoint --tokens` (explicit), the agent's
//! transcript, the last figure recorded in the session. With none of them the figure is unknown
//! and so is the level (`unknown`, exit 12), never a confident 0. The level is the worst over the
//! token budget and the meters of `settings.meters` that apply to the session's agent.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use crate::agents::{self, Reading, TranscriptKind};
use crate::core::budget::{Level, Usage, format_pct, round1};
use crate::core::meters::{self, MeterKind, MeterStatus, Named, TOKENS, TranscriptFigures};
use crate::core::pricing::{self, Cost, PriceSetting, TokenParts};
use crate::core::session::{Session, TranscriptOrigin};
use crate::core::stack::{Progress, TaskStack};
use crate::store::Workspace;
use std::collections::BTreeMap;

/// The session's transcript: the one it was given (`start --transcript`, a hook), else the one
/// of the Claude Code session this process runs under. A transcript found that way is looked up
/// again each time, since `/clear` starts a new one under a new session id; without the variable
/// (a command run outside the agent) the one found last stays.
pub fn transcript_of(session: &Session) -> Option<PathBuf> {
    let follows_environment = session.transcript.is_none()
        || session.transcript_origin == Some(TranscriptOrigin::Environment);
    follows_environment
        .then(agents::claude::session_transcript)
        .flatten()
        .or_else(|| session.transcript.clone())
}

/// The token figure and where it came from.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub used: u64,
    pub limit: u64,
    /// `explicit`, `transcript`, or the source recorded with the session's last figure.
    pub source: String,
    /// The transcript shows a compaction after the last response: the fill is unknown.
    pub compacted: bool,
    pub transcript: Option<PathBuf>,
    pub figures: Option<TranscriptFigures>,
    /// The transcript's tokens per model, when it gave any figure.
    pub models: Option<BTreeMap<String, TokenParts>>,
}

/// A session's transcript as read now, its cache not saved yet: commands read it before they
/// take the workspace lock and save the cache once they know they will not be refused.
pub struct Measured {
    /// The transcript the session reads, if any.
    transcript: Option<PathBuf>,
    reading: Option<Reading>,
    update: Option<agents::CacheUpdate>,
}

impl Measured {
    /// Reads the transcript when one is known. A transcript that cannot be read is a warning,
    /// never an error: the agent's work must not stop because its log moved.
    pub fn read(ws: &Workspace, session: &Session) -> Measured {
        let transcript = transcript_of(session);
        let (reading, update) = match transcript.as_deref().and_then(|path| read(ws, path)) {
            Some((reading, update)) => (Some(reading), Some(update)),
            None => (None, None),
        };
        Measured {
            transcript,
            reading,
            update,
        }
    }

    /// Whether this is a reading of the transcript `session` reads now (it may have been bound
    /// to another one since).
    pub fn is_of(&self, session: &Session) -> bool {
        self.transcript == transcript_of(session)
    }

    /// Remembers how far the transcript was read, for the next command.
    pub fn save(self) {
        if let Some(update) = self.update {
            update.save();
        }
    }
}

impl Tokens {
    /// Reads the transcript when one is known (see [`Measured::read`]) and saves the cache.
    pub fn measure(ws: &Workspace, session: &Session, explicit: Option<u64>) -> Tokens {
        let measured = Measured::read(ws, session);
        let tokens = Tokens::from_measured(session, explicit, &measured);
        measured.save();
        tokens
    }

    /// The figures of a reading made earlier, for `session` as it stands now.
    pub fn from_measured(session: &Session, explicit: Option<u64>, measured: &Measured) -> Tokens {
        let reading = measured.transcript.as_deref().zip(measured.reading.clone());
        Tokens::from_sources(session, explicit, reading)
    }

    fn from_sources(
        session: &Session,
        explicit: Option<u64>,
        reading: Option<(&Path, Reading)>,
    ) -> Tokens {
        let figures = reading
            .as_ref()
            .filter(|(_, r)| r.records > 0 || r.compacted)
            .map(|(_, r)| TranscriptFigures {
                fill: r.fill,
                cumulative: r.cumulative,
                subagent: r.subagent,
                cost_usd: None,
            });
        let models = reading
            .as_ref()
            .filter(|(_, r)| r.records > 0)
            .map(|(_, r)| r.models.clone());
        let limit = reading
            .as_ref()
            .and_then(|(_, r)| r.context_window)
            .unwrap_or(session.budget);
        let transcript = reading.as_ref().map(|(p, _)| p.to_path_buf());
        let base = Tokens {
            used: 0,
            limit,
            source: "none".into(),
            compacted: false,
            transcript,
            figures,
            models,
        };
        match (explicit, reading) {
            (Some(used), _) => Tokens {
                used,
                source: "explicit".into(),
                ..base
            },
            (None, Some((_, reading))) if reading.has_fill() => Tokens {
                used: reading.fill.unwrap_or(0),
                source: "transcript".into(),
                compacted: reading.fill.is_none() && reading.compacted,
                ..base
            },
            (None, _) => match &session.tokens {
                Some(recorded) => Tokens {
                    used: recorded.used,
                    source: recorded.source.clone(),
                    ..base
                },
                None => base,
            },
        }
    }

    /// Whether the transcript gave a figure worth recording in the checkpoint.
    pub fn from_transcript(&self) -> Option<u64> {
        (self.source == "transcript" && !self.compacted).then_some(self.used)
    }

    /// No figure from anywhere: the level is unknown.
    pub fn is_unknown(&self) -> bool {
        self.source == "none"
    }

    /// What the transcript's tokens cost at the prices of `settings.pricing` and the embedded
    /// table; `None` without a transcript figure.
    pub fn cost(&self, overrides: &Named<PriceSetting>) -> Option<Cost> {
        self.models
            .as_ref()
            .map(|models| pricing::price(models, overrides))
    }
}

/// A first read of a transcript this large shows a progress bar on a terminal.
pub const LARGE_TRANSCRIPT: u64 = 32 * 1024 * 1024;

fn read(ws: &Workspace, path: &Path) -> Option<(Reading, agents::CacheUpdate)> {
    let _bar = first_read_bar(ws, path);
    match agents::read_cached_later(&ws.cache_dir(), path) {
        Ok((reading, update)) => {
            if reading.capped {
                tracing::warn!(
                    "{}: read {} MiB of the transcript, the most one command reads; the figure is \
                     as of that point and the next command reads on",
                    path.display(),
                    reading.bytes_read >> 20
                );
            }
            if reading.records == 0 && !reading.compacted {
                let format = reading
                    .kind
                    .map_or("not recognised", TranscriptKind::as_str);
                tracing::warn!(
                    "{}: no record with a token usage in it (format: {format}); the token figure is unknown until the agent writes one",
                    path.display()
                );
            } else if reading.kind == Some(TranscriptKind::CodexExec) && reading.fill.is_none() {
                tracing::warn!(
                    "{}: `codex exec --json` output gives the thread's total tokens, not the context in use; give that with --tokens N",
                    path.display()
                );
            }
            if reading.skipped_lines > 0 {
                tracing::debug!(
                    "{}: skipped {} undecodable lines",
                    path.display(),
                    reading.skipped_lines
                );
            }
            Some((reading, update))
        }
        Err(err) => {
            tracing::warn!("cannot read the transcript: {err:#}");
            None
        }
    }
}

/// A progress bar for the first read of a large transcript (no cache of it yet): the rest are
/// reads of what was appended, which take no time.
fn first_read_bar(ws: &Workspace, path: &Path) -> Option<crate::progress::Bar> {
    let size = std::fs::metadata(path).ok()?.len();
    if size < LARGE_TRANSCRIPT || agents::cache_path(&ws.cache_dir(), path).exists() {
        return None;
    }
    let total = size.min(agents::MAX_READ_PER_CALL);
    let start = agents::BYTES_READ.load(std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map_or_else(String::new, |n| {
        crate::core::text::strip_controls(&n.to_string_lossy()).into_owned()
    });
    crate::progress::Bar::start(
        total,
        std::time::Duration::ZERO,
        move |done| {
            format!(
                "reading transcript {name}: {} of {} MiB",
                done >> 20,
                total >> 20
            )
        },
        move || agents::BYTES_READ.load(std::sync::atomic::Ordering::Relaxed) - start,
    )
}

/// What `checkpoint`, `status` and the hooks tell the agent.
pub struct Report {
    pub json: Value,
    pub text: String,
    pub level: Level,
    /// The meter that decides the level, when it is not ok.
    pub limiting: Option<MeterStatus>,
}

pub fn report(stack: &TaskStack, session: &Session, progress: Progress, tokens: &Tokens) -> Report {
    let budget = &stack.settings.budget;
    let token_meter = MeterStatus {
        name: TOKENS.into(),
        kind: MeterKind::Gauge,
        usage: Usage {
            used: tokens.used,
            limit: tokens.limit,
            warn: budget.warn,
            shutdown: budget.shutdown,
        },
        source: tokens.source.clone(),
        dollars: false,
    };
    let settings = &stack.settings;
    let cost = tokens.cost(&settings.pricing);
    let figures = tokens.figures.map(|f| TranscriptFigures {
        cost_usd: cost.as_ref().and_then(|c| c.cost_usd),
        ..f
    });
    let applicable = meters::applicable(&settings.meters, &settings.agents, &session.agent);
    let others = meters::evaluate(&applicable, &session.meters, figures);
    let all: Vec<MeterStatus> = std::iter::once(token_meter.clone())
        .chain(others.iter().cloned())
        .collect();
    let mut limiting = meters::limiting(&all).cloned();
    let mut level = limiting.as_ref().map_or(Level::Ok, MeterStatus::level);
    if tokens.is_unknown() && level < Level::Unknown {
        level = Level::Unknown;
        limiting = Some(token_meter.clone());
    }
    let usage = token_meter.usage;
    let source = &tokens.source;

    let mut sentence = String::new();
    if tokens.is_unknown() && level > Level::Unknown {
        sentence.push_str("The context in use is unknown (no --tokens, no transcript). ");
    }
    if tokens.compacted {
        sentence.push_str("The agent compacted its context since its last response; its usage is unknown until the next one. ");
    }
    if let Some(meter) = limiting.as_ref().filter(|m| m.name != TOKENS) {
        sentence.push_str(&format!(
            "Meter `{}` is at {}% of its limit ({}/{}). ",
            meter.name,
            format_pct(meter.usage.pct()),
            meter.used_text(),
            meter.limit_text()
        ));
    }
    sentence.push_str(level.action());

    let mut text = format!(
        "level={level} used={} budget={} pct={} warn={} shutdown={} progress={progress} source={source}\n{sentence}\n",
        usage.used,
        usage.limit,
        format_pct(usage.pct()),
        format_pct(budget.warn * 100.0),
        format_pct(budget.shutdown * 100.0),
    );
    for meter in &others {
        text.push_str(&format!(
            "meter={} kind={} used={} limit={} pct={} level={} source={}\n",
            meter.name,
            meter.kind.as_str(),
            meter.used_text(),
            meter.limit_text(),
            format_pct(meter.usage.pct()),
            meter.level(),
            meter.source
        ));
    }
    let json = json!({
        "session": session.id,
        "task": session.task,
        "level": level,
        "used": usage.used,
        "budget": usage.limit,
        "pct": usage.pct(),
        "warn": round1(budget.warn * 100.0),
        "shutdown": round1(budget.shutdown * 100.0),
        "progress": progress,
        "source": source,
        "compacted": tokens.compacted,
        "transcript": tokens.transcript,
        "subagent_tokens": tokens.figures.map(|f| f.subagent),
        "meters": others.iter().map(meter_json).collect::<Vec<_>>(),
        "limiting": limiting.as_ref().map(|m| m.name.clone()),
        "action": sentence,
        "cost_usd": cost.as_ref().and_then(|c| c.cost_usd).map(pricing::round_usd),
        "cost": cost.as_ref().map(cost_json),
    });
    if let Some(cost) = &cost {
        text.push_str(&cost_line(cost));
    }
    Report {
        json,
        text,
        level,
        limiting,
    }
}

/// The report of a session as it stands: its task's progress and a fresh token figure.
pub fn current(ws: &Workspace, stack: &TaskStack, session: &Session) -> Report {
    let progress = stack
        .task(&session.task)
        .map_or(session.progress_at_start, |t| t.progress);
    let tokens = Tokens::measure(ws, session, None);
    report(stack, session, progress, &tokens)
}

/// The shutdown threshold is useless past the point where an agent compacts on its own. Only a
/// point the settings state is checked (`init`, `status`; the brief says it per agent).
pub fn warn_about_compaction(ws: &Workspace, stack: &TaskStack) {
    for warning in stack.settings.compaction_warnings() {
        tracing::warn!("{}: {warning}", ws.stack_path().display());
    }
}

fn meter_json(meter: &MeterStatus) -> Value {
    json!({
        "name": meter.name,
        "kind": meter.kind.as_str(),
        "used": meter.used_value(),
        "limit": meter.limit_value(),
        "pct": meter.usage.pct(),
        "warn": round1(meter.usage.warn * 100.0),
        "shutdown": round1(meter.usage.shutdown * 100.0),
        "level": meter.level(),
        "source": meter.source,
    })
}

/// The session's cost by model, for JSON: `models` (each `model`, `tokens` by price, `cost_usd`,
/// `null` when unpriced), `unpriced_tokens`, `unpriced_models`.
pub fn cost_json(cost: &Cost) -> Value {
    json!({
        "cost_usd": cost.cost_usd.map(pricing::round_usd),
        "models": cost.models.iter().map(|m| json!({
            "model": m.model,
            "tokens": m.tokens,
            "cost_usd": m.cost_usd.map(pricing::round_usd),
        })).collect::<Vec<_>>(),
        "unpriced_tokens": cost.unpriced_tokens,
        "unpriced_models": cost.unpriced_models(),
    })
}

/// The text line of a session's cost: `cost_usd=1.2345 models=2`, with `unpriced=...` naming
/// the models without a price; `cost_usd=unknown` when nothing was priced.
pub fn cost_line(cost: &Cost) -> String {
    let mut line = match cost.cost_usd {
        Some(dollars) => format!("cost_usd={dollars:.4} models={}", cost.models.len()),
        None => format!("cost_usd=unknown models={}", cost.models.len()),
    };
    let unpriced = cost.unpriced_models();
    if !unpriced.is_empty() {
        line.push_str(&format!(
            " unpriced={} unpriced_tokens={}",
            unpriced.join(","),
            cost.unpriced_tokens
        ));
    }
    line.push('\n');
    line
}

/// A compact figure for one-line messages: `172k`.
pub fn kilo(tokens: u64) -> String {
    if tokens >= 1000 {
        format!("{}k", (tokens + 500) / 1000)
    } else {
        tokens.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::session::TokenReading;

    fn session() -> Session {
        serde_json::from_value(json!({
            "id": "session_20251106_001355", "agent": "claude", "task": "t",
            "started": "2025-11-06T00:13:55Z", "lease_expires": "2025-11-06T00:43:55Z",
            "host": "h", "pid": 1, "budget": 200000,
            "progress_at_start": {"done": 0, "total": 4}
        }))
        .unwrap()
    }

    fn reading(fill: Option<u64>, compacted: bool, window: Option<u64>) -> Reading {
        Reading {
            kind: Some(TranscriptKind::ClaudeCode),
            fill,
            compacted,
            cumulative: 9,
            subagent: 0,
            records: u64::from(fill.is_some()),
            context_window: window,
            models: Default::default(),
            skipped_lines: 0,
            bytes_read: 0,
            capped: false,
        }
    }

    #[test]
    fn explicit_beats_transcript_beats_recorded() {
        let mut s = session();
        s.tokens = Some(TokenReading {
            used: 5,
            source: "explicit".into(),
            at: s.started,
        });
        let path = Path::new("/t.jsonl");
        let t = Tokens::from_sources(&s, Some(7), Some((path, reading(Some(100), false, None))));
        assert_eq!((t.used, t.source.as_str()), (7, "explicit"));
        let t = Tokens::from_sources(&s, None, Some((path, reading(Some(100), false, None))));
        assert_eq!((t.used, t.source.as_str()), (100, "transcript"));
        assert_eq!(t.from_transcript(), Some(100));
        let t = Tokens::from_sources(&s, None, None);
        assert_eq!((t.used, t.source.as_str()), (5, "explicit"));
    }

    #[test]
    fn a_compaction_leaves_the_fill_unknown_and_a_window_sets_the_limit() {
        let path = Path::new("/rollout-1.jsonl");
        let t = Tokens::from_sources(&session(), None, Some((path, reading(None, true, None))));
        assert!(t.compacted);
        assert_eq!((t.used, t.from_transcript()), (0, None));
        let t = Tokens::from_sources(
            &session(),
            None,
            Some((path, reading(Some(50), false, Some(1000)))),
        );
        assert_eq!((t.used, t.limit), (50, 1000));
    }

    #[test]
    fn kilo_rounds_to_thousands() {
        assert_eq!(kilo(172_400), "172k");
        assert_eq!(kilo(199_600), "200k");
        assert_eq!(kilo(999), "999");
    }
}

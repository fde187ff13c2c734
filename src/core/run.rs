//! The perpetual loop's decisions: when `orchestrator run` stops, the circuit breaker, backoff,
//! and how the agent's command line is filled in. No I/O: `commands/run.rs` does the effects.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// Why the loop ended. Each reason has its own exit code (README, "orchestrator run").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every task is done or skipped.
    AllDone,
    /// Tasks remain, but none is ready and no other session works on one (blocked tasks).
    NothingReady,
    MaxSessions,
    MaxDuration,
    /// `.orchestrator/STOP` exists.
    StopFile,
    Interrupted,
    Terminated,
    /// The breaker: sessions in a row without progress.
    NoProgress,
    /// The breaker: agent failures (non-zero exits) in a row.
    AgentFailures,
    /// `--max-cost`: the run's sessions cost more than it allows.
    MaxCost,
}

impl StopReason {
    pub fn exit_code(self) -> u8 {
        match self {
            StopReason::AllDone => 0,
            StopReason::NothingReady => 3,
            StopReason::MaxSessions => 20,
            StopReason::MaxDuration => 21,
            StopReason::StopFile => 22,
            StopReason::NoProgress => 23,
            StopReason::AgentFailures => 24,
            StopReason::MaxCost => 25,
            StopReason::Interrupted => 130,
            StopReason::Terminated => 143,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::AllDone => "all_done",
            StopReason::NothingReady => "nothing_ready",
            StopReason::MaxSessions => "max_sessions",
            StopReason::MaxDuration => "max_duration",
            StopReason::StopFile => "stop_file",
            StopReason::Interrupted => "interrupted",
            StopReason::Terminated => "terminated",
            StopReason::NoProgress => "no_progress",
            StopReason::AgentFailures => "agent_failures",
            StopReason::MaxCost => "max_cost",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            StopReason::AllDone => "every task is done",
            StopReason::NothingReady => {
                "no task is ready and no other session is working on one (see `orchestrator next`)"
            }
            StopReason::MaxSessions => "--max-sessions reached",
            StopReason::MaxDuration => "--max-duration reached",
            StopReason::MaxCost => {
                "--max-cost reached: the sessions of this run cost more than it allows (see `orchestrator report`)"
            }
            StopReason::StopFile => {
                "the stop file .orchestrator/STOP exists (delete it to run again)"
            }
            StopReason::Interrupted => "interrupted (SIGINT)",
            StopReason::Terminated => "terminated (SIGTERM)",
            StopReason::NoProgress => {
                "circuit breaker: sessions in a row made no progress (no units done, no commits); read the last handoffs, fix the cause, then `orchestrator run --reset-breaker` (the count survives restarts)"
            }
            StopReason::AgentFailures => {
                "circuit breaker: the agent failed (non-zero exit, timeout) sessions in a row; read its output in the run log and the last handoffs, fix the cause, then `orchestrator run --reset-breaker` (the count survives restarts)"
            }
        }
    }
}

/// How one agent session ended, as evidence for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionOutcome {
    /// The task's units done moved, or the agent made commits.
    pub progressed: bool,
    /// The agent exited non-zero (a rate limit is not a failure).
    pub failed: bool,
    pub rate_limited: bool,
}

/// Trips after `no_progress_limit` sessions in a row without progress, or `failures_limit`
/// agent failures in a row. The counts so far come in from the last run (they survive restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub no_progress_limit: u32,
    pub failures_limit: u32,
    pub without_progress: u32,
    pub failures: u32,
}

impl Breaker {
    pub fn new(limit: u32) -> Self {
        Breaker::with_limits(limit, limit)
    }

    pub fn with_limits(no_progress_limit: u32, failures_limit: u32) -> Self {
        Breaker {
            no_progress_limit,
            failures_limit,
            without_progress: 0,
            failures: 0,
        }
    }

    /// Whether the counts carried over from an earlier run already reach a limit.
    pub fn tripped(&self) -> Option<StopReason> {
        if self.failures >= self.failures_limit {
            Some(StopReason::AgentFailures)
        } else if self.without_progress >= self.no_progress_limit {
            Some(StopReason::NoProgress)
        } else {
            None
        }
    }

    pub fn record(&mut self, outcome: SessionOutcome) -> Option<StopReason> {
        // A rate-limited session says nothing about the agent or the task.
        if outcome.rate_limited {
            return None;
        }
        self.failures = if outcome.failed { self.failures + 1 } else { 0 };
        self.without_progress = if outcome.progressed {
            0
        } else {
            self.without_progress + 1
        };
        self.tripped()
    }
}

/// The default rate-limit patterns, matched in any case against the agent's final output:
/// - Claude Code: "You've hit your session limit · resets 3:45pm", "Claude usage limit reached",
///   "5-hour limit reached ∙ resets 12pm", "API Error: Rate limit reached", "spend limit reached"
///   (code.claude.com/docs/en/errors, "Usage limits"; anthropics/claude-code #2490, #7641, #79136);
/// - Codex: "You've hit your usage limit. ... try again at 3:28 PM" (codex-rs/protocol/src/error.rs,
///   UsageLimitReachedError), "exceeded retry limit, last status: 429 Too Many Requests";
/// - Gemini CLI: "You have exhausted your capacity on this model", "You exceeded your current
///   quota", "Resource exhausted" (packages/core/src/utils/googleQuotaErrors.ts and its tests).
pub const DEFAULT_PATTERNS: [&str; 9] = [
    "rate limit",
    "rate_limit",
    "usage limit",
    "hit your",
    "limit reached",
    "too many requests",
    "exhausted your",
    "exceeded your current quota",
    "resource exhausted",
];

/// `settings.run`: how the loop recognises a rate limit and how long it waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// Agent exit codes that mean "rate limited".
    pub rate_limit_exit_codes: Vec<i32>,
    /// Case-insensitive text in the agent's last output that means "rate limited".
    pub rate_limit_patterns: Vec<String>,
    /// The first wait after a rate limit; doubled for each one in a row.
    pub backoff_seconds: u64,
    pub max_backoff_seconds: u64,
    /// The longest one session may run before the agent is stopped (a duration like `2h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<String>,
    /// How long the agent may print nothing before it is stopped (a duration like `20m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// A command (program and arguments, no shell) told of the loop's events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_event: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            rate_limit_exit_codes: Vec::new(),
            rate_limit_patterns: DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect(),
            backoff_seconds: 60,
            max_backoff_seconds: 3600,
            session_timeout: None,
            idle_timeout: None,
            on_event: Vec::new(),
            extra: Map::new(),
        }
    }
}

impl RunSettings {
    pub fn is_default(&self) -> bool {
        *self == RunSettings::default()
    }

    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("session_timeout", &self.session_timeout),
            ("idle_timeout", &self.idle_timeout),
        ] {
            if let Some(text) = value {
                parse_duration(text).map_err(|e| format!("settings.run.{key}: {e}"))?;
            }
        }
        Ok(())
    }

    /// `settings.run.session_timeout` and `idle_timeout`, checked by `validate`.
    pub fn timeouts(&self) -> (Option<Duration>, Option<Duration>) {
        let parse = |v: &Option<String>| v.as_deref().and_then(|t| parse_duration(t).ok());
        (parse(&self.session_timeout), parse(&self.idle_timeout))
    }

    /// Whether an agent's exit code or the tail of its output reports a rate limit.
    pub fn is_rate_limited(&self, exit_code: Option<i32>, output_tail: &str) -> bool {
        if exit_code.is_some_and(|c| self.rate_limit_exit_codes.contains(&c)) {
            return true;
        }
        // Only a failed exit can be a rate limit by its text: a successful session that
        // printed "rate limit" in passing was not stopped by one.
        if exit_code == Some(0) {
            return false;
        }
        // Only the final lines: work output further up may quote the words (a source file the
        // agent printed), the agent's own error is last.
        let tail = crate::core::quota::final_output(output_tail).to_lowercase();
        self.rate_limit_patterns
            .iter()
            .any(|p| !p.is_empty() && tail.contains(&p.to_lowercase()))
    }

    /// The wait after the `nth` rate limit in a row (1-based).
    pub fn backoff(&self, nth: u32) -> Duration {
        let factor = 1u64 << nth.saturating_sub(1).min(20);
        Duration::from_secs(
            self.backoff_seconds
                .saturating_mul(factor)
                .min(self.max_backoff_seconds),
        )
    }
}

/// Whether a commit made while a session ran is evidence of its agent's work: the agent's own
/// commits and its checkpoint commits count; wraps, and other sessions' commits, do not.
pub fn is_agent_work(message: &str, session: &str) -> bool {
    let trailer = message
        .lines()
        .find_map(|l| l.strip_prefix("Orchestrator-Session:"))
        .map(str::trim);
    match trailer {
        None => true,
        Some(id) => id == session && !message.starts_with("Session Wrap:"),
    }
}

/// `90`, `90s`, `500ms`, `15m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 90s, 15m, 2h)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// The values the agent's arguments may name.
pub struct Placeholders<'a> {
    pub brief: &'a str,
    pub session: &'a str,
    pub task: &'a str,
}

/// Fills `{brief}`, `{session}` and `{task}` into one argument. Each argument stays one
/// argument whatever it contains: no shell ever sees it.
pub fn expand(arg: &str, values: &Placeholders) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let (value, len) = if tail.starts_with("{brief}") {
            (values.brief, "{brief}".len())
        } else if tail.starts_with("{session}") {
            (values.session, "{session}".len())
        } else if tail.starts_with("{task}") {
            (values.task, "{task}".len())
        } else {
            ("{", 1)
        };
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// `--max-cost`: US dollars, above 0.
pub fn parse_usd(text: &str) -> Result<f64, String> {
    let dollars: f64 = text
        .trim()
        .trim_start_matches('$')
        .parse()
        .map_err(|_| format!("`{text}` is not an amount of US dollars (like 25 or 2.50)"))?;
    if dollars.is_finite() && dollars > 0.0 {
        Ok(dollars)
    } else {
        Err(format!("`{text}`: the amount must be above 0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stop_reason_has_its_own_exit_code() {
        let all = [
            StopReason::AllDone,
            StopReason::NothingReady,
            StopReason::MaxSessions,
            StopReason::MaxDuration,
            StopReason::StopFile,
            StopReason::Interrupted,
            StopReason::Terminated,
            StopReason::NoProgress,
            StopReason::AgentFailures,
            StopReason::MaxCost,
        ];
        let mut codes: Vec<u8> = all.iter().map(|r| r.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        // The contract's codes keep their meaning: 10 and 11 are budget levels, 4 is busy.
        assert!(!codes.iter().any(|c| [1, 2, 4, 10, 11].contains(c)));
    }

    #[test]
    fn the_breaker_trips_on_sessions_without_progress_or_failures_in_a_row() {
        let idle = SessionOutcome::default();
        let failed = SessionOutcome {
            failed: true,
            ..idle
        };
        let good = SessionOutcome {
            progressed: true,
            ..idle
        };
        let mut b = Breaker::new(3);
        assert_eq!(b.record(idle), None);
        assert_eq!(b.record(idle), None);
        assert_eq!(b.record(good), None, "progress resets the count");
        assert_eq!(b.record(idle), None);
        assert_eq!(b.record(idle), None);
        assert_eq!(b.record(idle), Some(StopReason::NoProgress));

        let mut b = Breaker::new(2);
        let failed_but_progressed = SessionOutcome {
            progressed: true,
            ..failed
        };
        assert_eq!(b.record(failed_but_progressed), None);
        assert_eq!(
            b.record(failed_but_progressed),
            Some(StopReason::AgentFailures)
        );

        let mut b = Breaker::with_limits(5, 1);
        assert_eq!(b.record(idle), None, "separate thresholds");
        assert_eq!(b.record(failed), Some(StopReason::AgentFailures));
        let carried = Breaker {
            without_progress: 2,
            ..Breaker::with_limits(2, 9)
        };
        assert_eq!(carried.tripped(), Some(StopReason::NoProgress));

        let mut b = Breaker::new(1);
        let limited = SessionOutcome {
            rate_limited: true,
            ..failed
        };
        assert_eq!(b.record(limited), None, "a rate limit is not a failure");
    }

    #[test]
    fn rate_limits_are_recognised_by_code_or_text_and_backoff_doubles() {
        let settings = RunSettings {
            rate_limit_exit_codes: vec![75],
            ..RunSettings::default()
        };
        assert!(settings.is_rate_limited(Some(75), ""));
        assert!(settings.is_rate_limited(Some(1), "Error: Rate Limit exceeded"));
        assert!(!settings.is_rate_limited(Some(0), "hit a rate limit earlier, recovered"));
        assert!(!settings.is_rate_limited(Some(1), "segfault"));
        assert_eq!(settings.backoff(1), Duration::from_secs(60));
        assert_eq!(settings.backoff(2), Duration::from_secs(120));
        assert_eq!(settings.backoff(10), Duration::from_secs(3600));
        assert_eq!(settings.backoff(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn only_the_agents_own_commits_are_evidence() {
        let ours = "session_20251106_001355";
        assert!(is_agent_work("Fix the importer\n", ours));
        assert!(is_agent_work(
            &format!("Checkpoint: t: x\n\nOrchestrator-Session: {ours}\n"),
            ours
        ));
        assert!(!is_agent_work(
            &format!("Session Wrap: t\n\nOrchestrator-Session: {ours}\n"),
            ours
        ));
        assert!(!is_agent_work(
            "Checkpoint: u: y\n\nOrchestrator-Session: session_20251106_001355_2\n",
            ours
        ));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn placeholders_fill_in_without_splitting_arguments() {
        let values = Placeholders {
            brief: "do it; rm -rf / $(x)",
            session: "session_1",
            task: "t1",
        };
        assert_eq!(expand("-p={brief}", &values), "-p=do it; rm -rf / $(x)");
        assert_eq!(
            expand("{session}/{task}/{other}{", &values),
            "session_1/t1/{other}{"
        );
    }
}

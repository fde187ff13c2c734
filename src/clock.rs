//! The clock, replaceable with `ORCHESTRATOR_NOW` so tests can move time.

use anyhow::Result;
use chrono::{DateTime, SubsecRound, Utc};

use crate::error::Failure;

pub const NOW_VAR: &str = "ORCHESTRATOR_NOW";
/// A file: when set, `sleep` appends the requested seconds to it and returns at once, so tests
/// check a quota wait of hours without waiting.
pub const SLEEP_LOG_VAR: &str = "ORCHESTRATOR_SLEEP_LOG";

/// Whole seconds: session ids, handoffs and the stack all show second precision.
pub fn now() -> Result<DateTime<Utc>> {
    match std::env::var(NOW_VAR) {
        Ok(text) => parse(&text),
        Err(_) => Ok(Utc::now().trunc_subsecs(0)),
    }
}

/// Sleeps for `duration` (a real sleep unless `ORCHESTRATOR_SLEEP_LOG` is set), waking every
/// 100ms to ask `interrupted` whether to stop early; true when it slept the whole time.
pub fn sleep(duration: std::time::Duration, interrupted: impl Fn() -> bool) -> bool {
    if let Some(log) = std::env::var_os(SLEEP_LOG_VAR) {
        let line = format!("{}\n", duration.as_secs_f64());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(err) = written {
            tracing::warn!("{SLEEP_LOG_VAR}: {err}");
        }
        return !interrupted();
    }
    let until = std::time::Instant::now() + duration;
    while std::time::Instant::now() < until {
        if interrupted() {
            return false;
        }
        let left = until - std::time::Instant::now();
        std::thread::sleep(left.min(std::time::Duration::from_millis(100)));
    }
    true
}

/// `2025-11-06T00:13:55Z`: the one time format of every output.
pub fn format(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(0))
        .map_err(|err| Failure::user(format!("{NOW_VAR}={text:?} is not an RFC 3339 time: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offset_is_converted_to_utc() {
        let t = parse("2025-11-06T01:13:55+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2025-11-06T00:13:55+00:00");
        assert!(parse("yesterday").is_err());
    }
}

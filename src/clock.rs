//! The clock, replaceable with `ORCHESTRATOR_NOW` so tests can move time.

use anyhow::Result;
use chrono::{DateTime, SubsecRound, Utc};

use crate::error::Failure;

pub const NOW_VAR: &str = "ORCHESTRATOR_NOW";

/// Whole seconds: session ids, handoffs and the stack all show second precision.
pub fn now() -> Result<DateTime<Utc>> {
    match std::env::var(NOW_VAR) {
        Ok(text) => parse(&text),
        Err(_) => Ok(Utc::now().trunc_subsecs(0)),
    }
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

//! Budget levels: how close a session is to the end of its context or quota.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// No token figure: no `--tokens`, no readable transcript, nothing recorded. Above ok, so an
    /// agent that forgets the figure is told, and below warn, so a meter that is past its
    /// threshold still decides.
    Unknown,
    Warn,
    Shutdown,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Unknown => "unknown",
            Level::Warn => "warn",
            Level::Shutdown => "shutdown",
        }
    }

    /// The exit code of `checkpoint` and `status` at this level.
    pub fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Unknown => 12,
            Level::Warn => 10,
            Level::Shutdown => 11,
        }
    }

    /// The one sentence telling the agent what to do.
    pub fn action(self) -> &'static str {
        match self {
            Level::Ok => "Keep working and checkpoint after each unit of work.",
            Level::Unknown => {
                "The context in use is unknown: give it with `--tokens N` at each checkpoint, or start the session with `orchestrator start --transcript PATH` to have it read from the agent's transcript."
            }
            Level::Warn => {
                "Finish the current unit of work, checkpoint it, then run `orchestrator wrap`."
            }
            Level::Shutdown => "Stop now and run `orchestrator wrap`.",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Usage of one meter against its limit and thresholds (fractions of the limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub used: u64,
    pub limit: u64,
    pub warn: f64,
    pub shutdown: f64,
}

impl Usage {
    pub fn ratio(self) -> f64 {
        if self.limit == 0 {
            return f64::INFINITY;
        }
        // Division (not multiplying the threshold) keeps exact boundaries exact: 170000/200000
        // is the same double as the literal 0.85.
        self.used as f64 / self.limit as f64
    }

    pub fn level(self) -> Level {
        let ratio = self.ratio();
        if ratio >= self.shutdown {
            Level::Shutdown
        } else if ratio >= self.warn {
            Level::Warn
        } else {
            Level::Ok
        }
    }

    /// Percent used, rounded to one decimal.
    pub fn pct(self) -> f64 {
        round1(self.ratio() * 100.0)
    }
}

/// The warning owed when the shutdown threshold is at or above the point where an agent
/// compacts its context on its own (`at`, stated by `setting`): the agent would lose its context
/// before being told to wrap. Only a stated point is checked: none is assumed.
pub fn compaction_conflict(shutdown: f64, at: f64, setting: &str) -> Option<String> {
    (shutdown >= at).then(|| {
        format!(
            "the shutdown threshold ({}%) is not below where the agent compacts its context on its own ({}%, {setting}): it would compact before it is told to wrap; lower settings.budget.shutdown or correct {setting}",
            format_pct(shutdown * 100.0),
            format_pct(at * 100.0)
        )
    })
}

pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// A percentage for humans: `75` rather than `75.0`, `71.5` otherwise.
pub fn format_pct(value: f64) -> String {
    let rounded = round1(value);
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: u64) -> Usage {
        Usage {
            used,
            limit: 200_000,
            warn: 0.75,
            shutdown: 0.85,
        }
    }

    #[test]
    fn levels_switch_exactly_at_the_thresholds() {
        assert_eq!(usage(0).level(), Level::Ok);
        assert_eq!(usage(143_000).level(), Level::Ok);
        assert_eq!(usage(149_999).level(), Level::Ok);
        assert_eq!(usage(150_000).level(), Level::Warn);
        assert_eq!(usage(169_999).level(), Level::Warn);
        assert_eq!(usage(170_000).level(), Level::Shutdown);
        assert_eq!(usage(400_000).level(), Level::Shutdown);
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        assert_eq!(
            [Level::Ok, Level::Unknown, Level::Warn, Level::Shutdown].map(Level::exit_code),
            [0, 12, 10, 11]
        );
        assert!(Level::Ok < Level::Unknown && Level::Unknown < Level::Warn);
    }

    #[test]
    fn a_shutdown_past_a_stated_compaction_point_is_flagged() {
        let warning =
            compaction_conflict(0.85, 0.835, "settings.agents.claude.compact_at").unwrap();
        assert!(warning.contains("(85%)"), "{warning}");
        assert!(
            warning.contains("(83.5%, settings.agents.claude.compact_at)"),
            "{warning}"
        );
        assert_eq!(compaction_conflict(0.80, 0.835, "x"), None);
        assert_eq!(compaction_conflict(0.85, 0.9, "x"), None);
        assert!(compaction_conflict(0.9, 0.9, "x").is_some());
    }

    #[test]
    fn percentages_round_to_one_decimal() {
        assert_eq!(usage(143_000).pct(), 71.5);
        assert_eq!(usage(152_340).pct(), 76.2);
        assert_eq!(format_pct(75.0), "75");
        assert_eq!(format_pct(71.5), "71.5");
        assert_eq!(format_pct(0.85 * 100.0), "85");
    }
}

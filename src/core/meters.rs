//! Meters: what a session uses up, against a limit with a warn and a shutdown threshold.
//!
//! The token budget (`settings.budget`) is always the meter named `tokens`. `settings.meters`
//! adds others: a `gauge` holds the latest value reported (a context fill), a `counter` adds up
//! what is reported (API calls, batch slots). A meter whose `source` is `transcript` is read from
//! the agent's transcript instead of `checkpoint --usage`: a gauge takes the context fill, a
//! counter the total tokens of the session. `settings.agents` binds an agent to the meters that
//! apply to its sessions; an agent it does not name gets every meter. The session's level is
//! the worst level over the meters that apply.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use super::budget::{Level, Usage};
use super::ids::check_task_id;

/// The name under which the token budget appears among the meters.
pub const TOKENS: &str = "tokens";
/// A counter of this name read from the transcript counts US dollars: the session's cost.
pub const COST_USD: &str = "cost_usd";
/// A dollar meter keeps millionths of a dollar, so its ratio to the limit is exact enough.
const MICRO: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    /// The latest value counts.
    Gauge,
    /// Values add up over the session.
    #[default]
    Counter,
}

impl MeterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeterKind::Gauge => "gauge",
            MeterKind::Counter => "counter",
        }
    }

    /// The meter's value after `reported` arrives on top of `current`.
    pub fn record(self, current: u64, reported: u64) -> u64 {
        match self {
            MeterKind::Gauge => reported,
            MeterKind::Counter => current.saturating_add(reported),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterSource {
    /// Fed by `checkpoint --usage NAME=N`.
    #[default]
    Usage,
    /// Read from the agent's transcript.
    Transcript,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterSettings {
    pub limit: u64,
    #[serde(default = "default_warn")]
    pub warn: f64,
    #[serde(default = "default_shutdown")]
    pub shutdown: f64,
    #[serde(default)]
    pub kind: MeterKind,
    #[serde(default)]
    pub source: MeterSource,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_warn() -> f64 {
    0.75
}

fn default_shutdown() -> f64 {
    0.85
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// The meters (by name) that apply to this agent's sessions, besides `tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meters: Option<Vec<String>>,
    /// Where this agent compacts its context on its own, as a fraction of the budget. Unset by
    /// default: no agent documents a fixed point (Claude Code's depends on the model and the
    /// user's settings), so nothing is assumed and nothing is warned about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_at: Option<f64>,
    /// What the agent's session-start hook does when no session of the agent is live.
    #[serde(default, skip_serializing_if = "OnSessionStart::is_default")]
    pub on_session_start: OnSessionStart,
    /// What the agent's session-end hook does with the agent's live session.
    #[serde(default, skip_serializing_if = "OnSessionEnd::is_default")]
    pub on_session_end: OnSessionEnd,
    /// The account whose quota the agent draws on: on a fleet store, a rate limit one loop
    /// meets pauses every loop of every agent with the same account. Default: the agent's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `settings.agents.<name>.on_session_start`: opening the agent in the project claims a task
/// only when asked to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSessionStart {
    /// The brief of the agent's live session (one `run` or `start` opened); nothing otherwise.
    #[default]
    Brief,
    /// Like `brief`, and with no live session, start one on the next task.
    Start,
}

impl OnSessionStart {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `settings.agents.<name>.on_session_end`: closing the agent does not hold its task for a
/// whole lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSessionEnd {
    /// End the session's lease now: the task is free at once, and the next `start` wraps the
    /// session (handoff, commit) as it does any session whose lease ran out.
    #[default]
    Release,
    /// Wrap the session (backup, handoff, commit) in the hook.
    Wrap,
    /// Leave the session as it is, for its lease.
    Keep,
}

impl OnSessionEnd {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A JSON object whose keys keep their file order through a rewrite, with typed values.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<V>(pub Vec<(String, V)>);

impl<V> Default for Named<V> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<V> Named<V> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Replaces the value of `name`, or appends it.
    pub fn set(&mut self, name: String, value: V) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl<V: Serialize> Serialize for Named<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Named<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for NamedVisitor<V> {
            type Value = Named<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object keyed by name")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<V>, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!(
                            "`{key}` is defined twice"
                        )));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Named(entries))
            }
        }
        deserializer.deserialize_map(NamedVisitor(PhantomData))
    }
}

/// Checks `settings.meters` and `settings.agents`; the message names the setting at fault.
pub fn validate(
    meters: &Named<MeterSettings>,
    agents: &Named<AgentSettings>,
) -> Result<(), String> {
    for (name, meter) in meters.iter() {
        if name == TOKENS {
            return Err(format!(
                "settings.meters.{TOKENS}: `{TOKENS}` is the token budget; set it in settings.budget"
            ));
        }
        check_task_id(name).map_err(|e| format!("settings.meters: meter name {e}"))?;
        if meter.limit == 0 {
            return Err(format!("settings.meters.{name}.limit must be above 0"));
        }
        if is_cost_meter(name, meter) && meter.kind != MeterKind::Counter {
            return Err(format!(
                "settings.meters.{name}: a `{COST_USD}` meter read from the transcript counts the session's dollars; its kind is `counter`"
            ));
        }
        check_thresholds(
            &format!("settings.meters.{name}"),
            meter.warn,
            meter.shutdown,
        )?;
    }
    for (agent, binding) in agents.iter() {
        if let Some(at) = binding.compact_at {
            check_compact_at(&format!("settings.agents.{agent}.compact_at"), at)?;
        }
        for meter in binding.meters.iter().flatten() {
            if meter != TOKENS && meters.get(meter).is_none() {
                return Err(format!(
                    "settings.agents.{agent}.meters names unknown meter `{}`",
                    meter.escape_debug()
                ));
            }
        }
    }
    Ok(())
}

/// A compaction point is a fraction of the budget in (0, 1].
pub fn check_compact_at(setting: &str, at: f64) -> Result<(), String> {
    if at > 0.0 && at <= 1.0 {
        Ok(())
    } else {
        Err(format!(
            "{setting} is {at}; it is a fraction of the budget above 0 and at most 1 (0.835 = 83.5%)"
        ))
    }
}

/// Thresholds are fractions in (0, 1], warn below shutdown.
pub fn check_thresholds(setting: &str, warn: f64, shutdown: f64) -> Result<(), String> {
    for (name, value) in [("warn", warn), ("shutdown", shutdown)] {
        if !(value > 0.0 && value <= 1.0) {
            return Err(format!(
                "{setting}.{name} is {value}; thresholds are fractions above 0 and at most 1 (0.75 = 75%)"
            ));
        }
    }
    if warn >= shutdown {
        return Err(format!(
            "{setting}.warn ({warn}) must be below {setting}.shutdown ({shutdown})"
        ));
    }
    Ok(())
}

/// The meters from `settings.meters` that apply to `agent`'s sessions, in file order.
pub fn applicable<'a>(
    meters: &'a Named<MeterSettings>,
    agents: &Named<AgentSettings>,
    agent: &str,
) -> Vec<(&'a str, &'a MeterSettings)> {
    let bound = agents.get(agent).and_then(|a| a.meters.as_ref());
    meters
        .iter()
        .filter(|(name, _)| bound.is_none_or(|names| names.iter().any(|n| n == name)))
        .collect()
}

/// `NAME=N` from the command line.
pub fn parse_usage(arg: &str) -> Result<(String, u64), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}` is not NAME=N"))?;
    let name = name.trim();
    check_task_id(name).map_err(|e| format!("meter name {e}"))?;
    let value = value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("`{arg}`: the value must be a whole number of 0 or more"))?;
    Ok((name.to_string(), value))
}

/// One meter's standing in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterStatus {
    pub name: String,
    pub kind: MeterKind,
    pub usage: Usage,
    /// Where the figure came from: `explicit`, `transcript`, `usage` or `none`.
    pub source: String,
    /// The meter counts dollars ([`COST_USD`]): `usage` holds millionths of a dollar.
    pub dollars: bool,
}

impl MeterStatus {
    pub fn level(&self) -> Level {
        self.usage.level()
    }

    /// The value used, for JSON: dollars for a dollar meter.
    pub fn used_value(&self) -> serde_json::Value {
        if self.dollars {
            serde_json::json!(self.usage.used as f64 / MICRO as f64)
        } else {
            serde_json::json!(self.usage.used)
        }
    }

    /// The limit, for JSON: dollars for a dollar meter.
    pub fn limit_value(&self) -> serde_json::Value {
        if self.dollars {
            serde_json::json!(self.usage.limit / MICRO)
        } else {
            serde_json::json!(self.usage.limit)
        }
    }

    /// The value used, for text: `3.2101` dollars, or the count.
    pub fn used_text(&self) -> String {
        if self.dollars {
            format!("{:.4}", self.usage.used as f64 / MICRO as f64)
        } else {
            self.usage.used.to_string()
        }
    }

    /// The limit, for text.
    pub fn limit_text(&self) -> String {
        self.limit_value().to_string()
    }
}

/// Whether a meter counts the session's cost in dollars.
pub fn is_cost_meter(name: &str, meter: &MeterSettings) -> bool {
    name == COST_USD && meter.source == MeterSource::Transcript
}

/// Figures the transcript gave, for meters whose source is the transcript.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TranscriptFigures {
    pub fill: Option<u64>,
    /// The session's total tokens, its subagents' included.
    pub cumulative: u64,
    /// The part of `cumulative` its subagents spent.
    pub subagent: u64,
    /// What the priced models' tokens cost, in US dollars; `None` when nothing was priced.
    pub cost_usd: Option<f64>,
}

/// The standing of every meter of `settings.meters` that applies, from the session's recorded
/// values and, for transcript meters, the transcript's figures.
pub fn evaluate(
    meters: &[(&str, &MeterSettings)],
    recorded: &BTreeMap<String, u64>,
    transcript: Option<TranscriptFigures>,
) -> Vec<MeterStatus> {
    meters
        .iter()
        .map(|(name, meter)| {
            let dollars = is_cost_meter(name, meter);
            let (used, source) = match meter.source {
                MeterSource::Usage => match recorded.get(*name) {
                    Some(value) => (*value, "usage"),
                    None => (0, "none"),
                },
                MeterSource::Transcript if dollars => match transcript.and_then(|t| t.cost_usd) {
                    Some(cost) => ((cost * MICRO as f64).round() as u64, "transcript"),
                    None => (0, "none"),
                },
                MeterSource::Transcript => match (transcript, meter.kind) {
                    (Some(t), MeterKind::Gauge) => (t.fill.unwrap_or(0), "transcript"),
                    (Some(t), MeterKind::Counter) => (t.cumulative, "transcript"),
                    (None, _) => (0, "none"),
                },
            };
            let scale = if dollars { MICRO } else { 1 };
            MeterStatus {
                name: name.to_string(),
                kind: meter.kind,
                usage: Usage {
                    used,
                    limit: meter.limit.saturating_mul(scale),
                    warn: meter.warn,
                    shutdown: meter.shutdown,
                },
                source: source.to_string(),
                dollars,
            }
        })
        .collect()
}

/// The meter that decides the level: the first at the worst level, or `None` when all are ok.
pub fn limiting(statuses: &[MeterStatus]) -> Option<&MeterStatus> {
    let worst = statuses.iter().map(MeterStatus::level).max()?;
    (worst > Level::Ok)
        .then(|| statuses.iter().find(|s| s.level() == worst))
        .flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cost_meter_counts_dollars_against_a_dollar_limit() {
        let m = meters(r#"{"cost_usd": {"limit": 2, "source": "transcript"}}"#);
        let applicable = applicable(&m, &Named::default(), "any");
        let figures = |cost_usd| TranscriptFigures {
            fill: Some(900),
            cumulative: 5_000_000,
            subagent: 0,
            cost_usd,
        };
        let status = &evaluate(&applicable, &BTreeMap::new(), Some(figures(Some(1.6))))[0];
        assert!(status.dollars);
        assert_eq!(
            (status.used_text(), status.limit_text()),
            ("1.6000".into(), "2".into())
        );
        assert_eq!(status.level(), Level::Warn);
        let unpriced = &evaluate(&applicable, &BTreeMap::new(), Some(figures(None)))[0];
        assert_eq!((unpriced.usage.used, unpriced.source.as_str()), (0, "none"));
        let gauge =
            meters(r#"{"cost_usd": {"limit": 2, "kind": "gauge", "source": "transcript"}}"#);
        assert!(
            validate(&gauge, &Named::default())
                .unwrap_err()
                .contains("counter")
        );
    }

    use super::*;

    fn meters(json: &str) -> Named<MeterSettings> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn counters_add_and_gauges_replace() {
        assert_eq!(MeterKind::Counter.record(10, 5), 15);
        assert_eq!(MeterKind::Counter.record(u64::MAX, 5), u64::MAX);
        assert_eq!(MeterKind::Gauge.record(10, 5), 5);
    }

    #[test]
    fn named_keeps_file_order_and_refuses_duplicates() {
        let m = meters(r#"{"zeta": {"limit": 5}, "alpha": {"limit": 7, "kind": "gauge"}}"#);
        let names: Vec<&str> = m.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        assert_eq!(m.get("alpha").unwrap().kind, MeterKind::Gauge);
        assert_eq!(m.get("zeta").unwrap().warn, 0.75);
        let out = serde_json::to_string(&m).unwrap();
        assert!(
            out.find("zeta").unwrap() < out.find("alpha").unwrap(),
            "{out}"
        );
        let err = serde_json::from_str::<Named<MeterSettings>>(
            r#"{"a": {"limit": 1}, "a": {"limit": 2}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`a` is defined twice"), "{err}");
    }

    #[test]
    fn validation_names_the_setting() {
        let agents = Named::default();
        let check = |json: &str| validate(&meters(json), &agents).unwrap_err();
        assert!(check(r#"{"tokens": {"limit": 1}}"#).contains("settings.budget"));
        assert!(check(r#"{"calls": {"limit": 0}}"#).contains("settings.meters.calls.limit"));
        assert!(
            check(r#"{"calls": {"limit": 9, "warn": 0.9, "shutdown": 0.8}}"#)
                .contains("settings.meters.calls.warn (0.9) must be below")
        );
        assert!(check(r#"{"bad name": {"limit": 9}}"#).contains("meter name"));
        let agents: Named<AgentSettings> =
            serde_json::from_str(r#"{"droid": {"meters": ["nope"]}}"#).unwrap();
        let err = validate(&meters(r#"{"calls": {"limit": 9}}"#), &agents).unwrap_err();
        assert_eq!(
            err,
            "settings.agents.droid.meters names unknown meter `nope`"
        );
    }

    #[test]
    fn agents_are_bound_to_their_meters_and_others_get_all() {
        let m = meters(r#"{"calls": {"limit": 9}, "slots": {"limit": 3}}"#);
        let agents: Named<AgentSettings> =
            serde_json::from_str(r#"{"droid": {"meters": ["slots"]}, "codex": {"meters": []}}"#)
                .unwrap();
        let names = |agent| -> Vec<&str> {
            applicable(&m, &agents, agent)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(names("droid"), ["slots"]);
        assert!(names("codex").is_empty());
        assert_eq!(names("claude"), ["calls", "slots"]);
    }

    #[test]
    fn usage_arguments_parse() {
        assert_eq!(parse_usage("api_calls=12"), Ok(("api_calls".into(), 12)));
        assert!(parse_usage("api_calls").unwrap_err().contains("NAME=N"));
        assert!(
            parse_usage("api_calls=-1")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(parse_usage("=3").unwrap_err().contains("meter name"));
    }

    #[test]
    fn evaluation_takes_recorded_and_transcript_figures() {
        let m = meters(
            r#"{"calls": {"limit": 100}, "fill": {"limit": 1000, "kind": "gauge", "source": "transcript"},
                "total": {"limit": 10000, "source": "transcript"}}"#,
        );
        let applicable = applicable(&m, &Named::default(), "any");
        let recorded = BTreeMap::from([("calls".to_string(), 80)]);
        let figures = TranscriptFigures {
            fill: Some(900),
            cumulative: 5000,
            subagent: 0,
            cost_usd: None,
        };
        let statuses = evaluate(&applicable, &recorded, Some(figures));
        let got: Vec<(u64, &str, Level)> = statuses
            .iter()
            .map(|s| (s.usage.used, s.source.as_str(), s.level()))
            .collect();
        assert_eq!(
            got,
            [
                (80, "usage", Level::Warn),
                (900, "transcript", Level::Shutdown),
                (5000, "transcript", Level::Ok)
            ]
        );
        assert_eq!(limiting(&statuses).unwrap().name, "fill");
        let none = evaluate(&applicable, &BTreeMap::new(), None);
        assert!(none.iter().all(|s| s.usage.used == 0 && s.source == "none"));
        assert!(limiting(&none).is_none());
    }
}

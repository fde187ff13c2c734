//! `orchestrator report`'s figures: what each session did and cost, summed per task, per agent
//! and per day, with the cost of a unit of progress and an ETA at the recent rate.
//!
//! The ETA of a task is its remaining units at the rate of its last [`RECENT`] sessions that
//! worked on it (units done over their working time), from now; the stack's is every open task's
//! remaining units at the rate of the last [`RECENT`] sessions of any task, one agent at a time.
//! No rate (no session made progress yet) means no ETA, never a guess.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

use super::budget::{Level, Usage};
use super::session::Session;
use super::stack::{BudgetSettings, Status, Task};

/// How many of the latest sessions set the recent rate.
pub const RECENT: usize = 5;

/// One session as the report sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionFacts {
    pub session: String,
    pub agent: String,
    pub task: String,
    pub started: DateTime<Utc>,
    /// The end of its work: the wrap's, or its last sign of life while live.
    pub ended: DateTime<Utc>,
    pub live: bool,
    pub progress_from: u64,
    pub progress_to: u64,
    pub total: u64,
    /// Tokens spent (every model's, from the transcript), when the transcript was read.
    pub tokens: Option<u64>,
    /// Dollars, `None` when nothing was priced.
    pub cost_usd: Option<f64>,
    /// Some tokens had no price: `cost_usd` leaves them out.
    pub unpriced: bool,
    /// The highest budget level its token figures reached; `unknown` without any.
    pub level: Level,
    /// How it ended: `wrapped`, `recovered`, `agent-exited`..., or `live`.
    pub ending: String,
    /// The task's units done over the session: (time, units), the start first.
    pub points: Vec<(DateTime<Utc>, u64)>,
}

impl SessionFacts {
    pub fn of(session: &Session, now: DateTime<Utc>, budget: &BudgetSettings) -> SessionFacts {
        let journal = session.wrap.as_ref();
        let from = session.progress_at_start;
        let to = journal.and_then(|j| j.progress).map_or_else(
            || session.checkpoints.last().map_or(from.done, |c| c.progress),
            |p| p.done,
        );
        let total = journal
            .and_then(|j| j.progress)
            .map_or(from.total, |p| p.total);
        let peak = session
            .checkpoints
            .iter()
            .filter_map(|c| c.tokens)
            .chain(session.tokens.as_ref().map(|t| t.used))
            .max();
        let level = peak.map_or(Level::Unknown, |used| {
            Usage {
                used,
                limit: session.budget,
                warn: budget.warn,
                shutdown: budget.shutdown,
            }
            .level()
        });
        let cost = session.cost.as_ref();
        let mut points = vec![(session.started, from.done)];
        points.extend(session.checkpoints.iter().map(|c| (c.at, c.progress)));
        let ended = journal.map_or_else(|| session.last_activity().max(now), |j| j.ended);
        if journal.is_some() {
            points.push((ended, to));
        }
        SessionFacts {
            session: session.id.clone(),
            agent: session.agent.clone(),
            task: session.task.clone(),
            started: session.started,
            ended,
            live: journal.is_none(),
            progress_from: from.done,
            progress_to: to,
            total,
            tokens: cost.map(|c| c.total_tokens()),
            cost_usd: cost.and_then(|c| c.cost_usd),
            unpriced: cost.is_some_and(|c| c.unpriced_tokens > 0),
            level,
            ending: match journal {
                Some(j) if j.reason == "wrap" => "wrapped".into(),
                Some(j) => j.reason.clone(),
                None => "live".into(),
            },
            points,
        }
    }

    /// Units done in the session (a correction downward counts as none).
    pub fn units(&self) -> u64 {
        self.progress_to.saturating_sub(self.progress_from)
    }

    pub fn duration(&self) -> Duration {
        (self.ended - self.started).max(Duration::zero())
    }
}

/// Sums over a group of sessions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub sessions: usize,
    pub units: u64,
    /// Tokens of the sessions whose transcript was read.
    pub tokens: u64,
    /// Dollars of the priced sessions; `None` when none was priced.
    pub cost_usd: Option<f64>,
    /// Sessions with tokens left unpriced or no cost figure at all.
    pub incomplete_cost: usize,
}

impl Totals {
    fn add(&mut self, s: &SessionFacts) {
        self.sessions += 1;
        self.units += s.units();
        self.tokens += s.tokens.unwrap_or(0);
        if let Some(cost) = s.cost_usd {
            *self.cost_usd.get_or_insert(0.0) += cost;
        }
        if s.cost_usd.is_none() || s.unpriced {
            self.incomplete_cost += 1;
        }
    }

    /// Dollars per unit of progress, when both are known.
    pub fn cost_per_unit(&self) -> Option<f64> {
        self.cost_usd
            .filter(|_| self.units > 0)
            .map(|c| c / self.units as f64)
    }
}

/// A task's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub title: String,
    pub status: Status,
    pub done: u64,
    pub total: u64,
    #[serde(flatten)]
    pub totals: Totals,
    pub cost_per_unit: Option<f64>,
    /// Units per hour of work over its recent sessions.
    pub rate_per_hour: Option<f64>,
    /// When it would be done at that rate (now when it is done).
    pub eta: Option<DateTime<Utc>>,
}

/// A line per agent or per day.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub key: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub cost_per_unit: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tasks: Vec<TaskRow>,
    pub agents: Vec<GroupRow>,
    pub days: Vec<GroupRow>,
    pub total: Totals,
    /// Units left over the open tasks shown.
    pub remaining: u64,
    pub rate_per_hour: Option<f64>,
    /// When the stack would be done at the recent rate.
    pub eta: Option<DateTime<Utc>>,
    pub sessions: Vec<SessionFacts>,
}

/// Units per hour over the latest [`RECENT`] sessions among `sessions` (sorted by start).
fn recent_rate<'a>(sessions: impl DoubleEndedIterator<Item = &'a SessionFacts>) -> Option<f64> {
    let recent: Vec<&SessionFacts> = sessions.rev().take(RECENT).collect();
    let units: u64 = recent.iter().map(|s| s.units()).sum();
    let seconds: i64 = recent.iter().map(|s| s.duration().num_seconds()).sum();
    (units > 0 && seconds > 0).then(|| units as f64 * 3600.0 / seconds as f64)
}

fn eta(remaining: u64, rate: Option<f64>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if remaining == 0 {
        return Some(now);
    }
    let hours = remaining as f64 / rate?;
    let seconds = (hours * 3600.0).ceil();
    (seconds < 1e12).then(|| now + Duration::seconds(seconds as i64))
}

/// The report over `sessions` (any order) of `tasks` (stack order, already filtered).
pub fn build(mut sessions: Vec<SessionFacts>, tasks: &[&Task], now: DateTime<Utc>) -> Report {
    sessions.sort_by(|a, b| (a.started, &a.session).cmp(&(b.started, &b.session)));
    let mut total = Totals::default();
    let mut agents: BTreeMap<String, Totals> = BTreeMap::new();
    let mut days: BTreeMap<String, Totals> = BTreeMap::new();
    for s in &sessions {
        total.add(s);
        agents.entry(s.agent.clone()).or_default().add(s);
        days.entry(s.started.format("%Y-%m-%d").to_string())
            .or_default()
            .add(s);
    }
    let rows = tasks
        .iter()
        .map(|task| {
            let mut totals = Totals::default();
            let own = || sessions.iter().filter(|s| s.task == task.id);
            own().for_each(|s| totals.add(s));
            let rate = recent_rate(own().filter(|s| s.units() > 0 || !s.live));
            let remaining = task.progress.total.saturating_sub(task.progress.done);
            let open = matches!(task.status, Status::Pending | Status::InProgress);
            TaskRow {
                task: task.id.clone(),
                title: task.title.clone(),
                status: task.status,
                done: task.progress.done,
                total: task.progress.total,
                cost_per_unit: totals.cost_per_unit(),
                totals,
                rate_per_hour: rate,
                eta: if open || remaining == 0 {
                    eta(remaining, rate, now)
                } else {
                    None
                },
            }
        })
        .collect::<Vec<_>>();
    let remaining = tasks
        .iter()
        .filter(|t| matches!(t.status, Status::Pending | Status::InProgress))
        .map(|t| t.progress.total.saturating_sub(t.progress.done))
        .sum();
    let rate = recent_rate(sessions.iter().filter(|s| s.units() > 0 || !s.live));
    let group = |(key, totals): (String, Totals)| GroupRow {
        key,
        cost_per_unit: totals.cost_per_unit(),
        totals,
    };
    Report {
        tasks: rows,
        agents: agents.into_iter().map(group).collect(),
        days: days.into_iter().map(group).collect(),
        total,
        remaining,
        rate_per_hour: rate,
        eta: eta(remaining, rate, now),
        sessions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn facts(task: &str, start_h: i64, hours: i64, units: u64, cost: Option<f64>) -> SessionFacts {
        let t0 = Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap();
        SessionFacts {
            session: format!("s{start_h}"),
            agent: "claude".into(),
            task: task.into(),
            started: t0 + Duration::hours(start_h),
            ended: t0 + Duration::hours(start_h + hours),
            live: false,
            progress_from: 0,
            progress_to: units,
            total: 10,
            tokens: Some(1000),
            cost_usd: cost,
            unpriced: false,
            level: Level::Ok,
            ending: "wrapped".into(),
            points: vec![],
        }
    }

    fn task(id: &str, done: u64, total: u64) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": "in_progress", "progress": {"done": done, "total": total}
        }))
        .unwrap()
    }

    #[test]
    fn cost_per_unit_and_eta_at_the_recent_rate() {
        let now = Utc.with_ymd_and_hms(2025, 11, 7, 0, 0, 0).unwrap();
        let a = task("a", 4, 10);
        let sessions = vec![
            facts("a", 0, 1, 2, Some(1.0)),
            facts("a", 2, 1, 2, Some(3.0)),
        ];
        let report = build(sessions, &[&a], now);
        let row = &report.tasks[0];
        assert_eq!((row.totals.sessions, row.totals.units), (2, 4));
        assert_eq!(row.cost_per_unit, Some(1.0));
        assert_eq!(row.rate_per_hour, Some(2.0));
        assert_eq!(row.eta, Some(now + Duration::hours(3)));
        assert_eq!(report.days.len(), 1);
        assert_eq!(report.agents[0].totals.cost_usd, Some(4.0));
    }

    #[test]
    fn no_progress_no_eta_and_an_unpriced_session_is_counted_as_incomplete() {
        let now = Utc.with_ymd_and_hms(2025, 11, 7, 0, 0, 0).unwrap();
        let a = task("a", 0, 10);
        let report = build(vec![facts("a", 0, 1, 0, None)], &[&a], now);
        assert_eq!(report.tasks[0].eta, None);
        assert_eq!(report.total.cost_usd, None);
        assert_eq!(report.total.incomplete_cost, 1);
        assert_eq!(report.eta, None);
    }
}

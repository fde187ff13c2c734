//! `orchestrator log`: the wrapped sessions, newest first, read from the session archive.

use anyhow::{Context as _, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use serde_json::{Value, json};

use super::Context;
use super::output::{Quiet, Shape};
use crate::clock;
use crate::core::budget::format_pct;
use crate::core::session::Session;
use crate::core::stack::Progress;
use crate::error::{Failure, code};
use crate::wrap::handoff::{WRAP_SUBJECT_PREFIX, ending};
use std::collections::HashMap;

/// The wrapped sessions, newest first: when, agent, task, progress, tokens, how it ended, commit
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only the sessions of this task
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Only the sessions of this agent
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Only sessions that ended at or after this: a date (2025-11-06), an RFC 3339 time, or a
    /// duration back from now (12h, 7d)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many sessions
    #[arg(short = 'n', long = "max-count", value_name = "N")]
    pub max_count: Option<usize>,
}

/// One archived session as `log` shows it.
struct Entry {
    session: Session,
    ended: DateTime<Utc>,
}

pub fn run(ctx: &Context, args: LogArgs) -> Result<u8> {
    let since = args
        .since
        .as_deref()
        .map(|text| parse_since(text, ctx.now).map_err(|e| Failure::user(format!("--since: {e}"))))
        .transpose()?;
    let ws = ctx.workspace()?;
    let dir = ws.archive_dir();
    let mut entries = Vec::new();
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => Some(listing),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    for item in listing.into_iter().flatten() {
        let path = item
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Temp files of an interrupted write start with a dot.
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        // One unreadable record must not hide the whole history: it is named and skipped.
        let session = match ws.load_session(&path) {
            Ok(session) => session,
            Err(err) => {
                tracing::warn!("skipping {}: {err:#}", ws.display(&path));
                continue;
            }
        };
        let ended = session.wrap.as_ref().map_or(session.started, |j| j.ended);
        entries.push(Entry { session, ended });
    }
    entries.retain(|e| {
        args.task.as_ref().is_none_or(|t| *t == e.session.task)
            && args.agent.as_ref().is_none_or(|a| *a == e.session.agent)
            && since.is_none_or(|since| e.ended >= since)
    });
    entries.sort_by(|a, b| {
        (b.ended, &b.session.started, &b.session.id).cmp(&(
            a.ended,
            &a.session.started,
            &a.session.id,
        ))
    });
    if let Some(n) = args.max_count {
        entries.truncate(n);
    }

    // Unknown outside git, or when git cannot be read: the commit column says so.
    let commits =
        crate::wrap::vcs::wrap_commits(ws.root(), WRAP_SUBJECT_PREFIX).unwrap_or_else(|err| {
            tracing::warn!("cannot read the wrap commits: {err:#}");
            Default::default()
        });
    let rows: Vec<Row> = entries.iter().map(|e| Row::of(e, &commits)).collect();
    let agent_width = rows.iter().map(|r| r.agent.len()).max().unwrap_or(0);
    let task_width = rows.iter().map(|r| r.task.len()).max().unwrap_or(0);
    let step_width = rows
        .iter()
        .map(|r| r.step.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for row in &rows {
        text.push_str(&format!(
            "{}  {:<agent_width$}  {:<task_width$}  {:<step_width$}  {:>6}  {}  {}\n",
            row.when, row.agent, row.task, row.step, row.tokens, row.ending, row.commit
        ));
    }
    if rows.is_empty() {
        eprintln!("no wrapped session matches");
    }
    let json = json!({"sessions": rows.iter().map(|r| r.json.clone()).collect::<Vec<_>>()});
    // The list is data: `--quiet` keeps all of it.
    let shape = Shape {
        quiet: Quiet::Text(text.clone()),
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, shape);
    Ok(code::OK)
}

struct Row {
    when: String,
    agent: String,
    task: String,
    step: String,
    tokens: String,
    ending: String,
    commit: String,
    json: Value,
}

impl Row {
    fn of(entry: &Entry, commits: &HashMap<String, String>) -> Row {
        let session = &entry.session;
        let journal = session.wrap.as_ref();
        let from = session.progress_at_start;
        // Records from before the journal kept the end progress: the last checkpoint's.
        let to = journal
            .and_then(|j| j.progress)
            .unwrap_or_else(|| Progress {
                done: session.checkpoints.last().map_or(from.done, |c| c.progress),
                total: from.total,
            });
        let pct = session.tokens.as_ref().and_then(|t| {
            (session.budget > 0).then(|| t.used as f64 * 100.0 / session.budget as f64)
        });
        let reason = journal.map_or("unknown", |j| j.reason.as_str());
        let commit = journal.and_then(|j| j.steps.commit.as_ref());
        let oid = commit
            .and_then(|c| c["oid"].as_str())
            .or_else(|| commits.get(&session.id).map(String::as_str));
        let commit_text = match (oid, commit.and_then(|c| c["result"].as_str())) {
            (Some(oid), _) => oid[..oid.len().min(12)].to_string(),
            (None, Some(result)) => result.replace('_', "-"),
            (None, None) => "-".into(),
        };
        let changes = journal.and_then(|j| j.changes.as_ref());
        Row {
            when: entry.ended.format("%Y-%m-%d %H:%M").to_string(),
            agent: session.agent.clone(),
            task: session.task.clone(),
            step: format!("{from} \u{2192} {to}"),
            tokens: pct.map_or("-".into(), |p| format!("{}%", format_pct(p))),
            ending: ending(reason),
            commit: commit_text,
            json: json!({
                "session": session.id,
                "agent": session.agent,
                "task": session.task,
                "started": clock::format(session.started),
                "ended": clock::format(entry.ended),
                "progress_from": from,
                "progress_to": to,
                "tokens_used": session.tokens.as_ref().map(|t| t.used),
                "cost_usd": session.cost.as_ref().and_then(|c| c.cost_usd).map(crate::core::pricing::round_usd),
                "tokens_pct": pct.map(|p| (p * 10.0).round() / 10.0),
                "reason": reason,
                "summary": journal.and_then(|j| j.summary.clone()),
                "handoff": journal.and_then(|j| j.steps.handoff.clone()),
                "commit": oid,
                "files_changed": changes.map(|c| c.files_changed),
                "commits": changes.map(|c| c.commits),
            }),
        }
    }
}

/// `--since`: an RFC 3339 time, a date (midnight UTC), or a duration back from `now`.
pub(super) fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    let back = crate::core::run::parse_duration(text).map_err(|_| {
        format!("`{text}` is not a date (2025-11-06), an RFC 3339 time or a duration (12h, 7d)")
    })?;
    chrono::Duration::from_std(back)
        .ok()
        .and_then(|back| now.checked_sub_signed(back))
        .ok_or_else(|| format!("`{text}` reaches too far back"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_takes_times_dates_and_durations() {
        let now = Utc.with_ymd_and_hms(2025, 11, 6, 12, 0, 0).unwrap();
        assert_eq!(
            parse_since("2025-11-01T08:30:00+01:00", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 11, 1, 7, 30, 0).unwrap()
        );
        assert_eq!(
            parse_since("2025-11-01", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 11, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("7d", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 10, 30, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("12h", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap()
        );
        assert!(parse_since("last week", now).is_err());
    }
}

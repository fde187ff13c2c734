//! `orchestrator report`: work done and what it cost, per task, per agent and per day, with an
//! ETA; in a terminal as tables with small bars, as JSON, or as one HTML page with charts.

use anyhow::{Context as _, Result};
use clap::Args;
use std::path::PathBuf;

use super::Context;
use super::output::{Quiet, Shape};
use crate::core::pricing::format_usd;
use crate::core::report::{self, GroupRow, Report, SessionFacts};
use crate::core::session::Session;
use crate::error::{Failure, code};
use crate::meters::kilo;
use crate::store::Workspace;

/// Work done and what it cost: per task (progress, tokens, cost per unit, ETA), per agent, per day
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only sessions that ended at or after this: a date (2025-11-06), an RFC 3339 time, or a
    /// duration back from now (12h, 7d)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only this task (repeatable)
    #[arg(long, value_name = "ID")]
    pub task: Vec<String>,
    /// Also write the report as one self-contained HTML page with charts to FILE
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Every machine's sessions, from the fleet store (wrapped ones; the live ones of this
    /// machine), instead of this machine's
    #[arg(long)]
    pub fleet: bool,
}

pub fn run(ctx: &Context, args: ReportArgs) -> Result<u8> {
    let since = args
        .since
        .as_deref()
        .map(|text| {
            super::log::parse_since(text, ctx.now)
                .map_err(|e| Failure::user(format!("--since: {e}")))
        })
        .transpose()?;
    let ws = ctx.workspace()?;
    let stack = ws.load_stack()?;
    if let Some(unknown) = args.task.iter().find(|id| stack.task(id).is_none()) {
        return Err(Failure::user(format!(
            "--task {unknown}: {} has no task `{unknown}`",
            ws.stack_path().display()
        )));
    }
    let budget = &stack.settings.budget;
    let recorded = if args.fleet {
        let Some(fleet) = ws.fleet() else {
            return Err(Failure::user(
                "report --fleet: this workspace is on the file store; the fleet's sessions are in a fleet store (see `orchestrator fleet init`)",
            ));
        };
        let mut sessions = ws.active_sessions()?;
        sessions.extend(ws.fleet_archived_sessions(fleet)?);
        sessions
    } else {
        all_sessions(&ws)?
    };
    let mut sessions: Vec<SessionFacts> = recorded
        .iter()
        .map(|s| SessionFacts::of(s, ctx.now, budget))
        .filter(|s| args.task.is_empty() || args.task.contains(&s.task))
        .filter(|s| since.is_none_or(|since| s.ended >= since))
        .collect();
    sessions.retain(|s| stack.task(&s.task).is_some() || args.task.is_empty());
    let tasks: Vec<_> = stack
        .tasks
        .iter()
        .filter(|t| args.task.is_empty() || args.task.contains(&t.id))
        .collect();
    let report = report::build(sessions, &tasks, ctx.now);

    let mut json = serde_json::to_value(&report).context("serializing the report")?;
    if let Some(path) = &args.html {
        let title = format!(
            "orchestrator report: {}",
            ws.root().file_name().map_or_else(
                || ws.root().display().to_string(),
                |n| n.to_string_lossy().into()
            )
        );
        let page = crate::charts::page(&report, &title, ctx.now);
        write_atomically(path, page.as_bytes())?;
        json["html"] = serde_json::json!(path);
    }
    let text = terminal(&report);
    let shape = Shape {
        quiet: Quiet::Text(text.clone()),
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, shape);
    if let Some(path) = &args.html
        && !ctx.json
    {
        eprintln!("wrote {}", path.display());
    }
    Ok(code::OK)
}

/// Every session, archived and live; an unreadable record is named and skipped.
fn all_sessions(ws: &Workspace) -> Result<Vec<Session>> {
    let mut sessions = ws.active_sessions()?;
    let dir = ws.archive_dir();
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => Some(listing),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    for item in listing.into_iter().flatten() {
        let path = item
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        match ws.load_session(&path) {
            Ok(session) => sessions.push(session),
            Err(err) => tracing::warn!("skipping {}: {err:#}", ws.display(&path)),
        }
    }
    Ok(sessions)
}

/// Written beside the target and renamed over it: a reader never sees half a page.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Failure::user(format!("--html {}: not a file name", path.display())))?;
    let temp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&temp, bytes)
        .with_context(|| format!("--html: cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| {
        let _ = std::fs::remove_file(&temp);
        format!("--html: cannot write {}", path.display())
    })
}

/// A bar of `width` cells for `value` out of `max`, in eighths of a cell.
fn bar(value: f64, max: f64, width: usize) -> String {
    const PARTS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    if max.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || value.is_nan() || value <= 0.0
    {
        return " ".repeat(width);
    }
    let eighths = ((value / max).min(1.0) * (width * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTS[eighths % 8 - 1]);
    }
    let used = s.chars().count();
    s.push_str(&" ".repeat(width - used));
    s
}

fn usd(cost: Option<f64>, incomplete: usize) -> String {
    match cost {
        Some(c) if incomplete > 0 => format!("{}+", format_usd(c)),
        Some(c) => format_usd(c),
        // Nothing to price at all (no session) is no cost, not an unpriced one.
        None if incomplete == 0 => "-".into(),
        None => "unpriced".into(),
    }
}

/// Left-aligned first column, right-aligned others.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                out.push_str("  ");
            }
            if i == 0 || i + 1 == cells.len() {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn group_rows(rows: &[GroupRow]) -> Vec<Vec<String>> {
    let max = rows
        .iter()
        .map(|r| r.totals.cost_usd.unwrap_or(0.0))
        .fold(0.0, f64::max);
    rows.iter()
        .map(|r| {
            vec![
                r.key.clone(),
                r.totals.sessions.to_string(),
                r.totals.units.to_string(),
                kilo(r.totals.tokens),
                usd(r.totals.cost_usd, r.totals.incomplete_cost),
                r.cost_per_unit.map_or("-".into(), format_usd),
                bar(r.totals.cost_usd.unwrap_or(0.0), max, 12),
            ]
        })
        .collect()
}

fn terminal(report: &Report) -> String {
    let mut out = String::new();
    let task_rows: Vec<Vec<String>> = report
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                format!("{}/{}", t.done, t.total),
                bar(t.done as f64, t.total as f64, 10),
                t.totals.sessions.to_string(),
                kilo(t.totals.tokens),
                usd(t.totals.cost_usd, t.totals.incomplete_cost),
                t.cost_per_unit.map_or("-".into(), format_usd),
                t.eta
                    .map_or("-".into(), |at| at.format("%Y-%m-%d %H:%M").to_string()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "task",
            "progress",
            "",
            "sessions",
            "tokens",
            "cost",
            "per unit",
            "ETA (UTC)",
        ],
        &task_rows,
    ));
    let header = [
        "", "sessions", "units", "tokens", "cost", "per unit", "cost",
    ];
    let mut agents = header;
    agents[0] = "agent";
    out.push('\n');
    out.push_str(&table(&agents, &group_rows(&report.agents)));
    let mut days = header;
    days[0] = "day";
    out.push('\n');
    out.push_str(&table(&days, &group_rows(&report.days)));
    out.push('\n');
    out.push_str(&format!(
        "total: {} sessions, {} units, {} tokens, {}",
        report.total.sessions,
        report.total.units,
        kilo(report.total.tokens),
        usd(report.total.cost_usd, report.total.incomplete_cost)
    ));
    match (report.eta, report.remaining) {
        (_, 0) => out.push_str("; nothing left\n"),
        (Some(at), left) => out.push_str(&format!(
            "; {left} unit(s) left, done around {} UTC at the recent rate\n",
            at.format("%Y-%m-%d %H:%M")
        )),
        (None, left) => out.push_str(&format!("; {left} unit(s) left, no ETA yet\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_eighths() {
        assert_eq!(bar(1.0, 1.0, 4), "████");
        assert_eq!(bar(0.5, 1.0, 4), "██  ");
        assert_eq!(bar(1.0, 16.0, 2), "▏ ");
        assert_eq!(bar(0.0, 1.0, 3), "   ");
    }
}

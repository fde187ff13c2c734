//! The report as one self-contained HTML page: inline SVG charts drawn by plotters, inline CSS,
//! no script, no font and nothing else fetched (a Content-Security-Policy says so to the browser).

use chrono::{DateTime, Utc};
use plotters::prelude::*;
use std::fmt::Write as _;

use crate::core::budget::Level;
use crate::core::pricing::format_usd;
use crate::core::report::{Report, SessionFacts};
use crate::core::text::strip_controls;

/// Series colours: distinct on white, and the same task keeps its colour in every chart.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// A task's units done at a time.
type Point = (DateTime<Utc>, u64);

const WIDTH: u32 = 860;
const HEIGHT: u32 = 340;

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// Text for HTML: escaped, control characters removed.
fn esc(text: &str) -> String {
    strip_controls(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// Units done over time, one line per task (the tasks of the report, in its order).
pub fn burn_up(report: &Report, now: DateTime<Utc>) -> String {
    let series: Vec<(&str, Vec<Point>)> = report
        .tasks
        .iter()
        .map(|t| {
            let mut points: Vec<Point> = report
                .sessions
                .iter()
                .filter(|s| s.task == t.task)
                .flat_map(|s| s.points.iter().copied())
                .collect();
            points.sort();
            (t.task.as_str(), points)
        })
        .collect();
    let start = series
        .iter()
        .flat_map(|(_, p)| p.first().map(|(t, _)| *t))
        .min();
    let end = series
        .iter()
        .flat_map(|(_, p)| p.last().map(|(t, _)| *t))
        .max();
    let top = report
        .tasks
        .iter()
        .map(|t| t.total)
        .max()
        .unwrap_or(1)
        .max(1);
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) => (s, e.max(s + chrono::Duration::minutes(1))),
        _ => (now, now + chrono::Duration::hours(1)),
    };
    let hours = |t: DateTime<Utc>| (t - start).num_seconds() as f64 / 3600.0;
    let span = hours(end);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..span, 0f64..top as f64)?;
            chart
                .configure_mesh()
                .x_desc(format!("hours since {}", when(start)))
                .y_desc("units done")
                .x_labels(8)
                .y_labels(6)
                .draw()?;
            for (i, (task, points)) in series.iter().enumerate() {
                let line = points.iter().map(|(t, u)| (hours(*t), *u as f64));
                chart
                    .draw_series(LineSeries::new(line, colour(i).stroke_width(2)))?
                    .label(task.to_string())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour(i).stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
            root.present()?;
            Ok(())
        })();
        if let Err(err) = drawn {
            tracing::warn!("cannot draw the burn-up chart: {err}");
        }
    }
    svg
}

/// One bar per session (in start order), coloured by its task.
fn session_bars(report: &Report, what: &str, value: impl Fn(&SessionFacts) -> f64) -> String {
    let n = report.sessions.len().max(1);
    let top = report
        .sessions
        .iter()
        .map(&value)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let task_index = |task: &str| {
        report
            .tasks
            .iter()
            .position(|t| t.task == task)
            .unwrap_or(0)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("session (in start order)")
                .y_desc(what)
                .x_labels(n.min(12))
                .x_label_formatter(&|x| format!("{}", x.floor() as usize + 1))
                .draw()?;
            chart.draw_series(report.sessions.iter().enumerate().map(|(i, s)| {
                let left = i as f64 + 0.15;
                Rectangle::new(
                    [(left, 0.0), (left + 0.7, value(s))],
                    colour(task_index(&s.task)).filled(),
                )
            }))?;
            root.present()?;
            Ok(())
        })();
        if let Err(err) = drawn {
            tracing::warn!("cannot draw the {what} chart: {err}");
        }
    }
    svg
}

fn level_class(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Unknown => "unknown",
        Level::Warn => "warn",
        Level::Shutdown => "shutdown",
    }
}

fn usd(cost: Option<f64>) -> String {
    cost.map_or("unpriced".into(), format_usd)
}

/// The whole page.
pub fn page(report: &Report, title: &str, now: DateTime<Utc>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 900px; }}
table {{ border-collapse: collapse; margin: 8px 0 24px; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ background: #d9f2d9; }} .warn {{ background: #fff0b3; }}
.shutdown {{ background: #f8c9c4; }} .unknown {{ background: #eee; }}
figure {{ margin: 0 0 24px; }}
</style>
</head>
<body>
<h1>{title}</h1>
"#,
        title = esc(title)
    );
    let eta = match report.eta {
        Some(at) if report.remaining == 0 => format!("nothing left (as of {})", when(at)),
        Some(at) => format!(
            "{} units left; at the recent rate ({:.2} units/hour) the stack is done around <strong>{}</strong> UTC",
            report.remaining,
            report.rate_per_hour.unwrap_or(0.0),
            when(at)
        ),
        None => format!(
            "{} units left; no ETA yet (no session has made progress)",
            report.remaining
        ),
    };
    let _ = writeln!(
        h,
        "<p>Generated {} UTC. {} sessions, {} units done, {} tokens, {}. ETA: {eta}.</p>",
        when(now),
        report.total.sessions,
        report.total.units,
        report.total.tokens,
        usd(report.total.cost_usd)
    );
    let _ = writeln!(
        h,
        "<h2>Burn-up: units done per task</h2>\n<figure id=\"burnup\">{}</figure>",
        burn_up(report, now)
    );
    let _ = writeln!(
        h,
        "<h2>Tokens per session</h2>\n<figure id=\"tokens\">{}</figure>",
        session_bars(report, "tokens", |s| s.tokens.unwrap_or(0) as f64)
    );
    let _ = writeln!(
        h,
        "<h2>Cost per session (USD)</h2>\n<figure id=\"cost\">{}</figure>",
        session_bars(report, "USD", |s| s.cost_usd.unwrap_or(0.0))
    );

    h.push_str("<h2>Tasks</h2>\n<table id=\"tasks\"><tr><th>task</th><th>status</th><th>progress</th><th>sessions</th><th>tokens</th><th>cost</th><th>per unit</th><th>ETA (UTC)</th></tr>\n");
    for t in &report.tasks {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&t.task),
            esc(&t.status.to_string()),
            t.done,
            t.total,
            t.totals.sessions,
            t.totals.tokens,
            usd(t.totals.cost_usd),
            t.cost_per_unit.map_or("-".into(), format_usd),
            t.eta.map_or("-".into(), when)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Sessions: the level each reached and how it ended</h2>\n<table id=\"sessions\"><tr><th>#</th><th>session</th><th>agent</th><th>task</th><th>progress</th><th>tokens</th><th>cost</th><th>level</th><th>ended</th></tr>\n");
    for (i, s) in report.sessions.iter().enumerate() {
        let level = level_class(s.level);
        let _ = writeln!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{} &#8594; {}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{level}\">{level}</td><td>{} ({})</td></tr>",
            i + 1,
            esc(&s.session),
            esc(&s.agent),
            esc(&s.task),
            s.progress_from,
            s.progress_to,
            s.total,
            s.tokens.map_or("-".into(), |t| t.to_string()),
            usd(s.cost_usd),
            esc(&s.ending),
            when(s.ended)
        );
    }
    h.push_str("</table>\n</body>\n</html>\n");
    h
}

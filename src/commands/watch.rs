//! `orchestrator watch`: a live full-screen view of the workspace: each live session with its
//! progress, context gauge, lease and last checkpoint, and the latest events of the run loops.
//!
//! It polls cheaply: every [`POLL`] it stats the files a change touches (the stack, the live
//! sessions' records and checkpoint logs, the newest run log, STOP and PAUSE) and reads the state
//! again only when one changed, or every [`TICK`] for the clocks (lease left, "3m ago"). So a
//! checkpoint shows within a poll; nothing is locked, nothing written.

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::Context;
use crate::clock;
use crate::core::budget::{Level, Usage};
use crate::core::session::Session;
use crate::core::stack::{Status, TaskStack};
use crate::core::text::strip_controls;
use crate::error::{Failure, code};
use crate::store::Workspace;

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(200);
/// How often the screen is redrawn with nothing changed, for its clocks.
const TICK: Duration = Duration::from_secs(5);
/// How many run events are kept for the screen.
const EVENTS: usize = 50;

/// A live full-screen view of the workspace's sessions and run events (`q` quits)
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Workspaces to watch together, a fleet (default: the workspace of -C or the current
    /// directory)
    #[arg(value_name = "DIR")]
    pub dirs: Vec<std::path::PathBuf>,
}

pub fn run(ctx: &Context, args: WatchArgs) -> Result<u8> {
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        return Err(Failure::user(
            "watch needs a terminal (its stdin and stdout are not both one); in scripts use `orchestrator status --json` or `orchestrator report --json`",
        ));
    }
    let fleet = if args.dirs.is_empty() {
        vec![ctx.workspace()?]
    } else {
        args.dirs
            .iter()
            .map(|dir| Workspace::find(Some(dir)))
            .collect::<Result<Vec<_>>>()?
    };
    // Refuse a broken stack before taking the screen.
    for ws in &fleet {
        ws.load_stack()?;
    }
    let mut screen = Screen::take()?;
    let result = watch(&fleet, &mut screen.terminal);
    drop(screen);
    result.map(|()| code::OK)
}

/// The terminal in raw mode on the alternate screen, given back as it was however `watch` ends.
struct Screen {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
}

impl Screen {
    fn take() -> Result<Screen> {
        enable_raw_mode()?;
        let mut stdout = std::io::stdout();
        if let Err(err) = execute!(stdout, EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(err.into());
        }
        let mut terminal = Terminal::new(CrosstermBackend::new(stdout))?;
        terminal.hide_cursor()?;
        Ok(Screen { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(self.terminal.backend_mut(), LeaveAlternateScreen);
        let _ = self.terminal.show_cursor();
    }
}

fn watch<B: Backend>(fleet: &[Workspace], terminal: &mut Terminal<B>) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut seen = None;
    let mut view = View::default();
    let mut drawn_at = Instant::now();
    let mut dirty = true;
    loop {
        let now_seen: Vec<_> = fleet.iter().map(fingerprint).collect();
        if seen.as_ref() != Some(&now_seen) || drawn_at.elapsed() >= TICK {
            view = View::fleet(fleet.iter().map(View::read).collect());
            seen = Some(now_seen);
            dirty = true;
        }
        if dirty {
            terminal.draw(|frame| draw(frame, &view))?;
            drawn_at = Instant::now();
            dirty = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                Event::Key(key) if quits(key) => return Ok(()),
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
}

fn quits(key: KeyEvent) -> bool {
    key.kind != KeyEventKind::Release
        && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
            || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)))
}

/// What the screen depends on, as the file system tells it without reading a file.
fn fingerprint(ws: &Workspace) -> Vec<(String, Option<(SystemTime, u64)>)> {
    let stat = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut seen = vec![
        ("stack".to_string(), stat(&ws.stack_path())),
        ("stop".to_string(), stat(&ws.stop_file())),
        ("pause".to_string(), stat(&ws.state_dir().join("PAUSE"))),
    ];
    for dir in [ws.active_dir(), ws.runs_dir()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                seen.push((path.display().to_string(), stat(&path)));
            }
        }
    }
    seen.sort();
    seen
}

/// One live session as shown.
struct SessionView {
    id: String,
    agent: String,
    task: String,
    done: u64,
    total: u64,
    usage: Option<Usage>,
    lease_left: chrono::Duration,
    wrapping: bool,
    last: Option<(String, DateTime<Utc>)>,
}

/// Everything on the screen, read at one moment.
#[derive(Default)]
struct View {
    workspace: String,
    now: Option<DateTime<Utc>>,
    tasks_done: usize,
    tasks: usize,
    sessions: Vec<SessionView>,
    events: Vec<String>,
    notes: Vec<String>,
    error: Option<String>,
}

impl View {
    /// One view of several workspaces: their sessions and events named by workspace.
    fn fleet(mut views: Vec<View>) -> View {
        if views.len() == 1 {
            return views.pop().unwrap_or_default();
        }
        let mut all = View {
            workspace: format!("{} workspaces", views.len()),
            ..View::default()
        };
        let mut events = Vec::new();
        for view in views {
            let name = Path::new(&view.workspace).file_name().map_or_else(
                || view.workspace.clone(),
                |n| n.to_string_lossy().into_owned(),
            );
            all.now = all.now.max(view.now);
            all.tasks += view.tasks;
            all.tasks_done += view.tasks_done;
            for mut session in view.sessions {
                session.task = format!("{name}: {}", session.task);
                all.sessions.push(session);
            }
            // Each line starts with its time: sorted, they interleave by time.
            events.extend(view.events.into_iter().map(|e| match e.split_once(' ') {
                Some((time, rest)) => format!("{time} {name}: {rest}"),
                None => format!("{name}: {e}"),
            }));
            all.notes
                .extend(view.notes.into_iter().map(|n| format!("{name}: {n}")));
            if let Some(error) = view.error {
                all.notes
                    .push(format!("{name}: cannot read the workspace: {error}"));
            }
        }
        events.sort();
        all.events = events;
        all
    }

    fn read(ws: &Workspace) -> View {
        let mut view = View {
            workspace: clean(&ws.root().display().to_string()),
            ..View::default()
        };
        let stack = match ws.load_stack() {
            Ok(stack) => stack,
            Err(err) => {
                // Mid-edit by hand, say: shown, and read again at the next change.
                view.error = Some(format!("{err:#}"));
                return view;
            }
        };
        let now = clock::now().unwrap_or_else(|_| Utc::now());
        view.now = Some(now);
        view.tasks = stack.tasks.len();
        view.tasks_done = stack
            .tasks
            .iter()
            .filter(|t| matches!(t.status, Status::Done | Status::Skipped))
            .count();
        match ws.active_sessions() {
            Ok(sessions) => {
                view.sessions = sessions
                    .iter()
                    .map(|s| session_view(&stack, s, now))
                    .collect()
            }
            Err(err) => view.error = Some(format!("{err:#}")),
        }
        view.events = latest_events(ws);
        if ws.stop_file().exists() {
            view.notes
                .push("STOP pending: run loops stop after their session".into());
        }
        if ws.state_dir().join("PAUSE").exists() {
            view.notes
                .push("paused for a quota (see `orchestrator status`)".into());
        }
        view
    }
}

fn session_view(stack: &TaskStack, session: &Session, now: DateTime<Utc>) -> SessionView {
    let progress = stack
        .task(&session.task)
        .map_or(session.progress_at_start, |t| t.progress);
    SessionView {
        id: session.id.clone(),
        agent: clean(&session.agent),
        task: clean(&session.task),
        done: progress.done,
        total: progress.total,
        usage: session
            .tokens
            .as_ref()
            .map(|_| session.usage(&stack.settings.budget)),
        lease_left: session.lease_expires - now,
        wrapping: session.is_wrapping(),
        last: session
            .checkpoints
            .last()
            .map(|c| (clean(&c.message), c.at)),
    }
}

/// The last events of the newest run log, oldest first, one line each.
fn latest_events(ws: &Workspace) -> Vec<String> {
    let newest = std::fs::read_dir(ws.runs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let Some(path) = newest else {
        return Vec::new();
    };
    let text = tail(&path, 64 * 1024);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(EVENTS)..]
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| {
            let at = v["at"].as_str().unwrap_or("");
            let time = at.get(11..19).unwrap_or(at);
            let mut line = format!("{time} {}", v["event"].as_str().unwrap_or("?"));
            for key in ["session", "task", "why", "reason", "exit", "seconds"] {
                match &v[key] {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) => line.push_str(&format!(" {key}={s}")),
                    other => line.push_str(&format!(" {key}={other}")),
                }
            }
            clean(&line)
        })
        .collect()
}

/// The last `max` bytes of a file, from a line start.
fn tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(max);
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(max).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if from > 0 {
        text.split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_string())
    } else {
        text
    }
}

/// Text from files, safe for the terminal.
fn clean(text: &str) -> String {
    strip_controls(text).into_owned()
}

fn level_colour(level: Level) -> Color {
    match level {
        Level::Ok => Color::Green,
        Level::Unknown => Color::Gray,
        Level::Warn => Color::Yellow,
        Level::Shutdown => Color::Red,
    }
}

fn ago(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Rows each session takes: title, gauges, last checkpoint.
const SESSION_ROWS: u16 = 3;

fn draw(frame: &mut ratatui::Frame, view: &View) {
    let area = frame.area();
    let event_rows = (area.height / 3).clamp(3, 10);
    let [header, body, events] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(event_rows),
    ])
    .areas(area);

    let title = format!(
        " orchestrator watch · {} · tasks {}/{} done · q quits ",
        view.workspace, view.tasks_done, view.tasks
    );
    frame.render_widget(
        Paragraph::new(title).style(Style::default().add_modifier(Modifier::REVERSED)),
        header,
    );

    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" live sessions: {} ", view.sessions.len()));
    let inner = block.inner(body);
    frame.render_widget(block, body);
    let mut y = inner.y;
    let mut lines_left: Vec<Line> = Vec::new();
    if let Some(error) = &view.error {
        lines_left.push(Line::styled(
            format!("cannot read the workspace: {error}"),
            Style::default().fg(Color::Red),
        ));
    }
    for note in &view.notes {
        lines_left.push(Line::styled(
            note.clone(),
            Style::default().fg(Color::Yellow),
        ));
    }
    if view.sessions.is_empty() && view.error.is_none() {
        lines_left.push(Line::raw("no live session"));
    }
    if !lines_left.is_empty() {
        let rows = (lines_left.len() as u16).min(inner.height);
        frame.render_widget(
            Paragraph::new(lines_left),
            Rect::new(inner.x, y, inner.width, rows),
        );
        y += rows;
    }
    let now = view.now.unwrap_or_default();
    for (shown, s) in view.sessions.iter().enumerate() {
        if y + SESSION_ROWS > inner.y + inner.height {
            let more = view.sessions.len() - shown;
            if y < inner.y + inner.height {
                frame.render_widget(
                    Paragraph::new(format!("… {more} more")),
                    Rect::new(inner.x, y, inner.width, 1),
                );
            }
            break;
        }
        let lease = if s.wrapping {
            "wrapping".to_string()
        } else if s.lease_left.num_seconds() <= 0 {
            "lease run out".to_string()
        } else {
            format!("lease {} left", ago(s.lease_left))
        };
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(
                    s.task.clone(),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(" · {} · {} · {lease}", s.agent, s.id)),
            ])),
            Rect::new(inner.x, y, inner.width, 1),
        );
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .spacing(1)
                .areas(Rect::new(inner.x, y + 1, inner.width, 1));
        let ratio = if s.total == 0 {
            0.0
        } else {
            (s.done as f64 / s.total as f64).clamp(0.0, 1.0)
        };
        frame.render_widget(
            Gauge::default()
                .ratio(ratio)
                .label(format!("progress {}/{}", s.done, s.total))
                .gauge_style(Style::default().fg(Color::Cyan)),
            left,
        );
        let (ratio, label, colour) = match s.usage {
            Some(u) => (
                u.ratio().clamp(0.0, 1.0),
                format!(
                    "context {}% {}",
                    crate::core::budget::format_pct(u.pct()),
                    u.level()
                ),
                level_colour(u.level()),
            ),
            None => (0.0, "context unknown".to_string(), Color::Gray),
        };
        frame.render_widget(
            Gauge::default()
                .ratio(ratio)
                .label(label)
                .gauge_style(Style::default().fg(colour)),
            right,
        );
        let last = match &s.last {
            Some((message, at)) => format!("  last checkpoint {} ago: {message}", ago(now - *at)),
            None => "  no checkpoint yet".to_string(),
        };
        frame.render_widget(
            Paragraph::new(last),
            Rect::new(inner.x, y + 2, inner.width, 1),
        );
        y += SESSION_ROWS;
    }

    let block = Block::default().borders(Borders::ALL).title(" run events ");
    let inner = block.inner(events);
    frame.render_widget(block, events);
    let shown = inner.height as usize;
    let lines: Vec<Line> = if view.events.is_empty() {
        vec![Line::raw("no run log yet (`orchestrator run` writes one)")]
    } else {
        view.events[view.events.len().saturating_sub(shown)..]
            .iter()
            .map(|l| Line::raw(l.clone()))
            .collect()
    };
    frame.render_widget(Paragraph::new(lines), inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    fn text(view: &View, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, view)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..height {
            for x in 0..width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn a_fleet_names_each_session_and_event_by_its_workspace() {
        let one = |dir: &str, task: &str, event: &str| View {
            workspace: dir.into(),
            tasks: 2,
            tasks_done: 1,
            sessions: vec![SessionView {
                id: "session_20251106_001355".into(),
                agent: "claude".into(),
                task: task.into(),
                done: 1,
                total: 2,
                usage: None,
                lease_left: chrono::Duration::minutes(5),
                wrapping: false,
                last: None,
            }],
            events: vec![event.into()],
            ..View::default()
        };
        let fleet = View::fleet(vec![
            one("/w/alpha", "ingest", "10:00:02 level session=s"),
            one("/w/beta", "dedupe", "10:00:01 session_started task=dedupe"),
        ]);
        assert_eq!((fleet.tasks, fleet.tasks_done), (4, 2));
        let screen = text(&fleet, 80, 24);
        assert!(screen.contains("2 workspaces · tasks 2/4 done"), "{screen}");
        assert!(screen.contains("alpha: ingest · claude"), "{screen}");
        assert!(screen.contains("beta: dedupe · claude"), "{screen}");
        let first = screen.find("10:00:01 beta: session_started").unwrap();
        assert!(
            first < screen.find("10:00:02 alpha: level").unwrap(),
            "{screen}"
        );
        assert!(screen.contains("context unknown"), "{screen}");
    }

    #[test]
    fn a_session_fits_in_80_by_24_with_its_gauges_lease_and_last_checkpoint() {
        let now = DateTime::parse_from_rfc3339("2025-11-06T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let view = View {
            workspace: "/w".into(),
            now: Some(now),
            tasks_done: 1,
            tasks: 3,
            sessions: vec![SessionView {
                id: "session_20251106_001355".into(),
                agent: "claude".into(),
                task: "ingest".into(),
                done: 4,
                total: 10,
                usage: Some(Usage {
                    used: 160_000,
                    limit: 200_000,
                    warn: 0.75,
                    shutdown: 0.85,
                }),
                lease_left: chrono::Duration::minutes(12),
                wrapping: false,
                last: Some(("parsed 101-110".into(), now - chrono::Duration::minutes(3))),
            }],
            events: vec!["00:59:00 session_started session=s task=ingest".into()],
            notes: vec![],
            error: None,
        };
        let screen = text(&view, 80, 24);
        assert!(screen.contains("tasks 1/3 done"), "{screen}");
        assert!(screen.contains("ingest · claude · session_20251106_001355 · lease 12m left"));
        assert!(screen.contains("progress 4/10"), "{screen}");
        assert!(screen.contains("context 80% warn"), "{screen}");
        assert!(screen.contains("last checkpoint 3m ago: parsed 101-110"));
        assert!(screen.contains("session_started"), "{screen}");
    }
}

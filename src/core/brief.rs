//! The brief a session starts from: one text, bounded in size, built from facts gathered by the caller.
//!
//! The same text is printed by `start`, is the `brief` key of `start --json`, is the context the
//! Claude Code hook hands over at `SessionStart`, and fills `run`'s `{brief}`. User and agent text
//! is kept on one line without control bytes (see `core::text`).

use chrono::{DateTime, Utc};

use super::stack::{OpenItem, OpenKind, Progress, Status, Task};
use super::text::one_line;
use crate::clock;

/// The longest brief, in characters. Claude Code caps a hook's `additionalContext` at 10,000
/// characters ("Hook output strings, including `additionalContext` ... are capped at 10,000
/// characters", code.claude.com/docs/en/hooks, quoted in /work/wt/research/issue10-hooks.md
/// §2.2 and §2.4: "If a value exceeds 10,000 characters, Claude Code writes the full text to a
/// file"). Counted in UTF-16 units, as a JavaScript string's length is, so no brief is over.
pub const MAX_BRIEF_CHARS: usize = 10_000;
/// Open issues and next steps shown at most, newest first, before the size bound trims more.
pub const MAX_OPEN_ITEMS: usize = 20;
/// Recent checkpoints shown at most, newest first.
pub const MAX_CHECKPOINTS: usize = 3;
/// Files, commit subjects and uncommitted paths listed at most per list.
pub const MAX_LISTED: usize = 8;
/// Blocked tasks listed at most.
pub const MAX_BLOCKED: usize = 10;
/// A description, acceptance or item longer than this is cut, with a note saying so.
pub const MAX_FIELD_CHARS: usize = 1_500;

/// How the last session on the task ended and what it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct LastSession {
    pub id: String,
    pub agent: String,
    pub ended: DateTime<Utc>,
    /// The wrap's reason: "wrap", "recovered", "The agent exited (exit 1)", ...
    pub reason: String,
    pub summary: Option<String>,
    pub progress_from: Progress,
    pub progress_to: Option<Progress>,
    /// None when the changes could not be read (not a repository, history rewritten).
    pub changes: Option<Changes>,
}

/// Commits and files of a range of history, already bounded by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub subjects: Vec<String>,
    pub commits: usize,
    pub files: Vec<String>,
    pub files_changed: usize,
}

/// The repository as the session finds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitState {
    pub branch: Option<String>,
    pub uncommitted: usize,
    pub listed: Vec<String>,
}

/// A task this one waits on, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub id: String,
    pub status: Status,
    pub progress: Progress,
}

/// Everything the brief says. Lines the caller words itself (budget, meters) come in `budget_lines`.
#[derive(Debug, Clone)]
pub struct BriefFacts<'a> {
    pub session_id: &'a str,
    pub agent: &'a str,
    pub budget_tokens: u64,
    pub uses_transcript: bool,
    pub resumed: bool,
    pub task: &'a Task,
    pub dependencies: Vec<Dependency>,
    pub last_session: Option<LastSession>,
    pub last_handoff: Option<String>,
    pub git: Option<GitState>,
    /// `Budget:`, `Usage:`, `Compaction:` and `Meter:` lines, in order, without newlines.
    pub budget_lines: Vec<String>,
    /// Blocked tasks of the stack and their reasons.
    pub blocked: Vec<(String, Option<String>)>,
}

/// What the size bound left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Shown {
    open_items: usize,
    checkpoints: usize,
    blocked: usize,
}

/// The brief: everything in `facts`, the oldest open items and checkpoints left out first until
/// it fits in [`MAX_BRIEF_CHARS`], with a line saying what was left out and where to find it.
pub fn render(facts: &BriefFacts) -> String {
    let mut shown = Shown {
        open_items: facts.task.issues.len() + facts.task.next_steps.len(),
        checkpoints: facts.task.checkpoints.len().min(MAX_CHECKPOINTS),
        blocked: facts.blocked.len().min(MAX_BLOCKED),
    };
    shown.open_items = shown.open_items.min(MAX_OPEN_ITEMS);
    loop {
        let text = render_with(facts, shown);
        if brief_len(&text) <= MAX_BRIEF_CHARS {
            return text;
        }
        // Oldest first: open items, then older checkpoints (the last one stays), then blocked tasks.
        if shown.open_items > 0 {
            shown.open_items -= 1;
        } else if shown.checkpoints > 1 {
            shown.checkpoints -= 1;
        } else if shown.blocked > 0 {
            shown.blocked -= 1;
        } else {
            return cut_at_line(&text, MAX_BRIEF_CHARS);
        }
    }
}

/// The length the cap is measured in: UTF-16 code units.
pub fn brief_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Whole lines of `text` up to `max` characters; only reached when the fixed part alone is too
/// long (a transcript path of thousands of characters).
fn cut_at_line(text: &str, max: usize) -> String {
    let note = "(brief cut at its size bound)\n";
    let mut out = String::new();
    let mut chars = 0;
    for line in text.split_inclusive('\n') {
        let len = brief_len(line);
        if chars + len + note.len() > max {
            break;
        }
        out.push_str(line);
        chars += len;
    }
    out.push_str(note);
    out
}

/// One line of user text, cut at [`MAX_FIELD_CHARS`] with a note.
fn field(text: &str, task: &str) -> String {
    let line = one_line(text);
    if line.chars().count() <= MAX_FIELD_CHARS {
        return line;
    }
    let cut: String = line.chars().take(MAX_FIELD_CHARS).collect();
    format!("{cut}... (cut; `orchestrator task show {task}` has it all)")
}

fn render_with(facts: &BriefFacts, shown: Shown) -> String {
    let task = facts.task;
    let verb = if facts.resumed { "Resume" } else { "Start" };
    let tokens_hint = if facts.uses_transcript {
        ""
    } else {
        " --tokens N"
    };
    let mut text = format!(
        "session={} task={} progress={} budget={} agent={}\n{verb} {} at {}; run `orchestrator checkpoint \"<what you did>\" --progress N{tokens_hint}` after each unit of work.\n\n",
        facts.session_id,
        task.id,
        task.progress,
        facts.budget_tokens,
        facts.agent,
        task.id,
        task.progress
    );
    let mut line = |label: &str, value: &str| {
        text.push_str(&format!("{label:<17}{value}\n"));
    };
    line(
        "Task:",
        &format!("{} ({})", task.id, one_line(task.display_title())),
    );
    if let Some(description) = &task.description {
        line("Description:", &field(description, &task.id));
    }
    if let Some(acceptance) = &task.acceptance {
        line("Acceptance:", &field(acceptance, &task.id));
    }
    line(
        "Progress:",
        &crate::core::stack::progress_bar(task.progress),
    );
    if !facts.dependencies.is_empty() {
        let deps: Vec<String> = facts
            .dependencies
            .iter()
            .map(|d| format!("{} {} {}", d.id, d.status, d.progress))
            .collect();
        line("Depends on:", &deps.join(", "));
    }
    open_items(&mut text, task, shown.open_items);
    let recent: Vec<_> = task
        .checkpoints
        .iter()
        .rev()
        .take(shown.checkpoints)
        .collect();
    match recent.first() {
        Some(cp) => text.push_str(&format!(
            "Last checkpoint: {} at {} ({}): {}\n",
            cp.progress,
            clock::format(cp.at),
            cp.session,
            field(&cp.message, &task.id)
        )),
        None => text.push_str("Last checkpoint: none yet\n"),
    }
    for cp in recent.iter().skip(1) {
        text.push_str(&format!(
            "  earlier: {} at {}: {}\n",
            cp.progress,
            clock::format(cp.at),
            field(&cp.message, &task.id)
        ));
    }
    if let Some(last) = &facts.last_session {
        last_session(&mut text, last, &task.id);
    }
    match &facts.last_handoff {
        Some(path) => text.push_str(&format!(
            "Last handoff:    {} (read it first)\n",
            one_line(path)
        )),
        None => text.push_str("Last handoff:    none\n"),
    }
    if let Some(git) = &facts.git {
        let branch = git
            .branch
            .as_deref()
            .map_or("detached HEAD".to_string(), |b| {
                format!("branch {}", one_line(b))
            });
        let files = match git.uncommitted {
            0 => "no uncommitted files".to_string(),
            n => format!(
                "{n} uncommitted file(s): {}{}",
                git.listed
                    .iter()
                    .map(|p| one_line(p))
                    .collect::<Vec<_>>()
                    .join(", "),
                if n > git.listed.len() { ", ..." } else { "" }
            ),
        };
        text.push_str(&format!("Git:             {branch}; {files}\n"));
    }
    for budget_line in &facts.budget_lines {
        text.push_str(budget_line);
        text.push('\n');
    }
    for (id, reason) in facts.blocked.iter().take(shown.blocked) {
        text.push_str(&format!(
            "Blocked:         {id}: {}\n",
            one_line(reason.as_deref().unwrap_or("no reason given"))
        ));
    }
    if facts.blocked.len() > shown.blocked {
        text.push_str(&format!(
            "                 ({} more blocked: `orchestrator task list`)\n",
            facts.blocked.len() - shown.blocked
        ));
    }
    text.push_str(&format!(
        "Session:         {} (export ORCHESTRATOR_SESSION={} when several sessions share this workspace)\n",
        facts.session_id, facts.session_id
    ));
    text.push_str("Exit codes:      checkpoint/status exit 0 ok, 10 warn (finish the unit, then wrap), 11 shutdown (wrap now)\n");
    text.push_str("Open items:      orchestrator checkpoint \"...\" --issue \"...\" records one; --resolve N closes #N\n");
    text.push_str("When done:       orchestrator wrap --summary \"...\" --next \"...\" [--done]\n");
    text
}

/// Open issues and next steps, newest first, `shown` of them in all: the newest items of both
/// lists are kept, whichever list they are in.
fn open_items(text: &mut String, task: &Task, shown: usize) {
    let mut all: Vec<(OpenKind, &OpenItem)> = task.open_items().collect();
    all.sort_by_key(|(_, item)| std::cmp::Reverse(item.n));
    let total = all.len();
    all.truncate(shown);
    for (kind, label) in [
        (OpenKind::Issue, "Open issues:"),
        (OpenKind::NextStep, "Next steps:"),
    ] {
        let items: Vec<&OpenItem> = all
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
            .collect();
        if items.is_empty() {
            continue;
        }
        text.push_str(&format!("{label}\n"));
        for item in items {
            text.push_str(&format!("  #{} {}\n", item.n, field(&item.text, &task.id)));
        }
    }
    if total > shown {
        text.push_str(&format!(
            "                 ({} older open item(s) omitted: `orchestrator task show {}` lists them all)\n",
            total - shown,
            task.id
        ));
    }
}

fn last_session(text: &mut String, last: &LastSession, task: &str) {
    let progress = match last.progress_to {
        Some(to) if to != last.progress_from => format!("{} -> {to}", last.progress_from),
        Some(to) => format!("{to}, no progress"),
        None => last.progress_from.to_string(),
    };
    text.push_str(&format!(
        "Last session:    {} ({}) ended {}: {}; progress {progress}\n",
        last.id,
        one_line(&last.agent),
        clock::format(last.ended),
        one_line(&last.reason)
    ));
    if let Some(summary) = &last.summary {
        text.push_str(&format!("  summary: {}\n", field(summary, task)));
    }
    let Some(changes) = &last.changes else {
        return;
    };
    if changes.commits == 0 && changes.files_changed == 0 {
        text.push_str("  changed: nothing committed\n");
        return;
    }
    let more = |listed: usize, total: usize| {
        if total > listed {
            format!(", and {} more", total - listed)
        } else {
            String::new()
        }
    };
    if !changes.files.is_empty() {
        text.push_str(&format!(
            "  files ({}): {}{}\n",
            changes.files_changed,
            changes
                .files
                .iter()
                .map(|f| one_line(f))
                .collect::<Vec<_>>()
                .join(", "),
            more(changes.files.len(), changes.files_changed)
        ));
    }
    for subject in &changes.subjects {
        text.push_str(&format!("  commit: {}\n", field(subject, task)));
    }
    if changes.commits > changes.subjects.len() {
        text.push_str(&format!(
            "  commit: ... {} more\n",
            changes.commits - changes.subjects.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn facts(task: &Task) -> BriefFacts<'_> {
        BriefFacts {
            session_id: "session_20251106_000000",
            agent: "a",
            budget_tokens: 1000,
            uses_transcript: false,
            resumed: true,
            task,
            dependencies: vec![],
            last_session: None,
            last_handoff: None,
            git: None,
            budget_lines: vec![],
            blocked: vec![],
        }
    }

    #[test]
    fn many_open_items_keep_the_newest_and_fit_the_bound() {
        let mut task = Task::new("t".into(), "T".into(), 1, 3, vec![]);
        let at = Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap();
        for i in 0..500 {
            let kind = if i % 2 == 0 {
                OpenKind::Issue
            } else {
                OpenKind::NextStep
            };
            task.add_open_item(kind, &format!("item {i} {}", "x".repeat(600)), at, "s");
        }
        let text = render(&facts(&task));
        assert!(brief_len(&text) <= MAX_BRIEF_CHARS, "{}", text.len());
        assert!(text.contains("#500 item 499"), "{text}");
        assert!(!text.contains("#1 item 0 "), "{text}");
        assert!(text.contains("older open item(s) omitted: `orchestrator task show t`"));
        assert!(text.ends_with("[--done]\n"));
    }

    #[test]
    fn a_fixed_part_too_long_is_cut_between_lines() {
        let cut = cut_at_line("aaaa\nbbbb\ncccc\n", 40);
        assert_eq!(cut, "aaaa\nbbbb\n(brief cut at its size bound)\n");
    }
}

//! `orchestrator init`: create a workspace.

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;
use std::fs;
use std::path::Path;

use super::Context;
use super::output::{Quiet, Shape};
use crate::core::stack::{DatabaseSettings, Settings, TaskStack};
use crate::error::Failure;
use crate::store::undo::Undo;
use crate::store::{self, STACK_FILE, Workspace};
use crate::wrap::vcs;

/// Create task_stack.json, the handoff directory and .gitignore entries
#[derive(Debug, Args)]
pub struct InitArgs {
    /// SQLite database to back up at every wrap
    #[arg(long, value_name = "PATH")]
    pub db: Option<String>,
    /// Token budget per session
    #[arg(long, value_name = "N")]
    pub budget: Option<u64>,
    /// Warn threshold, a fraction of the budget (0.75 = 75%)
    #[arg(long, value_name = "F")]
    pub warn: Option<f64>,
    /// Shutdown threshold, a fraction of the budget (0.85 = 85%)
    #[arg(long, value_name = "F")]
    pub shutdown: Option<f64>,
    /// Where an agent compacts its context on its own, a fraction of the budget, as AGENT=F
    /// (settings.agents.AGENT.compact_at; a bare F is for agent `claude`). Claude Code documents
    /// no fixed point: it depends on the model and your settings. Repeatable
    #[arg(long, value_name = "[AGENT=]F", value_parser = parse_compact_at)]
    pub compact_at: Vec<(String, f64)>,
}

pub fn run(ctx: &Context, args: InitArgs) -> Result<u8> {
    let root = match &ctx.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let mut settings = Settings::default();
    if let Some(tokens) = args.budget {
        settings.budget.tokens = tokens;
    }
    if let Some(warn) = args.warn {
        settings.budget.warn = warn;
    }
    if let Some(shutdown) = args.shutdown {
        settings.budget.shutdown = shutdown;
    }
    for (agent, at) in args.compact_at {
        super::start::check_agent_name(&agent)
            .map_err(|err| Failure::user(format!("--compact-at: {err}")))?;
        let mut binding = settings.agents.get(&agent).cloned().unwrap_or_default();
        binding.compact_at = Some(at);
        settings.agents.set(agent, binding);
    }
    if let Some(db) = args.db {
        settings.database = Some(DatabaseSettings::new(db));
    }
    let stack = TaskStack::new(settings);
    stack
        .validate()
        .map_err(|invalid| Failure::user(format!("{STACK_FILE}: {invalid}")))?;

    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let ws = Workspace::at(root.canonicalize().unwrap_or(root));
    let stack_path = ws.stack_path();
    // Before the lock file: a handoff directory that leads out gets nothing, not even a lock.
    ws.check_settings_paths(&stack.settings)?;
    let lock = ws.lock()?;
    if stack_path.exists() {
        return Err(Failure::user(format!(
            "{} already exists; not overwriting it",
            stack_path.display()
        )));
    }
    // Whatever fails (a full disk), init takes back what it made: exit 1 leaves the directory
    // as it was, but for the sidecar lock file, which is never removed.
    let mut undo = Undo::new();
    let handoff_dir = ws.root().join(&stack.settings.handoff_dir);
    for dir in [ws.active_dir(), ws.archive_dir(), handoff_dir.clone()] {
        undo.before_create_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Keeps the otherwise empty handoff directory in git.
    let keep = handoff_dir.join(".gitkeep");
    if !keep.exists() {
        undo.before_replace(&keep)?;
        store::file::write_atomic(&keep, b"")?;
    }
    let gitignore = ws.root().join(".gitignore");
    undo.before_replace(&gitignore)?;
    let added = add_ignore_lines(&gitignore, &store::never_committed(&stack.settings))?;
    undo.before_replace(&stack_path)?;
    ws.save_stack(&lock, &stack)?;
    undo.commit();
    crate::meters::warn_about_compaction(&ws, &stack);
    if let Some(db) = &stack.settings.database {
        warn_about_database(&ws.root().join(&db.path));
    }
    match vcs::in_repository(ws.root()) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "{} is not in a git repository: wrap will skip its commit; run `git init` to have each session's work committed",
            ws.root().display()
        ),
        Err(err) => tracing::warn!("cannot tell whether the workspace is in git: {err:#}"),
    }

    let json = json!({
        "workspace": ws.root(),
        "task_stack": stack_path,
        "handoff_dir": handoff_dir,
        "gitignore_added": added,
    });
    let text = format!(
        "Initialized {}\nNext: add tasks with `orchestrator task add ID --title T --total N`, then run `orchestrator start`.\n",
        stack_path.display()
    );
    let quiet = Shape {
        quiet: Quiet::Nothing,
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, quiet);
    Ok(0)
}

/// Appends the lines the file lacks; returns them.
pub(super) fn add_ignore_lines(path: &Path, lines: &[String]) -> Result<Vec<String>> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let present: Vec<&str> = existing.lines().map(str::trim).collect();
    let missing: Vec<String> = lines
        .iter()
        .filter(|line| !present.contains(&line.as_str()))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# orchestrator: never committed\n");
    for line in &missing {
        text.push_str(line);
        text.push('\n');
    }
    store::file::write_atomic(path, text.as_bytes())?;
    Ok(missing)
}

/// The first 16 bytes of every SQLite database file ("The header string", offset 0, size 16,
/// https://www.sqlite.org/fileformat2.html#the_database_header).
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Warns, without refusing (the database may be created later), when `--db` names a file that
/// does not exist or is not a SQLite database: wrap would back up nothing or fail.
fn warn_about_database(path: &Path) {
    let shown = path.display();
    match database_problem(path) {
        Ok(None) => {}
        Ok(Some(problem)) => tracing::warn!(
            "--db {shown} {problem}; wrap backs it up only once it is a SQLite database"
        ),
        Err(err) => tracing::warn!("--db {shown}: cannot read it: {err}"),
    }
}

/// Why `path` is not a SQLite database, or None when it is one. An empty file counts as one:
/// SQLite opens it as an empty database and writes the header with the first table.
fn database_problem(path: &Path) -> std::io::Result<Option<&'static str>> {
    use std::io::Read;
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some("does not exist"));
        }
        Err(err) => return Err(err),
    };
    if !file.metadata()?.is_file() {
        return Ok(Some("is not a file"));
    }
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    file.by_ref()
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header)?;
    if header.is_empty() || header == SQLITE_HEADER {
        Ok(None)
    } else {
        Ok(Some(
            "is not a SQLite database (its first bytes are not \"SQLite format 3\")",
        ))
    }
}

/// `AGENT=F` or a bare `F` (agent `claude`, the agent known to compact on its own).
fn parse_compact_at(arg: &str) -> Result<(String, f64), String> {
    let (agent, value) = match arg.split_once('=') {
        Some((agent, value)) => (agent.trim(), value),
        None => ("claude", arg),
    };
    let at = value
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("`{value}` is not a fraction (0.835 = 83.5%)"))?;
    Ok((agent.to_string(), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_recognised_by_the_header_sqlite_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("real.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        drop(conn);
        assert_eq!(database_problem(&db).unwrap(), None);

        let empty = dir.path().join("empty.db");
        fs::write(&empty, b"").unwrap();
        assert_eq!(database_problem(&empty).unwrap(), None);
        // Why that is right: SQLite opens an empty file as an empty database.
        let conn = rusqlite::Connection::open(&empty).unwrap();
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
            .unwrap();
        assert_eq!(tables, 0);

        let text = dir.path().join("notes.db");
        fs::write(&text, b"not a database at all").unwrap();
        assert!(
            database_problem(&text)
                .unwrap()
                .unwrap()
                .contains("not a SQLite")
        );
        let short = dir.path().join("short.db");
        fs::write(&short, b"SQLite").unwrap();
        assert!(database_problem(&short).unwrap().is_some());
        assert_eq!(
            database_problem(&dir.path().join("missing.db")).unwrap(),
            Some("does not exist")
        );
        assert_eq!(database_problem(dir.path()).unwrap(), Some("is not a file"));
    }
}

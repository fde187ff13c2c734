//! `orchestrator demo`: a scratch workspace that runs one whole session, to see what it does.
//!
//! It drives the real binary (start, two checkpoints, wrap) so the demo shows exactly what an
//! agent would see: the second checkpoint reaches the warn level (exit 10), then the wrap.

use anyhow::{Context as _, Result, bail};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Context;
use super::output::{Quiet, Shape};
use crate::core::budget::Level;
use crate::core::stack::TaskStack;
use crate::error::code;
use crate::store;
use crate::store::Workspace;
use crate::wrap;

const DB_FILE: &str = "crypto_indicators_production.db";
const TASK: &str = "integrate_sessions_101_140";

pub fn run(ctx: &Context) -> Result<u8> {
    let dir = match &ctx.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "orchestrator-demo-{}",
            ctx.now.format("%Y%m%d_%H%M%S")
        )),
    };
    if dir.exists()
        && dir
            .read_dir()
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; the demo needs an empty or new directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let exe = std::env::current_exe().context("cannot find the orchestrator binary")?;
    let say = |line: &str| {
        if !ctx.json && !ctx.quiet {
            super::output::print_stdout(&format!("{line}\n"));
        }
    };

    say(&format!("# Building a demo workspace in {}", dir.display()));
    git2::Repository::init(&dir)
        .with_context(|| format!("cannot create a git repository in {}", dir.display()))?;
    build_database(&dir.join(DB_FILE), 19_267)?;
    let stack_text = demo_stack();
    let stack = TaskStack::parse(&stack_text).expect("the demo stack is valid");
    store::file::write_atomic(&dir.join("task_stack.json"), stack_text.as_bytes())?;
    store::file::write_atomic(
        &dir.join("README.md"),
        b"# Demo project\n\nBuilt by `orchestrator demo`.\n",
    )?;
    super::init::add_ignore_lines(
        &dir.join(".gitignore"),
        &store::never_committed(&stack.settings),
    )?;
    std::fs::create_dir_all(dir.join("session_handoffs"))
        .context("cannot create session_handoffs")?;
    std::fs::create_dir_all(dir.join("backups")).context("cannot create backups")?;
    store::file::write_atomic(&dir.join("session_handoffs/.gitkeep"), b"")?;
    wrap::commit_workspace(&Workspace::at(dir.clone()), &stack, "Demo workspace")?;

    let mut transcript = Vec::new();
    // Each step prints what an agent would see, with its exit code: the levels are the point.
    let mut step = |args: &[&str]| -> Result<Value> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.to_string()
                }
            })
            .collect();
        say(&format!("\n$ orchestrator {}", shown.join(" ")));
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .current_dir(&dir)
            .env_remove("ORCHESTRATOR_SESSION")
            .env_remove("ORCHESTRATOR_DIR")
            .env_remove("ORCHESTRATOR_NOW");
        if ctx.json {
            cmd.arg("--json");
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let code = out.status.code().unwrap_or(-1);
        if !matches!(code, 0 | 10 | 11) {
            bail!(
                "orchestrator {} failed ({code}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // Warnings the step gave stay visible, on stderr where they belong.
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = if ctx.json {
            serde_json::from_str(&stdout).context("the demo step printed no JSON")?
        } else {
            say(stdout.trim_end());
            say(&format!("[exit {code}{}]", level_of_exit(code)));
            Value::String(stdout)
        };
        transcript.push(json!({"args": args, "exit": code, "output": value}));
        Ok(value)
    };

    step(&["start", "--agent", "demo"])?;
    step(&[
        "checkpoint",
        "Database status checked",
        "--progress",
        "1",
        "--tokens",
        "41000",
    ])?;
    // The agent's work: new rows in the database and a file in the repository.
    add_rows(&dir.join(DB_FILE), 19_267, 4_360)?;
    store::file::write_atomic(
        &dir.join("integration_notes.md"),
        b"# Sessions 101-110\n\nAll 29 inbox files were already integrated.\n",
    )?;
    // 76% of the budget: past warn (75%), so the agent is told to finish up and wrap (exit 10).
    step(&[
        "checkpoint",
        "Droid inbox checked: 29 files, all already integrated",
        "--progress",
        "10",
        "--tokens",
        "152340",
    ])?;
    step(&[
        "wrap",
        "--summary",
        "Checked the database and the Droid inbox",
        "--next",
        "Integrate session 111",
    ])?;

    let (handoff, backup, commit) = wrap_results(&dir)?;
    let json = json!({
        "dir": dir,
        "handoff": handoff,
        "backup": backup,
        "commit": commit,
        "steps": transcript,
    });
    let text = format!(
        "\n# Done\nworkspace: {}\nhandoff:   {}\nbackup:    {}\ncommit:    {commit}  (git -C {} log -1)\n",
        dir.display(),
        handoff.display(),
        backup
            .as_deref()
            .map_or("none".into(), |p: &Path| p.display().to_string()),
        dir.display()
    );
    let shape = Shape {
        quiet: Quiet::Text(format!("{}\n", dir.display())),
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, shape);
    Ok(code::OK)
}

/// What an exit code of `checkpoint` or `status` says, for the demo's reader.
fn level_of_exit(code: i32) -> &'static str {
    if code == i32::from(Level::Warn.exit_code()) {
        ": warn level, finish the current unit of work, then wrap"
    } else if code == i32::from(Level::Shutdown.exit_code()) {
        ": shutdown level, wrap now"
    } else {
        ""
    }
}

/// The handoff, backup and commit of the demo's one wrapped session, from its archived record
/// and the repository's HEAD (the wrap's commit).
fn wrap_results(dir: &Path) -> Result<(PathBuf, Option<PathBuf>, String)> {
    let ws = Workspace::at(dir.to_path_buf());
    let archived = std::fs::read_dir(ws.archive_dir())
        .with_context(|| format!("cannot read {}", ws.archive_dir().display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "json"))
        .context("the demo's wrap archived no session")?;
    let session = ws.load_session(&archived)?;
    let steps = session
        .wrap
        .map(|journal| journal.steps)
        .context("the demo's archived session has no wrap journal")?;
    let handoff = dir.join(steps.handoff.unwrap_or_default());
    let backup = steps
        .backup
        .as_ref()
        .and_then(|b| b["path"].as_str())
        .map(|p| dir.join(p));
    let commit = git2::Repository::open(dir)
        .and_then(|repo| Ok(repo.head()?.peel_to_commit()?.id().to_string()))
        .with_context(|| format!("cannot read the demo's commit in {}", dir.display()))?;
    Ok((handoff, backup, commit))
}

fn build_database(path: &PathBuf, rows: u32) -> Result<()> {
    let mut conn =
        Connection::open(path).with_context(|| format!("cannot create {}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE qa_pairs (id INTEGER PRIMARY KEY, session_number INTEGER, question TEXT, answer TEXT);
         CREATE TABLE integrated_sessions (session_number INTEGER PRIMARY KEY, integrated_at TEXT);",
    )
    .with_context(|| format!("cannot set up {}", path.display()))?;
    let tx = conn.transaction()?;
    for s in 1..=100 {
        tx.execute(
            "INSERT INTO integrated_sessions VALUES (?1, '2025-11-05T12:00:00Z')",
            [s],
        )?;
    }
    tx.commit()?;
    add_rows(path, 0, rows)
}

fn add_rows(path: &Path, from: u32, count: u32) -> Result<()> {
    let mut conn =
        Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO qa_pairs (session_number, question, answer) VALUES (?1, ?2, ?3)",
        )?;
        for i in from..from + count {
            insert.execute(rusqlite::params![
                1 + i / 200,
                format!("What does indicator #{i} say about BTC/USDT?"),
                format!(
                    "Answer {i}: RSI {} with MACD crossing {}",
                    30 + i % 40,
                    if i % 2 == 0 { "up" } else { "down" }
                ),
            ])?;
        }
    }
    tx.commit()
        .with_context(|| format!("cannot write {}", path.display()))
}

fn demo_stack() -> String {
    let stack = json!({
        "version": 1,
        "settings": {
            "budget": {"tokens": 200000, "warn": 0.75, "shutdown": 0.8},
            "database": {
                "path": DB_FILE,
                "backup_dir": "backups",
                "keep_backups": 10,
                "metrics": [
                    {"name": "qa_pairs", "query": "SELECT COUNT(*) FROM qa_pairs", "goal": 30000},
                    {"name": "sessions_integrated", "query": "SELECT COUNT(*) FROM integrated_sessions", "goal": 200}
                ]
            },
            "git": {"commit_on_wrap": true, "commit_on_checkpoint": false, "max_file_mb": 50},
            "handoff_dir": "session_handoffs",
            "lease_minutes": 30
        },
        "tasks": [
            {"id": TASK, "title": "Integrate sessions 101-140", "priority": 1, "status": "pending",
             "progress": {"done": 0, "total": 40}, "depends_on": [], "checkpoints": []},
            {"id": "dedupe_qa_pairs", "title": "Remove near-duplicate QA pairs", "priority": 2, "status": "pending",
             "progress": {"done": 0, "total": 12}, "depends_on": [TASK], "checkpoints": []}
        ]
    });
    let mut text = serde_json::to_string_pretty(&stack).expect("a literal serializes");
    text.push('\n');
    text
}

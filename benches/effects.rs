//! Wrap's effects against the tools a user would otherwise run, in one run:
//! - the SQLite backup of a database of SIZE_MB (default 1024) vs `cp` of the same file;
//! - the commit of 10 changed files in a 20,000-file repository vs `git add -A && git commit`.
//!
//! `cargo bench --bench effects [-- SIZE_MB]`. Prints medians and ratios; asserts nothing.

use orchestrator::wrap::backup::{backup_database, backup_file_name};
use orchestrator::wrap::vcs::{CommitOutcome, CommitRequest, commit_all};
use rusqlite::Connection;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{git, isolate_libgit2, median, ms};

const ROUNDS: usize = 5;

fn main() {
    let size_mb: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(1024, |a| a.parse().expect("SIZE_MB is a number"));
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    isolate_libgit2(&home);
    bench_backup(tmp.path(), size_mb);
    bench_commit(tmp.path(), &home);
}

fn bench_backup(dir: &Path, size_mb: u64) {
    let db = dir.join("bench.db");
    let started = Instant::now();
    build_database(&db, size_mb);
    let bytes = fs::metadata(&db).unwrap().len();
    println!(
        "backup: database of {} MB built in {:.1} s",
        bytes / 1_000_000,
        started.elapsed().as_secs_f64()
    );
    let copy = dir.join("copy.db");
    cp(&db, &copy); // warm the page cache for both sides
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let name = format!("{}.{round}", backup_file_name(&db, chrono::Utc::now()));
        let started = Instant::now();
        let outcome = backup_database(&db, dir, &name, false).unwrap();
        ours.push(started.elapsed());
        fs::remove_file(outcome.path).unwrap();
        theirs.push(cp(&db, &copy));
    }
    let (a, b) = (median_ms(ours), median_ms(theirs));
    println!("  backup_database (copy + quick_check + fsync): {a:>8.1} ms");
    println!("  cp:                                          {b:>8.1} ms");
    println!(
        "  ratio:                                       {:>8.2}x  (target <= 1.5x)",
        a / b
    );
    fs::remove_file(&db).unwrap();
}

fn build_database(path: &Path, size_mb: u64) {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(
        "PRAGMA synchronous=OFF;
         CREATE TABLE items(id INTEGER PRIMARY KEY, key TEXT NOT NULL, note TEXT NOT NULL, payload BLOB NOT NULL);
         CREATE INDEX items_key ON items(key);",
    )
    .unwrap();
    let rows = size_mb * 1024 * 1024 / 1000;
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
         INSERT INTO items(key, note, payload)
         SELECT hex(randomblob(8)), 'note ' || i || ' ' || hex(randomblob(40)), randomblob(880) FROM s",
        [rows as i64],
    )
    .unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

fn cp(from: &Path, to: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("cp").arg(from).arg(to).status().unwrap();
    let elapsed = started.elapsed();
    assert!(status.success());
    fs::remove_file(to).unwrap();
    elapsed
}

const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;
const CHANGED: usize = 10;

fn bench_commit(dir: &Path, home: &Path) {
    let repo = dir.join("repo");
    for d in 0..DIRS {
        fs::create_dir_all(repo.join(format!("d{d:03}"))).unwrap();
    }
    for n in 0..DIRS * FILES_PER_DIR {
        let text: String = (0..8).map(|l| format!("file {n} line {l}\n")).collect();
        fs::write(file(&repo, n), text).unwrap();
    }
    git(&repo, home, &["init", "-q", "-b", "main"]);
    git(&repo, home, &["config", "user.name", "Bench"]);
    git(&repo, home, &["config", "user.email", "bench@example.com"]);
    git(&repo, home, &["add", "-A"]);
    git(&repo, home, &["commit", "-q", "-m", "initial"]);
    // Let racily-clean index entries age, and have git refresh its stat cache.
    std::thread::sleep(Duration::from_millis(1100));
    git(&repo, home, &["status", "--porcelain"]);

    let exclude = [
        PathBuf::from(".orchestrator/sessions/active"),
        PathBuf::from(".orchestrator/lock"),
    ];
    let globs = ["bench.db.backup_*".to_string()];
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        modify(&repo, 2 * round);
        let message = format!("Session Wrap: round {round}\n\nOrchestrator-Session: s{round}\n");
        let request = CommitRequest {
            workdir: &repo,
            message: &message,
            exclude: &exclude,
            exclude_globs: &globs,
            max_file_bytes: 50 * 1024 * 1024,
            owner_dir: None,
            only: None,
        };
        let started = Instant::now();
        let outcome = commit_all(&request).unwrap();
        ours.push(started.elapsed());
        assert!(
            matches!(outcome, CommitOutcome::Committed { ref stats, .. } if stats.files_changed == CHANGED)
        );

        modify(&repo, 2 * round + 1);
        let started = Instant::now();
        git(&repo, home, &["add", "-A"]);
        git(&repo, home, &["commit", "-q", "-m", "msg"]);
        theirs.push(started.elapsed());
    }
    let (a, b) = (median_ms(ours), median_ms(theirs));
    println!(
        "commit: {CHANGED} changed files in a {}-file repository, median of {ROUNDS}",
        DIRS * FILES_PER_DIR
    );
    println!("  commit_all:                    {a:>8.1} ms");
    println!("  git add -A && git commit:      {b:>8.1} ms");
    println!(
        "  ratio:                         {:>8.2}x  (target <= 1.2x)",
        a / b
    );
}

fn file(repo: &Path, n: usize) -> PathBuf {
    repo.join(format!("d{:03}/f{:03}.txt", n % DIRS, n / DIRS))
}

fn modify(repo: &Path, round: usize) {
    for k in 0..CHANGED {
        let path = file(repo, (round * CHANGED + k) * 97 % (DIRS * FILES_PER_DIR));
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!("change {round} {k}\n"));
        fs::write(&path, text).unwrap();
    }
}

/// The median in milliseconds.
fn median_ms(samples: Vec<Duration>) -> f64 {
    ms(median(samples))
}

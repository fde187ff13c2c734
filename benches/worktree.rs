//! A session's worktree against the git CLI, in one run, in a 20,000-file repository:
//! - making the worktree (`worktree::ensure`) vs `git worktree add -b`;
//! - integrating a 10-file change made on a branch that left the base one commit ago:
//!   rebase (`worktree::plan` + `apply`, the main work tree updated) vs `git rebase` in the
//!   branch's worktree + `git merge --ff-only` in the main one; merge vs `git merge --no-ff`.
//!
//! `cargo bench --bench worktree`. Prints medians and ratios; asserts nothing about speed.

use orchestrator::core::session::SessionWorktree;
use orchestrator::core::stack::Integrate;
use orchestrator::wrap::worktree::{Plan, apply, ensure, plan, remove};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{git, isolate_libgit2, median, ms};

const ROUNDS: usize = 5;
const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;
const CHANGED: usize = 10;

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    isolate_libgit2(&home);
    let repo = tmp.path().join("repo");
    let started = Instant::now();
    build_repo(&repo, &home);
    println!(
        "repository of {} files built in {:.1} s",
        DIRS * FILES_PER_DIR,
        started.elapsed().as_secs_f64()
    );
    bench_create(&repo, &home);
    let helper = repo.join(".orchestrator/helper");
    git(
        &repo,
        &home,
        &["worktree", "add", "-q", "--detach", path_str(&helper)],
    );
    let mut seed = 100;
    bench_integrate(&repo, &home, &helper, Integrate::Rebase, &mut seed);
    bench_integrate(&repo, &home, &helper, Integrate::Merge, &mut seed);
}

fn build_repo(repo: &Path, home: &Path) {
    for d in 0..DIRS {
        fs::create_dir_all(repo.join(format!("d{d:03}"))).unwrap();
    }
    for n in 0..DIRS * FILES_PER_DIR {
        let text: String = (0..8).map(|l| format!("file {n} line {l}\n")).collect();
        fs::write(file(repo, n), text).unwrap();
    }
    fs::write(repo.join(".gitignore"), ".orchestrator/\n").unwrap();
    git(repo, home, &["init", "-q", "-b", "main"]);
    git(repo, home, &["config", "user.name", "Bench"]);
    git(repo, home, &["config", "user.email", "bench@example.com"]);
    git(repo, home, &["add", "-A"]);
    git(repo, home, &["commit", "-q", "-m", "initial"]);
    // A second commit, so that the first branch can leave the base one commit behind its tip.
    modify(repo, 0);
    git(repo, home, &["commit", "-q", "-am", "second"]);
    std::thread::sleep(Duration::from_millis(1100));
    git(repo, home, &["status", "--porcelain"]);
}

fn bench_create(repo: &Path, home: &Path) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let task = format!("t{round}");
        let started = Instant::now();
        let wt = ensure(repo, &task).unwrap();
        ours.push(started.elapsed());
        assert!(wt.workdir.join("d000/f000.txt").exists());
        remove(repo, &task, &wt, true, None).unwrap();

        let path = repo.join(format!(".orchestrator/cli{round}"));
        let branch = format!("cli/{round}");
        let started = Instant::now();
        git(
            repo,
            home,
            &["worktree", "add", "-q", "-b", &branch, path_str(&path)],
        );
        theirs.push(started.elapsed());
        git(
            repo,
            home,
            &["worktree", "remove", "--force", path_str(&path)],
        );
        git(repo, home, &["branch", "-q", "-D", &branch]);
    }
    report(
        &format!(
            "worktree: a new worktree of a {}-file repository, median of {ROUNDS}",
            DIRS * FILES_PER_DIR
        ),
        ("worktree::ensure", median_ms(ours)),
        ("git worktree add -b", median_ms(theirs)),
    );
}

/// A branch `name` made from the base's parent commit, with a 10-file change committed on it
/// in the helper worktree, which is left on it.
fn prepare_branch(home: &Path, helper: &Path, name: &str, seed: &mut usize) {
    git(helper, home, &["checkout", "-q", "-B", name, "main~1"]);
    *seed += 1;
    modify(helper, *seed);
    git(
        helper,
        home,
        &["commit", "-q", "-am", &format!("work {name}")],
    );
}

fn bench_integrate(repo: &Path, home: &Path, helper: &Path, mode: Integrate, seed: &mut usize) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let branch = format!("orchestrator/{}{round}", mode.as_str());
        prepare_branch(home, helper, &branch, seed);
        git(helper, home, &["checkout", "-q", "--detach"]);
        let wt = SessionWorktree {
            path: helper.to_path_buf(),
            workdir: helper.to_path_buf(),
            branch: branch.clone(),
            base: "main".into(),
        };
        let started = Instant::now();
        let Plan::Move { from, to, .. } = plan(repo, &wt, mode, "Merge\n").unwrap() else {
            panic!("expected a move");
        };
        assert!(apply(repo, &wt, from, to).unwrap());
        ours.push(started.elapsed());

        let branch = format!("cli/{}{round}", mode.as_str());
        prepare_branch(home, helper, &branch, seed);
        let started = Instant::now();
        match mode {
            Integrate::Merge => {
                git(helper, home, &["checkout", "-q", "--detach"]);
                git(
                    repo,
                    home,
                    &["merge", "-q", "--no-ff", "-m", "Merge", &branch],
                );
            }
            _ => {
                git(helper, home, &["rebase", "-q", "main"]);
                git(repo, home, &["merge", "-q", "--ff-only", &branch]);
                git(helper, home, &["checkout", "-q", "--detach"]);
            }
        }
        theirs.push(started.elapsed());
    }
    assert_eq!(
        Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(repo)
            .output()
            .unwrap()
            .stdout,
        b"",
        "the main work tree follows every integration"
    );
    let cli = match mode {
        Integrate::Merge => "git merge --no-ff",
        _ => "git rebase + git merge --ff-only",
    };
    report(
        &format!(
            "integrate ({}): a {CHANGED}-file change, base moved by one commit, median of {ROUNDS}",
            mode.as_str()
        ),
        ("worktree::plan + apply", median_ms(ours)),
        (cli, median_ms(theirs)),
    );
}

fn report(title: &str, ours: (&str, f64), theirs: (&str, f64)) {
    println!("{title}");
    println!("  {:<34}{:>8.1} ms", format!("{}:", ours.0), ours.1);
    println!("  {:<34}{:>8.1} ms", format!("{}:", theirs.0), theirs.1);
    println!(
        "  {:<34}{:>8.2}x  (goal <= 1.5x)",
        "ratio:",
        ours.1 / theirs.1
    );
}

fn file(repo: &Path, n: usize) -> PathBuf {
    repo.join(format!("d{:03}/f{:03}.txt", n % DIRS, n / DIRS))
}

/// Appends a line to 10 files chosen by `seed`; distinct seeds touch distinct files.
fn modify(repo: &Path, seed: usize) {
    for k in 0..CHANGED {
        let path = file(repo, (seed * CHANGED + k) * 97 % (DIRS * FILES_PER_DIR));
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!("change {seed} {k}\n"));
        fs::write(&path, text).unwrap();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The median in milliseconds.
fn median_ms(samples: Vec<Duration>) -> f64 {
    ms(median(samples))
}

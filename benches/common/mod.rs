//! What every benchmark uses: git run in a sanitized environment, a seeded repository, a timed
//! command, medians.
//! Included by each bench with `#[path = "common/mod.rs"] mod common;` (benches are separate
//! crates; a folder with `mod.rs` is not itself taken for a bench target).

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs git in `dir`, with `home` as `$HOME` and no global or system configuration; panics
/// with git's stderr when it fails.
pub fn git(dir: &Path, home: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A git repository in `dir` with everything in it committed once (`seed`), as a user's
/// workspace would be before orchestrator runs there.
pub fn commit_everything(dir: &Path, home: &Path) {
    git(dir, home, &["init", "-q"]);
    git(dir, home, &["add", "-A"]);
    git(
        dir,
        home,
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-qm",
            "seed",
        ],
    );
}

/// libgit2 reads $HOME/.gitconfig and /etc/gitconfig, not `GIT_CONFIG_GLOBAL`: points its
/// search paths at `home` so the in-process side sees as clean a configuration as git's.
/// Call once, single-threaded, before any repository is opened.
pub fn isolate_libgit2(home: &Path) {
    for level in [
        git2::ConfigLevel::Global,
        git2::ConfigLevel::XDG,
        git2::ConfigLevel::System,
    ] {
        // SAFETY: the caller runs this before any repository is opened, on one thread.
        unsafe { git2::opts::set_search_path(level, home).unwrap() };
    }
}

/// How long `cmd` takes to run to its end; panics with its stderr when it fails.
pub fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect("command runs");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// The middle sample (the upper one of an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

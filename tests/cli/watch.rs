//! `orchestrator watch` (issue 17) in a real pseudo-terminal: tmux at 80x24 runs it, another
//! process checkpoints, the screen follows; a resize redraws; `q` quits with 0. Without a
//! terminal it refuses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// tmux, installed here when missing and possible (CI installs it in .ci/run).
fn tmux_available() -> bool {
    let found = || {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found() {
        return true;
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "tmux"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    found()
}

/// A tmux server of its own (its socket in a temp dir), killed when dropped.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(command: &str, width: u16, height: u16) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let tmux = Tmux {
            socket: dir.path().join("socket"),
            _dir: dir,
        };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "watch",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TERM", "xterm-256color")
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "watch"])
    }

    /// Polls the screen until `check` holds; false past `within`.
    fn wait(&self, within: Duration, check: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if check(&self.screen()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn watch_follows_a_checkpoint_redraws_on_resize_and_quits_with_q() {
    if !tmux_available() {
        println!("SKIPPED: tmux is not installed and cannot be (CI installs it in .ci/run)");
        return;
    }
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    ws.ok(&[
        "checkpoint",
        "first units",
        "--progress",
        "3",
        "--tokens",
        "90000",
    ]);
    let exit_file = ws.home().join("watch.exit");
    let command = format!(
        "cd {dir} && env HOME={home} ORCHESTRATOR_NOW={now} {bin} watch; echo $? > {exit}; sleep 60",
        dir = shell_quote(ws.path()),
        home = shell_quote(ws.home()),
        now = ws.now(),
        bin = shell_quote(Path::new(BIN)),
        exit = shell_quote(&exit_file),
    );
    let tmux = Tmux::start(&command, 80, 24);
    assert!(
        tmux.wait(Duration::from_secs(20), |s| s.contains("progress 3/40")),
        "watch never showed the session:\n{}",
        tmux.screen()
    );
    let screen = tmux.screen();
    assert!(
        screen.contains("integrate_sessions_101_140 · claude"),
        "{screen}"
    );
    assert!(screen.contains("context 45% ok"), "{screen}");
    assert!(screen.contains("last checkpoint"), "{screen}");
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "fits in 80 columns:\n{screen}"
    );

    // Another process checkpoints: the screen shows it within 2 s.
    ws.ok(&[
        "checkpoint",
        "more units",
        "--progress",
        "7",
        "--tokens",
        "160000",
        "--exit-zero",
    ]);
    assert!(
        tmux.wait(Duration::from_secs(2), |s| s.contains("progress 7/40")
            && s.contains("context 80% warn")),
        "the checkpoint did not show within 2 s:\n{}",
        tmux.screen()
    );

    // A resize redraws at the new size: the frame spans the new width.
    tmux.run(&["resize-window", "-t", "watch", "-x", "100", "-y", "30"]);
    assert!(
        tmux.wait(Duration::from_secs(5), |s| s.lines().any(|l| l
            .starts_with("┌ live sessions")
            && l.chars().count() == 100)),
        "no redraw at 100 columns:\n{}",
        tmux.screen()
    );

    tmux.run(&["send-keys", "-t", "watch", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exit_file.exists() {
        assert!(
            Instant::now() < deadline,
            "q did not quit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
}

#[test]
fn watch_without_a_terminal_refuses_clearly() {
    let ws = Ws::seed();
    let err = ws.refused(&["watch"]);
    assert!(err.contains("watch needs a terminal"), "{err}");
}

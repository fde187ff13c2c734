//! How the commands' cost grows with the stack: 10 to 100,000 tasks, against `git rev-parse HEAD`
//! measured in the same run, plus peak memory and 20 agents checkpointing at once.
//!
//! Run with `cargo bench --bench scale` (`SCALE_MAX_TASKS=10000` to skip the 100,000-task stack).
//! Prints medians, ratios and figures; asserts nothing but that no checkpoint was lost.

use chrono::{DateTime, Duration as Span, Utc};
use orchestrator::core::stack::{Checkpoint, Settings, Task, TaskStack};
use serde_json::Map;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{commit_everything, median, ms};

/// The stacks of the goal: every task carries five checkpoints, as after a few sessions each.
const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];
const CHECKPOINTS_PER_TASK: usize = 5;
/// The size at which `next`, `status` and `start` are measured, and the concurrent run made.
const READ_SIZE: usize = 10_000;
const AGENTS: usize = 20;
const CHECKPOINTS_PER_AGENT: usize = 10;
const NOW: &str = "2025-11-06T00:13:55Z";

fn main() {
    let max: usize = std::env::var("SCALE_MAX_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    println!("scale: each figure is a median; ratios against `git rev-parse HEAD` in the same run");
    for &tasks in SIZES.iter().filter(|&&n| n <= max) {
        let bench = Workspace::build(tasks);
        bench.checkpoints(tasks);
        if tasks == READ_SIZE {
            bench.reads();
            bench.concurrent();
        }
    }
}

struct Workspace {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    stack_bytes: u64,
}

impl Workspace {
    /// A git repository holding a stack of `tasks` tasks built as `task add` and a few sessions
    /// of checkpoints would leave it.
    fn build(tasks: usize) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = tempfile::tempdir().expect("temp home");
        let text = stack(tasks).to_json();
        std::fs::write(dir.path().join("task_stack.json"), &text).expect("write the stack");
        let ws = Workspace {
            dir,
            home,
            stack_bytes: text.len() as u64,
        };
        commit_everything(ws.root(), ws.home.path());
        ws
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `checkpoint` on a live session, alternating with git so both see the same machine.
    fn checkpoints(&self, tasks: usize) {
        self.orchestrator(&["start", "--task", "task_000000", "--agent", "bench"])
            .status()
            .expect("start runs")
            .success()
            .then_some(())
            .expect("start succeeds");
        let runs = runs_for(tasks);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut peak = 0;
        for i in 0..runs {
            let tokens = (1000 + i).to_string();
            let mut cmd = self.orchestrator(&[
                "checkpoint",
                "parsed one more session",
                "--advance",
                "1",
                "--tokens",
                &tokens,
                "--exit-zero",
            ]);
            let (elapsed, rss) = measure(&mut cmd);
            ours.push(elapsed);
            peak = peak.max(rss);
            theirs.push(measure(&mut self.git_rev_parse()).0);
            if i + 1 == runs {
                peak = peak_memory(&cmd).unwrap_or(peak);
            }
        }
        let (ours, theirs) = (median(ours), median(theirs));
        println!(
            "checkpoint, {tasks:>6} tasks ({:>9}): {:>8.2} ms   git {:>5.2} ms   ratio {:>6.1}x (goal <= 3x)   peak {:>8} ({:.1}x the stack)",
            bytes(self.stack_bytes),
            ms(ours),
            ms(theirs),
            ms(ours) / ms(theirs),
            bytes(peak),
            peak as f64 / self.stack_bytes as f64
        );
        self.orchestrator(&["wrap", "--no-commit", "--no-backup", "--agent", "bench"])
            .status()
            .expect("wrap runs");
    }

    /// `next`, `status` and `start` at the read size.
    fn reads(&self) {
        self.orchestrator(&["start", "--task", "task_000001", "--agent", "reader"])
            .status()
            .expect("start runs");
        let runs = runs_for(READ_SIZE);
        for command in [&["next"][..], &["status", "--exit-zero"][..]] {
            let (mut ours, mut theirs, mut peak) = (Vec::new(), Vec::new(), 0);
            for _ in 0..runs {
                let (elapsed, rss) = measure(&mut self.orchestrator(command));
                ours.push(elapsed);
                peak = peak.max(rss);
                theirs.push(measure(&mut self.git_rev_parse()).0);
            }
            peak = peak_memory(&self.orchestrator(command)).unwrap_or(peak);
            self.report(command[0], median(ours), median(theirs), peak);
        }
        self.orchestrator(&["wrap", "--no-commit", "--no-backup", "--agent", "reader"])
            .status()
            .expect("wrap runs");
        // Each `start` claims a task: a record in the checkpoint journal (after the wrap above
        // folded it, the only one), undone (untimed) by removing it and the session.
        let journal = self.root().join(".orchestrator/journal.jsonl");
        let (mut ours, mut theirs, mut peak) = (Vec::new(), Vec::new(), 0);
        let undo_start = || {
            std::fs::remove_file(&journal).expect("remove the claim");
            let active = self.root().join(".orchestrator/sessions/active");
            std::fs::remove_dir_all(&active).expect("remove the session");
        };
        let measured = peak_memory(&self.orchestrator(&["start", "--agent", "starter", "--json"]));
        if measured.is_some() {
            undo_start();
        }
        for _ in 0..runs {
            let (elapsed, rss) =
                measure(&mut self.orchestrator(&["start", "--agent", "starter", "--json"]));
            ours.push(elapsed);
            peak = peak.max(rss);
            theirs.push(measure(&mut self.git_rev_parse()).0);
            undo_start();
        }
        self.report(
            "start",
            median(ours),
            median(theirs),
            measured.unwrap_or(peak),
        );
    }

    fn report(&self, command: &str, ours: Duration, theirs: Duration, peak: u64) {
        println!(
            "{command:<10} {READ_SIZE} tasks: {:>8.2} ms   git {:>5.2} ms   ratio {:>6.1}x (goal <= 10x)   peak {:>8} ({:.1}x the stack; goal <= 2x)",
            ms(ours),
            ms(theirs),
            ms(ours) / ms(theirs),
            bytes(peak),
            peak as f64 / self.stack_bytes as f64
        );
    }

    /// 20 agents, each with its own session, checkpointing as fast as they can.
    fn concurrent(&self) {
        for agent in 0..AGENTS {
            let task = format!("task_{:06}", agent_task(agent));
            let name = format!("agent{agent:02}");
            // Twenty agents in one tree on purpose: `start` warns about it, which is not news here.
            let out = self
                .orchestrator(&["start", "--task", &task, "--agent", &name])
                .stderr(Stdio::piped())
                .output()
                .expect("start runs");
            assert!(
                out.status.success(),
                "start of {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let before: Vec<u64> = (0..AGENTS).map(|a| self.done(agent_task(a))).collect();
        let started = Instant::now();
        let workers: Vec<_> = (0..AGENTS)
            .map(|agent| {
                let script = format!(
                    "for i in $(seq {CHECKPOINTS_PER_AGENT}); do \"$0\" checkpoint \"unit $i\" --advance 1 --tokens 1000 --exit-zero --agent agent{agent:02} || exit 1; done"
                );
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(script)
                    .arg(env!("CARGO_BIN_EXE_orchestrator"));
                self.environment(&mut cmd);
                cmd.env("RUST_LOG", "orchestrator=debug")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("a worker starts")
            })
            .collect();
        let mut longest_wait = Duration::ZERO;
        for worker in workers {
            let out = worker.wait_with_output().expect("a worker ends");
            assert!(out.status.success(), "a checkpoint failed");
            longest_wait = longest_wait.max(longest_lock_wait(&out.stderr));
        }
        let wall = started.elapsed();
        let lost: u64 = (0..AGENTS)
            .map(|a| before[a] + CHECKPOINTS_PER_AGENT as u64 - self.done(agent_task(a)))
            .sum();
        assert_eq!(lost, 0, "checkpoints were lost");
        let total = AGENTS * CHECKPOINTS_PER_AGENT;
        println!(
            "concurrent {READ_SIZE} tasks: {AGENTS} agents x {CHECKPOINTS_PER_AGENT} checkpoints in {:.2} s: {:.0} checkpoints/s, longest lock wait {:.1} ms, none lost",
            wall.as_secs_f64(),
            total as f64 / wall.as_secs_f64(),
            ms(longest_wait)
        );
    }

    /// Units done on `task_<n>`, as `task show --json` reports them.
    fn done(&self, n: usize) -> u64 {
        let out = self
            .orchestrator(&["task", "show", &format!("task_{n:06}"), "--json"])
            .stdout(Stdio::piped())
            .output()
            .expect("task show runs");
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one object");
        let task = value.get("task").unwrap_or(&value);
        task["progress"]["done"].as_u64().expect("progress.done")
    }

    fn orchestrator(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        cmd.args(args);
        self.environment(&mut cmd);
        cmd.stdout(Stdio::null());
        cmd
    }

    fn environment(&self, cmd: &mut Command) {
        cmd.current_dir(self.root())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("ORCHESTRATOR_NOW", NOW)
            .env("RUST_LOG", "error");
    }

    fn git_rev_parse(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(["rev-parse", "HEAD"])
            .current_dir(self.root())
            .env("HOME", self.home.path())
            .stdout(Stdio::null());
        cmd
    }
}

/// A stack as `task add` builds it, each task with checkpoints of earlier sessions.
fn stack(tasks: usize) -> TaskStack {
    let mut stack = TaskStack::new(Settings::default());
    let at: DateTime<Utc> = NOW.parse().expect("a time");
    for i in 0..tasks {
        let depends_on = if i > 0 && i % 3 == 0 {
            vec![format!("task_{:06}", i - 1)]
        } else {
            Vec::new()
        };
        let mut task = Task::new(
            format!("task_{i:06}"),
            format!(
                "Integrate sessions {} to {} into the archive",
                i * 40 + 1,
                i * 40 + 40
            ),
            1 + (i / 10) as i64,
            1_000_000,
            depends_on,
        );
        for c in 0..CHECKPOINTS_PER_TASK {
            task.record_checkpoint(Checkpoint {
                at: at - Span::minutes((CHECKPOINTS_PER_TASK - c) as i64),
                session: "session_20251105_101500".into(),
                message: format!(
                    "Parsed sessions {} to {}; schema unchanged",
                    c * 8,
                    c * 8 + 7
                ),
                progress: 0,
                tokens: Some(40_000 + 10_000 * c as u64),
                extra: Map::new(),
            });
        }
        stack.tasks.push(task);
    }
    stack
}

/// Fewer runs on the big stacks, where one run already takes long.
fn runs_for(tasks: usize) -> usize {
    match tasks {
        0..=1_000 => 50,
        1_001..=10_000 => 20,
        _ => 5,
    }
}

/// Wall time and peak resident memory of one run of `cmd`, which must succeed.
fn measure(cmd: &mut Command) -> (Duration, u64) {
    let started = Instant::now();
    // Reaped by wait4 below, which std's `wait` cannot do while also returning the rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("the command starts");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, filling `status` and `usage`, which outlive the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "{cmd:?} failed: {status}");
    // Linux reports ru_maxrss in KiB.
    (elapsed, usage.ru_maxrss as u64 * 1024)
}

/// Peak resident memory of one run of `cmd`, from GNU time (`/usr/bin/time -f %M`), or `None`
/// without it. A child spawned straight from this process would report this process's own
/// high-water mark: Linux folds the memory of the process that spawned it into a child's
/// `ru_maxrss` at exec, and this one holds the whole stack it built. GNU time forks the command
/// from a small process of its own.
fn peak_memory(cmd: &Command) -> Option<u64> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let out = tempfile::NamedTempFile::new().ok()?;
    let mut wrapped = Command::new(time);
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(out.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    if !wrapped.status().ok()?.success() {
        return None;
    }
    let text = std::fs::read_to_string(out.path()).ok()?;
    let kib: u64 = text.lines().last()?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The longest "waited ... for the workspace lock" that a worker's debug log reports.
fn longest_lock_wait(stderr: &[u8]) -> Duration {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|line| line.split("lock_wait_us=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_micros)
        .max()
        .unwrap_or_default()
}

fn bytes(n: u64) -> String {
    match n {
        0..1_048_576 => format!("{:.0} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// The task agent `n` works on in the concurrent run: one with no dependency (every third task
/// waits on the one before it), far from the tasks the other measurements claimed.
fn agent_task(n: usize) -> usize {
    1_000 + 3 * n + 1
}

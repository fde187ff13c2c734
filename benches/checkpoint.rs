//! `checkpoint` on a 1,000-task stack, against `git rev-parse HEAD` measured in the same run.
//!
//! Run with `cargo bench --bench checkpoint`. Prints medians and the ratio; asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[path = "common/mod.rs"]
mod common;
use common::{commit_everything, median, ms, time};

const TASKS: usize = 1000;
const RUNS: usize = 200;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = tempfile::tempdir().expect("temp home");
    let root = dir.path();
    write_stack(root);
    commit_everything(root, home.path());
    let status = orchestrator(root, home.path(), &["start", "--task", "task_0000"])
        .status()
        .expect("start runs");
    assert!(status.success(), "start failed");

    let mut ours = Vec::with_capacity(RUNS);
    let mut theirs = Vec::with_capacity(RUNS);
    let mut copies = Vec::with_capacity(RUNS);
    let mut floors = Vec::with_capacity(RUNS);
    let stack_bytes = std::fs::read(root.join("task_stack.json")).expect("stack");
    let scratch = root.join("scratch_copy.json");
    for i in 0..RUNS {
        // Alternate, so both see the same machine state.
        let tokens = (1000 + i).to_string();
        let mut cmd = orchestrator(
            root,
            home.path(),
            &[
                "checkpoint",
                "bench",
                "--advance",
                "1",
                "--tokens",
                &tokens,
                "--exit-zero",
            ],
        );
        ours.push(time(&mut cmd));
        let mut cmd = Command::new("git");
        cmd.args(["rev-parse", "HEAD"])
            .current_dir(root)
            .env("HOME", home.path());
        theirs.push(time(&mut cmd));
        let mut cmd = Command::new("cp");
        cmd.arg(root.join("task_stack.json")).arg(&scratch);
        copies.push(time(&mut cmd));
        // The floor: one durable atomic replace of a file the stack's size, in this process.
        let started = Instant::now();
        orchestrator::store::file::write_atomic(&scratch, &stack_bytes).expect("atomic write");
        floors.push(started.elapsed());
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let (copy, floor) = (median(copies), median(floors));
    let size = stack_bytes.len() / 1024;
    println!("checkpoint on a {TASKS}-task stack ({size} KiB), median of {RUNS} runs");
    println!("  orchestrator checkpoint:       {:>7.2} ms", ms(ours));
    println!(
        "  git rev-parse HEAD:            {:>7.2} ms  ratio {:.2}x (target <= 3x, <= 5 ms)",
        ms(theirs),
        ms(ours) / ms(theirs)
    );
    println!(
        "  cp of the stack (no fsync):    {:>7.2} ms  ratio {:.2}x",
        ms(copy),
        ms(ours) / ms(copy)
    );
    println!(
        "  one durable atomic replace of the stack, in-process: {:>7.2} ms (the floor)",
        ms(floor)
    );
}

fn write_stack(root: &Path) {
    let tasks: Vec<serde_json::Value> = (0..TASKS)
        .map(|i| {
            serde_json::json!({
                "id": format!("task_{i:04}"),
                "title": format!("Integrate sessions {} to {}", i * 40 + 1, i * 40 + 40),
                "priority": 1 + i / 10,
                "status": "pending",
                "progress": {"done": 0, "total": 1_000_000},
                "depends_on": if i > 0 && i % 3 == 0 { vec![format!("task_{:04}", i - 1)] } else { vec![] },
                "checkpoints": (0..3).map(|c| serde_json::json!({
                    "at": "2025-11-06T00:15:02Z", "session": "session_20251106_001355",
                    "message": format!("checkpoint {c} of an earlier session"), "progress": 0
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let stack = serde_json::json!({"version": 1, "tasks": tasks});
    std::fs::write(
        root.join("task_stack.json"),
        serde_json::to_string_pretty(&stack).unwrap(),
    )
    .unwrap();
}

fn orchestrator(root: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.args(args)
        .current_dir(root)
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(std::process::Stdio::null());
    cmd
}

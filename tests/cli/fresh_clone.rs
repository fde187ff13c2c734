//! A fresh clone, as a new user meets it: the README's commands, the example stack out of the
//! way of scratch folders, the workspace named when found above, and a demo that shows the levels.

use serde_json::Value;
use std::path::Path;

use crate::common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn a_scratch_folder_inside_the_clone_finds_no_workspace_by_walking_up() {
    assert!(
        !Path::new(REPO).join("task_stack.json").exists(),
        "the repository root must not hold a task_stack.json: `orchestrator next` in any folder of a clone would use it"
    );
    let scratch = tempfile::Builder::new()
        .prefix(".scratch-")
        .tempdir_in(REPO)
        .unwrap();
    let ws = Ws::empty();
    let out = ws
        .command(&["next"])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no task_stack.json in") && stderr.contains("or any parent directory"),
        "{stderr}"
    );
    // The example is still one command away.
    let example = Path::new(REPO).join("examples");
    let next = ws.json(0, &["-C", example.to_str().unwrap(), "next"]);
    assert_eq!(next["task"], "integrate_sessions_101_140", "{next}");
}

#[test]
fn a_workspace_found_above_the_current_directory_is_named_on_stderr_only() {
    let ws = Ws::seed();
    std::fs::create_dir_all(ws.file("src/deep")).unwrap();
    let root = ws.path().canonicalize().unwrap();
    let note = format!(
        "note: using workspace {} (found above the current directory)",
        root.display()
    );

    let out = ws
        .command(&["next", "--json"])
        .current_dir(ws.file("src/deep"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let value: Value = serde_json::from_str(&stdout).expect("stdout is exactly one JSON object");
    assert_eq!(value["task"], "integrate_sessions_101_140");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [note.as_str()],
        "{stderr}"
    );

    // Plain output: the note on stderr, never on stdout.
    let out = ws
        .command(&["task", "list"])
        .current_dir(ws.file("src/deep"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&note));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("using workspace"));

    // In the workspace itself, or with the workspace named, there is nothing to say.
    let out = ws.command(&["next"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = root.to_str().unwrap();
    let out = ws
        .command(&["-C", dir, "next"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let out = ws
        .command(&["next"])
        .current_dir(ws.file("src/deep"))
        .env("ORCHESTRATOR_DIR", dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn the_demo_reaches_the_warn_level_and_prints_the_wrap() {
    let ws = Ws::empty();
    let target = ws.file("demo");
    let out = ws.ok(&["demo", "--dir", target.to_str().unwrap()]);
    let checkpoints: Vec<&str> = out.lines().filter(|l| l.starts_with("level=")).collect();
    assert_eq!(checkpoints.len(), 2, "{out}");
    assert!(checkpoints[0].starts_with("level=ok "), "{out}");
    assert!(checkpoints[1].starts_with("level=warn "), "{out}");
    assert!(out.contains("[exit 10: warn level"), "{out}");
    // The wrap's own output, not a summary of it.
    let wrap = out
        .split("$ orchestrator wrap")
        .nth(1)
        .unwrap_or_else(|| panic!("no wrap step: {out}"));
    assert!(
        wrap.lines()
            .any(|l| l.starts_with("session=session_") && l.contains(" handoff=")),
        "{out}"
    );
    assert!(wrap.contains("Wrapped session_"), "{out}");
    assert!(wrap.contains("metric qa_pairs: 23627"), "{out}");

    let target = ws.file("demo-json");
    let v = ws.json(0, &["demo", "--dir", target.to_str().unwrap()]);
    let steps = v["steps"].as_array().unwrap();
    let exits: Vec<(&str, i64)> = steps
        .iter()
        .map(|s| (s["args"][0].as_str().unwrap(), s["exit"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        exits,
        [
            ("start", 0),
            ("checkpoint", 0),
            ("checkpoint", 10),
            ("wrap", 0)
        ]
    );
    assert_eq!(steps[2]["output"]["level"], "warn", "{v}");
    assert_eq!(steps[3]["output"]["handoff"], v["handoff"], "{v}");
}

/// The first command of a fenced block that follows `heading` in `text`.
fn first_command_after(text: &str, heading: &str) -> String {
    let section = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"))
        .1;
    let block = section.split_once("```sh\n").expect("a sh block").1;
    block.lines().next().unwrap().to_string()
}

#[test]
fn the_readme_test_command_needs_only_the_rust_toolchain_and_is_what_ci_runs() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let ci = std::fs::read_to_string(Path::new(REPO).join(".ci/run")).unwrap();
    let command = first_command_after(&readme, "## Testing");
    assert_eq!(command, "cargo test", "README's test command");
    let ci_commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        ci_commands
            .iter()
            .any(|l| *l == format!("{command} --locked")),
        ".ci/run must run README's test command (with --locked):\n{ci}"
    );
    assert!(
        !ci_commands.iter().any(|l| l.contains("nextest")),
        ".ci/run must not need nextest:\n{ci}"
    );
    assert!(
        readme.contains("cargo install cargo-nextest --locked"),
        "README names nextest as the faster option, with its install command"
    );
    assert!(
        first_command_after(&readme, "## Quick start").starts_with("cargo run --release -- demo "),
        "README's quick start begins with the demo"
    );
    assert!(
        !readme.contains("../shared"),
        "README links docs/, not files outside the clone"
    );
}

//! Issue 12: a git worktree per session, integrated back at wrap; shared-tree wraps that commit
//! only their own; `worktree list|prune|integrate`.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_EDITOR", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn git(ws: &Ws, args: &[&str]) -> String {
    git_in(ws.path(), args)
}

/// A workspace with `tasks` (one unit each) in a git repository on `main`, all committed.
fn repo(tasks: &[&str]) -> Ws {
    let ws = Ws::new();
    for id in tasks {
        ws.ok(&["task", "add", id, "--title", id]);
    }
    git(&ws, &["init", "-q", "-b", "main"]);
    git(&ws, &["config", "user.name", "Dev"]);
    git(&ws, &["config", "user.email", "dev@example.com"]);
    ws.write("shared.txt", "one\ntwo\nthree\n");
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "init"]);
    ws
}

/// Starts a session in its own worktree; its id and the agent's directory.
fn start_in_worktree(ws: &Ws, agent: &str, task: &str) -> (String, PathBuf) {
    let v = ws.json(
        0,
        &["start", "--worktree", "--agent", agent, "--task", task],
    );
    let path = PathBuf::from(v["worktree"]["path"].as_str().unwrap());
    assert_eq!(
        v["worktree"]["branch"],
        format!("orchestrator/{task}"),
        "{v}"
    );
    assert_eq!(v["worktree"]["base"], "main", "{v}");
    (v["session"].as_str().unwrap().to_string(), path)
}

/// The binary run with `dir` as its current directory.
fn in_dir(ws: &Ws, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = ws.command(args);
    cmd.current_dir(dir);
    cmd.output().unwrap()
}

fn ok_in(ws: &Ws, dir: &Path, args: &[&str]) -> String {
    let out = in_dir(ws, dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Each commit on `main` since `init`: subject, session trailer, files.
fn commits(ws: &Ws) -> Vec<(String, String, Vec<String>)> {
    let log = git(
        ws,
        &[
            "log",
            "--format=@@%s%n%(trailers:key=Orchestrator-Session,valueonly)",
            "--name-only",
            "main",
        ],
    );
    log.split("@@")
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            let mut lines = c.lines().filter(|l| !l.trim().is_empty());
            let subject = lines.next().unwrap().to_string();
            let rest: Vec<&str> = lines.collect();
            let (session, files) = match rest.first() {
                Some(first) if first.starts_with("session_") => (first.to_string(), &rest[1..]),
                _ => (String::new(), &rest[..]),
            };
            (
                subject,
                session,
                files.iter().map(|f| f.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn worktree_sessions_edit_different_files_and_both_land_on_main_in_either_order() {
    for a_first in [true, false] {
        let ws = repo(&["t1", "t2"]);
        let (a, a_dir) = start_in_worktree(&ws, "a", "t1");
        let (b, b_dir) = start_in_worktree(&ws, "b", "t2");
        assert!(a_dir.starts_with(ws.path().join(".orchestrator/worktrees")));
        std::fs::write(a_dir.join("a.txt"), "from a\n").unwrap();
        git_in(&a_dir, &["add", "a.txt"]);
        git_in(&a_dir, &["commit", "-qm", "agent a's own commit"]);
        std::fs::write(a_dir.join("a2.txt"), "left uncommitted by a\n").unwrap();
        std::fs::write(b_dir.join("b.txt"), "from b\n").unwrap();
        let order = if a_first {
            [(&a, &a_dir), (&b, &b_dir)]
        } else {
            [(&b, &b_dir), (&a, &a_dir)]
        };
        for (session, dir) in order {
            // Run from inside the worktree: it acts on the main workspace.
            ok_in(&ws, dir, &["wrap", "--done", "--session", session]);
        }
        let all = commits(&ws);
        let files_of = |session: &str| -> Vec<String> {
            all.iter()
                .filter(|(_, s, _)| s == session)
                .flat_map(|(_, _, f)| f.clone())
                .collect()
        };
        let (a_files, b_files) = (files_of(&a), files_of(&b));
        assert!(a_files.contains(&"a2.txt".to_string()), "{all:?}");
        assert!(b_files.contains(&"b.txt".to_string()), "{all:?}");
        for f in ["a.txt", "a2.txt"] {
            assert!(!b_files.contains(&f.to_string()), "{all:?}");
        }
        assert!(!a_files.contains(&"b.txt".to_string()), "{all:?}");
        assert!(
            all.iter()
                .any(|(s, _, f)| s == "agent a's own commit" && f == &["a.txt"]),
            "the agent's own commit is kept: {all:?}"
        );
        assert_eq!(ws.read("a.txt"), "from a\n");
        assert_eq!(ws.read("b.txt"), "from b\n");
        assert_eq!(ws.task("t1")["status"], "done");
        assert_eq!(ws.task("t2")["status"], "done");
        assert_eq!(git(&ws, &["status", "--porcelain"]), "", "main is clean");
        assert_eq!(git(&ws, &["worktree", "list"]).lines().count(), 1);
        assert_eq!(git(&ws, &["branch", "--list", "orchestrator/*"]), "");
        assert_eq!(ws.files_in(".orchestrator/worktrees"), Vec::<String>::new());
    }
}

#[test]
fn commands_run_inside_a_worktree_act_on_the_main_workspace() {
    let ws = repo(&["t1"]);
    let (session, dir) = start_in_worktree(&ws, "a", "t1");
    let checkout_stack = std::fs::read(dir.join("task_stack.json")).unwrap();
    let out = ok_in(
        &ws,
        &dir,
        &["checkpoint", "half", "--progress", "0", "--tokens", "10"],
    );
    assert!(out.starts_with("level=ok"), "{out}");
    let status = in_dir(&ws, &dir.join("."), &["status", "--json"]);
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["session"], session, "{v}");
    assert_eq!(
        std::fs::read(dir.join("task_stack.json")).unwrap(),
        checkout_stack,
        "the worktree's copy of the stack is never state"
    );
    assert_eq!(ws.task("t1")["checkpoints"][0]["message"], "half");
    assert!(!dir.join(".orchestrator/sessions/active").exists());
    // -C pointing into the worktree means the main workspace too.
    let v = ws.json(0, &["-C", dir.to_str().unwrap(), "status"]);
    assert_eq!(v["session"], session);
}

#[test]
fn the_agent_of_a_worktree_session_is_told_where_to_work() {
    let ws = repo(&["t1"]);
    let out = ws.ok(&["start", "--worktree", "--task", "t1"]);
    let dir = ws.path().join(".orchestrator/worktrees/t1");
    assert!(
        out.contains(&format!("Worktree:        {}", dir.display())),
        "{out}"
    );
    assert!(out.contains("branch orchestrator/t1"), "{out}");
    // settings.parallel.worktrees gives every session one.
    let ws = repo(&["t1"]);
    ws.ok(&["config", "set", "parallel.worktrees", "true"]);
    let v = ws.json(0, &["start"]);
    assert_eq!(v["worktree"]["branch"], "orchestrator/t1", "{v}");
}

/// Two sessions change the same line of `shared.txt`: the second to wrap conflicts.
fn conflicting_pair(ws: &Ws) -> (String, PathBuf) {
    let (a, a_dir) = start_in_worktree(ws, "a", "t1");
    let (b, b_dir) = start_in_worktree(ws, "b", "t2");
    std::fs::write(a_dir.join("shared.txt"), "one\nTWO by a\nthree\n").unwrap();
    std::fs::write(b_dir.join("shared.txt"), "one\nTWO by b\nthree\n").unwrap();
    std::fs::write(b_dir.join("b_only.txt"), "b's other work\n").unwrap();
    ws.ok(&["wrap", "--done", "--session", &a]);
    (b, b_dir)
}

#[test]
fn a_conflicting_integration_loses_nothing_blocks_the_task_and_is_finished_by_worktree_integrate() {
    let ws = repo(&["t1", "t2"]);
    let (b, b_dir) = conflicting_pair(&ws);
    let main_before = git(&ws, &["rev-parse", "main"]);
    let v = ws.json(0, &["wrap", "--done", "--session", &b]);
    assert_eq!(v["integrate"]["result"], "conflict", "{v}");
    assert_eq!(v["integrate"]["paths"], serde_json::json!(["shared.txt"]));
    assert_eq!(v["status"], "blocked");
    // The base branch got only b's bookkeeping, and is clean.
    let main_after = git(&ws, &["rev-parse", "main"]);
    assert_ne!(main_before, main_after);
    let last = &commits(&ws)[0];
    assert!(last.0.starts_with("Session Wrap: t2"), "{last:?}");
    assert!(
        last.2
            .iter()
            .all(|f| !f.contains("shared") && !f.contains("b_only")),
        "{last:?}"
    );
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
    assert_eq!(ws.read("shared.txt"), "one\nTWO by a\nthree\n");
    // Nothing lost: the branch holds b's work, the worktree is kept.
    assert_eq!(
        git(&ws, &["show", "orchestrator/t2:shared.txt"]),
        "one\nTWO by b\nthree\n"
    );
    assert_eq!(
        git(&ws, &["show", "orchestrator/t2:b_only.txt"]),
        "b's other work\n"
    );
    assert!(b_dir.join("b_only.txt").exists());
    let task = ws.task("t2");
    assert_eq!(task["status"], "blocked");
    let reason = task["blocked_reason"].as_str().unwrap();
    assert!(reason.starts_with("merge-conflict:"), "{reason}");
    assert!(reason.contains("shared.txt"), "{reason}");
    assert!(
        reason.contains("orchestrator worktree integrate t2"),
        "{reason}"
    );
    let handoff = std::fs::read_to_string(v["handoff"].as_str().unwrap()).unwrap();
    assert!(
        handoff.contains("Merge conflict, nothing lost"),
        "{handoff}"
    );
    assert!(ws.expect(3, &["next"]).contains("merge-conflict"));
    let listed = ws.json(0, &["worktree", "list"]);
    assert_eq!(listed["worktrees"][0]["state"], "conflict", "{listed}");
    assert_eq!(listed["worktrees"][0]["unintegrated"], true, "{listed}");
    // Prune keeps it.
    let pruned = ws.json(0, &["worktree", "prune"]);
    assert_eq!(pruned["removed"], serde_json::json!([]), "{pruned}");
    assert!(b_dir.exists());

    // Still conflicting: refused, nothing changes.
    let line = ws.refused(&["worktree", "integrate", "t2"]);
    assert!(
        line.contains("still conflicts") && line.contains("shared.txt"),
        "{line}"
    );
    assert_eq!(git(&ws, &["rev-parse", "main"]), main_after);

    // Resolved by hand as the reason says: rebase onto main in the worktree, fix, continue.
    let out = Command::new("git")
        .args(["rebase", "main"])
        .current_dir(&b_dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the rebase stops on the conflict");
    std::fs::write(b_dir.join("shared.txt"), "one\nTWO by a and b\nthree\n").unwrap();
    git_in(&b_dir, &["add", "shared.txt"]);
    git_in(&b_dir, &["-c", "core.editor=true", "rebase", "--continue"]);
    let v = ws.json(0, &["worktree", "integrate", "t2"]);
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(ws.read("shared.txt"), "one\nTWO by a and b\nthree\n");
    assert_eq!(ws.read("b_only.txt"), "b's other work\n");
    assert_eq!(ws.task("t2")["status"], "done");
    assert!(ws.task("t2")["blocked_reason"].is_null());
    assert!(!b_dir.exists());
    assert_eq!(git(&ws, &["branch", "--list", "orchestrator/*"]), "");
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
}

#[test]
fn merge_mode_makes_a_merge_commit_and_branch_mode_leaves_the_branch() {
    let ws = repo(&["t1", "t2"]);
    ws.ok(&["config", "set", "parallel.integrate", "merge"]);
    let (a, a_dir) = start_in_worktree(&ws, "a", "t1");
    let (b, b_dir) = start_in_worktree(&ws, "b", "t2");
    std::fs::write(a_dir.join("a.txt"), "a\n").unwrap();
    std::fs::write(b_dir.join("b.txt"), "b\n").unwrap();
    ws.ok(&["wrap", "--session", &a]);
    let v = ws.json(0, &["wrap", "--session", &b]);
    assert_eq!(v["integrate"]["result"], "integrated", "{v}");
    assert_eq!(v["integrate"]["fast_forward"], false, "{v}");
    let parents = git(&ws, &["log", "--merges", "--format=%s", "main"]);
    assert!(
        parents.contains("Merge orchestrator/t2 into main"),
        "{parents}"
    );
    assert_eq!(ws.read("b.txt"), "b\n");

    let ws = repo(&["t1"]);
    ws.ok(&["config", "set", "parallel.integrate", "branch"]);
    let (a, a_dir) = start_in_worktree(&ws, "a", "t1");
    std::fs::write(a_dir.join("a.txt"), "a\n").unwrap();
    let out = ws.ok(&["wrap", "--session", &a]);
    assert!(out.contains("left the work on orchestrator/t1"), "{out}");
    assert!(!ws.file("a.txt").exists());
    assert_eq!(git(&ws, &["show", "orchestrator/t1:a.txt"]), "a\n");
    assert!(!a_dir.exists(), "the worktree goes, the branch stays");
}

/// Every step of a worktree session's wrap, in order, where a kill can land.
const STEPS: &[&str] = &[
    "backup",
    "metrics",
    "branch-commit-pending",
    "git-owner",
    "branch-commit",
    "integrate-pending",
    "integrate-checkout",
    "integrate",
    "handoff",
    "stack",
    "archive",
    "commit-pending",
    "commit",
    "cleanup",
];

#[test]
fn a_kill_at_any_step_of_an_integrating_wrap_is_finished_once_by_wrap_or_start() {
    for (n, step) in STEPS.iter().enumerate() {
        let ws = repo(&["t1", "t2", "t3"]);
        // Another session moved main first, so the integration is a real rebase.
        let (other, other_dir) = start_in_worktree(&ws, "other", "t2");
        std::fs::write(other_dir.join("other.txt"), "other\n").unwrap();
        ws.ok(&["wrap", "--session", &other]);
        let (a, a_dir) = start_in_worktree(&ws, "a", "t1");
        std::fs::write(a_dir.join("a.txt"), "a\n").unwrap();
        git_in(&a_dir, &["add", "a.txt"]);
        git_in(&a_dir, &["commit", "-qm", "agent commit"]);
        std::fs::write(a_dir.join("a2.txt"), "a2\n").unwrap();
        let mut cmd = ws.command(&["wrap", "--done", "--session", &a]);
        cmd.env("ORCHESTRATOR_TEST_CRASH_AFTER", step);
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(86),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if n % 2 == 0 {
            ws.ok(&["wrap", "--session", &a]);
        } else {
            // `start` finishes the cut-off wrap before it starts anew.
            ws.ok(&["start", "--agent", "next", "--task", "t3"]);
        }
        let all = commits(&ws);
        let count = |subject: &str| all.iter().filter(|(s, _, _)| s == subject).count();
        assert_eq!(count("agent commit"), 1, "{step}: {all:?}");
        assert_eq!(count("Session Work: t1"), 1, "{step}: {all:?}");
        assert_eq!(count("Session Wrap: t1"), 1, "{step}: {all:?}");
        assert_eq!(ws.read("a.txt"), "a\n", "{step}");
        assert_eq!(ws.read("a2.txt"), "a2\n", "{step}");
        assert_eq!(ws.task("t1")["status"], "done", "{step}");
        assert!(!a_dir.exists(), "{step}: the worktree is removed");
        assert_eq!(
            git(&ws, &["branch", "--list", "orchestrator/t1"]),
            "",
            "{step}"
        );
        assert_eq!(
            git(&ws, &["status", "--porcelain", "--untracked-files=no"])
                .lines()
                .filter(|l| !l.ends_with("task_stack.json"))
                .count(),
            0,
            "{step}"
        );
    }
}

#[test]
fn a_shared_tree_wrap_never_commits_another_live_sessions_file() {
    let ws = repo(&["t1", "t2"]);
    let a = ws.json(0, &["start", "--agent", "a", "--task", "t1"]);
    let out = ws.run(&["start", "--agent", "b", "--task", "t2"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: another session works in this same tree"),
        "{stderr}"
    );
    ws.write("b_half_done.txt", "B's unfinished work\n");
    let v = ws.json(0, &["wrap", "--session", a["session"].as_str().unwrap()]);
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert!(v["commit"]["deferred"].is_object(), "{v}");
    let files = git(&ws, &["show", "--name-only", "--format=", "HEAD"]);
    assert!(!files.contains("b_half_done.txt"), "{files}");
    assert!(files.contains("task_stack.json"), "{files}");
    assert!(ws.file("b_half_done.txt").exists());
    let handoff = std::fs::read_to_string(v["handoff"].as_str().unwrap()).unwrap();
    assert!(!handoff.contains("b_half_done.txt"), "{handoff}");
    assert!(handoff.contains("Work tree not committed"), "{handoff}");
    // No other session live: the next wrap commits the work tree as before.
    let sessions = ws.json(12, &["status"]);
    let b = sessions["session"].as_str().unwrap().to_string();
    ws.ok(&["wrap", "--session", &b]);
    let files = git(&ws, &["show", "--name-only", "--format=", "HEAD"]);
    assert!(files.contains("b_half_done.txt"), "{files}");
}

#[test]
fn worktree_list_shows_the_owner_and_prune_removes_only_integrated_ones() {
    let ws = repo(&["t1", "t2"]);
    let (a, _a_dir) = start_in_worktree(&ws, "a", "t1");
    let v = ws.json(0, &["worktree", "list"]);
    let row = &v["worktrees"][0];
    assert_eq!(row["task"], "t1", "{v}");
    assert_eq!(row["session"], a);
    assert_eq!(row["state"], "live");
    assert_eq!(row["unintegrated"], false);
    let pruned = ws.json(0, &["worktree", "prune"]);
    assert_eq!(pruned["kept"][0]["why"], "its session is live", "{pruned}");
    // Wrapped with --no-commit: the work stays in the worktree, which prune keeps.
    let (b, b_dir) = start_in_worktree(&ws, "b", "t2");
    std::fs::write(b_dir.join("b.txt"), "b\n").unwrap();
    ws.ok(&["wrap", "--no-commit", "--session", &b]);
    let pruned = ws.json(0, &["worktree", "prune"]);
    assert!(b_dir.join("b.txt").exists(), "{pruned}");
    let v = ws.json(0, &["worktree", "list"]);
    let row = v["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "t2")
        .unwrap()
        .clone();
    assert_eq!(row["state"], "wrapped", "{v}");
    assert_eq!(row["uncommitted"], serde_json::json!(["b.txt"]), "{v}");
    // An integrated one whose cleanup did not happen (its record kept) is pruned.
    std::fs::remove_file(b_dir.join("b.txt")).unwrap();
    let pruned = ws.json(0, &["worktree", "prune"]);
    assert_eq!(pruned["removed"][0]["task"], "t2", "{pruned}");
    assert!(!b_dir.exists());
    assert_eq!(git(&ws, &["branch", "--list", "orchestrator/t2"]), "");
}

#[test]
fn run_workers_4_does_20_tasks_once_each_in_worktrees_and_leaves_none_behind() {
    let tasks: Vec<String> = (0..20).map(|i| format!("task_{i:02}")).collect();
    let ids: Vec<&str> = tasks.iter().map(String::as_str).collect();
    let ws = repo(&ids);
    crate::run::agent(
        &ws,
        "work.sh",
        r#"set -e
[ "$(pwd -P)" = "$(cd "$ORCHESTRATOR_WORKTREE" && pwd -P)" ] || exit 9
f="out_$ORCHESTRATOR_TASK.txt"
echo "$ORCHESTRATOR_TASK by $ORCHESTRATOR_AGENT" >> "$f"
git add "$f"
git commit -qm "work $ORCHESTRATOR_TASK"
orchestrator checkpoint "did it" --progress 1 --tokens 10 >/dev/null
orchestrator wrap --done >/dev/null"#,
    );
    git(&ws, &["add", "work.sh"]);
    git(&ws, &["commit", "-qm", "the agent"]);
    let out = crate::run::run(
        &ws,
        &["run", "--workers", "4", "--poll", "50ms", "--", "./work.sh"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        crate::run::stderr(&out)
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("run=")).count(), 1);
    assert!(
        stdout.contains("workers=4 stop=all_done sessions=20 exit=0"),
        "{stdout}"
    );
    let log = git(&ws, &["log", "--format=%s", "main"]);
    let agents: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| {
            assert_eq!(ws.task(id)["status"], "done", "{id}");
            let text = ws.read(&format!("out_{id}.txt"));
            assert_eq!(text.lines().count(), 1, "{id} done once: {text}");
            assert_eq!(
                log.lines().filter(|l| *l == format!("work {id}")).count(),
                1,
                "{id}: {log}"
            );
            text.split(" by ").nth(1).unwrap().trim().to_string()
        })
        .collect();
    assert!(agents.iter().all(|a| a.starts_with("agent-")), "{agents:?}");
    assert_eq!(git(&ws, &["worktree", "list"]).lines().count(), 1);
    assert_eq!(git(&ws, &["branch", "--list", "orchestrator/*"]), "");
    assert_eq!(ws.files_in(".orchestrator/worktrees"), Vec::<String>::new());
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
}

#[test]
fn ctrl_c_stops_every_worker_and_each_session_is_wrapped() {
    let ws = repo(&["t1", "t2", "t3"]);
    crate::run::agent(
        &ws,
        "slow.sh",
        "touch \"$ORCHESTRATOR_DIR/started_$ORCHESTRATOR_TASK\"\nsleep 60",
    );
    let child = crate::run::spawn_run(
        &ws,
        &[
            "run",
            "--workers",
            "2",
            "--grace",
            "5s",
            "--poll",
            "50ms",
            "--",
            "./slow.sh",
        ],
    );
    crate::run::wait_for("both agents to start", || {
        ws.path()
            .read_dir()
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("started_")
            })
            .count()
            == 2
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", crate::run::stderr(&out));
    let last = crate::run::final_line(&out);
    assert!(
        last.contains("workers=2 stop=interrupted sessions=2"),
        "{last}"
    );
    let sessions = crate::run::archived(&ws);
    assert_eq!(sessions.len(), 2);
    assert!(
        sessions
            .iter()
            .all(|s| s["wrap"]["reason"] == "interrupted")
    );
    assert!(ws.files_in(".orchestrator/sessions/active").is_empty());
    assert_eq!(ws.files_in(".orchestrator/worktrees"), Vec::<String>::new());
}

/// A stand-in for Claude Code that records where it ran, its arguments and the local settings
/// it would read there (`.claude/settings.local.json` of its working directory).
const FAKE_CLAUDE: &str = r#"#!/bin/sh
{ echo "cwd=$(pwd -P)"; echo "args=$*"; echo "worktree=$ORCHESTRATOR_WORKTREE"; } > "$ORCHESTRATOR_DIR/claude_seen"
cp .claude/settings.local.json "$ORCHESTRATOR_DIR/claude_local_settings.json" 2>/dev/null
echo "claude was here" > work.txt
"#;

#[test]
fn claude_started_in_a_worktree_gets_the_projects_hooks_and_permission() {
    let ws = repo(&["t1"]);
    ws.ok(&["hook", "install", "claude"]);
    ws.ok(&["config", "set", "parallel.worktrees", "true"]);
    let bin = tempfile::tempdir().unwrap();
    let claude = bin.path().join("claude");
    std::fs::write(&claude, FAKE_CLAUDE).unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&claude)
        .status()
        .unwrap();
    let mut cmd = crate::run::run_command(
        &ws,
        &[
            "run",
            "--max-sessions",
            "1",
            "--poll",
            "50ms",
            "--",
            "claude",
            "-p",
            "{brief}",
        ],
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let path = format!("{}:{path}", Path::new(BIN).parent().unwrap().display());
    cmd.env("PATH", path);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(20), "{}", crate::run::stderr(&out));
    let seen = ws.read("claude_seen");
    let worktree = ws
        .path()
        .canonicalize()
        .unwrap()
        .join(".orchestrator/worktrees/t1");
    assert!(
        seen.contains(&format!("cwd={}\n", worktree.display())),
        "{seen}"
    );
    assert!(seen.contains("args=-p session="), "{seen}");
    let local: Value = serde_json::from_str(&ws.read("claude_local_settings.json")).unwrap();
    let allow = local["permissions"]["allow"].to_string();
    assert!(allow.contains("Bash(orchestrator"), "{local}");
    for event in ["SessionStart", "PostToolUse", "SessionEnd"] {
        assert!(
            local["hooks"][event].to_string().contains("hook claude"),
            "{event}: {local}"
        );
    }
    // The copy never reaches a commit, and the worktree went once integrated.
    assert_eq!(ws.read("work.txt"), "claude was here\n");
    let committed = git(&ws, &["log", "--name-only", "--format=", "main"]);
    assert!(!committed.contains("settings.local.json"), "{committed}");
    assert!(!worktree.exists());
}

#[test]
fn a_worker_whose_integration_conflicts_is_logged_and_notified_and_the_task_blocked() {
    let ws = repo(&["t1", "t2"]);
    crate::run::agent(
        &ws,
        "clash.sh",
        r#"set -e
touch "$ORCHESTRATOR_DIR/started_$ORCHESTRATOR_TASK"
n=0
while [ "$(ls "$ORCHESTRATOR_DIR" | grep -c '^started_')" -lt 2 ] && [ $n -lt 200 ]; do sleep 0.1; n=$((n+1)); done
printf 'one\nTWO by %s\nthree\n' "$ORCHESTRATOR_TASK" > shared.txt
git commit -qam "edit by $ORCHESTRATOR_TASK"
orchestrator wrap --done >/dev/null"#,
    );
    // The notifier runs in the workspace.
    crate::run::agent(
        &ws,
        "notify.sh",
        "cat >> events.jsonl\necho >> events.jsonl",
    );
    git(&ws, &["add", "clash.sh", "notify.sh"]);
    git(&ws, &["commit", "-qm", "the agents"]);
    let notifier = ws.file("notify.sh");
    let out = crate::run::run(
        &ws,
        &[
            "run",
            "--workers",
            "2",
            "--poll",
            "50ms",
            "--on-event",
            notifier.to_str().unwrap(),
            "--",
            "./clash.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", crate::run::stderr(&out));
    let statuses: Vec<String> = ["t1", "t2"]
        .iter()
        .map(|t| ws.task(t)["status"].as_str().unwrap().to_string())
        .collect();
    assert!(
        statuses.contains(&"done".to_string()) && statuses.contains(&"blocked".to_string()),
        "{statuses:?}"
    );
    let logs: String = ws
        .files_in(".orchestrator/runs")
        .iter()
        .filter(|f| f.ends_with(".jsonl"))
        .map(|f| ws.read(&format!(".orchestrator/runs/{f}")))
        .collect();
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("\"event\":\"merge_conflict\""))
            .count(),
        1,
        "{logs}"
    );
    // Both sessions made progress by their commits.
    let ended: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains("\"event\":\"session_ended\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ended.len(), 2, "{logs}");
    assert!(
        ended.iter().all(|e| e["agent_commits"].as_u64() >= Some(1)),
        "{ended:?}"
    );
    let events = ws.read("events.jsonl");
    assert!(
        events.contains("\"event\":\"merge_conflict\"") && events.contains("shared.txt"),
        "{events}"
    );
}

#[test]
fn checkpoint_commit_commits_on_the_sessions_branch_or_only_its_own_in_a_shared_tree() {
    let ws = repo(&["t1", "t2", "t3"]);
    let (a, a_dir) = start_in_worktree(&ws, "a", "t1");
    std::fs::write(a_dir.join("a.txt"), "a\n").unwrap();
    let main_before = git(&ws, &["rev-parse", "main"]);
    let v = ws.json(12, &["checkpoint", "half way", "--commit", "--session", &a]);
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    assert_eq!(v["commit"]["branch"], "orchestrator/t1", "{v}");
    assert_eq!(git(&ws, &["rev-parse", "main"]), main_before);
    assert_eq!(git(&ws, &["show", "orchestrator/t1:a.txt"]), "a\n");

    // Two sessions in the main tree: a checkpoint commit takes only the stack.
    let b = ws.json(0, &["start", "--agent", "b", "--task", "t2"]);
    ws.json(0, &["start", "--agent", "c", "--task", "t3"]);
    ws.write("c_file.txt", "c's\n");
    let v = ws.json(
        12,
        &[
            "checkpoint",
            "b's step",
            "--commit",
            "--session",
            b["session"].as_str().unwrap(),
        ],
    );
    assert_eq!(v["commit"]["result"], "committed", "{v}");
    let files = git(&ws, &["show", "--name-only", "--format=", "main"]);
    assert_eq!(files.trim(), "task_stack.json", "{files}");
}

#[test]
fn worktrees_stay_out_of_git_add_in_a_workspace_whose_gitignore_predates_them() {
    let ws = repo(&["t1"]);
    let gitignore = ws.read(".gitignore");
    assert!(
        gitignore.contains(".orchestrator/worktrees/"),
        "{gitignore}"
    );
    ws.write(
        ".gitignore",
        &gitignore.replace(".orchestrator/worktrees/\n", ""),
    );
    git(&ws, &["commit", "-qam", "an older .gitignore"]);
    start_in_worktree(&ws, "a", "t1");
    let status = git(&ws, &["status", "--porcelain"]);
    assert!(!status.contains("worktrees"), "{status}");
    git(&ws, &["add", "-A"]);
    let staged = git(&ws, &["diff", "--cached", "--name-only"]);
    assert!(!staged.contains("worktrees"), "{staged}");
}

#[test]
fn a_conflicted_task_resumed_by_hand_reuses_its_branch_and_conflicts_again_until_resolved() {
    let ws = repo(&["t1", "t2"]);
    let (b, b_dir) = conflicting_pair(&ws);
    ws.ok(&["wrap", "--done", "--session", &b]);
    ws.ok(&["task", "set", "t2", "--status", "pending"]);
    let (b2, dir) = start_in_worktree(&ws, "b", "t2");
    assert_eq!(dir, b_dir, "the worktree is reused");
    assert_eq!(
        std::fs::read_to_string(dir.join("b_only.txt")).unwrap(),
        "b's other work\n"
    );
    let v = ws.json(0, &["worktree", "list"]);
    assert_eq!(v["worktrees"][0]["state"], "live", "{v}");
    assert!(v["worktrees"][0]["conflict"].is_null(), "{v}");
    let v = ws.json(0, &["wrap", "--session", &b2]);
    assert_eq!(v["integrate"]["result"], "conflict", "{v}");
    assert_eq!(ws.task("t2")["status"], "blocked");
    assert!(b_dir.join("b_only.txt").exists());
}

#[test]
fn a_worktree_without_a_record_is_listed_as_an_orphan_and_pruned_when_it_holds_nothing() {
    let ws = repo(&["t1"]);
    let (a, dir) = start_in_worktree(&ws, "a", "t1");
    // Wrapped without a commit, the worktree is kept; its record lost, as a `start` killed
    // between making the worktree and recording it would leave it.
    ws.ok(&["wrap", "--no-commit", "--session", &a]);
    assert!(dir.exists());
    std::fs::remove_file(ws.file(".orchestrator/worktrees/t1.json")).unwrap();
    let v = ws.json(0, &["worktree", "list"]);
    assert_eq!(v["worktrees"][0]["state"], "orphan", "{v}");
    assert_eq!(v["worktrees"][0]["branch"], "orchestrator/t1", "{v}");
    let v = ws.json(0, &["worktree", "prune"]);
    assert_eq!(v["removed"][0]["task"], "t1", "{v}");
    assert!(!dir.exists());
    assert_eq!(git(&ws, &["worktree", "list"]).lines().count(), 1);
    assert_eq!(git(&ws, &["branch", "--list", "orchestrator/*"]), "");
}

#[test]
fn the_shared_tree_warning_names_three_sessions_and_counts_the_rest() {
    let ws = repo(&["t1", "t2", "t3", "t4", "t5"]);
    for (agent, task) in [("a", "t1"), ("b", "t2"), ("c", "t3"), ("d", "t4")] {
        ws.ok(&["start", "--agent", agent, "--task", task]);
    }
    let out = ws.run(&["start", "--agent", "e", "--task", "t5"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: another session works in this same tree"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(warning.contains(" and 1 more)"), "{warning}");
    assert_eq!(warning.matches("session_").count(), 3, "{warning}");
}

#[test]
fn max_cost_is_the_whole_runs_limit_across_its_workers() {
    // Each session's transcript costs one Opus line ($0.2276): past $0.50 after three sessions
    // of the run, whichever loop ran them. Counted per loop, each of the two would go on to three.
    let tasks: Vec<String> = (0..10).map(|i| format!("task_{i:02}")).collect();
    let ids: Vec<&str> = tasks.iter().map(String::as_str).collect();
    let ws = repo(&ids);
    ws.write("opus_line.jsonl", &format!("{}\n", crate::cost::OPUS_LINE));
    crate::run::agent(
        &ws,
        "spend.sh",
        &format!(
            r#"set -e
export CLAUDE_CODE_SESSION_ID="$ORCHESTRATOR_SESSION"
mkdir -p "$HOME/.claude/projects/-work"
cp '{}' "$HOME/.claude/projects/-work/$ORCHESTRATOR_SESSION.jsonl"
orchestrator checkpoint spent --progress 1 --exit-zero >/dev/null"#,
            ws.file("opus_line.jsonl").display()
        ),
    );
    git(&ws, &["add", "spend.sh"]);
    git(&ws, &["commit", "-qm", "the agent"]);
    let out = crate::run::run(
        &ws,
        &[
            "run",
            "--json",
            "--workers",
            "2",
            "--max-cost",
            "0.5",
            "--poll",
            "50ms",
            "--",
            "./spend.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(25), "{}", crate::run::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stop"], "max_cost", "{v}");
    let sessions = v["sessions"].as_u64().unwrap();
    // Three to pass the limit, and at most one more already under way in the other loop.
    assert!((3..=4).contains(&sessions), "{v}");
    let spent = v["cost_usd"].as_f64().unwrap();
    assert!(spent > 0.5 && spent < 4.0 * 0.2277, "{v}");
}

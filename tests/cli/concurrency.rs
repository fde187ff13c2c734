//! Many processes at once, and processes killed mid-write.

use crate::common::*;
use std::time::Duration;

#[test]
fn concurrent_checkpoints_never_lose_an_update() {
    let ws = Ws::new();
    ws.ok(&[
        "task", "add", "big", "--title", "big task", "--total", "1000",
    ]);
    let session = ws.json(0, &["start"])["session"]
        .as_str()
        .unwrap()
        .to_string();
    let workers: Vec<_> = (0..16)
        .map(|worker| {
            let commands: Vec<_> = (0..25)
                .map(|i| {
                    let message = format!("worker {worker} step {i}");
                    let mut cmd = ws.command(&["checkpoint", &message, "--advance", "1"]);
                    cmd.env("ORCHESTRATOR_SESSION", &session);
                    cmd
                })
                .collect();
            std::thread::spawn(move || {
                for mut cmd in commands {
                    let out = cmd.output().unwrap();
                    // No token figure in this test: the level is unknown (exit 12).
                    assert_eq!(
                        out.status.code(),
                        Some(12),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(ws.progress("big"), (400, 1000));
    assert_eq!(ws.json(12, &["status"])["checkpoints"], 400);
    let recent = ws.task("big")["checkpoints"].as_array().unwrap().clone();
    assert_eq!(recent.len(), 10, "the stack keeps the recent ones");
    assert_eq!(recent.last().unwrap()["progress"], 400);
    ws.ok(&["wrap"]);
    let archived = ws.read(&format!(".orchestrator/sessions/archive/{session}.json"));
    let record: serde_json::Value = serde_json::from_str(&archived).unwrap();
    let all = record["checkpoints"].as_array().unwrap();
    assert_eq!(all.len(), 400, "the session keeps every checkpoint");
    let progresses: std::collections::BTreeSet<u64> = all
        .iter()
        .map(|c| c["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(
        progresses.len(),
        400,
        "each checkpoint saw its own progress value"
    );
}

/// A small deterministic generator: the test needs varied timings, not real randomness.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// The task `work` (100,000 units) behind 150 fillers with long titles: a stack big enough for
/// a write of it to take long enough to be interrupted.
fn bulky_stack() -> Ws {
    let ws = Ws::new();
    ws.ok(&[
        "task",
        "add",
        "work",
        "--title",
        "work task",
        "--total",
        "100000",
    ]);
    for i in 0..150 {
        ws.ok(&[
            "task",
            "add",
            &format!("filler_{i:03}"),
            "--title",
            &"x".repeat(200),
        ]);
    }
    ws
}

#[test]
fn kill_9_during_checkpoints_never_leaves_a_torn_stack() {
    let ws = bulky_stack();
    ws.ok(&["start", "--task", "work"]);
    let mut rng = Lcg(0x5eed);
    let (mut kills, mut attempts) = (0, 0);
    let mut last_done = 0;
    while kills < 60 && attempts < 2000 {
        attempts += 1;
        let (done, _) = ws.progress("work");
        let target = (done + 1).to_string();
        let mut child = ws
            .command(&["checkpoint", &format!("to {target}"), "--progress", &target])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next(6000)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();

        let text = ws.read("task_stack.json");
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("torn task_stack.json after a kill: {e}"));
        // As every reader sees it: the journal folded over the snapshot.
        let stack = ws.stack();
        let task = stack["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == "work")
            .unwrap();
        let done = task["progress"]["done"].as_u64().unwrap();
        assert!(
            done == last_done || done == last_done + 1,
            "progress jumped from {last_done} to {done}"
        );
        // Every state ever written has its last checkpoint matching its progress.
        match task["checkpoints"].as_array().unwrap().last() {
            Some(cp) => assert_eq!(
                cp["message"],
                format!("to {done}"),
                "stack mixes two writes"
            ),
            None => assert_eq!(done, 0),
        }
        assert_eq!(stack["tasks"].as_array().unwrap().len(), 151);
        last_done = done;
    }
    assert!(
        kills >= 50,
        "only {kills} kills landed mid-run in {attempts} attempts"
    );
    // The workspace is still usable, and start/wrap clean up what the killed writers left.
    ws.expect(12, &["status"]);
    ws.expect(12, &["checkpoint", "after the storm", "--advance", "1"]);
    ws.ok(&["wrap"]);
    let temps: Vec<String> = ws
        .files_in(".")
        .into_iter()
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert_eq!(temps, Vec::<String>::new());
}

/// Checkpoints killed at random while every one of them folds the journal into the stack (the
/// bound set to nothing): no acknowledged checkpoint is lost, none is applied twice, and the
/// stack file is never torn.
#[test]
fn kill_9_during_folds_loses_no_acknowledged_checkpoint() {
    let ws = bulky_stack();
    let session = ws.json(0, &["start", "--task", "work"])["session"]
        .as_str()
        .unwrap()
        .to_string();
    let mut rng = Lcg(0xf01d);
    let (mut kills, mut attempts, mut acknowledged) = (0, 0, 0u64);
    while kills < 40 && attempts < 2000 {
        attempts += 1;
        let target = (acknowledged + 1).to_string();
        let mut cmd = ws.command(&["checkpoint", &format!("to {target}"), "--progress", &target]);
        cmd.env("ORCHESTRATOR_TEST_FOLD_BYTES", "0");
        let mut child = cmd.spawn().unwrap();
        // Every third one runs to its end, so that checkpoints get through however slow the
        // machine is; the others are killed at a random instant.
        let spared = attempts % 3 == 0;
        std::thread::sleep(Duration::from_micros(rng.next(40_000)));
        if !spared && child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        let text = ws.read("task_stack.json");
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("torn task_stack.json after a kill: {e}"));
        // What a reader sees, without folding: `status` reads the journal over the snapshot.
        let seen = ws.json(12, &["status"])["progress"]["done"]
            .as_u64()
            .unwrap();
        if status.code() == Some(12) {
            acknowledged += 1;
            assert_eq!(seen, acknowledged, "an acknowledged checkpoint is missing");
        } else {
            // Killed: recorded in full or not at all.
            assert!(seen == acknowledged || seen == acknowledged + 1, "{seen}");
            acknowledged = seen;
        }
    }
    assert!(
        kills >= 30,
        "only {kills} kills landed mid-run in {attempts} attempts"
    );
    assert!(
        acknowledged >= 10,
        "only {acknowledged} checkpoints got through"
    );
    // Folded by a task command: the stack holds each checkpoint once, the last one last.
    let task = ws.task("work");
    assert_eq!(task["progress"]["done"], acknowledged);
    let recent = task["checkpoints"].as_array().unwrap();
    let messages: Vec<&str> = recent
        .iter()
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    let unique: std::collections::BTreeSet<&&str> = messages.iter().collect();
    assert_eq!(
        unique.len(),
        messages.len(),
        "a checkpoint was applied twice: {messages:?}"
    );
    assert_eq!(*messages.last().unwrap(), format!("to {acknowledged}"));
    ws.expect(12, &["checkpoint", "after the storm", "--advance", "1"]);
    ws.ok(&["wrap"]);
    let record: serde_json::Value =
        serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{session}.json")))
            .unwrap();
    assert_eq!(
        record["checkpoints"].as_array().unwrap().last().unwrap()["progress"],
        acknowledged + 1
    );
}

/// A fold cut off between writing the stack and removing the journal: the records it left are
/// not applied a second time, by readers or by the next fold.
#[test]
fn a_fold_cut_off_before_the_journal_is_removed_applies_nothing_twice() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.expect(
        12,
        &[
            "checkpoint",
            "one",
            "--progress",
            "1",
            "--issue",
            "flaky test",
        ],
    );
    ws.expect(12, &["checkpoint", "two", "--progress", "2"]);
    let mut cmd = ws.command(&["checkpoint", "three", "--progress", "3"]);
    cmd.env("ORCHESTRATOR_TEST_FOLD_BYTES", "0")
        .env("ORCHESTRATOR_TEST_CRASH_AFTER", "fold-snapshot");
    assert_eq!(cmd.output().unwrap().status.code(), Some(86));
    // The stack holds all three, and the journal is still there with them.
    assert!(ws.file(".orchestrator/journal.jsonl").exists());
    let raw: serde_json::Value = serde_json::from_str(&ws.read("task_stack.json")).unwrap();
    // Records 1 to 4: the claim of `start`, then the three checkpoints.
    assert_eq!(raw["journal_generation"], 4);
    let status = ws.json(12, &["status"]);
    assert_eq!(status["progress"]["done"], 3);
    ws.expect(12, &["checkpoint", "four", "--progress", "4"]);
    let task = ws.task("integrate_sessions_101_140");
    let messages: Vec<&str> = task["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["one", "two", "three", "four"]);
    assert_eq!(task["issues"].as_array().unwrap().len(), 1);
    assert_eq!(task["progress"]["done"], 4);
    assert!(!ws.file(".orchestrator/journal.jsonl").exists());
}

/// Readers take no lock: while checkpoints append and fold (every one of them, the bound set to
/// nothing), what `status` reports never goes backwards.
#[test]
fn readers_never_see_progress_go_back_while_folds_run() {
    let ws = Ws::new();
    ws.ok(&[
        "task",
        "add",
        "work",
        "--title",
        "work task",
        "--total",
        "1000",
    ]);
    for i in 0..50 {
        ws.ok(&[
            "task",
            "add",
            &format!("filler_{i:02}"),
            "--title",
            &"x".repeat(100),
        ]);
    }
    ws.ok(&["start", "--task", "work"]);
    let commands: Vec<_> = (0..60)
        .map(|i| {
            let mut cmd = ws.command(&["checkpoint", &format!("step {i}"), "--advance", "1"]);
            cmd.env("ORCHESTRATOR_TEST_FOLD_BYTES", "0");
            cmd
        })
        .collect();
    let writer = std::thread::spawn(move || {
        for mut cmd in commands {
            assert_eq!(cmd.output().unwrap().status.code(), Some(12));
        }
    });
    let mut last = 0;
    let mut reads = 0;
    while !writer.is_finished() {
        let out = ws.run(&["status", "--json"]);
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let done = value["progress"]["done"].as_u64().unwrap();
        assert!(
            done >= last,
            "a reader saw progress go back from {last} to {done}"
        );
        last = done;
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads > 5, "only {reads} reads overlapped the writes");
    assert_eq!(ws.json(12, &["status"])["progress"]["done"], 60);
}

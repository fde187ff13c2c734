//! Issue 15's store: fencing tokens, the stack index a checkpoint reads through, and stacks
//! written before either existed.

use crate::common::*;
use serde_json::Value;

const TASK: &str = "integrate_sessions_101_140";

/// The stack file rewritten as a person would, with `edit` applied to the task.
fn edit_task(ws: &Ws, edit: impl FnOnce(&mut Value)) {
    let mut stack: Value = serde_json::from_str(&ws.read("task_stack.json")).unwrap();
    let task = stack["tasks"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["id"] == TASK)
        .unwrap();
    edit(task);
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
}

#[test]
fn each_claim_raises_the_fencing_token_the_session_carries() {
    let ws = Ws::seed();
    let first = ws.json(0, &["start", "--agent", "a"])["session"].clone();
    assert_eq!(ws.task(TASK)["fence"], 1);
    let record: Value = serde_json::from_str(&ws.read(&format!(
        ".orchestrator/sessions/active/{}.json",
        first.as_str().unwrap()
    )))
    .unwrap();
    assert_eq!(record["fence"], 1);
    ws.ok(&["wrap", "--agent", "a"]);
    ws.set_now(&at_minutes(1));
    ws.json(0, &["start", "--agent", "b"]);
    assert_eq!(ws.task(TASK)["fence"], 2);
    ws.expect(
        12,
        &["checkpoint", "b works", "--progress", "1", "--agent", "b"],
    );
}

#[test]
fn a_checkpoint_under_a_stale_token_is_refused_with_exit_5_and_changes_nothing() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "first", "--progress", "1"]);
    ws.ok(&["task", "list"]);
    // Another claim since (as a store shared by machines would see it): the token moved on.
    edit_task(&ws, |task| task["fence"] = 7.into());
    let before = ws.snapshot();
    let out = ws.run(&["checkpoint", "late", "--progress", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains(&format!("lost task `{TASK}`")), "{stderr}");
    assert!(
        ws.snapshot() == before,
        "a refused checkpoint changed files"
    );
}

#[test]
fn a_checkpoint_sees_a_stack_edited_by_hand_since_it_was_indexed() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "first", "--progress", "1"]);
    assert!(ws.file(".orchestrator/cache/stack.index").exists());
    ws.ok(&["task", "list"]);
    // More units than the index's copy of the task allows: only the edited file has them.
    edit_task(&ws, |task| task["progress"]["total"] = 50.into());
    ws.expect(
        12,
        &["checkpoint", "past the old total", "--progress", "45"],
    );
    assert_eq!(ws.progress(TASK), (45, 50));
    // Written by us again: indexed, and read through the index.
    ws.expect(12, &["checkpoint", "again", "--progress", "46"]);
    assert_eq!(ws.progress(TASK), (46, 50));
    assert_eq!(ws.json(12, &["status"])["progress"]["done"], 46);
}

#[test]
fn a_stack_and_session_written_before_tokens_and_the_journal_load_unchanged() {
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.ok(&["task", "list"]);
    assert!(!ws.file(".orchestrator/journal.jsonl").exists());
    // As the previous version left them: no `fence` on the task or the session, no journal.
    edit_task(&ws, |task| {
        task.as_object_mut().unwrap().remove("fence");
    });
    let session = ws.files_in(".orchestrator/sessions/active")[0].clone();
    let path = format!(".orchestrator/sessions/active/{session}");
    let mut record: Value = serde_json::from_str(&ws.read(&path)).unwrap();
    record.as_object_mut().unwrap().remove("fence");
    record["who_knows"] = "kept".into();
    ws.write(&path, &serde_json::to_string_pretty(&record).unwrap());
    let text = ws.read("task_stack.json");
    // The only task is held: nothing is ready.
    ws.expect(3, &["next"]);
    ws.ok(&["task", "list"]);
    assert_eq!(ws.read("task_stack.json"), text, "a read changed the stack");
    ws.expect(12, &["checkpoint", "still mine", "--progress", "1"]);
    ws.ok(&["wrap"]);
    assert_eq!(ws.progress(TASK), (1, 40));
    let archived = ws.files_in(".orchestrator/sessions/archive")[0].clone();
    let record: Value =
        serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{archived}")))
            .unwrap();
    assert_eq!(record["who_knows"], "kept");
}

#[test]
fn a_small_stack_edited_by_hand_is_indexed_again_after_the_next_checkpoint() {
    use std::os::unix::fs::MetadataExt;
    // The index header (see src/store/index.rs): magic, then inode, length, ctime seconds and
    // nanoseconds of the stack file it describes, little-endian.
    let described = |ws: &Ws| {
        let index = std::fs::read(ws.file(".orchestrator/cache/stack.index")).unwrap();
        let field = |i: usize| u64::from_le_bytes(index[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        (field(0), field(1), field(2) as i64, field(3) as i64)
    };
    let on_disk = |ws: &Ws| {
        let meta = std::fs::metadata(ws.file("task_stack.json")).unwrap();
        (meta.ino(), meta.len(), meta.ctime(), meta.ctime_nsec())
    };
    let ws = Ws::seed();
    ws.ok(&["start"]);
    ws.expect(12, &["checkpoint", "first", "--progress", "1"]);
    ws.ok(&["task", "list"]);
    assert_eq!(described(&ws), on_disk(&ws));
    edit_task(&ws, |task| task["notes"] = "edited by hand".into());
    assert_ne!(described(&ws), on_disk(&ws));
    ws.expect(12, &["checkpoint", "after the edit", "--progress", "2"]);
    assert_eq!(
        described(&ws),
        on_disk(&ws),
        "the index still describes the stack as it was before the hand edit"
    );
}

const VIEW: &str = ".orchestrator/cache/stack.view";

/// Two tasks, the seeded one picked first, and the view cache cut from the stack we wrote.
fn two_tasks() -> Ws {
    let ws = Ws::seed();
    ws.ok(&["task", "add", "second_task", "--title", "Second"]);
    assert!(ws.file(VIEW).exists(), "task add cuts a view");
    assert_eq!(ws.json(0, &["next"])["task"], TASK);
    ws
}

#[test]
fn next_and_start_read_a_stack_edited_by_hand_not_the_view_cut_before() {
    let ws = two_tasks();
    // Finished by hand: only the edited file says so.
    edit_task(&ws, |task| task["status"] = "done".into());
    let next = ws.json(0, &["next"]);
    assert_eq!(next["task"], "second_task");
    assert_eq!(next["others"][0]["reason"], "finished");
    assert_eq!(ws.json(0, &["start"])["task"], "second_task");
    // The start cut a view from the edited stack; read through it, the claim (in the journal)
    // holds the second task and the first stays done.
    let next = ws.json(3, &["next"]);
    assert_eq!(next["task"], Value::Null);
    let reasons: Vec<&Value> = next["others"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["reason"])
        .collect();
    assert_eq!(reasons, ["finished", "held"]);
}

#[test]
fn a_damaged_view_or_one_of_an_older_stack_is_not_read() {
    let ws = two_tasks();
    let old = std::fs::read(ws.file(VIEW)).unwrap();
    // Written by us since: the second task first. The view of the stack before put back in
    // place is whole, but names a stack file that is gone.
    ws.ok(&["task", "set", "second_task", "--priority", "1"]);
    ws.ok(&["task", "set", TASK, "--priority", "3"]);
    assert_eq!(ws.json(0, &["next"])["task"], "second_task");
    std::fs::write(ws.file(VIEW), &old).unwrap();
    assert_eq!(ws.json(0, &["next"])["task"], "second_task");
    // The current view with one byte of it changed (the damage a disk could do): the checksum
    // no longer matches, and the stack itself is read.
    ws.ok(&["task", "set", TASK, "--priority", "2"]);
    let mut damaged = std::fs::read(ws.file(VIEW)).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    std::fs::write(ws.file(VIEW), &damaged).unwrap();
    let next = ws.json(0, &["next"]);
    assert_eq!(next["task"], "second_task");
    assert_eq!(next["others"][0]["priority"], 2);
    // Cut short, or not a view at all: the same.
    for bytes in [&damaged[..damaged.len() / 2], b"{}".as_slice()] {
        std::fs::write(ws.file(VIEW), bytes).unwrap();
        assert_eq!(ws.json(0, &["next"])["task"], "second_task");
    }
    // A start (which writes) cuts a good one again.
    ws.json(0, &["start"]);
    assert_ne!(std::fs::read(ws.file(VIEW)).unwrap(), b"{}");
}

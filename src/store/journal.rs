//! The file store's checkpoint journal: `.orchestrator/journal.jsonl`, one fsynced JSON line per
//! write under a claim, appended under the lock instead of rewriting `task_stack.json`.
//!
//! Every reader folds the journal over the snapshot, the same way. Records are numbered on from
//! the snapshot's `journal_generation` (each one past the highest before it); a snapshot written
//! with records folded in says the highest it holds. A fold writes the snapshot (atomically),
//! then removes the journal, so a crash between the two leaves records that every reader skips
//! as already folded. A torn last line (only a crash
//! inside a write can leave one, and its writer never acknowledged it) is ignored by readers and
//! cut off by the next writer before it appends.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::core::stack::{CheckpointWrite, ClaimWrite, LeaseWrite, Lost, Task, TaskStack};
use crate::error::Failure;

/// The journal is folded into the snapshot once it is this large: large enough that the fold
/// (a rewrite of the whole stack) is rare, small enough that reading it costs little.
pub const FOLD_BYTES: u64 = 256 * 1024;
/// Test-only: replaces [`FOLD_BYTES`], so that tests fold (and kill folds) often.
const FOLD_BYTES_VAR: &str = "ORCHESTRATOR_TEST_FOLD_BYTES";

/// The bound past which a checkpoint folds the journal.
pub fn fold_bytes() -> u64 {
    std::env::var(FOLD_BYTES_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FOLD_BYTES)
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// One past the highest generation the stack held when this was appended.
    pub generation: u64,
    /// A checkpoint under a claim, or:
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointWrite>,
    /// a claim (`start`), or:
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimWrite>,
    /// a lease renewed (`run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseWrite>,
}

impl Record {
    fn task(&self) -> Option<&str> {
        if let Some(write) = &self.checkpoint {
            return Some(&write.task);
        }
        if let Some(claim) = &self.claim {
            return Some(&claim.task);
        }
        self.lease.as_ref().map(|lease| lease.task.as_str())
    }

    fn apply(&self, task: &mut Task) -> Result<(), Lost> {
        if let Some(claim) = &self.claim {
            claim.apply(task)?;
        }
        if let Some(write) = &self.checkpoint {
            write.apply(task)?;
        }
        if let Some(lease) = &self.lease {
            lease.apply(task)?;
        }
        Ok(())
    }
}

/// The journal as read: its records and its length in bytes (torn tail included).
#[derive(Debug, Default)]
pub struct Journal {
    pub records: Vec<Record>,
    pub bytes: u64,
}

impl Journal {
    /// Reads the journal at `path`; none is an empty journal. A damaged line that is not the
    /// last is skipped with a warning, by every reader alike.
    pub fn read(path: &Path) -> Result<Journal> {
        let Some(bytes) = read_bytes(path)? else {
            return Ok(Journal::default());
        };
        let records =
            super::file::json_lines::<Record>(complete_lines(&bytes, path), path, "journal record");
        Ok(Journal {
            records,
            bytes: bytes.len() as u64,
        })
    }

    /// [`Journal::read`] for a reader of `tasks` only (a checkpoint's): the records of those
    /// tasks, and the last record, whose generation is the journal's highest (records are
    /// appended in order under the lock). Other lines are passed over unparsed, so a
    /// checkpoint's cost does not grow with the other agents' records since the last fold.
    pub fn read_for(path: &Path, tasks: &[&str]) -> Result<Journal> {
        // An id JSON would escape (a hand edit; commands refuse them) is looked for the slow way.
        if tasks
            .iter()
            .any(|id| id.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20))
        {
            return Journal::read(path);
        }
        let Some(bytes) = read_bytes(path)? else {
            return Ok(Journal::default());
        };
        let complete = complete_lines(&bytes, path);
        // A task id needs no escaping in JSON, and a quote inside a string is escaped: this
        // is found in a line only where the line's own `task` field names the task.
        let needles: Vec<String> = tasks
            .iter()
            .map(|id| format!("\"task\":\"{id}\""))
            .collect();
        let finders: Vec<memchr::memmem::Finder<'_>> = needles
            .iter()
            .map(|needle| memchr::memmem::Finder::new(needle.as_bytes()))
            .collect();
        let lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
        let last = lines
            .iter()
            .rposition(|line| !line.is_empty() && serde_json::from_slice::<Record>(line).is_ok());
        let mut records = Vec::new();
        for (number, line) in lines.iter().enumerate() {
            let named = finders.iter().any(|finder| finder.find(line).is_some());
            if line.is_empty() || !(named || Some(number) == last) {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(record) => records.push(record),
                Err(err) => tracing::warn!(
                    "{}:{}: skipping a damaged journal record: {err}",
                    path.display(),
                    number + 1
                ),
            }
        }
        Ok(Journal {
            records,
            bytes: bytes.len() as u64,
        })
    }

    /// The records the snapshot does not hold yet.
    pub fn pending<'a>(&'a self, stack: &'a TaskStack) -> impl Iterator<Item = &'a Record> {
        self.records
            .iter()
            .filter(move |r| r.generation > stack.journal_generation)
    }

    /// Applies the pending records to `stack`, in order. A record whose token is stale (only a
    /// hand edit of the snapshot can make one) is skipped with a warning, by every reader alike.
    /// Returns the generation the stack then holds.
    pub fn fold_into(&self, stack: &mut TaskStack) -> u64 {
        self.fold(stack, true)
    }

    /// [`Journal::fold_into`] for a stack that holds only some of its tasks (one checkpoint's):
    /// records of the other tasks only count for the generation.
    pub fn fold_into_part(&self, stack: &mut TaskStack) -> u64 {
        self.fold(stack, false)
    }

    fn fold(&self, stack: &mut TaskStack, whole: bool) -> u64 {
        let mut generation = stack.journal_generation;
        let pending: Vec<Record> = self.pending(stack).cloned().collect();
        // Where the records' few tasks are, found in one pass: not a table of every task.
        let named: HashSet<&str> = pending.iter().filter_map(Record::task).collect();
        let index: HashMap<String, usize> = if named.is_empty() {
            HashMap::new()
        } else {
            stack
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| named.contains(t.id.as_str()))
                .map(|(i, t)| (t.id.clone(), i))
                .collect()
        };
        for record in pending {
            generation = generation.max(record.generation);
            let Some(id) = record.task() else { continue };
            let Some(task) = index.get(id).map(|&i| &mut stack.tasks[i]) else {
                if whole {
                    tracing::warn!("journal: task `{id}` is no longer in the stack");
                }
                continue;
            };
            if let Err(lost) = record.apply(task) {
                tracing::warn!(
                    "journal: skipping the record of generation {}: {lost}",
                    record.generation
                );
            }
        }
        generation
    }
}

/// The journal's bytes; `None` when there is none.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `bytes` up to its last newline: a torn last line (only a crash inside a write leaves one)
/// is no record.
fn complete_lines<'a>(bytes: &'a [u8], path: &Path) -> &'a [u8] {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &[][..],
    };
    if complete.len() < bytes.len() {
        tracing::debug!(
            "{}: ignoring a torn last line ({} bytes)",
            path.display(),
            bytes.len() - complete.len()
        );
    }
    complete
}

/// Appends one record and syncs it. A torn tail a killed writer left is cut off first, so the
/// new line starts on a line of its own. Registered with `undo` after that repair, so a failure
/// later in the command truncates back to the repaired length.
pub fn append(path: &Path, undo: &mut super::undo::Undo, record: &Record) -> Result<()> {
    let mut line = serde_json::to_vec(record).context("cannot serialize a journal record")?;
    line.push(b'\n');
    let refuse_link = || {
        Failure::user(format!(
            "{} is a symbolic link; orchestrator writes state only inside the workspace: replace it with the file itself",
            path.display()
        ))
    };
    if super::file::symlink_target(path)?.is_some() {
        return Err(refuse_link());
    }
    cut_torn_tail(path)?;
    undo.before_append(path)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => refuse_link(),
            _ => anyhow::Error::new(err).context(format!("cannot open {}", path.display())),
        })?;
    // One write call: a killed process leaves the whole line or none of it.
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// Truncates the journal after its last complete line.
fn cut_torn_tail(path: &Path) -> Result<()> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(
        "{}: cutting off a torn last line a killed writer left ({} bytes)",
        path.display(),
        bytes.len() - keep
    );
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(keep as u64)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot truncate {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stack::{Checkpoint, Claim, Task};
    use chrono::{TimeZone, Utc};
    use serde_json::Map;

    fn checkpoint(generation: u64, progress: u64) -> Record {
        let at = Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap();
        Record {
            generation,
            checkpoint: Some(CheckpointWrite {
                task: "a".into(),
                session: "s".into(),
                token: 1,
                progress,
                checkpoint: Checkpoint {
                    at,
                    session: "s".into(),
                    message: format!("to {progress}"),
                    progress,
                    tokens: None,
                    extra: Map::new(),
                },
                resolved: Vec::new(),
                issues: Vec::new(),
                lease_expires: at,
            }),
            claim: None,
            lease: None,
        }
    }

    fn claimed_stack() -> TaskStack {
        let mut stack = TaskStack::new(Default::default());
        let mut task = Task::new("a".into(), String::new(), 1, 10, Vec::new());
        task.claim(Claim {
            session: "s".into(),
            agent: "x".into(),
            host: "h".into(),
            pid: 1,
            lease_expires: Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap(),
            extra: Map::new(),
        });
        stack.tasks.push(task);
        stack
    }

    /// A record of task `task` at `generation`, `progress` units done.
    fn checkpoint_of(task: &str, generation: u64, progress: u64) -> Record {
        let mut record = checkpoint(generation, progress);
        let write = record.checkpoint.as_mut().unwrap();
        write.task = task.into();
        // A message that quotes another task's field, escaped in the line as JSON escapes it.
        write.checkpoint.message = format!("moved \"task\":\"a\" along to {progress}");
        record
    }

    #[test]
    fn a_read_for_some_tasks_folds_them_as_the_whole_read_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut undo = crate::store::undo::Undo::new();
        let mut generation = 0;
        for round in 1..=5 {
            for task in ["a", "b", "c"] {
                generation += 1;
                append(&path, &mut undo, &checkpoint_of(task, generation, round)).unwrap();
            }
        }
        undo.commit();
        // A damaged line in the middle is skipped by both readers.
        let mut text = fs::read_to_string(&path).unwrap();
        text.insert_str(text.find('\n').unwrap() + 1, "{not json\n");
        fs::write(&path, &text).unwrap();

        let whole = Journal::read(&path).unwrap();
        let part = Journal::read_for(&path, &["a"]).unwrap();
        // a's five records and the last line (c's), nothing of b's.
        assert_eq!(part.records.len(), 6);
        assert_eq!(part.bytes, whole.bytes);
        let (mut from_whole, mut from_part) = (claimed_stack(), claimed_stack());
        assert_eq!(whole.fold_into_part(&mut from_whole), 15);
        assert_eq!(part.fold_into_part(&mut from_part), 15);
        assert_eq!(from_part.tasks, from_whole.tasks);
        assert_eq!(from_part.tasks[0].progress.done, 5);

        // A reader of a task without records still learns the generation.
        let none = Journal::read_for(&path, &["z"]).unwrap();
        assert_eq!(none.records.len(), 1);
        assert_eq!(
            none.fold_into_part(&mut TaskStack::new(Default::default())),
            15
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_cut_off_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut undo = crate::store::undo::Undo::new();
        append(&path, &mut undo, &checkpoint(1, 1)).unwrap();
        append(&path, &mut undo, &checkpoint(2, 2)).unwrap();
        undo.commit();
        // A writer killed mid-line: half a record, no newline.
        let mut torn = fs::read(&path).unwrap();
        torn.extend_from_slice(br#"{"generation":3,"checkpoint":{"task":"a","#);
        fs::write(&path, &torn).unwrap();
        let journal = Journal::read(&path).unwrap();
        assert_eq!(journal.records.len(), 2);
        let mut stack = claimed_stack();
        assert_eq!(journal.fold_into(&mut stack), 2);
        assert_eq!(stack.tasks[0].progress.done, 2);

        let mut undo = crate::store::undo::Undo::new();
        append(&path, &mut undo, &checkpoint(3, 3)).unwrap();
        undo.commit();
        let journal = Journal::read(&path).unwrap();
        let generations: Vec<u64> = journal.records.iter().map(|r| r.generation).collect();
        assert_eq!(generations, [1, 2, 3]);
        assert!(fs::read(&path).unwrap().ends_with(b"}\n"));
    }

    #[test]
    fn records_the_stack_already_holds_are_not_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut undo = crate::store::undo::Undo::new();
        for generation in 1..=3 {
            append(&path, &mut undo, &checkpoint(generation, generation)).unwrap();
        }
        undo.commit();
        let journal = Journal::read(&path).unwrap();
        let mut stack = claimed_stack();
        // Folded up to 2 and written, then cut off before the journal went.
        stack.journal_generation = 2;
        stack.tasks[0].progress.done = 2;
        assert_eq!(journal.fold_into(&mut stack), 3);
        assert_eq!(stack.tasks[0].checkpoints.len(), 1, "only record 3 applied");
        assert_eq!(stack.tasks[0].progress.done, 3);
    }

    #[test]
    fn a_write_under_a_stale_token_is_skipped_by_every_reader() {
        let mut stack = claimed_stack();
        // Claimed again since: the token is 2, the record carries 1.
        stack.tasks[0].fence = 2;
        let journal = Journal {
            records: vec![checkpoint(1, 5)],
            bytes: 0,
        };
        journal.fold_into(&mut stack);
        assert_eq!(stack.tasks[0].progress.done, 0);
        assert!(stack.tasks[0].checkpoints.is_empty());
    }
}

//! The file store's view cache: the stack as `next` and `start` read it (every task, none of
//! their checkpoints), in `.orchestrator/cache/stack.view`, so that selection never scans the
//! checkpoints that make up most of a large stack's bytes.
//!
//! Derived state, written beside the index from a stack that validated: the stack file's own
//! text with every task's `checkpoints` value replaced by `[]`, so that it reads as exactly what
//! [`TaskStack::parse_view`] makes of the stack, unknown fields included. A plain task (no open
//! items, no field this version does not know) is stored in binary, which decodes several times
//! faster than its JSON parses; any other keeps its JSON without the whitespace. The view names
//! the stack file it was cut from (inode, size, change time, as the index does) and carries a
//! checksum of its bytes: a stack edited by hand, or a view damaged or cut short, does not
//! match, and the reader parses the stack itself.
//!
//! Binary, little-endian: a header of [`HEADER_LEN`] bytes (magic, the stack's identity, the
//! number of tasks, the payload's length and checksum), then the payload: records, each its
//! length (u64) and its bytes. The first is the stack's JSON with an empty `tasks` array; then
//! one per task, its JSON (starting with `{`) or [`PLAIN`] and the fields [`encode_plain`] lists.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Map;
use serde_json::value::RawValue;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::index::Identity;
use crate::core::stack::{Checkpoints, Claim, Progress, STACK_VERSION, Status, Task, TaskStack};

/// Under the cache directory, beside the index.
pub const VIEW_FILE: &str = "stack.view";

const MAGIC: &[u8; 8] = b"ORCHVW01";
/// Magic, four words of identity, the task count, the payload's length and its checksum.
const HEADER_LEN: usize = 8 + 8 * 4 + 8 * 3;

impl super::Workspace {
    /// The stack's view cache (derived; see [`view`](self)).
    pub fn view_path(&self) -> PathBuf {
        self.cache_dir().join(VIEW_FILE)
    }
}

/// The view of `text`, a stack file that validated, for the file identified by `identity`;
/// `written` is its tasks when the caller wrote `text` from them. `None` when its layout cannot
/// be cut out (the caller then writes no view).
fn encode(identity: Identity, text: &str, written: Option<&[Task]>) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Outer<'a> {
        #[serde(borrow)]
        tasks: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(borrow)]
        checkpoints: Option<&'a RawValue>,
    }
    let offset_in = |outer: &str, inner: &str| inner.as_ptr() as usize - outer.as_ptr() as usize;
    let outer: Outer = serde_json::from_str(text).ok()?;
    let mut payload = Vec::with_capacity(text.len() / 4);
    let push_record = |payload: &mut Vec<u8>, parts: &[&str]| {
        let at = payload.len();
        payload.extend_from_slice(&0u64.to_le_bytes());
        for part in parts {
            push_compact(payload, part);
        }
        let len = (payload.len() - at - 8) as u64;
        payload[at..at + 8].copy_from_slice(&len.to_le_bytes());
    };
    let Some(tasks) = outer.tasks else {
        push_record(&mut payload, &[text]);
        return Some(finish(identity, 0, payload));
    };
    let array = tasks.get();
    let start = offset_in(text, array);
    push_record(
        &mut payload,
        &[&text[..start], "[]", &text[start + array.len()..]],
    );
    let tasks: Vec<&RawValue> = serde_json::from_str(array).ok()?;
    let written = written.filter(|written| written.len() == tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        // A plain task the caller wrote is stored from memory, without reading its text back.
        if let Some(task) = written.map(|written| &written[i]) {
            let at = payload.len();
            payload.extend_from_slice(&0u64.to_le_bytes());
            if encode_plain(task, &mut payload) {
                let len = (payload.len() - at - 8) as u64;
                payload[at..at + 8].copy_from_slice(&len.to_le_bytes());
                continue;
            }
            payload.truncate(at);
        }
        let task = task.get();
        let inner: Inner = serde_json::from_str(task).ok()?;
        let at = payload.len();
        match inner.checkpoints {
            Some(checkpoints) => {
                let cut = offset_in(task, checkpoints.get());
                let rest = cut + checkpoints.get().len();
                push_record(&mut payload, &[&task[..cut], "[]", &task[rest..]]);
            }
            None => push_record(&mut payload, &[task]),
        }
        // The task as the reader would parse it: a plain one is stored in its binary form.
        let parsed: Task = serde_json::from_slice(&payload[at + 8..]).ok()?;
        let mut plain = Vec::new();
        if encode_plain(&parsed, &mut plain) {
            payload.truncate(at);
            payload.extend_from_slice(&(plain.len() as u64).to_le_bytes());
            payload.extend_from_slice(&plain);
        }
    }
    Some(finish(identity, tasks.len() as u64, payload))
}

/// `json` without the whitespace between its tokens (a third of a pretty-printed task), which
/// the reader would otherwise skip byte by byte. Only whitespace outside strings goes.
fn push_compact(out: &mut Vec<u8>, json: &str) {
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
            continue;
        } else if byte == b'"' {
            in_string = true;
        }
        out.push(byte);
    }
}

fn finish(identity: Identity, tasks: u64, payload: Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    for word in identity.words() {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    for word in [tasks, payload.len() as u64, checksum(&payload)] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.extend_from_slice(&payload);
    bytes
}

/// Writes the view of `text`, the stack file identified by `identity`. The caller has
/// validated the stack (a view is read back without validating its tasks again).
pub fn write(
    view_path: &Path,
    identity: Identity,
    text: &str,
    written: Option<&[Task]>,
) -> Result<()> {
    let bytes = encode(identity, text, written).context("cannot cut the stack's view out of it")?;
    super::file::write_atomic(view_path, &bytes)
}

/// A checksum over 8-byte words (FNV-1a's constants, a word at a time): catches a damaged or
/// edited cache at memory speed; not a defence against someone forging one.
fn checksum(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ bytes.len() as u64;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        hash = (hash ^ word).wrapping_mul(0x0100_0000_01b3).rotate_left(23);
    }
    for &byte in chunks.remainder() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn word(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes"))
}

/// Whether the view at `view_path` was made from `stack`, the stack file as opened (header
/// only: the checksum is checked when the view is read).
pub fn is_current(view_path: &Path, stack: &File) -> bool {
    let mut header = [0u8; HEADER_LEN];
    let matches = File::open(view_path)
        .and_then(|mut file| file.read_exact(&mut header))
        .is_ok()
        && &header[..8] == MAGIC;
    matches
        && stack.metadata().is_ok_and(|meta| {
            Identity::from_metadata(&meta).words() == [0, 1, 2, 3].map(|i| word(&header, i))
        })
}

/// The stack at `stack_path` as [`TaskStack::parse_view`] would read it, from the view at
/// `view_path`; `None` when there is no view, or it does not describe the stack file as it is
/// now, or it is damaged: the caller then parses the stack itself. The journal is not folded in.
pub fn load(view_path: &Path, stack_path: &Path) -> Option<TaskStack> {
    let identity = Identity::of(stack_path).ok()?;
    let file = File::open(view_path).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    // Mapped, not read: a read into fresh memory costs more than parsing a third of it. Our
    // writer replaces the view by rename, so the mapping stays whole.
    let mapped = super::file::Mapped::of(&file, len)?;
    let stack = decode(mapped.bytes(), identity);
    if stack.is_none() {
        tracing::debug!(
            "{} does not match {}: reading the stack itself",
            view_path.display(),
            stack_path.display()
        );
    }
    stack
}

fn decode(bytes: &[u8], identity: Identity) -> Option<TaskStack> {
    if bytes.len() < HEADER_LEN
        || &bytes[..8] != MAGIC
        || identity.words() != [0, 1, 2, 3].map(|i| word(bytes, i))
    {
        return None;
    }
    let (count, payload_len, sum) = (word(bytes, 4), word(bytes, 5), word(bytes, 6));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != payload_len || checksum(payload) != sum {
        return None;
    }
    let mut records = Records(payload);
    let mut stack: TaskStack = serde_json::from_slice(records.next()?).ok()?;
    if stack.version != STACK_VERSION || !stack.tasks.is_empty() {
        return None;
    }
    // Never more than the payload could hold: a count is only trusted that far.
    stack
        .tasks
        .reserve_exact((count as usize).min(payload.len() / 8));
    for record in &mut records {
        let task = match record.first() {
            Some(&PLAIN) => decode_plain(record)?,
            _ => serde_json::from_slice::<Task>(record).ok()?,
        };
        stack.tasks.push(task);
    }
    (records.0.is_empty() && stack.tasks.len() as u64 == count).then_some(stack)
}

/// The first byte of a task stored in binary (a task's JSON starts with `{`).
const PLAIN: u8 = 1;

/// Appends `task` in binary when it is plain: no open items, no fields unknown to this version
/// (its own or its claim's), which is most tasks; decoding one costs a fraction of parsing its
/// JSON. Its checkpoints are left out, as from every task of a view. Returns false, having
/// written nothing, for any other task.
fn encode_plain(task: &Task, out: &mut Vec<u8>) -> bool {
    // Every field named: one added to `Task` must be decided on here.
    let Task {
        id,
        title,
        priority,
        status,
        progress,
        depends_on,
        claim,
        checkpoints: _,
        last_handoff,
        blocked_reason,
        description,
        acceptance,
        notes,
        issues,
        next_steps,
        last_session,
        fence,
        extra,
    } = task;
    let claim_plain = claim.as_ref().is_none_or(|claim| claim.extra.is_empty());
    let Some(status) = Status::ALL.iter().position(|s| s == status) else {
        return false;
    };
    if !(issues.is_empty() && next_steps.is_empty() && extra.is_empty() && claim_plain) {
        return false;
    }
    out.push(PLAIN);
    put_str(out, id);
    put_str(out, title);
    out.extend_from_slice(&priority.to_le_bytes());
    out.push(status as u8);
    out.extend_from_slice(&progress.done.to_le_bytes());
    out.extend_from_slice(&progress.total.to_le_bytes());
    out.extend_from_slice(&(depends_on.len() as u64).to_le_bytes());
    for dep in depends_on {
        put_str(out, dep);
    }
    for text in [
        last_handoff,
        blocked_reason,
        description,
        acceptance,
        notes,
        last_session,
    ] {
        out.push(u8::from(text.is_some()));
        put_str(out, text.as_deref().unwrap_or_default());
    }
    out.extend_from_slice(&fence.to_le_bytes());
    out.push(u8::from(claim.is_some()));
    if let Some(claim) = claim {
        put_str(out, &claim.session);
        put_str(out, &claim.agent);
        put_str(out, &claim.host);
        out.extend_from_slice(&claim.pid.to_le_bytes());
        out.extend_from_slice(&claim.lease_expires.timestamp().to_le_bytes());
        out.extend_from_slice(&claim.lease_expires.timestamp_subsec_nanos().to_le_bytes());
    }
    true
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The task [`encode_plain`] wrote; `None` when the record does not hold one whole.
fn decode_plain(record: &[u8]) -> Option<Task> {
    let mut read = Reader(record.get(1..)?);
    let id = read.string()?;
    let title = read.string()?;
    let priority = i64::from_le_bytes(read.array()?);
    let status = *Status::ALL.get(usize::from(read.array::<1>()?[0]))?;
    let progress = Progress {
        done: read.u64()?,
        total: read.u64()?,
    };
    let deps = usize::try_from(read.u64()?).ok()?;
    // Each dependency takes at least its length's 8 bytes: a count is only trusted that far.
    let mut depends_on = Vec::with_capacity(deps.min(read.0.len() / 8));
    for _ in 0..deps {
        depends_on.push(read.string()?);
    }
    let mut texts = [(); 6].map(|()| None);
    for text in &mut texts {
        let present = read.array::<1>()?[0] == 1;
        let value = read.string()?;
        *text = present.then_some(value);
    }
    let [
        last_handoff,
        blocked_reason,
        description,
        acceptance,
        notes,
        last_session,
    ] = texts;
    let fence = read.u64()?;
    let claim = match read.array::<1>()?[0] {
        0 => None,
        _ => Some(Claim {
            session: read.string()?,
            agent: read.string()?,
            host: read.string()?,
            pid: u32::from_le_bytes(read.array()?),
            lease_expires: DateTime::<Utc>::from_timestamp(
                i64::from_le_bytes(read.array()?),
                u32::from_le_bytes(read.array()?),
            )?,
            extra: Map::new(),
        }),
    };
    read.0.is_empty().then_some(Task {
        id,
        title,
        priority,
        status,
        progress,
        depends_on,
        claim,
        checkpoints: Checkpoints::default(),
        last_handoff,
        blocked_reason,
        description,
        acceptance,
        notes,
        issues: Vec::new(),
        next_steps: Vec::new(),
        last_session,
        fence,
        extra: Map::new(),
    })
}

/// Reads a plain task's fields in order.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.0.get(..N)?.try_into().ok()?;
        self.0 = &self.0[N..];
        Some(bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u64()?).ok()?;
        let bytes = self.0.get(..len)?;
        self.0 = &self.0[len..];
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }
}

/// The length-prefixed records of a payload; stops at the first that does not fit.
struct Records<'a>(&'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = u64::from_le_bytes(self.0.get(..8)?.try_into().ok()?);
        let end = usize::try_from(len).ok()?.checked_add(8)?;
        let record = self.0.get(8..end)?;
        self.0 = &self.0[end..];
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const STACK: &str = r#"{
  "version": 1,
  "settings": {"lease_minutes": 5, "someday": {"x": 1}},
  "tasks": [
    {"id": "a", "title": "first \"quoted\" ü", "checkpoints": [
      {"at": "2025-11-06T00:00:00Z", "session": "session_20251106_000000", "message": "m", "progress": 1}
    ], "kept": [1, 2]},
    {"id": "b", "depends_on": ["a"], "priority": 2},
    {"checkpoints": [], "id": "c", "claim": {"session": "session_20251106_000000", "agent": "x", "host": "h",
      "pid": 1, "lease_expires": "2025-11-06T00:30:00Z", "mine": true}},
    {"id": "d", "status": "in_progress", "description": "what", "notes": "ñ", "fence": 3,
      "last_handoff": "session_handoffs/x.md", "last_session": "session_20251105_000000",
      "acceptance": "", "progress": {"done": 2, "total": 9}, "claim": {"session":
      "session_20251106_000001", "agent": "y", "host": "h", "pid": 2,
      "lease_expires": "2025-11-06T01:30:00.5+01:00"}}
  ],
  "journal_generation": 4,
  "later": "kept too"
}
"#;

    fn written(dir: &Path, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let stack = dir.join("task_stack.json");
        let view = dir.join(VIEW_FILE);
        fs::write(&stack, text).unwrap();
        write(&view, Identity::of(&stack).unwrap(), text, None).unwrap();
        (stack, view)
    }

    #[test]
    fn a_view_reads_as_the_stack_parsed_without_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (stack, view) = written(dir.path(), STACK);
        let loaded = load(&view, &stack).expect("a current view");
        assert_eq!(loaded, TaskStack::parse_view(STACK).unwrap());
        assert_eq!(loaded.journal_generation, 4);
        assert_eq!(loaded.extra["later"], "kept too");
        assert_eq!(loaded.tasks[0].extra["kept"], serde_json::json!([1, 2]));
        assert!(loaded.tasks.iter().all(|t| t.checkpoints.is_empty()));
        assert!(is_current(&view, &File::open(&stack).unwrap()));
        // Not a byte of checkpoint in the cache; the plain tasks (b and d) in binary, the
        // others (unknown fields of their own or their claim's) in JSON.
        let bytes = String::from_utf8_lossy(&fs::read(&view).unwrap()).into_owned();
        assert!(!bytes.contains("\"message\""));
        assert!(!bytes.contains("\"description\""));
        assert!(!bytes.contains("\"depends_on\""));
        assert!(bytes.contains("\"kept\"") && bytes.contains("\"mine\""));
    }

    #[test]
    fn the_tasks_a_stack_was_written_from_make_the_same_view_as_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = TaskStack::parse(STACK).unwrap();
        stack.tasks[1].description = Some("tab\there \"quoted\" ü".into());
        stack.tasks[3].checkpoints = stack.tasks[0].checkpoints.clone();
        let text = stack.to_json();
        let (path, view) = written(dir.path(), &text);
        let from_text = fs::read(&view).unwrap();
        write(
            &view,
            Identity::of(&path).unwrap(),
            &text,
            Some(&stack.tasks),
        )
        .unwrap();
        assert_eq!(fs::read(&view).unwrap(), from_text);
        assert_eq!(
            load(&view, &path),
            Some(TaskStack::parse_view(&text).unwrap())
        );
    }

    #[test]
    fn a_stack_without_tasks_has_a_view_too() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"version\": 1}\n";
        let (stack, view) = written(dir.path(), text);
        assert_eq!(
            load(&view, &stack),
            Some(TaskStack::parse_view(text).unwrap())
        );
    }

    #[test]
    fn a_stack_edited_by_hand_is_not_read_from_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let (stack, view) = written(dir.path(), STACK);
        // Written in place, same length: only the change time tells.
        fs::write(&stack, STACK.replace("\"priority\": 2", "\"priority\": 7")).unwrap();
        assert_eq!(load(&view, &stack), None);
        assert!(!is_current(&view, &File::open(&stack).unwrap()));
        // Replaced by rename, as an editor does.
        let (stack, view) = written(dir.path(), STACK);
        let other = dir.path().join("other");
        fs::write(&other, STACK).unwrap();
        fs::rename(&other, &stack).unwrap();
        assert_eq!(load(&view, &stack), None);
    }

    #[test]
    fn a_damaged_or_cut_view_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (stack, view) = written(dir.path(), STACK);
        let good = fs::read(&view).unwrap();
        // A byte changed (a lease of 5 minutes made 6): the checksum no longer matches.
        let key = b"\"lease_minutes\":";
        let at = good.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        let mut damaged = good.clone();
        damaged[at] = b'6';
        for bytes in [
            damaged,
            good[..good.len() - 3].to_vec(),
            good[..HEADER_LEN - 1].to_vec(),
            [b"ORCHVW00", &good[8..]].concat(),
            Vec::new(),
        ] {
            fs::write(&view, &bytes).unwrap();
            assert_eq!(load(&view, &stack), None);
        }
        view_without(&view, &stack);
    }

    /// No view at all: nothing to read, and not current.
    fn view_without(view: &Path, stack: &Path) {
        fs::remove_file(view).unwrap();
        assert_eq!(load(view, stack), None);
        assert!(!is_current(view, &File::open(stack).unwrap()));
    }

    #[test]
    fn records_stop_at_one_that_does_not_fit() {
        let mut payload = 3u64.to_le_bytes().to_vec();
        payload.extend_from_slice(b"abc");
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut records = Records(&payload);
        assert_eq!(records.next(), Some(&b"abc"[..]));
        assert_eq!(records.next(), None);
        assert!(!records.0.is_empty());
    }
}

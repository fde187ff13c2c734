//! The agents: where usage figures come from (their transcripts, read incrementally), their hooks,
//! and the agent process `orchestrator run` drives ([`process`]).
//!
//! Each agent has its own file for its transcript format, where its transcripts are, and its
//! hooks ([`claude`], [`codex`]); [`kind_for`] tells which format a transcript is in. What is
//! common lives here: the incremental reader, its state and its cache.
//!
//! Reading is incremental: [`TranscriptState`] remembers the byte offset after the
//! last complete (`\n`-terminated) line consumed plus the parse state, so each
//! call only reads what was appended. A trailing partial line is left for the
//! next call. If the file shrank below the offset, its identity (device + inode)
//! changed, or its first bytes no longer match what was read before, it is read
//! again from the start with fresh state.
//!
//! `skipped_lines` counts lines that could not be decoded: not UTF-8, not JSON,
//! or JSON whose shape does not fit the fields read (e.g. `usage` not an
//! object), and lines longer than [`MAX_LINE_LEN`]. Well-formed records of types
//! the meter does not use (user messages, summaries, other Codex events, ...) are
//! ignored without being counted.
//!
//! Bounds: only a regular file is read (a FIFO, a device such as `/dev/zero`, a
//! directory or a socket is refused after it is opened, and opening never blocks);
//! one call reads at most [`MAX_READ_PER_CALL`] bytes and the next call goes on
//! from there; a line over [`MAX_LINE_LEN`] is skipped, never buffered whole. So a
//! call's time and memory are bounded whatever the path points at.

use std::collections::VecDeque;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub mod claude;
pub mod claude_settings;
pub mod codex;
pub mod process;

/// Which agent wrote a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptKind {
    ClaudeCode,
    Codex,
}

/// How many leading bytes of the file are fingerprinted to notice a rewrite in place.
const HEAD_LEN: u64 = 1024;
/// Buffer size of the streaming reader.
const BUF_LEN: usize = 256 * 1024;
/// The most bytes one call reads; the next call goes on from the cached offset. Bounds the time
/// `checkpoint`, `status` and the hook spend on a huge (or sparse, endless-looking) file: under a
/// second at the 300 MB/s the meter parses, while a whole 100 MB transcript still reads in one go.
pub const MAX_READ_PER_CALL: u64 = 256 * 1024 * 1024;
/// The longest line kept in memory. Claude Code's longest records are user records carrying
/// images (a few MB of base64), which the meter does not use; an assistant record with a usage
/// is far shorter. A longer line is skipped and counted in `skipped_lines`.
pub const MAX_LINE_LEN: u64 = 16 * 1024 * 1024;
/// The most bytes of a cache file read: a state is a few KB (64 message ids).
const MAX_CACHE_LEN: u64 = 1024 * 1024;

/// Everything needed to resume reading a transcript. Serializable so the caller
/// can cache it (e.g. as JSON under `.orchestrator/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptState {
    /// Format this state was built for; a different kind resets the state.
    pub kind: Option<TranscriptKind>,
    /// Byte offset just after the last complete line consumed.
    pub offset: u64,
    /// Device id of the file at last read (Unix only).
    pub dev: Option<u64>,
    /// Inode of the file at last read (Unix only).
    pub inode: Option<u64>,
    /// File length seen at last read.
    pub len: u64,
    /// FNV-1a hash of the first `head_len` bytes of the file.
    pub head_hash: u64,
    /// Number of leading bytes covered by `head_hash` (`min(offset, 1024)`).
    pub head_len: u64,
    /// Latest known context fill; `None` before any usage or after compaction.
    pub fill: Option<u64>,
    /// A compact boundary came after the last counted usage.
    pub compacted: bool,
    /// Running cumulative total (see each agent's module docs).
    pub cumulative: u64,
    /// Claude: the latest total (input + cache + output) of the most recent distinct
    /// `message.id`s, newest last. Claude Code writes one record per content block of a response,
    /// one after another, so a short window deduplicates them while keeping this cached state
    /// small however long the transcript grows.
    pub recent_messages: VecDeque<(String, u64)>,
    /// Codex: latest `model_context_window`.
    pub context_window: Option<u64>,
    /// Lines that could not be decoded, since the state was (re)started.
    pub skipped_lines: u64,
    /// `offset` is inside a line longer than [`MAX_LINE_LEN`], skipped up to its end.
    #[serde(default)]
    pub in_long_line: bool,
}

/// Result of one [`read_transcript`] call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// Current context fill; `None` when unknown (nothing yet, or compacted).
    pub fill: Option<u64>,
    pub compacted: bool,
    /// Claude: distinct-message total; Codex: last `total_token_usage.total_tokens`, else 0.
    pub cumulative: u64,
    /// Codex: `model_context_window`; Claude: `None`.
    pub context_window: Option<u64>,
    /// Undecodable lines since the state was (re)started (not only this call).
    pub skipped_lines: u64,
    /// Bytes consumed by this call.
    pub bytes_read: u64,
    /// [`MAX_READ_PER_CALL`] stopped this call before the end of the file: the figures are as of
    /// an earlier point of the transcript, and the next call goes on reading.
    pub capped: bool,
}

/// Guess from the file name: `rollout-*.jsonl` -> Codex, else ClaudeCode.
pub fn kind_for(path: &Path) -> TranscriptKind {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) if name.starts_with("rollout-") && name.ends_with(".jsonl") => {
            TranscriptKind::Codex
        }
        _ => TranscriptKind::ClaudeCode,
    }
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    path: PathBuf,
    state: TranscriptState,
}

/// The cache file of one transcript: named by a hash of its path, so sessions and hooks that
/// read the same transcript share the work.
pub fn cache_path(cache_dir: &Path, transcript: &Path) -> PathBuf {
    let hash = fnv1a(transcript.as_os_str().as_encoded_bytes());
    cache_dir.join(format!("transcript-{hash:016x}.json"))
}

/// Reads a transcript from where the cache under `cache_dir` left off, and saves the new state.
///
/// The cache is only an optimisation: an unreadable or foreign cache file means a read from
/// the start, and a cache that cannot be written costs the next reader a full read, so neither
/// is an error. It is replaced by rename, so concurrent readers never see half a file.
pub fn read_cached(cache_dir: &Path, transcript: &Path) -> Result<Reading> {
    let (reading, update) = read_cached_later(cache_dir, transcript)?;
    update.save();
    Ok(reading)
}

/// [`read_cached`] without saving the new state yet: a command reads the transcript before it
/// takes the workspace lock, and saves the state only once it knows it will not be refused.
pub fn read_cached_later(cache_dir: &Path, transcript: &Path) -> Result<(Reading, CacheUpdate)> {
    let cache = cache_path(cache_dir, transcript);
    let mut state = read_cache(&cache)
        .and_then(|bytes| serde_json::from_slice::<CacheEntry>(&bytes).ok())
        .filter(|entry| entry.path == transcript)
        .map(|entry| entry.state)
        .unwrap_or_default();
    let before = state.clone();
    let reading = read_transcript(transcript, kind_for(transcript), &mut state)?;
    let update = CacheUpdate {
        cache,
        transcript: transcript.to_path_buf(),
        state: (state != before).then_some(state),
    };
    Ok((reading, update))
}

/// The state a [`read_cached_later`] reached, to be saved in the cache.
#[derive(Debug)]
pub struct CacheUpdate {
    cache: PathBuf,
    transcript: PathBuf,
    /// `None` when nothing changed.
    state: Option<TranscriptState>,
}

impl CacheUpdate {
    /// Saves the state; a failure only costs the next reader a longer read, so it is logged.
    pub fn save(self) {
        let Some(state) = self.state else { return };
        if let Err(err) = write_cache(&self.cache, &self.transcript, state) {
            tracing::debug!(
                "cannot cache the transcript state in {}: {err:#}",
                self.cache.display()
            );
        }
    }
}

/// The cache file's bytes, when it is a regular file of a sane size: anything else is ignored
/// like a corrupt cache.
fn read_cache(cache: &Path) -> Option<Vec<u8>> {
    let (file, meta) = open_regular(cache).ok()?;
    if meta.len() > MAX_CACHE_LEN {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CACHE_LEN).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Opens `path` for reading only if it is a regular file. Opening is non-blocking, so a FIFO
/// without a writer cannot hang us, and the type is checked on the opened handle, so the file
/// cannot be swapped between the check and the read. (`O_NONBLOCK` changes nothing for the
/// reads of a regular file.)
fn open_regular(path: &Path) -> Result<(File, Metadata)> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!(
            "{} is not a regular file ({}); only regular files are read",
            path.display(),
            describe_type(&meta)
        );
    }
    Ok((file, meta))
}

#[cfg(unix)]
fn describe_type(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn describe_type(meta: &Metadata) -> &'static str {
    if meta.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

fn write_cache(cache: &Path, transcript: &Path, state: TranscriptState) -> Result<()> {
    let dir = cache.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let entry = CacheEntry {
        path: transcript.to_path_buf(),
        state,
    };
    let bytes = serde_json::to_vec(&entry)?;
    let name = cache
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("cache");
    // Not fsynced: losing the cache in a crash only costs a re-read.
    let temp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    std::fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, cache).with_context(|| format!("replacing {}", cache.display()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// How much one call may read; see [`MAX_READ_PER_CALL`] and [`MAX_LINE_LEN`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    per_call: u64,
    line: u64,
}

const LIMITS: Limits = Limits {
    per_call: MAX_READ_PER_CALL,
    line: MAX_LINE_LEN,
};

/// Reads what was appended since `state` (or everything, if state is default /
/// file replaced / truncated), up to [`MAX_READ_PER_CALL`] bytes; updates `state`.
/// A path that is not a regular file is an error naming it.
pub fn read_transcript(
    path: &Path,
    kind: TranscriptKind,
    state: &mut TranscriptState,
) -> Result<Reading> {
    read_bounded(path, kind, state, LIMITS)
}

fn read_bounded(
    path: &Path,
    kind: TranscriptKind,
    state: &mut TranscriptState,
    limits: Limits,
) -> Result<Reading> {
    debug_assert!(limits.line < limits.per_call);
    let (mut file, meta) = open_regular(path)?;
    let (dev, inode) = identity(&meta);
    let len = meta.len();

    let reset_reason = if state.kind != Some(kind) {
        Some("new state or kind changed")
    } else if state.dev != dev || state.inode != inode {
        Some("file replaced")
    } else if len < state.offset {
        Some("file truncated")
    } else if state.head_len > 0
        && head_hash(&mut file, state.head_len)
            .with_context(|| format!("reading transcript {}", path.display()))?
            != Some(state.head_hash)
    {
        Some("file rewritten")
    } else {
        None
    };
    if let Some(reason) = reset_reason {
        if state.kind.is_some() {
            tracing::debug!(path = %path.display(), reason, "re-reading transcript from the start");
        }
        *state = TranscriptState {
            kind: Some(kind),
            dev,
            inode,
            ..TranscriptState::default()
        };
    }

    file.seek(SeekFrom::Start(state.offset))
        .with_context(|| format!("seeking in transcript {}", path.display()))?;
    let mut reader = BufReader::with_capacity(BUF_LEN, file.take(limits.per_call));
    let reading =
        |err| anyhow::Error::new(err).context(format!("reading transcript {}", path.display()));
    let mut line = Vec::with_capacity(8 * 1024);
    let mut bytes_read = 0u64;
    if state.in_long_line {
        let (skipped, ended) = skip_to_line_end(&mut reader).map_err(reading)?;
        bytes_read += skipped;
        state.in_long_line = !ended;
    }
    while !state.in_long_line {
        line.clear();
        // One byte over the longest line kept tells a complete line from an overlong one.
        let n = (&mut reader)
            .take(limits.line + 1)
            .read_until(b'\n', &mut line)
            .map_err(reading)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if n as u64 <= limits.line {
                // EOF, a partial last line still being written, or the end of this call's
                // window: leave it for next time.
                break;
            }
            // Too long to keep: skip it to its end, which may lie beyond this call.
            state.skipped_lines += 1;
            let (skipped, ended) = skip_to_line_end(&mut reader).map_err(reading)?;
            bytes_read += n as u64 + skipped;
            state.in_long_line = !ended;
            continue;
        }
        bytes_read += n as u64;
        let mut body = &line[..line.len() - 1];
        if let Some(stripped) = body.strip_suffix(b"\r") {
            body = stripped;
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ok = match kind {
            TranscriptKind::ClaudeCode => claude::apply_line(body, state),
            TranscriptKind::Codex => codex::apply_line(body, state),
        };
        if !ok {
            state.skipped_lines += 1;
        }
    }
    let window = reader.into_inner();
    let window_used = window.limit() == 0;
    let mut file = window.into_inner();
    state.offset += bytes_read;
    state.len = len.max(state.offset);
    let capped = window_used && state.offset < len;
    let new_head_len = state.offset.min(HEAD_LEN);
    if new_head_len != state.head_len {
        // If the file shrank meanwhile, skip the fingerprint: the next call sees
        // `len < offset` and starts over anyway.
        let hash = head_hash(&mut file, new_head_len)
            .with_context(|| format!("reading transcript {}", path.display()))?;
        (state.head_hash, state.head_len) = hash.map_or((0, 0), |h| (h, new_head_len));
    }

    Ok(Reading {
        fill: state.fill,
        compacted: state.compacted,
        cumulative: state.cumulative,
        context_window: state.context_window,
        skipped_lines: state.skipped_lines,
        bytes_read,
        capped,
    })
}

/// Consumes bytes up to and including the next `\n` without keeping them; returns how many were
/// consumed and whether the newline was reached (else the input ended first).
fn skip_to_line_end(reader: &mut impl BufRead) -> std::io::Result<(u64, bool)> {
    let mut skipped = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((skipped, false));
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok((skipped + i as u64 + 1, true));
            }
            None => {
                let n = buf.len();
                reader.consume(n);
                skipped += n as u64;
            }
        }
    }
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> (Option<u64>, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    (Some(meta.dev()), Some(meta.ino()))
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// FNV-1a hash of the first `n` bytes, or `None` if the file is shorter.
fn head_hash(file: &mut File, n: u64) -> std::io::Result<Option<u64>> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(n as usize);
    file.by_ref().take(n).read_to_end(&mut buf)?;
    if (buf.len() as u64) < n {
        return Ok(None);
    }
    Ok(Some(fnv1a(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn line(v: serde_json::Value) -> Vec<u8> {
        let mut s = serde_json::to_vec(&v).unwrap();
        s.push(b'\n');
        s
    }

    fn assistant(id: &str, input: u64, cc: u64, cr: u64, out: u64) -> serde_json::Value {
        json!({
            "type": "assistant",
            "isSidechain": false,
            "uuid": format!("u-{id}-{input}"),
            "message": {
                "id": id,
                "model": "claude-opus-4",
                "role": "assistant",
                "content": [{"type": "text", "text": "hello \"quoted\" \u{e9}"}],
                "usage": {
                    "input_tokens": input,
                    "cache_creation_input_tokens": cc,
                    "cache_read_input_tokens": cr,
                    "output_tokens": out,
                    "server_tool_use": {"web_search_requests": 0}
                }
            }
        })
    }

    fn user(text: &str) -> serde_json::Value {
        json!({"type": "user", "message": {"role": "user", "content": text}})
    }

    fn compact() -> serde_json::Value {
        json!({"type": "system", "subtype": "compact_boundary", "content": "Conversation compacted"})
    }

    fn read(path: &Path, state: &mut TranscriptState) -> Reading {
        read_transcript(path, TranscriptKind::ClaudeCode, state).unwrap()
    }

    fn fresh(path: &Path) -> Reading {
        read_transcript(path, kind_for(path), &mut TranscriptState::default()).unwrap()
    }

    #[test]
    fn duplicate_message_id_counted_once_fill_from_latest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(user("hi")));
        // Same response written once per content block; output grows in the last one.
        append(&p, &line(assistant("msg_1", 10, 100, 1000, 5)));
        append(&p, &line(assistant("msg_1", 10, 100, 1000, 50)));
        append(&p, &line(assistant("msg_2", 20, 200, 2000, 7)));
        append(&p, &line(assistant("msg_2", 30, 200, 2000, 7)));
        let r = fresh(&p);
        assert_eq!(r.fill, Some(30 + 200 + 2000));
        // Latest usage per id: msg_1 = 1160, msg_2 = 2237.
        assert_eq!(r.cumulative, 1160 + 2237);
        assert!(!r.compacted);
        assert_eq!(r.context_window, None);
        assert_eq!(r.skipped_lines, 0);
        assert_eq!(r.bytes_read, std::fs::metadata(&p).unwrap().len());
    }

    #[test]
    fn sidechain_synthetic_and_zero_usage_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(assistant("msg_1", 1, 2, 3, 4)));
        let mut side = assistant("msg_side", 500, 500, 500, 500);
        side["isSidechain"] = json!(true);
        append(&p, &line(side));
        let mut synth = assistant("msg_synth", 900, 0, 0, 0);
        synth["message"]["model"] = json!("<synthetic>");
        append(&p, &line(synth));
        append(&p, &line(assistant("msg_zero", 0, 0, 0, 99)));
        // Missing usage fields count as zero.
        append(
            &p,
            &line(json!({"type": "assistant", "message": {"id": "msg_x", "usage": {}}})),
        );
        let r = fresh(&p);
        assert_eq!(r.fill, Some(6));
        assert_eq!(r.cumulative, 10);
        assert_eq!(r.skipped_lines, 0);

        // Sidechain compact boundaries do not compact the main chain either.
        let mut side_compact = compact();
        side_compact["isSidechain"] = json!(true);
        append(&p, &line(side_compact));
        let r = fresh(&p);
        assert_eq!((r.fill, r.compacted), (Some(6), false));
    }

    #[test]
    fn partial_usage_fields_default_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(
            &p,
            &line(json!({"type": "assistant", "message": {"id": "m",
                "usage": {"input_tokens": 7, "cache_read_input_tokens": null, "output_tokens": 3}}})),
        );
        let r = fresh(&p);
        assert_eq!((r.fill, r.cumulative), (Some(7), 10));
    }

    #[test]
    fn compact_boundary_then_new_assistant() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        append(&p, &line(assistant("msg_1", 10, 0, 90_000, 1)));
        assert_eq!(read(&p, &mut st).fill, Some(90_010));
        append(&p, &line(compact()));
        append(&p, &line(user("continue")));
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.compacted), (None, true));
        assert_eq!(r.cumulative, 90_011);
        append(&p, &line(assistant("msg_2", 5, 3000, 0, 2)));
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.compacted), (Some(3005), false));
        assert_eq!(r.cumulative, 90_011 + 3007);
        // A fresh read of the whole file agrees with the incremental one.
        let f = fresh(&p);
        assert_eq!(
            Reading {
                bytes_read: f.bytes_read,
                ..r
            },
            f
        );
        assert_eq!((f.fill, f.compacted), (Some(3005), false));
    }

    #[test]
    fn malformed_and_non_utf8_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(assistant("msg_1", 1, 1, 1, 1)));
        append(
            &p,
            b"{\"type\":\"assistant\",\"message\":{\"usage\":{\"input_tokens\":5\n",
        );
        append(
            &p,
            b"{\"type\":\"assistant\",\"message\":{\"usage\":\"nope\"}}\n",
        );
        append(&p, b"[1,2,3]\n");
        append(&p, b"\n   \n");
        let mut bad = line(assistant("msg_bad", 1000, 0, 0, 0));
        bad.insert(10, 0xff);
        append(&p, &bad);
        append(&p, b"{\"type\":\"user\",\"x\":\"\xc3\x28\"}\n");
        append(
            &p,
            &line(json!({"type": "some-future-type", "stuff": [1, {"a": null}]})),
        );
        append(&p, &line(assistant("msg_2", 2, 2, 2, 2)));
        let r = fresh(&p);
        assert_eq!(r.fill, Some(6));
        assert_eq!(r.cumulative, 4 + 8);
        // truncated JSON, usage of the wrong shape, non-object, two non-UTF-8 lines.
        assert_eq!(r.skipped_lines, 5);
    }

    #[test]
    fn line_split_across_two_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        let first = line(assistant("msg_1", 10, 0, 0, 1));
        append(&p, &first);
        let r = read(&p, &mut st);
        assert_eq!(r.bytes_read, first.len() as u64);

        let rec = line(assistant("msg_2", 20, 0, 0, 1));
        let (a, b) = rec.split_at(rec.len() / 2);
        append(&p, a);
        let r = read(&p, &mut st);
        assert_eq!(r.bytes_read, 0, "partial line must not be consumed");
        assert_eq!((r.fill, r.cumulative), (Some(10), 11));
        assert_eq!(st.offset, first.len() as u64);

        append(&p, b);
        let r = read(&p, &mut st);
        assert_eq!(r.bytes_read, rec.len() as u64);
        assert_eq!((r.fill, r.cumulative, r.skipped_lines), (Some(20), 32, 0));
        let r = read(&p, &mut st);
        assert_eq!((r.bytes_read, r.cumulative), (0, 32));
    }

    #[test]
    fn every_split_point_matches_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let whole: Vec<u8> = [
            line(assistant("msg_1", 10, 1, 1, 1)),
            line(compact()),
            b"garbage\n".to_vec(),
            line(assistant("msg_2", 20, 2, 2, 2)),
            line(assistant("msg_2", 30, 2, 2, 2)),
            line(compact()),
        ]
        .concat();
        let full = {
            let p = dir.path().join("full.jsonl");
            append(&p, &whole);
            fresh(&p)
        };
        assert_eq!(
            (full.fill, full.compacted, full.cumulative),
            (None, true, 13 + 36)
        );
        for cut in 0..=whole.len() {
            let p = dir.path().join(format!("cut{cut}.jsonl"));
            let mut st = TranscriptState::default();
            append(&p, &whole[..cut]);
            let r1 = read(&p, &mut st);
            // Round-trip the state through JSON like the caller's cache does.
            let mut st: TranscriptState =
                serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
            append(&p, &whole[cut..]);
            let r2 = read(&p, &mut st);
            assert_eq!(
                r1.bytes_read + r2.bytes_read,
                whole.len() as u64,
                "cut {cut}"
            );
            assert_eq!(
                Reading {
                    bytes_read: full.bytes_read,
                    ..r2
                },
                full,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn truncation_rereads_from_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        append(&p, &line(assistant("msg_1", 100, 0, 0, 0)));
        append(&p, &line(assistant("msg_2", 200, 0, 0, 0)));
        assert_eq!(read(&p, &mut st).cumulative, 300);
        // Truncate in place (same inode) and write a shorter file.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let rec = line(assistant("msg_3", 7, 0, 0, 0));
        append(&p, &rec);
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.cumulative), (Some(7), 7));
        assert_eq!(r.bytes_read, rec.len() as u64);
        assert_eq!(st.offset, rec.len() as u64);
    }

    #[test]
    fn truncation_keeping_a_long_prefix_rereads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        let recs: Vec<Vec<u8>> = (1..=12)
            .map(|i| line(assistant(&format!("msg_{i}"), i * 10, 0, 0, 0)))
            .collect();
        // Keep the shortest prefix of whole records that covers the fingerprinted head.
        let mut kept = 0;
        let mut keep = 0usize;
        while keep as u64 <= HEAD_LEN {
            keep += recs[kept].len();
            kept += 1;
        }
        assert!(kept < 11);
        append(&p, &recs.concat());
        assert_eq!(read(&p, &mut st).cumulative, (1..=12).sum::<u64>() * 10);
        // Truncate to that prefix (head unchanged), then append a short record.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(keep as u64)
            .unwrap();
        append(
            &p,
            b"{\"type\":\"assistant\",\"message\":{\"usage\":{\"input_tokens\":1}}}\n",
        );
        let expected = (1..=kept as u64).sum::<u64>() * 10 + 1;
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.cumulative), (Some(1), expected));
        assert_eq!(r.bytes_read, std::fs::metadata(&p).unwrap().len());
    }

    #[test]
    fn rewrite_in_place_to_longer_file_rereads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        append(&p, &line(assistant("msg_1", 100, 0, 0, 0)));
        assert_eq!(read(&p, &mut st).cumulative, 100);
        // Same inode, now longer than the old offset: caught by the head fingerprint.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all(&line(assistant("msg_9", 1, 0, 0, 0))).unwrap();
        f.write_all(&line(assistant("msg_8", 2, 0, 0, 0))).unwrap();
        drop(f);
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.cumulative), (Some(2), 3));
    }

    #[test]
    fn replaced_file_rereads_from_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        append(&p, &line(assistant("msg_1", 100, 0, 0, 0)));
        assert_eq!(read(&p, &mut st).cumulative, 100);
        let old_inode = st.inode;
        // New file, same first bytes, longer: only the inode tells it apart.
        let tmp = dir.path().join("new.jsonl");
        append(&tmp, &line(assistant("msg_1", 100, 0, 0, 0)));
        append(&tmp, &line(assistant("msg_2", 50, 0, 0, 0)));
        std::fs::rename(&tmp, &p).unwrap();
        let r = read(&p, &mut st);
        assert_ne!(st.inode, old_inode);
        assert_eq!((r.fill, r.cumulative), (Some(50), 150));
        assert_eq!(r.bytes_read, std::fs::metadata(&p).unwrap().len());
    }

    #[test]
    fn kind_change_resets_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(assistant("msg_1", 100, 0, 0, 0)));
        let mut st = TranscriptState::default();
        read(&p, &mut st);
        let r = read_transcript(&p, TranscriptKind::Codex, &mut st).unwrap();
        assert_eq!((r.fill, r.cumulative), (None, 0));
        assert!(r.bytes_read > 0);
    }

    fn token_count(
        last: serde_json::Value,
        total: serde_json::Value,
        window: serde_json::Value,
    ) -> serde_json::Value {
        json!({
            "timestamp": "2025-09-01T10:00:00.000Z",
            "type": "event_msg",
            "payload": {
                "type": "token_count",
                "info": {
                    "total_token_usage": {"input_tokens": 1, "total_tokens": total},
                    "last_token_usage": {"input_tokens": 1, "total_tokens": last},
                    "model_context_window": window
                },
                "rate_limits": null
            }
        })
    }

    #[test]
    fn codex_last_token_count_wins_nulls_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rollout-2025-09-01T10-00-00-abc.jsonl");
        assert_eq!(kind_for(&p), TranscriptKind::Codex);
        let mut st = TranscriptState::default();
        append(
            &p,
            &line(json!({"type": "session_meta", "payload": {"id": "abc", "info": "a string"}})),
        );
        append(
            &p,
            &line(json!({"type": "event_msg", "payload": {"type": "token_count", "info": null}})),
        );
        let r = read_transcript(&p, TranscriptKind::Codex, &mut st).unwrap();
        assert_eq!((r.fill, r.cumulative, r.context_window), (None, 0, None));
        assert_eq!(r.skipped_lines, 0);

        append(
            &p,
            &line(token_count(json!(1000), json!(5000), json!(272000))),
        );
        append(
            &p,
            &line(json!({"type": "response_item", "payload": {"type": "message", "info": [1]}})),
        );
        append(
            &p,
            &line(token_count(json!(1500), json!(6500), json!(null))),
        );
        let r = read_transcript(&p, TranscriptKind::Codex, &mut st).unwrap();
        assert_eq!(
            (r.fill, r.cumulative, r.context_window),
            (Some(1500), 6500, Some(272000))
        );

        append(
            &p,
            &line(token_count(json!(null), json!(7000), json!(400000))),
        );
        let mut no_last = token_count(json!(1), json!(1), json!(1));
        no_last["payload"]["info"] = json!({"model_context_window": 500000});
        append(&p, &line(no_last));
        append(&p, b"{not json\n");
        let r = read_transcript(&p, TranscriptKind::Codex, &mut st).unwrap();
        assert_eq!(
            (r.fill, r.cumulative, r.context_window),
            (Some(1500), 7000, Some(500000))
        );
        assert_eq!((r.compacted, r.skipped_lines), (false, 1));

        // Claude-style records mean nothing in a Codex rollout.
        append(&p, &line(assistant("msg_1", 1, 1, 1, 1)));
        let r = read_transcript(&p, TranscriptKind::Codex, &mut st).unwrap();
        assert_eq!((r.fill, r.cumulative), (Some(1500), 7000));
    }

    #[test]
    fn kind_for_names() {
        assert_eq!(
            kind_for(Path::new("/x/rollout-2025-01-01-x.jsonl")),
            TranscriptKind::Codex
        );
        assert_eq!(
            kind_for(Path::new("rollout-a.json")),
            TranscriptKind::ClaudeCode
        );
        assert_eq!(
            kind_for(Path::new("/x/abc-123.jsonl")),
            TranscriptKind::ClaudeCode
        );
        assert_eq!(
            kind_for(Path::new("/x/my-rollout-1.jsonl")),
            TranscriptKind::ClaudeCode
        );
    }

    #[test]
    fn missing_file_error_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.jsonl");
        let err = read_transcript(
            &p,
            TranscriptKind::ClaudeCode,
            &mut TranscriptState::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("nope.jsonl"), "{err:#}");
    }

    /// Limits small enough to cross in a test: lines of up to 128 bytes, 400 bytes per call.
    const SMALL: Limits = Limits {
        per_call: 400,
        line: 128,
    };

    fn read_small(p: &Path, st: &mut TranscriptState) -> Reading {
        read_bounded(p, TranscriptKind::ClaudeCode, st, SMALL).unwrap()
    }

    /// A Claude record of exactly `len` bytes with its newline, filling the context to `fill`.
    fn padded(fill: u64, len: usize) -> Vec<u8> {
        let tail = format!(
            "\",\"type\":\"assistant\",\"message\":{{\"usage\":{{\"input_tokens\":{fill}}}}}}}\n"
        );
        let mut out = b"{\"p\":\"".to_vec();
        out.extend(std::iter::repeat_n(b'x', len - out.len() - tail.len()));
        out.extend_from_slice(tail.as_bytes());
        assert_eq!(out.len(), len);
        out
    }

    #[test]
    fn a_line_over_the_cap_is_skipped_and_counted_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &padded(7, 129));
        append(&p, &padded(9, 129 + 1));
        append(&p, &padded(11, 80));
        let mut st = TranscriptState::default();
        let r = read_small(&p, &mut st);
        // 129 bytes with the newline is a 128-byte line: kept, and it counted (fill 7 then 11
        // would hide it, so check the skipped count). 130 is one too many.
        assert_eq!((r.fill, r.skipped_lines), (Some(11), 1));
        assert_eq!(r.bytes_read, 129 + 130 + 80);
        let mut st = TranscriptState::default();
        std::fs::write(&p, padded(7, 129)).unwrap();
        assert_eq!(read_small(&p, &mut st).fill, Some(7));
        assert!(!st.in_long_line && !r.capped);
    }

    #[test]
    fn a_long_line_cut_by_the_end_of_the_file_is_skipped_to_its_end_later() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &padded(5, 80));
        let long = padded(9, 300);
        append(&p, &long[..200]);
        let mut st = TranscriptState::default();
        let r = read_small(&p, &mut st);
        assert_eq!((r.fill, r.skipped_lines, r.bytes_read), (Some(5), 1, 280));
        assert!(!r.capped);
        assert!(st.in_long_line, "the offset is inside the long line");
        // Round-trip through the cache's JSON, as between two commands.
        let mut st: TranscriptState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        append(&p, &long[200..]);
        append(&p, &padded(13, 80));
        let r = read_small(&p, &mut st);
        assert_eq!(
            (r.fill, r.skipped_lines, r.bytes_read),
            (Some(13), 1, 100 + 80)
        );
        assert!(!st.in_long_line);
    }

    #[test]
    fn one_call_reads_at_most_the_cap_and_the_next_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        for fill in 1..=10 {
            append(&p, &padded(fill, 120));
        }
        let mut st = TranscriptState::default();
        let mut fills = Vec::new();
        let mut total = 0;
        loop {
            let r = read_small(&p, &mut st);
            assert!(r.bytes_read <= SMALL.per_call, "{}", r.bytes_read);
            total += r.bytes_read;
            fills.push(r.fill);
            if !r.capped {
                break;
            }
        }
        // 400-byte windows hold three 120-byte lines; the fourth waits for the next call.
        assert_eq!(fills, [Some(3), Some(6), Some(9), Some(10)]);
        assert_eq!((total, st.skipped_lines), (1200, 0));
        assert!(!read_small(&p, &mut st).capped);
    }

    #[test]
    fn a_long_line_longer_than_a_whole_call_is_skipped_over_several_calls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &padded(3, 1000));
        append(&p, &padded(4, 80));
        let mut st = TranscriptState::default();
        let mut calls = 0;
        let r = loop {
            calls += 1;
            let r = read_small(&p, &mut st);
            if !r.capped {
                break r;
            }
        };
        assert_eq!((r.fill, r.skipped_lines, calls), (Some(4), 1, 3));
        assert_eq!(st.offset, 1080);
    }

    #[test]
    fn what_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.jsonl");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let zero = dir.path().join("zero.jsonl");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for (path, what) in [
            (&fifo, "a FIFO"),
            (&zero, "a character device"),
            (&dir.path().to_path_buf(), "a directory"),
        ] {
            let err = read_transcript(path, TranscriptKind::ClaudeCode, &mut Default::default())
                .unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains("is not a regular file"), "{text}");
            assert!(text.contains(what), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }

    #[test]
    fn a_cache_that_is_not_a_regular_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(assistant("msg_1", 1, 2, 3, 4)));
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let c_path =
            std::ffi::CString::new(cache_path(&cache, &p).as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let r = read_cached(&cache, &p).unwrap();
        assert_eq!(r.fill, Some(6));
    }

    #[test]
    fn state_serializes_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(assistant("msg_1", 1, 2, 3, 4)));
        let mut st = TranscriptState::default();
        read(&p, &mut st);
        let v: serde_json::Value = serde_json::to_value(&st).unwrap();
        assert_eq!(v["kind"], json!("claude_code"));
        assert_eq!(v["offset"], json!(std::fs::metadata(&p).unwrap().len()));
        assert_eq!(v["recent_messages"][0], json!(["msg_1", 10]));
        let back: TranscriptState = serde_json::from_value(v).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn a_100_mb_transcript_then_a_1_kb_append_reads_only_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.jsonl");
        let mut record = assistant("msg_0", 5, 1000, 20_000, 10);
        record["message"]["content"][0]["text"] = json!("y".repeat(8000));
        let block = line(record);
        {
            let mut out = std::io::BufWriter::new(File::create(&p).unwrap());
            for _ in 0..(100 * 1024 * 1024 / block.len() + 1) {
                out.write_all(&block).unwrap();
            }
        }
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len >= 100 * 1024 * 1024);
        let cache = dir.path().join("cache");
        let first = read_cached(&cache, &p).unwrap();
        assert_eq!(first.bytes_read, len);
        assert_eq!(first.fill, Some(21_005));
        assert_eq!(first.cumulative, 21_015, "one message id, counted once");

        let mut appended = assistant("msg_1", 5, 1000, 150_000, 10);
        let pad = 1024 - line(appended.clone()).len();
        appended["message"]["content"][0]["text"] = json!("z".repeat(pad + 17));
        let appended = line(appended);
        assert!((1000..1100).contains(&appended.len()), "{}", appended.len());
        append(&p, &appended);
        let second = read_cached(&cache, &p).unwrap();
        assert_eq!(second.bytes_read, appended.len() as u64);
        assert_eq!(second.fill, Some(151_005));
        assert_eq!(second.cumulative, 21_015 + 151_015);
        // Nothing appended: nothing read.
        assert_eq!(read_cached(&cache, &p).unwrap().bytes_read, 0);
    }

    #[test]
    fn a_foreign_or_corrupt_cache_means_a_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(assistant("msg_1", 1, 2, 3, 4)));
        let cache = dir.path().join("cache");
        read_cached(&cache, &p).unwrap();
        std::fs::write(cache_path(&cache, &p), b"{not json").unwrap();
        let r = read_cached(&cache, &p).unwrap();
        assert_eq!(
            (r.fill, r.bytes_read),
            (Some(6), std::fs::metadata(&p).unwrap().len())
        );
    }
}

//! The agents: where usage figures come from (their transcripts, read incrementally), their hooks,
//! and the agent process `orchestrator run` drives ([`process`]).
//!
//! Each agent has its own file for its transcript format, where its transcripts are, and its
//! hooks ([`claude`], [`codex`]). What is common lives here: telling the formats apart, the
//! incremental reader, its state and its cache. Adding an agent is one file with a `recognises`
//! and an `apply_line`, and an arm in [`detect`] and [`apply`].
//!
//! The format is told from the content, not the file name: the first line that only one format
//! writes decides it (a renamed rollout is still a rollout). A file where no line decides it, or
//! where no line carries a usage, gives a [`Reading`] with `records == 0`: no figure, which the
//! caller reports as unknown, never as 0.
//!
//! Reading is incremental: [`TranscriptState`] remembers the byte offset after the
//! last line consumed plus the parse state, so each call only reads what was appended. A
//! trailing line without its newline is read when it is a whole JSON object (no proper prefix of
//! a one-object line is one), and its newline is skipped when it arrives; any other trailing
//! partial line is left for the next call. If the file shrank below the offset, its identity
//! (device + inode) changed, or its first bytes no longer match what was read before, it is read
//! again from the start with fresh state.
//!
//! `skipped_lines` counts lines that could not be decoded: not UTF-8, not JSON,
//! or JSON whose shape does not fit the fields read (e.g. `usage` not an
//! object), and lines longer than [`MAX_LINE_LEN`]. Well-formed records of types
//! the meter does not use (user messages, summaries, other Codex events, ...) are
//! ignored without being counted; a Claude Code line that cannot carry a figure (no `"usage"`
//! key, no compaction boundary) is passed over unparsed, so it is never counted either.
//!
//! Bounds: only a regular file is read (a FIFO, a device such as `/dev/zero`, a
//! directory or a socket is refused after it is opened, and opening never blocks);
//! one call reads at most [`MAX_READ_PER_CALL`] bytes of a file and the next call goes on
//! from there; a line over [`MAX_LINE_LEN`] is skipped, never buffered whole. So a
//! call's time and memory are bounded whatever the path points at.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::core::pricing::TokenParts;

pub mod claude;
pub mod claude_settings;
pub mod codex;
pub mod notify;
pub mod process;

/// Which agent wrote a transcript, and in which of its formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptKind {
    /// Claude Code's session transcript (`~/.claude/projects/*/<session>.jsonl`).
    ClaudeCode,
    /// A Codex rollout (`~/.codex/sessions/**/rollout-*.jsonl`).
    Codex,
    /// The JSONL `codex exec --json` prints on stdout.
    CodexExec,
}

impl TranscriptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptKind::ClaudeCode => "claude_code",
            TranscriptKind::Codex => "codex",
            TranscriptKind::CodexExec => "codex_exec",
        }
    }
}

/// The format only `text` (one JSON line) can be in, if it tells.
fn detect(text: &str) -> Option<TranscriptKind> {
    if codex::recognises_exec(text) {
        Some(TranscriptKind::CodexExec)
    } else if codex::recognises_rollout(text) {
        Some(TranscriptKind::Codex)
    } else if claude::recognises(text) {
        Some(TranscriptKind::ClaudeCode)
    } else {
        None
    }
}

/// Applies one line of a file in format `kind`; false if it could not be decoded.
fn apply(kind: TranscriptKind, body: &[u8], state: &mut TranscriptState, main: Main) -> bool {
    match kind {
        TranscriptKind::ClaudeCode => claude::apply_line(body, state, main),
        TranscriptKind::Codex => codex::apply_line(body, state),
        TranscriptKind::CodexExec => codex::apply_exec_line(body, state),
    }
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
/// The most bytes of a cache file read: a state is a few KB of message ids plus up to
/// [`claude::MAIN_IDS`] hashes (8 KB), and one small state per subagent file.
const MAX_CACHE_LEN: u64 = 16 * 1024 * 1024;
/// Bumped when the meaning of a cached state changes: an older state is read again from the start.
const STATE_VERSION: u32 = 3;

/// Everything needed to resume reading a transcript. Serializable so the caller
/// can cache it (e.g. as JSON under `.orchestrator/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptState {
    /// [`STATE_VERSION`] of the reader that built this state.
    #[serde(default)]
    pub version: u32,
    /// Format of the file, once a line told it.
    pub kind: Option<TranscriptKind>,
    /// Byte offset just after the last line consumed.
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
    /// Running cumulative total (see each agent's module docs), subagents' included.
    pub cumulative: u64,
    /// The part of `cumulative` spent by subagents (sidechain records).
    #[serde(default)]
    pub subagent: u64,
    /// Records that carried a usage: 0 means the file gave no figure at all.
    #[serde(default)]
    pub records: u64,
    /// Claude: the largest total (input + cache + output) of the most recent distinct responses
    /// (`message.id` + `requestId`), newest last. Claude Code writes one record per content block
    /// of a response, one after another, so a short window deduplicates them while keeping this
    /// cached state small however long the transcript grows.
    /// Each entry also keeps the response's tokens by price, to price what a larger copy adds.
    pub recent_messages: VecDeque<(String, u64, TokenParts)>,
    /// Claude: 32-bit hashes of the latest main-chain `message.id`s, so that a sidechain copy of
    /// a main-chain response (a `/btw` log replaying the conversation) is not counted again.
    /// Cached as one hex string: 8 KB for [`claude::MAIN_IDS`], read and written by every command.
    #[serde(default, with = "hex_ids")]
    pub main_ids: VecDeque<u32>,
    #[serde(skip)]
    main_index: Index,
    /// Codex: latest `model_context_window`.
    pub context_window: Option<u64>,
    /// Codex: the thread's running total as last written, to count what each event adds.
    #[serde(default)]
    pub codex_total: Option<u64>,
    /// `codex exec --json`: the thread whose totals `codex_total` holds.
    #[serde(default)]
    pub codex_thread: Option<String>,
    /// Tokens per model id ([`crate::core::pricing::NO_MODEL`] for tokens of no named model), for pricing: what the
    /// cumulative counts, split the ways tokens are priced.
    #[serde(default)]
    pub models: BTreeMap<String, TokenParts>,
    /// Codex: the model of the latest `turn_context` (codex-rs `TurnContextItem.model`).
    #[serde(default)]
    pub model: Option<String>,
    /// Codex: the thread's running total by price, to price what each event adds.
    #[serde(default)]
    pub codex_parts: Option<TokenParts>,
    /// Lines that could not be decoded, since the state was (re)started.
    pub skipped_lines: u64,
    /// `offset` is inside a line longer than [`MAX_LINE_LEN`], skipped up to its end.
    #[serde(default)]
    pub in_long_line: bool,
    /// The last line was read without its newline, which is skipped when it comes.
    #[serde(default)]
    pub newline_owed: bool,
}

/// A lookup index over `main_ids`, built on first use; not part of the state's value.
#[derive(Debug, Clone, Default)]
struct Index(Option<HashSet<u32>>);

/// `main_ids` as one string of 8-digit hex numbers.
mod hex_ids {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::collections::VecDeque;
    use std::fmt::Write;

    pub fn serialize<S: Serializer>(ids: &VecDeque<u32>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(ids.len() * 8);
        for id in ids {
            write!(text, "{id:08x}").expect("writing to a String");
        }
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<VecDeque<u32>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() % 8 != 0 || !text.is_ascii() {
            return Err(D::Error::custom(
                "main_ids is not a string of 8-digit hex numbers",
            ));
        }
        (0..text.len())
            .step_by(8)
            .map(|i| u32::from_str_radix(&text[i..i + 8], 16).map_err(D::Error::custom))
            .collect()
    }
}

impl PartialEq for Index {
    fn eq(&self, _: &Index) -> bool {
        true
    }
}

impl TranscriptState {
    /// Adds tokens to a model's.
    pub(super) fn add_model_tokens(&mut self, model: &str, tokens: &TokenParts) {
        if tokens.is_zero() {
            return;
        }
        match self.models.get_mut(model) {
            Some(counted) => counted.add(tokens),
            None => {
                self.models.insert(model.to_string(), *tokens);
            }
        }
    }

    /// Whether `hash` is among the remembered main-chain message ids.
    fn has_main_id(&mut self, hash: u32) -> bool {
        self.index_main_ids();
        self.knows_main_id(hash)
    }

    /// Builds the lookup index of `main_ids`, if not built yet.
    fn index_main_ids(&mut self) {
        let ids = &self.main_ids;
        self.main_index
            .0
            .get_or_insert_with(|| ids.iter().copied().collect());
    }

    /// [`Self::has_main_id`] without building the index.
    fn knows_main_id(&self, hash: u32) -> bool {
        match &self.main_index.0 {
            Some(index) => index.contains(&hash),
            None => self.main_ids.contains(&hash),
        }
    }

    /// Remembers a main-chain message id, forgetting the oldest past `cap`.
    fn push_main_id(&mut self, hash: u32, cap: usize) {
        if self.main_ids.len() == cap
            && let Some(old) = self.main_ids.pop_front()
            && let Some(index) = &mut self.main_index.0
        {
            index.remove(&old);
        }
        self.main_ids.push_back(hash);
        if let Some(index) = &mut self.main_index.0 {
            index.insert(hash);
        }
    }
}

/// The main transcript's state, for reading its subagents' files: their copies of main-chain
/// responses are not counted.
#[derive(Clone, Copy)]
pub(crate) enum Main<'a> {
    /// This file is the main transcript.
    Itself,
    /// This file is a subagent's; here is the main transcript's state.
    Of(&'a TranscriptState),
}

/// Result of one read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The format the content was recognised as, if any line told.
    pub kind: Option<TranscriptKind>,
    /// Current context fill; `None` when unknown (nothing yet, compacted, or a format that has
    /// no fill, like `codex exec --json`).
    pub fill: Option<u64>,
    pub compacted: bool,
    /// Total tokens of the session, subagents included (see each agent's module docs).
    pub cumulative: u64,
    /// The part of `cumulative` spent by subagents.
    pub subagent: u64,
    /// Records that carried a usage; 0 means the transcript gave no figure.
    pub records: u64,
    /// Codex: `model_context_window`; Claude: `None`.
    pub context_window: Option<u64>,
    /// Tokens per model, subagents' included ([`crate::core::pricing::NO_MODEL`] for tokens of no named model).
    pub models: BTreeMap<String, TokenParts>,
    /// Undecodable lines since the state was (re)started (not only this call).
    pub skipped_lines: u64,
    /// Bytes consumed by this call.
    pub bytes_read: u64,
    /// [`MAX_READ_PER_CALL`] stopped this call before the end of the file: the figures are as of
    /// an earlier point of the transcript, and the next call goes on reading.
    pub capped: bool,
}

impl Reading {
    /// Whether the transcript gave a figure for the context fill (or said it was just compacted).
    pub fn has_fill(&self) -> bool {
        self.fill.is_some() || self.compacted
    }
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    path: PathBuf,
    state: TranscriptState,
    /// The states of the session's subagent transcripts, by path.
    #[serde(default)]
    subagents: Vec<(PathBuf, TranscriptState)>,
}

/// The cache file of one transcript: named by a hash of its path, so sessions and hooks that
/// read the same transcript share the work.
pub fn cache_path(cache_dir: &Path, transcript: &Path) -> PathBuf {
    let hash = fnv1a(transcript.as_os_str().as_encoded_bytes());
    cache_dir.join(format!("transcript-{hash:016x}.json"))
}

/// Reads a transcript (and its subagents' transcripts) from where the cache under `cache_dir`
/// left off, and saves the new state.
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
    let entry = read_cache(&cache)
        .and_then(|bytes| {
            checked_cache(&bytes).and_then(|json| serde_json::from_slice::<CacheEntry>(json).ok())
        })
        .filter(|entry| entry.path == transcript);
    let (mut state, old_subagents) =
        entry.map_or_else(Default::default, |e| (e.state, e.subagents));
    let before = state.clone();
    let mut reading = read_bounded(transcript, &mut state, LIMITS, None, Main::Itself)?;

    let mut subagents = Vec::new();
    let subagent_files = match state.kind {
        Some(TranscriptKind::ClaudeCode) => claude::subagent_transcripts(transcript),
        _ => Vec::new(),
    };
    if !subagent_files.is_empty() {
        state.index_main_ids();
        for path in subagent_files {
            let old = old_subagents.iter().find(|(p, _)| *p == path);
            let mut sub = old.map(|(_, s)| s.clone()).unwrap_or_default();
            let kind = Some(TranscriptKind::ClaudeCode);
            match read_bounded(&path, &mut sub, LIMITS, kind, Main::Of(&state)) {
                Ok(r) => {
                    reading.bytes_read += r.bytes_read;
                    reading.capped |= r.capped;
                }
                // Vanished or replaced by something unreadable: keep what it had counted.
                Err(err) => tracing::debug!("{err:#}"),
            }
            reading.cumulative += sub.cumulative;
            reading.subagent += sub.cumulative;
            for (model, tokens) in &sub.models {
                reading.models.entry(model.clone()).or_default().add(tokens);
            }
            subagents.push((path, sub));
        }
    }
    let changed = state != before || subagents != old_subagents;
    let update = CacheUpdate {
        cache,
        transcript: transcript.to_path_buf(),
        state: changed.then_some((state, subagents)),
    };
    Ok((reading, update))
}

/// The state a [`read_cached_later`] reached, to be saved in the cache.
#[derive(Debug)]
pub struct CacheUpdate {
    cache: PathBuf,
    transcript: PathBuf,
    /// `None` when nothing changed.
    state: Option<(TranscriptState, Vec<(PathBuf, TranscriptState)>)>,
}

impl CacheUpdate {
    /// Saves the state; a failure only costs the next reader a longer read, so it is logged.
    pub fn save(self) {
        let Some((state, subagents)) = self.state else {
            return;
        };
        let entry = CacheEntry {
            path: self.transcript,
            state,
            subagents,
        };
        if let Err(err) = write_cache(&self.cache, &entry) {
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

fn write_cache(cache: &Path, entry: &CacheEntry) -> Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let dir = cache.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut bytes = serde_json::to_vec(entry)?;
    let sum = fnv1a(&bytes);
    bytes.extend_from_slice(format!("\n{sum:016x}\n").as_bytes());
    // Rewritten in place, not replaced: on ext4 a new inode per checkpoint (and the eviction of
    // the old one) cost more than the rest of an incremental read. The checksum line makes a
    // torn file (a crash, a reader racing the write, two writers) read as no cache, which only
    // costs a re-read. Not fsynced for the same reason.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(cache)
        .with_context(|| format!("opening {}", cache.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading metadata of {}", cache.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a regular file", cache.display());
    }
    file.write_all_at(&bytes, 0)
        .and_then(|()| file.set_len(bytes.len() as u64))
        .with_context(|| format!("writing {}", cache.display()))
}

/// The JSON of a cache file whose checksum line matches it; `None` for a torn or foreign file.
fn checked_cache(bytes: &[u8]) -> Option<&[u8]> {
    let body = bytes.strip_suffix(b"\n")?;
    let split = memchr::memrchr(b'\n', body)?;
    let (json, sum) = (&body[..split], &body[split + 1..]);
    let sum = u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    (fnv1a(json) == sum).then_some(json)
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

/// Reads what was appended to one transcript file since `state` (or everything, if state is
/// default / file replaced / truncated), up to [`MAX_READ_PER_CALL`] bytes; updates `state`.
/// Its subagents' files are not read ([`read_cached`] does). A path that is not a regular file
/// is an error naming it.
pub fn read_transcript(path: &Path, state: &mut TranscriptState) -> Result<Reading> {
    read_bounded(path, state, LIMITS, None, Main::Itself)
}

/// What one line is to the reader.
fn consume_line(body: &[u8], state: &mut TranscriptState, main: Main) {
    let kind = match state.kind {
        Some(kind) => kind,
        None => {
            // Before the format is known, a line either tells it or is passed over.
            let Some(text) = std::str::from_utf8(body)
                .ok()
                .filter(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok())
            else {
                state.skipped_lines += 1;
                return;
            };
            let Some(kind) = detect(text) else { return };
            state.kind = Some(kind);
            kind
        }
    };
    if !apply(kind, body, state, main) {
        state.skipped_lines += 1;
    }
}

fn read_bounded(
    path: &Path,
    state: &mut TranscriptState,
    limits: Limits,
    kind: Option<TranscriptKind>,
    main: Main,
) -> Result<Reading> {
    debug_assert!(limits.line < limits.per_call);
    let (mut file, meta) = open_regular(path)?;
    let (dev, inode) = identity(&meta);
    let len = meta.len();

    let reset_reason = if state.version != STATE_VERSION {
        Some("new state or older reader")
    } else if kind.is_some() && state.kind != kind {
        Some("kind changed")
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
        if state.version != 0 {
            tracing::debug!(path = %path.display(), reason, "re-reading transcript from the start");
        }
        *state = TranscriptState {
            version: STATE_VERSION,
            kind,
            dev,
            inode,
            ..TranscriptState::default()
        };
    }

    file.seek(SeekFrom::Start(state.offset))
        .with_context(|| format!("seeking in transcript {}", path.display()))?;
    let mut reader = BufReader::with_capacity(BUF_LEN, Counted(file).take(limits.per_call));
    let reading =
        |err| anyhow::Error::new(err).context(format!("reading transcript {}", path.display()));
    let mut line = Vec::with_capacity(8 * 1024);
    let mut bytes_read = 0u64;
    if state.newline_owed {
        let (skipped, settled) = skip_owed_newline(&mut reader).map_err(reading)?;
        bytes_read += skipped;
        state.newline_owed = !settled;
    }
    if state.in_long_line {
        let (skipped, ended) = skip_to_line_end(&mut reader).map_err(reading)?;
        bytes_read += skipped;
        state.in_long_line = !ended;
    }
    while !state.in_long_line {
        // Fast path: a whole line already in the buffer is parsed where it lies, not copied.
        let buffered = reader.fill_buf().map_err(reading)?;
        if buffered.is_empty() {
            break;
        }
        if let Some(end) = memchr::memchr(b'\n', buffered)
            && end as u64 <= limits.line
        {
            let body = trim_cr(&buffered[..end]);
            if !body.iter().all(u8::is_ascii_whitespace) {
                consume_line(body, state, main);
            }
            reader.consume(end + 1);
            bytes_read += end as u64 + 1;
            continue;
        }
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
                // The last line of the file, or one still being written, or the end of this
                // call's window. A whole JSON object at the very end of the file is a record
                // whose newline has not come (yet, or ever); anything else waits for next time.
                let at_end = state.offset + bytes_read + n as u64 == len;
                let body = trim_cr(&line);
                if at_end
                    && body.first() == Some(&b'{')
                    && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
                {
                    consume_line(body, state, main);
                    bytes_read += n as u64;
                    state.newline_owed = true;
                }
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
        let body = trim_cr(&line[..line.len() - 1]);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        consume_line(body, state, main);
    }
    let window = reader.into_inner();
    let window_used = window.limit() == 0;
    let mut file = window.into_inner().0;
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
        kind: state.kind,
        fill: state.fill,
        compacted: state.compacted,
        cumulative: state.cumulative,
        subagent: state.subagent,
        records: state.records,
        context_window: state.context_window,
        models: state.models.clone(),
        skipped_lines: state.skipped_lines,
        bytes_read,
        capped,
    })
}

/// Bytes read from transcripts by this process so far, for a progress bar on a long first read.
pub static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// A file that adds what it reads to [`BYTES_READ`] (once per buffer fill, not per line).
struct Counted(File);

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn trim_cr(body: &[u8]) -> &[u8] {
    body.strip_suffix(b"\r").unwrap_or(body)
}

/// After a last line read without its newline: consumes that newline (`\n` or `\r\n`) if it is
/// what comes next. Returns the bytes consumed and whether the matter is settled (false when
/// nothing has come yet).
fn skip_owed_newline(reader: &mut impl BufRead) -> std::io::Result<(u64, bool)> {
    let buf = reader.fill_buf()?;
    let skip = match buf {
        [] => return Ok((0, false)),
        [b'\n', ..] => 1,
        [b'\r', b'\n', ..] => 2,
        // A lone `\r` at the end so far: wait for what follows.
        [b'\r'] => return Ok((0, false)),
        // The writer never added the newline: what follows is the next record.
        _ => 0,
    };
    reader.consume(skip);
    Ok((skip as u64, true))
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

    #[test]
    fn a_cache_rewritten_in_place_or_torn_is_read_only_when_its_checksum_matches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, &line(assistant("msg_1", 10, 0, 0, 1)));
        let cache_dir = dir.path().join("cache");
        let first = read_cached(&cache_dir, &p).unwrap();
        assert_eq!(first.bytes_read, std::fs::metadata(&p).unwrap().len());
        let cache = cache_path(&cache_dir, &p);
        let whole = std::fs::read(&cache).unwrap();
        assert!(checked_cache(&whole).is_some());

        // A longer file shortened in place: no stale tail survives the rewrite.
        std::fs::write(
            &cache,
            [whole.as_slice(), b"stale tail".as_slice()].concat(),
        )
        .unwrap();
        assert!(checked_cache(&std::fs::read(&cache).unwrap()).is_none());
        append(&p, &line(assistant("msg_2", 20, 0, 0, 1)));
        let second = read_cached(&cache_dir, &p).unwrap();
        assert_eq!((second.fill, second.cumulative), (Some(20), 32));
        let rewritten = std::fs::read(&cache).unwrap();
        assert!(checked_cache(&rewritten).is_some());

        // Torn: one byte of the state changed. Read as no cache: a full re-read, same figures.
        let mut torn = rewritten.clone();
        let at = torn.iter().position(|b| b.is_ascii_digit()).unwrap();
        torn[at] = if torn[at] == b'9' { b'8' } else { torn[at] + 1 };
        std::fs::write(&cache, &torn).unwrap();
        let third = read_cached(&cache_dir, &p).unwrap();
        assert_eq!(third.bytes_read, std::fs::metadata(&p).unwrap().len());
        assert_eq!((third.fill, third.cumulative), (Some(20), 32));
    }
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
        read_transcript(path, state).unwrap()
    }

    fn fresh(path: &Path) -> Reading {
        read_transcript(path, &mut TranscriptState::default()).unwrap()
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
    fn sidechains_count_in_the_total_not_the_fill_synthetic_and_zero_usage_ignored() {
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
        assert_eq!((r.cumulative, r.subagent), (10 + 2000, 2000));
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
        // Truncated JSON, usage of the wrong shape, a non-UTF-8 record with a usage; the
        // non-object and the non-UTF-8 user record carry no `"usage"` and are passed over.
        assert_eq!(r.skipped_lines, 3);
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

    // --- Real shapes (issue 10). Sources are the research notes, /work/wt/research/issue10-formats.md.

    /// A Claude Code 1.0.113 assistant line, verbatim but for the shortened content (notes §1.2,
    /// pasted by a user in developerisnow/ai_documentation_docs,
    /// graphiti-getzep/implement-neo4j-graphiti-with-claude-code-sessions.md).
    const CLAUDE_1_0_113: &str = r##"{"parentUuid":"bfd636c5-3a0f-4afb-9b05-ee3f414944a8","isSidechain":false,"userType":"external","cwd":"/Users/user/__Repositories/HypeTrain/repositories/hypetrain-garden","sessionId":"cd336f00-1ac8-48a6-a345-8790b68cd87c","version":"1.0.113","gitBranch":"main","message":{"id":"msg_012vB2RA8M8TjspxpqjQ71K4","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","content":[{"type":"tool_use","id":"toolu_0186JxWK5zweJ668U8Kf7Lvx","name":"Write","input":{"file_path":"/Users/user/README.md","content":"# BUG-503"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":306,"cache_read_input_tokens":147449,"cache_creation":{"ephemeral_5m_input_tokens":306,"ephemeral_1h_input_tokens":0},"output_tokens":8,"service_tier":"standard"}},"requestId":"req_011CT9uFRGTsw9xDwb2qqehZ","type":"assistant","uuid":"c072c529-6d58-415b-9ef1-4954bed0eb60","timestamp":"2025-09-15T08:52:10.933Z"}"##;

    /// [`CLAUDE_1_0_113`] as a JSON value with another id, request, sidechain flag and usage.
    fn claude_real(id: &str, request: &str, sidechain: bool, usage: serde_json::Value) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(CLAUDE_1_0_113).unwrap();
        v["message"]["id"] = json!(id);
        v["requestId"] = json!(request);
        v["isSidechain"] = json!(sidechain);
        v["message"]["usage"] = usage;
        line(v)
    }

    /// The usage block of a real 2.1.47 line (notes §1.2, index id 16944007931).
    fn usage_2_1_47(cache_read: u64, output: u64) -> serde_json::Value {
        json!({"input_tokens":1,"cache_creation_input_tokens":266,"cache_read_input_tokens":cache_read,
               "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":266},
               "output_tokens":output,"service_tier":"standard","inference_geo":"not_available"})
    }

    /// A Claude Code 2.1.47 subagent assistant record: the fields of the real subagent lines of
    /// notes §2.2 (`isSidechain: true`, `agentId`, the parent's `sessionId`) with the §1.2 tail.
    fn subagent_line(id: &str, request: &str, usage: serde_json::Value) -> Vec<u8> {
        line(
            json!({"parentUuid":"2b5bd718-65fb-4a77-aca2-a43e5c87187a","isSidechain":true,"userType":"external",
            "cwd":"/Users/zhangjiabei/Desktop/ecomcrm","sessionId":"7195cfed-d73e-458f-9a6c-6a0e85c59b83",
            "version":"2.1.47","gitBranch":"main","agentId":"a241764","slug":"structured-doodling-boole",
            "message":{"model":"claude-sonnet-4-6","id":id,"type":"message","role":"assistant",
                "content":[{"type":"text","text":"I cannot write files"}],
                "stop_reason":null,"stop_sequence":null,"usage":usage},
            "requestId":request,"type":"assistant","uuid":format!("u-{id}"),"timestamp":"2026-02-19T02:08:35.084Z"}),
        )
    }

    #[test]
    fn subagent_files_and_inline_sidechains_count_once_in_the_total_never_in_the_fill() {
        let dir = tempfile::tempdir().unwrap();
        let session = "7195cfed-d73e-458f-9a6c-6a0e85c59b83";
        let main = dir.path().join(format!("{session}.jsonl"));
        // Main chain: one response written as two content-block records (same id and request).
        append(
            &main,
            &claude_real("msg_main1", "req_main1", false, usage_2_1_47(15_213, 2)),
        );
        append(
            &main,
            &claude_real("msg_main1", "req_main1", false, usage_2_1_47(15_213, 40)),
        );
        // Claude Code 1.x: a Task subagent's response inline, on the sidechain.
        append(
            &main,
            &claude_real("msg_inline", "req_inline", true, usage_2_1_47(9_000, 10)),
        );
        let main_total = 1 + 266 + 15_213 + 40;
        let inline_total = 1 + 266 + 9_000 + 10;

        // Claude Code 2.x: `<session>/subagents/agent-<id>.jsonl`, and a workflow run below it.
        let subagents = dir.path().join(session).join("subagents");
        let workflow = subagents.join("workflows/run1");
        std::fs::create_dir_all(&workflow).unwrap();
        let agent = subagents.join("agent-a241764.jsonl");
        append(
            &agent,
            &subagent_line("msg_sub1", "req_sub1", usage_2_1_47(3_000, 5)),
        );
        append(
            &agent,
            &subagent_line("msg_sub1", "req_sub1", usage_2_1_47(3_000, 50)),
        );
        // A `/btw` side question replays a main-chain response: same message.id, new request
        // (ccusage issue #913, notes §1.4 rule 3). The main copy counts, not this one.
        append(
            &agent,
            &subagent_line("msg_main1", "req_replay", usage_2_1_47(15_213, 40)),
        );
        append(
            &workflow.join("agent-b1.jsonl"),
            &subagent_line("msg_wf", "req_wf", usage_2_1_47(100, 1)),
        );
        // Not transcripts: the sidecar and other names.
        std::fs::write(
            subagents.join("agent-a241764.meta.json"),
            r#"{"agentType":"general-purpose"}"#,
        )
        .unwrap();
        append(
            &subagents.join("notes.jsonl"),
            &subagent_line("msg_no", "req_no", usage_2_1_47(1, 1)),
        );
        let sub_total = 1 + 266 + 3_000 + 50;
        let wf_total = 1 + 266 + 100 + 1;

        let cache = dir.path().join("cache");
        let r = read_cached(&cache, &main).unwrap();
        assert_eq!(
            r.fill,
            Some(1 + 266 + 15_213),
            "the fill is the main chain's"
        );
        let subagent = inline_total + sub_total + wf_total;
        assert_eq!(
            (r.cumulative, r.subagent),
            (main_total + subagent, subagent)
        );

        // Incremental: a new subagent response and a main one; nothing is counted twice.
        append(
            &agent,
            &subagent_line("msg_sub2", "req_sub2", usage_2_1_47(4_000, 7)),
        );
        append(
            &main,
            &claude_real("msg_main2", "req_main2", false, usage_2_1_47(20_000, 3)),
        );
        let r = read_cached(&cache, &main).unwrap();
        let (sub2, main2) = (1 + 266 + 4_000 + 7, 1 + 266 + 20_000 + 3);
        assert_eq!(r.fill, Some(1 + 266 + 20_000));
        assert_eq!(r.cumulative, main_total + main2 + subagent + sub2);
        assert_eq!(r.subagent, subagent + sub2);
        let again = read_cached(&cache, &main).unwrap();
        assert_eq!((again.cumulative, again.bytes_read), (r.cumulative, 0));
    }

    #[test]
    fn the_same_response_under_another_request_is_another_response() {
        // ccusage's key is message.id + requestId (notes §1.4 rule 2): only a sidechain copy of
        // a main-chain id is a replay.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(
            &p,
            &claude_real("msg_1", "req_1", false, usage_2_1_47(100, 1)),
        );
        append(
            &p,
            &claude_real("msg_1", "req_1", false, usage_2_1_47(100, 9)),
        );
        append(
            &p,
            &claude_real("msg_1", "req_2", false, usage_2_1_47(100, 1)),
        );
        append(
            &p,
            &claude_real("msg_1", "req_3", true, usage_2_1_47(100, 1)),
        );
        let r = fresh(&p);
        assert_eq!((r.cumulative, r.subagent), ((367 + 9) + (367 + 1), 0));
    }

    #[test]
    fn cache_writes_are_the_larger_of_the_flat_and_the_nested_figures() {
        // Before 2.1.152 the flat figure could be 0 with the writes only nested (CHANGELOG
        // 2.1.152; fixture shape from the notes §3, index id 61937930548, plus the flat 0).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        append(&p, br#"{"type":"assistant","timestamp":"2026-03-20T12:00:00Z","requestId":"req-1","message":{"id":"msg-1","model":"claude-opus-4-6","usage":{"input_tokens":100,"cache_creation_input_tokens":0,"cache_read_input_tokens":50,"output_tokens":10,"cache_creation":{"ephemeral_5m_input_tokens":30,"ephemeral_1h_input_tokens":40}}}}
"#);
        let r = fresh(&p);
        assert_eq!((r.fill, r.cumulative), (Some(100 + 70 + 50), 230));
        // The opposite inconsistency (anthropic-sdk-java #353: flat > 0, breakdown 0/0).
        append(&p, br#"{"type":"assistant","timestamp":"2026-03-20T12:00:01Z","requestId":"req-2","message":{"id":"msg-2","model":"claude-opus-4-6","usage":{"input_tokens":100,"cache_creation_input_tokens":500,"cache_read_input_tokens":50,"output_tokens":10,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}}}}
"#);
        assert_eq!(fresh(&p).fill, Some(650));
        // The real 1.0.113 line: flat and nested agree.
        append(&p, CLAUDE_1_0_113.as_bytes());
        append(&p, b"\n");
        assert_eq!(fresh(&p).fill, Some(4 + 306 + 147_449));
    }

    #[test]
    fn a_microcompact_boundary_lowers_the_fill_by_what_it_saved() {
        // The shape of Claude Code's createMicrocompactBoundaryMessage (notes §4.1, CCB
        // src/utils/messages.ts; line as in the third-party test of §4.3, index id 60804744553).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        append(
            &p,
            &claude_real("msg_1", "req_1", false, usage_2_1_47(150_000, 10)),
        );
        assert_eq!(read(&p, &mut st).fill, Some(150_267));
        append(&p, br#"{"type":"system","subtype":"microcompact_boundary","content":"Context microcompacted","isMeta":false,"level":"info","microcompactMetadata":{"trigger":"auto","preTokens":150267,"tokensSaved":40000,"compactedToolIds":["toolu_a"],"clearedAttachmentUUIDs":[]},"uuid":"system-13","timestamp":"2026-02-19T02:10:00.000Z","parentUuid":"c072c529-6d58-415b-9ef1-4954bed0eb60","isSidechain":false,"sessionId":"s","cwd":"/w","version":"2.1.88","gitBranch":"main","userType":"external"}
"#);
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.compacted), (Some(110_267), false));
        assert_eq!(r.cumulative, 150_277, "a boundary spends nothing");
        append(
            &p,
            &claude_real("msg_2", "req_2", false, usage_2_1_47(100_000, 10)),
        );
        assert_eq!(read(&p, &mut st).fill, Some(100_267));
    }

    #[test]
    fn a_last_line_without_its_newline_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let mut st = TranscriptState::default();
        append(
            &p,
            &claude_real("msg_1", "req_1", false, usage_2_1_47(1_000, 1)),
        );
        let last = claude_real("msg_2", "req_2", false, usage_2_1_47(2_000, 1));
        let (body, newline) = last.split_at(last.len() - 1);
        // Half a record is not one yet.
        append(&p, &body[..body.len() / 2]);
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.cumulative), (Some(1_267), 1_268));
        // The whole record without its newline is.
        append(&p, &body[body.len() / 2..]);
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.cumulative), (Some(2_267), 1_268 + 2_268));
        assert_eq!(st.offset, std::fs::metadata(&p).unwrap().len());
        // Its newline, when it comes, is not a line, and nothing is counted twice.
        append(&p, newline);
        let r = read(&p, &mut st);
        assert_eq!(
            (r.bytes_read, r.cumulative, r.skipped_lines),
            (1, 1_268 + 2_268, 0)
        );
        // A fresh read of the whole file agrees.
        assert_eq!(fresh(&p).cumulative, r.cumulative);
        // A writer that never adds it: the next record follows directly. (A fresh read sees
        // one undecodable line there; only the incremental reader saw the first record whole.)
        let third = claude_real("msg_3", "req_3", false, usage_2_1_47(3_000, 1));
        append(&p, &third[..third.len() - 1]);
        read(&p, &mut st);
        append(
            &p,
            &claude_real("msg_4", "req_4", false, usage_2_1_47(4_000, 1)),
        );
        let r = read(&p, &mut st);
        assert_eq!(r.cumulative, 1_268 + 2_268 + 3_268 + 4_268);
        assert_eq!(r.skipped_lines, 0);
    }

    /// A real rollout `token_count` line (notes §5.4, verbatim from openai/codex issue #5276).
    const CODEX_TOKEN_COUNT: &str = r#"{"timestamp":"2025-10-17T05:54:20.209Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":26549,"cached_input_tokens":22272,"output_tokens":1590,"reasoning_output_tokens":1152,"total_tokens":28139},"last_token_usage":{"input_tokens":6245,"cached_input_tokens":5376,"output_tokens":407,"reasoning_output_tokens":320,"total_tokens":6652},"model_context_window":272000},"rate_limits":{"primary":null,"secondary":null}}}"#;

    /// What codex-rs `TokenUsageInfo::fill_to_context_window(272000)` makes of the info above
    /// (notes §5.4: total = {0,0,0,0,window}, last = {0,0,0,0,window - previous total}).
    const CODEX_FILLED: &str = r#"{"timestamp":"2025-10-17T05:55:01.000Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":0,"cached_input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,"total_tokens":272000},"last_token_usage":{"input_tokens":0,"cached_input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,"total_tokens":243861},"model_context_window":272000},"rate_limits":{"primary":null,"secondary":null}}}"#;

    #[test]
    fn a_codex_context_filled_to_the_window_reads_full_and_the_total_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        // Named like no rollout: the content tells the format.
        let p = dir.path().join("renamed.jsonl");
        let mut st = TranscriptState::default();
        append(&p, br#"{"timestamp":"2026-04-29T10:58:39.732Z","type":"session_meta","payload":{"id":"019dd8e4-15dd-7143-95e8-219014341717","timestamp":"2026-04-29T10:58:39.732Z","cwd":"/Users/alice","originator":"codex-tui","cli_version":"0.125.0","source":"cli","model_provider":"openai"}}
"#);
        append(&p, CODEX_TOKEN_COUNT.as_bytes());
        append(&p, b"\n");
        let r = read(&p, &mut st);
        assert_eq!(r.kind, Some(TranscriptKind::Codex));
        assert_eq!(
            (r.fill, r.cumulative, r.context_window),
            (Some(6652), 28_139, Some(272_000))
        );

        append(&p, CODEX_FILLED.as_bytes());
        append(&p, b"\n{\"timestamp\":\"2025-10-17T05:55:01.001Z\",\"type\":\"event_msg\",\"payload\":{\"type\":\"error\",\"message\":\"context window exceeded\"}}\n");
        let r = read(&p, &mut st);
        assert_eq!(r.fill, Some(272_000), "full: the shutdown level");
        assert_eq!(
            r.cumulative, 28_139,
            "the reset is no spend and no step back"
        );

        // The next request counts from the window Codex reset its total to.
        let mut next: serde_json::Value = serde_json::from_str(CODEX_TOKEN_COUNT).unwrap();
        next["payload"]["info"]["total_token_usage"]["total_tokens"] = json!(272_000 + 5_000);
        next["payload"]["info"]["last_token_usage"]["total_tokens"] = json!(5_000);
        append(&p, &line(next));
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.cumulative), (Some(5_000), 28_139 + 5_000));

        // A fork's variant: the total left alone, the last input set to the window.
        let mut fork: serde_json::Value = serde_json::from_str(CODEX_TOKEN_COUNT).unwrap();
        fork["payload"]["info"]["total_token_usage"]["total_tokens"] = json!(277_000);
        fork["payload"]["info"]["last_token_usage"] = json!({"input_tokens": 272_000, "cached_input_tokens": 0, "output_tokens": 0, "reasoning_output_tokens": 0, "total_tokens": 0});
        append(&p, &line(fork));
        let r = read(&p, &mut st);
        assert_eq!((r.fill, r.cumulative), (Some(272_000), 33_139));
    }

    /// `codex exec --json` output, verbatim from the official docs/exec.md (notes §6.2).
    const CODEX_EXEC: &str = r#"{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Searching for README files**"}}
{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"2025-09-11\nAGENTS.md\n","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_2","type":"reasoning","text":"**Checking repository root for README**"}}
{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Yep, there is a `README.md` in the repository root."}}
{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}
"#;

    #[test]
    fn codex_exec_output_gives_the_threads_last_total_not_a_sum_and_no_fill() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exec.jsonl");
        let mut st = TranscriptState::default();
        append(&p, CODEX_EXEC.as_bytes());
        let r = read(&p, &mut st);
        assert_eq!(r.kind, Some(TranscriptKind::CodexExec));
        assert_eq!((r.fill, r.cumulative, r.records), (None, 24_763 + 122, 1));
        // The next turn's usage is the thread's running total (openai/codex #17539): the last
        // one counts. The newer shape has more fields (JINGBANZ/jarvis #191, notes §6.2).
        append(&p, br#"{"type":"turn.started"}
{"type":"turn.completed","usage":{"input_tokens":40000,"cached_input_tokens":30000,"cache_write_input_tokens":0,"output_tokens":300,"reasoning_output_tokens":100}}
"#);
        assert_eq!(read(&p, &mut st).cumulative, 40_300);
        // A turn without a token count reports zeros: nothing changes.
        append(&p, b"{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":0,\"cached_input_tokens\":0,\"output_tokens\":0}}\n");
        assert_eq!(read(&p, &mut st).cumulative, 40_300);
        // `codex exec resume` on the same thread goes on from its total; a new thread adds up.
        append(&p, b"{\"type\":\"thread.started\",\"thread_id\":\"0199a213-81c0-7800-8aa1-bbab2a035a53\"}\n");
        append(&p, b"{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":50000,\"cached_input_tokens\":0,\"output_tokens\":300}}\n");
        assert_eq!(read(&p, &mut st).cumulative, 50_300);
        append(&p, b"{\"type\":\"thread.started\",\"thread_id\":\"0199a213-0000-7800-8aa1-000000000002\"}\n");
        append(&p, b"{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":1000,\"cached_input_tokens\":0,\"output_tokens\":10}}\n");
        assert_eq!(read(&p, &mut st).cumulative, 51_310);
    }

    #[test]
    fn a_file_of_no_known_format_or_without_usage_gives_no_figure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rollout-2025-01-01-x.jsonl");
        // Lines with no `type`, some not JSON: no format, no records.
        append(
            &p,
            b"{\"input_tokens\": 5000}\n{\"usage\": {\"input_tokens\": 1}}\nnot json\n",
        );
        let r = fresh(&p);
        assert_eq!(
            (r.kind, r.records, r.fill, r.skipped_lines),
            (None, 0, None, 1)
        );
        // A Claude transcript with no response yet: the format is known, the figure is not.
        let p = dir.path().join("claude.jsonl");
        append(&p, &line(user("hi")));
        let r = fresh(&p);
        assert_eq!(
            (r.kind, r.records, r.fill),
            (Some(TranscriptKind::ClaudeCode), 0, None)
        );
        assert!(!r.has_fill());
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
        let mut st = TranscriptState::default();
        append(
            &p,
            &line(json!({"type": "session_meta", "payload": {"id": "abc", "info": "a string"}})),
        );
        append(
            &p,
            &line(json!({"type": "event_msg", "payload": {"type": "token_count", "info": null}})),
        );
        let r = read_transcript(&p, &mut st).unwrap();
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
        let r = read_transcript(&p, &mut st).unwrap();
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
        let r = read_transcript(&p, &mut st).unwrap();
        assert_eq!(
            (r.fill, r.cumulative, r.context_window),
            (Some(1500), 7000, Some(500000))
        );
        assert_eq!((r.compacted, r.skipped_lines), (false, 1));

        // Claude-style records mean nothing in a Codex rollout.
        append(&p, &line(assistant("msg_1", 1, 1, 1, 1)));
        let r = read_transcript(&p, &mut st).unwrap();
        assert_eq!((r.fill, r.cumulative), (Some(1500), 7000));
    }

    #[test]
    fn missing_file_error_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.jsonl");
        let err = read_transcript(&p, &mut TranscriptState::default()).unwrap_err();
        assert!(format!("{err:#}").contains("nope.jsonl"), "{err:#}");
    }

    /// Limits small enough to cross in a test: lines of up to 128 bytes, 400 bytes per call.
    const SMALL: Limits = Limits {
        per_call: 400,
        line: 128,
    };

    fn read_small(p: &Path, st: &mut TranscriptState) -> Reading {
        read_bounded(p, st, SMALL, None, Main::Itself).unwrap()
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
            let err = read_transcript(path, &mut Default::default()).unwrap_err();
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
        assert_eq!(
            v["recent_messages"][0],
            json!(["msg_1", 10, {"input": 1, "output": 4, "cache_write_5m": 2, "cache_write_1h": 0, "cache_read": 3}])
        );
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

//! The file store's stack index: where each task (and the settings) lies in `task_stack.json`,
//! so that a checkpoint reads its own task instead of the whole stack. Derived state in
//! `.orchestrator/cache/stack.index`, rewritten with every stack we write; it names the stack
//! file it describes (inode, size, change time), so a stack written by anything else (a hand
//! edit, a crash between the two writes) does not match it, and readers fall back to the stack.
//!
//! Binary, little-endian: a header of [`HEADER_LEN`] bytes, then one entry per task sorted by
//! the hash of its id: `hash u64, offset u64, len u64`. A lookup is a binary search of preads.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MAGIC: &[u8; 8] = b"ORCHIDX1";
const HEADER_LEN: u64 = 64;
const ENTRY_LEN: u64 = 24;

/// Which stack file an index describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    inode: u64,
    len: u64,
    ctime_sec: i64,
    ctime_nsec: i64,
}

impl Identity {
    pub fn of(path: &Path) -> Result<Identity> {
        let meta = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
        Ok(Identity::from_metadata(&meta))
    }

    /// The four words that name the file, in the order the caches store them.
    pub fn words(&self) -> [u64; 4] {
        [
            self.inode,
            self.len,
            self.ctime_sec as u64,
            self.ctime_nsec as u64,
        ]
    }

    /// The identity of the file `meta` describes (from `fstat` of a file being read, so that
    /// it is the file whose bytes were read even if another was renamed into place since).
    pub fn from_metadata(meta: &fs::Metadata) -> Identity {
        Identity {
            inode: meta.ino(),
            len: meta.len(),
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// Where things lie in the stack text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: u64,
}

/// The spans of the settings and of every task of `text`, a stack that parsed; `None` when the
/// stack has no settings object.
pub fn spans(text: &str) -> Result<(Option<Span>, Vec<Span>)> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        settings: Option<&'a RawValue>,
        #[serde(borrow, default)]
        tasks: Vec<&'a RawValue>,
    }
    let raw: Raw = serde_json::from_str(text).context("cannot index the stack")?;
    let base = text.as_ptr() as usize;
    let span = |value: &RawValue| Span {
        offset: (value.get().as_ptr() as usize - base) as u64,
        len: value.get().len() as u64,
    };
    Ok((
        raw.settings.map(span),
        raw.tasks.into_iter().map(span).collect(),
    ))
}

/// Writes the index of `text`, a stack file as it was read, finding the ids itself.
pub fn write_from_text(index_path: &Path, identity: Identity, text: &str) -> Result<()> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow, default)]
        tasks: Vec<&'a RawValue>,
        #[serde(default)]
        journal_generation: u64,
    }
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    let raw: Raw = serde_json::from_str(text).context("cannot index the stack")?;
    let ids: Vec<Id> = raw
        .tasks
        .iter()
        .map(|task| serde_json::from_str(task.get()))
        .collect::<Result<_, _>>()
        .context("cannot index the stack")?;
    let ids: Vec<&str> = ids.iter().map(|id| id.id.as_ref()).collect();
    write(index_path, identity, text, &ids, raw.journal_generation)
}

/// FNV-1a: stable across builds and platforms, which the index on disk needs.
fn hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes the index of the stack just written at `stack_path` as `text`, whose tasks have
/// `ids` in order. The stack's `journal_generation` goes in the header.
pub fn write(
    index_path: &Path,
    identity: Identity,
    text: &str,
    ids: &[&str],
    journal_generation: u64,
) -> Result<()> {
    let (settings, tasks) = spans(text)?;
    anyhow::ensure!(
        tasks.len() == ids.len(),
        "the stack's tasks changed while indexed"
    );
    let mut entries: Vec<(u64, Span)> = ids.iter().map(|id| hash(id)).zip(tasks).collect();
    entries.sort_by_key(|(h, span)| (*h, span.offset));
    let settings = settings.unwrap_or(Span { offset: 0, len: 0 });
    let mut bytes = Vec::with_capacity((HEADER_LEN + ENTRY_LEN * entries.len() as u64) as usize);
    bytes.extend_from_slice(MAGIC);
    for value in [
        identity.inode,
        identity.len,
        identity.ctime_sec as u64,
        identity.ctime_nsec as u64,
        settings.offset,
        settings.len,
        journal_generation,
    ] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    for (h, span) in &entries {
        bytes.extend_from_slice(&h.to_le_bytes());
        bytes.extend_from_slice(&span.offset.to_le_bytes());
        bytes.extend_from_slice(&span.len.to_le_bytes());
    }
    super::file::write_atomic(index_path, &bytes)
}

/// An index that matches the stack file as it is now.
pub struct Index {
    file: File,
    count: u64,
    pub settings: Option<Span>,
    pub journal_generation: u64,
}

impl Index {
    /// The index at `index_path` when it describes `stack`, the stack file opened for reading
    /// (identified by `fstat`, so that its spans are read from the very file they describe).
    pub fn open(index_path: &Path, stack: &File) -> Option<Index> {
        let file = File::open(index_path).ok()?;
        let len = file.metadata().ok()?.len();
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0).ok()?;
        if &header[..8] != MAGIC
            || len < HEADER_LEN
            || !(len - HEADER_LEN).is_multiple_of(ENTRY_LEN)
        {
            return None;
        }
        let field =
            |i: usize| u64::from_le_bytes(header[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let recorded = Identity {
            inode: field(0),
            len: field(1),
            ctime_sec: field(2) as i64,
            ctime_nsec: field(3) as i64,
        };
        if Identity::from_metadata(&stack.metadata().ok()?) != recorded {
            return None;
        }
        let settings = Span {
            offset: field(4),
            len: field(5),
        };
        Some(Index {
            file,
            count: (len - HEADER_LEN) / ENTRY_LEN,
            settings: (settings.len > 0).then_some(settings),
            journal_generation: field(6),
        })
    }

    fn entry(&self, i: u64) -> Option<(u64, Span)> {
        let mut bytes = [0u8; ENTRY_LEN as usize];
        self.file
            .read_exact_at(&mut bytes, HEADER_LEN + i * ENTRY_LEN)
            .ok()?;
        let field = |j: usize| u64::from_le_bytes(bytes[8 * j..8 * j + 8].try_into().unwrap());
        Some((
            field(0),
            Span {
                offset: field(1),
                len: field(2),
            },
        ))
    }

    /// The spans of the tasks whose id hashes as `id` does (one, but for a collision).
    pub fn candidates(&self, id: &str) -> Vec<Span> {
        let wanted = hash(id);
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.entry(mid) {
                Some((h, _)) if h < wanted => low = mid + 1,
                Some(_) => high = mid,
                None => return Vec::new(),
            }
        }
        let mut found = Vec::new();
        let mut i = low;
        while let Some((h, span)) = self.entry(i).filter(|_| i < self.count) {
            if h != wanted {
                break;
            }
            found.push(span);
            i += 1;
        }
        found
    }
}

/// The bytes of `span` in `file`, the stack at `path`.
pub fn read_span(file: &File, path: &Path, span: Span) -> Result<String> {
    let mut bytes = vec![0u8; span.len as usize];
    file.read_exact_at(&mut bytes, span.offset)
        .with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{}: not valid UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_is_found_at_its_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let stack = dir.path().join("task_stack.json");
        let index = dir.path().join("stack.index");
        let text = "{\n  \"version\": 1,\n  \"settings\": {\"lease_minutes\": 5},\n  \"tasks\": [\n    {\"id\": \"a\"},\n    {\"id\": \"b\", \"title\": \"x\\\"y\"}\n  ]\n}\n";
        fs::write(&stack, text).unwrap();
        write(&index, Identity::of(&stack).unwrap(), text, &["a", "b"], 7).unwrap();
        let file = File::open(&stack).unwrap();
        let opened = Index::open(&index, &file).unwrap();
        assert_eq!(opened.journal_generation, 7);
        let settings = read_span(&file, &stack, opened.settings.unwrap()).unwrap();
        assert_eq!(settings, "{\"lease_minutes\": 5}");
        for (id, want) in [
            ("a", "{\"id\": \"a\"}"),
            ("b", "{\"id\": \"b\", \"title\": \"x\\\"y\"}"),
        ] {
            let spans = opened.candidates(id);
            assert_eq!(spans.len(), 1);
            assert_eq!(read_span(&file, &stack, spans[0]).unwrap(), want);
        }
        assert!(opened.candidates("c").is_empty());
        // Another stack in its place (rewritten by hand): the index no longer matches it.
        fs::write(&stack, text.replace("\"a\"", "\"z\"")).unwrap();
        let rewritten = dir.path().join("other");
        fs::write(&rewritten, "x").unwrap();
        fs::rename(&rewritten, &stack).unwrap();
        assert!(Index::open(&index, &File::open(&stack).unwrap()).is_none());
    }
}

//! Puts a command's files back as they were when it fails after some of its writes succeeded.
//!
//! Exit 1 promises that nothing changed. A command that writes several files (a checkpoint's
//! log line, then the stack) registers each file here before touching it; dropped without
//! `commit`, the undo restores them in reverse order. Restoring needs no free space: an append
//! is truncated away, a replaced or removed file is renamed back from a hard link taken before,
//! so a full disk that failed the command cannot also fail its undo.

use anyhow::{Context, Result};
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::store::file::{TEMP_MARKER, sync_dir};

/// The writes of one command, undone on drop unless committed.
#[derive(Default)]
#[must_use = "an Undo dropped at once undoes nothing it was meant to"]
pub struct Undo {
    steps: Vec<Step>,
    committed: bool,
}

enum Step {
    /// Appended to: back to `len` bytes, or removed when it did not exist.
    Append { path: PathBuf, len: Option<u64> },
    /// Replaced (renamed over) or removed: the old file back, or removed when it did not exist.
    Replace { path: PathBuf, saved: Option<Saved> },
    /// Created by this command: removed again (it is empty once the files in it are undone).
    Dir { path: PathBuf },
}

enum Saved {
    /// A second name for the old inode: renaming it back needs no space.
    Link(PathBuf),
    /// Where hard links are not supported: the old bytes, rewritten.
    Bytes(Vec<u8>),
}

impl Undo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call before appending to `path`.
    pub fn before_append(&mut self, path: &Path) -> Result<()> {
        if self.registered(path) {
            return Ok(());
        }
        let len = match fs::metadata(path) {
            Ok(meta) => Some(meta.len()),
            Err(err) if err.kind() == ErrorKind::NotFound => None,
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        self.steps.push(Step::Append {
            path: path.to_path_buf(),
            len,
        });
        Ok(())
    }

    /// Call before replacing `path` as a whole (an atomic write) or removing it.
    pub fn before_replace(&mut self, path: &Path) -> Result<()> {
        if self.registered(path) {
            return Ok(());
        }
        let saved = match fs::symlink_metadata(path) {
            Ok(_) => Some(save(path, self.steps.len())?),
            Err(err) if err.kind() == ErrorKind::NotFound => None,
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        self.steps.push(Step::Replace {
            path: path.to_path_buf(),
            saved,
        });
        Ok(())
    }

    /// Call before `create_dir_all(dir)`: the directories it will create are removed again.
    pub fn before_create_dir_all(&mut self, dir: &Path) {
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
        // Outermost first, so the undo (in reverse) removes the innermost first.
        for path in missing.into_iter().rev() {
            self.steps.push(Step::Dir {
                path: path.to_path_buf(),
            });
        }
    }

    /// Everything succeeded: keep the writes, drop the saved copies.
    pub fn commit(mut self) {
        self.committed = true;
        for step in &self.steps {
            if let Step::Replace {
                saved: Some(Saved::Link(link)),
                ..
            } = step
                && let Err(err) = fs::remove_file(link)
            {
                // Swept by the next command's temp-file cleanup.
                tracing::warn!("cannot remove {}: {err}", link.display());
            }
        }
    }

    fn registered(&self, path: &Path) -> bool {
        self.steps.iter().any(|step| match step {
            Step::Append { path: p, .. } | Step::Replace { path: p, .. } => p == path,
            Step::Dir { .. } => false,
        })
    }

    fn rollback(&mut self) {
        for step in self.steps.drain(..).rev() {
            let what = match &step {
                Step::Append { path, .. } | Step::Replace { path, .. } | Step::Dir { path } => {
                    path.clone()
                }
            };
            if let Err(err) = undo(step) {
                tracing::error!(
                    "cannot put {} back as it was: {err:#}; it may hold part of the failed change",
                    what.display()
                );
            }
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.committed {
            self.rollback();
        }
    }
}

/// A second name beside `path` that the temp-file sweep removes if we are killed.
fn save(path: &Path, index: usize) -> Result<Saved> {
    let dir = parent(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let link = dir.join(format!(
        ".{name}{TEMP_MARKER}{}.undo{index}",
        std::process::id()
    ));
    let _ = fs::remove_file(&link);
    match fs::hard_link(path, &link) {
        Ok(()) => Ok(Saved::Link(link)),
        Err(_) => fs::read(path)
            .map(Saved::Bytes)
            .with_context(|| format!("cannot read {}", path.display())),
    }
}

fn undo(step: Step) -> Result<()> {
    match step {
        Step::Append {
            path,
            len: Some(len),
        } => {
            // Never appended to (the append itself failed): nothing to open for writing.
            if fs::metadata(&path).is_ok_and(|meta| meta.len() == len) {
                return Ok(());
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            file.set_len(len)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot truncate {}", path.display()))
        }
        Step::Append { path, len: None } | Step::Replace { path, saved: None } => remove(&path),
        Step::Replace {
            path,
            saved: Some(Saved::Link(link)),
        } => {
            // rename(2) between two names of one file does nothing: the file was never replaced.
            if same_file(&link, &path) {
                return remove(&link);
            }
            fs::rename(&link, &path)
                .with_context(|| format!("cannot rename {} back", link.display()))?;
            sync_dir(parent(&path))
        }
        Step::Replace {
            path,
            saved: Some(Saved::Bytes(bytes)),
        } => {
            // Often never replaced (the write failed): no rewrite, which could fail the same way.
            if fs::read(&path).is_ok_and(|now| now == bytes) {
                return Ok(());
            }
            crate::store::file::write_atomic(&path, &bytes)
        }
        Step::Dir { path } => match fs::remove_dir(&path) {
            Ok(()) => sync_dir(parent(&path)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot remove {}", path.display())),
        },
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn dropped_without_commit_every_file_is_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let record = dir.path().join("record");
        let removed = dir.path().join("removed");
        let created = dir.path().join("created");
        let new_dir = dir.path().join("a/b");
        fs::write(&log, "one\n").unwrap();
        fs::write(&record, "old").unwrap();
        fs::write(&removed, "keep me").unwrap();
        fs::write(dir.path().join("untouched"), "same").unwrap();
        {
            let mut undo = Undo::new();
            undo.before_append(&log).unwrap();
            fs::write(&log, "one\ntwo, half").unwrap();
            undo.before_replace(&record).unwrap();
            crate::store::file::write_atomic(&record, b"new").unwrap();
            // Registered, then never written: the saved name must not be left behind.
            undo.before_replace(&log.with_file_name("untouched"))
                .unwrap();
            undo.before_replace(&removed).unwrap();
            fs::remove_file(&removed).unwrap();
            undo.before_replace(&created).unwrap();
            fs::write(&created, "x").unwrap();
            undo.before_create_dir_all(&new_dir);
            fs::create_dir_all(&new_dir).unwrap();
        }
        assert_eq!(fs::read_to_string(&log).unwrap(), "one\n");
        assert_eq!(fs::read_to_string(&record).unwrap(), "old");
        assert_eq!(fs::read_to_string(&removed).unwrap(), "keep me");
        assert_eq!(names(dir.path()), ["log", "record", "removed", "untouched"]);
    }

    #[test]
    fn committed_the_writes_stay_and_no_saved_copy_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record");
        fs::write(&record, "old").unwrap();
        let mut undo = Undo::new();
        undo.before_replace(&record).unwrap();
        crate::store::file::write_atomic(&record, b"new").unwrap();
        // Registered twice, saved once: the undo must restore the first version.
        undo.before_replace(&record).unwrap();
        undo.commit();
        assert_eq!(fs::read_to_string(&record).unwrap(), "new");
        assert_eq!(names(dir.path()), ["record"]);
    }
}

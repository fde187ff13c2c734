//! Locked, atomic persistence of the workspace's state files.
//!
//! Every write goes to a temp file in the same directory, is fsynced, renamed over the target,
//! and the directory is fsynced, so a reader (or a crash) only ever sees a whole old or a whole
//! new file. Writers hold an exclusive lock on the sidecar `.orchestrator/lock`, which is never
//! renamed: locking the renamed file itself would let a second process lock the old inode.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::core::ids::check_session_id;
use crate::core::session::{CheckpointEvent, Session};
use crate::core::stack::{Settings, TaskStack};
use crate::error::Failure;

pub const STACK_FILE: &str = "task_stack.json";
pub const STATE_DIR: &str = ".orchestrator";
const TEMP_MARKER: &str = ".tmp.";
/// Under the state directory: which git locks a running commit may leave (see `vcs`).
const GIT_OWNERS_DIR: &str = "git_owners";

/// What git must never take from a workspace, whatever `.gitignore` says: `init` writes these
/// as `.gitignore` lines and every commit excludes them. Relative to the workspace; a trailing
/// `/` marks a directory, a `*` a pattern.
pub fn never_committed(settings: &Settings) -> Vec<String> {
    let mut entries = vec![
        format!("{STATE_DIR}/lock"),
        format!("{STATE_DIR}/sessions/active/"),
        format!("{STATE_DIR}/cache/"),
        format!("{STATE_DIR}/runs/"),
        format!("{STATE_DIR}/STOP"),
        format!("{STATE_DIR}/{GIT_OWNERS_DIR}/"),
        format!(".*{TEMP_MARKER}*"),
    ];
    if let Some(db) = &settings.database {
        let db_path = Path::new(&db.path);
        if let Some(name) = db_path.file_name().and_then(|n| n.to_str()) {
            let under = |dir: &Path, file: String| dir.join(file).to_string_lossy().into_owned();
            let backup_dir = Path::new(&db.backup_dir);
            entries.push(under(backup_dir, format!("{name}.backup_*")));
            // The backup's temp file, named after the backup.
            entries.push(under(backup_dir, format!(".{name}.backup_*")));
            // The live database itself: a copy taken under a writer is torn, and the verified
            // backup is what protects the data.
            entries.push(db_path.to_string_lossy().into_owned());
            let db_dir = db_path.parent().unwrap_or(Path::new(""));
            for suffix in ["-wal", "-shm", "-journal"] {
                entries.push(under(db_dir, format!("{name}{suffix}")));
            }
        }
    }
    entries
        .into_iter()
        .map(|e| e.strip_prefix("./").map(str::to_string).unwrap_or(e))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

/// Proof that the workspace lock is held; required by every write.
pub struct WorkspaceLock {
    _file: File,
}

impl Workspace {
    pub fn at(root: PathBuf) -> Self {
        Workspace { root }
    }

    /// The workspace holding `task_stack.json`: `dir` itself when given, else the current
    /// directory and its parents, as git finds `.git`.
    pub fn find(dir: Option<&Path>) -> Result<Self> {
        if let Some(dir) = dir {
            let root = absolute(dir)?;
            if !root.join(STACK_FILE).is_file() {
                return Err(Failure::user(format!(
                    "{} has no {STACK_FILE}; run `orchestrator init` there first",
                    dir.display()
                )));
            }
            return Ok(Workspace { root });
        }
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        match Self::find_from(&cwd) {
            Some(ws) => Ok(ws),
            None => Err(Failure::user(format!(
                "no {STACK_FILE} in {} or any parent directory; run `orchestrator init` or pass -C DIR",
                cwd.display()
            ))),
        }
    }

    /// The nearest directory holding `task_stack.json`: `start` or one of its parents.
    pub fn find_from(start: &Path) -> Option<Self> {
        start
            .ancestors()
            .find(|dir| dir.join(STACK_FILE).is_file())
            .map(|root| Workspace {
                root: root.to_path_buf(),
            })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stack_path(&self) -> PathBuf {
        self.root.join(STACK_FILE)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// One event log per `orchestrator run`.
    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir().join("runs")
    }

    /// While this file exists, `orchestrator run` starts no new session.
    pub fn stop_file(&self) -> PathBuf {
        self.state_dir().join("STOP")
    }

    /// The records of commits in progress, which let a later commit remove the git locks a
    /// killed one left.
    pub fn git_owners_dir(&self) -> PathBuf {
        self.state_dir().join(GIT_OWNERS_DIR)
    }

    /// Derived state that can be rebuilt: transcript read positions.
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir().join("cache")
    }

    pub fn active_dir(&self) -> PathBuf {
        self.state_dir().join("sessions").join("active")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.state_dir().join("sessions").join("archive")
    }

    pub fn active_path(&self, id: &str) -> PathBuf {
        self.active_dir().join(format!("{id}.json"))
    }

    /// Checkpoints appended since the record was last rewritten.
    pub fn checkpoint_log_path(&self, id: &str) -> PathBuf {
        self.active_dir().join(format!("{id}.checkpoints.jsonl"))
    }

    pub fn archive_path(&self, id: &str) -> PathBuf {
        self.archive_dir().join(format!("{id}.json"))
    }

    /// Relative to the root when inside it, for messages and handoffs.
    pub fn display<'a>(&self, path: &'a Path) -> std::path::Display<'a> {
        path.strip_prefix(&self.root).unwrap_or(path).display()
    }

    /// Blocks until this process holds the workspace lock.
    pub fn lock(&self) -> Result<WorkspaceLock> {
        let dir = self.state_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(WorkspaceLock { _file: file })
    }

    pub fn load_stack(&self) -> Result<TaskStack> {
        let path = self.stack_path();
        let text = read_text(&path)?;
        TaskStack::parse(&text)
            .map_err(|invalid| Failure::user(format!("{}: {invalid}", path.display())))
    }

    /// Validates and writes the stack. An invalid stack is refused before anything is written.
    pub fn save_stack(&self, _lock: &WorkspaceLock, stack: &TaskStack) -> Result<()> {
        let path = self.stack_path();
        stack
            .validate()
            .map_err(|invalid| Failure::user(format!("{}: {invalid}", path.display())))?;
        write_atomic(&path, stack.to_json().as_bytes())
    }

    pub fn load_session(&self, path: &Path) -> Result<Session> {
        let text = read_text(path)?;
        serde_json::from_str(&text).map_err(|err| {
            Failure::user(format!(
                "{}: line {}, column {}: not a session record: {err}",
                path.display(),
                err.line(),
                err.column()
            ))
        })
    }

    /// A live session: its record with the checkpoint log replayed on top.
    pub fn load_active(&self, id: &str) -> Result<Session> {
        let mut session = self.load_session(&self.active_path(id))?;
        let log = self.checkpoint_log_path(id);
        let text = match fs::read(&log) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(session),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", log.display())),
        };
        for (number, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<CheckpointEvent>(line) {
                Ok(event) => session.apply(event),
                // Only a power loss can tear an append; the line is skipped, not fatal.
                Err(err) => tracing::warn!(
                    "{}:{}: skipping a damaged checkpoint: {err}",
                    log.display(),
                    number + 1
                ),
            }
        }
        Ok(session)
    }

    /// Rewrites the whole record; the log it now contains is then removed.
    pub fn save_active(&self, _lock: &WorkspaceLock, session: &Session) -> Result<()> {
        write_json(&self.active_path(&session.id), session)?;
        remove_if_exists(&self.checkpoint_log_path(&session.id))
    }

    /// One durable append: far cheaper than rewriting the record at every checkpoint.
    pub fn append_checkpoint(
        &self,
        _lock: &WorkspaceLock,
        session: &str,
        event: &CheckpointEvent,
    ) -> Result<()> {
        let path = self.checkpoint_log_path(session);
        let mut line = serde_json::to_vec(event).context("cannot serialize a checkpoint")?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // One write call: a killed process leaves the whole line or none of it.
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot append to {}", path.display()))
    }

    pub fn save_archive(&self, _lock: &WorkspaceLock, session: &Session) -> Result<()> {
        write_json(&self.archive_path(&session.id), session)
    }

    pub fn remove_active(&self, _lock: &WorkspaceLock, id: &str) -> Result<()> {
        remove_if_exists(&self.active_path(id))?;
        remove_if_exists(&self.checkpoint_log_path(id))
    }

    /// Every session in the active directory (live ones and ones whose wrap was cut off),
    /// oldest first.
    pub fn active_sessions(&self) -> Result<Vec<Session>> {
        let dir = self.active_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("cannot list {}", dir.display())),
        };
        let mut sessions = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if check_session_id(id).is_err() {
                continue;
            }
            sessions.push(self.load_active(id)?);
        }
        sessions.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
        Ok(sessions)
    }

    pub fn session_id_taken(&self, id: &str) -> bool {
        self.active_path(id).exists() || self.archive_path(id).exists()
    }

    /// Removes temp files that a killed writer left behind. Only call with the lock held:
    /// then no live writer can own one.
    pub fn clean_temp_files(&self, _lock: &WorkspaceLock, extra_dirs: &[PathBuf]) {
        let dirs = [self.root.clone(), self.active_dir(), self.archive_dir()];
        for dir in dirs.iter().chain(extra_dirs) {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') && name.contains(TEMP_MARKER) {
                    let path = entry.path();
                    match fs::remove_file(&path) {
                        Ok(()) => tracing::info!("removed leftover temp file {}", path.display()),
                        Err(err) => tracing::warn!(
                            "cannot remove leftover temp file {}: {err}",
                            path.display()
                        ),
                    }
                }
            }
        }
    }
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(dir))
}

pub fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|err| {
        if err.kind() == ErrorKind::NotFound {
            Failure::user(format!("{}: file not found", path.display()))
        } else {
            anyhow::Error::new(err).context(format!("cannot read {}", path.display()))
        }
    })?;
    String::from_utf8(bytes).map_err(|err| {
        Failure::user(format!(
            "{}: not valid UTF-8 (byte {})",
            path.display(),
            err.utf8_error().valid_up_to()
        ))
    })
}

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot serialize state")?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Temp file in the same directory, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file path", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let temp = dir.join(format!(".{name}{TEMP_MARKER}{}", std::process::id()));
    let result = (|| {
        let mut file =
            File::create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temp.display()))?;
        drop(file);
        fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot remove {}", path.display())),
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn failed_write_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"kept").unwrap();
        // A directory where the file should go makes the rename fail.
        let blocked = dir.path().join("sub");
        fs::create_dir_all(blocked.join("x.json")).unwrap();
        assert!(write_atomic(&blocked.join("x.json"), b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"kept");
        assert_eq!(fs::read_dir(&blocked).unwrap().count(), 1);
    }

    #[test]
    fn leftover_temp_files_are_cleaned_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::at(dir.path().to_path_buf());
        fs::write(dir.path().join(".task_stack.json.tmp.999"), "half").unwrap();
        fs::write(dir.path().join(".gitignore"), "keep").unwrap();
        let lock = ws.lock().unwrap();
        ws.clean_temp_files(&lock, &[]);
        assert!(!dir.path().join(".task_stack.json.tmp.999").exists());
        assert!(dir.path().join(".gitignore").exists());
    }

    #[test]
    fn find_refuses_a_directory_without_a_stack() {
        let dir = tempfile::tempdir().unwrap();
        let err = Workspace::find(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("has no task_stack.json"), "{err}");
    }
}

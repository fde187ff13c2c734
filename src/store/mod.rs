//! The store seam: the workspace's state (stack, sessions, checkpoint logs) as commands load and
//! save it, every write under the workspace lock. The file backend's mechanics are in [`file`](mod@file).
//!
//! Nothing is written through a symlink: the stack, the state directories, the lock and the
//! checkpoint logs are refused when they are one, and a directory setting that resolves outside
//! the workspace is refused before anything is written (an absolute backup_dir, which the user
//! chose, aside). Other files are replaced by `rename`, which replaces a link, not its target.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub mod file;
pub mod index;
pub mod journal;
pub mod postgres;
pub mod run_state;
pub mod undo;
pub mod view;

use crate::core::session::{CheckpointEvent, Session};
use crate::core::stack::{BACKUP_DIR_SETTING, CheckpointWrite, Claim, Settings, TaskStack};
use crate::error::Failure;
use file::{TEMP_MARKER, lock_timeout, our_temp_file_pid, process_alive, symlink_target};
use postgres::Fleet;
use undo::Undo;

pub const STACK_FILE: &str = "task_stack.json";
pub const STATE_DIR: &str = ".orchestrator";
/// Under the state directory: checkpoints not yet folded into the stack (see [`journal`]).
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// Under the cache directory: the stack's index.
pub const INDEX_FILE: &str = "stack.index";
/// Under the state directory: which git locks a running commit may leave (see `wrap::vcs`).
const GIT_OWNERS_DIR: &str = "git_owners";

/// What git must never take from a workspace, whatever `.gitignore` says: `init` writes these
/// as `.gitignore` lines and every commit excludes them. Relative to the workspace; a trailing
/// `/` marks a directory, a `*` a pattern.
pub fn never_committed(settings: &Settings) -> Vec<String> {
    let mut entries = vec![
        format!("{STATE_DIR}/lock"),
        format!("{STATE_DIR}/{JOURNAL_FILE}"),
        format!("{STATE_DIR}/sessions/active/"),
        format!("{STATE_DIR}/cache/"),
        format!("{STATE_DIR}/runs/"),
        format!("{STATE_DIR}/STOP"),
        // The quota pause and the breaker's counts belong to this machine's loops, not a clone.
        format!("{STATE_DIR}/PAUSE"),
        format!("{STATE_DIR}/breaker/"),
        format!("{STATE_DIR}/{GIT_OWNERS_DIR}/"),
        // The socket of this machine's fleet pool (`fleet pool`, or `run`'s).
        format!("{STATE_DIR}/pool/"),
        // Sessions' own worktrees: their work comes back through their branches.
        format!("{STATE_DIR}/{}/", crate::wrap::worktree::WORKTREES_DIR),
        format!(".*{TEMP_MARKER}*"),
        // Claude Code applies the allow rules of this file without workspace trust only while
        // git does not track it (see `agents::claude_settings`); our wrap commit must not.
        crate::agents::claude_settings::LOCAL_FILE.to_string(),
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
    /// Found by walking up from a directory below the root, so the user may not know which
    /// workspace this is (a clone's example stack above a scratch folder, say).
    found_above: bool,
    /// `--store` (or `ORCHESTRATOR_STORE`), which wins over `settings.store`.
    store_flag: Option<String>,
    /// Which store holds the queue: decided at the first read, from the flag or the settings
    /// of the workspace's `task_stack.json` (`None`: the files themselves).
    fleet: Arc<OnceLock<Option<Arc<Fleet>>>>,
}

/// Proof that the workspace lock is held; required by every write.
pub struct WorkspaceLock {
    _file: File,
}

impl Workspace {
    pub fn at(root: PathBuf) -> Self {
        Workspace {
            root,
            found_above: false,
            store_flag: None,
            fleet: Arc::default(),
        }
    }

    /// The workspace with `--store` (or `ORCHESTRATOR_STORE`) given: it wins over the settings.
    pub fn with_store_flag(mut self, flag: Option<String>) -> Self {
        self.store_flag = flag.filter(|f| !f.is_empty());
        self
    }

    pub fn store_flag(&self) -> Option<&str> {
        self.store_flag.as_deref()
    }

    /// The fleet store, when `settings` (the workspace file's) or the flag name one. Decided
    /// once per command.
    pub fn fleet_for(&self, settings: &Settings) -> Result<Option<&Arc<Fleet>>> {
        if self.fleet.get().is_none() {
            let target = postgres::target(self.store_flag.as_deref(), settings.store.as_ref())?;
            let _ = self.fleet.set(target.map(|t| Arc::new(Fleet::new(t))));
        }
        Ok(self.fleet.get().and_then(|f| f.as_ref()))
    }

    /// The fleet store, once a read has decided there is one.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.get().and_then(|f| f.as_ref())
    }

    /// The workspace holding `task_stack.json`: `dir` itself when given, else the current
    /// directory and its parents, as git finds `.git`.
    pub fn find(dir: Option<&Path>) -> Result<Self> {
        if let Some(dir) = dir {
            let root = absolute(dir)?;
            if let Some(main) = Self::main_of_worktree(&root) {
                return Ok(main);
            }
            if !root.join(STACK_FILE).is_file() {
                return Err(Failure::user(format!(
                    "{} has no {STACK_FILE}; run `orchestrator init` there first",
                    dir.display()
                )));
            }
            return Ok(Workspace::at(root));
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
    /// Inside a session's worktree (`<main>/.orchestrator/worktrees/<task>/...`), the main
    /// workspace: the stack and sessions live there only, never in the worktree's checkout.
    pub fn find_from(start: &Path) -> Option<Self> {
        if let Some(main) = Self::main_of_worktree(start) {
            return Some(main);
        }
        start
            .ancestors()
            .find(|dir| dir.join(STACK_FILE).is_file())
            .map(|root| Workspace {
                found_above: root != start,
                ..Workspace::at(root.to_path_buf())
            })
    }

    /// The main workspace of a session worktree `dir` is in (or is), found from the path: the
    /// worktrees live under the main workspace's state directory.
    fn main_of_worktree(dir: &Path) -> Option<Self> {
        dir.ancestors().find_map(|candidate| {
            let worktrees = candidate.parent()?;
            let state = worktrees.parent()?;
            let main = state.parent()?;
            (worktrees.file_name()? == crate::wrap::worktree::WORKTREES_DIR
                && state.file_name()? == STATE_DIR
                && candidate.join(".git").is_file()
                && main.join(STACK_FILE).is_file())
            .then(|| Workspace::at(main.to_path_buf()))
        })
    }

    /// Where a session's worktrees and their records are.
    pub fn worktrees_dir(&self) -> PathBuf {
        self.state_dir().join(crate::wrap::worktree::WORKTREES_DIR)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the workspace was found in a parent of the directory the search started from.
    pub fn found_above(&self) -> bool {
        self.found_above
    }

    pub fn stack_path(&self) -> PathBuf {
        self.root.join(STACK_FILE)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// Where each task lies in the stack file (derived; see [`index`]).
    pub fn index_path(&self) -> PathBuf {
        self.cache_dir().join(INDEX_FILE)
    }

    /// The checkpoint journal, folded over the stack by every reader.
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir().join(JOURNAL_FILE)
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

    /// Refuses a `task_stack.json` or a state directory (or the lock file) that is a symlink:
    /// writing through it would put state outside the workspace, or (for the stack) silently
    /// replace the link with a file.
    fn check_layout(&self) -> Result<()> {
        let stack = self.stack_path();
        if let Some(target) = symlink_target(&stack)? {
            return Err(Failure::user(format!(
                "{} is a symbolic link to {}; orchestrator writes state only inside the workspace: replace it with the file itself",
                stack.display(),
                target.display()
            )));
        }
        let state = self.state_dir();
        let sessions = state.join("sessions");
        for path in [
            state.clone(),
            sessions.clone(),
            self.active_dir(),
            self.archive_dir(),
            self.cache_dir(),
            self.runs_dir(),
            self.git_owners_dir(),
            state.join("lock"),
        ] {
            if let Some(target) = symlink_target(&path)? {
                return Err(Failure::user(format!(
                    "{} is a symbolic link to {}; orchestrator keeps its state only inside the workspace: replace the link with the directory itself",
                    path.display(),
                    target.display()
                )));
            }
        }
        Ok(())
    }

    /// Refuses a directory setting that resolves, through a symlink, outside the workspace.
    /// `TaskStack::validate` has already refused `..` and absolute paths, so only the part that
    /// exists can lead elsewhere: its deepest existing ancestor is resolved and must stay under
    /// the resolved root.
    pub fn check_settings_paths(&self, settings: &Settings) -> Result<()> {
        let root = self
            .root
            .canonicalize()
            .with_context(|| format!("cannot resolve the workspace {}", self.root.display()))?;
        let stack = self.stack_path();
        for (setting, value) in settings.paths_inside_workspace() {
            let target = self.root.join(value);
            let mut existing = target.as_path();
            while existing.symlink_metadata().is_err() {
                match existing.parent() {
                    Some(parent) => existing = parent,
                    None => break,
                }
            }
            let hint = if setting == BACKUP_DIR_SETTING {
                "; to keep backups on another disk, write its absolute path"
            } else {
                ""
            };
            let shown = value.escape_debug();
            let resolved = existing.canonicalize().map_err(|err| {
                Failure::user(format!(
                    "{}: {setting} `{shown}`: {} cannot be resolved ({err}); orchestrator writes only inside the workspace{hint}",
                    stack.display(),
                    existing.display()
                ))
            })?;
            if !resolved.starts_with(&root) {
                return Err(Failure::user(format!(
                    "{}: {setting} `{shown}` leads outside the workspace: {} resolves to {}; orchestrator writes only inside the workspace{hint}",
                    stack.display(),
                    existing.display(),
                    resolved.display()
                )));
            }
        }
        Ok(())
    }

    /// Takes the workspace lock, waiting for another process to release it for at most
    /// [`file::LOCK_TIMEOUT`] (or `ORCHESTRATOR_LOCK_TIMEOUT` seconds). A holder that hangs must
    /// not hang every other agent: past the bound the command gives up, changing nothing, with
    /// exit 4 (busy) and a message naming the lock file and, where the system tells, its holder.
    pub fn lock(&self) -> Result<WorkspaceLock> {
        self.lock_within(lock_timeout()?)
    }

    pub fn lock_within(&self, timeout: Duration) -> Result<WorkspaceLock> {
        self.check_layout()?;
        let dir = self.state_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let file = file::lock_file(&dir.join("lock"), timeout)?;
        Ok(WorkspaceLock { _file: file })
    }

    pub fn session_id_taken(&self, id: &str) -> bool {
        self.active_path(id).exists() || self.archive_path(id).exists()
    }

    /// Removes the temp files that a killed writer left behind in the workspace's own
    /// directories and in `extra_dirs` that lie inside the workspace: only the exact names
    /// `write_atomic` (or the transcript cache) gives our own files, never a user's look-alike,
    /// and only when the writer is gone: the transcript cache is written without the lock, so a
    /// live pid may still be renaming its file. Only call with the lock held.
    pub fn clean_temp_files(&self, _lock: &WorkspaceLock, extra_dirs: &[PathBuf]) {
        let dirs = [
            self.root.clone(),
            self.active_dir(),
            self.archive_dir(),
            self.cache_dir(),
        ];
        let Ok(root) = self.root.canonicalize() else {
            return;
        };
        for dir in dirs.iter().chain(extra_dirs) {
            // Never sweep outside the workspace, whatever a setting or a symlink says.
            if !dir.canonicalize().is_ok_and(|d| d.starts_with(&root)) {
                if dir.exists() {
                    tracing::warn!(
                        "not sweeping {}: it is outside the workspace",
                        dir.display()
                    );
                }
                continue;
            }
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let is_leftover = our_temp_file_pid(name).is_some_and(|pid| !process_alive(pid));
                if is_leftover && entry.file_type().is_ok_and(|t| t.is_file()) {
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

/// The store seam: the workspace's state in the domain's own operations. The file store
/// ([`Workspace`]: `task_stack.json` as the snapshot, `.orchestrator/journal.jsonl` over it,
/// session records beside) is the first implementation; a database store implements the same
/// operations, each one transaction, and commands do not change.
///
/// The rules every store keeps: a claim raises the task's fencing token and returns it
/// ([`ClaimToken`]); every write under a claim carries the token, and one whose token is no
/// longer the task's is refused with exit 5 ([`crate::error::Failure::lost`]), changing nothing;
/// an acknowledged write survives a crash at any instant, and every reader sees what every
/// writer sees.
pub trait Store {
    /// Exclusive write access, bounded in time (exit 4 past it); every write takes the guard.
    fn lock(&self) -> Result<WorkspaceLock>;
    /// The whole stack, every acknowledged write in it: for commands that rewrite it.
    fn load_stack(&self) -> Result<TaskStack>;
    /// The stack as selection reads it, tasks' checkpoints left out. Never saved.
    fn load_view(&self) -> Result<TaskStack>;
    /// The settings and only the tasks named, every acknowledged write in them (what a
    /// checkpoint, `status` and the brief need, whatever the size of the stack). Never saved.
    fn load_tasks_view(&self, tasks: &[&str]) -> Result<TaskStack>;
    /// Replaces the stack as a whole (task and config commands, a wrap's stack step).
    fn save_stack(&self, lock: &WorkspaceLock, stack: &TaskStack) -> Result<()>;
    /// Makes the exported stack current and complete (the file store folds its journal).
    fn fold(&self, lock: &WorkspaceLock) -> Result<()>;
    /// Claims `task` (found ready by the caller under the guard) and returns the new token.
    fn claim(
        &self,
        lock: &WorkspaceLock,
        undo: &mut Undo,
        stack: &mut TaskStack,
        task: &str,
        claim: Claim,
    ) -> Result<ClaimToken>;
    /// Appends a checkpoint under its claim's token (in `write`), renewing the lease; the
    /// session's own event goes with it. Refused with exit 5 when the token is stale.
    fn append_checkpoint(
        &self,
        lock: &WorkspaceLock,
        undo: &mut Undo,
        stack: &mut TaskStack,
        write: &CheckpointWrite,
        event: &CheckpointEvent,
    ) -> Result<()>;
    /// A live session with every checkpoint of it.
    fn load_active(&self, id: &str) -> Result<Session>;
    /// Every session not yet archived (live ones and ones whose wrap was cut off), oldest first.
    fn active_sessions(&self) -> Result<Vec<Session>>;
    /// Writes a live session's record (its wrap journal included).
    fn save_active(&self, lock: &WorkspaceLock, session: &Session) -> Result<()>;
    /// Archives a wrapped session's full record; [`Store::release`] then drops the live one.
    fn archive(&self, lock: &WorkspaceLock, session: &Session) -> Result<()>;
    /// The session is over: its live record goes (its claim went with the wrap's stack step).
    fn release(&self, lock: &WorkspaceLock, session: &str) -> Result<()>;
}

/// What a claim gives its holder. Every write under the claim carries it, and a store refuses
/// one whose token is no longer the task's (exit 5: the session lost the task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    pub task: String,
    pub session: String,
    pub fence: u64,
}

/// This machine's name, as claims, sessions and the fleet store record it.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(dir))
}

/// Test-only: a process whose `ORCHESTRATOR_TEST_CRASH_AFTER` names `point` exits there at
/// once, as a kill -9 would (no destructor, no cleanup), so tests can stop a command between
/// two writes.
pub(crate) fn crash_point(point: &str) {
    const CRASH_AFTER_VAR: &str = "ORCHESTRATOR_TEST_CRASH_AFTER";
    if std::env::var_os(CRASH_AFTER_VAR).is_some_and(|v| v == point) {
        eprintln!("{CRASH_AFTER_VAR}: exiting after {point}");
        std::process::exit(86);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pid of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn leftover_temp_files_are_cleaned_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::at(dir.path().to_path_buf());
        let dead = format!(".task_stack.json.tmp.{}", dead_pid());
        let live = format!(".task_stack.json.tmp.{}", std::process::id());
        fs::write(dir.path().join(&dead), "half").unwrap();
        fs::write(dir.path().join(&live), "being written").unwrap();
        fs::write(dir.path().join(".gitignore"), "keep").unwrap();
        let lock = ws.lock().unwrap();
        ws.clean_temp_files(&lock, &[]);
        assert!(!dir.path().join(&dead).exists());
        assert!(dir.path().join(&live).exists());
        assert!(dir.path().join(".gitignore").exists());
    }

    #[test]
    fn temp_files_outside_the_workspace_are_never_swept() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = Workspace::at(dir.path().to_path_buf());
        let name = format!(".task_stack.json.tmp.{}", dead_pid());
        fs::write(outside.path().join(&name), "theirs").unwrap();
        let lock = ws.lock().unwrap();
        ws.clean_temp_files(
            &lock,
            &[outside.path().to_path_buf(), dir.path().join("..")],
        );
        assert!(outside.path().join(&name).exists());
    }

    #[test]
    fn find_refuses_a_directory_without_a_stack() {
        let dir = tempfile::tempdir().unwrap();
        let err = Workspace::find(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("has no task_stack.json"), "{err}");
    }
}

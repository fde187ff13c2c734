//! The store seam: the workspace's state (stack, sessions, checkpoint logs) as commands load and
//! save it, every write under the workspace lock. The file backend's mechanics are in [`file`](mod@file).
//!
//! Nothing is written through a symlink: the stack, the state directories, the lock and the
//! checkpoint logs are refused when they are one, and a directory setting that resolves outside
//! the workspace is refused before anything is written (an absolute backup_dir, which the user
//! chose, aside). Other files are replaced by `rename`, which replaces a link, not its target.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod file;
pub mod index;
pub mod journal;
pub mod postgres;
pub mod run_state;
pub mod undo;

use crate::core::ids::check_session_id;
use crate::core::session::{CheckpointEvent, Session};
use crate::core::stack::{BACKUP_DIR_SETTING, CheckpointWrite, Claim, Settings, TaskStack};
use crate::error::Failure;
use file::{
    TEMP_MARKER, lock_timeout, our_temp_file_pid, process_alive, read_text, remove_if_exists,
    symlink_target, write_atomic, write_json,
};
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
        }
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
                root: root.to_path_buf(),
                found_above: root != start,
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
            .then(|| Workspace {
                root: main.to_path_buf(),
                found_above: false,
            })
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

    /// Also refuses a workspace whose state or settings would lead writes outside it, so that
    /// every command stops before it has done anything. The journal is folded in: this is the
    /// stack as every acknowledged write left it.
    pub fn load_stack(&self) -> Result<TaskStack> {
        self.read_stack(TaskStack::parse)
    }

    /// The stack for a command that never writes it back (`next`, `status`): as
    /// [`Workspace::load_stack`], but no task's checkpoints are parsed. Never save it.
    pub fn load_view(&self) -> Result<TaskStack> {
        self.read_stack(TaskStack::parse_view)
    }

    fn read_stack(
        &self,
        parse: fn(&str) -> Result<TaskStack, crate::core::stack::Invalid>,
    ) -> Result<TaskStack> {
        self.check_layout()?;
        let path = self.stack_path();
        let text = file::map_text(&path)?;
        let mut stack = parse(&text)
            .map_err(|invalid| Failure::user(format!("{}: {invalid}", path.display())))?;
        self.check_settings_paths(&stack.settings)?;
        let journal = journal::Journal::read(&self.journal_path())?;
        stack.journal_generation = journal.fold_into(&mut stack);
        Ok(stack)
    }

    /// Validates and writes the stack. An invalid stack is refused before anything is written.
    /// The stack must have been loaded under `lock` ([`Workspace::load_stack`]): it then holds
    /// every journal record, and is written as holding them, so they are not applied again.
    /// The journal itself stays until [`Workspace::fold_journal`]: an undo that puts the old
    /// stack back brings its records back to life with it.
    pub fn save_stack(&self, _lock: &WorkspaceLock, stack: &TaskStack) -> Result<()> {
        let path = self.stack_path();
        stack
            .validate()
            .map_err(|invalid| Failure::user(format!("{}: {invalid}", path.display())))?;
        let text = stack.to_json();
        write_atomic(&path, text.as_bytes())?;
        // Derived state: a stack without a matching index is read whole, never misread.
        let ids: Vec<&str> = stack.tasks.iter().map(|t| t.id.as_str()).collect();
        let written = index::Identity::of(&path).and_then(|identity| {
            index::write(
                &self.index_path(),
                identity,
                &text,
                &ids,
                stack.journal_generation,
            )
        });
        if let Err(err) = written {
            tracing::warn!("cannot index {}: {err:#}", path.display());
        }
        Ok(())
    }

    /// The stack as a checkpoint on `task` needs it: the settings and that one task, with the
    /// journal folded in, read through the index without parsing the rest of the stack. Never
    /// save it.
    pub fn load_task_view(&self, task: &str) -> Result<TaskStack> {
        self.load_tasks_view(&[task])
    }

    /// The settings and the tasks named (those that exist), the journal folded in, read through
    /// the index. Falls back to [`Workspace::load_view`] when the index does not match the stack
    /// (a hand edit) or lacks a task. Never save it.
    pub fn load_tasks_view(&self, tasks: &[&str]) -> Result<TaskStack> {
        self.check_layout()?;
        let path = self.stack_path();
        let Some(found) = index::Index::open(&self.index_path(), &path) else {
            return self.load_view();
        };
        let settings: Settings = match found.settings {
            Some(span) => serde_json::from_str(&index::read_span(&path, span)?)
                .map_err(|err| Failure::user(format!("{}: settings: {err}", path.display())))?,
            None => Settings::default(),
        };
        let mut stack = TaskStack::new(settings);
        for &task in tasks {
            if stack.task(task).is_some() {
                continue;
            }
            let mut entry = None;
            for span in found.candidates(task) {
                let text = index::read_span(&path, span)?;
                let parsed: crate::core::stack::Task =
                    serde_json::from_str(&text).map_err(|err| {
                        Failure::user(format!("{}: task `{task}`: {err}", path.display()))
                    })?;
                if parsed.id == task {
                    entry = Some(parsed);
                    break;
                }
            }
            match entry {
                Some(entry) => stack.tasks.push(entry),
                None => return self.load_view(),
            }
        }
        self.check_settings_paths(&stack.settings)?;
        stack.journal_generation = found.journal_generation;
        let journal = journal::Journal::read(&self.journal_path())?;
        stack.journal_generation = journal.fold_into_part(&mut stack);
        Ok(stack)
    }

    /// Indexes a stack that has no index matching it (written by hand, or before indexes
    /// existed), so that the next checkpoint reads only its task. Called after a command
    /// succeeded: derived state, never part of what a refused command would have to undo.
    pub fn reindex_if_stale(&self, _lock: &WorkspaceLock) {
        let path = self.stack_path();
        if index::Index::open(&self.index_path(), &path).is_some() {
            return;
        }
        let indexed = file::map_text(&path).and_then(|text| {
            let identity = text
                .identity()
                .context("an empty or unreadable stack is not indexed")?;
            index::write_from_text(&self.index_path(), identity, &text)
        });
        if let Err(err) = indexed {
            tracing::debug!("cannot index {}: {err:#}", path.display());
        }
    }

    /// Makes `task_stack.json` current and complete: writes the journal's records into it and
    /// removes the journal. A crash between the two is harmless: the stack says which
    /// generation it holds, and readers skip those records.
    pub fn fold_journal(&self, lock: &WorkspaceLock) -> Result<()> {
        let path = self.journal_path();
        if fs::symlink_metadata(&path).is_err() {
            return Ok(());
        }
        let stack = self.load_stack()?;
        let on_disk = journal_generation_on_disk(&self.stack_path())?;
        if stack.journal_generation != on_disk {
            self.save_stack(lock, &stack)?;
            crash_point("fold-snapshot");
        }
        remove_if_exists(&path)
    }

    /// Fold when the journal has grown past its bound ([`journal::fold_bytes`]).
    pub fn fold_journal_if_large(&self, lock: &WorkspaceLock) -> Result<()> {
        let large =
            fs::metadata(self.journal_path()).is_ok_and(|meta| meta.len() > journal::fold_bytes());
        if large {
            self.fold_journal(lock)?;
        }
        Ok(())
    }

    /// Gives `task` to `claim.session`, raising its fencing token: one fsynced journal record,
    /// applied to `stack` (which may be a view: nothing rewrites the stack here).
    pub fn claim(
        &self,
        _lock: &WorkspaceLock,
        undo: &mut Undo,
        stack: &mut TaskStack,
        task: &str,
        claim: Claim,
    ) -> Result<ClaimToken> {
        let generation = stack.journal_generation + 1;
        let path = self.stack_path();
        let entry = stack
            .task_mut(task)
            .ok_or_else(|| Failure::user(format!("{}: no task `{task}`", path.display())))?;
        let session = claim.session.clone();
        let write = crate::core::stack::ClaimWrite {
            task: task.to_string(),
            token: entry.fence + 1,
            claim,
        };
        let record = journal::Record {
            generation,
            checkpoint: None,
            claim: Some(write.clone()),
        };
        journal::append(&self.journal_path(), undo, &record)?;
        write
            .apply(entry)
            .map_err(|lost| Failure::lost(lost.to_string()))?;
        stack.journal_generation = generation;
        Ok(ClaimToken {
            task: task.to_string(),
            session,
            fence: write.token,
        })
    }

    /// Records a checkpoint under its claim: the session's own log, then the stack's journal,
    /// each one fsynced append. A stale token is refused (exit 5) before anything is written.
    /// `stack` is the stack as loaded under `lock`, and gets the checkpoint applied.
    pub fn append_checkpoint(
        &self,
        lock: &WorkspaceLock,
        undo: &mut Undo,
        stack: &mut TaskStack,
        write: &CheckpointWrite,
        event: &CheckpointEvent,
    ) -> Result<()> {
        let generation = stack.journal_generation + 1;
        let task = stack.task_mut(&write.task).ok_or_else(|| {
            Failure::user(format!(
                "{}: task `{}` of session {} is no longer in the stack",
                self.stack_path().display(),
                write.task,
                write.session
            ))
        })?;
        let mut applied = task.clone();
        write
            .apply(&mut applied)
            .map_err(|lost| Failure::lost(lost.to_string()))?;
        // The session's log first: a crash between the two appends loses the stack's copy of
        // this checkpoint, never the full record.
        self.append_session_event(lock, undo, &write.session, event)?;
        let record = journal::Record {
            generation,
            checkpoint: Some(write.clone()),
            claim: None,
        };
        journal::append(&self.journal_path(), undo, &record)?;
        *task = applied;
        stack.journal_generation = generation;
        Ok(())
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
    /// Registered with `undo` first, so a failure here or later truncates a torn or orphaned
    /// line away instead of leaving a checkpoint the command reported as failed.
    fn append_session_event(
        &self,
        _lock: &WorkspaceLock,
        undo: &mut Undo,
        session: &str,
        event: &CheckpointEvent,
    ) -> Result<()> {
        let path = self.checkpoint_log_path(session);
        let mut line = serde_json::to_vec(event).context("cannot serialize a checkpoint")?;
        line.push(b'\n');
        let refuse_link = || {
            Failure::user(format!(
                "{} is a symbolic link; orchestrator writes state only inside the workspace: replace it with the file itself",
                path.display()
            ))
        };
        // Refused before the undo records the length, which it would read through the link.
        if symlink_target(&path)?.is_some() {
            return Err(refuse_link());
        }
        undo.before_append(&path)?;
        // O_NOFOLLOW too: a link put in place since the check is refused by the open itself.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => refuse_link(),
                _ => anyhow::Error::new(err).context(format!("cannot open {}", path.display())),
            })?;
        // One write call: a killed process leaves the whole line or none of it. A write cut
        // short (a full disk) leaves part of one, which the caller's undo truncates away.
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
    /// The stack as selection and status read it, tasks' checkpoints left out. Never saved.
    fn load_view(&self) -> Result<TaskStack>;
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

impl Store for Workspace {
    fn lock(&self) -> Result<WorkspaceLock> {
        Workspace::lock(self)
    }
    fn load_stack(&self) -> Result<TaskStack> {
        Workspace::load_stack(self)
    }
    fn load_view(&self) -> Result<TaskStack> {
        Workspace::load_view(self)
    }
    fn save_stack(&self, lock: &WorkspaceLock, stack: &TaskStack) -> Result<()> {
        Workspace::save_stack(self, lock, stack)
    }
    fn fold(&self, lock: &WorkspaceLock) -> Result<()> {
        self.fold_journal(lock)
    }
    fn claim(
        &self,
        lock: &WorkspaceLock,
        undo: &mut Undo,
        stack: &mut TaskStack,
        task: &str,
        claim: Claim,
    ) -> Result<ClaimToken> {
        Workspace::claim(self, lock, undo, stack, task, claim)
    }
    fn append_checkpoint(
        &self,
        lock: &WorkspaceLock,
        undo: &mut Undo,
        stack: &mut TaskStack,
        write: &CheckpointWrite,
        event: &CheckpointEvent,
    ) -> Result<()> {
        Workspace::append_checkpoint(self, lock, undo, stack, write, event)
    }
    fn load_active(&self, id: &str) -> Result<Session> {
        Workspace::load_active(self, id)
    }
    fn active_sessions(&self) -> Result<Vec<Session>> {
        Workspace::active_sessions(self)
    }
    fn save_active(&self, lock: &WorkspaceLock, session: &Session) -> Result<()> {
        Workspace::save_active(self, lock, session)
    }
    fn archive(&self, lock: &WorkspaceLock, session: &Session) -> Result<()> {
        self.save_archive(lock, session)
    }
    fn release(&self, lock: &WorkspaceLock, session: &str) -> Result<()> {
        self.remove_active(lock, session)
    }
}

/// What a claim gives its holder. Every write under the claim carries it, and a store refuses
/// one whose token is no longer the task's (exit 5: the session lost the task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    pub task: String,
    pub session: String,
    pub fence: u64,
}

/// Test-only: exit abruptly at a named point of a store write, as a kill -9 would.
const CRASH_AT_VAR: &str = "ORCHESTRATOR_TEST_CRASH_AFTER";

fn crash_point(point: &str) {
    if std::env::var_os(CRASH_AT_VAR).is_some_and(|v| v == point) {
        eprintln!("{CRASH_AT_VAR}: exiting after {point}");
        std::process::exit(86);
    }
}

/// The `journal_generation` the stack file on disk says it holds (0 when it does not say).
fn journal_generation_on_disk(path: &Path) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Generation {
        #[serde(default)]
        journal_generation: u64,
    }
    let text = read_text(path)?;
    Ok(serde_json::from_str::<Generation>(&text)
        .map(|g| g.journal_generation)
        .unwrap_or(0))
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(dir))
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

//! The file store, the store seam's first implementation, and its atomic writes, lock and reads.
//!
//! The stack is a snapshot (`task_stack.json`) with the checkpoint journal folded over it, the
//! session records beside it.
//!
//! Every write goes to a temp file in the same directory, is fsynced, renamed over the target,
//! and the directory is fsynced, so a reader (or a crash) only ever sees a whole old or a whole
//! new file. Writers hold an exclusive lock on the sidecar `.orchestrator/lock`, which is never
//! renamed: locking the renamed file itself would let a second process lock the old inode.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::undo::Undo;
use super::{ClaimToken, STACK_FILE, Store, Workspace, WorkspaceLock, index, journal, view};
use crate::core::ids::check_session_id;
use crate::core::session::{CheckpointEvent, Session};
use crate::core::stack::{CheckpointWrite, Claim, LeaseWrite, Settings, TaskStack};
use crate::error::Failure;

/// In every temp name we make, so the sweep and `.gitignore` know them.
pub const TEMP_MARKER: &str = ".tmp.";

/// Opens (creating it) the lock file at `path` and takes its exclusive lock, waiting at most
/// `timeout` for another process to release it; the lock is held as long as the file is open.
pub fn lock_file(path: &Path, timeout: Duration) -> Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    // Opening a FIFO put in the lock file's place for writing would block until a reader
    // came; non-blocking, it fails at once, and the check below refuses it.
    options.custom_flags(libc::O_NONBLOCK);
    let file = options
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read the metadata of {}", path.display()))?;
    if !meta.is_file() {
        return Err(Failure::user(format!(
            "{} is not a regular file; remove it so that orchestrator can recreate its lock",
            path.display()
        )));
    }
    let began = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => {
                // Read by `benches/scale.rs` for the longest wait under contention.
                tracing::debug!(
                    lock_wait_us = began.elapsed().as_micros() as u64,
                    "took the workspace lock"
                );
                return Ok(file);
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let waited = began.elapsed();
        if waited >= timeout {
            return Err(lock_busy(path, meta.ino(), timeout));
        }
        // Polling, unlike a blocking lock, can give up; checkpoints hold the lock for
        // milliseconds, so short pauses keep the wait close to the holder's release.
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(MAX_LOCK_PAUSE);
    }
}

/// How long a command waits for the workspace lock by default. Checkpoints hold it for
/// milliseconds; a wrap holds it while it backs up the database (SQLite waits up to 10 s for a
/// busy database) and commits, which on a large database or tree takes tens of seconds.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Seconds (a decimal number, `0` to not wait at all) replacing [`LOCK_TIMEOUT`].
pub const LOCK_TIMEOUT_ENV: &str = "ORCHESTRATOR_LOCK_TIMEOUT";
/// The longest pause between two tries at the lock.
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(50);

/// The lock wait: [`LOCK_TIMEOUT_ENV`] when set, else [`LOCK_TIMEOUT`].
pub fn lock_timeout() -> Result<Duration> {
    let Some(value) = std::env::var_os(LOCK_TIMEOUT_ENV) else {
        return Ok(LOCK_TIMEOUT);
    };
    let text = value.to_string_lossy();
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| {
            Failure::user(format!(
                "{LOCK_TIMEOUT_ENV}={text}: not a number of seconds (e.g. 60, or 0 to not wait)"
            ))
        })
}

/// The busy error of a lock that stayed held: which file, who holds it, how to go on.
fn lock_busy(path: &Path, inode: u64, waited: Duration) -> anyhow::Error {
    let holder = match lock_holder(inode) {
        Some((pid, Some(command))) => format!("pid {pid} (`{command}`)"),
        Some((pid, None)) => format!("pid {pid}"),
        None => "another process".to_string(),
    };
    Failure::busy(format!(
        "the workspace is busy: {} is held by {holder} and was not released within {} s; \
         nothing was changed. Run the command again once that process is done (set \
         {LOCK_TIMEOUT_ENV}=SECONDS to wait longer)",
        path.display(),
        seconds(waited)
    ))
}

/// `60`, or `0.5` for a fraction.
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}")
    } else {
        format!("{secs:.1}")
    }
}

/// The process holding an exclusive `flock` on the file with this inode, and its command line,
/// from Linux's `/proc/locks`; `None` where the system does not tell.
fn lock_holder(inode: u64) -> Option<(u32, Option<String>)> {
    let locks = fs::read_to_string("/proc/locks").ok()?;
    // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; waiters have a `->` after the number.
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, device, ..]
                if device.rsplit(':').next() == Some(&inode.to_string()) =>
            {
                pid.parse::<u32>().ok()
            }
            _ => None,
        }
    })?;
    let command = fs::read(format!("/proc/{pid}/cmdline")).ok().map(|bytes| {
        let text: String = String::from_utf8_lossy(&bytes)
            .split('\0')
            .filter(|arg| !arg.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        match text.char_indices().nth(120) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text,
        }
    });
    Some((pid, command.filter(|c| !c.is_empty())))
}

/// The records of a JSON-lines file, in order. Only a power loss can tear an append, so a line
/// that does not parse is skipped with a warning naming the file, the line and `what` it held,
/// never fatal.
pub fn json_lines<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &Path, what: &str) -> Vec<T> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .filter_map(|(number, line)| match serde_json::from_slice(line) {
            Ok(record) => Some(record),
            Err(err) => {
                tracing::warn!(
                    "{}:{}: skipping a damaged {what}: {err}",
                    path.display(),
                    number + 1
                );
                None
            }
        })
        .collect()
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

/// A file's bytes mapped read-only, for the stack: the kernel shares its cached pages instead of
/// copying them into fresh memory, which on a large stack is most of a read's time.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// The first `len` bytes of `file`, mapped read-only and read in at once; `None` when the
    /// system refuses (an empty file, a file that cannot be mapped). Only for a file that our
    /// writers replace by rename, never rewrite in place: a file cut short under a mapping is
    /// a SIGBUS on the next read of it.
    pub fn of(file: &File, len: usize) -> Option<Mapped> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private read-only mapping of an open file; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Mapped { ptr, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives (see `Mapped::of`).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `Mapped::of` made.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// A file's text, mapped or read, with the identity of the file it came from when known (for
/// the stack's index: it must describe the very file whose bytes these are).
pub enum Text {
    Mapped(Mapped, super::index::Identity),
    Read(String, Option<super::index::Identity>),
}

impl Text {
    /// The identity of the file the text was read from.
    pub fn identity(&self) -> Option<super::index::Identity> {
        match self {
            Text::Mapped(_, identity) => Some(*identity),
            Text::Read(_, identity) => *identity,
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            // SAFETY: checked to be UTF-8 when made (see `map_text`).
            Text::Mapped(mapped, _) => unsafe { std::str::from_utf8_unchecked(mapped.bytes()) },
            Text::Read(text, _) => text,
        }
    }
}

/// The smallest stack that is mapped rather than read.
const MAP_AT_LEAST: usize = 4 * 1024 * 1024;

/// The text of `path`: mapped when it is a regular file of [`MAP_AT_LEAST`] or more, else read.
/// Our writers never change a stack file in place (they rename a new one over it), so the
/// mapping stays whole.
pub fn map_text(path: &Path) -> Result<Text> {
    let read = || read_text(path).map(|text| Text::Read(text, None));
    let Ok(file) = File::open(path) else {
        return read();
    };
    let Ok(meta) = file.metadata() else {
        return read();
    };
    let len = meta.len() as usize;
    // A stack edited in place by hand (an editor writing over the file, `jq ... > file`) while
    // it is mapped would kill us with SIGBUS instead of a parse error: only a stack large enough
    // for the copy to matter takes that risk.
    if !meta.is_file() {
        return read();
    }
    if len < MAP_AT_LEAST {
        // From the handle whose metadata names the file: a stack renamed into place meanwhile
        // must not be indexed under the other's identity.
        let mut bytes = Vec::with_capacity(len);
        (&file)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|err| {
            Failure::user(format!(
                "{}: not valid UTF-8 (byte {})",
                path.display(),
                err.utf8_error().valid_up_to()
            ))
        })?;
        return Ok(Text::Read(
            text,
            Some(super::index::Identity::from_metadata(&meta)),
        ));
    }
    let Some(mapped) = Mapped::of(&file, len) else {
        return read();
    };
    if let Err(err) = std::str::from_utf8(mapped.bytes()) {
        return Err(Failure::user(format!(
            "{}: not valid UTF-8 (byte {})",
            path.display(),
            err.valid_up_to()
        )));
    }
    Ok(Text::Mapped(
        mapped,
        super::index::Identity::from_metadata(&meta),
    ))
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

/// Removes `path` if it is there (for commands outside the store).
pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    remove_if_exists(path)
}

pub fn remove_if_exists(path: &Path) -> Result<()> {
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

/// The writer's pid when `name` is `.<target>.tmp.<pid>`, the temp file we make for a file we
/// write in the swept directories: the stack, `.gitignore`, `.gitkeep`, a session record, a
/// handoff or a transcript cache entry.
pub(super) fn our_temp_file_pid(name: &str) -> Option<libc::pid_t> {
    let (target, pid) = name.strip_prefix('.')?.rsplit_once(TEMP_MARKER)?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    // `store::undo` keeps a file's old contents under its temp name plus `.undo<N>`.
    let pid = match pid.split_once(".undo") {
        Some((pid, index)) if digits(index) => pid,
        Some(_) => return None,
        None => pid,
    };
    if !digits(pid) {
        return None;
    }
    let session = |id: Option<&str>| id.is_some_and(|id| check_session_id(id).is_ok());
    let cache = |hash: Option<&str>| {
        hash.is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let ours = matches!(
        target,
        STACK_FILE | ".gitignore" | ".gitkeep" | super::INDEX_FILE | view::VIEW_FILE
    ) || session(target.strip_suffix(".json"))
        || session(target.strip_suffix(".checkpoints.jsonl"))
        || session(
            target
                .strip_prefix("handoff_")
                .and_then(|t| t.strip_suffix(".md")),
        )
        || cache(
            target
                .strip_prefix("transcript-")
                .and_then(|t| t.strip_suffix(".json")),
        );
    if !ours {
        return None;
    }
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Whether a process with this pid exists (EPERM: it exists, under another user).
pub(super) fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Where `path` points when it is a symlink; `None` when it is anything else or absent.
pub(super) fn symlink_target(path: &Path) -> Result<Option<PathBuf>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::read_link(path)
            .map(Some)
            .with_context(|| format!("cannot read the symbolic link {}", path.display())),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

/// The file store: the stack as a snapshot (`task_stack.json`) with the checkpoint journal
/// folded over it, session records beside, every write under the workspace lock.
impl Workspace {
    /// Also refuses a workspace whose state or settings would lead writes outside it, so that
    /// every command stops before it has done anything. The journal is folded in: this is the
    /// stack as every acknowledged write left it.
    pub fn load_stack(&self) -> Result<TaskStack> {
        self.read_stack(TaskStack::parse, true)
    }

    /// `task_stack.json` itself, whichever store holds the queue (`fleet import` reads it).
    pub fn load_stack_file(&self) -> Result<TaskStack> {
        self.read_stack(TaskStack::parse, false)
    }

    /// The stack for a command that never writes it back (`next`, `status`): as
    /// [`Workspace::load_stack`], but no task's checkpoints are parsed. Never save it.
    pub fn load_view(&self) -> Result<TaskStack> {
        self.read_view()
    }

    /// [`Workspace::read_stack`] for a view: from the view cache (see [`view`]) when it
    /// describes the stack file as it is now, else from the stack itself. On a fleet store,
    /// from the store (the settings in the view decide, as in `read_stack`).
    fn read_view(&self) -> Result<TaskStack> {
        if let Some(fleet) = self.fleet() {
            return self.fleet_stack(fleet, None);
        }
        self.check_layout()?;
        // The journal before the view, as in `read_stack`: the view names the stack it was cut
        // from, so a fold in between leaves a view that no longer matches, or the new one.
        let journal = journal::Journal::read(&self.journal_path())?;
        let Some(mut stack) = view::load(&self.view_path(), &self.stack_path()) else {
            return self.read_stack(TaskStack::parse_view, true);
        };
        self.check_settings_paths(&stack.settings)?;
        if let Some(fleet) = self.fleet_for(&stack.settings)? {
            return self.fleet_stack(fleet, None);
        }
        stack.journal_generation = journal.fold_into(&mut stack);
        Ok(stack)
    }

    /// `use_fleet`: the settings of the file name a fleet store, which then gives the stack.
    fn read_stack(
        &self,
        parse: fn(&str) -> Result<TaskStack, crate::core::stack::Invalid>,
        use_fleet: bool,
    ) -> Result<TaskStack> {
        if use_fleet && let Some(fleet) = self.fleet() {
            return self.fleet_stack(fleet, None);
        }
        self.check_layout()?;
        let path = self.stack_path();
        // The journal before the stack: a fold between the two reads then leaves records the
        // new stack already holds (skipped), never a stack without the records it removed.
        let journal = journal::Journal::read(&self.journal_path())?;
        let text = map_text(&path)?;
        let mut stack = parse(&text)
            .map_err(|invalid| Failure::user(format!("{}: {invalid}", path.display())))?;
        self.check_settings_paths(&stack.settings)?;
        if use_fleet && let Some(fleet) = self.fleet_for(&stack.settings)? {
            return self.fleet_stack(fleet, None);
        }
        stack.journal_generation = journal.fold_into(&mut stack);
        Ok(stack)
    }

    /// Validates and writes the stack. An invalid stack is refused before anything is written.
    /// The stack must have been loaded under `lock` ([`Workspace::load_stack`]): it then holds
    /// every journal record, and is written as holding them, so they are not applied again.
    /// The journal itself stays until [`Workspace::fold_journal`]: an undo that puts the old
    /// stack back brings its records back to life with it.
    pub fn save_stack(&self, lock: &WorkspaceLock, stack: &TaskStack) -> Result<()> {
        if let Some(fleet) = self.fleet() {
            return self.fleet_save(lock, fleet, stack);
        }
        self.save_stack_file(lock, stack)
    }

    /// Writes `task_stack.json` itself, whichever store holds the queue (`fleet export`, and
    /// the fleet store's copy in the repository).
    pub fn save_stack_file(&self, _lock: &WorkspaceLock, stack: &TaskStack) -> Result<()> {
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
            )?;
            view::write(&self.view_path(), identity, &text, Some(&stack.tasks))
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
        if let Some(fleet) = self.fleet() {
            return self.fleet_stack(fleet, Some(tasks));
        }
        self.check_layout()?;
        let path = self.stack_path();
        // The journal first, as in `read_stack`: these tasks' records, and the generation.
        let journal = journal::Journal::read_for(&self.journal_path(), tasks)?;
        let Ok(file) = File::open(&path) else {
            return self.load_view();
        };
        let Some(found) = index::Index::open(&self.index_path(), &file) else {
            return self.load_view();
        };
        let settings: Settings = match found.settings {
            Some(span) => serde_json::from_str(&index::read_span(&file, &path, span)?)
                .map_err(|err| Failure::user(format!("{}: settings: {err}", path.display())))?,
            None => Settings::default(),
        };
        if let Some(fleet) = self.fleet_for(&settings)? {
            return self.fleet_stack(fleet, Some(tasks));
        }
        let mut stack = TaskStack::new(settings);
        for &task in tasks {
            if stack.task(task).is_some() {
                continue;
            }
            let mut entry = None;
            for span in found.candidates(task) {
                let text = index::read_span(&file, &path, span)?;
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
        stack.journal_generation = journal.fold_into_part(&mut stack);
        Ok(stack)
    }

    /// Indexes a stack that has no index matching it (written by hand, or before indexes
    /// existed), so that the next checkpoint reads only its task. Called after a command
    /// succeeded: derived state, never part of what a refused command would have to undo.
    pub fn reindex_if_stale(&self, _lock: &WorkspaceLock) {
        let path = self.stack_path();
        let stack = File::open(&path).ok();
        let index_current = stack
            .as_ref()
            .and_then(|file| index::Index::open(&self.index_path(), file))
            .is_some();
        let view_current = stack
            .as_ref()
            .is_some_and(|file| view::is_current(&self.view_path(), file));
        if index_current && view_current {
            return;
        }
        let indexed = map_text(&path).and_then(|text| {
            let identity = text
                .identity()
                .context("an empty or unreadable stack is not indexed")?;
            if !index_current {
                index::write_from_text(&self.index_path(), identity, &text)?;
            }
            // A view is read back without validating it again: only a valid stack gets one.
            if !view_current && TaskStack::parse_view(&text).is_ok() {
                view::write(&self.view_path(), identity, &text, None)?;
            }
            Ok(())
        });
        if let Err(err) = indexed {
            tracing::debug!("cannot index {}: {err:#}", path.display());
        }
    }

    /// Makes `task_stack.json` current and complete: writes the journal's records into it and
    /// removes the journal. A crash between the two is harmless: the stack says which
    /// generation it holds, and readers skip those records.
    pub fn fold_journal(&self, lock: &WorkspaceLock) -> Result<()> {
        if let Some(fleet) = self.fleet() {
            return self.fleet_export_here(lock, fleet);
        }
        let path = self.journal_path();
        if fs::symlink_metadata(&path).is_err() {
            return Ok(());
        }
        let stack = self.load_stack()?;
        let on_disk = journal_generation_on_disk(&self.stack_path())?;
        if stack.journal_generation != on_disk {
            self.save_stack(lock, &stack)?;
            super::crash_point("fold-snapshot");
        }
        remove_if_exists(&path)
    }

    /// Fold when the journal has grown past its bound ([`journal::fold_bytes`]).
    pub fn fold_journal_if_large(&self, lock: &WorkspaceLock) -> Result<()> {
        if self.fleet().is_some() {
            return Ok(());
        }
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
            lease: None,
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
        if let Some(fleet) = self.fleet() {
            // The session's own log first, as below.
            self.append_session_event(lock, undo, &write.session, event)?;
            return self.fleet_checkpoint(fleet, stack, write, event);
        }
        let generation = stack.journal_generation + 1;
        let applied = self.applied(stack, &write.task, &write.session, |t| write.apply(t))?;
        // The session's log first: a crash between the two appends loses the stack's copy of
        // this checkpoint, never the full record.
        self.append_session_event(lock, undo, &write.session, event)?;
        let record = journal::Record {
            generation,
            checkpoint: Some(write.clone()),
            claim: None,
            lease: None,
        };
        journal::append(&self.journal_path(), undo, &record)?;
        *stack.task_mut(&write.task).expect("found above") = applied;
        stack.journal_generation = generation;
        Ok(())
    }

    /// `task` of `stack` as a write under `session`'s claim leaves it, or why not: the task is
    /// gone (exit 1), or the write's token is stale (exit 5). Nothing is changed.
    fn applied(
        &self,
        stack: &TaskStack,
        task: &str,
        session: &str,
        write: impl FnOnce(&mut crate::core::stack::Task) -> Result<(), crate::core::stack::Lost>,
    ) -> Result<crate::core::stack::Task> {
        let mut applied = stack.task(task).cloned().ok_or_else(|| {
            Failure::user(format!(
                "{}: task `{task}` of session {session} is no longer in the stack",
                self.stack_path().display(),
            ))
        })?;
        write(&mut applied).map_err(|lost| Failure::lost(lost.to_string()))?;
        Ok(applied)
    }

    /// Renews a claim's lease under its token: one fsynced journal record (the stack is not
    /// rewritten, whatever its size), applied to `stack` (which may hold only that task). A
    /// stale token is refused (exit 5) before anything is written.
    pub fn renew_lease(
        &self,
        _lock: &WorkspaceLock,
        stack: &mut TaskStack,
        write: &LeaseWrite,
    ) -> Result<()> {
        if let Some(fleet) = self.fleet() {
            let renewed = fleet.with(|pg| pg.renew_lease(write))?;
            if let Some(task) = stack.task_mut(&write.task) {
                *task = renewed;
            }
            return Ok(());
        }
        let applied = self.applied(stack, &write.task, &write.session, |t| write.apply(t))?;
        let generation = stack.journal_generation + 1;
        let record = journal::Record {
            generation,
            checkpoint: None,
            claim: None,
            lease: Some(write.clone()),
        };
        // A record cut short (a full disk) is truncated away when this fails.
        let mut undo = Undo::new();
        journal::append(&self.journal_path(), &mut undo, &record)?;
        undo.commit();
        *stack.task_mut(&write.task).expect("found above") = applied;
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
        self.replay_log(self.load_session(&self.active_path(id))?)
    }

    /// A live session's record (from [`Workspace::active_records`]) with its checkpoint log
    /// replayed on top: [`Workspace::load_active`] without reading the record again.
    pub fn replay_log(&self, mut session: Session) -> Result<Session> {
        let log = self.checkpoint_log_path(&session.id);
        let text = match fs::read(&log) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(session),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", log.display())),
        };
        for event in json_lines::<CheckpointEvent>(&text, &log, "checkpoint") {
            session.apply(event);
        }
        Ok(session)
    }

    /// Rewrites the whole record; the log it now contains is then removed.
    pub fn save_active(&self, _lock: &WorkspaceLock, session: &Session) -> Result<()> {
        write_json(&self.active_path(&session.id), session)?;
        remove_if_exists(&self.checkpoint_log_path(&session.id))?;
        if let Some(fleet) = self.fleet() {
            self.fleet_save_session(fleet, session)?;
        }
        Ok(())
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
        if let Some(fleet) = self.fleet()
            && let Ok(session) = self.load_active(id)
        {
            self.fleet_end_session(fleet, &session)?;
        }
        remove_if_exists(&self.active_path(id))?;
        remove_if_exists(&self.checkpoint_log_path(id))
    }

    /// Every session in the active directory (live ones and ones whose wrap was cut off),
    /// oldest first.
    pub fn active_sessions(&self) -> Result<Vec<Session>> {
        self.active(true)
    }

    /// [`Workspace::active_sessions`] without their checkpoint logs: who holds which task, and
    /// which are being wrapped, is in the records; the checkpoints since the last rewrite of a
    /// record are not. Cheap to list when each of many live sessions has a long log.
    pub fn active_records(&self) -> Result<Vec<Session>> {
        self.active(false)
    }

    fn active(&self, with_logs: bool) -> Result<Vec<Session>> {
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
            let record = self.load_session(&self.active_path(id))?;
            sessions.push(if with_logs {
                self.replay_log(record)?
            } else {
                record
            });
        }
        sessions.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
        Ok(sessions)
    }
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
    fn load_tasks_view(&self, tasks: &[&str]) -> Result<TaskStack> {
        Workspace::load_tasks_view(self, tasks)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_stack_is_mapped_and_a_small_one_read_with_the_same_text() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.json");
        std::fs::write(&small, "{\"version\": 1}\n").unwrap();
        let text = map_text(&small).unwrap();
        assert!(matches!(text, Text::Read(_, Some(_))));
        assert_eq!(&*text, "{\"version\": 1}\n");

        let large = dir.path().join("large.json");
        let body = format!("[{}\"é\"]\n", "1, ".repeat(MAP_AT_LEAST / 3 + 1));
        std::fs::write(&large, &body).unwrap();
        let text = map_text(&large).unwrap();
        assert!(matches!(text, Text::Mapped(..)));
        assert_eq!(&*text, body.as_str());

        // Not UTF-8: refused with the file and the byte, mapped or not.
        let mut bad = body.into_bytes();
        bad[10] = 0xff;
        std::fs::write(&large, &bad).unwrap();
        let err = map_text(&large).err().unwrap().to_string();
        assert!(err.contains("not valid UTF-8 (byte 10)"), "{err}");
    }

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
    fn only_our_exact_temp_names_count_as_ours() {
        for (ours, pid) in [
            (".task_stack.json.tmp.1", 1),
            ("..gitignore.tmp.22", 22),
            ("..gitkeep.tmp.3", 3),
            (".session_20251106_001355.json.tmp.4", 4),
            (".session_20251106_001355_2.json.tmp.5", 5),
            (".handoff_session_20251106_001355.md.tmp.6", 6),
            (".transcript-00ff00ff00ff00ff.json.tmp.7", 7),
            (".session_20251106_001355.checkpoints.jsonl.tmp.8.undo1", 8),
            (".task_stack.json.tmp.9.undo0", 9),
            (".stack.view.tmp.10", 10),
        ] {
            assert_eq!(our_temp_file_pid(ours), Some(pid), "{ours}");
        }
        for theirs in [
            ".notes.tmp.keep",
            ".notes.tmp.1",
            ".gitignore.tmp.22",
            ".task_stack.json.tmp.",
            ".task_stack.json.tmp.1x",
            "task_stack.json.tmp.1",
            ".handoff_notes.md.tmp.1",
            ".handoff_x.md.tmp.backup",
            ".session_x.json.tmp.1",
            ".task_stack.json.tmp.0",
            ".task_stack.json.tmp.99999999999999999999",
            ".task_stack.json.tmp.-1",
            ".task_stack.json.tmp.+1",
            ".transcript-xyz.json.tmp.1",
            ".task_stack.json.tmp.9.undo",
            ".task_stack.json.tmp.9.undox",
            ".task_stack.json.tmp.undo1",
        ] {
            assert_eq!(our_temp_file_pid(theirs), None, "{theirs}");
        }
    }
}

//! Committing the agent's work tree with git (through libgit2).
//!
//! `commit_all` is what `orchestrator wrap` calls at the end of a session: it
//! stages what `git add -A` would stage over the whole repository (minus the
//! orchestrator's own state files and oversized files) and commits it on HEAD.
//! The other functions answer the questions `wrap` asks around that commit:
//! where HEAD was when the session started, what changed since, and whether a
//! previous (killed) `wrap` already made the commit.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use git2::{
    Commit, DiffOptions, ErrorCode, Index, IndexEntry, IndexTime, Oid, Repository, RepositoryState,
    Signature, Tree,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// Identity used when the repository has no `user.name` / `user.email`.
pub const FALLBACK_NAME: &str = "orchestrator";
/// E-mail of the fallback identity.
pub const FALLBACK_EMAIL: &str = "orchestrator@localhost";

/// How far `find_commit_with_trailer` walks back at most.
pub const MAX_TRAILER_WALK: usize = 1000;

/// Back-off between attempts when git's index or a ref is locked by another
/// process: 50 ms doubling, 3.15 s in total.
const LOCK_RETRY_DELAYS_MS: [u64; 6] = [50, 100, 200, 400, 800, 1600];

/// How many files may fail to be added (unreadable, vanished, replaced by a
/// directory...) before staging gives up.
const MAX_PROBLEM_FILES: usize = 100;

/// A git lock file left by a killed process of ours is removed only once it is at least this
/// old: a younger one may still be in the hands of a git command that has just started.
const STALE_LOCK_AGE: Duration = Duration::from_secs(30);

/// A lock counts as ours only when it appeared within this window after our ownership record
/// was written (file times have coarse granularity, hence the slack before it). Past the window
/// it is more likely the lock of a git command the user started later.
const OWNER_SLACK: Duration = Duration::from_secs(2);
const OWNER_WINDOW: Duration = Duration::from_secs(600);

/// At most this many unmerged paths are listed in a skipped commit's report.
const MAX_LISTED_CONFLICTS: usize = 100;

/// A file that was left out of the commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkippedFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    /// Size on disk (0 when it could not be determined).
    pub bytes: u64,
    /// Why, e.g. "larger than 50 MB".
    pub reason: String,
}

/// Size of a change between two trees.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DiffStats {
    pub files_changed: usize,
    pub insertions: usize,
    pub deletions: usize,
}

/// What `commit_all` did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommitOutcome {
    Committed {
        /// Full hex id of the new commit.
        oid: String,
        /// Short branch name (`main`), None when HEAD is detached.
        branch: Option<String>,
        /// Changes of this commit against its parent (or the empty tree).
        stats: DiffStats,
        skipped: Vec<SkippedFile>,
        detached: bool,
        /// True when the repository had no identity and the commit was made
        /// as `orchestrator <orchestrator@localhost>`.
        fallback_identity: bool,
        /// Lock files a killed process of ours had left, removed before committing.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        recovered_locks: Vec<String>,
    },
    NothingToCommit {
        skipped: Vec<SkippedFile>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        recovered_locks: Vec<String>,
    },
    /// The repository is in the middle of an operation (a merge, a rebase...) or its index
    /// has unmerged paths: a commit now would conclude or break what the user is doing.
    Skipped {
        /// The operation in progress: `merge`, `rebase`, `cherry_pick`, `revert`,
        /// `apply_mailbox`, or `none` for unmerged paths outside any operation.
        state: String,
        /// Unmerged paths (at most [`MAX_LISTED_CONFLICTS`]).
        conflicts: Vec<String>,
        /// What the user has to do, in one sentence.
        reason: String,
    },
    NotARepository,
}

/// Input of [`commit_all`].
#[derive(Debug, Clone, Copy)]
pub struct CommitRequest<'a> {
    /// The workspace directory; the repository is discovered from it (it may
    /// be a subdirectory of the repository).
    pub workdir: &'a Path,
    /// Full commit message (trailers included). It is normalised like
    /// `git commit` does (trailing whitespace, final newline); `#` lines are kept.
    pub message: &'a str,
    /// Files or directories, relative to `workdir` (they need not exist), that
    /// are never committed. A directory excludes everything under it.
    pub exclude: &'a [PathBuf],
    /// Patterns relative to `workdir` with `*` (and `?`) wildcards. Like in
    /// `.gitignore`: a pattern without `/` matches a file or directory name at
    /// any depth under `workdir`; one with `/` matches the whole path relative
    /// to `workdir`, and its `*` does not cross `/`.
    pub exclude_globs: &'a [String],
    /// Files larger than this are not added (see `skipped`).
    pub max_file_bytes: u64,
    /// Where a commit records, while it runs, which git lock files it may create, so that
    /// locks left by a killed commit can be told from other processes' and removed.
    /// None: no record, and no lock is ever removed.
    pub owner_dir: Option<&'a Path>,
    /// When set, only these files or directories (relative to `workdir`) are committed; every
    /// other change stays as it is, unreported. A wrap in a work tree other live sessions
    /// share commits only what is its own (its bookkeeping).
    pub only: Option<&'a [PathBuf]>,
}

/// Stage everything `git add -A` would take over the whole repository
/// (honours `.gitignore`, picks up deletions and new files), minus `exclude`,
/// `exclude_globs` and files over `max_file_bytes`, write the index back and
/// commit on HEAD (the branch it points at, or the detached HEAD itself).
pub fn commit_all(req: &CommitRequest) -> Result<CommitOutcome> {
    commit_all_with_hook(req, &mut |_| {})
}

/// Whether `workdir` is inside a git repository (found as git finds it, walking up).
pub fn in_repository(workdir: &Path) -> Result<bool> {
    Ok(discover(workdir)?.is_some())
}

/// HEAD's commit id (None when `workdir` is not in a repository or HEAD is unborn).
pub fn head_oid(workdir: &Path) -> Result<Option<String>> {
    let Some(repo) = discover(workdir)? else {
        return Ok(None);
    };
    Ok(head_commit(&repo)?.map(|c| c.id().to_string()))
}

/// The work tree root of the repository `workdir` is in, and whether git tracks `path` (a
/// path inside that work tree). Not in a repository: `Ok(None)`.
pub fn tracked_in_repo(workdir: &Path, path: &Path) -> Result<Option<(PathBuf, bool)>> {
    let Some(repo) = discover(workdir)? else {
        return Ok(None);
    };
    let Some(root) = repo.workdir() else {
        return Ok(None);
    };
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let tracked = match path.strip_prefix(&root) {
        Ok(rel) => repo
            .index()
            .context("reading the git index")?
            .get_path(rel, 0)
            .is_some(),
        Err(_) => false,
    };
    Ok(Some((root, tracked)))
}

/// Stats of what changed between `since` (a commit id, or None for the empty
/// tree) and the current HEAD commit (the empty tree when HEAD is unborn).
/// Not a repository: `Ok(None)`.
pub fn diff_stats_since(workdir: &Path, since: Option<&str>) -> Result<Option<DiffStats>> {
    let Some(repo) = discover(workdir)? else {
        return Ok(None);
    };
    let new_tree = head_commit(&repo)?.map(|c| c.tree()).transpose()?;
    let old_tree = since
        .map(|s| resolve_commit(&repo, s).and_then(|c| Ok(c.tree()?)))
        .transpose()?;
    Ok(Some(tree_stats(
        &repo,
        old_tree.as_ref(),
        new_tree.as_ref(),
    )?))
}

/// What [`commit_all`] would commit, found without touching the index file or HEAD.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitPlan {
    /// Between `since` and the tree the commit would have.
    pub stats: DiffStats,
    pub skipped: Vec<SkippedFile>,
    /// Set when `commit_all` would not commit at all (see [`CommitOutcome::Skipped`]).
    pub blocked: Option<Blocker>,
    /// Each file of `stats`, with its own line counts, paths relative to the repository root.
    pub files: Vec<FileChange>,
    /// The workspace directory relative to the repository root, `/`-terminated (empty at the root).
    pub workdir_prefix: String,
}

/// One file changed between two trees (a binary file counts no lines).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileChange {
    pub path: String,
    pub insertions: usize,
    pub deletions: usize,
}

/// Stages into an in-memory copy of the index, as `commit_all` would, and reports the files it
/// would leave out and the stats from `since` (a commit id, or None for the empty tree) to the
/// resulting tree. The handoff is written before the commit, so it needs this preview.
/// Not a repository: `Ok(None)`.
pub fn plan_commit(req: &CommitRequest, since: Option<&str>) -> Result<Option<CommitPlan>> {
    let Some(repo) = discover(req.workdir)? else {
        return Ok(None);
    };
    let (root, excluder) = resolve_paths(&repo, req)?;
    let workdir_prefix = fs::canonicalize(req.workdir)
        .ok()
        .and_then(|w| w.strip_prefix(&root).ok().map(Path::to_path_buf))
        .map(|rel| {
            let rel = rel.to_string_lossy().into_owned();
            if rel.is_empty() {
                rel
            } else {
                format!("{rel}/")
            }
        })
        .unwrap_or_default();
    let mut index = repo.index().context("opening the git index")?;
    let old_tree = since
        .map(|s| resolve_commit(&repo, s).and_then(|c| Ok(c.tree()?)))
        .transpose()?;
    if let Some(blocker) = Blocker::find(&repo, &index)? {
        // Nothing would be staged: the stats are those of what is already committed.
        let head_tree = head_commit(&repo)?.map(|c| c.tree()).transpose()?;
        let stats = tree_stats(&repo, old_tree.as_ref(), head_tree.as_ref())?;
        let files = tree_files(&repo, old_tree.as_ref(), head_tree.as_ref())?;
        return Ok(Some(CommitPlan {
            stats,
            skipped: Vec::new(),
            blocked: Some(blocker),
            files,
            workdir_prefix,
        }));
    }
    let mut stager = Stager::new(&root, &excluder, req.max_file_bytes);
    let head = HeadState::read(&repo)?;
    let head_tree = head.parent.as_ref().map(|c| c.tree()).transpose()?;
    stager.stage(&repo, &mut index, &mut |_| {})?;
    // Tree objects land in the object database (the commit reuses them); the index file is
    // never written, so nothing a user sees changes.
    let mut tree_oid = index.write_tree().context("writing the tree")?;
    let reset = reset_excluded_changes(&repo, &mut index, head_tree.as_ref(), tree_oid, &excluder)?;
    if reset.changed {
        tree_oid = index.write_tree().context("writing the tree")?;
    }
    let tree = repo.find_tree(tree_oid)?;
    let stats = tree_stats(&repo, old_tree.as_ref(), Some(&tree))?;
    let files = tree_files(&repo, old_tree.as_ref(), Some(&tree))?;
    Ok(Some(CommitPlan {
        stats,
        skipped: stager.into_skipped(reset.tracked),
        blocked: None,
        files,
        workdir_prefix,
    }))
}

/// Walk first-parent history from HEAD back to (not including) `since` and
/// return the first commit whose subject starts with `subject_prefix` and whose
/// message has the line `<key>: <value>` (key compared case-insensitively like
/// git trailers, value exactly; surrounding blanks ignored). The subject tells a
/// wrap's commit from a checkpoint's, which carry the same trailers. At most
/// [`MAX_TRAILER_WALK`] commits are looked at. Not a repository or unborn HEAD:
/// `Ok(None)`.
pub fn find_commit_with_trailer(
    workdir: &Path,
    since: Option<&str>,
    subject_prefix: &str,
    key: &str,
    value: &str,
) -> Result<Option<String>> {
    let mut found = None;
    walk_since(workdir, since, |commit| {
        let message = String::from_utf8_lossy(commit.message_bytes());
        if message.starts_with(subject_prefix) && has_trailer(&message, key, value) {
            found = Some(commit.id().to_string());
            return false;
        }
        true
    })?;
    Ok(found)
}

/// The messages of the commits from HEAD back to `since` (excluded), newest first, following
/// first parents; empty outside a repository or when HEAD is `since`.
pub fn messages_since(workdir: &Path, since: Option<&str>) -> Result<Vec<String>> {
    let mut messages = Vec::new();
    walk_since(workdir, since, |commit| {
        messages.push(String::from_utf8_lossy(commit.message_bytes()).into_owned());
        true
    })?;
    Ok(messages)
}

/// The commit of each session's wrap found in first-parent history from HEAD (at most
/// [`MAX_TRAILER_WALK`] commits): session id to full commit id, by the `Orchestrator-Session`
/// trailer of commits whose subject starts with `subject_prefix`. The archive cannot hold its
/// own wrap commit's id (it is committed in it), so `log` looks it up here.
pub fn wrap_commits(
    workdir: &Path,
    subject_prefix: &str,
) -> Result<std::collections::HashMap<String, String>> {
    let mut found = std::collections::HashMap::new();
    walk_since(workdir, None, |commit| {
        let message = String::from_utf8_lossy(commit.message_bytes());
        if message.starts_with(subject_prefix) {
            let session = message.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case("Orchestrator-Session")
                    .then(|| value.trim().to_string())
            });
            if let Some(session) = session {
                found
                    .entry(session)
                    .or_insert_with(|| commit.id().to_string());
            }
        }
        true
    })?;
    Ok(found)
}

/// Visits first-parent history from HEAD back to (not including) `since`, at most
/// [`MAX_TRAILER_WALK`] commits, until `visit` returns false. Not a repository or an unborn
/// HEAD: nothing to visit.
fn walk_since(
    workdir: &Path,
    since: Option<&str>,
    mut visit: impl FnMut(&git2::Commit<'_>) -> bool,
) -> Result<()> {
    let Some(repo) = discover(workdir)? else {
        return Ok(());
    };
    let Some(head) = head_commit(&repo)? else {
        return Ok(());
    };
    let stop = since
        .map(|s| resolve_commit(&repo, s).map(|c| c.id()))
        .transpose()?;
    let mut current = Some(head);
    for _ in 0..MAX_TRAILER_WALK {
        let Some(commit) = current else { break };
        if Some(commit.id()) == stop || !visit(&commit) {
            break;
        }
        // A missing parent (shallow clone) ends the walk.
        current = commit.parent(0).ok();
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// commit_all

/// `commit_all`, with a hook called for each path right before libgit2 adds
/// or removes it (tests use it to change files at the worst moment).
fn commit_all_with_hook(req: &CommitRequest, hook: &mut dyn FnMut(&Path)) -> Result<CommitOutcome> {
    let message = git2::message_prettify(req.message, None).context("invalid commit message")?;
    if message.trim().is_empty() {
        bail!("empty commit message");
    }
    let Some(repo) = discover(req.workdir)? else {
        return Ok(CommitOutcome::NotARepository);
    };
    let (root, excluder) = resolve_paths(&repo, req)?;

    let mut index = repo.index().context("opening the git index")?;
    if let Some(blocker) = Blocker::find(&repo, &index)? {
        warn!("not committing: {}", blocker.reason);
        return Ok(CommitOutcome::Skipped {
            state: blocker.state.to_string(),
            conflicts: blocker.conflicts,
            reason: blocker.reason,
        });
    }
    let recovered_locks = match req.owner_dir {
        Some(dir) => remove_stale_locks(dir)?,
        None => Vec::new(),
    };
    let _ownership = match req.owner_dir {
        Some(dir) => Some(Ownership::record(dir, &lock_paths(&repo))?),
        None => None,
    };
    super::crash_point("git-owner");

    let mut stager = Stager::new(&root, &excluder, req.max_file_bytes);
    let mut delays = LOCK_RETRY_DELAYS_MS.iter();
    let (head, head_tree, tree_oid, reset) = loop {
        // Read HEAD in the loop: whoever held the index lock may have committed.
        let head = HeadState::read(&repo)?;
        let head_tree = head.parent.as_ref().map(|c| c.tree()).transpose()?;
        stager.stage(&repo, &mut index, hook)?;
        // write_tree before writing the index: it refreshes the index's tree
        // cache, which the write then persists (faster next write_tree / commit).
        let mut tree_oid = index.write_tree().context("writing the tree")?;
        let reset =
            reset_excluded_changes(&repo, &mut index, head_tree.as_ref(), tree_oid, &excluder)?;
        if reset.changed {
            tree_oid = index.write_tree().context("writing the tree")?;
        }
        match index.write() {
            Ok(()) => break (head, head_tree, tree_oid, reset),
            Err(e) if e.code() == ErrorCode::Locked => match delays.next() {
                Some(ms) => {
                    debug!("git index is locked, retrying in {ms} ms");
                    std::thread::sleep(Duration::from_millis(*ms));
                    // The lock holder may have written a new index: start over from it.
                    index.read(true).context("re-reading the git index")?;
                }
                None => {
                    let lock = repo.path().join("index.lock");
                    bail!("git index is locked: {}", lock_advice(&lock))
                }
            },
            Err(e) => return Err(e).context("writing the git index"),
        }
    };
    let skipped = stager.into_skipped(reset.tracked);
    for s in &skipped {
        warn!(path = %s.path, bytes = s.bytes, reason = %s.reason, "not committed");
    }

    let unchanged = match &head_tree {
        Some(tree) => tree.id() == tree_oid,
        None => index.is_empty(),
    };
    if unchanged {
        return Ok(CommitOutcome::NothingToCommit {
            skipped,
            recovered_locks,
        });
    }

    let (signature, fallback_identity) = match repo.signature() {
        Ok(sig) => (sig, false),
        Err(e) => {
            warn!(
                "no git identity ({}), committing as {FALLBACK_NAME}",
                e.message()
            );
            (Signature::now(FALLBACK_NAME, FALLBACK_EMAIL)?, true)
        }
    };
    let tree = repo.find_tree(tree_oid)?;
    let parents: Vec<&Commit> = head.parent.iter().collect();
    // The commit object is created first and HEAD moved separately, so that a
    // locked ref can be retried without creating a new commit each time.
    let oid = repo
        .commit(None, &signature, &signature, &message, &tree, &parents)
        .context("creating the commit")?;
    head.advance(&repo, oid, &message)?;
    let stats = tree_stats(&repo, head_tree.as_ref(), Some(&tree))?;
    Ok(CommitOutcome::Committed {
        oid: oid.to_string(),
        branch: head.branch_name(),
        stats,
        skipped,
        detached: head.branch.is_none(),
        fallback_identity,
        recovered_locks,
    })
}

/// What keeps a commit from being made now.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocker {
    /// See [`CommitOutcome::Skipped`].
    pub state: &'static str,
    pub conflicts: Vec<String>,
    pub reason: String,
}

impl Blocker {
    /// Unmerged index entries, or an operation git would conclude with its own commit (a merge,
    /// rebase, cherry-pick, revert or `am`). Committing then would record conflict markers, drop
    /// MERGE_HEAD's parent or slip our commit into the user's rebase. A bisect does not matter.
    pub(crate) fn find(repo: &Repository, index: &Index) -> Result<Option<Blocker>> {
        let conflicts = if index.has_conflicts() {
            let mut paths = BTreeSet::new();
            for conflict in index.conflicts().context("reading the index's conflicts")? {
                let conflict = conflict.context("reading the index's conflicts")?;
                if let Some(entry) = conflict.our.or(conflict.their).or(conflict.ancestor) {
                    paths.insert(String::from_utf8_lossy(&entry.path).into_owned());
                }
            }
            paths.into_iter().take(MAX_LISTED_CONFLICTS).collect()
        } else {
            Vec::new()
        };
        let (state, operation, conclude) = match repo.state() {
            RepositoryState::Clean | RepositoryState::Bisect => ("none", "", ""),
            RepositoryState::Merge => (
                "merge",
                "a merge",
                "finish it with `git commit` or abort it with `git merge --abort`",
            ),
            RepositoryState::Rebase
            | RepositoryState::RebaseInteractive
            | RepositoryState::RebaseMerge => (
                "rebase",
                "a rebase",
                "finish it with `git rebase --continue` or abort it with `git rebase --abort`",
            ),
            RepositoryState::CherryPick | RepositoryState::CherryPickSequence => (
                "cherry_pick",
                "a cherry-pick",
                "finish it with `git cherry-pick --continue` or abort it with `git cherry-pick --abort`",
            ),
            RepositoryState::Revert | RepositoryState::RevertSequence => (
                "revert",
                "a revert",
                "finish it with `git revert --continue` or abort it with `git revert --abort`",
            ),
            RepositoryState::ApplyMailbox | RepositoryState::ApplyMailboxOrRebase => (
                "apply_mailbox",
                "a `git am`",
                "finish it with `git am --continue` or abort it with `git am --abort`",
            ),
        };
        if state == "none" && conflicts.is_empty() {
            return Ok(None);
        }
        let unmerged = if conflicts.is_empty() {
            String::new()
        } else {
            format!(" with unmerged paths ({})", conflicts.join(", "))
        };
        let reason = if state == "none" {
            format!(
                "the git index has unmerged paths ({}): committing would record the conflict \
                 markers; resolve them and `git add` them, then commit",
                conflicts.join(", ")
            )
        } else {
            format!(
                "{operation} is in progress{unmerged}: a commit now would conclude or break it; \
                 {conclude}{}",
                if conflicts.is_empty() {
                    ""
                } else {
                    " after resolving the conflicts"
                }
            )
        };
        Ok(Some(Blocker {
            state,
            conflicts,
            reason: format!("{reason}. The changes stay in the work tree, uncommitted"),
        }))
    }
}

/// The lock files libgit2 may create while we commit: the index's, HEAD's, the branch's and
/// packed-refs'. A kill -9 in the middle leaves them behind.
fn lock_paths(repo: &Repository) -> Vec<PathBuf> {
    let (git_dir, common) = (repo.path(), repo.commondir());
    let mut locks = vec![git_dir.join("index.lock"), git_dir.join("HEAD.lock")];
    if let Ok(head) = repo.find_reference("HEAD")
        && let Some(target) = head.symbolic_target()
    {
        locks.push(common.join(format!("{target}.lock")));
    }
    locks.push(common.join("packed-refs.lock"));
    locks
}

/// The sentence that names a lock we could not take and says what to do about it.
pub(crate) fn lock_advice(lock: &Path) -> String {
    format!(
        "{} exists: another git process is running, or one was killed and left it behind; if no \
         git process is running, delete {} and retry",
        lock.display(),
        lock.display()
    )
}

/// What a committing process writes before touching git, and removes when done: if it is
/// killed, the record proves whose lock files those are.
#[derive(Debug, Serialize, Deserialize)]
struct OwnerRecord {
    pid: u32,
    /// The process's start time (clock ticks since boot), so a reused pid is not taken for it.
    start_time: Option<u64>,
    host: String,
    locks: Vec<PathBuf>,
}

/// The record of this process, removed when dropped (a kill leaves it behind on purpose).
struct Ownership {
    path: PathBuf,
}

impl Ownership {
    fn record(dir: &Path, locks: &[PathBuf]) -> Result<Ownership> {
        let pid = std::process::id();
        let record = OwnerRecord {
            pid,
            start_time: process_start_time(pid),
            host: crate::store::host_name(),
            locks: locks.to_vec(),
        };
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{pid}.json"));
        let text = serde_json::to_string(&record).context("serializing the git owner record")?;
        crate::store::file::write_atomic(&path, text.as_bytes())?;
        Ok(Ownership { path })
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.path) {
            warn!("cannot remove {}: {err}", self.path.display());
        }
    }
}

/// Removes the git lock files left by our own killed commits: those listed in the record of a
/// process that is provably gone (same host, pid not running or reused), created while that
/// process was committing, and older than [`STALE_LOCK_AGE`]. A record whose locks are all
/// gone is deleted; one with a lock it cannot prove stale is kept for a later try.
fn remove_stale_locks(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let record: OwnerRecord = match fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(serde_json::from_slice(&bytes)?))
        {
            Ok(record) => record,
            Err(err) => {
                warn!("ignoring the git owner record {}: {err:#}", path.display());
                continue;
            }
        };
        if record.pid == std::process::id() || !owner_is_gone(&record) {
            continue;
        }
        let Ok(recorded) = fs::metadata(&path).and_then(|m| m.modified()) else {
            continue;
        };
        let mut kept = false;
        for lock in &record.locks {
            let Ok(meta) = fs::symlink_metadata(lock) else {
                continue;
            };
            let created = meta.modified().unwrap_or(now);
            let ours = created + OWNER_SLACK >= recorded && created <= recorded + OWNER_WINDOW;
            let old = now.duration_since(created).unwrap_or_default() >= STALE_LOCK_AGE;
            if !(ours && old && meta.is_file()) {
                debug!("git lock {} is not provably stale; kept", lock.display());
                kept = true;
                continue;
            }
            match fs::remove_file(lock) {
                Ok(()) => {
                    warn!(
                        "removed the stale git lock {}: orchestrator process {} took it and was \
                         killed before releasing it",
                        lock.display(),
                        record.pid
                    );
                    removed.push(lock.to_string_lossy().into_owned());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot remove the stale lock {}", lock.display())
                    });
                }
            }
        }
        if !kept {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(removed)
}

/// True only when the recorded process cannot be running: on this host, its pid is not in use,
/// is a zombie, or belongs to a process started at another time. Anything unknowable (another
/// host, no /proc) counts as alive.
fn owner_is_gone(record: &OwnerRecord) -> bool {
    if record.host != crate::store::host_name() || !Path::new("/proc/self/stat").exists() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{}/stat", record.pid)) {
        Ok(stat) => {
            let Some((state, start)) = parse_stat(&stat) else {
                return false;
            };
            matches!(state, 'Z' | 'X')
                || record.start_time.is_some_and(|recorded| recorded != start)
        }
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// The state and start time of `/proc/<pid>/stat`; the command name in parentheses may hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of the whole line; the state is field 3.
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

/// Where HEAD is and what it points at.
struct HeadState<'r> {
    /// Full name of the branch HEAD points at (None: detached).
    branch: Option<String>,
    /// Current commit (None: unborn branch).
    parent: Option<Commit<'r>>,
}

impl<'r> HeadState<'r> {
    fn read(repo: &'r Repository) -> Result<Self> {
        let head = repo.find_reference("HEAD").context("reading HEAD")?;
        match head.symbolic_target() {
            Some(target) => {
                let parent = match repo.find_reference(target) {
                    Ok(r) => Some(r.peel_to_commit().context("resolving HEAD")?),
                    Err(e) if e.code() == ErrorCode::NotFound => None,
                    Err(e) => return Err(e).context("resolving HEAD"),
                };
                Ok(Self {
                    branch: Some(target.to_string()),
                    parent,
                })
            }
            None => Ok(Self {
                branch: None,
                parent: Some(head.peel_to_commit().context("resolving HEAD")?),
            }),
        }
    }

    fn branch_name(&self) -> Option<String> {
        self.branch.as_ref().map(|b| {
            b.strip_prefix("refs/heads/")
                .unwrap_or(b.as_str())
                .to_string()
        })
    }

    /// Move the branch (or detached HEAD) from the parent to `oid`, refusing
    /// if someone else moved it meanwhile; retried while the ref is locked.
    fn advance(&self, repo: &Repository, oid: Oid, message: &str) -> Result<()> {
        let refname = self.branch.as_deref().unwrap_or("HEAD");
        let summary = message.lines().next().unwrap_or_default();
        let log_message = match self.parent {
            Some(_) => format!("commit: {summary}"),
            None => format!("commit (initial): {summary}"),
        };
        let mut delays = LOCK_RETRY_DELAYS_MS.iter();
        loop {
            let result = match &self.parent {
                Some(parent) => {
                    repo.reference_matching(refname, oid, true, parent.id(), &log_message)
                }
                None => repo.reference(refname, oid, false, &log_message),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == ErrorCode::Locked => match delays.next() {
                    Some(ms) => {
                        debug!("git ref {refname} is locked, retrying in {ms} ms");
                        std::thread::sleep(Duration::from_millis(*ms));
                    }
                    None => {
                        let dir = if refname == "HEAD" {
                            repo.path()
                        } else {
                            repo.commondir()
                        };
                        let lock = dir.join(format!("{refname}.lock"));
                        bail!("git ref {refname} is locked: {}", lock_advice(&lock))
                    }
                },
                Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists) => bail!(
                    "{refname} was moved by another process while committing; commit {oid} \
                     was created but is not on {refname}"
                ),
                Err(e) => return Err(e).with_context(|| format!("updating {refname}")),
            }
        }
    }
}

/// The repository's work tree root and the exclusions of `req`, resolved against it.
fn resolve_paths(repo: &Repository, req: &CommitRequest) -> Result<(PathBuf, Excluder)> {
    let root = repo
        .workdir()
        .ok_or_else(|| anyhow!("{} is a bare git repository", repo.path().display()))?;
    let root = fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
    let workdir = fs::canonicalize(req.workdir)
        .with_context(|| format!("resolving {}", req.workdir.display()))?;
    let mut excluder = Excluder::new(&root, &workdir, req.exclude, req.exclude_globs);
    excluder.only = req.only.map(|only| {
        only.iter()
            .filter_map(|p| repo_relative(&root, &normalize(&workdir.join(p))))
            .collect()
    });
    Ok((root, excluder))
}

/// Stages the work tree path by path, as `git add -A` would.
struct Stager<'a> {
    root: &'a Path,
    excluder: &'a Excluder,
    max_file_bytes: u64,
    /// Files over the size limit, nested repositories, tracked excluded files with changes
    /// (rebuilt on every pass).
    skipped_now: Vec<SkippedFile>,
    /// Files that could not be added (kept across passes).
    problems: Vec<SkippedFile>,
    problem_paths: HashSet<String>,
}

/// Why one path could not be staged.
enum AddError {
    /// The file is gone: staging treats it as deleted.
    Gone,
    /// The file is there but cannot be read or added: left out and reported.
    Problem { bytes: u64, reason: String },
    /// Anything else (the object database cannot be written...): the commit fails.
    Fatal(anyhow::Error),
}

impl<'a> Stager<'a> {
    fn new(root: &'a Path, excluder: &'a Excluder, max_file_bytes: u64) -> Self {
        Stager {
            root,
            excluder,
            max_file_bytes,
            skipped_now: Vec::new(),
            problems: Vec::new(),
            problem_paths: HashSet::new(),
        }
    }

    /// `git add -A` over the whole repository.
    ///
    /// The index is diffed against the work tree (its stat cache spares reading unchanged
    /// files), untracked files not ignored by `.gitignore` included; each changed path is then
    /// added, or removed when it is gone from disk. Not `Index::add_all`: it loads each file
    /// once to diff it and again to add it, and fails ("file changed before we could read it",
    /// named after the previous path) when a file grows in between, as a log someone appends
    /// to does. Here a file is read once and the blob and index entry are made from those
    /// bytes, as git does.
    fn stage(
        &mut self,
        repo: &Repository,
        index: &mut Index,
        hook: &mut dyn FnMut(&Path),
    ) -> Result<()> {
        self.skipped_now.clear();
        let trust_mode = repo
            .config()
            .and_then(|c| c.get_bool("core.filemode"))
            .unwrap_or(true);
        let changed: Vec<(PathBuf, bool)> = {
            let mut opts = DiffOptions::new();
            opts.include_untracked(true)
                .recurse_untracked_dirs(true)
                .include_typechange(true);
            let diff = repo
                .diff_index_to_workdir(Some(index), Some(&mut opts))
                .context("comparing the git index with the work tree")?;
            diff.deltas()
                .filter_map(|d| {
                    let path = d.new_file().path().or(d.old_file().path())?;
                    Some((path.to_path_buf(), d.new_file().exists()))
                })
                .collect()
        };
        for (path, exists) in changed {
            if !self.decide(&path, index, hook) {
                continue;
            }
            let key = path_key(&path);
            let result = if exists {
                self.add(repo, index, &path, trust_mode)
            } else {
                Err(AddError::Gone)
            };
            match result {
                Ok(()) => {}
                Err(AddError::Gone) => {
                    if index.get_path(&path, 0).is_some() {
                        index
                            .remove_path(&path)
                            .with_context(|| format!("staging the deletion of {key}"))?;
                    }
                }
                Err(AddError::Problem { bytes, reason }) => {
                    warn!("cannot add {key}: {reason}");
                    if self.problems.len() >= MAX_PROBLEM_FILES {
                        bail!("staging {key}: {reason} (and {MAX_PROBLEM_FILES} other files)");
                    }
                    self.problem_paths.insert(key.clone());
                    self.problems.push(SkippedFile {
                        path: key,
                        bytes,
                        reason,
                    });
                }
                Err(AddError::Fatal(err)) => return Err(err.context(format!("staging {key}"))),
            }
        }
        Ok(())
    }

    /// Whether `path` is to be staged; the reasons it is not are recorded.
    fn decide(&mut self, path: &Path, index: &Index, hook: &mut dyn FnMut(&Path)) -> bool {
        let key = path_key(path);
        if self.problem_paths.contains(&key) || self.excluder.outside_only(&key) {
            return false;
        }
        if self.excluder.is_excluded(&key) {
            // Tracked all the same (someone committed it): its changes stay out, visibly.
            if index.get_path(Path::new(&key), 0).is_some() {
                self.skipped_now.push(tracked_excluded(key, self.root));
            }
            return false;
        }
        // libgit2 reports an untracked directory holding its own repository as
        // "dir/". `git add -A` would record it as a gitlink to a commit nobody else
        // can fetch, which is rarely wanted: leave it out, visibly.
        if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
            self.skipped_now.push(SkippedFile {
                path: key,
                bytes: 0,
                reason: "nested git repository".into(),
            });
            return false;
        }
        // lstat: a symlink's size is that of its target path, not of the target.
        if let Ok(meta) = fs::symlink_metadata(self.root.join(path))
            && meta.is_file()
            && meta.len() > self.max_file_bytes
        {
            self.skipped_now.push(SkippedFile {
                path: key,
                bytes: meta.len(),
                reason: format!("larger than {}", human_size(self.max_file_bytes)),
            });
            return false;
        }
        hook(path);
        true
    }

    /// Adds one existing path: a regular file from one bounded read of its bytes, anything
    /// else (a symlink, a submodule) through libgit2.
    fn add(
        &self,
        repo: &Repository,
        index: &mut Index,
        path: &Path,
        trust_mode: bool,
    ) -> std::result::Result<(), AddError> {
        let full = self.root.join(path);
        let unreadable = |e: std::io::Error, bytes: u64| match e.kind() {
            std::io::ErrorKind::NotFound => AddError::Gone,
            _ => AddError::Problem {
                bytes,
                reason: format!("could not be read: {e}"),
            },
        };
        // No symlink is followed and no FIFO swapped in since the scan can block the open.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&full);
        let file = match file {
            Ok(file) => file,
            // ELOOP: a symlink, added as one below.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return self.add_other(index, path),
            Err(e) => return Err(unreadable(e, 0)),
        };
        let meta = file.metadata().map_err(|e| unreadable(e, 0))?;
        if !meta.is_file() {
            drop(file);
            return self.add_other(index, path);
        }
        // The size of the open file bounds the read: what is appended meanwhile is not taken
        // (git takes the same prefix), and it is at most max_file_bytes, checked above.
        let size = meta.len().min(self.max_file_bytes);
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(e, meta.len()))?;
        // The path selects the clean filters (.gitattributes, core.autocrlf) as for any add.
        let fatal = |e: git2::Error| AddError::Fatal(e.into());
        let mut writer = repo.blob_writer(Some(path)).map_err(fatal)?;
        writer
            .write_all(&bytes)
            .map_err(|e| AddError::Fatal(anyhow!("writing the blob: {e}")))?;
        let id = writer.commit().map_err(fatal)?;
        let executable = meta.mode() & 0o111 != 0;
        let mode = match index.get_path(path, 0) {
            // core.filemode=false: the executable bit on disk means nothing; keep the index's.
            Some(entry) if !trust_mode && entry.mode & 0o170000 == 0o100000 => entry.mode,
            _ if trust_mode && executable => 0o100755,
            _ => 0o100644,
        };
        // The stat is that of the bytes read (taken before reading, with their length): when
        // the file has grown since, the index sees it as changed, as it is.
        let entry = IndexEntry {
            ctime: IndexTime::new(meta.ctime() as i32, meta.ctime_nsec() as u32),
            mtime: IndexTime::new(meta.mtime() as i32, meta.mtime_nsec() as u32),
            dev: meta.dev() as u32,
            ino: meta.ino() as u32,
            mode,
            uid: meta.uid(),
            gid: meta.gid(),
            file_size: bytes.len() as u32,
            id,
            flags: 0,
            flags_extended: 0,
            path: path_key(path).into_bytes(),
        };
        index.add(&entry).map_err(fatal)
    }

    fn add_other(&self, index: &mut Index, path: &Path) -> std::result::Result<(), AddError> {
        let err = match index.add_path(path) {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        match probe(&self.root.join(path), &err) {
            Probe::Gone => Err(AddError::Gone),
            Probe::Problem { bytes, reason } => Err(AddError::Problem { bytes, reason }),
            Probe::Fine => Err(AddError::Fatal(err.into())),
        }
    }

    /// Everything left out, each path once.
    fn into_skipped(self, tracked_reset: Vec<String>) -> Vec<SkippedFile> {
        let mut skipped = self.skipped_now;
        skipped.extend(self.problems);
        for path in tracked_reset {
            if !skipped.iter().any(|s| s.path == path) {
                skipped.push(tracked_excluded(path, self.root));
            }
        }
        skipped
    }
}

enum Probe {
    /// The file is gone: rescanning will treat it as deleted.
    Gone,
    /// The file is there but cannot be added.
    Problem { bytes: u64, reason: String },
    /// The file looks fine: the error is something else.
    Fine,
}

fn probe(full: &Path, err: &git2::Error) -> Probe {
    let meta = match fs::symlink_metadata(full) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Gone,
        Err(e) => {
            return Probe::Problem {
                bytes: 0,
                reason: format!("could not be read: {e}"),
            };
        }
    };
    let read = if meta.file_type().is_symlink() {
        fs::read_link(full).map(drop)
    } else if meta.is_dir() {
        // A file turned into a directory, or a nested repository git cannot
        // add (e.g. without a commit): git's message says which.
        return Probe::Problem {
            bytes: 0,
            reason: format!("could not be added: {}", err.message()),
        };
    } else {
        fs::File::open(full).and_then(|mut f| f.read(&mut [0u8; 1]).map(drop))
    };
    match read {
        Ok(()) => Probe::Fine,
        Err(e) => Probe::Problem {
            bytes: meta.len(),
            reason: format!("could not be read: {e}"),
        },
    }
}

/// A tracked file whose changes are never committed (the live database, orchestrator state).
fn tracked_excluded(path: String, root: &Path) -> SkippedFile {
    SkippedFile {
        bytes: fs::symlink_metadata(root.join(&path)).map_or(0, |m| m.len()),
        path,
        reason: "tracked in git, but never committed by orchestrator (live database or \
                 orchestrator state): its changes are left out"
            .into(),
    }
}

/// Excluded paths must never be committed. `add_all` already skips their
/// work-tree changes (the callback refuses them), but the index may hold
/// changes staged earlier (e.g. the agent ran `git add -A` itself). So every
/// change between HEAD's tree and the staged `tree` that touches an excluded
/// path is undone in the index: an excluded path tracked in HEAD goes back to
/// its HEAD version (its modification or deletion is not committed) and one
/// not in HEAD is unstaged. A tracked excluded file thus stays exactly as it
/// is in HEAD: the commit never carries orchestrator state, and we neither
/// rewrite history nor untrack a file someone chose to commit.
///
/// Diffing the two trees is cheap: identical subtrees are skipped by id.
fn reset_excluded_changes(
    repo: &Repository,
    index: &mut Index,
    head: Option<&Tree>,
    tree: Oid,
    ex: &Excluder,
) -> Result<Reset> {
    let mut reset = Reset::default();
    if ex.is_empty() || head.map(Tree::id) == Some(tree) {
        return Ok(reset);
    }
    let new_tree = repo.find_tree(tree)?;
    let diff = repo.diff_tree_to_tree(head, Some(&new_tree), None)?;
    for delta in diff.deltas() {
        let (old, new) = (delta.old_file(), delta.new_file());
        let Some(path) = new.path().or(old.path()) else {
            continue;
        };
        let key = path.to_string_lossy();
        let excluded = ex.is_excluded(&key);
        if !excluded && !ex.outside_only(&key) {
            continue;
        }
        reset.changed = true;
        if old.exists() {
            debug!("excluded {}: staged change reset to HEAD", path.display());
            if excluded {
                reset.tracked.push(path_key(path));
            }
            index.add(&IndexEntry {
                ctime: IndexTime::new(0, 0),
                mtime: IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: u32::from(old.mode()),
                uid: 0,
                gid: 0,
                file_size: 0,
                id: old.id(),
                flags: 0,
                flags_extended: 0,
                path: path.to_string_lossy().into_owned().into_bytes(),
            })?;
        } else {
            debug!("excluded {}: unstaged", path.display());
            index.remove_path(path)?;
        }
    }
    Ok(reset)
}

/// What [`reset_excluded_changes`] did.
#[derive(Default)]
struct Reset {
    /// The index changed: the tree must be rewritten.
    changed: bool,
    /// Excluded paths tracked in HEAD whose staged changes were undone.
    tracked: Vec<String>,
}

// ---------------------------------------------------------------------------
// Exclusions

/// Exclusions resolved to repository-relative form.
struct Excluder {
    /// Repository-relative, `/`-separated, no trailing `/`; "" is the root.
    paths: Vec<String>,
    /// `(pattern, anchored)`: anchored patterns contain `/`.
    globs: Vec<(String, bool)>,
    /// Repository-relative workdir ("" when it is the root).
    workdir_prefix: Option<String>,
    /// See [`CommitRequest::only`], repository-relative.
    only: Option<Vec<String>>,
}

impl Excluder {
    fn new(root: &Path, workdir: &Path, paths: &[PathBuf], globs: &[String]) -> Self {
        let paths = paths
            .iter()
            .filter_map(|p| {
                let rel = repo_relative(root, &normalize(&workdir.join(p)));
                if rel.is_none() {
                    debug!("exclude {} is outside the repository", p.display());
                }
                rel
            })
            .collect();
        let globs = globs
            .iter()
            .map(|g| {
                let g = g.trim_start_matches("./").trim_matches('/');
                (g.to_string(), g.contains('/'))
            })
            .filter(|(g, _)| !g.is_empty())
            .collect();
        Self {
            paths,
            globs,
            workdir_prefix: repo_relative(root, workdir),
            only: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.globs.is_empty() && self.only.is_none()
    }

    /// Left out because the commit takes only some paths and this is none of them.
    fn outside_only(&self, path: &str) -> bool {
        let Some(only) = &self.only else {
            return false;
        };
        let path = path.trim_end_matches('/');
        !only.iter().any(|prefix| {
            path == prefix
                || (path.starts_with(prefix.as_str())
                    && path.as_bytes().get(prefix.len()) == Some(&b'/'))
        })
    }

    /// `path`: repository-relative, `/`-separated.
    fn is_excluded(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        let under = |prefix: &str| {
            prefix.is_empty()
                || path == prefix
                || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
        };
        if self.paths.iter().any(|p| under(p)) {
            return true;
        }
        if self.globs.is_empty() {
            return false;
        }
        // Patterns are relative to the workdir: they apply only under it.
        let relative = match self.workdir_prefix.as_deref() {
            None => return false,
            Some("") => path,
            Some(prefix) if under(prefix) && path != prefix => &path[prefix.len() + 1..],
            Some(_) => return false,
        };
        self.globs.iter().any(|(pattern, anchored)| {
            if *anchored {
                let (p, r): (Vec<_>, Vec<_>) =
                    (pattern.split('/').collect(), relative.split('/').collect());
                // A directory pattern also excludes what is under it.
                p.len() <= r.len() && p.iter().zip(&r).all(|(p, r)| glob_match(p, r))
            } else {
                relative.split('/').any(|name| glob_match(pattern, name))
            }
        })
    }
}

/// `*` matches any run of characters, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Lexically resolve `.` and `..` (the path may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `root`, `/`-separated (None when outside).
fn repo_relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

/// libgit2 hands out `/`-separated repository-relative paths; untracked
/// nested repositories come with a trailing `/`.
fn path_key(path: &Path) -> String {
    path.to_string_lossy().trim_end_matches('/').to_string()
}

fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "kB"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

// ---------------------------------------------------------------------------
// Shared helpers

fn discover(workdir: &Path) -> Result<Option<Repository>> {
    if !workdir.is_dir() {
        bail!("workspace {} is not a directory", workdir.display());
    }
    match Repository::discover(workdir) {
        Ok(repo) => Ok(Some(repo)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("opening the git repository at {}", workdir.display()))
        }
    }
}

fn head_commit(repo: &Repository) -> Result<Option<Commit<'_>>> {
    match repo.head() {
        Ok(head) => Ok(Some(head.peel_to_commit().context("resolving HEAD")?)),
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e).context("reading HEAD"),
    }
}

fn resolve_commit<'r>(repo: &'r Repository, id: &str) -> Result<Commit<'r>> {
    repo.revparse_single(id)
        .and_then(|o| o.peel_to_commit())
        .with_context(|| format!("no commit {id} in the repository"))
}

fn tree_stats(repo: &Repository, old: Option<&Tree>, new: Option<&Tree>) -> Result<DiffStats> {
    let diff = repo.diff_tree_to_tree(old, new, None)?;
    let stats = diff.stats()?;
    Ok(DiffStats {
        files_changed: stats.files_changed(),
        insertions: stats.insertions(),
        deletions: stats.deletions(),
    })
}

/// The files of [`tree_stats`], each with its line counts.
fn tree_files(
    repo: &Repository,
    old: Option<&Tree>,
    new: Option<&Tree>,
) -> Result<Vec<FileChange>> {
    let diff = repo.diff_tree_to_tree(old, new, None)?;
    let mut files = Vec::with_capacity(diff.deltas().len());
    for (idx, delta) in diff.deltas().enumerate() {
        let path = delta
            .new_file()
            .path()
            .or_else(|| delta.old_file().path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (insertions, deletions) = match git2::Patch::from_diff(&diff, idx)? {
            Some(patch) => {
                let (_, insertions, deletions) = patch.line_stats()?;
                (insertions, deletions)
            }
            None => (0, 0),
        };
        files.push(FileChange {
            path,
            insertions,
            deletions,
        });
    }
    Ok(files)
}

fn has_trailer(message: &str, key: &str, value: &str) -> bool {
    message.lines().any(|line| {
        line.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case(key.trim()) && v.trim() == value.trim()
        })
    })
}

// ---------------------------------------------------------------------------
// What the next session's brief says about the repository

/// The work tree at a glance: for the brief, so kept to a count and a few paths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkTreeState {
    /// Short branch name; None when HEAD is detached or unborn with no name.
    pub branch: Option<String>,
    /// Changed, new, deleted or conflicted files, bookkeeping left out.
    pub uncommitted: usize,
    /// The first `max_listed` of them, `/`-separated, relative to the repository.
    pub listed: Vec<String>,
}

/// What a range of history changed, bounded for the brief.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeChanges {
    /// Subjects of the commits in the range, newest first, `skip_subject_prefix` left out.
    pub subjects: Vec<String>,
    /// Commits in the range (walked at most [`MAX_TRAILER_WALK`]) whose subject was kept.
    pub commits: usize,
    /// The first changed files, bookkeeping left out.
    pub files: Vec<String>,
    /// Changed files in all, bookkeeping left out.
    pub files_changed: usize,
}

/// Whether `path` (repository-relative) is one of `bookkeeping`, paths relative to `workdir`
/// (a trailing `/` marks a directory).
fn is_bookkeeping(prefix: &str, path: &str, bookkeeping: &[String]) -> bool {
    let Some(rel) = path.strip_prefix(prefix) else {
        return false;
    };
    bookkeeping
        .iter()
        .any(|entry| match entry.strip_suffix('/') {
            Some(dir) => rel.starts_with(entry.as_str()) || rel == dir,
            None => rel == entry,
        })
}

/// `workdir` relative to the repository's work tree, with a trailing `/` (empty at the root).
fn workdir_prefix(repo: &Repository, workdir: &Path) -> String {
    let Some(root) = repo.workdir() else {
        return String::new();
    };
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let dir = workdir
        .canonicalize()
        .unwrap_or_else(|_| workdir.to_path_buf());
    match dir.strip_prefix(&root) {
        Ok(rel) if !rel.as_os_str().is_empty() => format!("{}/", path_key(rel)),
        _ => String::new(),
    }
}

/// The branch and the uncommitted files (ignored ones left out, untracked directories counted
/// once). Not a repository: `Ok(None)`.
pub fn work_tree_state(
    workdir: &Path,
    bookkeeping: &[String],
    max_listed: usize,
) -> Result<Option<WorkTreeState>> {
    let Some(repo) = discover(workdir)? else {
        return Ok(None);
    };
    let branch = match repo.head() {
        Ok(head) if head.is_branch() => head.shorthand().map(str::to_string),
        Ok(_) => None,
        Err(_) => repo
            .find_reference("HEAD")
            .ok()
            .and_then(|r| r.symbolic_target().map(str::to_string))
            .map(|t| t.trim_start_matches("refs/heads/").to_string()),
    };
    let prefix = workdir_prefix(&repo, workdir);
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut options))
        .context("reading the git status")?;
    let mut state = WorkTreeState {
        branch,
        ..WorkTreeState::default()
    };
    for entry in statuses.iter() {
        let Some(path) = entry.path() else { continue };
        if entry.status().is_ignored() || is_bookkeeping(&prefix, path, bookkeeping) {
            continue;
        }
        state.uncommitted += 1;
        if state.listed.len() < max_listed {
            state.listed.push(path.to_string());
        }
    }
    Ok(Some(state))
}

/// The commits from `to` back to `from` (excluded; None: to the root) and the files changed
/// between the two trees. Not a repository, or `to` unknown: `Ok(None)`.
pub fn range_changes(
    workdir: &Path,
    from: Option<&str>,
    to: &str,
    skip_subject_prefix: &str,
    bookkeeping: &[String],
    max_listed: usize,
) -> Result<Option<RangeChanges>> {
    let Some(repo) = discover(workdir)? else {
        return Ok(None);
    };
    let Ok(end) = resolve_commit(&repo, to) else {
        return Ok(None);
    };
    let start = from.and_then(|f| resolve_commit(&repo, f).ok());
    let mut changes = RangeChanges::default();
    let mut current = Some(end.clone());
    for _ in 0..MAX_TRAILER_WALK {
        let Some(commit) = current else { break };
        if start.as_ref().is_some_and(|s| s.id() == commit.id()) {
            break;
        }
        let subject = String::from_utf8_lossy(commit.message_bytes())
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if !subject.starts_with(skip_subject_prefix) {
            changes.commits += 1;
            if changes.subjects.len() < max_listed {
                changes.subjects.push(subject);
            }
        }
        current = commit.parent(0).ok();
    }
    let old_tree = start.as_ref().map(|c| c.tree()).transpose()?;
    let new_tree = end.tree()?;
    let diff = repo.diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)?;
    let prefix = workdir_prefix(&repo, workdir);
    for delta in diff.deltas() {
        let Some(path) = delta.new_file().path().or_else(|| delta.old_file().path()) else {
            continue;
        };
        let path = path_key(path);
        if is_bookkeeping(&prefix, &path, bookkeeping) {
            continue;
        }
        changes.files_changed += 1;
        if changes.files.len() < max_listed {
            changes.files.push(path);
        }
    }
    Ok(Some(changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    use crate::wrap::isolate_libgit2;

    struct TestRepo {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        root: PathBuf,
    }

    impl TestRepo {
        /// `git init -b <branch>` with a repo-local identity.
        fn new(branch: &str) -> Self {
            let repo = Self::without_identity(branch);
            repo.git(&["config", "user.name", "Test User"]);
            repo.git(&["config", "user.email", "test@example.com"]);
            repo
        }

        fn without_identity(branch: &str) -> Self {
            isolate_libgit2();
            let tmp = tempfile::tempdir().unwrap();
            let home = tmp.path().join("home");
            let root = tmp.path().join("repo");
            fs::create_dir_all(&home).unwrap();
            fs::create_dir_all(&root).unwrap();
            let root = fs::canonicalize(root).unwrap();
            let repo = Self {
                _tmp: tmp,
                home,
                root,
            };
            repo.git(&["init", "-q", "-b", branch]);
            repo
        }

        fn git_cmd(&self, args: &[&str]) -> Command {
            let mut cmd = Command::new("git");
            cmd.args(args)
                .current_dir(&self.root)
                .env("HOME", &self.home)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1");
            for var in [
                "GIT_DIR",
                "GIT_WORK_TREE",
                "GIT_INDEX_FILE",
                "GIT_OBJECT_DIRECTORY",
                "GIT_CEILING_DIRECTORIES",
                "GIT_AUTHOR_NAME",
                "GIT_AUTHOR_EMAIL",
                "GIT_AUTHOR_DATE",
                "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL",
                "GIT_COMMITTER_DATE",
                "XDG_CONFIG_HOME",
            ] {
                cmd.env_remove(var);
            }
            cmd
        }

        /// Run git, assert success, return stdout.
        fn git(&self, args: &[&str]) -> String {
            let out = self.git_cmd(args).output().unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }

        fn write(&self, rel: &str, content: &str) {
            let path = self.root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn commit_with_git(&self, message: &str) -> String {
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "-m", message]);
            self.head()
        }

        fn head(&self) -> String {
            self.git(&["rev-parse", "HEAD"]).trim().to_string()
        }

        fn files_in(&self, rev: &str) -> Vec<String> {
            let out = self.git(&["ls-tree", "-r", "--name-only", rev]);
            out.lines().map(str::to_string).collect()
        }

        fn status(&self) -> String {
            self.git(&["status", "--porcelain"])
        }

        fn commit(&self, message: &str) -> CommitOutcome {
            commit_all(&request(&self.root, message, &[], &[], u64::MAX)).unwrap()
        }
    }

    fn request<'a>(
        workdir: &'a Path,
        message: &'a str,
        exclude: &'a [PathBuf],
        exclude_globs: &'a [String],
        max_file_bytes: u64,
    ) -> CommitRequest<'a> {
        CommitRequest {
            workdir,
            message,
            exclude,
            exclude_globs,
            max_file_bytes,
            owner_dir: None,
            only: None,
        }
    }

    struct Committed {
        oid: String,
        branch: Option<String>,
        stats: DiffStats,
        skipped: Vec<SkippedFile>,
        detached: bool,
        fallback_identity: bool,
    }

    fn committed(outcome: CommitOutcome) -> Committed {
        match outcome {
            CommitOutcome::Committed {
                oid,
                branch,
                stats,
                skipped,
                detached,
                fallback_identity,
                ..
            } => Committed {
                oid,
                branch,
                stats,
                skipped,
                detached,
                fallback_identity,
            },
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    #[test]
    fn first_commit_on_unborn_head_uses_the_branch_head_names() {
        let t = TestRepo::new("trunk");
        t.write("a.txt", "one\ntwo\n");
        t.write("sub/dir/b.txt", "three\n");
        t.write(".hidden", "x\n");

        let c = committed(t.commit("first\n\nSession-Id: s1"));

        assert_eq!(c.branch.as_deref(), Some("trunk"));
        assert!(!c.detached);
        assert!(!c.fallback_identity);
        assert!(c.skipped.is_empty());
        assert_eq!(
            c.stats,
            DiffStats {
                files_changed: 3,
                insertions: 4,
                deletions: 0
            }
        );
        let repo = Repository::open(&t.root).unwrap();
        let branch_tip = repo.refname_to_id("refs/heads/trunk").unwrap();
        assert_eq!(branch_tip.to_string(), c.oid);
        let commit = repo.find_commit(branch_tip).unwrap();
        assert_eq!(commit.parent_count(), 0);
        assert_eq!(commit.message(), Some("first\n\nSession-Id: s1\n"));
        assert_eq!(commit.author().name(), Some("Test User"));
        assert_eq!(commit.committer().email(), Some("test@example.com"));
        assert_eq!(t.files_in("HEAD"), [".hidden", "a.txt", "sub/dir/b.txt"]);
        assert_eq!(t.status(), "");
        let reflog = t.git(&["reflog", "-1", "--format=%gs", "trunk"]);
        assert_eq!(reflog.trim(), "commit (initial): first");
    }

    #[test]
    fn commit_on_history_has_head_as_parent_and_counts_its_changes() {
        let t = TestRepo::new("main");
        t.write("a.txt", "1\n2\n3\n");
        t.write("b.txt", "x\ny\nz\nw\n");
        let before = t.commit_with_git("base");

        t.write("a.txt", "1\nTWO\n3\n");
        fs::remove_file(t.root.join("b.txt")).unwrap();
        t.write("c.txt", "new\nfile\n");
        let c = committed(t.commit("second"));

        assert_eq!(c.branch.as_deref(), Some("main"));
        assert_eq!(
            c.stats,
            DiffStats {
                files_changed: 3,
                insertions: 3,
                deletions: 5
            }
        );
        assert_eq!(t.head(), c.oid);
        assert_eq!(t.git(&["rev-parse", "HEAD^"]).trim(), before);
        let shortstat = t.git(&["diff", "--shortstat", "HEAD^", "HEAD"]);
        assert_eq!(
            shortstat.trim(),
            "3 files changed, 3 insertions(+), 5 deletions(-)"
        );
        assert_eq!(t.status(), "");
    }

    #[test]
    fn nothing_changed_makes_no_commit() {
        let t = TestRepo::new("main");
        // Unborn HEAD, empty work tree (ignored files only).
        t.write(".git/info/exclude", "*.tmp\n");
        t.write("scratch.tmp", "x");
        assert_eq!(
            t.commit("msg"),
            CommitOutcome::NothingToCommit {
                skipped: vec![],
                recovered_locks: vec![]
            }
        );
        assert!(
            t.git_cmd(&["rev-parse", "--verify", "-q", "HEAD"])
                .output()
                .unwrap()
                .stdout
                .is_empty()
        );

        t.write("a.txt", "a\n");
        let first = committed(t.commit("first")).oid;
        assert_eq!(
            t.commit("again"),
            CommitOutcome::NothingToCommit {
                skipped: vec![],
                recovered_locks: vec![]
            }
        );
        // A change that was staged and reverted is no change either.
        t.write("a.txt", "b\n");
        t.git(&["add", "a.txt"]);
        t.write("a.txt", "a\n");
        assert_eq!(
            t.commit("again"),
            CommitOutcome::NothingToCommit {
                skipped: vec![],
                recovered_locks: vec![]
            }
        );
        assert_eq!(t.head(), first);
        assert_eq!(t.git(&["rev-list", "--count", "HEAD"]).trim(), "1");
        assert_eq!(t.status(), "");
    }

    #[test]
    fn missing_identity_falls_back_to_orchestrator() {
        let t = TestRepo::without_identity("main");
        let repo = Repository::open(&t.root).unwrap();
        assert!(
            repo.signature().is_err(),
            "an identity leaked into the test"
        );
        t.write("a.txt", "a\n");

        let c = committed(t.commit("anonymous"));

        assert!(c.fallback_identity);
        let commit = repo.find_commit(Oid::from_str(&c.oid).unwrap()).unwrap();
        assert_eq!(commit.author().name(), Some(FALLBACK_NAME));
        assert_eq!(commit.author().email(), Some(FALLBACK_EMAIL));
        assert_eq!(commit.committer().name(), Some(FALLBACK_NAME));
        assert_eq!(
            t.git(&["log", "-1", "--format=%an <%ae>"]).trim(),
            "orchestrator <orchestrator@localhost>"
        );
    }

    #[test]
    fn stages_like_git_add_all() {
        let t = TestRepo::new("main");
        t.write(".gitignore", "*.log\nbuild/\n");
        t.write("keep.txt", "k\n");
        t.write("gone.txt", "g\n");
        t.write("modified.txt", "old\n");
        t.commit_with_git("base");

        fs::remove_file(t.root.join("gone.txt")).unwrap();
        t.write("modified.txt", "new\n");
        t.write("new.txt", "n\n");
        t.write("deep/er/nested.rs", "fn main() {}\n");
        t.write("debug.log", "noise\n");
        t.write("deep/trace.log", "noise\n");
        t.write("build/out.bin", "binary\n");

        committed(t.commit("work"));

        assert_eq!(
            t.files_in("HEAD"),
            [
                ".gitignore",
                "deep/er/nested.rs",
                "keep.txt",
                "modified.txt",
                "new.txt"
            ]
        );
        assert_eq!(t.git(&["show", "HEAD:modified.txt"]), "new\n");
        assert_eq!(t.status(), "");
        let ignored = t.git(&["status", "--porcelain", "--ignored"]);
        assert!(ignored.contains("!! debug.log"), "{ignored}");
        assert!(ignored.contains("!! build/"), "{ignored}");
    }

    #[test]
    fn oversized_files_are_skipped_and_keep_their_committed_version() {
        let t = TestRepo::new("main");
        t.write("tracked.bin", &"a".repeat(50));
        t.write("small.txt", "s\n");
        t.commit_with_git("base");

        t.write("tracked.bin", &"b".repeat(300));
        t.write("big.bin", &"c".repeat(200));
        t.write("small.txt", "changed\n");
        t.write("edge.bin", &"d".repeat(100));
        let c = committed(commit_all(&request(&t.root, "work", &[], &[], 100)).unwrap());

        let mut skipped = c.skipped.clone();
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            skipped,
            [
                SkippedFile {
                    path: "big.bin".into(),
                    bytes: 200,
                    reason: "larger than 100 bytes".into()
                },
                SkippedFile {
                    path: "tracked.bin".into(),
                    bytes: 300,
                    reason: "larger than 100 bytes".into()
                },
            ]
        );
        assert_eq!(t.files_in("HEAD"), ["edge.bin", "small.txt", "tracked.bin"]);
        assert_eq!(t.git(&["show", "HEAD:tracked.bin"]), "a".repeat(50));
        assert_eq!(t.git(&["show", "HEAD:small.txt"]), "changed\n");
        assert_eq!(t.status(), " M tracked.bin\n?? big.bin\n");
    }

    #[test]
    fn excluded_paths_and_globs_are_never_committed() {
        let t = TestRepo::new("main");
        // A state file someone committed before: stays as it is in HEAD.
        t.write(".orchestrator/lock", "old\n");
        t.write(".orchestrator/notes.md", "v1\n");
        t.write("db.backup_old", "tracked backup\n");
        t.commit_with_git("base");

        t.write(".orchestrator/lock", "new\n");
        t.write(".orchestrator/notes.md", "v2\n");
        t.write(".orchestrator/sessions/active/x.json", "{}\n");
        t.write(".orchestrator/sessions/done/y.json", "{}\n");
        t.write("db.backup_20251106_001355", "backup\n");
        t.write("data/db.backup_1", "backup\n");
        t.write("db.backup", "not matched by the glob\n");
        fs::remove_file(t.root.join("db.backup_old")).unwrap();
        // Changes staged earlier (the agent ran `git add -A`) are undone too.
        t.git(&["add", "-A"]);
        t.write(".orchestrator/staged-only", "s\n");
        t.git(&["add", ".orchestrator/staged-only"]);

        let exclude = [
            PathBuf::from(".orchestrator/sessions/active"),
            PathBuf::from(".orchestrator/lock"),
            PathBuf::from(".orchestrator/staged-only"),
            PathBuf::from("does/not/exist"),
        ];
        let globs = ["db.backup_*".to_string()];
        let c =
            committed(commit_all(&request(&t.root, "work", &exclude, &globs, u64::MAX)).unwrap());

        // The tracked ones whose changes are left out are reported, each once.
        let mut reported: Vec<&str> = c.skipped.iter().map(|s| s.path.as_str()).collect();
        reported.sort();
        assert_eq!(
            reported,
            [".orchestrator/lock", "db.backup_old"],
            "{:?}",
            c.skipped
        );
        assert!(
            c.skipped
                .iter()
                .all(|s| s.reason.starts_with("tracked in git, but never committed")),
            "{:?}",
            c.skipped
        );
        assert_eq!(
            t.files_in("HEAD"),
            [
                ".orchestrator/lock",
                ".orchestrator/notes.md",
                ".orchestrator/sessions/done/y.json",
                "db.backup",
                "db.backup_old",
            ]
        );
        assert_eq!(t.git(&["show", "HEAD:.orchestrator/lock"]), "old\n");
        assert_eq!(t.git(&["show", "HEAD:.orchestrator/notes.md"]), "v2\n");
        assert_eq!(t.git(&["show", "HEAD:db.backup_old"]), "tracked backup\n");
        // The index holds HEAD's versions of the excluded files.
        assert_eq!(t.git(&["diff", "--cached", "--name-only"]), "");
        let status = t.status();
        for expected in [
            " M .orchestrator/lock",
            "?? .orchestrator/sessions/active/",
            "?? .orchestrator/staged-only",
            " D db.backup_old",
            "?? data/",
            "?? db.backup_20251106_001355",
        ] {
            assert!(status.contains(expected), "{expected:?} not in {status}");
        }
    }

    #[test]
    fn excluded_files_staged_in_an_unborn_repository_are_unstaged() {
        let t = TestRepo::new("main");
        t.write(".orchestrator/lock", "pid\n");
        t.git(&["add", "-A"]);
        let exclude = [PathBuf::from(".orchestrator")];
        let req = request(&t.root, "m", &exclude, &[], u64::MAX);

        assert_eq!(
            commit_all(&req).unwrap(),
            CommitOutcome::NothingToCommit {
                skipped: vec![],
                recovered_locks: vec![]
            }
        );
        assert_eq!(t.status(), "?? .orchestrator/\n");

        t.write("a.txt", "a\n");
        t.git(&["add", "-A"]);
        let c = committed(commit_all(&req).unwrap());
        assert_eq!(c.stats.files_changed, 1);
        assert_eq!(t.files_in("HEAD"), ["a.txt"]);
        assert_eq!(t.status(), "?? .orchestrator/\n");
    }

    #[test]
    fn workspace_in_a_subdirectory_stages_the_whole_repository() {
        let t = TestRepo::new("main");
        t.write("top.txt", "1\n");
        t.write("ws/app.txt", "1\n");
        t.commit_with_git("base");

        t.write("top.txt", "2\n");
        t.write("secret.txt", "top-level, not excluded\n");
        t.write("y.bak", "outside the workspace: not excluded\n");
        t.write("ws/app.txt", "2\n");
        t.write("ws/secret.txt", "excluded\n");
        t.write("ws/x.bak", "excluded\n");
        t.write("ws/deep/z.bak", "excluded\n");
        t.write("ws/out/state.json", "excluded\n");
        t.write("ws/src/out/kept.json", "anchored pattern: kept\n");
        t.write("other/new.txt", "new\n");

        let ws = t.root.join("ws");
        let exclude = [PathBuf::from("secret.txt"), PathBuf::from("./out/")];
        let globs = ["*.bak".to_string()];
        let c = committed(commit_all(&request(&ws, "work", &exclude, &globs, u64::MAX)).unwrap());

        assert_eq!(c.branch.as_deref(), Some("main"));
        assert_eq!(
            t.files_in("HEAD"),
            [
                "other/new.txt",
                "secret.txt",
                "top.txt",
                "ws/app.txt",
                "ws/src/out/kept.json",
                "y.bak",
            ]
        );
        assert_eq!(t.git(&["show", "HEAD:top.txt"]), "2\n");
    }

    #[test]
    fn anchored_glob_matches_relative_paths() {
        let t = TestRepo::new("main");
        t.write("logs/a.txt", "x\n");
        t.write("logs/sub/b.txt", "x\n");
        t.write("other/logs/c.txt", "x\n");
        let globs = ["logs/*.txt".to_string()];
        committed(commit_all(&request(&t.root, "m", &[], &globs, u64::MAX)).unwrap());
        assert_eq!(t.files_in("HEAD"), ["logs/sub/b.txt", "other/logs/c.txt"]);
    }

    #[test]
    fn not_a_repository_is_reported_not_an_error() {
        isolate_libgit2();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f.txt"), "x").unwrap();
        assert_eq!(
            commit_all(&request(dir.path(), "m", &[], &[], u64::MAX)).unwrap(),
            CommitOutcome::NotARepository
        );
        assert_eq!(head_oid(dir.path()).unwrap(), None);
        assert_eq!(diff_stats_since(dir.path(), None).unwrap(), None);
        assert_eq!(
            find_commit_with_trailer(dir.path(), None, "", "Session-Id", "s").unwrap(),
            None
        );
        let missing = dir.path().join("nope");
        let err = commit_all(&request(&missing, "m", &[], &[], 1)).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn detached_head_commits_on_the_detached_head() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let base = t.commit_with_git("base");
        t.git(&["checkout", "-q", "--detach"]);
        t.write("a.txt", "b\n");

        let c = committed(t.commit("detached work"));

        assert!(c.detached);
        assert_eq!(c.branch, None);
        assert_eq!(t.head(), c.oid);
        assert_eq!(t.git(&["rev-parse", "HEAD^"]).trim(), base);
        assert_eq!(t.git(&["rev-parse", "main"]).trim(), base);
        assert!(
            t.git_cmd(&["symbolic-ref", "-q", "HEAD"])
                .output()
                .unwrap()
                .stdout
                .is_empty()
        );
        assert_eq!(t.status(), "");
    }

    fn remove_after(path: PathBuf, delay: Duration) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            fs::remove_file(path).unwrap();
        })
    }

    #[test]
    fn index_lock_released_during_retries() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        t.commit_with_git("base");
        t.write("a.txt", "b\n");
        let lock = t.root.join(".git/index.lock");
        fs::write(&lock, "").unwrap();
        let start = Instant::now();
        let remover = remove_after(lock, Duration::from_millis(200));

        let c = committed(t.commit("after lock"));

        remover.join().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert_eq!(t.head(), c.oid);
        assert_eq!(t.git(&["show", "HEAD:a.txt"]), "b\n");
        assert_eq!(t.status(), "");
    }

    /// The lock holder is a `git commit`: when it is done, the index and HEAD
    /// have moved; we must build on both rather than on what we read first.
    #[test]
    fn index_lock_holder_that_commits_is_built_upon() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let base = t.commit_with_git("base");
        t.write("theirs.txt", "theirs\n");
        t.write("ours.txt", "ours\n");
        let lock = t.root.join(".git/index.lock");
        fs::write(&lock, "").unwrap();
        let their_index = t.home.join("their-index");

        let (theirs, c) = std::thread::scope(|scope| {
            let other_git = scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                let git = |args: &[&str]| {
                    let out = t
                        .git_cmd(args)
                        .env("GIT_INDEX_FILE", &their_index)
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    String::from_utf8(out.stdout).unwrap().trim().to_string()
                };
                git(&["read-tree", "HEAD"]);
                git(&["add", "theirs.txt"]);
                let tree = git(&["write-tree"]);
                let commit = git(&["commit-tree", &tree, "-p", "HEAD", "-m", "theirs"]);
                git(&["update-ref", "HEAD", &commit]);
                fs::copy(&their_index, t.root.join(".git/index")).unwrap();
                fs::remove_file(&lock).unwrap();
                commit
            });
            let c = committed(t.commit("ours"));
            (other_git.join().unwrap(), c)
        });

        assert_ne!(theirs, base);
        assert_eq!(t.head(), c.oid);
        assert_eq!(t.git(&["rev-parse", "HEAD^"]).trim(), theirs);
        assert_eq!(c.stats.files_changed, 1);
        assert_eq!(t.files_in("HEAD"), ["a.txt", "ours.txt", "theirs.txt"]);
        assert_eq!(t.status(), "");
    }

    #[test]
    fn index_lock_held_gives_a_clear_error() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let base = t.commit_with_git("base");
        t.write("a.txt", "b\n");
        fs::write(t.root.join(".git/index.lock"), "").unwrap();
        let start = Instant::now();

        let err = commit_all(&request(&t.root, "m", &[], &[], u64::MAX)).unwrap_err();

        assert!(start.elapsed() >= Duration::from_secs(3));
        let lock = t.root.join(".git/index.lock");
        assert_eq!(
            err.to_string(),
            format!(
                "git index is locked: {0} exists: another git process is running, or one was \
                 killed and left it behind; if no git process is running, delete {0} and retry",
                lock.display()
            )
        );
        assert_eq!(t.head(), base);
    }

    #[test]
    fn ref_lock_released_during_retries() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let base = t.commit_with_git("base");
        t.write("a.txt", "b\n");
        let lock = t.root.join(".git/refs/heads/main.lock");
        fs::write(&lock, "").unwrap();
        let remover = remove_after(lock, Duration::from_millis(200));

        let c = committed(t.commit("after ref lock"));

        remover.join().unwrap();
        assert_eq!(t.git(&["rev-parse", "main"]).trim(), c.oid);
        assert_eq!(t.git(&["rev-parse", "main^"]).trim(), base);
        assert_eq!(t.git(&["rev-list", "--count", "--all"]).trim(), "2");
    }

    #[test]
    fn ref_lock_held_gives_a_clear_error() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let base = t.commit_with_git("base");
        t.write("a.txt", "b\n");
        fs::write(t.root.join(".git/refs/heads/main.lock"), "").unwrap();

        let err = commit_all(&request(&t.root, "m", &[], &[], u64::MAX)).unwrap_err();

        let lock = t.root.join(".git/refs/heads/main.lock");
        assert_eq!(
            err.to_string(),
            format!(
                "git ref refs/heads/main is locked: {0} exists: another git process is running, \
                 or one was killed and left it behind; if no git process is running, delete {0} \
                 and retry",
                lock.display()
            )
        );
        fs::remove_file(t.root.join(".git/refs/heads/main.lock")).unwrap();
        assert_eq!(t.head(), base);
    }

    #[test]
    fn head_moved_by_someone_else_is_refused() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        t.commit_with_git("base");
        t.write("a.txt", "b\n");
        let repo = Repository::open(&t.root).unwrap();
        let head = HeadState::read(&repo).unwrap();
        // Someone commits between our read of HEAD and our update.
        let theirs = t.commit_with_git("theirs");
        let tree = repo
            .find_commit(Oid::from_str(&theirs).unwrap())
            .unwrap()
            .tree()
            .unwrap();
        let sig = Signature::now("x", "x@y").unwrap();
        let parents: Vec<&Commit> = head.parent.iter().collect();
        let ours = repo
            .commit(None, &sig, &sig, "ours", &tree, &parents)
            .unwrap();

        let err = head.advance(&repo, ours, "ours").unwrap_err();

        assert!(
            err.to_string().contains("moved by another process"),
            "{err}"
        );
        assert_eq!(t.head(), theirs);
    }

    #[test]
    fn symlinks_are_committed_as_symlinks() {
        let t = TestRepo::new("main");
        t.write("target.txt", "t\n");
        std::os::unix::fs::symlink("target.txt", t.root.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", t.root.join("dangling")).unwrap();

        let c = committed(commit_all(&request(&t.root, "m", &[], &[], 4)).unwrap());

        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
        let repo = Repository::open(&t.root).unwrap();
        let tree = repo.head().unwrap().peel_to_tree().unwrap();
        for (name, target) in [("link", "target.txt"), ("dangling", "nowhere")] {
            let entry = tree.get_path(Path::new(name)).unwrap();
            assert_eq!(entry.filemode(), 0o120000, "{name}");
            let blob = repo.find_blob(entry.id()).unwrap();
            assert_eq!(blob.content(), target.as_bytes());
        }
        assert_eq!(t.status(), "");
    }

    #[test]
    fn file_vanishing_after_the_scan_is_not_fatal() {
        let t = TestRepo::new("main");
        t.write("tracked.txt", "t\n");
        t.commit_with_git("base");
        t.write("tracked.txt", "changed\n");
        t.write("untracked.txt", "u\n");
        t.write("kept.txt", "k\n");
        let mut deleted = Vec::new();
        let mut hook = |path: &Path| {
            let name = path.to_string_lossy().into_owned();
            if name != "kept.txt" && !deleted.contains(&name) {
                fs::remove_file(t.root.join(path)).unwrap();
                deleted.push(name);
            }
        };

        let outcome =
            commit_all_with_hook(&request(&t.root, "m", &[], &[], u64::MAX), &mut hook).unwrap();

        deleted.sort();
        assert_eq!(deleted, ["tracked.txt", "untracked.txt"]);
        let c = committed(outcome);
        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
        // As if the files had been deleted before `git add -A`.
        assert_eq!(t.files_in("HEAD"), ["kept.txt"]);
        assert_eq!(t.status(), "");
    }

    #[test]
    fn file_turned_into_a_directory_is_skipped_with_a_reason() {
        let t = TestRepo::new("main");
        t.write("weird", "w\n");
        t.write("fine.txt", "f\n");
        let mut hook = |path: &Path| {
            if path == Path::new("weird") && t.root.join("weird").is_file() {
                fs::remove_file(t.root.join("weird")).unwrap();
                fs::create_dir(t.root.join("weird")).unwrap();
            }
        };

        let c = committed(
            commit_all_with_hook(&request(&t.root, "m", &[], &[], u64::MAX), &mut hook).unwrap(),
        );

        assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
        assert_eq!(c.skipped[0].path, "weird");
        assert!(
            c.skipped[0].reason.starts_with("could not be added: "),
            "{:?}",
            c.skipped[0]
        );
        assert_eq!(t.files_in("HEAD"), ["fine.txt"]);
    }

    /// Unlike `git add -A` (which adds an embedded repository as a gitlink,
    /// with a warning), untracked nested repositories are left out and reported.
    #[test]
    fn nested_untracked_repository_is_left_out() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let nested = t.root.join("vendor/lib");
        fs::create_dir_all(&nested).unwrap();
        t.write("vendor/lib/file.txt", "inner\n");
        let run = |args: &[&str]| {
            let out = t.git_cmd(args).current_dir(&nested).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["init", "-q", "-b", "main"]);
        run(&["add", "-A"]);
        run(&[
            "-c",
            "user.name=n",
            "-c",
            "user.email=e@x",
            "commit",
            "-q",
            "-m",
            "n",
        ]);

        let c = committed(t.commit("m"));

        assert_eq!(
            c.skipped,
            [SkippedFile {
                path: "vendor/lib".into(),
                bytes: 0,
                reason: "nested git repository".into()
            }]
        );
        assert_eq!(t.files_in("HEAD"), ["a.txt"]);
        assert_eq!(t.status(), "?? vendor/\n");
    }

    #[test]
    fn head_oid_follows_head() {
        let t = TestRepo::new("main");
        assert_eq!(head_oid(&t.root).unwrap(), None);
        t.write("sub/a.txt", "a\n");
        let oid = t.commit_with_git("base");
        assert_eq!(head_oid(&t.root).unwrap(), Some(oid.clone()));
        assert_eq!(head_oid(&t.root.join("sub")).unwrap(), Some(oid));
    }

    #[test]
    fn diff_stats_since_a_commit_or_the_beginning() {
        let t = TestRepo::new("main");
        assert_eq!(
            diff_stats_since(&t.root, None).unwrap(),
            Some(DiffStats::default())
        );
        t.write("a.txt", "1\n2\n");
        let first = t.commit_with_git("one");
        t.write("a.txt", "1\n3\n");
        t.write("b.txt", "b\n");
        t.commit_with_git("two");
        t.write("c.txt", "c1\nc2\nc3\n");
        fs::remove_file(t.root.join("b.txt")).unwrap();
        t.commit_with_git("three");
        // Uncommitted changes do not count.
        t.write("a.txt", "dirty\n");

        assert_eq!(
            diff_stats_since(&t.root, Some(&first)).unwrap(),
            Some(DiffStats {
                files_changed: 2,
                insertions: 4,
                deletions: 1
            })
        );
        assert_eq!(
            diff_stats_since(&t.root, None).unwrap(),
            Some(DiffStats {
                files_changed: 2,
                insertions: 5,
                deletions: 0
            })
        );
        assert_eq!(
            diff_stats_since(&t.root, Some(&t.head())).unwrap(),
            Some(DiffStats::default())
        );
        assert!(
            diff_stats_since(&t.root, Some("0123456789abcdef0123456789abcdef01234567")).is_err()
        );
    }

    #[test]
    fn find_commit_with_trailer_walks_first_parents_back_to_since() {
        let t = TestRepo::new("main");
        assert_eq!(
            find_commit_with_trailer(&t.root, None, "", "Session-Id", "s1").unwrap(),
            None
        );
        t.write("a", "0");
        let start = t.commit_with_git("start\n\nSession-Id: s0");
        t.write("a", "1");
        let s1 = t.commit_with_git("one\n\nSession-Id: s1\nOther: x");
        t.write("a", "2");
        let s2 = t.commit_with_git("two\n\nsession-id:  s2  ");
        t.write("a", "3");
        t.commit_with_git("three mentions Session-Id: s9 inline");
        // A side branch merged in: its commits are not on the first-parent path.
        t.git(&["checkout", "-q", "-b", "side", &s2]);
        t.write("side.txt", "s");
        t.commit_with_git("side\n\nSession-Id: side");
        t.git(&["checkout", "-q", "main"]);
        t.git(&["merge", "-q", "--no-ff", "-m", "merge", "side"]);

        let find = |since: Option<&str>, value: &str| {
            find_commit_with_trailer(&t.root, since, "", "Session-Id", value).unwrap()
        };
        assert_eq!(find(None, "s1"), Some(s1.clone()));
        assert_eq!(find(Some(&start), "s1"), Some(s1.clone()));
        assert_eq!(find(None, "s2"), Some(s2.clone()));
        assert_eq!(find(None, "s0"), Some(start.clone()));
        assert_eq!(find(Some(&start), "s0"), None);
        assert_eq!(find(Some(&s1), "s1"), None);
        assert_eq!(find(None, "side"), None);
        assert_eq!(find(None, "s9"), None);
        assert_eq!(find(None, "s"), None);
        assert_eq!(
            find_commit_with_trailer(&t.root, None, "", "Other", "x").unwrap(),
            Some(s1)
        );
    }

    #[test]
    fn trailer_search_is_bounded() {
        let t = TestRepo::new("main");
        t.write("a", "0");
        t.commit_with_git("old\n\nSession-Id: old");
        // 1000 commits on top, cheaply via fast-import.
        let mut stream = String::new();
        for i in 0..MAX_TRAILER_WALK {
            let from = if i == 0 {
                "from refs/heads/main^0\n"
            } else {
                ""
            };
            stream.push_str(&format!(
                "commit refs/heads/main\ncommitter T <t@e> 1700000000 +0000\ndata 2\nc\n{from}\n"
            ));
        }
        let mut child = t
            .git_cmd(&["fast-import", "--quiet", "--force"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stream.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(t.git(&["rev-list", "--count", "HEAD"]).trim(), "1001");
        assert_eq!(
            find_commit_with_trailer(&t.root, None, "", "Session-Id", "old").unwrap(),
            None
        );
        t.git(&["reset", "-q", "--hard", "HEAD~1"]);
        assert!(
            find_commit_with_trailer(&t.root, None, "", "Session-Id", "old")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn outcome_serializes_with_a_result_tag() {
        let outcome = CommitOutcome::NothingToCommit {
            skipped: vec![SkippedFile {
                path: "big.bin".into(),
                bytes: 7,
                reason: "larger than 50 MB".into(),
            }],
            recovered_locks: vec![],
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "result": "nothing_to_commit",
                "skipped": [{"path": "big.bin", "bytes": 7, "reason": "larger than 50 MB"}]
            })
        );
        let back: CommitOutcome = serde_json::from_value(json).unwrap();
        assert_eq!(back, outcome);
        assert_eq!(
            serde_json::to_value(CommitOutcome::NotARepository).unwrap(),
            serde_json::json!({"result": "not_a_repository"})
        );
    }

    #[test]
    fn glob_and_size_helpers() {
        assert!(glob_match("db.backup_*", "db.backup_20251106_001355"));
        assert!(!glob_match("db.backup_*", "db.backup"));
        assert!(glob_match("*.bak", ".bak"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("?.txt", "a.txt"));
        assert!(!glob_match("?.txt", "ab.txt"));
        assert!(glob_match("*", ""));
        assert_eq!(human_size(50_000_000), "50 MB");
        assert_eq!(human_size(50 << 20), "50 MiB");
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(1500), "1500 bytes");
        assert_eq!(human_size(2000), "2 kB");
    }

    /// An owner record as a killed commit of `pid` would leave it, written `age` ago.
    fn owner_record(dir: &Path, pid: u32, start_time: Option<u64>, locks: &[PathBuf], age: u64) {
        fs::create_dir_all(dir).unwrap();
        let record = OwnerRecord {
            pid,
            start_time,
            host: crate::store::host_name(),
            locks: locks.to_vec(),
        };
        let path = dir.join(format!("{pid}.json"));
        fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        backdate(&path, age);
    }

    fn backdate(path: &Path, age: u64) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age))
            .unwrap();
    }

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_stale_ref_lock_of_a_dead_owner_is_removed_before_committing() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let base = t.commit_with_git("base");
        t.write("a.txt", "b\n");
        let owners = t.root.join(".orchestrator/git_owners");
        let repo = Repository::open(&t.root).unwrap();
        let locks = lock_paths(&repo);
        let lock = t.root.join(".git/refs/heads/main.lock");
        assert!(locks.contains(&lock), "{locks:?}");
        owner_record(&owners, dead_pid(), Some(1), &locks, 300);
        fs::write(&lock, "").unwrap();
        backdate(&lock, 200);
        let mut req = request(&t.root, "m", &[], &[], u64::MAX);
        req.owner_dir = Some(&owners);

        let outcome = commit_all(&req).unwrap();

        let CommitOutcome::Committed {
            recovered_locks, ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(recovered_locks, [lock.to_string_lossy()]);
        assert_eq!(t.git(&["rev-parse", "HEAD^"]).trim(), base);
        assert_eq!(fs::read_dir(&owners).unwrap().count(), 0, "records removed");
    }

    #[test]
    fn a_lock_is_kept_while_its_owner_lives_or_when_it_predates_the_owner() {
        let t = TestRepo::new("main");
        let owners = t.root.join("owners");
        let lock = t.root.join(".git/index.lock");
        let mut alive = Command::new("sleep").arg("30").spawn().unwrap();
        owner_record(
            &owners,
            alive.id(),
            process_start_time(alive.id()),
            std::slice::from_ref(&lock),
            300,
        );
        fs::write(&lock, "").unwrap();
        backdate(&lock, 200);
        assert_eq!(remove_stale_locks(&owners).unwrap(), Vec::<String>::new());
        assert!(lock.exists());
        alive.kill().unwrap();
        alive.wait().unwrap();

        // Older than the record: someone else's, taken before our process began.
        fs::remove_dir_all(&owners).unwrap();
        owner_record(&owners, dead_pid(), None, std::slice::from_ref(&lock), 300);
        backdate(&lock, 400);
        assert_eq!(remove_stale_locks(&owners).unwrap(), Vec::<String>::new());
        assert!(lock.exists());

        // A reused pid is not the owner: the recorded start time differs.
        fs::remove_dir_all(&owners).unwrap();
        owner_record(
            &owners,
            std::process::id(),
            Some(u64::MAX),
            std::slice::from_ref(&lock),
            300,
        );
        backdate(&lock, 200);
        // Our own pid is never taken for a dead owner, whatever the record says.
        assert_eq!(remove_stale_locks(&owners).unwrap(), Vec::<String>::new());
        let parent = std::os::unix::process::parent_id();
        owner_record(
            &owners,
            parent,
            Some(u64::MAX),
            std::slice::from_ref(&lock),
            300,
        );
        assert_eq!(
            remove_stale_locks(&owners).unwrap(),
            [lock.to_string_lossy()]
        );
        assert!(!lock.exists());
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 98765)));
        assert_eq!(parse_stat("garbage"), None);
        let me = process_start_time(std::process::id());
        assert!(me.is_some());
    }

    #[test]
    fn unmerged_paths_outside_any_operation_block_the_commit() {
        let t = TestRepo::new("main");
        t.write("a.txt", "base\n");
        t.commit_with_git("base");
        t.write("a.txt", "stashed\n");
        t.git(&["stash", "-q"]);
        t.write("a.txt", "committed\n");
        let head = t.commit_with_git("other");
        let pop = t.git_cmd(&["stash", "pop", "-q"]).output().unwrap();
        assert!(!pop.status.success());

        let outcome = t.commit("m");

        let CommitOutcome::Skipped {
            state,
            conflicts,
            reason,
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(state, "none");
        assert_eq!(conflicts, ["a.txt"]);
        assert!(reason.contains("unmerged paths (a.txt)"), "{reason}");
        assert_eq!(t.head(), head);
        let plan = plan_commit(&request(&t.root, "", &[], &[], u64::MAX), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            plan.blocked.map(|b| b.conflicts),
            Some(vec!["a.txt".into()])
        );
    }

    #[test]
    fn a_file_growing_while_it_is_staged_is_committed_as_read() {
        let t = TestRepo::new("main");
        t.write("app.log", "one\n");
        t.commit_with_git("base");
        t.write("app.log", "one\ntwo\n");
        let mut hook = |path: &Path| {
            if path == Path::new("app.log") {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(t.root.join(path))
                    .unwrap();
                f.write_all(b"three\n").unwrap();
            }
        };

        let c = committed(
            commit_all_with_hook(&request(&t.root, "m", &[], &[], u64::MAX), &mut hook).unwrap(),
        );

        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
        let committed = t.git(&["show", "HEAD:app.log"]);
        assert!(committed.starts_with("one\ntwo\n"), "{committed}");
        assert!(
            fs::read_to_string(t.root.join("app.log"))
                .unwrap()
                .starts_with(&committed)
        );
    }

    #[test]
    fn empty_message_is_refused_before_touching_anything() {
        let t = TestRepo::new("main");
        t.write("a.txt", "a\n");
        let err = commit_all(&request(&t.root, " \n\n", &[], &[], u64::MAX)).unwrap_err();
        assert_eq!(err.to_string(), "empty commit message");
        assert_eq!(t.status(), "?? a.txt\n");
    }
}

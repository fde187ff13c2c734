//! A git worktree per session (through libgit2): made at `start`, brought back at `wrap`.
//!
//! A session's worktree is `<workspace>/.orchestrator/worktrees/<task-id>` on the branch
//! `orchestrator/<task-id>`, made from the tip of the branch the main work tree is on (the base
//! branch). Inside the state directory, which every commit leaves out, it is never swept into
//! the base tree's commits, it goes where the workspace goes, and its path alone says which
//! workspace it belongs to (see `store::Workspace::find_from`).
//!
//! Integration is computed in memory (libgit2's cherry-pick and merge of commits write objects,
//! never a work tree), so a conflict leaves nothing to abort: the branch, the worktree and the
//! base branch stay exactly as they were. Only a clean result moves the base branch, in two
//! idempotent moves a killed wrap repeats safely: the main work tree's files, then the ref
//! (compared and swapped, so a base branch moved meanwhile is never overwritten).

use anyhow::{Context, Result, anyhow, bail};
use git2::build::CheckoutBuilder;
use git2::{
    BranchType, Commit, ErrorCode, Index, Oid, Repository, Signature, WorktreeAddOptions,
    WorktreePruneOptions,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::core::session::SessionWorktree;
use crate::core::stack::Integrate;

/// Under the state directory: the worktrees and a record beside each.
pub const WORKTREES_DIR: &str = "worktrees";
/// Every session branch is `orchestrator/<task-id>`.
pub const BRANCH_PREFIX: &str = "orchestrator/";
/// At most this many conflicting paths are named.
const MAX_LISTED_CONFLICTS: usize = 50;

/// The worktree directory of `task` in the workspace at `ws_root`.
pub fn worktree_path(ws_root: &Path, task: &str) -> PathBuf {
    ws_root
        .join(crate::store::STATE_DIR)
        .join(WORKTREES_DIR)
        .join(task)
}

/// The record kept beside a worktree (`<task-id>.json`): who owns it and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorktreeRecord {
    pub task: String,
    #[serde(flatten)]
    pub worktree: SessionWorktree,
    /// The session working in it now, or the last one.
    pub session: String,
    pub agent: String,
    /// Set when the wrap's integration conflicted: what stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<Conflict>,
}

/// An integration that stopped on a conflict, and what the task becomes once it is resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conflict {
    pub paths: Vec<String>,
    /// The task's status the wrap would have set (`done` after `wrap --done`).
    pub status_after: crate::core::stack::Status,
}

pub fn record_path(ws_root: &Path, task: &str) -> PathBuf {
    ws_root
        .join(crate::store::STATE_DIR)
        .join(WORKTREES_DIR)
        .join(format!("{task}.json"))
}

pub fn read_record(ws_root: &Path, task: &str) -> Result<Option<WorktreeRecord>> {
    let path = record_path(ws_root, task);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{}: not a worktree record", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Every record in the workspace, by task id.
pub fn records(ws_root: &Path) -> Result<Vec<WorktreeRecord>> {
    let dir = ws_root.join(crate::store::STATE_DIR).join(WORKTREES_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(task) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if let Some(record) = read_record(ws_root, task)? {
            found.push(record);
        }
    }
    found.sort_by(|a, b| a.task.cmp(&b.task));
    Ok(found)
}

/// The admin name git keeps the worktree under (`.git/worktrees/<name>`).
fn admin_name(task: &str) -> String {
    format!("orchestrator-{task}")
}

/// Opens (reusing) or makes the worktree of `task` for the workspace at `ws_root`. The branch
/// is reused when it exists (a resumed task), else made from the base branch's tip.
pub fn ensure(ws_root: &Path, task: &str) -> Result<SessionWorktree> {
    let repo = Repository::discover(ws_root).map_err(|err| {
        crate::error::Failure::user(format!(
            "a worktree needs the workspace to be in a git repository: {}",
            err.message()
        ))
    })?;
    let root = repo
        .workdir()
        .ok_or_else(|| anyhow!("{} is a bare git repository", repo.path().display()))?;
    let root = fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
    if repo.is_worktree() {
        return Err(crate::error::Failure::user(format!(
            "the workspace {} is itself in a linked git worktree; start sessions with worktrees from the main one",
            ws_root.display()
        )));
    }
    let head = repo.head().map_err(|err| {
        crate::error::Failure::user(format!(
            "a worktree needs a commit to start from: {}",
            err.message()
        ))
    })?;
    if !head.is_branch() {
        return Err(crate::error::Failure::user(
            "HEAD is detached: a worktree is made from, and integrated into, the branch the main work tree is on; check out a branch first",
        ));
    }
    let base = head.shorthand().unwrap_or_default().to_string();
    let base_tip = head.peel_to_commit().context("resolving HEAD")?;
    let branch = format!("{BRANCH_PREFIX}{task}");
    if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(crate::error::Failure::user(format!(
            "task id `{task}` does not make a valid git branch name ({branch})"
        )));
    }
    let ws_canonical =
        fs::canonicalize(ws_root).with_context(|| format!("resolving {}", ws_root.display()))?;
    let prefix = ws_canonical
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = worktree_path(&ws_canonical, task);
    let info = SessionWorktree {
        workdir: if prefix.as_os_str().is_empty() {
            path.clone()
        } else {
            path.join(&prefix)
        },
        path: path.clone(),
        branch: branch.clone(),
        base,
    };
    let name = admin_name(task);
    if let Ok(existing) = repo.find_worktree(&name) {
        // Reused only when its record says it was made whole; a start killed midway left
        // a checkout that may be missing files, which would read as deletions.
        if existing.validate().is_ok()
            && path.join(".git").exists()
            && record_path(&ws_canonical, task).exists()
        {
            return Ok(info);
        }
        remove_worktree(&repo, &name, &path)?;
    } else if path.exists() {
        fs::remove_dir_all(&path)
            .with_context(|| format!("removing the half-made worktree {}", path.display()))?;
    }
    let branch_ref = match repo.find_branch(&branch, BranchType::Local) {
        Ok(found) => found,
        Err(err) if err.code() == ErrorCode::NotFound => repo
            .branch(&branch, &base_tip, false)
            .with_context(|| format!("creating the branch {branch}"))?,
        Err(err) => return Err(err).with_context(|| format!("reading the branch {branch}")),
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut options = WorktreeAddOptions::new();
    options.reference(Some(branch_ref.get()));
    repo.worktree(&name, &path, Some(&options))
        .with_context(|| format!("creating the worktree {}", path.display()))?;
    Ok(info)
}

/// The tip of a branch (None when it does not exist).
fn branch_tip<'r>(repo: &'r Repository, branch: &str) -> Result<Option<Commit<'r>>> {
    match repo.find_branch(branch, BranchType::Local) {
        Ok(found) => Ok(Some(
            found
                .get()
                .peel_to_commit()
                .with_context(|| format!("resolving {branch}"))?,
        )),
        Err(err) if err.code() == ErrorCode::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading the branch {branch}")),
    }
}

/// What integrating a branch would do, computed without touching any work tree or ref.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The base branch already holds everything on the branch.
    Nothing,
    /// These paths conflict: nothing was changed.
    Conflict(Vec<String>),
    /// Move the base branch from `from` to `to` (a descendant of `from`).
    Move {
        from: Oid,
        to: Oid,
        /// The session branch's tip that was integrated.
        branch_tip: Oid,
        /// Commits brought onto the base branch.
        commits: usize,
        fast_forward: bool,
    },
}

/// Plans bringing `wt.branch` onto `wt.base` in the repository of `main_dir`. `merge_message`
/// is the message of a merge commit, when `mode` is merge and one is needed.
pub fn plan(
    main_dir: &Path,
    wt: &SessionWorktree,
    mode: Integrate,
    merge_message: &str,
) -> Result<Plan> {
    let repo = open(main_dir)?;
    let base = branch_tip(&repo, &wt.base)?
        .ok_or_else(|| anyhow!("the base branch {} no longer exists", wt.base))?;
    let Some(tip) = branch_tip(&repo, &wt.branch)? else {
        return Ok(Plan::Nothing);
    };
    if tip.id() == base.id() || repo.graph_descendant_of(base.id(), tip.id())? {
        return Ok(Plan::Nothing);
    }
    let merge_base = repo
        .merge_base(base.id(), tip.id())
        .context("finding where the branch left the base branch")?;
    let picks = first_parent_picks(&tip, merge_base)?;
    if merge_base == base.id() {
        return Ok(Plan::Move {
            from: base.id(),
            to: tip.id(),
            branch_tip: tip.id(),
            commits: picks.len(),
            fast_forward: true,
        });
    }
    let signature = signature(&repo)?;
    // The stack in the worktree is never the session's to change (its commands act on the main
    // workspace, and the branch commit leaves it out), so a conflict on it is only the branch's
    // base lagging behind: the base branch's stack is the one. (A push that replayed the base
    // branch onto other machines' work leaves such a lag.)
    let stack = format!("{}{}", workspace_prefix(wt), crate::store::STACK_FILE);
    let keep_stack = |path: &str| -> Result<Option<Vec<u8>>> {
        if path != stack {
            return Ok(None);
        }
        let blob = base
            .tree()?
            .get_path(Path::new(path))
            .and_then(|entry| entry.to_object(&repo))
            .ok()
            .and_then(|object| object.into_blob().ok());
        Ok(blob.map(|blob| blob.content().to_vec()))
    };
    let to = match mode {
        Integrate::Merge => {
            let mut index = repo
                .merge_commits(&base, &tip, None)
                .context("merging the session branch")?;
            if index.has_conflicts() {
                let unresolved = resolve_conflicts(&repo, &mut index, &keep_stack)?;
                if !unresolved.is_empty() {
                    return Ok(Plan::Conflict(unresolved));
                }
            }
            let tree = repo.find_tree(index.write_tree_to(&repo)?)?;
            repo.commit(
                None,
                &signature,
                &signature,
                merge_message,
                &tree,
                &[&base, &tip],
            )?
        }
        Integrate::Rebase | Integrate::Branch => {
            match replay(&repo, &base, &picks, &signature, &keep_stack)? {
                Replayed::Onto(oid) => oid,
                Replayed::Conflict(paths) => return Ok(Plan::Conflict(paths)),
            }
        }
    };
    if to == base.id() {
        return Ok(Plan::Nothing);
    }
    Ok(Plan::Move {
        from: base.id(),
        to,
        branch_tip: tip.id(),
        commits: picks.len(),
        fast_forward: false,
    })
}

/// The commits from `tip` back to `stop` (excluded) along first parents, newest first.
pub(crate) fn first_parent_picks<'r>(tip: &Commit<'r>, stop: Oid) -> Result<Vec<Commit<'r>>> {
    let mut picks = Vec::new();
    let mut current = tip.clone();
    while current.id() != stop {
        picks.push(current.clone());
        current = current.parent(0).context("walking the branch")?;
    }
    Ok(picks)
}

/// What replaying commits onto another came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Replayed {
    /// The new tip (`onto` itself when every commit was already there).
    Onto(Oid),
    /// These paths conflict and `take` had no content for them; no ref was touched.
    Conflict(Vec<String>),
}

/// Replays `picks` (newest first, as [`first_parent_picks`] walks them) onto `onto` in memory,
/// as `git rebase` would: each by its author, committed by `signature`; a pick already there
/// is dropped. A path that conflicts takes `take(path)`'s content (repository-relative,
/// `/`-separated) when it has some.
pub(crate) fn replay<'r>(
    repo: &'r Repository,
    onto: &Commit<'r>,
    picks: &[Commit<'r>],
    signature: &Signature,
    take: &dyn Fn(&str) -> Result<Option<Vec<u8>>>,
) -> Result<Replayed> {
    let mut onto = onto.clone();
    for pick in picks.iter().rev() {
        let mainline = if pick.parent_count() > 1 { 1 } else { 0 };
        let mut index = repo
            .cherrypick_commit(pick, &onto, mainline, None)
            .with_context(|| format!("replaying commit {}", pick.id()))?;
        if index.has_conflicts() {
            let unresolved = resolve_conflicts(repo, &mut index, take)?;
            if !unresolved.is_empty() {
                return Ok(Replayed::Conflict(unresolved));
            }
        }
        let tree = repo.find_tree(index.write_tree_to(repo)?)?;
        // Already there (an empty pick): dropped, as `git rebase` does.
        if tree.id() == onto.tree_id() {
            continue;
        }
        let message = String::from_utf8_lossy(pick.message_raw_bytes()).into_owned();
        let oid = repo.commit(None, &pick.author(), signature, &message, &tree, &[&onto])?;
        onto = repo.find_commit(oid)?;
    }
    Ok(Replayed::Onto(onto.id()))
}

/// Gives each conflicting path of `index` the content `take` has for it; the paths it has
/// none for (then nothing is changed), at most a few.
fn resolve_conflicts(
    repo: &Repository,
    index: &mut Index,
    take: &dyn Fn(&str) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for conflict in index.conflicts().context("reading the conflicts")? {
        let conflict = conflict.context("reading the conflicts")?;
        if let Some(entry) = conflict.their.or(conflict.our).or(conflict.ancestor) {
            found.push((entry.path, entry.mode));
        }
    }
    if found.is_empty() {
        bail!("the replay conflicts, but git names no path");
    }
    let mut unresolved = BTreeSet::new();
    let mut taken = Vec::new();
    for (path, mode) in found {
        let name = String::from_utf8_lossy(&path).into_owned();
        match take(&name)? {
            Some(content) => taken.push((path, mode, content)),
            None => {
                unresolved.insert(name);
            }
        }
    }
    if !unresolved.is_empty() {
        return Ok(unresolved.into_iter().take(MAX_LISTED_CONFLICTS).collect());
    }
    for (path, mode, content) in taken {
        use std::os::unix::ffi::OsStrExt as _;
        let id = repo.blob(&content)?;
        index.conflict_remove(Path::new(std::ffi::OsStr::from_bytes(&path)))?;
        let regular = if mode == 0o100755 { mode } else { 0o100644 };
        index.add(&git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: regular,
            uid: 0,
            gid: 0,
            file_size: u32::try_from(content.len()).unwrap_or(u32::MAX),
            id,
            flags: 0,
            flags_extended: 0,
            path,
        })?;
    }
    Ok(Vec::new())
}

/// Moves the base branch from `from` to `to`: the main work tree's files first (when it is on
/// the base branch), then the ref, compared and swapped. Run again after a kill it finishes
/// the move; `Ok(false)` when the base branch is neither at `from` nor at `to` (someone moved
/// it: plan again).
pub fn apply(main_dir: &Path, wt: &SessionWorktree, from: Oid, to: Oid) -> Result<bool> {
    let repo = open(main_dir)?;
    let base_ref = format!("refs/heads/{}", wt.base);
    let current = repo
        .refname_to_id(&base_ref)
        .with_context(|| format!("reading {base_ref}"))?;
    if current != to {
        if current != from {
            return Ok(false);
        }
        let on_base = repo
            .find_reference("HEAD")
            .ok()
            .and_then(|head| head.symbolic_target().map(|t| t == base_ref))
            .unwrap_or(false);
        if on_base {
            update_work_tree(&repo, from, to, &|_| false)?;
        }
        super::crash_point("integrate-checkout");
        let summary = format!("orchestrator: integrate {}", wt.branch);
        repo.reference_matching(&base_ref, to, true, from, &summary)
            .with_context(|| format!("moving {base_ref} to {to}"))?;
    }
    Ok(true)
}

/// Brings the main work tree and index from `from`'s tree to `to`'s, touching only the paths
/// that differ. A file there that is neither as `from` nor as `to` has it (the user changed
/// it) is never overwritten: the move is refused, unless `regenerated(path)` says the file is
/// one orchestrator writes from elsewhere (a fleet store's export). One already as `to` has
/// it (a move cut off halfway) is simply taken.
pub(crate) fn update_work_tree(
    repo: &Repository,
    from: Oid,
    to: Oid,
    regenerated: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let root = repo
        .workdir()
        .ok_or_else(|| anyhow!("the repository has no work tree"))?
        .to_path_buf();
    let old = repo.find_commit(from)?.tree()?;
    let new_commit = repo.find_commit(to)?;
    let new = new_commit.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None)?;
    let mut builder = CheckoutBuilder::new();
    let mut changed_there = Vec::new();
    let mut paths = 0;
    for delta in diff.deltas() {
        for (path, file_from, file_to) in [
            (delta.old_file().path(), delta.old_file(), delta.new_file()),
            (delta.new_file().path(), delta.old_file(), delta.new_file()),
        ] {
            let Some(path) = path else { continue };
            let on_disk = root.join(path);
            let here = match fs::symlink_metadata(&on_disk) {
                Ok(meta) if meta.is_file() => {
                    Some(Oid::hash_file(git2::ObjectType::Blob, &on_disk)?)
                }
                Ok(_) => Some(Oid::zero()),
                Err(_) => None,
            };
            let as_in = |file: git2::DiffFile<'_>| match here {
                None => !file.exists(),
                Some(id) => file.exists() && file.id() == id,
            };
            let name = path.to_string_lossy();
            if !as_in(file_from) && !as_in(file_to) && !regenerated(&name) {
                changed_there.push(name.into_owned());
            }
            builder.path(path);
            paths += 1;
        }
    }
    if !changed_there.is_empty() {
        changed_there.dedup();
        bail!(
            "cannot bring the integrated work into the main work tree: {} changed there \
             (commit or stash them, then run the command again)",
            changed_there.join(", ")
        );
    }
    if paths == 0 {
        return Ok(());
    }
    builder.force();
    repo.checkout_tree(new_commit.as_object(), Some(&mut builder))
        .context("updating the main work tree")
}

/// Removes the worktree (its files and git's record of it) and, when `delete_branch` and the
/// base branch holds everything on it (or the branch is still at `integrated_tip`, which a
/// rebase brought onto the base branch as new commits), the branch. Nothing there: nothing
/// to do.
pub fn remove(
    main_dir: &Path,
    task: &str,
    wt: &SessionWorktree,
    delete_branch: bool,
    integrated_tip: Option<Oid>,
) -> Result<bool> {
    let repo = open(main_dir)?;
    remove_worktree(&repo, &admin_name(task), &wt.path)?;
    if !delete_branch {
        return Ok(false);
    }
    let Some(tip) = branch_tip(&repo, &wt.branch)? else {
        return Ok(true);
    };
    let base = branch_tip(&repo, &wt.base)?;
    let merged = integrated_tip == Some(tip.id())
        || base.is_some_and(|base| {
            base.id() == tip.id()
                || repo
                    .graph_descendant_of(base.id(), tip.id())
                    .unwrap_or(false)
        });
    if !merged {
        return Ok(false);
    }
    let mut branch = repo.find_branch(&wt.branch, BranchType::Local)?;
    branch
        .delete()
        .with_context(|| format!("deleting the branch {}", wt.branch))?;
    Ok(true)
}

fn remove_worktree(repo: &Repository, name: &str, path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    if let Ok(worktree) = repo.find_worktree(name) {
        let mut options = WorktreePruneOptions::new();
        options.valid(true).working_tree(false).locked(false);
        worktree
            .prune(Some(&mut options))
            .with_context(|| format!("pruning git's record of the worktree {name}"))?;
    }
    Ok(())
}

/// Whether anything in the worktree is left uncommitted (ignored files, and `ours`: paths
/// relative to the worktree that orchestrator put there, aside): such a worktree is kept, not
/// removed. Its paths, at most a few.
pub fn uncommitted(path: &Path, ours: &[String]) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let repo = Repository::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options))?;
    Ok(statuses
        .iter()
        .filter_map(|s| s.path().map(str::to_string))
        .filter(|p| !ours.contains(p))
        .take(MAX_LISTED_CONFLICTS)
        .collect())
}

/// Keeps `rel` (relative to the repository root) out of `git add -A` in every work tree of the
/// repository, the main one and the worktrees, through the shared `info/exclude` (gitignore
/// reference: "$GIT_DIR/info/exclude"; linked worktrees read the common one). Used for the
/// settings file orchestrator copies into a worktree, which must never reach a commit.
pub fn exclude_everywhere(main_dir: &Path, rel: &str) -> Result<()> {
    let repo = open(main_dir)?;
    let path = repo.commondir().join("info").join("exclude");
    let line = format!("/{rel}");
    let text = fs::read_to_string(&path).unwrap_or_default();
    if text.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut new = text;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&format!(
        "# orchestrator: copied into session worktrees, never committed\n{line}\n"
    ));
    crate::store::file::write_atomic(&path, new.as_bytes())
}

/// The workspace's place in the repository, `/`-terminated (empty at the root).
pub fn workspace_prefix(wt: &SessionWorktree) -> String {
    wt.workdir
        .strip_prefix(&wt.path)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| format!("{}/", p.to_string_lossy()))
        .unwrap_or_default()
}

/// The paths orchestrator puts in a worktree, relative to its root.
pub fn our_files(wt: &SessionWorktree) -> Vec<String> {
    vec![format!(
        "{}{}",
        workspace_prefix(wt),
        crate::agents::claude_settings::LOCAL_FILE
    )]
}

/// Whether the branch still holds commits the base branch does not.
pub fn unintegrated(main_dir: &Path, wt: &SessionWorktree) -> Result<bool> {
    let repo = open(main_dir)?;
    let (Some(tip), Some(base)) = (branch_tip(&repo, &wt.branch)?, branch_tip(&repo, &wt.base)?)
    else {
        return Ok(false);
    };
    Ok(tip.id() != base.id() && !repo.graph_descendant_of(base.id(), tip.id())?)
}

fn open(dir: &Path) -> Result<Repository> {
    Repository::discover(dir)
        .with_context(|| format!("opening the git repository at {}", dir.display()))
}

pub(crate) fn signature(repo: &Repository) -> Result<Signature<'static>> {
    match repo.signature() {
        Ok(sig) => Ok(sig.to_owned()),
        Err(_) => Ok(Signature::now(
            super::vcs::FALLBACK_NAME,
            super::vcs::FALLBACK_EMAIL,
        )?),
    }
}

/// Worktrees under the workspace with no record beside them: left by a `start` killed between
/// making the worktree and recording it. Each as it would be recorded, its base the branch the
/// main work tree is on.
pub fn orphans(ws_root: &Path) -> Result<Vec<(String, SessionWorktree)>> {
    let dir = ws_root.join(crate::store::STATE_DIR).join(WORKTREES_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let repo = open(ws_root)?;
    let base = repo
        .head()
        .ok()
        .filter(|h| h.is_branch())
        .and_then(|h| h.shorthand().map(str::to_string))
        .unwrap_or_default();
    let root = repo.workdir().map(Path::to_path_buf).unwrap_or_default();
    let root = fs::canonicalize(&root).unwrap_or(root);
    let ws_canonical = fs::canonicalize(ws_root).unwrap_or_else(|_| ws_root.to_path_buf());
    let prefix = ws_canonical
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(task) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !path.is_dir() || record_path(ws_root, &task).exists() {
            continue;
        }
        found.push((
            task.clone(),
            SessionWorktree {
                workdir: if prefix.as_os_str().is_empty() {
                    path.clone()
                } else {
                    path.join(&prefix)
                },
                path,
                branch: format!("{BRANCH_PREFIX}{task}"),
                base: base.clone(),
            },
        ));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// A repository on `main` with `a.txt`, and the branch `orchestrator/t` made from it.
    fn repo() -> (tempfile::TempDir, PathBuf, SessionWorktree) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        git(&root, &["config", "user.name", "T"]);
        git(&root, &["config", "user.email", "t@example.com"]);
        fs::write(root.join("a.txt"), "one\ntwo\n").unwrap();
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-qm", "init"]);
        git(&root, &["branch", "orchestrator/t"]);
        let wt = SessionWorktree {
            path: root.join("wt"),
            workdir: root.join("wt"),
            branch: "orchestrator/t".into(),
            base: "main".into(),
        };
        (tmp, root, wt)
    }

    /// Commits `path` = `text` on `branch` without touching the main work tree.
    fn commit_on(root: &Path, branch: &str, path: &str, text: &str) {
        let repo = Repository::open(root).unwrap();
        let parent = repo
            .find_branch(branch, BranchType::Local)
            .unwrap()
            .get()
            .peel_to_commit()
            .unwrap();
        let blob = repo.blob(text.as_bytes()).unwrap();
        let mut builder = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
        builder.insert(path, blob, 0o100644).unwrap();
        let tree = repo.find_tree(builder.write().unwrap()).unwrap();
        let sig = Signature::now("T", "t@example.com").unwrap();
        repo.commit(
            Some(&format!("refs/heads/{branch}")),
            &sig,
            &sig,
            &format!("{path} on {branch}"),
            &tree,
            &[&parent],
        )
        .unwrap();
    }

    #[test]
    fn a_branch_whose_base_commit_was_replayed_keeps_the_base_branchs_stack() {
        for mode in [Integrate::Rebase, Integrate::Merge] {
            let (_tmp, root, wt) = repo();
            // One machine's wrap commit X on main; the session branch is forked from it.
            commit_on(&root, "main", "task_stack.json", "x\n");
            git(&root, &["branch", "-f", "orchestrator/t", "main"]);
            commit_on(&root, "orchestrator/t", "w.txt", "w");
            // A push replays main onto another machine's work: X is gone from main, and the
            // stack there is another export.
            git(&root, &["reset", "-q", "--hard", "HEAD~1"]);
            commit_on(&root, "main", "task_stack.json", "r\n");
            let Plan::Move { to, .. } = plan(&root, &wt, mode, "m").unwrap() else {
                panic!("{mode:?}: not integrated");
            };
            let repo = Repository::open(&root).unwrap();
            let tree = repo.find_commit(to).unwrap().tree().unwrap();
            let text = |path: &str| {
                let blob = tree
                    .get_path(Path::new(path))
                    .unwrap()
                    .to_object(&repo)
                    .unwrap();
                String::from_utf8(blob.into_blob().unwrap().content().to_vec()).unwrap()
            };
            assert_eq!(text("task_stack.json"), "r\n", "{mode:?}");
            assert_eq!(text("w.txt"), "w", "{mode:?}");
        }
    }

    #[test]
    fn nothing_on_the_branch_is_nothing_to_integrate() {
        let (_tmp, root, wt) = repo();
        assert_eq!(
            plan(&root, &wt, Integrate::Rebase, "m").unwrap(),
            Plan::Nothing
        );
        commit_on(&root, "main", "b.txt", "b");
        assert_eq!(
            plan(&root, &wt, Integrate::Merge, "m").unwrap(),
            Plan::Nothing
        );
    }

    #[test]
    fn a_base_that_did_not_move_is_a_fast_forward() {
        let (_tmp, root, wt) = repo();
        commit_on(&root, "orchestrator/t", "b.txt", "b");
        let Plan::Move {
            fast_forward,
            commits,
            to,
            branch_tip,
            ..
        } = plan(&root, &wt, Integrate::Rebase, "m").unwrap()
        else {
            panic!("a move");
        };
        assert!(fast_forward);
        assert_eq!((commits, to), (1, branch_tip));
    }

    #[test]
    fn a_rebase_replays_on_the_moved_base_and_moves_the_main_work_tree() {
        let (_tmp, root, wt) = repo();
        commit_on(&root, "orchestrator/t", "b.txt", "b");
        commit_on(&root, "main", "c.txt", "c");
        // The main work tree catches up with its branch, as a commit there would leave it.
        git(&root, &["checkout", "-q", "-f", "main"]);
        let Plan::Move { from, to, .. } = plan(&root, &wt, Integrate::Rebase, "m").unwrap() else {
            panic!("a move");
        };
        assert!(apply(&root, &wt, from, to).unwrap());
        assert_eq!(fs::read_to_string(root.join("b.txt")).unwrap(), "b");
        assert_eq!(git(&root, &["status", "--porcelain"]), "");
        assert_eq!(git(&root, &["rev-list", "--count", "main"]).trim(), "3");
        // Applied again (a wrap cut off after the move): nothing moves twice.
        assert!(apply(&root, &wt, from, to).unwrap());
        assert_eq!(git(&root, &["rev-list", "--count", "main"]).trim(), "3");
    }

    #[test]
    fn a_conflict_names_the_paths_and_changes_nothing() {
        let (_tmp, root, wt) = repo();
        commit_on(&root, "orchestrator/t", "a.txt", "one\nTWO\n");
        commit_on(&root, "main", "a.txt", "one\nzwei\n");
        let main = git(&root, &["rev-parse", "main"]);
        for mode in [Integrate::Rebase, Integrate::Merge] {
            assert_eq!(
                plan(&root, &wt, mode, "m").unwrap(),
                Plan::Conflict(vec!["a.txt".into()])
            );
        }
        assert_eq!(git(&root, &["rev-parse", "main"]), main);
    }

    #[test]
    fn a_main_work_tree_file_changed_by_hand_is_never_overwritten() {
        let (_tmp, root, wt) = repo();
        commit_on(&root, "orchestrator/t", "a.txt", "one\nTWO\n");
        fs::write(root.join("a.txt"), "mine\n").unwrap();
        let Plan::Move { from, to, .. } = plan(&root, &wt, Integrate::Rebase, "m").unwrap() else {
            panic!("a move");
        };
        let err = apply(&root, &wt, from, to).unwrap_err();
        assert!(
            format!("{err:#}").contains("a.txt changed there"),
            "{err:#}"
        );
        assert_eq!(fs::read_to_string(root.join("a.txt")).unwrap(), "mine\n");
        assert_eq!(git(&root, &["rev-parse", "main"]).trim(), from.to_string());
    }
}

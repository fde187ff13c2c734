// TEMPORARY placeholder until the real module lands.
use std::path::{Path, PathBuf};
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SkippedFile {
    pub path: String,
    pub bytes: u64,
    pub reason: String,
}
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DiffStats {
    pub files_changed: usize,
    pub insertions: usize,
    pub deletions: usize,
}
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommitOutcome {
    Committed {
        oid: String,
        branch: Option<String>,
        stats: DiffStats,
        skipped: Vec<SkippedFile>,
        detached: bool,
        fallback_identity: bool,
    },
    NothingToCommit {
        skipped: Vec<SkippedFile>,
    },
    NotARepository,
}
pub struct CommitRequest<'a> {
    pub workdir: &'a Path,
    pub message: &'a str,
    pub exclude: &'a [PathBuf],
    pub exclude_globs: &'a [String],
    pub max_file_bytes: u64,
}
pub struct CommitPlan {
    pub stats: DiffStats,
    pub skipped: Vec<SkippedFile>,
}
pub fn commit_all(_r: &CommitRequest) -> anyhow::Result<CommitOutcome> {
    Ok(CommitOutcome::NotARepository)
}
pub fn plan_commit(_r: &CommitRequest) -> anyhow::Result<Option<CommitPlan>> {
    Ok(None)
}
pub fn head_oid(_w: &Path) -> anyhow::Result<Option<String>> {
    Ok(None)
}
pub fn diff_stats_worktree(_w: &Path, _s: Option<&str>) -> anyhow::Result<Option<DiffStats>> {
    Ok(None)
}
pub fn find_commit_with_trailer(
    _w: &Path,
    _s: Option<&str>,
    _k: &str,
    _v: &str,
) -> anyhow::Result<Option<String>> {
    Ok(None)
}

//! A session: one agent working on one task, from `start` to `wrap`.
//!
//! The record lives in `.orchestrator/sessions/active/<id>.json` while the session runs and is
//! archived when it is wrapped. It holds every checkpoint (the stack keeps only the recent ones)
//! and the wrap journal that makes an interrupted wrap resumable.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::budget::Usage;
use super::pricing::Cost;
use super::stack::{BudgetSettings, Checkpoint, Progress};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub id: String,
    pub agent: String,
    pub task: String,
    pub started: DateTime<Utc>,
    pub lease_expires: DateTime<Utc>,
    /// Where `start` ran, for the humans who find the session: identity checks use `agent`.
    pub host: String,
    pub pid: u32,
    /// The parent of the process that ran `start`: usually the agent's shell, which outlives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_pid: Option<u32>,
    /// The token budget for this session (`start --budget` or the stack's setting at start).
    pub budget: u64,
    #[serde(default)]
    pub tokens: Option<TokenReading>,
    /// The agent's transcript, where token usage is read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<PathBuf>,
    /// Where `transcript` came from. Only one found from the agent's environment is looked up
    /// again at each command (Claude Code starts a new file on `/clear`); `None` (a record
    /// written before this field) is kept as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_origin: Option<TranscriptOrigin>,
    /// The latest value of each meter fed by `checkpoint --usage`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meters: BTreeMap<String, u64>,
    pub progress_at_start: Progress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_head_at_start: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_at_start: Vec<MetricValue>,
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    #[serde(default)]
    pub issues: Vec<String>,
    /// What the session's tokens cost per model, as of its last checkpoint or its wrap (read from
    /// its transcript).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// The agent compacted its context (Claude Code's `PreCompact` hook), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compactions: Vec<Compaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrap: Option<WrapJournal>,
    /// The session's own git worktree, when it works in one (`start --worktree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<SessionWorktree>,
    /// The fencing token of the session's claim on its task: every write under the claim
    /// carries it. 0 for a session started before tokens existed (its task's token is 0 too).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fence: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where a session in its own worktree works and where its work goes back to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionWorktree {
    /// The worktree's root, absolute.
    pub path: PathBuf,
    /// The agent's directory: the workspace's place inside the worktree.
    pub workdir: PathBuf,
    /// `orchestrator/<task-id>`.
    pub branch: String,
    /// The branch it was made from and is integrated into (short name).
    pub base: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One compaction of the agent's context.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Compaction {
    pub at: DateTime<Utc>,
    /// `manual` (`/compact`) or `auto`, as the agent reports it.
    pub trigger: String,
    /// The context fill just before, when the transcript gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

/// How a session found its transcript.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptOrigin {
    /// `start --transcript PATH`.
    Given,
    /// The `transcript_path` of a Claude Code hook's input.
    Hook,
    /// `CLAUDE_CODE_SESSION_ID` in the agent's environment.
    Environment,
}

/// The latest token figure and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenReading {
    pub used: u64,
    pub source: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricValue {
    pub name: String,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a wrap was asked to do and which of its steps are complete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WrapJournal {
    pub begun: DateTime<Utc>,
    /// When the session's work ended: the wrap time, or the last sign of life for a recovery.
    pub ended: DateTime<Utc>,
    pub reason: String,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub next_steps: Vec<String>,
    #[serde(default)]
    pub mark_done: bool,
    #[serde(default)]
    pub backup_enabled: bool,
    #[serde(default)]
    pub commit_enabled: bool,
    #[serde(default)]
    pub steps: WrapSteps,
    /// The last lines the agent printed, when `run` wrapped the session after the agent ended
    /// on its own (exited or crashed); cleaned and bounded by `core::text::output_tail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_output: Option<String>,
    /// The task's progress when the session ended, recorded with the handoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// What the session changed, measured when the handoff was written; None outside git or
    /// when git could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<SessionChanges>,
}

/// The files a session changed and the commits its agent made, our bookkeeping left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionChanges {
    /// Changed files, in git's order, at most [`SessionChanges::MAX_FILES`].
    pub files: Vec<ChangedFile>,
    /// How many files changed in all (`files` may list fewer).
    pub files_changed: usize,
    pub insertions: usize,
    pub deletions: usize,
    /// The first lines of the agent's own commits during the session, newest first, at most
    /// [`SessionChanges::MAX_COMMITS`].
    pub commit_subjects: Vec<String>,
    /// How many commits the agent made in all.
    pub commits: usize,
    /// What the wrap's commit will leave out or not make (a merge in progress, a file too large).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl SessionChanges {
    pub const MAX_FILES: usize = 50;
    pub const MAX_COMMITS: usize = 20;

    pub fn is_empty(&self) -> bool {
        self.files_changed == 0 && self.commits == 0 && self.notes.is_empty()
    }
}

/// One changed file, its path relative to the repository root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangedFile {
    pub path: String,
    pub insertions: usize,
    pub deletions: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WrapSteps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<MetricValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    #[serde(default)]
    pub stack: bool,
    #[serde(default)]
    pub archive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Value>,
    /// A worktree session: its changes committed on its branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_commit: Option<Value>,
    /// A worktree session: its branch brought onto the base branch (or why not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrate: Option<Value>,
    /// A worktree session: its worktree (and merged branch) removed, or kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<Value>,
}

impl WrapJournal {
    /// The wrap's steps in order, split into those recorded as done and those still to do.
    /// A backup or commit that failed during a recovery is done: it is not retried.
    /// `worktree`: the session works in its own worktree, which adds its steps.
    pub fn step_states(&self, worktree: bool) -> (Vec<&'static str>, Vec<&'static str>) {
        let recorded =
            |step: &Option<Value>| step.as_ref().is_some_and(|v| v["result"] != "pending");
        let mut steps = vec![
            ("backup", recorded(&self.steps.backup)),
            ("metrics", self.steps.metrics.is_some()),
        ];
        if worktree {
            steps.push(("branch_commit", recorded(&self.steps.branch_commit)));
            steps.push(("integrate", recorded(&self.steps.integrate)));
        }
        steps.extend([
            ("handoff", self.steps.handoff.is_some()),
            ("stack", self.steps.stack),
            ("archive", self.steps.archive),
            ("commit", recorded(&self.steps.commit)),
        ]);
        if worktree {
            steps.push(("cleanup", self.steps.cleanup.is_some()));
        }
        let (done, pending): (Vec<_>, Vec<_>) = steps.into_iter().partition(|(_, done)| *done);
        (
            done.into_iter().map(|(name, _)| name).collect(),
            pending.into_iter().map(|(name, _)| name).collect(),
        )
    }
}

/// One checkpoint's effect on its session. Checkpoints append these to a log beside the session
/// record (one durable append instead of rewriting the whole record); readers replay them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointEvent {
    /// The checkpoint's index in the session: replay skips what the record already holds.
    pub seq: usize,
    pub checkpoint: Checkpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenReading>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<String>,
    /// The transcript found from the agent's environment, when it is not the one the session
    /// had (it had none, or `/clear` started a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_origin: Option<TranscriptOrigin>,
    /// Meter values after this checkpoint (absolute, so a replay cannot count twice).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meters: BTreeMap<String, u64>,
    /// The session's cost so far, from its transcript (absolute, as `meters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    pub lease_expires: DateTime<Utc>,
}

impl WrapJournal {
    /// A session that moved nothing: no progress, not marked done, no file changed, no commit,
    /// no next step, no issue, no database metric moved. Its handoff is one line and the task keeps pointing at the
    /// last handoff with content. Unknown changes (outside git) never count as none.
    pub fn changed_nothing(&self, session: &Session, progress: Progress) -> bool {
        !self.mark_done
            && progress == session.progress_at_start
            && self.changes.as_ref().is_some_and(SessionChanges::is_empty)
            && self.next_steps.iter().all(|s| s.trim().is_empty())
            && session.issues.is_empty()
            && self.steps.metrics.as_ref().is_none_or(|metrics| {
                metrics.iter().all(|m| {
                    let before = session.metrics_at_start.iter().find(|b| b.name == m.name);
                    before.is_some_and(|b| b.value == m.value)
                })
            })
    }
}

/// The recovery reason written by `start` for a session whose lease ran out.
pub const REASON_RECOVERED: &str = "recovered";

impl Session {
    pub fn lease(minutes: u64) -> Duration {
        Duration::minutes(i64::try_from(minutes).unwrap_or(i64::MAX / 120_000))
    }

    pub fn is_wrapping(&self) -> bool {
        self.wrap.is_some()
    }

    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        !self.is_wrapping() && self.lease_expires <= now
    }

    pub fn tokens_used(&self) -> u64 {
        self.tokens.as_ref().map_or(0, |t| t.used)
    }

    pub fn usage(&self, budget: &BudgetSettings) -> Usage {
        Usage {
            used: self.tokens_used(),
            limit: self.budget,
            warn: budget.warn,
            shutdown: budget.shutdown,
        }
    }

    /// Folds a logged checkpoint into the record, unless the record already has it.
    pub fn apply(&mut self, event: CheckpointEvent) {
        if event.seq < self.checkpoints.len() {
            return;
        }
        self.checkpoints.push(event.checkpoint);
        if event.tokens.is_some() {
            self.tokens = event.tokens;
        }
        self.issues.extend(event.issues);
        self.meters.extend(event.meters);
        if event.cost.is_some() {
            self.cost = event.cost;
        }
        if event.transcript.is_some() {
            self.transcript = event.transcript;
            self.transcript_origin = event.transcript_origin;
        }
        self.lease_expires = event.lease_expires;
    }

    /// The last time the session showed signs of life.
    pub fn last_activity(&self) -> DateTime<Utc> {
        self.checkpoints.last().map_or(self.started, |c| c.at)
    }
}

/// The lease after a sign of life at `now`. A lease never moves backwards: a clock that steps
/// back would otherwise shorten it, and another agent would recover a session that is alive.
pub fn renewed_lease(held: DateTime<Utc>, now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    held.max(now + lease)
}

/// "6 minutes", "1 hour 5 minutes", "less than a minute".
pub fn describe_duration(duration: Duration) -> String {
    let minutes = duration.num_minutes().max(0);
    if minutes == 0 {
        return "less than a minute".into();
    }
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let (hours, minutes) = (minutes / 60, minutes % 60);
    match (hours, minutes) {
        (0, m) => plural(m, "minute"),
        (h, 0) => plural(h, "hour"),
        (h, m) => format!("{} {}", plural(h, "hour"), plural(m, "minute")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_a_checkpoint_twice_changes_nothing() {
        use chrono::TimeZone;
        let t = Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap();
        let mut session = Session {
            id: "session_20251106_000000".into(),
            agent: "a".into(),
            task: "t".into(),
            started: t,
            lease_expires: t,
            host: "h".into(),
            pid: 1,
            parent_pid: None,
            budget: 10,
            tokens: None,
            transcript: None,
            transcript_origin: None,
            meters: BTreeMap::new(),
            progress_at_start: Progress { done: 0, total: 3 },
            git_head_at_start: None,
            metrics_at_start: vec![],
            checkpoints: vec![],
            issues: vec![],
            wrap: None,
            worktree: None,
            compactions: Vec::new(),
            fence: 0,
            cost: None,
            extra: Map::new(),
        };
        let event = CheckpointEvent {
            seq: 0,
            checkpoint: Checkpoint {
                at: t,
                session: session.id.clone(),
                message: "m".into(),
                progress: 1,
                tokens: Some(5),
                extra: Map::new(),
            },
            tokens: Some(TokenReading {
                used: 5,
                source: "explicit".into(),
                at: t,
            }),
            issues: vec!["i".into()],
            meters: BTreeMap::from([("calls".to_string(), 7)]),
            transcript: None,
            transcript_origin: None,
            cost: None,
            lease_expires: t + Duration::minutes(30),
        };
        session.apply(event.clone());
        session.apply(event);
        assert_eq!(session.checkpoints.len(), 1);
        assert_eq!(session.issues, ["i"]);
        assert_eq!(session.tokens_used(), 5);
        assert_eq!(session.meters["calls"], 7);
        assert_eq!(session.lease_expires, t + Duration::minutes(30));
    }

    #[test]
    fn a_lease_never_moves_backwards() {
        use chrono::TimeZone;
        let t = Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap();
        let lease = Duration::minutes(30);
        let held = t + Duration::minutes(50);
        assert_eq!(renewed_lease(held, t + Duration::minutes(5), lease), held);
        assert_eq!(
            renewed_lease(held, t + Duration::minutes(40), lease),
            t + Duration::minutes(70)
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(
            describe_duration(Duration::seconds(30)),
            "less than a minute"
        );
        assert_eq!(
            describe_duration(Duration::seconds(6 * 60 + 6)),
            "6 minutes"
        );
        assert_eq!(describe_duration(Duration::minutes(1)), "1 minute");
        assert_eq!(describe_duration(Duration::minutes(60)), "1 hour");
        assert_eq!(
            describe_duration(Duration::minutes(125)),
            "2 hours 5 minutes"
        );
        assert_eq!(
            describe_duration(Duration::minutes(-5)),
            "less than a minute"
        );
    }
}

//! The task stack: `task_stack.json`, version 1.
//!
//! Every struct keeps the fields it does not know in `extra`, so a rewrite never drops what a
//! newer orchestrator or a human put there.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path};

use super::ids::check_task_id;
use super::meters::{self, AgentSettings, MeterSettings, Named, check_thresholds};
use super::pricing::PriceSetting;
use super::run::RunSettings;

pub const STACK_VERSION: u64 = 1;
/// The stack keeps only the latest checkpoints per task (what `task show` lists and the brief
/// draws on); the session record and its archive keep them all.
pub const RECENT_CHECKPOINTS: usize = 10;

/// Deserializes a struct whose unknown keys are kept in `extra`, without serde's `flatten`:
/// flatten buffers every value of every task and checkpoint, which made reading a large stack
/// several times slower, and every checkpoint reads the whole stack.
macro_rules! deserialize_keeping_unknown_fields {
    ($ty:ident { required: [$($req:ident),*], optional: [$($opt:ident = $default:expr),*] $(, unread: [$($unread:ident),*])? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FieldsVisitor;
                impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($ty), " object"))
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        $(let mut $req = None;)*
                        $(let mut $opt = None;)*
                        let mut extra = Map::new();
                        while let Some(key) = map.next_key_seed(FieldName)? {
                            match key.as_ref() {
                                $(stringify!($req) => {
                                    if $req.is_some() {
                                        return Err(serde::de::Error::duplicate_field(stringify!($req)));
                                    }
                                    $req = Some(map.next_value()?);
                                })*
                                $(stringify!($opt) => {
                                    if $opt.is_some() {
                                        return Err(serde::de::Error::duplicate_field(stringify!($opt)));
                                    }
                                    $opt = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: Value = map.next_value()?;
                                    extra.insert(key.into_owned(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| serde::de::Error::missing_field(stringify!($req)))?,)*
                            $($opt: $opt.unwrap_or_else(|| $default),)*
                            $($($unread: Default::default(),)*)?
                            extra,
                        })
                    }
                }
                deserializer.deserialize_map(FieldsVisitor)
            }
        }
    };
}

/// A field name, borrowed from the text when it has no escape: reading a stack then allocates
/// nothing per key of every task and checkpoint.
struct FieldName;

impl<'de> serde::de::DeserializeSeed<'de> for FieldName {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = std::borrow::Cow<'de, str>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(std::borrow::Cow::Borrowed(name))
            }

            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(std::borrow::Cow::Owned(name.to_string()))
            }

            fn visit_string<E>(self, name: String) -> Result<Self::Value, E> {
                Ok(std::borrow::Cow::Owned(name))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskStack {
    pub version: u64,
    pub settings: Settings,
    pub tasks: Vec<Task>,
    /// The generation of the last checkpoint journal folded into this file (see
    /// `store::journal`): journal records of this generation or older are already in it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub journal_generation: u64,
    /// What a shared store gave for each task (see [`Loaded`]); empty for the file store.
    #[serde(skip)]
    pub loaded: Loaded,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Each task's text as a shared store gave it when the stack was loaded, so that saving the
/// stack writes only the tasks a command changed, and refuses one that another machine
/// changed meanwhile (compare and swap) rather than overwrite it. Shared by the stack's clones
/// and updated by a save. Never part of the file, nor of a stack's equality.
#[derive(Debug, Clone, Default)]
pub struct Loaded(pub Option<std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>>);

impl PartialEq for Loaded {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Loaded {
    /// The key under which the stack's top level (version, settings) is kept.
    pub const TOP: &'static str = "";

    pub fn new(texts: HashMap<String, String>) -> Loaded {
        Loaded(Some(std::sync::Arc::new(std::sync::Mutex::new(texts))))
    }
}

// Not serde's derive: its `flatten` would buffer the whole task list before reading it.
deserialize_keeping_unknown_fields!(TaskStack {
    required: [version],
    optional: [
        settings = Settings::default(),
        tasks = Vec::new(),
        journal_generation = 0
    ],
    unread: [loaded]
});

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    pub budget: BudgetSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSettings>,
    pub git: GitSettings,
    pub handoff_dir: String,
    pub lease_minutes: u64,
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub meters: Named<MeterSettings>,
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub agents: Named<AgentSettings>,
    #[serde(skip_serializing_if = "RunSettings::is_default")]
    pub run: RunSettings,
    /// Where the state lives when it is not the files: the fleet store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSettings>,
    #[serde(skip_serializing_if = "ParallelSettings::is_default")]
    pub parallel: ParallelSettings,
    /// Prices per model over the embedded table (`core::pricing`).
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub pricing: Named<PriceSetting>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parallel sessions: a git worktree per session and how its branch comes back at wrap.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ParallelSettings {
    /// Every session gets its own worktree, as `start --worktree` does.
    pub worktrees: bool,
    pub integrate: Integrate,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for ParallelSettings {
    fn default() -> Self {
        ParallelSettings {
            worktrees: false,
            integrate: Integrate::Rebase,
            extra: Map::new(),
        }
    }
}

impl ParallelSettings {
    pub fn is_default(&self) -> bool {
        *self == ParallelSettings::default()
    }
}

/// How a session's branch is brought onto the base branch at wrap.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Integrate {
    /// Its commits replayed on the base branch's tip (a fast-forward when nothing moved).
    #[default]
    Rebase,
    /// A merge commit (a fast-forward when the base branch has not moved).
    Merge,
    /// Left on its branch, for a pull request.
    Branch,
}

impl Integrate {
    pub fn as_str(self) -> &'static str {
        match self {
            Integrate::Rebase => "rebase",
            Integrate::Merge => "merge",
            Integrate::Branch => "branch",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            budget: BudgetSettings::default(),
            database: None,
            git: GitSettings::default(),
            handoff_dir: "session_handoffs".into(),
            lease_minutes: 30,
            meters: Named::default(),
            agents: Named::default(),
            run: RunSettings::default(),
            store: None,
            parallel: ParallelSettings::default(),
            pricing: Named::default(),
            extra: Map::new(),
        }
    }
}

/// `settings.store`: `{"postgres": {"url_env": "ORCHESTRATOR_PG_URL", "timeout_seconds": 10}}`.
/// The URL itself, which carries the password, is read from that environment variable and never
/// written to the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSettings>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresSettings {
    pub url_env: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub const HANDOFF_DIR_SETTING: &str = "settings.handoff_dir";
pub const BACKUP_DIR_SETTING: &str = "settings.database.backup_dir";

impl Settings {
    /// Where `agent` compacts its context on its own and the setting that says so:
    /// `settings.agents.<agent>.compact_at`, else the deprecated `settings.budget.compact_at`.
    pub fn compact_at(&self, agent: &str) -> Option<(f64, String)> {
        match self.agents.get(agent).and_then(|a| a.compact_at) {
            Some(at) => Some((at, format!("settings.agents.{agent}.compact_at"))),
            None => self.budget.compact_at.map(|at| {
                (
                    at,
                    "settings.budget.compact_at, deprecated for settings.agents.<name>.compact_at"
                        .to_string(),
                )
            }),
        }
    }

    /// The compaction warning owed for `agent`'s sessions, if any.
    pub fn compaction_warning(&self, agent: &str) -> Option<String> {
        let (at, setting) = self.compact_at(agent)?;
        super::budget::compaction_conflict(self.budget.shutdown, at, &setting)
    }

    /// The compaction warnings owed for every agent the settings state a point for.
    pub fn compaction_warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| a.compact_at.is_some())
            .filter_map(|(name, _)| self.compaction_warning(name))
            .collect();
        if let Some(at) = self.budget.compact_at {
            warnings.extend(super::budget::compaction_conflict(
                self.budget.shutdown,
                at,
                "settings.budget.compact_at, deprecated for settings.agents.<name>.compact_at",
            ));
        }
        warnings
    }

    /// The directory settings that must stay inside the workspace once symlinks are resolved,
    /// as (setting, value). An absolute backup_dir is left out: the user chose that disk.
    pub fn paths_inside_workspace(&self) -> Vec<(&'static str, &str)> {
        let mut paths = vec![(HANDOFF_DIR_SETTING, self.handoff_dir.as_str())];
        if let Some(db) = &self.database
            && !Path::new(&db.backup_dir).is_absolute()
        {
            paths.push((BACKUP_DIR_SETTING, db.backup_dir.as_str()));
        }
        paths
    }
}

/// The lexical half of "writes stay inside the workspace": no absolute path (unless
/// `absolute_allowed`) and no `..`. Refusing every `..`, not only one that climbs above the
/// root, keeps the symlink check simple: what does not exist yet cannot lead anywhere else.
fn check_directory_setting(
    setting: &str,
    value: &str,
    absolute_allowed: bool,
) -> Result<(), Invalid> {
    let path = Path::new(value);
    let shown = value.escape_debug();
    if path.is_absolute() {
        if absolute_allowed {
            return Ok(());
        }
        return Err(Invalid(format!(
            "{setting} is the absolute path `{shown}`; orchestrator writes only inside the workspace: use a path relative to it"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        let hint = if absolute_allowed {
            "; a directory outside the workspace (a backup disk) must be written as an absolute path"
        } else {
            ""
        };
        return Err(Invalid(format!(
            "{setting} `{shown}` uses `..`, which can lead outside the workspace; orchestrator writes only inside it: use a path inside the workspace{hint}"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BudgetSettings {
    pub tokens: u64,
    pub warn: f64,
    pub shutdown: f64,
    /// Deprecated: `settings.agents.<name>.compact_at` replaces it. Still read, for every agent
    /// without its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compact_at: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            tokens: 200_000,
            warn: 0.75,
            shutdown: 0.85,
            compact_at: None,
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseSettings {
    pub path: String,
    #[serde(default = "default_backup_dir")]
    pub backup_dir: String,
    #[serde(default = "default_keep_backups")]
    pub keep_backups: usize,
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DatabaseSettings {
    pub fn new(path: String) -> Self {
        DatabaseSettings {
            path,
            backup_dir: default_backup_dir(),
            keep_backups: default_keep_backups(),
            metrics: Vec::new(),
            extra: Map::new(),
        }
    }
}

/// A folder of its own, not the project root: backups stay out of sight and out of git (see
/// `store::never_committed`). A stack that says `"backup_dir": "."` keeps backing up beside it.
pub const DEFAULT_BACKUP_DIR: &str = "backups";

fn default_backup_dir() -> String {
    DEFAULT_BACKUP_DIR.into()
}

fn default_keep_backups() -> usize {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GitSettings {
    pub commit_on_wrap: bool,
    pub commit_on_checkpoint: bool,
    pub max_file_mb: u64,
    /// The remote each wrap pushes its commit to. Unset: `origin` on a fleet store (when the
    /// clone has it), no push on the file store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// How many pushes a wrap tries when other machines keep pushing first (unset:
    /// [`PUSH_ATTEMPTS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_attempts: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The pushes a wrap tries by default: each lost race costs a fetch and an in-memory replay.
pub const PUSH_ATTEMPTS: u32 = 10;

impl Default for GitSettings {
    fn default() -> Self {
        GitSettings {
            commit_on_wrap: true,
            commit_on_checkpoint: false,
            max_file_mb: 50,
            remote: None,
            push_attempts: None,
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Pending,
    InProgress,
    Done,
    Blocked,
    Skipped,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::InProgress,
        Status::Done,
        Status::Blocked,
        Status::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Done => "done",
            Status::Blocked => "blocked",
            Status::Skipped => "skipped",
        }
    }

    /// Pending and in-progress tasks are the ones work can still happen on.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Pending | Status::InProgress)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status `{s}` (expected pending, in_progress, done, blocked or skipped)"
                )
            })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { done: 0, total: 1 }
    }
}

impl Progress {
    pub fn percent(self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.done as f64 * 100.0 / self.total as f64
    }

    pub fn is_complete(self) -> bool {
        self.done >= self.total
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.done, self.total)
    }
}

const BAR_WIDTH: u64 = 20;

/// `[#####---------------] 10/40 (25%)`
pub fn progress_bar(progress: Progress) -> String {
    let filled = (progress.done.min(progress.total) * BAR_WIDTH)
        .checked_div(progress.total)
        .unwrap_or(0) as usize;
    format!(
        "[{}{}] {progress} ({}%)",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH as usize - filled),
        super::budget::format_pct(progress.percent())
    )
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Checkpoint {
    pub at: DateTime<Utc>,
    pub session: String,
    pub message: String,
    pub progress: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_keeping_unknown_fields!(Checkpoint {
    required: [at, session, message, progress],
    optional: [tokens = None]
});

/// A task's recent checkpoints. Read lazily in a [`TaskStack::parse_view`]: selection and
/// status never look at them, and on a large stack they are most of its bytes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(transparent)]
pub struct Checkpoints(pub Vec<Checkpoint>);

impl std::ops::Deref for Checkpoints {
    type Target = Vec<Checkpoint>;
    fn deref(&self) -> &Vec<Checkpoint> {
        &self.0
    }
}

impl std::ops::DerefMut for Checkpoints {
    fn deref_mut(&mut self) -> &mut Vec<Checkpoint> {
        &mut self.0
    }
}

thread_local! {
    /// Set while [`TaskStack::parse_view`] runs: checkpoints are skipped, not built.
    static SKIP_CHECKPOINTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl<'de> Deserialize<'de> for Checkpoints {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if SKIP_CHECKPOINTS.get() {
            serde::de::IgnoredAny::deserialize(deserializer)?;
            return Ok(Checkpoints::default());
        }
        Vec::deserialize(deserializer).map(Checkpoints)
    }
}

/// A live session's hold on a task. Renewed by every checkpoint; once `lease_expires` has
/// passed, the next `start` recovers the session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub session: String,
    pub agent: String,
    pub host: String,
    pub pid: u32,
    pub lease_expires: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claim {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.lease_expires > now
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Task {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default = "default_priority")]
    pub priority: i64,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub progress: Progress,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    #[serde(default)]
    pub checkpoints: Checkpoints,
    /// The handoff of the last wrapped session on this task, relative to the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handoff: Option<String>,
    /// Why a blocked task is blocked; cleared when it leaves that status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<String>,
    /// What the task is about, beyond its title (`task add/set --description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What "done" means for this task (`--acceptance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<String>,
    /// Free notes about the task (`--notes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Problems reported by `checkpoint --issue`, kept until resolved; oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<OpenItem>,
    /// Next steps left by `wrap --next`, kept until resolved; oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_steps: Vec<OpenItem>,
    /// The last session wrapped on this task: its archived record says how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_session: Option<String>,
    /// The fencing token: raised by every claim, so a write carrying an older token (a session
    /// that lost the task) is refused. 0 for a task never claimed since tokens exist.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fence: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An open issue or next step on a task. `n` is its number, unique among the task's open
/// items and fixed while the item is open: `checkpoint --resolve N` names it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpenItem {
    pub n: u64,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_keeping_unknown_fields!(OpenItem {
    required: [n, text],
    optional: [at = None, session = None]
});

/// Which list of open items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenKind {
    Issue,
    NextStep,
}

fn default_priority() -> i64 {
    1
}

deserialize_keeping_unknown_fields!(Task {
    required: [id],
    optional: [
        title = String::new(),
        priority = default_priority(),
        status = Status::default(),
        progress = Progress::default(),
        depends_on = Vec::new(),
        claim = None,
        checkpoints = Checkpoints::default(),
        last_handoff = None,
        blocked_reason = None,
        description = None,
        acceptance = None,
        notes = None,
        issues = Vec::new(),
        next_steps = Vec::new(),
        last_session = None,
        fence = 0
    ]
});

impl Task {
    pub fn new(
        id: String,
        title: String,
        priority: i64,
        total: u64,
        depends_on: Vec<String>,
    ) -> Self {
        Task {
            id,
            title,
            priority,
            status: Status::Pending,
            progress: Progress { done: 0, total },
            depends_on,
            claim: None,
            checkpoints: Checkpoints::default(),
            last_handoff: None,
            blocked_reason: None,
            description: None,
            acceptance: None,
            notes: None,
            issues: Vec::new(),
            next_steps: Vec::new(),
            last_session: None,
            fence: 0,
            extra: Map::new(),
        }
    }

    /// The open items of both kinds, each with its kind.
    pub fn open_items(&self) -> impl Iterator<Item = (OpenKind, &OpenItem)> {
        self.issues
            .iter()
            .map(|i| (OpenKind::Issue, i))
            .chain(self.next_steps.iter().map(|i| (OpenKind::NextStep, i)))
    }

    /// Adds an open item numbered after every open one. An item of the same session with the
    /// same text is not added twice: a wrap whose stack step is redone appends nothing new.
    pub fn add_open_item(
        &mut self,
        kind: OpenKind,
        text: &str,
        at: DateTime<Utc>,
        session: &str,
    ) -> Option<u64> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let n = self.open_items().map(|(_, i)| i.n).max().unwrap_or(0) + 1;
        let list = match kind {
            OpenKind::Issue => &mut self.issues,
            OpenKind::NextStep => &mut self.next_steps,
        };
        if let Some(same) = list
            .iter()
            .find(|i| i.text == text && i.session.as_deref() == Some(session))
        {
            return Some(same.n);
        }
        list.push(OpenItem {
            n,
            text: text.to_string(),
            at: Some(at),
            session: Some(session.to_string()),
            extra: Map::new(),
        });
        Some(n)
    }

    /// Removes the open item numbered `n`; false when there is none.
    pub fn resolve_open_item(&mut self, n: u64) -> bool {
        let before = self.issues.len() + self.next_steps.len();
        self.issues.retain(|i| i.n != n);
        self.next_steps.retain(|i| i.n != n);
        before != self.issues.len() + self.next_steps.len()
    }

    /// Changes the status; a blocked task's reason goes when it is no longer blocked, and a
    /// task marked done has all its units done.
    pub fn set_status(&mut self, status: Status) {
        self.status = status;
        if status != Status::Blocked {
            self.blocked_reason = None;
        }
        if status == Status::Done {
            self.progress.done = self.progress.total;
        }
    }

    /// The reason a blocked task gave, when it is blocked and gave one.
    pub fn blocked_reason(&self) -> Option<&str> {
        (self.status == Status::Blocked)
            .then_some(self.blocked_reason.as_deref())
            .flatten()
    }

    /// Appends a checkpoint, keeping only the most recent ones.
    pub fn record_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.checkpoints.push(checkpoint);
        if self.checkpoints.len() > RECENT_CHECKPOINTS {
            let excess = self.checkpoints.len() - RECENT_CHECKPOINTS;
            self.checkpoints.drain(..excess);
        }
    }

    pub fn display_title(&self) -> &str {
        if self.title.is_empty() {
            &self.id
        } else {
            &self.title
        }
    }
}

/// What one checkpoint does to its task, under the session's claim: what the file store's
/// journal records, and what any store applies in one step. Values are absolute, so applying it
/// is the same for every reader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointWrite {
    pub task: String,
    pub session: String,
    /// The fencing token of the session's claim: refused unless it is the task's.
    pub token: u64,
    /// `progress.done` after the checkpoint.
    pub progress: u64,
    pub checkpoint: Checkpoint,
    /// Open items resolved (`--resolve`), then issues added (`--issue`), in that order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<String>,
    /// The claim's lease after the checkpoint (a lease never moves backwards).
    pub lease_expires: DateTime<Utc>,
}

/// A write under a claim that the task no longer honours: another session claimed it since
/// (a higher fencing token), or its claim is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Lost {
    pub task: String,
    pub session: String,
    /// Who holds the task now, if anyone.
    pub holder: Option<String>,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.holder {
            Some(holder) => write!(
                f,
                "session {} lost task `{}`: it is now held by {holder} (its lease ran out and the task was claimed again)",
                self.session, self.task
            ),
            None => write!(
                f,
                "session {} lost task `{}`: its claim was released",
                self.session, self.task
            ),
        }
    }
}

impl Task {
    /// Whether `session` holding `token` may write to this task.
    pub fn check_token(&self, session: &str, token: u64) -> Result<(), Lost> {
        match &self.claim {
            Some(claim) if claim.session == session && self.fence == token => Ok(()),
            claim => Err(Lost {
                task: self.id.clone(),
                session: session.to_string(),
                holder: claim
                    .as_ref()
                    .filter(|c| c.session != session)
                    .map(|c| c.session.clone()),
            }),
        }
    }

    /// Raises the fencing token and gives the task to `claim`; returns the new token.
    pub fn claim(&mut self, claim: Claim) -> u64 {
        self.fence += 1;
        self.status = Status::InProgress;
        self.claim = Some(claim);
        self.fence
    }
}

/// A lease renewed under its claim (a `run` loop watching its agent): the claim's lease moves
/// to `lease_expires` (never backwards), unless the token is stale. With `end`, the lease ends
/// at `lease_expires` instead (the agent's session ended: the task is free at once).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseWrite {
    pub task: String,
    pub session: String,
    pub token: u64,
    pub lease_expires: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub end: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LeaseWrite {
    pub fn apply(&self, task: &mut Task) -> Result<(), Lost> {
        task.check_token(&self.session, self.token)?;
        if let Some(claim) = task.claim.as_mut() {
            claim.lease_expires = if self.end {
                claim.lease_expires.min(self.lease_expires)
            } else {
                claim.lease_expires.max(self.lease_expires)
            };
        }
        Ok(())
    }
}

/// A claim, as the file store's journal records it: the task goes to `claim.session` with the
/// fencing token `token` (one above the task's token before it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimWrite {
    pub task: String,
    pub token: u64,
    pub claim: Claim,
}

impl ClaimWrite {
    /// Applies the claim, unless another claim came between (its token is not the next one).
    pub fn apply(&self, task: &mut Task) -> Result<(), Lost> {
        if task.fence + 1 != self.token {
            return Err(Lost {
                task: task.id.clone(),
                session: self.claim.session.clone(),
                holder: task.claim.as_ref().map(|c| c.session.clone()),
            });
        }
        task.claim(self.claim.clone());
        Ok(())
    }
}

impl CheckpointWrite {
    /// Applies the checkpoint to its task, unless its token is stale.
    pub fn apply(&self, task: &mut Task) -> Result<(), Lost> {
        task.check_token(&self.session, self.token)?;
        for n in &self.resolved {
            task.resolve_open_item(*n);
        }
        for issue in &self.issues {
            task.add_open_item(OpenKind::Issue, issue, self.checkpoint.at, &self.session);
        }
        task.progress.done = self.progress.min(task.progress.total);
        if task.status == Status::Pending {
            task.status = Status::InProgress;
        }
        task.record_checkpoint(self.checkpoint.clone());
        if let Some(claim) = task.claim.as_mut() {
            claim.lease_expires = claim.lease_expires.max(self.lease_expires);
        }
        Ok(())
    }
}

/// Why a stack is refused. The caller adds the file name.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl TaskStack {
    pub fn new(settings: Settings) -> Self {
        TaskStack {
            version: STACK_VERSION,
            settings,
            tasks: Vec::new(),
            journal_generation: 0,
            loaded: Loaded::default(),
            extra: Map::new(),
        }
    }

    /// Parses and validates. Parse errors carry line and column.
    pub fn parse(text: &str) -> Result<TaskStack, Invalid> {
        let stack: TaskStack = match serde_json::from_str(text) {
            Ok(stack) => stack,
            // A future format gets a version message rather than a confusing field error.
            Err(err) => {
                return Err(check_version(text)
                    .err()
                    .unwrap_or_else(|| parse_error(err)));
            }
        };
        if stack.version != STACK_VERSION {
            return Err(check_version(text).expect_err("the version differs"));
        }
        stack.validate()?;
        Ok(stack)
    }

    /// A read-only view for commands that never write the stack back (`next`, `status`): parsed
    /// and validated like [`TaskStack::parse`], but the tasks' checkpoints are skipped, not
    /// built. Never save a view: its tasks have no checkpoints.
    pub fn parse_view(text: &str) -> Result<TaskStack, Invalid> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                SKIP_CHECKPOINTS.set(false);
            }
        }
        SKIP_CHECKPOINTS.set(true);
        let _reset = Reset;
        Self::parse(text)
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a task stack always serializes");
        text.push('\n');
        text
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        let budget = &self.settings.budget;
        if budget.tokens == 0 {
            return Err(Invalid("settings.budget.tokens must be above 0".into()));
        }
        check_thresholds("settings.budget", budget.warn, budget.shutdown).map_err(Invalid)?;
        if let Some(at) = budget.compact_at {
            meters::check_compact_at("settings.budget.compact_at", at).map_err(Invalid)?;
        }
        meters::validate(&self.settings.meters, &self.settings.agents).map_err(Invalid)?;
        self.settings.run.validate().map_err(Invalid)?;
        super::pricing::validate(&self.settings.pricing).map_err(Invalid)?;
        if self.settings.lease_minutes == 0 {
            return Err(Invalid("settings.lease_minutes must be at least 1".into()));
        }
        if self.settings.handoff_dir.trim().is_empty() {
            return Err(Invalid("settings.handoff_dir cannot be empty".into()));
        }
        check_directory_setting(HANDOFF_DIR_SETTING, &self.settings.handoff_dir, false)?;
        if let Some(db) = &self.settings.database {
            if db.path.trim().is_empty() {
                return Err(Invalid("settings.database.path cannot be empty".into()));
            }
            check_directory_setting(BACKUP_DIR_SETTING, &db.backup_dir, true)?;
            let mut names = HashSet::new();
            for metric in &db.metrics {
                if !names.insert(metric.name.as_str()) {
                    return Err(Invalid(format!(
                        "settings.database.metrics: metric `{}` is defined twice",
                        metric.name
                    )));
                }
            }
        }

        let mut ids = HashSet::new();
        for task in &self.tasks {
            check_task_id(&task.id).map_err(Invalid)?;
            if !ids.insert(task.id.as_str()) {
                return Err(Invalid(format!("task `{}` is defined twice", task.id)));
            }
        }
        for task in &self.tasks {
            validate_task(task)?;
            for dep in &task.depends_on {
                if !ids.contains(dep.as_str()) {
                    return Err(Invalid(format!(
                        "task `{}` depends on unknown task `{}`",
                        task.id,
                        dep.escape_debug()
                    )));
                }
            }
        }
        if let Some(cycle) = self.find_cycle() {
            return Err(Invalid(format!("dependency cycle: {}", cycle.join(" -> "))));
        }
        Ok(())
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    pub fn task_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    /// The ids of the tasks that list `id` among their dependencies, in file order.
    pub fn dependents(&self, id: &str) -> Vec<&str> {
        self.tasks
            .iter()
            .filter(|t| t.depends_on.iter().any(|d| d == id))
            .map(|t| t.id.as_str())
            .collect()
    }

    /// A dependency cycle as a path that starts and ends with the same id, if there is one.
    pub fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Unvisited,
            OnPath,
            Finished,
        }
        let index: HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let mut marks = vec![Mark::Unvisited; self.tasks.len()];
        // Iterative DFS: stacks can be long chains and recursion depth should not depend on input.
        for root in 0..self.tasks.len() {
            if marks[root] != Mark::Unvisited {
                continue;
            }
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            marks[root] = Mark::OnPath;
            while let Some(&mut (node, ref mut next_dep)) = path.last_mut() {
                let deps = &self.tasks[node].depends_on;
                if *next_dep == deps.len() {
                    marks[node] = Mark::Finished;
                    path.pop();
                    continue;
                }
                let dep = index.get(deps[*next_dep].as_str()).copied();
                *next_dep += 1;
                // An unknown dependency is another error, reported by `validate`.
                let Some(dep) = dep else { continue };
                match marks[dep] {
                    Mark::Finished => {}
                    Mark::OnPath => {
                        let start = path.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = path[start..]
                            .iter()
                            .map(|&(n, _)| self.tasks[n].id.clone())
                            .collect();
                        cycle.push(self.tasks[dep].id.clone());
                        return Some(cycle);
                    }
                    Mark::Unvisited => {
                        marks[dep] = Mark::OnPath;
                        path.push((dep, 0));
                    }
                }
            }
        }
        None
    }
}

fn validate_task(task: &Task) -> Result<(), Invalid> {
    let id = &task.id;
    if task.priority < 1 {
        return Err(Invalid(format!(
            "task `{id}`: priority must be 1 or more (1 is the most urgent), got {}",
            task.priority
        )));
    }
    if task.progress.total == 0 {
        return Err(Invalid(format!(
            "task `{id}`: progress.total must be at least 1"
        )));
    }
    if task.progress.done > task.progress.total {
        return Err(Invalid(format!(
            "task `{id}`: progress.done ({}) is above progress.total ({})",
            task.progress.done, task.progress.total
        )));
    }
    let mut numbers = HashSet::new();
    for (_, item) in task.open_items() {
        if !numbers.insert(item.n) {
            return Err(Invalid(format!(
                "task `{id}`: open item number {} is used twice (issues and next_steps share numbers)",
                item.n
            )));
        }
    }
    let mut seen = HashSet::new();
    for dep in &task.depends_on {
        if !seen.insert(dep) {
            return Err(Invalid(format!(
                "task `{id}` lists dependency `{dep}` twice"
            )));
        }
    }
    Ok(())
}

/// Only the version, from a text that may not have the expected shape.
fn check_version(text: &str) -> Result<(), Invalid> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<Value>,
    }
    let Ok(doc) = serde_json::from_str::<VersionOnly>(text) else {
        return Ok(());
    };
    match doc.version {
        None => Err(Invalid("missing `version` (expected 1)".into())),
        Some(Value::Number(n)) if n.as_u64() == Some(STACK_VERSION) => Ok(()),
        Some(other) => Err(Invalid(format!(
            "unsupported version {other} (this orchestrator reads version {STACK_VERSION})"
        ))),
    }
}

fn parse_error(err: serde_json::Error) -> Invalid {
    // serde_json appends " at line L column C"; put the position first, as compilers do.
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    Invalid(format!(
        "line {}, column {}: {message}",
        err.line(),
        err.column()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack_with(tasks: &str) -> String {
        format!(r#"{{"version": 1, "tasks": [{tasks}]}}"#)
    }

    #[test]
    fn missing_settings_take_their_defaults() {
        let stack = TaskStack::parse(&stack_with(r#"{"id": "a"}"#)).unwrap();
        assert_eq!(stack.settings, Settings::default());
        assert_eq!(stack.settings.budget.tokens, 200_000);
        assert_eq!(stack.settings.lease_minutes, 30);
        let task = &stack.tasks[0];
        assert_eq!((task.priority, task.status), (1, Status::Pending));
        assert_eq!(task.progress, Progress { done: 0, total: 1 });
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let text = r#"{"version": 1, "owner": "ops", "settings": {"budget": {"tokens": 5, "model": "x"}, "color": true},
            "tasks": [{"id": "a", "labels": ["db"], "checkpoints": [{"at": "2025-11-06T00:15:02Z", "session": "s", "message": "m", "progress": 1, "mood": 3}]}]}"#;
        let stack = TaskStack::parse(text).unwrap();
        let again = TaskStack::parse(&stack.to_json()).unwrap();
        assert_eq!(stack, again);
        let value: Value = serde_json::from_str(&again.to_json()).unwrap();
        assert_eq!(value["owner"], "ops");
        assert_eq!(value["settings"]["color"], true);
        assert_eq!(value["settings"]["budget"]["model"], "x");
        assert_eq!(value["tasks"][0]["labels"][0], "db");
        assert_eq!(value["tasks"][0]["checkpoints"][0]["mood"], 3);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            ("{", "line 1, column 1"),
            (r#"{"tasks": []}"#, "missing `version`"),
            (r#"{"version": 2}"#, "unsupported version 2"),
            (
                &stack_with(r#"{"id": "a"}, {"id": "a"}"#),
                "task `a` is defined twice",
            ),
            (
                &stack_with(r#"{"id": "a", "depends_on": ["z"]}"#),
                "depends on unknown task `z`",
            ),
            (
                &stack_with(
                    r#"{"id": "a", "depends_on": ["b"]}, {"id": "b", "depends_on": ["a"]}"#,
                ),
                "dependency cycle: a -> b -> a",
            ),
            (
                &stack_with(r#"{"id": "a", "depends_on": ["a"]}"#),
                "dependency cycle: a -> a",
            ),
            (
                &stack_with(r#"{"id": "a", "priority": 0}"#),
                "task `a`: priority must be 1 or more",
            ),
            (
                &stack_with(r#"{"id": "a", "progress": {"done": 5, "total": 4}}"#),
                "progress.done (5) is above progress.total (4)",
            ),
            (
                &stack_with(r#"{"id": "a", "progress": {"done": 0, "total": 0}}"#),
                "total must be at least 1",
            ),
            (&stack_with(r#"{"id": "../x"}"#), "task id `../x`"),
            (&stack_with(r#"{"id": "a/b"}"#), "path separator"),
            (
                &stack_with(r#"{"id": "a", "status": "later"}"#),
                "unknown variant `later`",
            ),
            (
                r#"{"version": 1, "settings": {"budget": {"warn": 0.9, "shutdown": 0.85}}}"#,
                "warn (0.9) must be below settings.budget.shutdown (0.85)",
            ),
            (
                r#"{"version": 1, "settings": {"budget": {"shutdown": 1.5}}}"#,
                "settings.budget.shutdown is 1.5",
            ),
            (
                r#"{"version": 1, "settings": {"budget": {"warn": -0.1}}}"#,
                "settings.budget.warn is -0.1",
            ),
            (
                r#"{"version": 1, "settings": {"handoff_dir": "../out"}}"#,
                "settings.handoff_dir `../out` uses `..`",
            ),
            (
                r#"{"version": 1, "settings": {"handoff_dir": "a/../../out"}}"#,
                "settings.handoff_dir `a/../../out` uses `..`",
            ),
            (
                r#"{"version": 1, "settings": {"handoff_dir": "/srv/handoffs"}}"#,
                "settings.handoff_dir is the absolute path `/srv/handoffs`",
            ),
            (
                r#"{"version": 1, "settings": {"database": {"path": "d.db", "backup_dir": "../b"}}}"#,
                "must be written as an absolute path",
            ),
        ];
        for (text, expected) in cases {
            let err = TaskStack::parse(text).expect_err(text).0;
            assert!(
                err.contains(expected),
                "{text}: got {err:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn an_absolute_backup_dir_is_allowed_and_left_to_the_user() {
        let text = r#"{"version": 1, "settings": {"database": {"path": "d.db", "backup_dir": "/mnt/backups"}}}"#;
        let stack = TaskStack::parse(text).unwrap();
        assert_eq!(
            stack.settings.paths_inside_workspace(),
            [(HANDOFF_DIR_SETTING, "session_handoffs")]
        );
        let text =
            r#"{"version": 1, "settings": {"database": {"path": "d.db", "backup_dir": "b"}}}"#;
        let stack = TaskStack::parse(text).unwrap();
        assert_eq!(
            stack.settings.paths_inside_workspace(),
            [
                (HANDOFF_DIR_SETTING, "session_handoffs"),
                (BACKUP_DIR_SETTING, "b")
            ]
        );
    }

    #[test]
    fn a_long_dependency_chain_is_not_a_cycle_and_does_not_recurse() {
        let tasks: Vec<String> = (0..5000)
            .map(|i| match i {
                0 => r#"{"id": "t0"}"#.to_string(),
                _ => format!(r#"{{"id": "t{i}", "depends_on": ["t{}"]}}"#, i - 1),
            })
            .collect();
        assert!(TaskStack::parse(&stack_with(&tasks.join(","))).is_ok());
    }

    #[test]
    fn open_items_share_numbers_and_a_redone_wrap_adds_nothing() {
        let mut task = Task::new("a".into(), "A".into(), 1, 1, vec![]);
        let at = Utc::now();
        assert_eq!(task.add_open_item(OpenKind::Issue, "x", at, "s1"), Some(1));
        assert_eq!(
            task.add_open_item(OpenKind::NextStep, "y", at, "s1"),
            Some(2)
        );
        // The same step of the same session again (a wrap's stack step redone): no new item.
        assert_eq!(
            task.add_open_item(OpenKind::NextStep, "y", at, "s1"),
            Some(2)
        );
        assert_eq!(task.add_open_item(OpenKind::NextStep, " ", at, "s1"), None);
        assert_eq!(task.next_steps.len(), 1);
        assert!(task.resolve_open_item(1));
        assert!(!task.resolve_open_item(1));
        assert_eq!(task.add_open_item(OpenKind::Issue, "z", at, "s2"), Some(3));
    }

    #[test]
    fn only_recent_checkpoints_are_kept_on_the_task() {
        let mut task = Task::new("a".into(), String::new(), 1, 100, vec![]);
        for i in 0..(RECENT_CHECKPOINTS as u64 + 7) {
            task.record_checkpoint(Checkpoint {
                at: Utc::now(),
                session: "s".into(),
                message: format!("m{i}"),
                progress: i,
                tokens: None,
                extra: Map::new(),
            });
        }
        assert_eq!(task.checkpoints.len(), RECENT_CHECKPOINTS);
        assert_eq!(task.checkpoints[0].message, "m7");
    }
}

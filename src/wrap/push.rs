//! Bringing a wrap's commit to the shared remote: a push, and on a rejection a fetch, a replay of our commits onto the remote's tip and another push, a bounded number of times.
//!
//! Everything that talks to the network goes through the git CLI, so the transports,
//! credentials and ssh configuration are the user's own git's. jj made the same choice: "Git
//! remote interactions are handled by spawning a `git` subprocess" (jj docs/config.md, "Git
//! subprocessing behavior"; its CHANGELOG: "The old `libgit2` code path for fetches and pushes
//! has been removed, and the `git.subprocess` setting along with it"). Each child gets no
//! stdin, no terminal (its own session) and `GIT_TERMINAL_PROMPT=0`, so it can never wait on a
//! prompt, and is killed with everything it started past the timeout.
//!
//! Everything local is libgit2, shared with worktree integration: the replay is computed in
//! memory (`worktree::replay`), so a conflict changes nothing here; only a clean replay moves
//! the main work tree's files (`worktree::update_work_tree`, which never overwrites a file the
//! user changed) and then the branch, compared and swapped.

use anyhow::{Context, Result, anyhow, bail};
use git2::{ErrorCode, Oid, Repository};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use super::worktree::{self, Replayed};

/// The first pause between attempts; it doubles, jittered, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// How often a running git child is checked on.
const POLL: Duration = Duration::from_millis(10);
/// How long the output of an exited git is drained for (a process it left may hold it open).
const DRAIN: Duration = Duration::from_secs(2);

/// Variables that would point a child git at another repository than `workdir`'s.
const REPOSITORY_VARS: [&str; 8] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

/// What to push, where, and how hard to try.
pub struct PushRequest<'a> {
    /// The main work tree of the clone.
    pub workdir: &'a Path,
    /// The remote's name, e.g. `origin`.
    pub remote: &'a str,
    /// The local branch, pushed to the remote branch of the same name, e.g. `main`.
    pub branch: &'a str,
    /// Pushes tried at most (0 counts as 1). Each attempt takes at most a push and a fetch
    /// of `timeout` each, plus a backoff of at most 3 s before it.
    pub attempts: u32,
    /// Per git network command; the child is killed past it.
    pub timeout: Duration,
    /// For a path that conflicts while replaying our commits on the remote's (repository
    /// relative, `/`-separated): the content to take (files we generate, like
    /// task_stack.json, an export of the shared store), or None (a real conflict). It may be
    /// asked more than once: for each replayed commit that conflicts there, on each attempt.
    pub regenerate: &'a dyn Fn(&str) -> Result<Option<Vec<u8>>>,
    /// Where a conflicting branch is kept on the remote, e.g. `orchestrator/<task>`.
    pub park_branch: &'a str,
}

/// What [`push_with_retry`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The remote branch is now at `tip` (full hex id), the local branch's tip.
    Pushed {
        tip: String,
        /// Pushes it took.
        attempts: u32,
        /// Our commits replayed onto commits other clones had pushed first (0: none had).
        replayed: usize,
    },
    /// The remote already held everything on the local branch; nothing was changed.
    UpToDate,
    /// Our commits conflict with the remote's on `paths`: the local branch, unchanged, was
    /// pushed to the remote branch `parked` instead.
    Conflict { paths: Vec<String>, parked: String },
    /// The clone has no remote of that name: there is nowhere to push.
    NoRemote,
}

/// Pushes `req.branch` to the same branch of `req.remote`. A push rejected because other
/// clones pushed first fetches the remote branch, replays our commits onto it (taking
/// `regenerate`'s content for generated files), moves the local branch and the work tree to
/// the result and pushes again, with jittered exponential backoff, at most `req.attempts`
/// times. A real conflict parks the local branch on the remote; the local commit is never
/// lost or rewritten to something the remote refused.
pub fn push_with_retry(req: &PushRequest) -> Result<PushOutcome> {
    push_with_env(req, &[])
}

/// [`push_with_retry`], with variables set for every git child (tests isolate it with them).
fn push_with_env(req: &PushRequest, env: &[(&str, &OsStr)]) -> Result<PushOutcome> {
    let git = Git { req, env };
    let repo = open(req.workdir)?;
    match repo.find_remote(req.remote) {
        Ok(_) => {}
        Err(err) if err.code() == ErrorCode::NotFound => return Ok(PushOutcome::NoRemote),
        Err(err) => {
            return Err(err).with_context(|| format!("reading the remote `{}`", req.remote));
        }
    }
    let local_ref = format!("refs/heads/{}", req.branch);
    let tracking_ref = format!("refs/remotes/{}/{}", req.remote, req.branch);
    for (what, name) in [
        ("branch", &local_ref),
        ("remote", &tracking_ref),
        ("park branch", &format!("refs/heads/{}", req.park_branch)),
    ] {
        if !git2::Reference::is_valid_name(name) {
            bail!("cannot push: `{name}` is not a valid git {what} name");
        }
    }
    let attempts = req.attempts.max(1);
    let mut replayed = 0;
    let mut last_reason = String::new();
    for attempt in 1..=attempts {
        if attempt > 1 {
            std::thread::sleep(backoff(attempt - 1));
        }
        let repo = open(req.workdir)?;
        let tip = local_tip(&repo, &local_ref, req.branch)?;
        let pushed = git.push(&local_ref, &local_ref, tip)?;
        debug!(attempt, ?pushed, "pushed {} to {}", req.branch, req.remote);
        match pushed {
            RefUpdate::Updated => {
                info!(
                    attempt,
                    replayed, "pushed {} to {} at {tip}", req.branch, req.remote
                );
                return Ok(PushOutcome::Pushed {
                    tip: tip.to_string(),
                    attempts: attempt,
                    replayed,
                });
            }
            RefUpdate::UpToDate if attempt == 1 => return Ok(PushOutcome::UpToDate),
            RefUpdate::UpToDate => {
                return Ok(PushOutcome::Pushed {
                    tip: tip.to_string(),
                    attempts: attempt,
                    replayed,
                });
            }
            RefUpdate::Refused(reason) => bail!(
                "the remote `{}` refused {}: {reason}; {}",
                req.remote,
                req.branch,
                safe_locally(req, tip)
            ),
            RefUpdate::Behind(reason) | RefUpdate::Raced(reason) => last_reason = reason,
        }
        if !git.fetch(&tracking_ref, tip)? {
            // The ref lock of a concurrent fetch in this clone: the next attempt fetches again.
            continue;
        }
        let repo = open(req.workdir)?;
        let last = attempt == attempts;
        match replay_onto_remote(&repo, req, tip, &tracking_ref)? {
            Step::RemoteHasAll if attempt == 1 => return Ok(PushOutcome::UpToDate),
            Step::RemoteHasAll => {
                return Ok(PushOutcome::Pushed {
                    tip: tip.to_string(),
                    attempts: attempt,
                    replayed,
                });
            }
            Step::PushAgain => {}
            // No push left to make: the local branch is left as it was.
            Step::Replayed { .. } if last => {}
            Step::Conflict(paths) => {
                let parked = git.park(&local_ref, tip)?;
                info!(
                    ?paths,
                    "{} conflicts with {}; parked as {parked}", req.branch, req.remote
                );
                return Ok(PushOutcome::Conflict { paths, parked });
            }
            Step::Replayed { to, commits } => {
                if move_local(&repo, req, &local_ref, tip, to)? {
                    replayed = commits;
                }
            }
        }
    }
    bail!(
        "could not push {branch} to `{remote}` in {attempts} attempt(s): other clones kept \
         pushing first (last: {last_reason}); {safe}: wrap again, or run `git pull --rebase \
         {remote} {branch} && git push {remote} {branch}`",
        branch = req.branch,
        remote = req.remote,
        safe = safe_locally(req, tip_or_zero(req.workdir, &local_ref)),
    )
}

/// The sentence a failed push ends with: nothing is lost.
fn safe_locally(req: &PushRequest, tip: Oid) -> String {
    format!(
        "the commit {} is safe on the local branch {}",
        short(tip),
        req.branch
    )
}

fn tip_or_zero(workdir: &Path, local_ref: &str) -> Oid {
    open(workdir)
        .and_then(|repo| Ok(repo.refname_to_id(local_ref)?))
        .unwrap_or_else(|_| Oid::zero())
}

fn short(oid: Oid) -> String {
    oid.to_string().chars().take(12).collect()
}

fn open(dir: &Path) -> Result<Repository> {
    let repo = Repository::discover(dir)
        .with_context(|| format!("opening the git repository at {}", dir.display()))?;
    if repo.is_bare() {
        bail!(
            "cannot push from {}: a bare repository has no branch a wrap commits on",
            repo.path().display()
        );
    }
    Ok(repo)
}

fn local_tip(repo: &Repository, local_ref: &str, branch: &str) -> Result<Oid> {
    match repo.refname_to_id(local_ref) {
        Ok(oid) => Ok(oid),
        Err(err) if err.code() == ErrorCode::NotFound => Err(anyhow!(
            "cannot push: the local branch {branch} does not exist (nothing committed on it yet)"
        )),
        Err(err) => Err(err).with_context(|| format!("reading {local_ref}")),
    }
}

/// The pause before retry `retry` (1 for the first): doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], half of it fixed and half random, so clones rejected together spread out.
fn backoff(retry: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = full / 2;
    half + half.mul_f64(jitter())
}

/// A number in [0, 1) that differs between processes and calls: std's hasher keys are drawn
/// at random per `RandomState`, which is all the randomness a backoff needs.
fn jitter() -> f64 {
    use std::hash::BuildHasher as _;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The status git reported for the ref we pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RefUpdate {
    /// A fast-forward, forced update or new ref.
    Updated,
    /// The remote ref was already there.
    UpToDate,
    /// The remote holds commits we lack: fetch, replay, push again.
    Behind(String),
    /// The remote lost a race to update the ref, or failed transiently: push again.
    Raced(String),
    /// Refused for good (a hook, a protected branch...).
    Refused(String),
}

/// One ref line of `git push --porcelain`. git-push(1), OUTPUT: "If --porcelain is used, then
/// each line of the output is of the form: <flag> \t <from>:<to> \t <summary> (<reason>)";
/// the flag is ` ` (fast-forward), `+` (forced update), `-` (deleted), `*` (new ref), `!`
/// (rejected or failed) or `=` (up to date); a failed update's summary is `[rejected]`,
/// `[remote rejected]` or `[remote failure]`. The ref lines sit between a `To <url>` line and
/// `Done`; `<to>` is the full remote ref name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PorcelainLine {
    flag: char,
    from: String,
    to: String,
    summary: String,
    reason: Option<String>,
}

fn parse_porcelain(stdout: &str) -> Vec<PorcelainLine> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (flag, refs, rest) = (fields.next()?, fields.next()?, fields.next()?);
            let mut chars = flag.chars();
            let flag = chars.next().filter(|_| chars.next().is_none())?;
            let (from, to) = refs.split_once(':')?;
            let (summary, reason) = match rest.strip_suffix(')').and_then(|r| r.split_once(" (")) {
                Some((summary, reason)) => (summary, Some(reason.to_string())),
                None => (rest, None),
            };
            Some(PorcelainLine {
                flag,
                from: from.to_string(),
                to: to.to_string(),
                summary: summary.to_string(),
                reason,
            })
        })
        .collect()
}

impl PorcelainLine {
    fn update(&self) -> RefUpdate {
        let reason = || {
            let mut text = self.summary.trim_matches(['[', ']']).to_string();
            if let Some(reason) = &self.reason {
                text.push_str(&format!(" ({reason})"));
            }
            text
        };
        match self.flag {
            ' ' | '+' | '*' => RefUpdate::Updated,
            '=' => RefUpdate::UpToDate,
            _ => {
                let why = self.reason.as_deref().unwrap_or_default();
                match self.summary.as_str() {
                    // send-pack's reasons for a ref the remote has moved past (git transport.c).
                    "[rejected]" if matches!(why, "fetch first" | "non-fast-forward") => {
                        RefUpdate::Behind(reason())
                    }
                    // receive-pack could not take the ref's lock, or found it moved under it:
                    // another push won the race.
                    "[remote rejected]"
                        if why.contains("lock")
                            || why.contains("but expected")
                            || why.contains("failed to update ref") =>
                    {
                        RefUpdate::Raced(reason())
                    }
                    "[remote failure]" => RefUpdate::Raced(reason()),
                    _ => RefUpdate::Refused(reason()),
                }
            }
        }
    }
}

/// What the fetched remote branch leaves to do.
enum Step {
    /// The remote branch holds every commit of ours.
    RemoteHasAll,
    /// The remote branch is behind ours (the rejection was a lost race): push as is.
    PushAgain,
    /// Ours, replayed onto the remote branch's tip, end at `to`.
    Replayed {
        to: Oid,
        commits: usize,
    },
    Conflict(Vec<String>),
}

fn replay_onto_remote(
    repo: &Repository,
    req: &PushRequest,
    tip: Oid,
    tracking_ref: &str,
) -> Result<Step> {
    let remote_tip = match repo.refname_to_id(tracking_ref) {
        Ok(oid) => oid,
        // The branch is gone from the remote: the next push makes it again.
        Err(err) if err.code() == ErrorCode::NotFound => return Ok(Step::PushAgain),
        Err(err) => return Err(err).with_context(|| format!("reading {tracking_ref}")),
    };
    if remote_tip == tip || repo.graph_descendant_of(remote_tip, tip)? {
        return Ok(Step::RemoteHasAll);
    }
    if repo.graph_descendant_of(tip, remote_tip)? {
        return Ok(Step::PushAgain);
    }
    let merge_base = match repo.merge_base(tip, remote_tip) {
        Ok(oid) => oid,
        Err(err) if err.code() == ErrorCode::NotFound => bail!(
            "{} and {}/{} share no history: nothing can be replayed; {}",
            req.branch,
            req.remote,
            req.branch,
            safe_locally(req, tip)
        ),
        Err(err) => return Err(err).context("finding where the branches parted"),
    };
    let ours = repo.find_commit(tip)?;
    let theirs = repo.find_commit(remote_tip)?;
    let picks = worktree::first_parent_picks(&ours, merge_base)?;
    if let Err(err) = repo.signature() {
        warn!(
            "no git identity ({}): the replayed commits are committed as {} <{}>",
            err.message(),
            super::vcs::FALLBACK_NAME,
            super::vcs::FALLBACK_EMAIL
        );
    }
    let signature = worktree::signature(repo)?;
    Ok(
        match worktree::replay(repo, &theirs, &picks, &signature, req.regenerate)? {
            Replayed::Onto(to) => Step::Replayed {
                to,
                // Picks already on the remote were dropped: count what it lacks.
                commits: repo.graph_ahead_behind(to, remote_tip)?.0,
            },
            Replayed::Conflict(paths) => Step::Conflict(paths),
        },
    )
}

/// Moves the local branch from `from` to `to`, and the main work tree's files with it when it
/// is on that branch. `Ok(false)`: the branch moved meanwhile (someone committed), the work
/// tree was put back, and the next attempt starts over from the new tip.
fn move_local(
    repo: &Repository,
    req: &PushRequest,
    local_ref: &str,
    from: Oid,
    to: Oid,
) -> Result<bool> {
    let on_branch = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|head| head.symbolic_target().map(|t| t == local_ref))
        .unwrap_or(false);
    let cannot = |why: String| {
        anyhow!(
            "cannot bring {}/{} into the work tree {}: {why}; nothing was pushed, {}",
            req.remote,
            req.branch,
            req.workdir.display(),
            safe_locally(req, from)
        )
    };
    if on_branch {
        let index = repo.index().context("opening the git index")?;
        if let Some(blocker) = super::vcs::Blocker::find(repo, &index)? {
            let why = if blocker.state == "none" {
                format!(
                    "the git index has unmerged paths ({})",
                    blocker.conflicts.join(", ")
                )
            } else {
                format!(
                    "a {} is in progress (finish or abort it, then push again)",
                    blocker.state.replace('_', "-")
                )
            };
            return Err(cannot(why));
        }
        let lock = repo.path().join("index.lock");
        if lock.exists() {
            return Err(cannot(super::vcs::lock_advice(&lock)));
        }
        // A file regenerated from elsewhere (the fleet store's export) may differ here: it is
        // written again from its source anyway.
        let regenerated =
            |path: &str| (req.regenerate)(path).is_ok_and(|content| content.is_some());
        worktree::update_work_tree(repo, from, to, &regenerated)
            .map_err(|err| cannot(format!("{err:#}")))?;
    }
    let message = format!("orchestrator: replay onto {}/{}", req.remote, req.branch);
    match repo.reference_matching(local_ref, to, true, from, &message) {
        Ok(_) => Ok(true),
        Err(err) => {
            if on_branch {
                worktree::update_work_tree(repo, to, from, &|_| false)
                    .context("putting the work tree back after the branch moved")?;
            }
            match err.code() {
                ErrorCode::Modified | ErrorCode::Exists | ErrorCode::NotFound => Ok(false),
                ErrorCode::Locked => {
                    let lock = repo.commondir().join(format!("{local_ref}.lock"));
                    Err(cannot(super::vcs::lock_advice(&lock)))
                }
                _ => Err(err).with_context(|| format!("moving {local_ref} to {to}")),
            }
        }
    }
}

/// The git CLI, run for one request.
struct Git<'a> {
    req: &'a PushRequest<'a>,
    env: &'a [(&'a str, &'a OsStr)],
}

struct GitRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Git<'_> {
    /// `git push --porcelain REMOTE SRC:DST`, and the status git reports for `dst`.
    fn push(&self, src: &str, dst: &str, tip: Oid) -> Result<RefUpdate> {
        let refspec = format!("{src}:{dst}");
        let run = self.run(
            &["push", "--porcelain", "--", self.req.remote, &refspec],
            tip,
        )?;
        if let Some(line) = parse_porcelain(&run.stdout)
            .into_iter()
            .find(|line| line.to == dst)
        {
            return Ok(line.update());
        }
        bail!(
            "git push to the remote `{}` failed{}: {}; {}",
            self.req.remote,
            exit_code(run.status),
            git_error(&run.stderr),
            safe_locally(self.req, tip)
        )
    }

    /// Fetches the remote branch into its remote-tracking ref. `Ok(false)`: a concurrent fetch
    /// in this clone held the ref's lock.
    fn fetch(&self, tracking_ref: &str, tip: Oid) -> Result<bool> {
        let refspec = format!("+refs/heads/{}:{tracking_ref}", self.req.branch);
        let run = self.run(
            &["fetch", "--no-tags", "--", self.req.remote, &refspec],
            tip,
        )?;
        if run.status.success() {
            return Ok(true);
        }
        if run.stderr.contains("cannot lock ref") || run.stderr.contains("Unable to create") {
            debug!(
                "fetch found {tracking_ref} locked: {}",
                git_error(&run.stderr)
            );
            return Ok(false);
        }
        bail!(
            "git fetch from the remote `{}` failed{}: {}; {}",
            self.req.remote,
            exit_code(run.status),
            git_error(&run.stderr),
            safe_locally(self.req, tip)
        )
    }

    /// Pushes the local branch, as is, to the park branch (or, when that already holds other
    /// commits, to `<park>-<short id>`): the remote's branch name it landed on.
    fn park(&self, local_ref: &str, tip: Oid) -> Result<String> {
        let mut reasons = Vec::new();
        for name in [
            self.req.park_branch.to_string(),
            format!("{}-{}", self.req.park_branch, short(tip)),
        ] {
            match self.push(local_ref, &format!("refs/heads/{name}"), tip)? {
                RefUpdate::Updated | RefUpdate::UpToDate => return Ok(name),
                RefUpdate::Behind(reason)
                | RefUpdate::Raced(reason)
                | RefUpdate::Refused(reason) => reasons.push(format!("{name}: {reason}")),
            }
        }
        bail!(
            "{} conflicts with {}/{} and could not be kept on the remote ({}); {}",
            self.req.branch,
            self.req.remote,
            self.req.branch,
            reasons.join("; "),
            safe_locally(self.req, tip)
        )
    }

    /// Runs git in the work tree, killed with everything it started past the timeout.
    fn run(&self, args: &[&str], tip: Oid) -> Result<GitRun> {
        let req = self.req;
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(req.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // git(1): "If this Boolean environment variable is set to false, git will not
            // prompt on the terminal (e.g., when asking for HTTP authentication)."
            .env("GIT_TERMINAL_PROMPT", "0")
            // Git Credential Manager (docs/environment.md): never show a prompt or dialog.
            .env("GCM_INTERACTIVE", "never")
            // Untranslated messages, as jj does (LC_ALL would also change the encoding).
            .env("LC_MESSAGES", "C")
            .env_remove("LC_ALL")
            .env_remove("LANGUAGE");
        for var in REPOSITORY_VARS {
            command.env_remove(var);
        }
        for (key, value) in self.env {
            command.env(key, value);
        }
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of this process. In a
        // session of its own the child has no controlling terminal (ssh cannot open /dev/tty to
        // ask for a passphrase or a host key) and leads a process group we can kill whole.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let what = format!("git {}", args[0]);
        let mut child = command.spawn().with_context(|| {
            format!(
                "cannot run git (needed for `{what}` with the remote `{}`)",
                req.remote
            )
        })?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + req.timeout;
        let status = loop {
            match child
                .try_wait()
                .with_context(|| format!("waiting for {what}"))?
            {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    if let Ok(group) = i32::try_from(child.id()) {
                        // SAFETY: kill(2) on the child's own process group; touches no memory.
                        unsafe { libc::kill(-group, libc::SIGKILL) };
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "{what} with the remote `{}` took over {} and was killed (the remote is \
                         unreachable, or git waited on something, such as credentials, it could \
                         not ask for); {}",
                        req.remote,
                        human_duration(req.timeout),
                        safe_locally(req, tip)
                    );
                }
                None => std::thread::sleep(POLL),
            }
        };
        Ok(GitRun {
            status,
            stdout: stdout.collect(),
            stderr: stderr.collect(),
        })
    }
}

fn human_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

fn exit_code(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!(" (exit {code})"),
        None => " (killed by a signal)".to_string(),
    }
}

/// The line of git's stderr that says what went wrong: its first `fatal:` or `error:` line
/// (usage.c's prefixes), else its last line.
fn git_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.starts_with("fatal: "))
        .or_else(|| lines.iter().find(|l| l.starts_with("error: ")))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "git printed nothing".to_string())
}

/// A pipe read to its end on a thread of its own, so a full pipe never blocks the child.
struct Drain {
    text: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Drain {
    let text = Arc::new(Mutex::new(Vec::new()));
    let reader = pipe.map(|mut pipe| {
        let text = Arc::clone(&text);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut text) = text.lock() {
                    text.extend_from_slice(&buf[..n]);
                }
            }
        })
    });
    Drain { text, reader }
}

impl Drain {
    /// What was read, once the pipe closed or (a process git left behind holds it open) a
    /// short while passed.
    fn collect(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let deadline = Instant::now() + DRAIN;
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        let bytes = self.text.lock().map(|t| t.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::fs;
    use std::path::PathBuf;

    use crate::wrap::isolate_libgit2;

    /// A bare remote on `main`, seeded with `a.txt` and `task_stack.json`, and clones of it.
    struct Fleet {
        tmp: tempfile::TempDir,
        home: PathBuf,
        remote: PathBuf,
    }

    impl Fleet {
        fn new() -> Fleet {
            isolate_libgit2();
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().canonicalize().unwrap();
            let home = root.join("home");
            fs::create_dir_all(&home).unwrap();
            let remote = root.join("remote.git");
            let fleet = Fleet { tmp, home, remote };
            fleet.git(&root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
            let seed = fleet.clone_as("seed");
            fs::write(seed.join("a.txt"), "one\ntwo\nthree\n").unwrap();
            fs::write(seed.join("task_stack.json"), "{\"tasks\": []}\n").unwrap();
            fleet.git(&seed, &["add", "-A"]);
            fleet.git(&seed, &["commit", "-qm", "seed"]);
            fleet.git(&seed, &["push", "-q", "origin", "main"]);
            fleet
        }

        fn env(&self) -> [(&'static str, &OsStr); 3] {
            [
                ("HOME", self.home.as_os_str()),
                ("GIT_CONFIG_GLOBAL", OsStr::new("/dev/null")),
                ("GIT_CONFIG_NOSYSTEM", OsStr::new("1")),
            ]
        }

        /// Runs git with an identity given on the command line only.
        fn git(&self, dir: &Path, args: &[&str]) -> String {
            let mut command = Command::new("git");
            command
                .args([
                    "-c",
                    "user.name=Clone",
                    "-c",
                    "user.email=clone@example.com",
                ])
                .args(args)
                .current_dir(dir)
                .envs(self.env());
            for var in REPOSITORY_VARS {
                command.env_remove(var);
            }
            let out = command.output().unwrap();
            assert!(
                out.status.success(),
                "git {args:?} in {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }

        fn clone_as(&self, name: &str) -> PathBuf {
            let root = self.tmp.path().canonicalize().unwrap();
            self.git(&root, &["clone", "-q", self.remote.to_str().unwrap(), name]);
            root.join(name)
        }

        fn commit(&self, clone: &Path, path: &str, text: &str) -> String {
            fs::write(clone.join(path), text).unwrap();
            self.git(clone, &["add", "-A"]);
            self.git(
                clone,
                &["commit", "-qm", &format!("{path} in {}", clone.display())],
            );
            self.git(clone, &["rev-parse", "HEAD"])
        }

        fn remote_git(&self, args: &[&str]) -> String {
            self.git(&self.remote, args)
        }

        fn push(
            &self,
            clone: &Path,
            attempts: u32,
            regenerate: &dyn Fn(&str) -> Result<Option<Vec<u8>>>,
        ) -> Result<PushOutcome> {
            let req = PushRequest {
                workdir: clone,
                remote: "origin",
                branch: "main",
                attempts,
                timeout: Duration::from_secs(60),
                regenerate,
                park_branch: "orchestrator/t1",
            };
            push_with_env(&req, &self.env())
        }
    }

    fn nothing_generated(_: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    // Verbatim stdout of `git push --porcelain` (git 2.47.3) in the shapes git-push(1)'s
    // OUTPUT section documents: a new branch, a rejection, an up-to-date ref.
    #[test]
    fn porcelain_push_lines_parse_as_git_documents_them() {
        let out = "To /tmp/porc/r.git\n\
                   *\tHEAD:refs/heads/main\t[new branch]\n\
                   !\trefs/heads/main:refs/heads/main\t[rejected] (fetch first)\n\
                   =\trefs/heads/master:refs/heads/main\t[up to date]\n\
                   \x20\trefs/heads/main:refs/heads/main\tba302ef..e0bbf94\n\
                   Done\n";
        let lines = parse_porcelain(out);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(
            lines[1],
            PorcelainLine {
                flag: '!',
                from: "refs/heads/main".into(),
                to: "refs/heads/main".into(),
                summary: "[rejected]".into(),
                reason: Some("fetch first".into()),
            }
        );
        let updates: Vec<RefUpdate> = lines.iter().map(PorcelainLine::update).collect();
        assert_eq!(
            updates,
            [
                RefUpdate::Updated,
                RefUpdate::Behind("rejected (fetch first)".into()),
                RefUpdate::UpToDate,
                RefUpdate::Updated,
            ]
        );
        // What the 11 losers of 12 clones pushing to one bare repository at once print.
        let raced = parse_porcelain(
            "!\trefs/heads/main:refs/heads/main\t[remote rejected] (failed to update ref)\n",
        );
        assert_eq!(
            raced[0].update(),
            RefUpdate::Raced("remote rejected (failed to update ref)".into())
        );
        let hook = parse_porcelain(
            "!\trefs/heads/main:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n",
        );
        assert_eq!(
            hook[0].update(),
            RefUpdate::Refused("remote rejected (pre-receive hook declined)".into())
        );
    }

    #[test]
    fn a_plain_push_lands_and_a_second_is_up_to_date() {
        let fleet = Fleet::new();
        let a = fleet.clone_as("a");
        let tip = fleet.commit(&a, "b.txt", "b\n");
        let outcome = fleet.push(&a, 3, &nothing_generated).unwrap();
        assert_eq!(
            outcome,
            PushOutcome::Pushed {
                tip: tip.clone(),
                attempts: 1,
                replayed: 0
            }
        );
        assert_eq!(fleet.remote_git(&["rev-parse", "main"]), tip);
        assert_eq!(
            fleet.push(&a, 3, &nothing_generated).unwrap(),
            PushOutcome::UpToDate
        );
    }

    #[test]
    fn a_push_behind_another_clone_is_fetched_replayed_and_pushed() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        let theirs = fleet.commit(&b, "b.txt", "from b\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        let ours = fleet.commit(&a, "c.txt", "from a\n");
        let PushOutcome::Pushed {
            tip,
            attempts,
            replayed,
        } = fleet.push(&a, 5, &nothing_generated).unwrap()
        else {
            panic!("pushed");
        };
        assert_eq!((attempts, replayed), (2, 1));
        assert_ne!(tip, ours, "our commit was replayed onto theirs");
        assert_eq!(fleet.remote_git(&["rev-parse", "main"]), tip);
        assert_eq!(fleet.remote_git(&["rev-parse", "main~1"]), theirs);
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), tip);
        // The work tree holds both commits' files, and nothing is left uncommitted.
        assert_eq!(fs::read_to_string(a.join("b.txt")).unwrap(), "from b\n");
        assert_eq!(fs::read_to_string(a.join("c.txt")).unwrap(), "from a\n");
        assert_eq!(fleet.git(&a, &["status", "--porcelain"]), "");
        // The replay keeps the author and the message; the clone has no identity of its own
        // (only `-c` on the command line), so it is committed as the fallback identity.
        assert_eq!(
            fleet.git(&a, &["log", "-1", "--format=%an|%s", "main"]),
            fleet.git(&a, &["log", "-1", "--format=%an|%s", &ours])
        );
        assert_eq!(
            fleet.git(&a, &["log", "-1", "--format=%cn <%ce>", "main"]),
            "orchestrator <orchestrator@localhost>"
        );
    }

    #[test]
    fn a_push_with_a_conflicting_task_stack_takes_the_regenerated_one() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        fleet.commit(&b, "task_stack.json", "{\"tasks\": [\"b\"]}\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        fleet.commit(&a, "task_stack.json", "{\"tasks\": [\"a\"]}\n");
        fleet.commit(&a, "c.txt", "from a\n");
        let asked = RefCell::new(Vec::new());
        let regenerate = |path: &str| -> Result<Option<Vec<u8>>> {
            asked.borrow_mut().push(path.to_string());
            Ok((path == "task_stack.json").then(|| b"{\"tasks\": [\"a\", \"b\"]}\n".to_vec()))
        };
        let outcome = fleet.push(&a, 5, &regenerate).unwrap();
        let PushOutcome::Pushed { replayed, .. } = outcome else {
            panic!("pushed: {outcome:?}");
        };
        assert_eq!(replayed, 2);
        assert_eq!(asked.borrow().as_slice(), ["task_stack.json"]);
        let expected = "{\"tasks\": [\"a\", \"b\"]}";
        assert_eq!(
            fleet.remote_git(&["show", "main:task_stack.json"]),
            expected
        );
        assert_eq!(fleet.remote_git(&["show", "main:c.txt"]), "from a");
        assert_eq!(
            fs::read_to_string(a.join("task_stack.json"))
                .unwrap()
                .trim(),
            expected
        );
        assert_eq!(fleet.git(&a, &["status", "--porcelain"]), "");
    }

    #[test]
    fn a_branch_behind_the_remote_is_up_to_date_and_not_moved() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        let before = fleet.git(&a, &["rev-parse", "main"]);
        fleet.commit(&b, "b.txt", "from b\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        assert_eq!(
            fleet.push(&a, 5, &nothing_generated).unwrap(),
            PushOutcome::UpToDate
        );
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), before);
    }

    #[test]
    fn a_real_conflict_parks_the_branch_on_the_remote_and_changes_nothing_here() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        let theirs = fleet.commit(&b, "a.txt", "one\nTWO from b\nthree\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        let ours = fleet.commit(&a, "a.txt", "one\nzwei from a\nthree\n");
        let outcome = fleet.push(&a, 5, &nothing_generated).unwrap();
        assert_eq!(
            outcome,
            PushOutcome::Conflict {
                paths: vec!["a.txt".into()],
                parked: "orchestrator/t1".into()
            }
        );
        assert_eq!(fleet.remote_git(&["rev-parse", "orchestrator/t1"]), ours);
        assert_eq!(fleet.remote_git(&["rev-parse", "main"]), theirs);
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), ours);
        assert_eq!(
            fs::read_to_string(a.join("a.txt")).unwrap(),
            "one\nzwei from a\nthree\n"
        );
        assert_eq!(fleet.git(&a, &["status", "--porcelain"]), "");

        // Parked again with other commits: the park branch is kept, the new one beside it.
        fleet.git(&a, &["reset", "-q", "--hard", "HEAD~1"]);
        let again = fleet.commit(&a, "a.txt", "one\ndrei from a\nthree\n");
        // A conflict found on the last attempt is still one (no push to main is left to make).
        let PushOutcome::Conflict { parked, .. } = fleet.push(&a, 1, &nothing_generated).unwrap()
        else {
            panic!("a conflict");
        };
        assert_eq!(parked, format!("orchestrator/t1-{}", &again[..12]));
        assert_eq!(fleet.remote_git(&["rev-parse", &parked]), again);
        assert_eq!(fleet.remote_git(&["rev-parse", "orchestrator/t1"]), ours);
    }

    #[test]
    fn a_remote_that_does_not_exist_is_a_clear_error_and_loses_nothing() {
        let fleet = Fleet::new();
        let a = fleet.clone_as("a");
        let missing = fleet.tmp.path().join("no-such-remote.git");
        fleet.git(
            &a,
            &["remote", "set-url", "origin", missing.to_str().unwrap()],
        );
        let tip = fleet.commit(&a, "b.txt", "b\n");
        let err = fleet.push(&a, 5, &nothing_generated).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("git push to the remote `origin` failed")
                && message.contains("does not appear to be a git repository")
                && message.contains(&format!("the commit {} is safe", &tip[..12])),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), tip);
    }

    #[test]
    fn a_remote_that_hangs_is_killed_past_the_timeout() {
        let fleet = Fleet::new();
        let a = fleet.clone_as("a");
        let pid_file = fleet.tmp.path().join("ssh.pid");
        let ssh = fleet.tmp.path().join("fake-ssh");
        // An ssh that never answers: what an unreachable host behind a firewall looks like.
        fs::write(
            &ssh,
            format!(
                "#!/bin/sh\necho $$ > '{}'\nexec sleep 30\n",
                pid_file.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        fleet.git(&a, &["config", "core.sshCommand", ssh.to_str().unwrap()]);
        fleet.git(
            &a,
            &["remote", "set-url", "origin", "ssh://git.invalid/repo.git"],
        );
        let tip = fleet.commit(&a, "b.txt", "b\n");
        let req = PushRequest {
            workdir: &a,
            remote: "origin",
            branch: "main",
            attempts: 3,
            timeout: Duration::from_secs(1),
            regenerate: &nothing_generated,
            park_branch: "orchestrator/t1",
        };
        let started = Instant::now();
        let err = push_with_env(&req, &fleet.env()).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "waited for the hung ssh"
        );
        let message = format!("{err:#}");
        assert_eq!(
            message,
            format!(
                "git push with the remote `origin` took over 1s and was killed (the remote is \
                 unreachable, or git waited on something, such as credentials, it could not \
                 ask for); the commit {} is safe on the local branch main",
                &tip[..12]
            )
        );
        // The fake ssh went with git: nothing of ours is left running.
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let alive = state.is_some_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
            });
            if !alive {
                break;
            }
            assert!(Instant::now() < deadline, "the fake ssh {pid} still runs");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_clone_without_that_remote_has_nothing_to_push_to() {
        let fleet = Fleet::new();
        let a = fleet.clone_as("a");
        fleet.git(&a, &["remote", "remove", "origin"]);
        fleet.commit(&a, "b.txt", "b\n");
        assert_eq!(
            fleet.push(&a, 5, &nothing_generated).unwrap(),
            PushOutcome::NoRemote
        );
    }

    #[test]
    fn a_remote_hook_refusing_the_push_is_not_retried() {
        let fleet = Fleet::new();
        let a = fleet.clone_as("a");
        let hook = fleet.remote.join("hooks").join("pre-receive");
        fs::write(&hook, "#!/bin/sh\necho 'main is frozen' >&2\nexit 1\n").unwrap();
        fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let tip = fleet.commit(&a, "b.txt", "b\n");
        let err = fleet.push(&a, 5, &nothing_generated).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "the remote `origin` refused main: remote rejected (pre-receive hook declined); \
                 the commit {} is safe on the local branch main",
                &tip[..12]
            )
        );
    }

    #[test]
    fn a_file_changed_in_the_work_tree_is_never_overwritten_by_the_replay() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        let theirs = fleet.commit(&b, "b.txt", "from b\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        let ours = fleet.commit(&a, "c.txt", "from a\n");
        fs::write(a.join("b.txt"), "mine, uncommitted\n").unwrap();
        let message = format!("{:#}", fleet.push(&a, 5, &nothing_generated).unwrap_err());
        assert!(
            message.starts_with("cannot bring origin/main into the work tree")
                && message.contains("b.txt changed there")
                && message.contains(&format!("the commit {} is safe", &ours[..12])),
            "{message}"
        );
        assert_eq!(
            fs::read_to_string(a.join("b.txt")).unwrap(),
            "mine, uncommitted\n"
        );
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), ours);
        assert_eq!(fleet.remote_git(&["rev-parse", "main"]), theirs);
    }

    #[test]
    fn a_regenerated_file_rewritten_here_since_the_commit_does_not_stop_the_replay() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        fleet.commit(&b, "task_stack.json", "{\"tasks\": [\"b\"]}\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        fleet.commit(&a, "c.txt", "from a\n");
        // Another session here wrote the store's export again after this commit.
        fs::write(a.join("task_stack.json"), "{\"tasks\": [\"newer\"]}\n").unwrap();
        let regenerate = |path: &str| -> Result<Option<Vec<u8>>> {
            Ok((path == "task_stack.json").then(|| b"{\"tasks\": [\"b\"]}\n".to_vec()))
        };
        let outcome = fleet.push(&a, 5, &regenerate).unwrap();
        assert!(matches!(outcome, PushOutcome::Pushed { .. }), "{outcome:?}");
        assert_eq!(fleet.remote_git(&["show", "main:c.txt"]), "from a");
        // Without `regenerate` claiming it, the same file stops the replay (the test above).
    }

    #[test]
    fn a_locked_index_stops_the_replay_with_what_to_do() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        fleet.commit(&b, "b.txt", "from b\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        let ours = fleet.commit(&a, "c.txt", "from a\n");
        let lock = a.join(".git").join("index.lock");
        fs::write(&lock, "").unwrap();
        let message = format!("{:#}", fleet.push(&a, 5, &nothing_generated).unwrap_err());
        assert!(
            message.contains(&format!(
                "{} exists: another git process is running",
                lock.display()
            )) && message.contains(&format!("the commit {} is safe", &ours[..12])),
            "{message}"
        );
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), ours);
        assert!(!a.join("b.txt").exists());
    }

    #[test]
    fn a_merge_in_progress_stops_the_replay_with_what_to_do() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        fleet.commit(&b, "b.txt", "from b\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        let ours = fleet.commit(&a, "c.txt", "from a\n");
        // What `git merge` leaves while it waits for the user (repository.c: MERGE_HEAD).
        fs::write(a.join(".git").join("MERGE_HEAD"), format!("{ours}\n")).unwrap();
        let message = format!("{:#}", fleet.push(&a, 5, &nothing_generated).unwrap_err());
        assert!(
            message.contains("a merge is in progress (finish or abort it, then push again)"),
            "{message}"
        );
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), ours);
    }

    #[test]
    fn attempts_exhausted_say_the_commit_is_safe_and_what_to_do() {
        let fleet = Fleet::new();
        let (a, b) = (fleet.clone_as("a"), fleet.clone_as("b"));
        fleet.commit(&b, "b.txt", "from b\n");
        fleet.git(&b, &["push", "-q", "origin", "main"]);
        let ours = fleet.commit(&a, "c.txt", "from a\n");
        let message = format!("{:#}", fleet.push(&a, 1, &nothing_generated).unwrap_err());
        assert_eq!(
            message,
            format!(
                "could not push main to `origin` in 1 attempt(s): other clones kept pushing \
                 first (last: rejected (fetch first)); the commit {} is safe on the local \
                 branch main: wrap again, or run `git pull --rebase origin main && git push \
                 origin main`",
                &ours[..12]
            )
        );
        assert_eq!(fleet.git(&a, &["rev-parse", "main"]), ours);
    }

    #[test]
    fn eight_clones_pushing_at_once_all_land() {
        let fleet = Fleet::new();
        let clones: Vec<PathBuf> = (0..8)
            .map(|i| {
                let clone = fleet.clone_as(&format!("c{i}"));
                fleet.commit(&clone, &format!("from-{i}.txt"), &format!("{i}\n"));
                clone
            })
            .collect();
        let outcomes: Vec<PushOutcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = clones
                .iter()
                .map(|clone| scope.spawn(|| fleet.push(clone, 20, &nothing_generated)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, PushOutcome::Pushed { .. })),
            "{outcomes:?}"
        );
        assert_eq!(fleet.remote_git(&["rev-list", "--count", "main"]), "9");
        let files = fleet.remote_git(&["ls-tree", "--name-only", "main"]);
        for i in 0..8 {
            assert!(files.contains(&format!("from-{i}.txt")), "{files}");
        }
        // Every clone's branch is an ancestor of the remote's: nothing was lost or forked.
        for clone in &clones {
            let local = fleet.git(clone, &["rev-parse", "main"]);
            fleet.remote_git(&["merge-base", "--is-ancestor", &local, "main"]);
        }
    }
}

//! Which task comes next. This is decided here, in code, never by the agent.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use super::stack::{Status, Task, TaskStack};
use super::text::one_line;

/// Why a task is not the one picked.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    Finished(Status),
    /// Blocked, with the reason given to `task set --status blocked --reason`.
    Blocked(Option<String>),
    WaitingOn(Vec<(String, Status)>),
    HeldBy {
        session: String,
        agent: String,
    },
    /// Ready, but the picked task comes first.
    Behind {
        chosen: String,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Finished(status) => write!(f, "{status}"),
            NotReady::Blocked(None) => f.write_str("blocked"),
            NotReady::Blocked(Some(reason)) => write!(f, "blocked: {}", one_line(reason)),
            NotReady::WaitingOn(deps) => {
                // Written straight out: `next` prints this for thousands of tasks.
                f.write_str("waiting on ")?;
                for (i, (id, status)) in deps.iter().enumerate() {
                    let comma = if i == 0 { "" } else { ", " };
                    write!(f, "{comma}{id} ({status})")?;
                }
                Ok(())
            }
            NotReady::HeldBy { session, agent } => write!(f, "held by {session} (agent {agent})"),
            NotReady::Behind { chosen } => write!(f, "ready, after {chosen}"),
        }
    }
}

impl NotReady {
    pub fn code(&self) -> &'static str {
        match self {
            NotReady::Finished(_) => "finished",
            NotReady::Blocked(_) => "blocked",
            NotReady::WaitingOn(_) => "waiting",
            NotReady::HeldBy { .. } => "held",
            NotReady::Behind { .. } => "queued",
        }
    }
}

/// Whether a task could be started now, and if not, why.
pub fn readiness(stack: &TaskStack, task: &Task, now: DateTime<Utc>) -> Result<(), NotReady> {
    readiness_by(|id| stack.task(id), task, now)
}

/// [`readiness`] with the dependencies looked up by `find`.
fn readiness_by<'a>(
    find: impl Fn(&str) -> Option<&'a Task>,
    task: &Task,
    now: DateTime<Utc>,
) -> Result<(), NotReady> {
    match task.status {
        Status::Done | Status::Skipped => return Err(NotReady::Finished(task.status)),
        Status::Blocked => return Err(NotReady::Blocked(task.blocked_reason.clone())),
        Status::Pending | Status::InProgress => {}
    }
    let waiting: Vec<(String, Status)> = task
        .depends_on
        .iter()
        .filter_map(|dep| find(dep))
        .filter(|dep| dep.status != Status::Done)
        .map(|dep| (dep.id.clone(), dep.status))
        .collect();
    if !waiting.is_empty() {
        return Err(NotReady::WaitingOn(waiting));
    }
    if let Some(claim) = task.claim.as_ref().filter(|c| c.is_live(now)) {
        return Err(NotReady::HeldBy {
            session: claim.session.clone(),
            agent: claim.agent.clone(),
        });
    }
    Ok(())
}

pub struct Selection<'a> {
    pub chosen: Option<&'a Task>,
    /// Every other task, in file order, with the reason it was not picked.
    pub others: Vec<(&'a Task, NotReady)>,
}

/// FNV-1a for the table of a stack's ids: short keys from the user's own file, which need no
/// defence against chosen collisions, hash several times faster than with the default hasher.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Every task by id: one lookup table, not a scan of the stack per dependency.
fn by_id(stack: &TaskStack) -> HashMap<&str, &Task, BuildHasherDefault<Fnv>> {
    stack.tasks.iter().map(|t| (t.id.as_str(), t)).collect()
}

/// Of `ready`, the one to pick: the lowest priority number; ties go to in-progress, then file
/// order.
fn pick<'a>(ready: impl Iterator<Item = &'a Task>) -> Option<&'a Task> {
    ready.min_by_key(|task| (task.priority, task.status != Status::InProgress))
}

/// The task [`select_next`] chooses, without the reasons for every other task (what `start`
/// needs).
pub fn pick_next(stack: &TaskStack, now: DateTime<Utc>) -> Option<&Task> {
    let by_id = by_id(stack);
    pick(
        stack
            .tasks
            .iter()
            .filter(|task| readiness_by(|id| by_id.get(id).copied(), task, now).is_ok()),
    )
}

/// The ready task with the lowest priority number; ties go to in-progress, then file order.
pub fn select_next(stack: &TaskStack, now: DateTime<Utc>) -> Selection<'_> {
    let by_id = by_id(stack);
    let verdicts: Vec<(&Task, Result<(), NotReady>)> = stack
        .tasks
        .iter()
        .map(|task| (task, readiness_by(|id| by_id.get(id).copied(), task, now)))
        .collect();
    let chosen = pick(
        verdicts
            .iter()
            .filter(|(_, verdict)| verdict.is_ok())
            .map(|(task, _)| *task),
    );
    let others = verdicts
        .into_iter()
        .filter(|(task, _)| chosen.is_none_or(|c| !std::ptr::eq(*task, c)))
        .map(|(task, verdict)| {
            let reason = verdict.err().unwrap_or_else(|| NotReady::Behind {
                chosen: chosen.map(|c| c.id.clone()).unwrap_or_default(),
            });
            (task, reason)
        })
        .collect();
    Selection { chosen, others }
}

/// Every ready task, the one [`select_next`] picks first and the rest in the order it would
/// pick them: what a shared store tries in turn when other machines claim at the same time.
pub fn ready_in_order(stack: &TaskStack, now: DateTime<Utc>) -> Vec<&Task> {
    let by_id: HashMap<&str, &Task> = stack.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut ready: Vec<&Task> = stack
        .tasks
        .iter()
        .filter(|task| readiness_by(|id| by_id.get(id).copied(), task, now).is_ok())
        .collect();
    // Stable: ties stay in file order, as `min_by_key` keeps the first of equal keys.
    ready.sort_by_key(|task| (task.priority, task.status != Status::InProgress));
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stack::Claim;
    use chrono::{Duration, TimeZone};
    use serde_json::Map;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 11, 6, 0, 0, 0).unwrap()
    }

    fn task(id: &str, priority: i64, status: Status, deps: &[&str]) -> Task {
        let mut t = Task::new(
            id.into(),
            String::new(),
            priority,
            10,
            deps.iter().map(|d| d.to_string()).collect(),
        );
        t.status = status;
        t
    }

    fn stack(tasks: Vec<Task>) -> TaskStack {
        let mut s = TaskStack::new(Default::default());
        s.tasks = tasks;
        s
    }

    /// What `next` shows, checked to be what `start` picks.
    fn select_next(stack: &TaskStack, now: DateTime<Utc>) -> Selection<'_> {
        let selection = super::select_next(stack, now);
        assert_eq!(
            pick_next(stack, now).map(|t| &t.id),
            selection.chosen.map(|t| &t.id)
        );
        selection
    }

    fn claim(expires: DateTime<Utc>) -> Claim {
        Claim {
            session: "session_20251106_000000".into(),
            agent: "claude".into(),
            host: "h".into(),
            pid: 1,
            lease_expires: expires,
            extra: Map::new(),
        }
    }

    #[test]
    fn lowest_priority_number_wins() {
        let s = stack(vec![
            task("b", 2, Status::Pending, &[]),
            task("a", 1, Status::Pending, &[]),
        ]);
        let sel = select_next(&s, now());
        assert_eq!(sel.chosen.unwrap().id, "a");
        assert_eq!(sel.others[0].1, NotReady::Behind { chosen: "a".into() });
    }

    #[test]
    fn ties_go_to_in_progress_then_file_order() {
        let s = stack(vec![
            task("p1", 1, Status::Pending, &[]),
            task("p2", 1, Status::Pending, &[]),
            task("ip", 1, Status::InProgress, &[]),
        ]);
        assert_eq!(select_next(&s, now()).chosen.unwrap().id, "ip");
        let s = stack(vec![
            task("p1", 1, Status::Pending, &[]),
            task("p2", 1, Status::Pending, &[]),
        ]);
        assert_eq!(select_next(&s, now()).chosen.unwrap().id, "p1");
    }

    #[test]
    fn ready_in_order_starts_with_the_pick_and_skips_what_is_not_ready() {
        let mut held = task("held", 0, Status::Pending, &[]);
        held.claim = Some(claim(now() + Duration::minutes(5)));
        let s = stack(vec![
            task("p2", 2, Status::Pending, &[]),
            task("p1", 1, Status::Pending, &[]),
            task("ip", 1, Status::InProgress, &[]),
            task("after", 0, Status::Pending, &["p2"]),
            held,
            task("p1b", 1, Status::Pending, &[]),
        ]);
        let order: Vec<&str> = ready_in_order(&s, now())
            .iter()
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(order, ["ip", "p1", "p1b", "p2"]);
        assert_eq!(select_next(&s, now()).chosen.unwrap().id, order[0]);
    }

    #[test]
    fn dependencies_finished_tasks_and_live_claims_hold_tasks_back() {
        let mut held = task("held", 1, Status::InProgress, &[]);
        held.claim = Some(claim(now() + Duration::minutes(5)));
        let s = stack(vec![
            task("dep", 3, Status::Pending, &[]),
            task("after", 1, Status::Pending, &["dep"]),
            task("finished", 1, Status::Done, &[]),
            task("parked", 1, Status::Blocked, &[]),
            held,
        ]);
        let sel = select_next(&s, now());
        assert_eq!(sel.chosen.unwrap().id, "dep");
        let reasons: Vec<String> = sel
            .others
            .iter()
            .map(|(t, r)| format!("{}: {r}", t.id))
            .collect();
        assert_eq!(
            reasons,
            [
                "after: waiting on dep (pending)",
                "finished: done",
                "parked: blocked",
                "held: held by session_20251106_000000 (agent claude)"
            ]
        );
    }

    #[test]
    fn a_task_waiting_on_several_names_each() {
        let s = stack(vec![
            task("x", 1, Status::Pending, &[]),
            task("y", 1, Status::InProgress, &[]),
            task("z", 1, Status::Pending, &["x", "y"]),
        ]);
        let sel = select_next(&s, now());
        assert_eq!(
            sel.others[1].1.to_string(),
            "waiting on x (pending), y (in_progress)"
        );
    }

    #[test]
    fn a_blocked_task_says_why() {
        let mut parked = task("parked", 1, Status::Blocked, &[]);
        parked.blocked_reason = Some("waiting for the API key".into());
        let s = stack(vec![parked]);
        let sel = select_next(&s, now());
        assert_eq!(
            sel.others[0].1.to_string(),
            "blocked: waiting for the API key"
        );
        assert_eq!(sel.others[0].1.code(), "blocked");
    }

    #[test]
    fn an_expired_claim_does_not_hold_the_task() {
        let mut t = task("a", 1, Status::InProgress, &[]);
        t.claim = Some(claim(now()));
        let s = stack(vec![t]);
        assert_eq!(select_next(&s, now()).chosen.unwrap().id, "a");
    }

    #[test]
    fn nothing_ready_means_no_choice() {
        let s = stack(vec![
            task("a", 1, Status::Done, &[]),
            task("b", 1, Status::Skipped, &[]),
        ]);
        let sel = select_next(&s, now());
        assert!(sel.chosen.is_none());
        assert_eq!(sel.others.len(), 2);
    }
}

//! The state `orchestrator run` loops share through the workspace: the quota pause every loop
//! honours, each agent's breaker counts (kept across restarts), and the pid file of each loop
//! (for `stop --now`). Written atomically under the workspace lock.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::Workspace;
use super::file::{process_alive, read_text, remove_if_exists, write_atomic, write_json};

/// `.orchestrator/PAUSE`: no loop starts a session before `until` (one account, one quota).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub until: DateTime<Utc>,
    /// Why, in the agent's words (its final line).
    pub reason: String,
    /// The agent whose loop saw the limit.
    pub agent: String,
}

/// `.orchestrator/breaker/<agent>.json`: the counts in a row so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerCounts {
    pub without_progress: u32,
    pub failures: u32,
}

impl Workspace {
    pub fn pause_file(&self) -> PathBuf {
        self.state_dir().join("PAUSE")
    }

    fn breaker_path(&self, agent: &str) -> PathBuf {
        self.state_dir()
            .join("breaker")
            .join(format!("{agent}.json"))
    }

    fn pid_path(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(format!("{run_id}.pid"))
    }

    /// The pause, if one is recorded; a damaged file is reported and ignored (it only delays).
    pub fn load_pause(&self) -> Option<Pause> {
        let path = self.pause_file();
        if !path.exists() {
            return None;
        }
        match read_text(&path).and_then(|t| {
            serde_json::from_str(&t)
                .with_context(|| format!("{}: not a pause record", path.display()))
        }) {
            Ok(pause) => Some(pause),
            Err(err) => {
                tracing::warn!("{err:#}");
                None
            }
        }
    }

    /// Records a pause, keeping a later one another loop recorded.
    pub fn extend_pause(&self, pause: &Pause) -> Result<Pause> {
        let _lock = self.lock()?;
        let kept = match self.load_pause() {
            Some(current) if current.until >= pause.until => current,
            _ => {
                std::fs::create_dir_all(self.state_dir())
                    .with_context(|| format!("cannot create {}", self.state_dir().display()))?;
                write_json(&self.pause_file(), pause)?;
                pause.clone()
            }
        };
        Ok(kept)
    }

    pub fn remove_pause(&self) -> Result<bool> {
        let _lock = self.lock()?;
        let existed = self.pause_file().exists();
        remove_if_exists(&self.pause_file())?;
        Ok(existed)
    }

    pub fn load_breaker(&self, agent: &str) -> BreakerCounts {
        let path = self.breaker_path(agent);
        if !path.exists() {
            return BreakerCounts::default();
        }
        read_text(&path)
            .and_then(|t| Ok(serde_json::from_str(&t)?))
            .unwrap_or_else(|err| {
                tracing::warn!("{}: {err:#}; the breaker starts from zero", path.display());
                BreakerCounts::default()
            })
    }

    pub fn save_breaker(&self, agent: &str, counts: BreakerCounts) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.breaker_path(agent);
        if counts == BreakerCounts::default() {
            return remove_if_exists(&path);
        }
        let dir = path.parent().expect("under the state directory");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_json(&path, &counts)
    }

    /// Marks this process as the loop `run_id` until `remove_run_pid`.
    pub fn write_run_pid(&self, run_id: &str) -> Result<()> {
        let dir = self.runs_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(
            &self.pid_path(run_id),
            format!("{}\n", std::process::id()).as_bytes(),
        )
    }

    pub fn remove_run_pid(&self, run_id: &str) {
        if let Err(err) = remove_if_exists(&self.pid_path(run_id)) {
            tracing::warn!("{err:#}");
        }
    }

    /// The pids of the loops running on this workspace (a pid file whose process is gone is
    /// left from a killed loop and skipped).
    pub fn running_loops(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(self.runs_dir()) else {
            return Vec::new();
        };
        let mut pids: Vec<i32> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
            .filter_map(|e| read_text(&e.path()).ok()?.trim().parse().ok())
            .filter(|pid: &i32| *pid > 0 && process_alive(*pid) && runs_this_program(*pid))
            .collect();
        pids.sort_unstable();
        pids
    }
}

/// Whether `pid` runs this same program, so a pid file left by a killed loop whose number was
/// reused never gets another process signalled. Where /proc cannot tell, the pid is trusted.
fn runs_this_program(pid: i32) -> bool {
    let Ok(ours) = std::env::current_exe() else {
        return true;
    };
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(theirs) => theirs == ours,
        // Another user's process, or no /proc: the pid file is all there is to go on.
        Err(err) => err.kind() != std::io::ErrorKind::NotFound || !Path::new("/proc/self").exists(),
    }
}

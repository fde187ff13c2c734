//! The agent process `orchestrator run` drives: spawned without a shell, in its own process
//! group (so a signal reaches the agent and everything it started), with the brief on stdin and
//! its output passed through to our stderr while the tail is kept to spot a rate limit.

use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of the agent's latest output is kept for the rate-limit patterns.
const TAIL_BYTES: usize = 16 * 1024;

pub struct AgentProcess {
    child: Child,
    tail: Arc<Mutex<VecDeque<u8>>>,
    /// When the agent last printed anything (for `--idle-timeout`).
    last_output: Arc<Mutex<Instant>>,
    pumps: Vec<JoinHandle<()>>,
}

impl AgentProcess {
    pub fn spawn(
        program: &str,
        args: &[String],
        env: &[(&str, String)],
        dir: &Path,
        stdin_text: String,
    ) -> Result<AgentProcess> {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run the agent command `{program}`"))?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES)));
        let last_output = Arc::new(Mutex::new(Instant::now()));
        let mut pumps = Vec::new();
        if let Some(mut stdin) = child.stdin.take() {
            // A thread, so an agent that never reads stdin cannot block the loop on a full pipe.
            pumps.push(std::thread::spawn(move || {
                let _ = stdin.write_all(stdin_text.as_bytes());
            }));
        }
        if let Some(stdout) = child.stdout.take() {
            pumps.push(pump(stdout, Arc::clone(&tail), Arc::clone(&last_output)));
        }
        if let Some(stderr) = child.stderr.take() {
            pumps.push(pump(stderr, Arc::clone(&tail), Arc::clone(&last_output)));
        }
        Ok(AgentProcess {
            child,
            tail,
            last_output,
            pumps,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long since the agent last printed (or started).
    pub fn silent_for(&self) -> Duration {
        self.last_output
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }

    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .context("cannot check on the agent process")
    }

    /// Sends `signal` to the agent's whole process group.
    pub fn signal(&self, signal: i32) {
        let Ok(pgid) = i32::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals the process group; it touches no memory.
        let result = unsafe { libc::kill(-pgid, signal) };
        if result != 0 {
            tracing::debug!(
                "signal {signal} to the agent's group {pgid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Waits for the exit and for the output to drain, then gives the status and output tail.
    pub fn finish(mut self) -> Result<(ExitStatus, String)> {
        let status = self.child.wait().context("cannot wait for the agent")?;
        // A process the agent left behind may hold its output open forever: drain for a while,
        // then leave the pumps to finish on their own.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.pumps.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for pump in self.pumps.drain(..).filter(|p| p.is_finished()) {
            let _ = pump.join();
        }
        let tail = self
            .tail
            .lock()
            .map(|t| t.iter().copied().collect::<Vec<u8>>());
        let tail = String::from_utf8_lossy(&tail.unwrap_or_default()).into_owned();
        Ok((status, tail))
    }
}

fn pump(
    mut from: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<u8>>>,
    last_output: Arc<Mutex<Instant>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut out = std::io::stderr();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Ok(mut at) = last_output.lock() {
                *at = Instant::now();
            }
            crate::live_line::clear();
            let _ = out.write_all(&buf[..n]);
            if let Ok(mut tail) = tail.lock() {
                tail.extend(&buf[..n]);
                let excess = tail.len().saturating_sub(TAIL_BYTES);
                tail.drain(..excess);
            }
        }
    })
}

/// Where `program` would be run from, checked before any session is claimed: a name is looked
/// up on `path_var` (PATH), a path (with a `/`, relative to `dir`) must be an executable file.
pub fn resolve_program(
    program: &str,
    path_var: Option<&std::ffi::OsStr>,
    dir: &Path,
) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return Err("the agent command is empty".into());
    }
    if program.contains('/') {
        let path = dir.join(program);
        return match std::fs::metadata(&path) {
            Err(_) => Err(format!("the agent command `{program}` does not exist")),
            Ok(m) if !m.is_file() => Err(format!("the agent command `{program}` is not a file")),
            Ok(_) if !executable(&path) => Err(format!(
                "the agent command `{program}` is not executable (chmod +x it)"
            )),
            Ok(_) => Ok(path),
        };
    }
    path_var
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .map(|d| {
            if d.as_os_str().is_empty() {
                dir.to_path_buf()
            } else {
                d
            }
        })
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("the agent command `{program}` is not found on PATH"))
}

/// `exit 3` or `killed by signal 9`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_gets_its_stdin_and_its_output_tail_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let agent = AgentProcess::spawn(
            "sh",
            &[
                "-c".into(),
                "read line; echo \"got $line and $X\" >&2; exit 7".into(),
            ],
            &[("X", "env".into())],
            dir.path(),
            "brief\n".into(),
        )
        .unwrap();
        let (status, tail) = agent.finish().unwrap();
        assert_eq!(status.code(), Some(7));
        assert_eq!(tail, "got brief and env\n");
        assert_eq!(describe_exit(status), "exit 7");
    }

    #[test]
    fn a_signal_reaches_the_agents_children() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = AgentProcess::spawn(
            "sh",
            &["-c".into(), "sleep 30 & wait".into()],
            &[],
            dir.path(),
            String::new(),
        )
        .unwrap();
        assert!(agent.try_wait().unwrap().is_none());
        agent.signal(libc::SIGKILL);
        let (status, _) = agent.finish().unwrap();
        assert_eq!(describe_exit(status), "killed by signal 9");
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = AgentProcess::spawn("no-such-agent-xyz", &[], &[], dir.path(), String::new())
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no-such-agent-xyz"), "{err:#}");
    }
}

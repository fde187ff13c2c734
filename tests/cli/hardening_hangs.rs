//! Issue 9, hangs and unbounded memory: transcripts that are FIFOs or devices, a workspace lock
//! held by someone else, and the hook's deadline. Every run has a watchdog: a hang fails the test.

use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Far above anything these commands need; reaching it means the binary hangs.
const WATCHDOG: Duration = Duration::from_secs(20);

/// Spawns `cmd` with piped stdout and stderr (and stdin, fed `stdin` then closed unless `keep_stdin_open`).
struct Watched {
    child: Child,
    what: String,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    /// Held so that the child's stdin stays open, when asked.
    _stdin: Option<std::process::ChildStdin>,
}

fn spawn(mut cmd: Command, stdin: &[u8], keep_stdin_open: bool) -> Watched {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut pipe = child.stdin.take().unwrap();
    if let Err(err) = pipe.write_all(stdin) {
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
    let kept = keep_stdin_open.then_some(pipe);
    let drain = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = from.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    Watched {
        child,
        what,
        stdout,
        stderr,
        _stdin: kept,
    }
}

impl Watched {
    /// Waits for the child; kills it and fails the test if it outlives the watchdog.
    fn finish(mut self) -> Output {
        let began = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if began.elapsed() > WATCHDOG {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.join().unwrap();
                panic!(
                    "hung: {} was still running after {WATCHDOG:?} and was killed\nstderr: {}",
                    self.what,
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }
}

/// Runs `cmd` to completion under the watchdog.
fn watched(cmd: Command) -> Output {
    spawn(cmd, b"", false).finish()
}

fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A FIFO in the workspace's home (outside the workspace, where transcripts live).
fn fifo(ws: &Ws, name: &str) -> PathBuf {
    let path = ws.home().join(name);
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
    path
}

/// A seed workspace with a live session of `agent` reading `transcript`.
fn start_on(ws: &Ws, agent: &str, transcript: &Path) -> String {
    let out = watched(ws.command(&[
        "start",
        "--agent",
        agent,
        "--transcript",
        transcript.to_str().unwrap(),
        "--json",
    ]));
    assert_code(&out, 0);
    let brief: Value = serde_json::from_slice(&out.stdout).unwrap();
    brief["session"].as_str().unwrap().to_string()
}

/// The warning a transcript that cannot be read gives, naming it and why.
fn assert_unreadable_warning(out: &Output, transcript: &Path) {
    let err = stderr(out);
    assert!(err.contains("cannot read the transcript"), "{err}");
    assert!(err.contains(&transcript.display().to_string()), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn checkpoint_with_a_fifo_transcript_records_the_checkpoint_with_a_warning() {
    let ws = Ws::seed();
    let transcript = fifo(&ws, "transcript.jsonl");
    start_on(&ws, "claude", &transcript);
    let out = watched(ws.command(&["checkpoint", "one step", "--advance", "1", "--json"]));
    // An unreadable transcript gives no figure: the level is unknown.
    assert_code(&out, 12);
    assert_unreadable_warning(&out, &transcript);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["progress"]["done"], 1, "{v}");
    assert_eq!(ws.progress("integrate_sessions_101_140"), (1, 40));
}

#[test]
fn status_with_a_fifo_transcript_reports_with_a_warning() {
    let ws = Ws::seed();
    let transcript = fifo(&ws, "transcript.jsonl");
    let session = start_on(&ws, "claude", &transcript);
    let out = watched(ws.command(&["status", "--json"]));
    // An unreadable transcript gives no figure: the level is unknown.
    assert_code(&out, 12);
    assert_unreadable_warning(&out, &transcript);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["session"], json!(session));
}

/// A Claude Code hook event (shape as in `hooks.rs`, after the Claude Code hooks reference).
fn post_tool_use(ws: &Ws, transcript: &Path) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "session_id": "3f1c2a9e-7b4d-4e1a-9c55-0d2b8e6f1a77",
        "transcript_path": transcript,
        "cwd": ws.path(),
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "cargo test"},
        "tool_response": {"stdout": "ok", "stderr": "", "interrupted": false},
    }))
    .unwrap()
}

#[test]
fn hook_with_a_fifo_transcript_answers_with_a_warning() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    let transcript = fifo(&ws, "transcript.jsonl");
    let out = spawn(
        ws.command(&["hook", "claude"]),
        &post_tool_use(&ws, &transcript),
        false,
    )
    .finish();
    assert_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "nothing to say");
    assert_unreadable_warning(&out, &transcript);
}

#[test]
fn a_transcript_linked_to_dev_zero_is_refused_without_eating_memory() {
    let ws = Ws::seed();
    let transcript = ws.home().join("transcript.jsonl");
    std::os::unix::fs::symlink("/dev/zero", &transcript).unwrap();
    start_on(&ws, "claude", &transcript);
    let mut cmd = ws.command(&["checkpoint", "one step", "--json"]);
    // A binary that reads without bound dies at this limit instead of eating the machine.
    // SAFETY: setrlimit is async-signal-safe and only affects the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = watched(cmd);
    // An unreadable transcript gives no figure: the level is unknown.
    assert_code(&out, 12);
    assert_unreadable_warning(&out, &transcript);
}

/// Takes the workspace lock as another process would (std's `File::lock`, an exclusive flock).
fn hold_lock(ws: &Ws) -> File {
    let file = OpenOptions::new()
        .write(true)
        .open(ws.file(".orchestrator/lock"))
        .unwrap();
    file.lock().unwrap();
    file
}

#[test]
fn a_lock_held_by_another_process_is_waited_for_within_a_bound_then_refused() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    let before = ws.snapshot();
    let held = hold_lock(&ws);
    let mut cmd = ws.command(&["checkpoint", "one step", "--advance", "1"]);
    cmd.env("ORCHESTRATOR_LOCK_TIMEOUT", "1");
    let out = watched(cmd);
    assert_code(&out, 4);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(".orchestrator/lock"), "{line}");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "names the holder: {line}"
    );
    assert!(line.contains("ORCHESTRATOR_LOCK_TIMEOUT"), "{line}");
    assert_eq!(ws.snapshot(), before, "nothing changed");

    // Once the holder lets go, the same command goes through.
    drop(held);
    ws.expect(12, &["checkpoint", "one step", "--advance", "1"]);
    assert_eq!(ws.progress("integrate_sessions_101_140"), (1, 40));
}

#[test]
fn a_bad_lock_timeout_is_refused() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    let mut cmd = ws.command(&["checkpoint", "one step"]);
    cmd.env("ORCHESTRATOR_LOCK_TIMEOUT", "soon");
    let out = watched(cmd);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("ORCHESTRATOR_LOCK_TIMEOUT"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn another_agents_checkpoint_proceeds_while_one_transcript_is_a_fifo() {
    let ws = Ws::new();
    ws.ok(&["task", "add", "a", "--title", "a task", "--total", "10"]);
    ws.ok(&["task", "add", "b", "--title", "b task", "--total", "10"]);
    let transcript = fifo(&ws, "transcript.jsonl");
    let stuck = start_on(&ws, "alpha", &transcript);
    let other = ws.json(0, &["start", "--agent", "beta"])["session"]
        .as_str()
        .unwrap()
        .to_string();

    let mut first = ws.command(&["checkpoint", "alpha step", "--advance", "1"]);
    first.env("ORCHESTRATOR_SESSION", &stuck);
    let first = spawn(first, b"", false);
    // Gives the first checkpoint time to take the lock and reach its transcript (ordering only:
    // the assertions below hold whatever the timing).
    std::thread::sleep(Duration::from_millis(500));
    let mut second = ws.command(&["checkpoint", "beta step", "--advance", "1"]);
    second.env("ORCHESTRATOR_SESSION", &other);
    let second = watched(second);
    assert_code(&second, 12);
    assert_eq!(ws.progress("b"), (1, 10));

    let first = first.finish();
    assert_code(&first, 12);
    assert_unreadable_warning(&first, &transcript);
    assert_eq!(ws.progress("a"), (1, 10));
}

#[test]
fn the_hook_answers_within_its_deadline_while_the_lock_is_held() {
    let ws = Ws::seed();
    ws.ok(&["start", "--agent", "claude"]);
    let transcript = ws.home().join("new.jsonl");
    // SessionStart with a new transcript rebinds the session, which needs the lock.
    let event = serde_json::to_vec(&json!({
        "session_id": "3f1c2a9e-7b4d-4e1a-9c55-0d2b8e6f1a77",
        "transcript_path": transcript,
        "cwd": ws.path(),
        "hook_event_name": "SessionStart",
        "source": "startup",
    }))
    .unwrap();
    let _held = hold_lock(&ws);
    let mut cmd = ws.command(&["hook", "claude"]);
    cmd.env("ORCHESTRATOR_HOOK_TIMEOUT", "1");
    let out = spawn(cmd, &event, false).finish();
    assert_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(
        stderr(&out).contains("ORCHESTRATOR_HOOK_TIMEOUT"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_hook_answers_within_its_deadline_when_stdin_never_ends() {
    let ws = Ws::seed();
    let mut cmd = ws.command(&["hook", "claude"]);
    cmd.env("ORCHESTRATOR_HOOK_TIMEOUT", "1");
    // Half an event, and stdin left open: a read to the end never returns.
    let out = spawn(cmd, b"{\"hook_event_name\": ", true).finish();
    assert_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

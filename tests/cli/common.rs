//! The harness: a workspace in a temp dir and the binary run in it with a clean environment.

#![allow(dead_code)]

use serde_json::Value;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");
pub const T0: &str = "2025-11-06T00:13:55Z";

pub struct Ws {
    dir: TempDir,
    home: TempDir,
    now: RefCell<String>,
}

impl Ws {
    /// An empty directory (no `init` yet).
    pub fn empty() -> Ws {
        Ws {
            dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
            now: RefCell::new(T0.to_string()),
        }
    }

    /// `init` with the seed's budget.
    pub fn new() -> Ws {
        let ws = Ws::empty();
        ws.ok(&[
            "init",
            "--budget",
            "200000",
            "--warn",
            "0.75",
            "--shutdown",
            "0.85",
        ]);
        ws
    }

    /// The seed scenario's stack: one task of 40 units.
    pub fn seed() -> Ws {
        let ws = Ws::new();
        ws.ok(&[
            "task",
            "add",
            "integrate_sessions_101_140",
            "--title",
            "Integrate sessions 101-140",
            "--total",
            "40",
        ]);
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The sanitized `$HOME` the binary runs with.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn set_now(&self, rfc3339: &str) {
        *self.now.borrow_mut() = rfc3339.to_string();
    }

    pub fn now(&self) -> String {
        self.now.borrow().clone()
    }

    /// The binary with nothing from the developer's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("ORCHESTRATOR_NOW", self.now())
            .env("RUST_LOG", "warn");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// Runs and asserts the exit code; returns stdout.
    pub fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "orchestrator {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args)
    }

    /// Runs with `--json` and parses stdout, which must be exactly one JSON object.
    pub fn json(&self, code: i32, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.expect(code, &all);
        let value: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"));
        assert!(value.is_object(), "{out}");
        value
    }

    /// Runs expecting a refusal (exit 1); returns stderr, which must be one `error:` line.
    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "orchestrator {args:?} should be refused\nstderr: {stderr}"
        );
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {stderr}"));
        line.to_string()
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.file(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `task_stack.json` as a task command leaves it: current, the checkpoint journal folded in.
    pub fn stack(&self) -> Value {
        let _ = self.command(&["task", "list"]).output();
        serde_json::from_str(&self.read("task_stack.json")).unwrap()
    }

    pub fn task(&self, id: &str) -> Value {
        self.stack()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    }

    pub fn progress(&self, id: &str) -> (u64, u64) {
        let t = self.task(id);
        (
            t["progress"]["done"].as_u64().unwrap(),
            t["progress"]["total"].as_u64().unwrap(),
        )
    }

    pub fn files_in(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(self.file(rel)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// Every file under the workspace with its bytes, to prove a refusal changed nothing.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut dirs = vec![self.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n == ".git") {
                        continue;
                    }
                    dirs.push(path);
                } else if path.file_name().is_some_and(|n| n != "lock") {
                    let bytes = std::fs::read(&path).unwrap();
                    files.push((path, bytes));
                }
            }
        }
        files.sort();
        files
    }
}

/// `2025-11-06T00:13:55Z` plus whole minutes.
/// The stdout of a run that must have succeeded (its output shown if not).
pub fn success_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn at_minutes(minutes: i64) -> String {
    let t0 = chrono::DateTime::parse_from_rfc3339(T0).unwrap();
    (t0 + chrono::Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The pid of a process that has exited, for temp names whose writer is gone.
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

impl Ws {
    /// An empty workspace directory made inside `parent` (a test's own mount, say).
    pub fn empty_in(parent: &Path) -> Ws {
        Ws {
            dir: tempfile::tempdir_in(parent).unwrap(),
            home: tempfile::tempdir().unwrap(),
            now: RefCell::new(T0.to_string()),
        }
    }
}

/// Runs the real git in the workspace, with no global or system config; its stdout, after
/// asserting that it succeeded.
pub fn git_stdout(ws: &Ws, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .args(args)
        .current_dir(ws.path())
        .env("HOME", ws.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A JSON record as one line of a JSON-lines file (a transcript, a log).
pub fn line(record: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(record).unwrap();
    bytes.push(b'\n');
    bytes
}

/// Appends bytes to a file, making its directory first: an agent writing its transcript.
pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

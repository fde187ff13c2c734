//! `settings.run.on_event` / `run --on-event`: a user's command told of the loop's events, with
//! the event as JSON on stdin and in `ORCHESTRATOR_EVENT*` variables. Run without a shell,
//! bounded in time; its failure is logged, never fatal (a notification is not the work).

use serde_json::Value;
use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a notifier may take before it is killed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `command` for `event` (an object with at least `event` and `message`); the error, if
/// any, is returned for the caller to log.
pub fn notify(command: &[String], event: &Value, dir: &std::path::Path) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Ok(());
    };
    let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("ORCHESTRATOR_EVENT", text("event"))
        .env("ORCHESTRATOR_EVENT_MESSAGE", text("message"))
        .env("ORCHESTRATOR_EVENT_JSON", event.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot run the notifier `{program}`: {err}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut line = event.to_string();
        line.push('\n');
        // A notifier that does not read stdin closes it: that is its choice, not a failure.
        let _ = stdin.write_all(line.as_bytes());
    }
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("the notifier `{program}` failed ({status})")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the notifier `{program}` took over {}s and was killed",
                    NOTIFY_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => return Err(format!("cannot wait for the notifier `{program}`: {err}")),
        }
    }
}

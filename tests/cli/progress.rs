//! Progress on long work (issue 17): the first read of a large transcript shows an indicatif bar
//! on a terminal (util-linux script(1) gives the command one), and nothing when stderr is not a
//! terminal.

use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::cost::OPUS_LINE;

/// A 33 MiB Claude Code transcript: user records carrying 8 MiB of (image-like) text, as
/// Claude Code writes for pasted images (the meter skips their content), then one assistant
/// record ([`OPUS_LINE`], a real 1.0.113 line).
fn large_transcript(path: &Path) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let data = "A".repeat(8 << 20);
    for n in 0..4 {
        let user = json!({"type": "user", "uuid": format!("u{n}"), "sessionId": "cd336f00",
            "message": {"role": "user", "content": [{"type": "text", "text": data}]}});
        writeln!(file, "{user}").unwrap();
    }
    writeln!(file, "{OPUS_LINE}").unwrap();
    file.write_all(&vec![b'\n'; 1 << 20]).unwrap();
}

fn started_on_large_transcript() -> Ws {
    let ws = Ws::seed();
    let transcript = ws.home().join("big.jsonl");
    large_transcript(&transcript);
    assert!(std::fs::metadata(&transcript).unwrap().len() > 32 << 20);
    ws.ok(&[
        "start",
        "--agent",
        "claude",
        "--transcript",
        transcript.to_str().unwrap(),
    ]);
    ws
}

#[test]
fn the_first_read_of_a_large_transcript_shows_a_bar_on_a_terminal_only() {
    // Piped: no bar, no carriage return, and the figure read all the same.
    let ws = started_on_large_transcript();
    let out = ws.run(&["status", "--exit-zero"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("reading transcript"), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("used=147759"));

    // On a terminal: the bar, then the report.
    let ws = started_on_large_transcript();
    let out = on_a_terminal(&ws, "status --exit-zero");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("reading transcript big.jsonl: "),
        "{screen:?}"
    );
    assert!(screen.contains("of 33 MiB"), "{screen:?}");
    assert!(screen.contains("used=147759"), "{screen:?}");

    // The next read goes on from the cache: no bar.
    let again = on_a_terminal(&ws, "status --exit-zero");
    let screen = String::from_utf8_lossy(&again.stdout);
    assert!(!screen.contains("reading transcript"), "{screen:?}");
}

/// The binary run with `args` under script(1), so that its stdout and stderr are a terminal.
fn on_a_terminal(ws: &Ws, args: &str) -> std::process::Output {
    Command::new("script")
        .args(["-qec", &format!("{BIN} {args}"), "/dev/null"])
        .current_dir(ws.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", ws.home())
        .env("ORCHESTRATOR_NOW", ws.now())
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .output()
        .unwrap()
}

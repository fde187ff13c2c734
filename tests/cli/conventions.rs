//! The command line's conventions: help text everywhere, shell completions, the man page,
//! `--quiet`, and colours only on a terminal (NO_COLOR, CLICOLOR_FORCE, never in `--json`).

use crate::common::*;
use clap::CommandFactory;
use orchestrator::cli::Cli;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

const ESC: u8 = 0x1b;

/// Every command's path from the root (`["task", "add"]`), clap's own `help` left out.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_string());
            out.push(sub_path.clone());
            walk(sub, sub_path, out);
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, Vec::new(), &mut out);
    out
}

// ---- help text ----

#[test]
fn every_command_and_argument_has_help_text() {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.clone().debug_assert();
    let mut missing = Vec::new();
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let has = |s: Option<&clap::builder::StyledStr>| {
            s.is_some_and(|s| !s.to_string().trim().is_empty())
        };
        if !has(cmd.get_about()) && !has(cmd.get_long_about()) {
            missing.push(format!("`{path}` has no about text"));
        }
        for arg in cmd.get_arguments() {
            if !has(arg.get_help()) && !has(arg.get_long_help()) {
                missing.push(format!("`{path}` argument `{}` has no help", arg.get_id()));
            }
            if !arg.get_possible_values().is_empty() && arg.is_hide_possible_values_set() {
                missing.push(format!(
                    "`{path}` argument `{}` hides its values",
                    arg.get_id()
                ));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    walk(&cmd, "orchestrator", &mut missing);
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn status_options_list_their_values() {
    let ws = Ws::empty();
    for args in [["task", "set", "--help"], ["task", "list", "--help"]] {
        let help = ws.ok(&args);
        for status in ["pending", "in_progress", "done", "blocked", "skipped"] {
            assert!(help.contains(&format!("- {status}:")), "{args:?}: {help}");
        }
    }
    let err = ws.run(&["task", "list", "--status", "finished"]);
    assert_eq!(err.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        stderr.contains("possible values: pending, in_progress, done, blocked, skipped"),
        "{stderr}"
    );
}

// ---- completions ----

#[test]
fn bash_completions_are_valid_bash_and_complete_commands_and_values() {
    let ws = Ws::empty();
    let script = ws.ok(&["completions", "bash"]);
    let file = ws.file("orchestrator.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Completing as bash does: the script's function fills COMPREPLY for the words so far.
    let complete = |words: &str, cword: usize| -> Vec<String> {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _orchestrator orchestrator \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(program)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let top = complete("orchestrator ''", 1);
    for path in command_paths().iter().filter(|p| p.len() == 1) {
        assert!(top.contains(&path[0]), "{} not in {top:?}", path[0]);
    }
    assert_eq!(complete("orchestrator che", 1), vec!["checkpoint"]);
    let values = complete("orchestrator task set a --status ''", 5);
    for status in ["pending", "in_progress", "done", "blocked", "skipped"] {
        assert!(values.contains(&status.to_string()), "{values:?}");
    }
}

#[test]
fn zsh_fish_and_powershell_completions_name_every_command() {
    let ws = Ws::empty();
    let zsh = ws.ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef orchestrator\n"), "{zsh}");
    let fish = ws.ok(&["completions", "fish"]);
    assert!(fish.contains("complete -c orchestrator"), "{fish}");
    let powershell = ws.ok(&["completions", "powershell"]);
    assert!(
        powershell.contains("Register-ArgumentCompleter"),
        "{powershell}"
    );
    for path in command_paths() {
        let name = path.last().unwrap();
        for (shell, script) in [("zsh", &zsh), ("fish", &fish), ("powershell", &powershell)] {
            assert!(script.contains(name.as_str()), "{shell} lacks {name}");
        }
    }
    // Checked by the shell itself where it is installed.
    for (shell, script, ext) in [("zsh", &zsh, "zsh"), ("fish", &fish, "fish")] {
        let file = ws.file(&format!("completions.{ext}"));
        std::fs::write(&file, script).unwrap();
        if let Ok(out) = Command::new(shell).arg("-n").arg(&file).output() {
            assert!(
                out.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn completions_need_no_workspace_and_refuse_an_unknown_shell() {
    let ws = Ws::empty();
    // Nothing to find, and a clock override that every workspace command would refuse.
    let out = ws
        .command(&["completions", "bash"])
        .env("ORCHESTRATOR_NOW", "yesterday")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!out.stdout.is_empty());
    let out = ws.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("powershell"),
        "{stderr}"
    );
    let json = ws.json(0, &["completions", "fish"]);
    assert_eq!(json["shell"], "fish");
    assert!(json["script"].as_str().unwrap().contains("complete -c"));
}

// ---- man ----

#[test]
fn the_man_page_has_its_header_and_every_command() {
    let ws = Ws::empty();
    let page = ws.ok(&["man"]);
    assert!(
        page.lines().any(|l| l.starts_with(".TH orchestrator 1 ")),
        "{page}"
    );
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for path in command_paths().iter().filter(|p| p.len() == 1) {
        assert!(page.contains(&path[0]), "the page lacks {}", path[0]);
    }
    let file = ws.file("orchestrator.1");
    std::fs::write(&file, &page).unwrap();
    // Rendered as a reader would see it, where man and groff are installed.
    if let Ok(out) = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
    {
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(shown.contains("Keeps AI coding agents"), "{shown}");
        assert!(shown.contains("checkpoint"), "{shown}");
    }
    if let Ok(out) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&file)
        .output()
    {
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
    }
}

#[test]
fn man_out_dir_writes_a_page_per_command() {
    let ws = Ws::empty();
    let out = ws.ok(&["man", "--out-dir", "man1"]);
    let mut expected: Vec<String> = command_paths()
        .iter()
        .map(|p| format!("orchestrator-{}.1", p.join("-")))
        .collect();
    expected.push("orchestrator.1".into());
    expected.sort();
    assert_eq!(ws.files_in("man1"), expected);
    assert!(out.contains("orchestrator-task-add.1"), "{out}");
    let page = ws.read("man1/orchestrator-task-add.1");
    assert!(page.contains(".TH orchestrator-task-add 1 "), "{page}");
    assert!(page.contains("Units of work in the task"), "{page}");
    let quiet = ws.ok(&["man", "--out-dir", "man1", "-q"]);
    assert_eq!(quiet.lines().count(), expected.len(), "{quiet}");
}

// ---- --quiet ----

fn warned_seed() -> Ws {
    // Ws::new's shutdown (85%) is above the compaction point stated for claude: `status` warns.
    let ws = Ws::seed();
    ws.ok(&["config", "set", "agents.claude.compact_at", "0.8"]);
    ws.ok(&["start", "--agent", "claude"]);
    ws
}

#[test]
fn quiet_prints_only_the_machine_lines() {
    let ws = Ws::empty();
    assert_eq!(ws.ok(&["-q", "init"]), "");
    assert_eq!(
        ws.ok(&[
            "task", "add", "a", "--title", "a task", "--total", "4", "-q"
        ]),
        ""
    );
    assert_eq!(ws.ok(&["task", "add", "b", "--title", "Bee", "-q"]), "");
    let next = ws.ok(&["next", "--quiet"]);
    assert_eq!(next, "next=a priority=1 progress=0/4 status=pending\n");
    let list = ws.ok(&["task", "list", "-q"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.starts_with("a "), "{list}");

    let start = ws.ok(&["start", "-q"]);
    assert_eq!(start.lines().count(), 1, "{start}");
    assert!(start.starts_with("session="), "{start}");
    let checkpoint = ws.expect(10, &["checkpoint", "x", "--tokens", "160000", "-q"]);
    assert_eq!(
        checkpoint,
        "level=warn used=160000 budget=200000 pct=80 warn=75 shutdown=85 progress=0/4 source=explicit\n"
    );
    assert_eq!(ws.expect(10, &["status", "-q"]), checkpoint);
    // Without --quiet the same commands say more.
    assert!(ws.expect(10, &["status"]).lines().count() > 3);

    let wrap = ws.ok(&["wrap", "-q", "--no-commit"]);
    assert_eq!(wrap.lines().count(), 1, "{wrap}");
    assert!(wrap.starts_with("session="), "{wrap}");
    assert_eq!(ws.ok(&["status", "-q"]), "session=none\n");
    assert_eq!(ws.ok(&["task", "done", "b", "-q"]), "");
    // --json is one JSON object whatever --quiet says.
    let json = ws.json(0, &["task", "list", "-q"]);
    assert_eq!(json["tasks"].as_array().unwrap().len(), 2);
}

#[test]
fn quiet_run_demo_and_hook_install() {
    let ws = Ws::seed();
    let out = ws.run(&[
        "run",
        "-q",
        "--max-sessions",
        "1",
        "--poll",
        "50ms",
        "--",
        "true",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("run=run_"), "{stdout}");
    assert!(stdout.contains(" stop=max_sessions "), "{stdout}");

    assert_eq!(ws.ok(&["hook", "install", "claude", "-q"]), "");
    assert!(ws.file(".claude/settings.json").is_file());

    let target = ws.file("demo");
    let demo = ws.ok(&["demo", "-q", "--dir", target.to_str().unwrap()]);
    let shown = std::path::PathBuf::from(demo.trim_end());
    assert_eq!(demo.lines().count(), 1, "{demo}");
    assert_eq!(shown, target.canonicalize().unwrap());
}

#[test]
fn quiet_lowers_the_log_level_unless_rust_log_is_set() {
    let ws = warned_seed();
    let run = |args: &[&str], rust_log: Option<&str>| -> Output {
        let mut cmd = ws.command(args);
        cmd.env_remove("RUST_LOG");
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        cmd.output().unwrap()
    };
    let loud = run(&["status"], None);
    assert!(
        String::from_utf8_lossy(&loud.stderr).contains("WARN"),
        "no warning to silence: {}",
        String::from_utf8_lossy(&loud.stderr)
    );
    let quiet = run(&["status", "-q"], None);
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    assert_eq!(String::from_utf8_lossy(&quiet.stdout).lines().count(), 1);
    let asked = run(&["status", "-q"], Some("warn"));
    assert!(String::from_utf8_lossy(&asked.stderr).contains("WARN"));
}

// ---- colours ----

/// Runs `cmd` with its stdout on a pseudo-terminal (stderr piped); returns what the terminal
/// received and the exit code.
fn on_terminal(mut cmd: Command) -> (String, Option<i32>) {
    // SAFETY: plain libc calls on a descriptor this function owns; each result is checked.
    let master = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        OwnedFd::from_raw_fd(fd)
    };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is as long as we say.
    let rc = unsafe {
        libc::ptsname_r(
            std::os::fd::AsRawFd::as_raw_fd(&master),
            name.as_mut_ptr(),
            name.len(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: ptsname_r wrote a NUL-terminated path.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .unwrap()
        .to_string();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(terminal))
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Our copy of the terminal's end went into `cmd`, which is dropped here: once the child
    // exits, reading the master ends (EIO).
    drop(cmd);
    let mut master = std::fs::File::from(master);
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err) if err.raw_os_error() == Some(libc::EIO) => break,
            Err(err) => panic!("reading the terminal: {err}"),
        }
    }
    let status = child.wait().unwrap();
    (
        String::from_utf8(received).unwrap().replace("\r\n", "\n"),
        status.code(),
    )
}

fn terminal_command(ws: &Ws, args: &[&str]) -> Command {
    let mut cmd = ws.command(args);
    cmd.env("TERM", "xterm-256color");
    cmd
}

fn at_warn() -> Ws {
    let ws = Ws::seed();
    ws.ok(&[
        "task",
        "add",
        "later",
        "--title",
        "later task",
        "--after",
        "integrate_sessions_101_140",
    ]);
    // A compaction point above the shutdown threshold gives `status` a warning for stderr.
    ws.ok(&["config", "set", "agents.claude.compact_at", "0.8"]);
    ws.ok(&["start", "--agent", "claude"]);
    ws.expect(10, &["checkpoint", "x", "--tokens", "160000"]);
    ws
}

#[test]
fn a_terminal_gets_the_level_in_colour_and_bold_headings() {
    let ws = at_warn();
    let (status, code) = on_terminal(terminal_command(&ws, &["status"]));
    assert_eq!(code, Some(10));
    assert!(
        status.starts_with("level=\x1b[33mwarn\x1b[0m used=160000"),
        "{status:?}"
    );
    assert!(status.contains("\x1b[1msession:\x1b[0m"), "{status:?}");
    let (list, _) = on_terminal(terminal_command(&ws, &["task", "list"]));
    assert!(list.starts_with("\x1b[1mID "), "{list:?}");
    let (next, _) = on_terminal(terminal_command(&ws, &["next"]));
    assert!(next.contains("\x1b[1mNot picked:\x1b[0m"), "{next:?}");
    // A shutdown is red and bold.
    let (shutdown, code) = on_terminal(terminal_command(
        &ws,
        &["checkpoint", "y", "--tokens", "190000"],
    ));
    assert_eq!(code, Some(11));
    assert!(
        shutdown.starts_with("level=\x1b[1m\x1b[31mshutdown\x1b[0m used=190000"),
        "{shutdown:?}"
    );
}

#[test]
fn piped_output_has_no_escape_byte() {
    let ws = at_warn();
    for args in [
        &["status"][..],
        &["task", "list"],
        &["next"],
        &["task", "show", "later"],
    ] {
        let out = terminal_command(&ws, args).output().unwrap();
        assert!(!out.stdout.contains(&ESC), "{args:?}: {:?}", out.stdout);
        assert!(!out.stderr.contains(&ESC), "{args:?}: {:?}", out.stderr);
    }
}

#[test]
fn no_color_disables_colours_on_a_terminal() {
    let ws = at_warn();
    let mut cmd = terminal_command(&ws, &["status"]);
    cmd.env("NO_COLOR", "1");
    let (status, _) = on_terminal(cmd);
    assert!(!status.contains('\x1b'), "{status:?}");
    assert!(status.starts_with("level=warn used="), "{status:?}");
    // It wins over CLICOLOR_FORCE.
    let mut cmd = terminal_command(&ws, &["status"]);
    cmd.env("NO_COLOR", "1").env("CLICOLOR_FORCE", "1");
    assert!(!on_terminal(cmd).0.contains('\x1b'));
    // An empty NO_COLOR is as if unset (https://no-color.org).
    let mut cmd = terminal_command(&ws, &["status"]);
    cmd.env("NO_COLOR", "");
    assert!(on_terminal(cmd).0.contains('\x1b'));
    // So is a terminal that says it has no colours.
    let mut cmd = terminal_command(&ws, &["status"]);
    cmd.env("TERM", "dumb");
    assert!(!on_terminal(cmd).0.contains('\x1b'));
}

#[test]
fn clicolor_force_enables_colours_when_piped() {
    let ws = at_warn();
    let out = ws
        .command(&["status"])
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("level=\x1b[33mwarn\x1b[0m"),
        "{stdout:?}"
    );
    // The logs on stderr follow the same rule.
    assert!(
        out.stderr.contains(&ESC),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CLICOLOR_FORCE=0 forces nothing (https://bixense.com/clicolors/).
    let out = ws
        .command(&["status"])
        .env("CLICOLOR_FORCE", "0")
        .output()
        .unwrap();
    assert!(!out.stdout.contains(&ESC));
    assert!(!out.stderr.contains(&ESC));
}

#[test]
fn json_never_has_colour() {
    let ws = at_warn();
    let mut cmd = terminal_command(&ws, &["status", "--json"]);
    cmd.env("CLICOLOR_FORCE", "1");
    let (json, code) = on_terminal(cmd);
    assert_eq!(code, Some(10));
    assert!(!json.contains('\x1b'), "{json:?}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["level"], "warn");
}

#[test]
fn only_our_own_escapes_reach_the_terminal() {
    let ws = Ws::new();
    ws.ok(&["task", "add", "red", "--title", "\x1b[31mred\x1b[0m title"]);
    let (list, _) = on_terminal(terminal_command(&ws, &["task", "list"]));
    assert!(list.contains("\x1b[1mID"), "{list:?}");
    assert!(!list.contains("\x1b[31m"), "{list:?}");
    assert!(list.contains("[31mred[0m title"), "{list:?}");
}

#[test]
fn quiet_task_rm_and_config_set_print_nothing_and_config_list_prints_all() {
    let ws = Ws::seed();
    ws.ok(&["task", "add", "b", "--title", "b task", "--total", "2"]);
    assert_eq!(ws.ok(&["task", "rm", "b", "-q"]), "");
    assert_eq!(ws.ok(&["config", "set", "budget.warn", "0.7", "-q"]), "");
    assert_eq!(ws.ok(&["config", "get", "budget.warn", "-q"]), "0.7\n");
    let all = ws.ok(&["config", "list"]);
    assert!(all.lines().count() > 1, "{all}");
    assert_eq!(ws.ok(&["config", "list", "-q"]), all);
}

#[test]
fn a_reader_that_goes_away_is_not_a_crash() {
    // `orchestrator next | head -1`: more text than a pipe holds, and the reader leaves after
    // the first bytes. The command has done its work; it ends with its own code, no panic.
    use std::io::Read;
    let ws = Ws::new();
    let mut stack = ws.stack();
    stack["tasks"] = (0..3000)
        .map(|i| {
            serde_json::json!({
                "id": format!("task_{i:04}"),
                "title": format!("Integrate sessions {} to {}", i * 40 + 1, i * 40 + 40),
                "depends_on": if i == 0 { vec![] } else { vec![format!("task_{:04}", i - 1)] },
                "progress": {"done": 0, "total": 40},
            })
        })
        .collect();
    ws.write(
        "task_stack.json",
        &serde_json::to_string_pretty(&stack).unwrap(),
    );
    for args in [&["next"][..], &["next", "--json"], &["task", "list"]] {
        let mut child = ws
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 64];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The read end is dropped here, with most of the text unread.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

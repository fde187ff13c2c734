//! The command line's conventions: help text everywhere, shell completions, the man page.

use crate::common::*;
use clap::CommandFactory;
use orchestrator::cli::Cli;
use std::process::Command;

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
}

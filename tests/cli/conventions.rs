//! The command line's conventions: help text everywhere.

use crate::common::*;
use clap::CommandFactory;
use orchestrator::cli::Cli;

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

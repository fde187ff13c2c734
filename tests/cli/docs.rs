//! docs/ kept true: every setting the code reads is in docs/settings.md with its default, every
//! command and option in docs/commands.md, every exit code of docs/exit-codes.md is produced
//! here by the real binary, and the formats of docs/formats.md are what the binary writes.

use orchestrator::core::meters::{
    AgentSettings, MeterKind, MeterSettings, MeterSource, Named, OnSessionEnd, OnSessionStart,
};
use orchestrator::core::pricing::PriceSetting;
use orchestrator::core::run::RunSettings;
use orchestrator::core::stack::{
    BudgetSettings, DatabaseSettings, GitSettings, Integrate, MetricSpec, ParallelSettings,
    PostgresSettings, Settings, StoreSettings, TaskStack,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text under the heading line `heading`, up to the next heading of any level (a `#` line
/// inside a fenced block is not a heading).
fn section(text: &str, heading: &str) -> String {
    let mut lines = text.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no heading {heading:?}");
    let mut fenced = false;
    let mut body = String::new();
    for line in lines {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            break;
        }
        body.push_str(line);
        body.push('\n');
    }
    body
}

// ---- settings ------------------------------------------------------------------------------

/// The placeholder name of a meter or agent, shown as `<name>` in docs/settings.md.
const NAME: &str = "x_name";

/// Every setting, each optional one present. The struct literals are exhaustive on purpose: a
/// field added to any of these structs fails to compile here. Set it, and document it in
/// docs/settings.md with its default.
fn every_setting() -> Settings {
    Settings {
        budget: BudgetSettings {
            tokens: 1000,
            warn: 0.5,
            shutdown: 0.6,
            compact_at: Some(0.7),
            extra: Map::new(),
        },
        database: Some(DatabaseSettings {
            path: "d.db".into(),
            backup_dir: "b".into(),
            keep_backups: 2,
            metrics: vec![MetricSpec {
                name: "m".into(),
                query: "SELECT 1".into(),
                goal: Some(10.0),
                extra: Map::new(),
            }],
            extra: Map::new(),
        }),
        git: GitSettings {
            commit_on_wrap: false,
            commit_on_checkpoint: true,
            max_file_mb: 1,
            remote: Some("upstream".into()),
            push_attempts: Some(3),
            extra: Map::new(),
        },
        handoff_dir: "h".into(),
        lease_minutes: 5,
        meters: Named(vec![(
            NAME.into(),
            MeterSettings {
                limit: 10,
                warn: 0.5,
                shutdown: 0.6,
                kind: MeterKind::Gauge,
                source: MeterSource::Transcript,
                extra: Map::new(),
            },
        )]),
        agents: Named(vec![(
            NAME.into(),
            AgentSettings {
                meters: Some(vec![NAME.into()]),
                compact_at: Some(0.8),
                on_session_start: OnSessionStart::Start,
                on_session_end: OnSessionEnd::Wrap,
                account: Some("team".into()),
                extra: Map::new(),
            },
        )]),
        run: RunSettings {
            rate_limit_exit_codes: vec![75],
            rate_limit_patterns: vec!["quota".into()],
            backoff_seconds: 1,
            max_backoff_seconds: 2,
            session_timeout: Some("2h".into()),
            idle_timeout: Some("20m".into()),
            on_event: vec!["notify-send".into()],
            extra: Map::new(),
        },
        store: Some(StoreSettings {
            postgres: Some(PostgresSettings {
                url_env: "FLEET_URL".into(),
                timeout_seconds: Some(3),
                extra: Map::new(),
            }),
            extra: Map::new(),
        }),
        parallel: ParallelSettings {
            worktrees: true,
            integrate: Integrate::Merge,
            extra: Map::new(),
        },
        pricing: Named(vec![(
            NAME.into(),
            PriceSetting {
                input: 1.0,
                output: 2.0,
                cache_write_5m: Some(1.25),
                cache_write_1h: Some(2.0),
                cache_read: Some(0.1),
                extra: Map::new(),
            },
        )]),
        extra: Map::new(),
    }
}

/// The smallest stack with every section present: only the required keys are given.
fn minimal_sections() -> Value {
    json!({"version": 1, "settings": {
        "database": {"path": "d.db", "metrics": [{"name": "m", "query": "SELECT 1"}]},
        "meters": {NAME: {"limit": 10}},
        "agents": {NAME: {}},
        "store": {"postgres": {"url_env": "FLEET_URL"}},
        "pricing": {NAME: {"input": 1, "output": 2}}
    }})
}

const REQUIRED: [&str; 7] = [
    "settings.database.path",
    "settings.database.metrics[].name",
    "settings.database.metrics[].query",
    "settings.meters.<name>.limit",
    "settings.store.postgres.url_env",
    "settings.pricing.<name>.input",
    "settings.pricing.<name>.output",
];

/// Dotted keys of the leaves under `value`: `a.b`, `a.list[].c`, `meters.<name>.limit`.
fn leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                let key = if key == NAME { "<name>" } else { key };
                leaves(&format!("{prefix}.{key}"), v, out);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            leaves(&format!("{prefix}[]"), &items[0], out)
        }
        _ => {
            out.insert(prefix.to_string(), value.clone());
        }
    }
}

fn settings_leaves(settings: &Settings) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    leaves(
        "settings",
        &serde_json::to_value(settings).unwrap(),
        &mut out,
    );
    out
}

/// `settings.x` -> its default cell, from every table row of docs/settings.md.
fn documented_settings() -> BTreeMap<String, String> {
    doc("settings.md")
        .lines()
        .filter(|l| l.starts_with("| `settings."))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn without(mut value: Value, dotted: &str) -> Value {
    let path: Vec<&str> = dotted.split('.').collect();
    let mut at = &mut value;
    for part in &path[..path.len() - 1] {
        let part = if *part == "<name>" { NAME } else { part };
        at = match part.strip_suffix("[]") {
            Some(list) => &mut at[list][0],
            None => &mut at[part],
        };
    }
    at.as_object_mut().unwrap().remove(path[path.len() - 1]);
    value
}

#[test]
fn every_setting_the_code_reads_is_documented_with_its_default() {
    let every = settings_leaves(&every_setting());
    let documented = documented_settings();
    let undocumented: Vec<&String> = every
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    assert!(
        undocumented.is_empty(),
        "settings read by the code but not in docs/settings.md (add a table row `| `KEY` | default | what |`): {undocumented:?}"
    );
    let unknown: Vec<&String> = documented
        .keys()
        .filter(|k| !every.contains_key(*k))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/settings.md documents settings the code does not read: {unknown:?}"
    );

    let minimal = minimal_sections();
    let parsed = TaskStack::parse(&minimal.to_string()).unwrap();
    let mut defaults = settings_leaves(&parsed.settings);
    // `run` is left out of the file while it has its defaults.
    let mut run = BTreeMap::new();
    leaves(
        "settings.run",
        &serde_json::to_value(RunSettings::default()).unwrap(),
        &mut run,
    );
    defaults.extend(run);
    // So is `parallel`.
    let mut parallel = BTreeMap::new();
    leaves(
        "settings.parallel",
        &serde_json::to_value(ParallelSettings::default()).unwrap(),
        &mut parallel,
    );
    defaults.extend(parallel);
    // An agent's hook behaviours are left out of the file while they have their defaults.
    defaults.insert(
        "settings.agents.<name>.on_session_start".into(),
        serde_json::to_value(OnSessionStart::default()).unwrap(),
    );
    defaults.insert(
        "settings.agents.<name>.on_session_end".into(),
        serde_json::to_value(OnSessionEnd::default()).unwrap(),
    );
    for key in REQUIRED {
        assert_eq!(documented[key], "required", "docs/settings.md: {key}");
        assert!(
            TaskStack::parse(&without(minimal.clone(), key).to_string()).is_err(),
            "{key} is documented as required, but a stack without it is accepted"
        );
    }
    for (key, cell) in &documented {
        if REQUIRED.contains(&key.as_str()) {
            continue;
        }
        match defaults.get(key) {
            Some(default) => {
                let written: Value =
                    serde_json::from_str(cell.trim_matches('`')).unwrap_or_else(|e| {
                        panic!(
                            "docs/settings.md: {key}: default {cell:?} is not a JSON value ({e})"
                        )
                    });
                assert!(
                    same_json(&written, default),
                    "docs/settings.md: {key} defaults to {default}, not {cell}"
                );
            }
            None => assert!(
                cell.starts_with("unset"),
                "docs/settings.md: {key} has no default in the code; its cell should say `unset (...)`, not {cell:?}"
            ),
        }
    }
}

#[test]
fn the_settings_example_uses_only_real_settings() {
    let text = doc("settings.md");
    let example = text
        .split_once("```json\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    let stack = TaskStack::parse(&format!("{{\"version\": 1, {example}}}"))
        .unwrap_or_else(|e| panic!("docs/settings.md example: {e}"));
    let s = &stack.settings;
    let db = s.database.as_ref().unwrap();
    let mut unknown: Vec<&Map<String, Value>> = vec![
        &s.extra,
        &s.budget.extra,
        &s.git.extra,
        &s.run.extra,
        &db.extra,
    ];
    unknown.extend(db.metrics.iter().map(|m| &m.extra));
    unknown.extend(s.meters.iter().map(|(_, m)| &m.extra));
    unknown.extend(s.agents.iter().map(|(_, a)| &a.extra));
    for extra in unknown {
        assert!(
            extra.is_empty(),
            "docs/settings.md example: unknown keys {extra:?}"
        );
    }
}

// ---- commands ------------------------------------------------------------------------------

fn help(path: &[&str]) -> String {
    let ws = Ws::empty();
    let mut args = path.to_vec();
    args.push("--help");
    ws.ok(&args)
}

/// The names under `Commands:` in a help text, without `help`.
fn subcommands(help: &str) -> Vec<String> {
    let Some((_, list)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    list.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|name| name != "help")
        .collect()
}

/// The long options of a help text's `Options:`.
fn long_options(help: &str) -> Vec<String> {
    let options = help.split_once("Options:\n").map_or("", |(_, o)| o);
    options
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('-')
                .filter(|_| !l.starts_with("--"))
                .map_or(l, |rest| rest.split_once(", ").map_or(l, |(_, long)| long));
            l.starts_with("--")
                .then(|| l.split([' ', '=']).next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_command_option_and_variable_is_in_the_commands_reference() {
    let commands_md = doc("commands.md");
    let top = help(&[]);
    let global = long_options(&top);
    let global_section = section(&commands_md, "## Global options");
    for option in &global {
        assert!(
            global_section.contains(&format!("`{option}")),
            "docs/commands.md, Global options: {option} is missing"
        );
    }
    let mut pending: Vec<Vec<String>> = subcommands(&top).into_iter().map(|c| vec![c]).collect();
    let mut leaves_seen = 0;
    while let Some(path) = pending.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for var in text.split("[env: ").skip(1) {
            let var = var.split(['=', ']']).next().unwrap();
            assert!(
                commands_md.contains(var),
                "docs/commands.md: variable {var} is missing"
            );
        }
        let subs = subcommands(&text);
        if !subs.is_empty() {
            pending.extend(subs.into_iter().map(|s| {
                let mut p = path.clone();
                p.push(s);
                p
            }));
            continue;
        }
        leaves_seen += 1;
        let name = path.join(" ");
        let heading = commands_md
            .lines()
            .find(|l| {
                l.strip_prefix("### `")
                    .and_then(|rest| rest.strip_prefix(name.as_str()))
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('`'))
            })
            .unwrap_or_else(|| {
                panic!("docs/commands.md has no section for `orchestrator {name}` (add a heading ### `{name}`)")
            });
        let body = section(&commands_md, heading);
        for option in long_options(&text).iter().filter(|o| !global.contains(o)) {
            assert!(
                body.contains(&format!("`{option}")),
                "docs/commands.md, `{name}`: option {option} is missing"
            );
        }
    }
    assert!(leaves_seen >= 10, "the help texts were not parsed");
}

// ---- exit codes ----------------------------------------------------------------------------

/// The codes in the table under `heading` of docs/exit-codes.md.
fn documented_codes(heading: &str) -> BTreeSet<i32> {
    section(&doc("exit-codes.md"), heading)
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

const TASK: &str = "integrate_sessions_101_140";

/// Runs the scenario that makes a command exit with `code`; returns the exit code observed.
fn command_scenario(code: i32) -> Option<Option<i32>> {
    let ws = Ws::seed();
    let exit = |args: &[&str]| ws.run(args).status.code();
    Some(match code {
        0 => exit(&["next"]),
        10 => {
            ws.ok(&["start"]);
            exit(&["checkpoint", "75% or more", "--tokens", "160000"])
        }
        11 => {
            ws.ok(&["start"]);
            exit(&["checkpoint", "85% or more", "--tokens", "180000"])
        }
        12 => {
            ws.ok(&["start"]);
            exit(&["checkpoint", "no figure given, no transcript"])
        }
        1 => {
            ws.write("task_stack.json", "{");
            exit(&["next"])
        }
        2 => exit(&["next", "--no-such-option"]),
        3 => {
            ws.ok(&["task", "done", TASK]);
            exit(&["start"])
        }
        4 => {
            ws.ok(&["start"]);
            exit(&["start"])
        }
        5 => {
            let session = ws.json(0, &["start", "--agent", "a"])["session"]
                .as_str()
                .unwrap()
                .to_string();
            ws.set_now(&at_minutes(31));
            ws.ok(&["start", "--agent", "b"]);
            exit(&["checkpoint", "late", "--session", &session])
        }
        6 => ws
            .command(&["next"])
            .env("ORCHESTRATOR_STORE", "postgresql://fleet@127.0.0.1:1/queue")
            .output()
            .unwrap()
            .status
            .code(),
        _ => return None,
    })
}

/// An agent that reads its brief and does nothing: no progress, exit 0.
const IDLE_AGENT: [&str; 3] = ["sh", "-c", "cat >/dev/null"];

fn run_args<'a>(options: &[&'a str], agent: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--poll", "50ms"];
    args.extend(options);
    args.push("--");
    args.extend(agent);
    args
}

/// `orchestrator run` stopped by `signal` while its agent works.
fn run_stopped_by(ws: &Ws, signal: &str) -> Option<i32> {
    let child = ws
        .command(&run_args(
            &["--grace", "5s"],
            &["sh", "-c", "cat >/dev/null; sleep 60"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let started = || {
        ws.files_in(".orchestrator/runs").iter().any(|log| {
            ws.read(&format!(".orchestrator/runs/{log}"))
                .contains("\"agent_started\"")
        })
    };
    while !started() {
        assert!(Instant::now() < deadline, "the agent never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait_with_output().unwrap().status.code()
}

/// Runs the scenario that makes `orchestrator run` exit with `code`; returns the exit observed.
fn run_scenario(code: i32) -> Option<Option<i32>> {
    let ws = Ws::seed();
    let exit = |args: Vec<&str>| ws.run(&args).status.code();
    Some(match code {
        0 => {
            ws.ok(&["task", "done", TASK]);
            exit(run_args(&[], &IDLE_AGENT))
        }
        3 => {
            ws.ok(&["task", "set", TASK, "--status", "blocked"]);
            exit(run_args(&[], &IDLE_AGENT))
        }
        20 => exit(run_args(&["--max-sessions", "1"], &IDLE_AGENT)),
        21 => exit(run_args(&["--max-duration", "1ms"], &IDLE_AGENT)),
        22 => {
            ws.write(".orchestrator/STOP", "");
            exit(run_args(&[], &IDLE_AGENT))
        }
        23 => exit(run_args(&["--breaker", "1"], &IDLE_AGENT)),
        24 => exit(run_args(
            &["--breaker", "1"],
            &["sh", "-c", "cat >/dev/null; exit 1"],
        )),
        25 => {
            // An agent whose transcript (found as under Claude Code) costs $0.23.
            ws.write("line.jsonl", &format!("{}\n", crate::cost::OPUS_LINE));
            let script = format!(
                "cat >/dev/null; export CLAUDE_CODE_SESSION_ID=$ORCHESTRATOR_SESSION; \
                 mkdir -p $HOME/.claude/projects/-w; \
                 cp line.jsonl $HOME/.claude/projects/-w/$ORCHESTRATOR_SESSION.jsonl; \
                 {BIN} checkpoint spent --exit-zero"
            );
            exit(run_args(&["--max-cost", "0.01"], &["sh", "-c", &script]))
        }
        130 => run_stopped_by(&ws, "-INT"),
        143 => run_stopped_by(&ws, "-TERM"),
        1 => exit(run_args(&[], &["./no-such-agent"])),
        4 => {
            ws.ok(&["start"]);
            exit(run_args(&[], &IDLE_AGENT))
        }
        _ => return None,
    })
}

fn check_codes(heading: &str, scenario: fn(i32) -> Option<Option<i32>>) {
    let codes = documented_codes(heading);
    assert!(
        codes.len() >= 5,
        "docs/exit-codes.md {heading}: table not found"
    );
    for code in codes {
        let observed = scenario(code).unwrap_or_else(|| {
            panic!("docs/exit-codes.md ({heading}) lists exit {code}, but tests/cli/docs.rs has no scenario producing it: add one")
        });
        assert_eq!(
            observed,
            Some(code),
            "docs/exit-codes.md ({heading}): the scenario for exit {code} exited {observed:?}"
        );
    }
}

#[test]
fn every_exit_code_of_a_command_in_the_docs_is_produced_by_the_binary() {
    check_codes("## Commands", command_scenario);
}

#[test]
fn every_exit_code_of_run_in_the_docs_is_produced_by_the_binary() {
    check_codes("## orchestrator run", run_scenario);
}

// ---- formats -------------------------------------------------------------------------------

fn assert_keys_in(what: &str, keys: impl IntoIterator<Item = String>, text: &str) {
    for key in keys {
        assert!(
            text.contains(&format!("`{key}`")),
            "docs/formats.md, {what}: `{key}` is not documented"
        );
    }
}

fn object_keys(value: &Value) -> Vec<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_formats_reference_matches_what_the_binary_writes() {
    let formats = doc("formats.md");

    // The task_stack.json example is a valid stack, and every task key is described.
    let example = formats
        .split_once("```json\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    let ws = Ws::empty();
    ws.write("task_stack.json", example);
    assert_eq!(ws.json(0, &["next"])["task"], TASK);

    let ws = Ws::seed();
    ws.json(0, &["start", "--agent", "claude"]);
    let line = ws.expect(
        10,
        &[
            "checkpoint",
            "unit done",
            "--progress",
            "3",
            "--tokens",
            "152340",
        ],
    );
    let status = ws.expect(10, &["status"]);
    let checkpoint_json = ws.json(10, &["checkpoint", "again", "--tokens", "152340"]);
    let status_json = ws.json(10, &["status"]);
    let session = status_json["session"].as_str().unwrap().to_string();
    let log = ws.read(&format!(
        ".orchestrator/sessions/active/{session}.checkpoints.jsonl"
    ));
    ws.ok(&["wrap", "--summary", "done for now", "--next", "go on"]);

    let task = ws.task(TASK);
    assert_keys_in(
        "task_stack.json",
        object_keys(&task),
        &section(&formats, "## task_stack.json"),
    );

    let line_section = section(&formats, "## The checkpoint and status line");
    for first in [line.lines().next().unwrap(), status.lines().next().unwrap()] {
        let keys = first
            .split(' ')
            .map(|pair| pair.split('=').next().unwrap().to_string());
        assert_keys_in("the checkpoint and status line", keys, &line_section);
    }
    assert_keys_in(
        "checkpoint --json",
        object_keys(&checkpoint_json),
        &line_section,
    );
    assert_keys_in("status --json", object_keys(&status_json), &line_section);

    let log_line: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_keys_in(
        "the checkpoint log",
        object_keys(&log_line),
        &section(&formats, "## The checkpoint log"),
    );

    let archived: Value =
        serde_json::from_str(&ws.read(&format!(".orchestrator/sessions/archive/{session}.json")))
            .unwrap();
    let records = section(&formats, "## Session records");
    assert_keys_in("session records", object_keys(&archived), &records);
    assert_keys_in("the wrap journal", object_keys(&archived["wrap"]), &records);
    assert_keys_in(
        "the wrap steps",
        object_keys(&archived["wrap"]["steps"]),
        &records,
    );

    let handoff = ws.read(&format!("session_handoffs/handoff_{session}.md"));
    let handoff_doc = section(&formats, "## The handoff");
    for heading in handoff
        .lines()
        .filter(|l| l.starts_with("# ") || l.starts_with("## "))
    {
        let heading = heading.replace(TASK, "<task>");
        // The H1 carries the session's figures: its shape is documented, not its values.
        let heading = if heading.starts_with("# ") {
            h1_shape(&heading)
        } else {
            heading
        };
        assert!(
            handoff_doc.lines().any(|l| l == heading),
            "docs/formats.md, the handoff: heading {heading:?} is not listed"
        );
    }
}

/// `# <task>: 0/40 → 3/40 (wrapped)` as docs/formats.md writes it, checked part by part.
fn h1_shape(heading: &str) -> String {
    let rest = heading
        .strip_prefix("# <task>: ")
        .unwrap_or_else(|| panic!("the handoff's H1 does not name the task: {heading:?}"));
    let (step, how) = rest
        .split_once(" (")
        .unwrap_or_else(|| panic!("the H1 does not say how the session ended: {heading:?}"));
    let (from, to) = step
        .split_once(" \u{2192} ")
        .unwrap_or_else(|| panic!("the H1 has no progress step: {heading:?}"));
    for progress in [from, to] {
        let (done, total) = progress.split_once('/').unwrap();
        assert!(
            done.parse::<u64>().is_ok() && total.parse::<u64>().is_ok(),
            "{heading:?}"
        );
    }
    assert!(how.ends_with(')') && how.len() > 1, "{heading:?}");
    "# <task>: <from> \u{2192} <to> (<how it ended>)".to_string()
}

//! `config get|set|list`: the settings as one JSON value addressed by dotted keys.
//!
//! Nothing here lists the settings: what is a setting is asked of `Settings` itself, through
//! serde, so a field added to it (or to any struct under it) is reachable with no change here.
//! A key is a setting when `Settings` gives its value a type. Every struct under `Settings`
//! keeps unknown keys in an `extra` map, which takes any value as it is: a key whose value,
//! written as `null` and as an object, comes back unchanged after a parse and a rewrite sits
//! in such a map and is no setting. A typed field refuses one of the two or rewrites it (an
//! `Option` drops `null`, a struct adds its defaults).

use serde_json::{Map, Value, json};

use super::stack::{Settings, TaskStack};

/// The object key the probes and the defaults view write; it never reaches the file.
const MARKER: &str = "\u{1}orchestrator-config-probe";

/// Why a key was refused; the message names the key.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// Not a setting orchestrator reads.
    Unknown(String),
    /// A setting, but this value is refused (type or validation).
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Unknown(message) | ConfigError::Invalid(message) => f.write_str(message),
        }
    }
}

/// A dotted key (`budget.warn`, `meters.api.limit`; a leading `settings.` is allowed) as the
/// path of object keys under `settings`.
pub fn parse_key(key: &str) -> Result<Vec<String>, ConfigError> {
    let trimmed = key.strip_prefix("settings.").unwrap_or(key);
    let path: Vec<String> = trimmed.split('.').map(str::to_string).collect();
    if trimmed.is_empty() || path.iter().any(String::is_empty) {
        return Err(ConfigError::Unknown(format!(
            "`{}` is not a setting key: use dotted names such as budget.warn",
            key.escape_debug()
        )));
    }
    Ok(path)
}

/// The key as messages show it: `settings.budget.warn`.
pub fn full_key(path: &[String]) -> String {
    format!("settings.{}", path.join("."))
}

/// The value of a setting, defaults included; `null` for one that is not set (an optional
/// setting such as `budget.compact_at`, or a field of an absent `database`).
pub fn get(settings: &Settings, path: &[String]) -> Result<Value, ConfigError> {
    let current = settings_value(settings);
    require_known(&current, path)?;
    // A section left at its defaults may be left out of the rewrite (`run`): a marker key in
    // each enclosing section makes it differ from its defaults, so it is written out in full.
    let mut view = current;
    for depth in 1..=path.len() {
        let mut attempt = view.clone();
        let mut marked = path[..depth].to_vec();
        marked.push(MARKER.to_string());
        if put(&mut attempt, &marked, Value::Bool(true)).is_err() {
            continue;
        }
        if let Ok(parsed) = serde_json::from_value::<Settings>(attempt) {
            view = settings_value(&parsed);
        }
    }
    let mut value = value_at(&view, path).cloned().unwrap_or(Value::Null);
    strip_marker(&mut value);
    Ok(value)
}

/// The stack with one setting changed, validated as loading validates. `raw` is taken as JSON
/// when it parses as JSON and the setting takes it, else as a string: `handoff_dir 2025` is
/// the folder "2025", `budget.warn 0.8` the number.
pub fn set(stack: &TaskStack, path: &[String], raw: &str) -> Result<TaskStack, ConfigError> {
    let current = settings_value(&stack.settings);
    require_known(&current, path)?;
    let key = full_key(path);
    let mut candidates = Vec::new();
    if let Ok(value) = serde_json::from_str::<Value>(raw) {
        candidates.push(value);
    }
    if candidates.first().is_none_or(|v| !v.is_string()) {
        candidates.push(Value::String(raw.to_string()));
    }
    let mut first_error = None;
    for value in candidates {
        let mut changed = current.clone();
        put(&mut changed, path, value).map_err(ConfigError::Invalid)?;
        let refusal = match serde_json::from_value::<Settings>(changed) {
            Ok(settings) => {
                let mut updated = stack.clone();
                updated.settings = settings;
                match updated.validate() {
                    Ok(()) => return Ok(updated),
                    // Validation names the setting it refuses, often this very key.
                    Err(invalid) if invalid.0.starts_with(&key) => invalid.0,
                    Err(invalid) => format!("{key}: {invalid}"),
                }
            }
            Err(err) => format!("{key}: {err}"),
        };
        first_error.get_or_insert(refusal);
    }
    Err(ConfigError::Invalid(
        first_error.expect("there is always a candidate"),
    ))
}

/// Every value the settings hold, defaults included, as (dotted key, value) in file order.
/// Sections the file leaves out at their defaults (`run`, `database`, `meters`, `agents`,
/// `budget.compact_at`) are not listed; `get` answers for them.
pub fn list(settings: &Settings) -> Vec<(String, Value)> {
    let mut entries = Vec::new();
    flatten(&settings_value(settings), "", &mut entries);
    entries
}

fn flatten(value: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(inner, &key, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

fn settings_value(settings: &Settings) -> Value {
    serde_json::to_value(settings).expect("settings always serialize")
}

fn require_known(current: &Value, path: &[String]) -> Result<(), ConfigError> {
    let unknown = || {
        ConfigError::Unknown(format!(
            "unknown setting `{}`; `orchestrator config list` shows the settings",
            full_key(path).escape_debug()
        ))
    };
    let probes = [Value::Null, json!({ MARKER: true })];
    for probe in probes {
        let mut candidate = current.clone();
        // A key under a value that is not a section (`budget.warn.x`) is no setting.
        put(&mut candidate, path, probe.clone()).map_err(|_| unknown())?;
        match serde_json::from_value::<Settings>(candidate) {
            Err(_) => return Ok(()),
            Ok(parsed) => {
                if value_at(&settings_value(&parsed), path) != Some(&probe) {
                    return Ok(());
                }
            }
        }
    }
    Err(unknown())
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.get(key))
}

/// Sets `path` to `value`, making the sections on the way that are missing.
fn put(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let (last, sections) = path.split_last().expect("a key has at least one part");
    let mut node = root;
    for (depth, key) in sections.iter().enumerate() {
        let map = node
            .as_object_mut()
            .expect("only objects are descended into");
        let child = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            return Err(format!(
                "{} is {child}, not a section with keys",
                full_key(&path[..=depth])
            ));
        }
        node = child;
    }
    node.as_object_mut()
        .expect("only objects are descended into")
        .insert(last.clone(), value);
    Ok(())
}

fn strip_marker(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.shift_remove(MARKER);
            map.values_mut().for_each(strip_marker);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_marker),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(settings: &str) -> TaskStack {
        TaskStack::parse(&format!(r#"{{"version": 1, "settings": {settings}}}"#)).unwrap()
    }

    fn key(text: &str) -> Vec<String> {
        parse_key(text).unwrap()
    }

    #[test]
    fn every_typed_field_is_a_setting_and_every_extra_key_is_not() {
        let s = stack(
            r#"{"meters": {"api": {"limit": 10}}, "agents": {"claude": {"meters": ["api"]}}, "theme": "dark"}"#,
        );
        for known in [
            "budget",
            "budget.warn",
            "budget.compact_at",
            "database",
            "database.path",
            "database.backup_dir",
            "git.commit_on_wrap",
            "handoff_dir",
            "lease_minutes",
            "meters",
            "meters.api",
            "meters.api.limit",
            "meters.api.kind",
            "agents.claude",
            "agents.claude.meters",
            "agents.codex.meters",
            "run.backoff_seconds",
            "run.rate_limit_patterns",
            "settings.budget.tokens",
        ] {
            assert_eq!(get(&s.settings, &key(known)).map(|_| ()), Ok(()), "{known}");
        }
        for unknown in [
            "theme",
            "bogus",
            "budget.bogus",
            "meters.api.bogus",
            "agents.claude.bogus",
            "budget.warn.deeper",
            "run.bogus",
        ] {
            assert!(
                matches!(
                    get(&s.settings, &key(unknown)),
                    Err(ConfigError::Unknown(_))
                ),
                "{unknown}"
            );
        }
    }

    #[test]
    fn get_answers_with_defaults_even_for_sections_the_file_leaves_out() {
        let s = stack("{}");
        assert_eq!(get(&s.settings, &key("budget.warn")), Ok(json!(0.75)));
        assert_eq!(get(&s.settings, &key("run.backoff_seconds")), Ok(json!(60)));
        assert_eq!(
            get(&s.settings, &key("run")).unwrap()["max_backoff_seconds"],
            json!(3600)
        );
        assert_eq!(get(&s.settings, &key("budget.compact_at")), Ok(Value::Null));
        assert_eq!(
            get(&s.settings, &key("database.backup_dir")),
            Ok(Value::Null)
        );
        let s = stack(r#"{"database": {"path": "d.db"}}"#);
        assert_eq!(
            get(&s.settings, &key("database.backup_dir")),
            Ok(json!("backups"))
        );
    }

    #[test]
    fn set_takes_json_then_a_string_and_validates() {
        let s = stack("{}");
        let changed = set(&s, &key("budget.warn"), "0.8").unwrap();
        assert_eq!(changed.settings.budget.warn, 0.8);
        let changed = set(&s, &key("handoff_dir"), "2025").unwrap();
        assert_eq!(changed.settings.handoff_dir, "2025");
        let changed = set(&s, &key("run.backoff_seconds"), "5").unwrap();
        assert_eq!(changed.settings.run.backoff_seconds, 5);
        let changed = set(&s, &key("meters.api.limit"), "100").unwrap();
        assert_eq!(changed.settings.meters.get("api").unwrap().limit, 100);

        let err = set(&s, &key("budget.warn"), "0.9").unwrap_err();
        assert!(
            err.to_string()
                .contains("must be below settings.budget.shutdown"),
            "{err}"
        );
        let err = set(&s, &key("budget.tokens"), "many").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("settings.budget.tokens: invalid type"),
            "{err}"
        );
        let err = set(&s, &key("budget.bogus"), "1").unwrap_err();
        assert!(matches!(err, ConfigError::Unknown(_)), "{err}");
    }
}

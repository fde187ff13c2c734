//! Ids end up in file names, commit trailers and shell commands, so they are restricted to a
//! conservative alphabet that can never name another directory.

use chrono::{DateTime, Utc};

const MAX_ID_LEN: usize = 128;

/// Checks a task id; returns why it is refused.
pub fn check_task_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("a task id cannot be empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("task id is longer than {MAX_ID_LEN} characters"));
    }
    if id.starts_with('.') || id.starts_with('-') {
        return Err(format!(
            "task id `{}` cannot start with `.` or `-`",
            printable(id)
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "task id `{}` contains {}; use letters, digits, `_`, `-` and `.`",
            printable(id),
            describe_char(bad)
        ));
    }
    Ok(())
}

/// Checks a session id of the form `session_YYYYMMDD_HHMMSS` with an optional `_N` suffix.
pub fn check_session_id(id: &str) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "`{}` is not a session id (expected session_YYYYMMDD_HHMMSS)",
            printable(id)
        ))
    };
    let Some(rest) = id.strip_prefix("session_") else {
        return refuse();
    };
    let mut parts = rest.split('_');
    let date = parts.next().unwrap_or_default();
    let time = parts.next().unwrap_or_default();
    let suffix = parts.next();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let suffix_ok = suffix.is_none_or(|s| !s.is_empty() && s.len() <= 6 && digits(s, s.len()));
    if !digits(date, 8) || !digits(time, 6) || !suffix_ok || parts.next().is_some() {
        return refuse();
    }
    Ok(())
}

/// The id for a session started at `now`; `taken` says whether an id is already used.
pub fn new_session_id(now: DateTime<Utc>, taken: impl Fn(&str) -> bool) -> String {
    let base = format!("session_{}", now.format("%Y%m%d_%H%M%S"));
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|id| !taken(id))
        .expect("an unbounded range always yields a free id")
}

fn printable(id: &str) -> String {
    id.escape_debug().to_string()
}

fn describe_char(c: char) -> String {
    match c {
        '/' | '\\' => format!("a path separator `{c}`"),
        '\0' => "a NUL byte".into(),
        c if c.is_control() => format!("a control character {:?}", c),
        c => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn task_ids_that_could_escape_a_directory_are_refused() {
        for bad in [
            "",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\0b",
            "..",
            ".",
            "a\\b",
            "-rf",
            "a b",
        ] {
            assert!(check_task_id(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["integrate_sessions_101_140", "a", "v1.2-fix", "A_9"] {
            assert_eq!(check_task_id(good), Ok(()));
        }
        assert!(check_task_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn session_ids_must_have_the_documented_shape() {
        for good in ["session_20251106_001355", "session_20251106_001355_2"] {
            assert_eq!(check_session_id(good), Ok(()));
        }
        for bad in [
            "",
            "session_",
            "../session_20251106_001355",
            "session_20251106_001355/..",
            "session_2025110_001355",
            "session_20251106_001355_",
            "session_20251106_001355_2_3",
            "session_20251106_00135x",
        ] {
            assert!(check_session_id(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_clash_in_the_same_second_gets_a_numeric_suffix() {
        let now = Utc.with_ymd_and_hms(2025, 11, 6, 0, 13, 55).unwrap();
        assert_eq!(new_session_id(now, |_| false), "session_20251106_001355");
        let taken = ["session_20251106_001355", "session_20251106_001355_2"];
        assert_eq!(
            new_session_id(now, |id| taken.contains(&id)),
            "session_20251106_001355_3"
        );
    }
}

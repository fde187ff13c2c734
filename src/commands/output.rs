//! How a command's text reaches stdout: what `--quiet` keeps, and colours on a terminal.
//!
//! The colour decision is made once, for the [`Context`](super::Context), by [`wants_color`];
//! `core/` builds plain text and never sees an escape code. Styles are added here, after the
//! text's control bytes are stripped, so only our own escapes reach the terminal.

use anstyle::{AnsiColor, Style};
use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{ErrorKind, Write};

/// What a command prints beyond its plain text: the part `--quiet` keeps, and what is bold.
#[derive(Debug, Default)]
pub struct Shape<'a> {
    /// What `--quiet` prints.
    pub quiet: Quiet<'a>,
    /// Whole lines shown bold on a terminal (a table's header row, a section's title).
    pub headings: &'a [&'a str],
    /// Line beginnings shown bold on a terminal (the `session:` of `session:  ID`).
    pub labels: &'a [&'a str],
}

/// The machine part of a command's text: what `--quiet` prints instead of all of it.
#[derive(Debug, Default)]
pub enum Quiet<'a> {
    /// The first line (the `key=value` line most commands open with).
    #[default]
    FirstLine,
    /// Every line that starts with one of these `key=` prefixes.
    Keys(&'a [&'a str]),
    /// This text instead.
    Text(String),
    /// Nothing: the command's text is all sentences, its exit code says how it went.
    Nothing,
}

impl Quiet<'_> {
    /// The lines of `text` kept under `--quiet`, each ending in a newline.
    pub fn select<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self {
            Quiet::FirstLine => Cow::Owned(
                text.lines()
                    .next()
                    .map(|line| format!("{line}\n"))
                    .unwrap_or_default(),
            ),
            Quiet::Keys(keys) => Cow::Owned(
                text.lines()
                    .filter(|line| keys.iter().any(|key| line.starts_with(key)))
                    .map(|line| format!("{line}\n"))
                    .collect(),
            ),
            Quiet::Text(text) => Cow::Owned(text.clone()),
            Quiet::Nothing => Cow::Borrowed(""),
        }
    }
}

/// The environment variables that decide colour, read once.
#[derive(Debug, Default, Clone)]
pub struct ColorEnv {
    pub no_color: Option<OsString>,
    pub clicolor_force: Option<OsString>,
    pub clicolor: Option<OsString>,
    pub term: Option<OsString>,
}

impl ColorEnv {
    pub fn read() -> ColorEnv {
        ColorEnv {
            no_color: std::env::var_os("NO_COLOR"),
            clicolor_force: std::env::var_os("CLICOLOR_FORCE"),
            clicolor: std::env::var_os("CLICOLOR"),
            term: std::env::var_os("TERM"),
        }
    }
}

/// Whether a stream gets colours, first rule that applies winning:
/// - `NO_COLOR` set to anything but the empty string: never. <https://no-color.org>: "when
///   present and not an empty string (regardless of its value), prevents the addition of ANSI
///   color". It wins over `CLICOLOR_FORCE`, as a user's standing "no" should.
/// - `CLICOLOR_FORCE` set and not `0` (nor empty): always, even piped.
///   <https://bixense.com/clicolors/>: "CLICOLOR_FORCE != 0: ANSI colors should be enabled no
///   matter what". (`anstream` forces on `CLICOLOR_FORCE=0` too, hence this function.)
/// - `CLICOLOR=0`: never (same page: "ANSI colors are not supported and should not be used").
/// - Otherwise only on a terminal whose `TERM` is set and not `dumb`.
///
/// `--json` never gets colours; the caller checks it.
pub fn wants_color(env: &ColorEnv, is_terminal: bool) -> bool {
    let set = |value: &Option<OsString>| value.as_ref().is_some_and(|v| !v.is_empty());
    if set(&env.no_color) {
        return false;
    }
    if set(&env.clicolor_force) && env.clicolor_force.as_deref() != Some("0".as_ref()) {
        return true;
    }
    if env.clicolor.as_deref() == Some("0".as_ref()) {
        return false;
    }
    is_terminal && set(&env.term) && env.term.as_deref() != Some("dumb".as_ref())
}

const HEADING: Style = Style::new().bold();

/// The budget level's colour: ok green, warn yellow, shutdown red.
fn level_style(word: &str) -> Option<Style> {
    match word {
        "ok" => Some(AnsiColor::Green.on_default()),
        "warn" => Some(AnsiColor::Yellow.on_default()),
        "shutdown" => Some(AnsiColor::Red.on_default().bold()),
        // Not ok either: the agent has something to do (give the figure).
        "unknown" => Some(AnsiColor::Magenta.on_default()),
        _ => None,
    }
}

fn styled(style: Style, text: &str) -> String {
    format!("{}{text}{}", style.render(), style.render_reset())
}

/// `text` (already free of control bytes) with styles: the `shape`'s headings and labels bold,
/// and the word of every `level=WORD` token in its level's colour.
pub fn paint(text: &str, shape: &Shape) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        if !body.is_empty() && shape.headings.contains(&body) {
            out.push_str(&styled(HEADING, body));
        } else if let Some(label) = shape.labels.iter().find(|l| body.starts_with(*l)) {
            out.push_str(&styled(HEADING, label));
            out.push_str(&paint_levels(&body[label.len()..]));
        } else {
            out.push_str(&paint_levels(body));
        }
        out.push_str(newline);
    }
    out
}

/// One line with the word of each `level=WORD` token (at the start or after a space, up to the
/// next space) coloured.
fn paint_levels(line: &str) -> String {
    const KEY: &str = "level=";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(KEY) {
        let token_start = at == 0 || rest[..at].ends_with(' ');
        let value_start = at + KEY.len();
        let value_len = rest[value_start..]
            .find(' ')
            .unwrap_or(rest.len() - value_start);
        let word = &rest[value_start..value_start + value_len];
        out.push_str(&rest[..value_start]);
        match level_style(word).filter(|_| token_start) {
            Some(style) => out.push_str(&styled(style, word)),
            None => out.push_str(word),
        }
        rest = &rest[value_start + value_len..];
    }
    out.push_str(rest);
    out
}

/// Writes machine output to stdout. A reader that went away (`orchestrator next | head`) is not
/// an error: the command's work is done, so the rest of the text is dropped and it exits with its
/// own code, as `git log | head` does. `print!` would panic there instead.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::BrokenPipe => {}
        Err(err) => tracing::warn!("cannot write to stdout: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(no_color: Option<&str>, force: Option<&str>, clicolor: Option<&str>) -> ColorEnv {
        ColorEnv {
            no_color: no_color.map(OsString::from),
            clicolor_force: force.map(OsString::from),
            clicolor: clicolor.map(OsString::from),
            term: Some("xterm-256color".into()),
        }
    }

    #[test]
    fn the_rules_of_no_color_and_clicolors() {
        assert!(wants_color(&env(None, None, None), true));
        assert!(!wants_color(&env(None, None, None), false));
        assert!(!wants_color(&env(Some("1"), None, None), true));
        // An empty NO_COLOR is as if unset.
        assert!(wants_color(&env(Some(""), None, None), true));
        assert!(wants_color(&env(None, Some("1"), None), false));
        assert!(!wants_color(&env(None, Some("0"), None), false));
        assert!(!wants_color(&env(None, Some(""), None), false));
        assert!(!wants_color(&env(Some("1"), Some("1"), None), false));
        assert!(!wants_color(&env(None, None, Some("0")), true));
        assert!(wants_color(&env(None, Some("1"), Some("0")), false));
        let dumb = ColorEnv {
            term: Some("dumb".into()),
            ..ColorEnv::default()
        };
        assert!(!wants_color(&dumb, true));
        assert!(!wants_color(&ColorEnv::default(), true));
    }

    #[test]
    fn levels_are_coloured_only_as_tokens() {
        let painted = paint_levels("level=warn used=1 level=ok sublevel=shutdown level=other");
        assert_eq!(
            painted,
            "level=\u{1b}[33mwarn\u{1b}[0m used=1 level=\u{1b}[32mok\u{1b}[0m sublevel=shutdown level=other"
        );
        assert_eq!(
            paint_levels("level=unknown used=0"),
            "level=\u{1b}[35munknown\u{1b}[0m used=0"
        );
    }

    #[test]
    fn headings_and_labels_are_bold() {
        let shape = Shape {
            headings: &["Not picked:"],
            labels: &["session:"],
            ..Shape::default()
        };
        let painted = paint("Not picked:\nsession:  s1\nplain\n", &shape);
        assert_eq!(
            painted,
            "\u{1b}[1mNot picked:\u{1b}[0m\n\u{1b}[1msession:\u{1b}[0m  s1\nplain\n"
        );
    }

    #[test]
    fn quiet_keeps_the_machine_lines() {
        let text = "level=ok used=1\nKeep working.\nmeter=x level=ok\n";
        assert_eq!(Quiet::FirstLine.select(text), "level=ok used=1\n");
        assert_eq!(
            Quiet::Keys(&["level=", "meter="]).select(text),
            "level=ok used=1\nmeter=x level=ok\n"
        );
        assert_eq!(Quiet::Nothing.select(text), "");
    }
}

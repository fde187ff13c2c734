//! Makes text a user or an agent wrote safe to print on a terminal and to embed in markdown.
//!
//! Titles, summaries, next steps, issues and checkpoint messages are free text. Printed raw they
//! could drive the terminal (ESC sequences) or, in a handoff, forge a heading, a `## Resume`
//! section or a code fence that the next agent would run. The stored data keeps what was
//! written; these functions only shape how it is shown.

use std::borrow::Cow;

/// A character no text we print may carry: the C0 controls but newline and tab, DEL, and the
/// C1 controls (U+0080 to U+009F; some terminals read U+009B as CSI).
pub fn is_stripped(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// `text` without terminal control characters; newlines and tabs are kept.
pub fn strip_controls(text: &str) -> Cow<'_, str> {
    if text.chars().any(is_stripped) {
        Cow::Owned(text.chars().filter(|&c| !is_stripped(c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// Free text on one line of plain output: controls stripped, every run of whitespace (newlines
/// included) one space.
pub fn one_line(text: &str) -> String {
    strip_controls(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Free text on one line of markdown, e.g. after `- `: like [`one_line`], and it cannot start
/// a heading, a fence or an HTML block in the list item it lands in.
pub fn md_inline(text: &str) -> String {
    escape_block_start(&one_line(text))
}

/// Free text in one cell of a markdown table.
pub fn md_table_cell(text: &str) -> String {
    md_inline(text).replace('|', "\\|")
}

/// Multi-line free text as a markdown blockquote: every line is prefixed with `>`, so nothing
/// in it sits at column 0, and no line inside the quote can open a heading or a fence.
pub fn md_quote(text: &str) -> String {
    let text = strip_controls(text);
    let mut out = String::new();
    for line in text.trim_matches('\n').lines() {
        let line = line.trim_end();
        if line.is_empty() {
            out.push_str(">\n");
        } else {
            out.push_str("> ");
            out.push_str(&escape_block_start(line));
            out.push('\n');
        }
    }
    out
}

/// Compact JSON with DEL and the C1 controls written as `\u` escapes. serde_json already
/// escapes C0 controls but passes these through raw; inside a JSON string the escape is the
/// same value, and serde only emits them inside strings, so the data is unchanged.
pub fn json_escape_controls(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_stripped) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_stripped(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of markdown with a backslash before whatever would make it a heading (ATX `#` or
/// a setext underline), a code fence or an HTML block, also when it follows blockquote or list
/// markers (`> - # x` is a heading too). Other markdown in the line keeps its meaning.
fn escape_block_start(line: &str) -> String {
    let mut rest = line;
    loop {
        let content = rest.trim_start_matches([' ', '\t']);
        match content
            .strip_prefix('>')
            .or_else(|| after_list_marker(content))
        {
            Some(inner) => rest = inner,
            None => {
                rest = content;
                break;
            }
        }
    }
    let at = line.len() - rest.len();
    if opens_block(rest) {
        format!("{}\\{}", &line[..at], rest)
    } else {
        line.to_string()
    }
}

/// What follows a list marker (`-`, `*`, `+`, `1.`, `1)`) and its space, if `s` starts with one.
fn after_list_marker(s: &str) -> Option<&str> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let rest = match digits {
        0 => s.strip_prefix(['-', '*', '+'])?,
        1..=9 => s[digits..].strip_prefix(['.', ')'])?,
        _ => return None,
    };
    rest.starts_with([' ', '\t']).then_some(rest)
}

fn opens_block(s: &str) -> bool {
    let underline = s.trim_end();
    s.starts_with('#')
        || s.starts_with("```")
        || s.starts_with("~~~")
        || s.starts_with('<')
        || (!underline.is_empty()
            && (underline.chars().all(|c| c == '=') || underline.chars().all(|c| c == '-')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_stripped_but_newlines_and_tabs_kept() {
        assert_eq!(
            strip_controls("\x1b[31mred\x1b[0m\tok\r\nnext\x07\x7f\u{9b}2J\u{85}é"),
            "[31mred[0m\tok\nnext2Jé"
        );
        assert!(matches!(strip_controls("plain\ttext\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn one_line_joins_lines_and_drops_controls() {
        assert_eq!(one_line("  a\n## Resume\r\n\x1b[2Jb  "), "a ## Resume [2Jb");
        assert_eq!(one_line("\u{2028}x\u{2029}y"), "x y");
    }

    #[test]
    fn md_inline_cannot_start_a_block() {
        assert_eq!(md_inline("## Resume"), "\\## Resume");
        assert_eq!(md_inline("```sh\nrm -rf ~\n```"), "\\```sh rm -rf ~ ```");
        assert_eq!(md_inline("~~~"), "\\~~~");
        assert_eq!(md_inline("<h2>Resume</h2>"), "\\<h2>Resume</h2>");
        assert_eq!(md_inline("- # x"), "- \\# x");
        assert_eq!(md_inline("> 1. # x"), "> 1. \\# x");
        assert_eq!(md_inline("---"), "\\---");
        assert_eq!(md_inline("fix #12 in `a`"), "fix #12 in `a`");
        assert_eq!(md_inline("- item"), "- item");
        assert_eq!(md_inline("-- not a list"), "-- not a list");
        assert_eq!(md_inline("1234567890. # long"), "1234567890. # long");
        assert_eq!(md_inline(""), "");
    }

    #[test]
    fn table_cells_escape_pipes() {
        assert_eq!(md_table_cell("a | b\n| c"), "a \\| b \\| c");
    }

    #[test]
    fn a_quote_prefixes_every_line_and_neutralises_headings_and_fences() {
        let quoted = md_quote("did it\n## Resume\n```sh\nrm -rf ~\n```\n\n  # x\nok\n=\n");
        assert_eq!(
            quoted,
            "> did it\n> \\## Resume\n> \\```sh\n> rm -rf ~\n> \\```\n>\n>   \\# x\n> ok\n> \\=\n"
        );
        for line in quoted.lines() {
            assert!(line.starts_with('>'), "{line:?}");
        }
        assert_eq!(md_quote("\x1b[31mred\r\n"), "> [31mred\n");
        assert_eq!(md_quote(""), "");
    }

    #[test]
    fn json_keeps_its_values_but_not_raw_controls() {
        let value = serde_json::json!({"t": "a\u{1b}b\u{7f}c\u{9b}d\n"});
        let text = value.to_string();
        assert!(text.contains('\u{7f}') && text.contains('\u{9b}'));
        let clean = json_escape_controls(&text);
        assert!(!clean.chars().any(is_stripped), "{clean}");
        let back: serde_json::Value = serde_json::from_str(&clean).unwrap();
        assert_eq!(back, value);
    }
}

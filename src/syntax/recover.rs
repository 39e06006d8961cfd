//! Direct messages for the commonest syntax errors, and what a line that failed to parse binds.
//!
//! pest's own error says what it expected at the furthest point it reached, which for an
//! unclosed `(` is a token on the *next* line ("expected `,` or `)`, found `z`") and for a
//! missing `->` is "expected an operator". These helpers look at the unparseable line itself:
//! a bracket left open, two values side by side. What the line binds (`y = ...`, `input x`) is
//! recorded so the checker treats that name as known but poisoned, not as never bound.

use crate::diag::{Diagnostic, codes};

/// The innermost bracket the text leaves open (skipping strings and comments): its byte offset
/// within `text` and the bracket.
pub fn unclosed_bracket(text: &str) -> Option<(usize, char)> {
    let mut open: Vec<(usize, char)> = vec![];
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '#' => in_comment = true,
            '"' => in_string = true,
            '(' | '[' | '{' => open.push((i, c)),
            ')' | ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.last().copied()
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The name a statement line binds: `name = ...` or `input name ...`, with its offset in `text`.
pub fn bound_name(text: &str) -> Option<(usize, &str)> {
    let lead = text.len() - text.trim_start().len();
    let rest = &text[lead..];
    let word_len = |s: &str| s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    if !rest.starts_with(is_ident_start) {
        return None;
    }
    let n = word_len(rest);
    let (word, after) = rest.split_at(n);
    if word == "input" {
        let after_trim = after.trim_start();
        let at = lead + n + (after.len() - after_trim.len());
        let m = word_len(after_trim);
        return (m > 0 && after_trim.starts_with(is_ident_start)).then(|| (at, &after_trim[..m]));
    }
    let after = after.trim_start();
    (after.starts_with('=') && !after.starts_with("==") && !matches!(word, "output" | "model" | "block"))
        .then_some((lead, word))
}

/// Every identifier-like word of a text outside strings and comments (block calls in a line
/// that failed to parse still count as uses).
pub fn words(text: &str) -> Vec<&str> {
    let mut out = vec![];
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("");
        let mut in_string = false;
        let mut start = None;
        for (i, c) in code.char_indices() {
            if c == '"' {
                in_string = !in_string;
            }
            match (start, !in_string && is_ident_char(c)) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    out.push(&code[s..i]);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push(&code[s..]);
        }
    }
    out.retain(|w| w.starts_with(is_ident_start));
    out
}

/// A direct message for a statement line that failed to parse, when one of the common causes
/// is recognisable; `start` is the line's offset in `source`, `error_at` where pest stopped.
pub fn statement_error(source: &str, start: usize, text: &str, error_at: usize) -> Option<Diagnostic> {
    let line_end = start + text.len();
    // An open bracket: pest ran past the line and stopped at the start of a later line (or at
    // the end of the file) looking for the `,` or `)` that never came.
    if let Some((at, open)) = unclosed_bracket(text) {
        // pest stops at the end of the line, at the start of a later line, or at the end of the
        // file: never inside the line's code (that is another mistake) nor inside a later line.
        let code_end = start + text.trim_end().len();
        let error_at = error_at.min(source.len());
        let at_line_end = error_at >= code_end && error_at <= line_end;
        let at_later_line_start = error_at >= line_end && {
            let line_start = source[..error_at].rfind('\n').map_or(0, |i| i + 1);
            source[line_start..error_at].trim().is_empty()
        };
        if at_line_end || at_later_line_start || error_at >= source.len() {
            let what = match open {
                '(' if text[..at].trim_end().ends_with(is_ident_char) => "the call opened here",
                '(' => "the parenthesis opened here",
                '[' => "the list opened here",
                _ => "the brace opened here",
            };
            let close = closer(open);
            return Some(
                Diagnostic::error(
                    codes::SYNTAX,
                    format!("missing `{close}` to close {what}"),
                    start + at..start + at + 1,
                    format!("this `{open}` is never closed"),
                )
                .with_label(code_end..code_end, format!("expected `{close}` by here"))
                .with_help(format!("add `{close}` at the end of the line")),
            );
        }
    }
    // Two values side by side in a binding: `y = x conv(8)` lacks the `->` between them.
    let at = error_at.checked_sub(start).filter(|&a| a < text.len())?;
    let (before, after) = text.split_at(at);
    let before = before.trim_end();
    bound_name(text).filter(|(_, n)| *n != "input")?;
    let after_value = before.ends_with(|c: char| is_ident_char(c) || c == ')' || c == ']');
    if after_value && after.starts_with(is_ident_start) && !before.ends_with('=') {
        let word_end = after.find(|c: char| !is_ident_char(c)).unwrap_or(after.len());
        let word = &after[..word_end];
        let at = start + at;
        return Some(
            Diagnostic::error(
                codes::SYNTAX,
                format!("missing `->` before `{word}`"),
                at..at + word.len(),
                "expected `->` before this",
            )
            .with_help(format!("layers are chained with `->`: `... -> {word}`")),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_brackets_skip_strings_and_comments() {
        assert_eq!(unclosed_bracket("y = x -> conv(8, kernel=3"), Some((13, '(')));
        assert_eq!(unclosed_bracket("y = f(a[1], \"(\")"), None);
        assert_eq!(unclosed_bracket("y = f(a # (\n"), Some((5, '(')));
        assert_eq!(unclosed_bracket("y = [1, (2"), Some((8, '(')));
    }

    #[test]
    fn names_bound_and_mentioned() {
        assert_eq!(bound_name("  y2 = x -> conv(8"), Some((2, "y2")));
        assert_eq!(bound_name("input  img [1, 8]"), Some((7, "img")));
        assert_eq!(bound_name("y == x"), None);
        assert_eq!(bound_name("output y"), None);
        assert_eq!(words("y = x -> b(\"z\") # c"), vec!["y", "x", "b"]);
    }
}

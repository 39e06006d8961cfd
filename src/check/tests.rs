//! `check(source)` unit tests in the rust-analyzer style: a small program in, the facts out.

use super::*;

fn errors(src: &str) -> Vec<(&'static str, String)> {
    let out = check_source(src);
    out.diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.code, src[d.primary.span.clone()].to_string()))
        .collect()
}

//! Every `examples/**/*.geonet` (and the peers' workloads in ../shared/peers) is checked against
//! the claims in its header comment, so a new example is a new test:
//!
//! - `name [a, b, c]` / "output `s` is [..]" / "output [..]": a value's or the output's shape;
//! - "X gives [..]": some layer of kind X has that shape;
//! - "N parameters" / "N trainable parameters" / "N in all" / "params N": the trainable count;
//! - "(plus N running statistics)": the batchnorm state count;
//! - "One warning" / "no warnings" / "warnings N": the warning count (0 when not stated);
//! - "Error:" (or "Two independent errors"): that many errors; every shape, backticked token and
//!   "help names A and B" number of the header appears in the diagnostics' messages, labels and
//!   help.
//!
//! The peers' files in ../shared/peers are checked only when their header makes claims (a
//! `Check:` line or an `Error:`), so files added there never break this test.
//!
//! Then insta snapshots of the table, the rendered diagnostics and the JSON of every file under
//! `examples/`, discovered by `insta::glob!`, each file its own snapshots so that one failure
//! does not hide the others.

use geonetc::check::{self, CheckOutput};
use geonetc::diag::{self, Diagnostic};
use regex::Regex;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example_files() -> Vec<PathBuf> {
    let mut files = vec![];
    for dir in [root().join("examples"), root().join("examples/errors"), root().join("../shared/peers")] {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "geonet") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn header(src: &str) -> String {
    src.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_shape(s: &str) -> Vec<usize> {
    s.split(',').map(|d| d.trim().parse().expect("shape in header")).collect()
}

fn count_word(w: &str) -> Option<usize> {
    Some(match w.to_ascii_lowercase().as_str() {
        "no" | "zero" => 0,
        "one" | "a" => 1,
        "two" => 2,
        "three" => 3,
        n => n.parse().ok()?,
    })
}

fn diagnostic_text(d: &Diagnostic) -> String {
    let mut t = d.message.clone();
    for l in std::iter::once(&d.primary).chain(&d.secondary) {
        t.push('\n');
        t.push_str(&l.message);
    }
    if let Some(h) = &d.help {
        t.push('\n');
        t.push_str(h);
    }
    t
}

fn value_shape(out: &CheckOutput, name: &str) -> Option<Vec<usize>> {
    let m = &out.program.as_ref()?.model;
    m.values.iter().chain(&m.outputs).find(|v| v.name == name).map(|v| v.shape.clone())
}

fn check_claims(path: &Path, src: &str, out: &CheckOutput) {
    let h = header(src);
    let file = path.display();
    let errors: Vec<&Diagnostic> = out.diagnostics.iter().filter(|d| d.is_error()).collect();
    let warnings = out.diagnostics.len() - errors.len();

    if let Some(idx) = h.find("Error:").or_else(|| h.find("errors,")) {
        let claim = &h[idx..];
        let expected = Regex::new(r"(?i)(\w+) independent errors")
            .unwrap()
            .captures(&h)
            .and_then(|c| count_word(&c[1]))
            .unwrap_or(1);
        assert_eq!(errors.len(), expected, "{file}: expected {expected} errors, got {:#?}", out.diagnostics);
        let all: String = errors.iter().map(|d| diagnostic_text(d)).collect::<Vec<_>>().join("\n");
        let all_norm = all.replace('−', "-").replace('×', "x");
        for c in Regex::new(r"\[[\d, ]+\]").unwrap().find_iter(&h) {
            assert!(all.contains(c.as_str()), "{file}: diagnostics do not mention {}:\n{all}", c.as_str());
        }
        for c in Regex::new(r"`([^`]+)`").unwrap().captures_iter(&h) {
            assert!(all.contains(&c[1]), "{file}: diagnostics do not mention `{}`:\n{all}", &c[1]);
        }
        for c in Regex::new(r"(\d+)x(\d+)").unwrap().captures_iter(claim) {
            assert!(
                all_norm.contains(&format!("{}x{}", &c[1], &c[2])),
                "{file}: diagnostics do not mention {}:\n{all}",
                &c[0]
            );
        }
        if let Some(c) = Regex::new(r"help names (\d+) and (\d+)").unwrap().captures(&h) {
            let help: String = errors.iter().filter_map(|d| d.help.clone()).collect();
            assert!(
                help.contains(&c[1]) && help.contains(&c[2]),
                "{file}: help does not name {} and {}: {help}",
                &c[1],
                &c[2]
            );
        }
        if let Some(c) = Regex::new(r"= (-?\d+)\.").unwrap().captures(claim) {
            assert!(
                all_norm.contains(&format!("= {}", &c[1])),
                "{file}: diagnostics do not show `= {}`:\n{all}",
                &c[1]
            );
        }
        if let Some(c) = Regex::new(r"(\d+\.\d+) is out of range").unwrap().captures(claim) {
            assert!(all.contains(&c[1]), "{file}: diagnostics do not mention {}", &c[1]);
        }
        assert!(out.program.is_none());
        return;
    }

    assert!(
        errors.is_empty(),
        "{file}: unexpected errors:\n{}",
        diag::render(&out.diagnostics, &file.to_string(), src, false)
    );
    let program = out.program.as_ref().expect("program");
    let check_line: String =
        h.lines().filter(|l| l.to_ascii_lowercase().starts_with("check")).collect::<Vec<_>>().join("\n");
    if check_line.is_empty() && !path.starts_with(root().join("examples")) {
        // A file someone else keeps that makes no claims: nothing to hold it to.
        return;
    }
    assert!(!check_line.is_empty(), "{file}: no `Check:` line in the header");
    let mut claims = 0;
    // "output `s` is [1, 4, 4]", "c [16, 16, 16]", "output [1, 64, 64]", "flatten gives [9800]".
    let re = Regex::new(r"(\w+)`?\s*(is|gives)?\s*\[([\d, ]+)\]").unwrap();
    for c in re.captures_iter(&check_line.replace('`', "")) {
        let shape = parse_shape(&c[3]);
        let name = &c[1];
        claims += 1;
        if c.get(2).is_some_and(|m| m.as_str() == "gives") {
            assert!(
                program.model.layers.iter().any(|l| l.op.kind() == name && l.shape == shape),
                "{file}: no `{name}` layer gives {shape:?}"
            );
        } else if name == "output" {
            assert_eq!(program.model.outputs.len(), 1, "{file}");
            assert_eq!(program.model.outputs[0].shape, shape, "{file}: output");
        } else {
            assert_eq!(value_shape(out, name), Some(shape), "{file}: shape of `{name}`");
        }
    }
    let params = Regex::new(r"(\d+) (?:trainable )?parameters|(\d+) in all|params (\d+)").unwrap();
    for c in params.captures_iter(&h) {
        let n: u64 = c.iter().skip(1).flatten().next().unwrap().as_str().parse().unwrap();
        assert_eq!(program.total_params(), n, "{file}: parameter count");
        claims += 1;
    }
    if let Some(c) = Regex::new(r"plus (\d+) running statistics").unwrap().captures(&h) {
        let stats: usize = program
            .model
            .layers
            .iter()
            .map(|l| match &l.op {
                geonetc::ops::Op::BatchNorm(_) => 2 * l.shape[0],
                _ => 0,
            })
            .sum();
        assert_eq!(stats, c[1].parse::<usize>().unwrap(), "{file}: running statistics");
    }
    let stated = Regex::new(r"(?i)\b(\w+) warnings?\b|warnings (\d+)")
        .unwrap()
        .captures(&h)
        .and_then(|c| c.get(2).map(|m| m.as_str().parse().unwrap()).or_else(|| count_word(&c[1])));
    assert_eq!(
        warnings,
        stated.unwrap_or(0),
        "{file}: warnings:\n{}",
        diag::render(&out.diagnostics, "f", src, false)
    );
    assert!(claims >= 2, "{file}: the header makes too few checkable claims");
}

#[test]
fn every_example_checks_as_its_header_says() {
    let files = example_files();
    assert!(files.len() >= 14, "examples missing: {files:?}");
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let out = check::check_source(&src);
        check_claims(path, &src, &out);
    }
}

#[test]
fn snapshots_of_every_example() {
    insta::glob!("../examples", "**/*.geonet", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let out = check::check_source(&src);
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        let rendered = diag::render(&out.diagnostics, &rel, &src, false);
        let table = check::summary_table(&out);
        insta::assert_snapshot!("check", format!("{table}\n{rendered}"));
        insta::assert_json_snapshot!("json", check::to_json(&out, &rel));
    });
}

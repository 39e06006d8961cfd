//! `geonetc fmt`: every example is already in the canonical layout; formatting is idempotent on
//! the examples and on whitespace-scrambled variants of them; it keeps comments and everything
//! `check` says; files that do not parse are refused and left untouched.

use geonetc::check::{self, CheckOutput};
use geonetc::fmt::{FmtError, format_source};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "geonet")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every example and error example that parses.
fn examples() -> Vec<(String, String)> {
    let mut out = vec![];
    for dir in ["examples", "examples/errors"] {
        for p in files_in(&root().join(dir)) {
            let src = std::fs::read_to_string(&p).expect("read example");
            let name = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
            out.push((name, src));
        }
    }
    assert!(out.len() >= 14, "examples not found");
    out
}

fn fmt(src: &str) -> String {
    match format_source(src) {
        Ok(s) => s,
        Err(e) => panic!("fmt failed: {e:?}\n{src}"),
    }
}

#[test]
fn every_example_is_a_fixed_point() {
    for (name, src) in examples() {
        let out = fmt(&src);
        if out != src {
            let first = src.lines().zip(out.lines()).position(|(a, b)| a != b);
            panic!("{name} is not in the canonical layout; first differing line {first:?}:\n{out}");
        }
    }
}

#[test]
fn snapshots_of_every_example() {
    // One snapshot per file under examples/, found by insta's glob (a new example is a new
    // snapshot; one failing does not hide the others).
    insta::glob!("../examples", "**/*.geonet", |path| {
        let src = std::fs::read_to_string(path).expect("example");
        insta::assert_snapshot!("fmt", fmt(&src));
    });
}

/// What check says, without positions: shapes, parameter and FLOP counts, diagnostic codes
/// and messages.
fn summary(out: &CheckOutput) -> String {
    let mut s = String::new();
    if let Some(p) = &out.program {
        for l in &p.model.layers {
            s.push_str(&format!("{} {:?} {} {}\n", l.name, l.shape, l.params, l.flops));
        }
        for v in p.model.values.iter().chain(&p.model.outputs) {
            s.push_str(&format!("{} {:?}\n", v.name, v.shape));
        }
        s.push_str(&format!("{:?} {:?}\n", p.optimizer, p.train));
    }
    for d in &out.diagnostics {
        s.push_str(&format!("{} {}\n", d.code, d.message));
    }
    s
}

fn comments(src: &str) -> Vec<String> {
    src.lines().filter_map(|l| l.find('#').map(|i| l[i..].trim_end().to_string())).collect()
}

/// Scrambles layout without changing meaning: random spaces around tokens, extra blank lines,
/// indentation, line breaks inside brackets. `seed` picks the choices.
fn scramble(src: &str, seed: u64, breaks: bool) -> String {
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut out = String::new();
    for line in src.lines() {
        if line.trim_start().starts_with('#') {
            out.push_str(&" ".repeat(next(5) as usize));
            out.push_str(line.trim_start());
            out.push('\n');
            continue;
        }
        let (code, comment) = match line.find('#') {
            Some(i) => (&line[..i], Some(&line[i..])),
            None => (line, None),
        };
        out.push_str(&" ".repeat(next(7) as usize));
        let mut in_str = false;
        let code = code.trim();
        let chars: Vec<char> = code.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if c == '"' {
                in_str = !in_str;
            }
            if in_str {
                out.push(c);
                continue;
            }
            match c {
                ' ' => out.push_str(&" ".repeat(next(3) as usize + usize::from(needs_space(&chars, i)))),
                ',' => {
                    out.push(',');
                    // A line break after a comma inside brackets is whitespace.
                    if breaks && next(6) == 0 && comment.is_none() && depth(&chars[..i]) > 0 {
                        out.push('\n');
                    }
                    out.push_str(&" ".repeat(next(2) as usize));
                }
                '=' | ':' => {
                    out.push_str(&" ".repeat(next(2) as usize));
                    out.push(c);
                    out.push_str(&" ".repeat(next(2) as usize));
                }
                _ => out.push(c),
            }
        }
        if let Some(c) = comment {
            out.push_str(&" ".repeat(next(4) as usize + 1));
            out.push_str(c);
        }
        out.push('\n');
        if next(4) == 0 && line.trim().is_empty() {
            out.push('\n');
        }
    }
    out
}

/// A space between two word characters must stay.
fn needs_space(chars: &[char], i: usize) -> bool {
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '"');
    let prev = chars[..i].iter().rev().find(|c| **c != ' ');
    let next = chars[i + 1..].iter().find(|c| **c != ' ');
    word(prev) && word(next)
}

fn depth(chars: &[char]) -> i32 {
    chars
        .iter()
        .map(|c| match c {
            '(' | '[' => 1,
            ')' | ']' => -1,
            _ => 0,
        })
        .sum()
}

#[test]
fn fmt_keeps_check_results_and_comments() {
    for (name, src) in examples() {
        let out = fmt(&src);
        assert_eq!(summary(&check::check_source(&src)), summary(&check::check_source(&out)), "{name}");
        assert_eq!(comments(&src), comments(&out), "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Scrambled examples: fmt is idempotent, keeps check's verdict and every comment, and
    /// gives back the example itself except where the author's comment columns were moved.
    #[test]
    fn scrambled_examples(seed in any::<u64>(), which in 0usize..64, breaks in any::<bool>()) {
        let all = examples();
        let (name, src) = &all[which % all.len()];
        let messy = scramble(src, seed, breaks);
        let once = match format_source(&messy) {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(format!("{name}: {e:?}\n{messy}"))),
        };
        prop_assert_eq!(&fmt(&once), &once, "{} not idempotent; scrambled:\n{}", name, messy);
        prop_assert_eq!(summary(&check::check_source(src)), summary(&check::check_source(&once)), "{}", name);
        prop_assert_eq!(comments(src), comments(&once));
        // Without trailing comments (whose column the author may choose) and without line
        // breaks inside brackets (which the author may choose too), the layout is the example's.
        if breaks {
            return Ok(());
        }
        let strip = |s: &str| -> String {
            s.lines().map(|l| match l.find('#') { Some(i) if !l[..i].trim().is_empty() => l[..i].trim_end(), _ => l }).collect::<Vec<_>>().join("\n")
        };
        prop_assert_eq!(strip(&once), strip(src), "{}; scrambled:\n{}", name, messy);
    }
}

#[test]
fn unparseable_files_are_refused() {
    for src in ["model m {\n    y = = x\n}\n", "model m {\n    input x: [1, 8\n", "block = relu\n", "]]]"] {
        match format_source(src) {
            Err(FmtError::Syntax(d)) => assert!(d.iter().all(|d| d.is_error()) && !d.is_empty()),
            other => panic!("{src:?} gave {other:?}"),
        }
    }
}

fn geonetc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_geonetc")).args(args).output().expect("run geonetc")
}

#[test]
fn cli_rewrites_checks_and_refuses() {
    let dir = std::env::temp_dir().join(format!("geonetc-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let messy = dir.join("messy.geonet");
    let clean = dir.join("clean.geonet");
    let broken = dir.join("broken.geonet");
    let messy_src = "model m {\n  input x:[1,8]\n  y=x->relu   # keep me\n  output y\n}\n";
    // The comment was at column 14; the code now ends at 17, so it moves to 17 + 2.
    let want = "model m {\n    input x: [1, 8]\n    y = x -> relu  # keep me\n    output y\n}\n";
    let broken_src = "model m {\n    y = = x\n    output y\n}\n";
    std::fs::write(&messy, messy_src).expect("write");
    std::fs::write(&clean, want).expect("write");
    std::fs::write(&broken, broken_src).expect("write");
    let p = |f: &Path| f.display().to_string();

    // --check: lists the messy file, exit 1, nothing written.
    let out = geonetc(&["fmt", "--check", &p(&messy), &p(&clean)]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("messy.geonet") && !stdout.contains("clean.geonet"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&messy).ok().as_deref(), Some(messy_src));

    // --check on canonical files only: exit 0.
    assert_eq!(geonetc(&["fmt", "--check", &p(&clean)]).status.code(), Some(0));

    // Rewrite: the file becomes canonical, no temporary file left behind.
    let out = geonetc(&["fmt", &p(&messy)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&messy).ok().as_deref(), Some(want));
    let leftovers = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp")).count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);

    // A file that does not parse: diagnostics, exit 1, untouched.
    let out = geonetc(&["fmt", &p(&broken)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("E0001") || stderr.contains("syntax"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&broken).ok().as_deref(), Some(broken_src));

    // A missing file: exit 2.
    assert_eq!(geonetc(&["fmt", &p(&dir.join("nope.geonet"))]).status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Token soup in the language's alphabet: any text either is refused with diagnostics or
/// formats (never an internal error) to a fixed point.
fn soup() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "model",
        "block",
        "input",
        "output",
        "optimizer",
        "train",
        "m",
        "x",
        "y",
        "b",
        "c",
        "conv",
        "relu",
        "kernel",
        "=",
        "->",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "1",
        "16",
        "-",
        "*",
        "/",
        "+",
        "1e-3",
        "\"s\"",
        "true",
        " ",
        "  ",
        "\n",
        "\n\n",
        "# c\n",
        "\t",
    ]);
    prop::collection::vec(tokens, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn any_text_is_refused_or_formatted_to_a_fixed_point(src in soup()) {
        match format_source(&src) {
            Err(FmtError::Syntax(d)) => prop_assert!(!d.is_empty()),
            Err(FmtError::Internal(why)) => prop_assert!(false, "internal: {} for {:?}", why, src),
            Ok(out) => {
                let again = format_source(&out);
                prop_assert!(matches!(&again, Ok(o) if *o == out), "{:?} → {:?} → {:?}", src, out, again);
            }
        }
    }

    /// Valid programs built from pieces, with comments and line breaks in awkward places.
    #[test]
    fn awkward_valid_programs(pieces in prop::collection::vec(0usize..8, 1..8), comment in any::<bool>()) {
        let c = if comment { "  # note\n" } else { "\n" };
        let mut body = String::from("    input x: [1, 16, 16]\n");
        let mut last = "x".to_string();
        for (i, p) in pieces.iter().enumerate() {
            let name = format!("v{i}");
            let rhs = match p {
                0 => format!("{last} -> conv(4, kernel=3, pad=1){c}"),
                1 => format!("{last}{c}        -> relu\n"),
                2 => format!("{last} -> conv(4,{c} kernel=(3, 3),{c} pad=same){c}"),
                3 => format!("({last}) -> relu{c}"),
                4 => format!("{last} -> leaky_relu(slope=-0.5*2){c}"),
                5 => format!("{last} ->{c}    relu{c}"),
                6 => format!("{last} -> conv(4, kernel=[3, 3,], pad=[1,1]){c}"),
                _ => format!("add({last}, {last}){c}"),
            };
            body.push_str(&format!("{name} ={rhs}"));
            last = name;
        }
        let src = format!("model m {{\n{body}    output {last}\n}}\n");
        let out = match format_source(&src) {
            Ok(o) => o,
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}\n{src}"))),
        };
        prop_assert_eq!(&fmt(&out), &out);
        prop_assert_eq!(summary(&check::check_source(&src)), summary(&check::check_source(&out)));
        prop_assert_eq!(comments(&src), comments(&out));
    }
}

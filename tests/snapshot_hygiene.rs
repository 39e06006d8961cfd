//! Every stored snapshot belongs to a test that still makes it (what `cargo insta test
//! --unreferenced=reject` checks, without needing cargo-insta): a snapshot left behind by a
//! deleted example or a renamed test is a claim nobody checks any more.

use std::path::Path;

/// `key: value` lines of a snapshot's header (between the first two `---` lines).
fn header(text: &str) -> Vec<(String, String)> {
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return vec![];
    }
    lines
        .take_while(|l| *l != "---")
        .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

#[test]
fn every_snapshot_is_made_by_a_test_that_still_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/snapshots");
    let mut problems = vec![];
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/snapshots").flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.ends_with(".snap.new") || file_name.ends_with(".pending-snap") {
            problems.push(format!("{file_name}: a pending snapshot (review it, then accept or delete it)"));
            continue;
        }
        let Some(stem) = file_name.strip_suffix(".snap") else { continue };
        count += 1;
        let text = std::fs::read_to_string(entry.path()).expect("snapshot text");
        let fields = header(&text);
        let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let Some(source) = get("source") else {
            problems.push(format!("{file_name}: no `source:` in its header"));
            continue;
        };
        let Ok(test_source) = std::fs::read_to_string(root.join(&source)) else {
            problems.push(format!("{file_name}: its test file {source} is gone"));
            continue;
        };
        if let Some(input) = get("input_file") {
            // A glob snapshot: its input must still exist.
            if !root.join(&input).exists() {
                problems.push(format!("{file_name}: its input {input} is gone"));
            }
            continue;
        }
        // A named snapshot: the name (after `{test file}__`) must still be written in its test,
        // as a string or as the name of the test function.
        let test_stem =
            Path::new(&source).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = stem.strip_prefix(&format!("{test_stem}__")).unwrap_or(stem);
        // The second and later unnamed snapshots of one test function get `-2`, `-3`, ...
        let name = match name.rsplit_once('-') {
            Some((base, n)) if n.chars().all(|c| c.is_ascii_digit()) => base,
            _ => name,
        };
        if !test_source.contains(&format!("\"{name}\"")) && !test_source.contains(&format!("fn {name}(")) {
            problems.push(format!("{file_name}: no test in {source} makes a snapshot named `{name}`"));
        }
    }
    assert!(count > 0, "no snapshots found");
    assert!(problems.is_empty(), "unreferenced snapshots:\n{}", problems.join("\n"));
}

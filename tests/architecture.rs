//! ARCHITECTURE.md is the map of the code; these tests fail when the map and the tree drift.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file under `src/` is on the map: its path (`src/jit/plan.rs`) appears in
/// ARCHITECTURE.md, or its folder (`src/jit/`) appears on a line that names the file.
#[test]
fn every_module_is_on_the_code_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut files = vec![];
    rust_files(&root.join("src"), &mut files);
    let mut missing = vec![];
    for file in files {
        let rel = file.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
        if rel == "src/main.rs" || rel == "src/lib.rs" {
            continue;
        }
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        let folder = &rel[..rel.len() - name.len()];
        let on_map = doc.contains(&rel)
            || doc
                .lines()
                .any(|l| l.contains(folder) && (l.contains(&format!("`{name}`")) || name == "mod.rs"));
        if !on_map {
            missing.push(rel);
        }
    }
    assert!(missing.is_empty(), "modules missing from ARCHITECTURE.md's map: {missing:?}");
}

/// Every path the map names exists (a renamed or deleted module must leave the map too).
#[test]
fn every_path_on_the_code_map_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut stale = vec![];
    for piece in doc.split('`') {
        let looks_like_path = (piece.starts_with("src/") || piece.starts_with("tests/"))
            && !piece.contains(' ')
            && !piece.contains('*');
        if looks_like_path && !root.join(piece.trim_end_matches('/')).exists() {
            stale.push(piece.to_string());
        }
    }
    assert!(stale.is_empty(), "ARCHITECTURE.md names paths that do not exist: {stale:?}");
}

/// No module outside `src/ops/` spells a layer's name in code or messages: they read the op
/// table (`geonetc::ops`), so renaming or adding a layer touches one module. Doc comments and
/// test modules may show programs.
#[test]
fn layer_names_are_spelled_only_in_the_op_table() {
    let names = geonetc::ops::layer_names();
    let literal = regex::Regex::new(r#""(?:[^"\\\n]|\\.)*""#).unwrap();
    let mut files = vec![];
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut found = vec![];
    for f in files {
        let rel = f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_path_buf();
        if rel.starts_with("src/ops") || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Test modules sit at the end of a file.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for lit in literal.find_iter(line) {
                let s = lit.as_str();
                for n in &names {
                    let spelled = [format!("`{n}`"), format!("`{n}("), format!("{n}("), format!("-> {n}")];
                    if spelled.iter().any(|p| s.contains(p.as_str())) {
                        found.push(format!("{}:{}: {s}", rel.display(), i + 1));
                    }
                }
            }
        }
    }
    found.dedup();
    assert!(found.is_empty(), "layer names spelled outside src/ops:\n{}", found.join("\n"));
}

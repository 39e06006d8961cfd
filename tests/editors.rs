//! The VS Code extension in `editors/vscode`: its JSON files parse, package.json points at files
//! that exist, and the TextMate grammar's regexes compile and highlight the language's keywords
//! (taken from the pest grammar), every layer name (from the checker's table), numbers,
//! strings, comments and `->`.

use regex::Regex;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn ext() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("editors/vscode")
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

#[test]
fn every_json_file_parses() {
    let mut n = 0;
    let mut stack = vec![ext()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("editors/vscode exists").flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|f| f != "node_modules") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                json(&p);
                n += 1;
            }
        }
    }
    assert!(n >= 3, "package.json, language-configuration.json and the grammar: found {n}");
}

#[test]
fn package_json_points_at_existing_files() {
    let pkg = json(&ext().join("package.json"));
    let exists = |rel: &Value| {
        let rel = rel.as_str().expect("a path string");
        assert!(ext().join(rel).is_file(), "package.json names {rel}, which does not exist");
    };
    exists(&pkg["main"]);
    let langs = pkg["contributes"]["languages"].as_array().expect("languages");
    assert!(langs.iter().any(|l| l["id"] == "geonet"
        && l["extensions"].as_array().is_some_and(|e| e.contains(&Value::from(".geonet")))));
    for l in langs {
        exists(&l["configuration"]);
    }
    let grammars = pkg["contributes"]["grammars"].as_array().expect("grammars");
    assert!(!grammars.is_empty());
    for g in grammars {
        exists(&g["path"]);
        assert_eq!(g["language"], "geonet");
        let grammar = json(&ext().join(g["path"].as_str().unwrap_or_default()));
        assert_eq!(grammar["scopeName"], g["scopeName"]);
    }
    let props = &pkg["contributes"]["configuration"]["properties"];
    assert_eq!(props["geonet.server.path"]["default"], "geonetc");
    assert!(pkg["dependencies"]["vscode-languageclient"].is_string());
    // The client starts `geonetc lsp` from the configured path.
    let js = std::fs::read_to_string(ext().join("extension.js")).expect("extension.js");
    assert!(js.contains("\"lsp\"") && js.contains("server.path"), "{js}");
    // Comments are `#` (spec, "Lexical").
    let conf = json(&ext().join("language-configuration.json"));
    assert_eq!(conf["comments"]["lineComment"], "#");
}

/// A pattern of the grammar: a regex and the scope it gives (name, or capture 1's name).
struct Rule {
    re: Regex,
    scope: String,
}

fn rules() -> Vec<Rule> {
    let g = json(&ext().join("syntaxes/geonet.tmLanguage.json"));
    let mut out = vec![];
    fn walk(p: &Value, g: &Value, out: &mut Vec<Rule>, depth: usize) {
        assert!(depth < 8, "include cycle");
        if let Some(inc) = p["include"].as_str() {
            let key = inc.trim_start_matches('#');
            walk(&g["repository"][key], g, out, depth + 1);
            return;
        }
        let compile = |re: &str| {
            // Oniguruma and the regex crate agree on this grammar's syntax (no look-around).
            Regex::new(&format!("(?m){re}"))
                .unwrap_or_else(|e| panic!("grammar regex {re:?} does not compile: {e}"))
        };
        let scope =
            p["name"].as_str().or_else(|| p["captures"]["1"]["name"].as_str()).unwrap_or("").to_string();
        if let Some(re) = p["match"].as_str() {
            out.push(Rule { re: compile(re), scope: scope.clone() });
        }
        if let (Some(b), Some(e)) = (p["begin"].as_str(), p["end"].as_str()) {
            compile(b);
            compile(e);
            // A begin/end region as one token, for this simple highlighter.
            out.push(Rule { re: compile(&format!("{b}(?:\\\\.|.)*?(?:{e})")), scope });
        }
        if let Some(ps) = p["patterns"].as_array() {
            for q in ps {
                walk(q, g, out, depth + 1);
            }
        }
    }
    walk(&g, &g, &mut out, 0);
    out
}

/// TextMate's choice at one position: the earliest match, the first pattern on ties. Returns
/// (token, scope) pairs for a line.
fn highlight(line: &str, rules: &[Rule]) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut at = 0;
    while at < line.len() {
        let best = rules
            .iter()
            .filter_map(|r| r.re.find_at(line, at).filter(|m| !m.as_str().is_empty()).map(|m| (m, r)))
            .min_by_key(|(m, _)| m.start());
        let Some((m, r)) = best else { break };
        out.push((m.as_str().trim().to_string(), r.scope.clone()));
        at = m.end();
    }
    out
}

fn scope_of(line: &str, token: &str, rules: &[Rule]) -> String {
    highlight(line, rules)
        .into_iter()
        .find(|(t, _)| {
            t == token || t.starts_with(&format!("{token}(")) || t.starts_with(&format!("{token} "))
        })
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("`{token}` not highlighted in {line:?}: {:?}", highlight(line, rules)))
}

/// The keywords of the language, read from the pest grammar's `keyword` rule.
fn grammar_keywords() -> Vec<String> {
    let pest = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("grammar/geonet.pest"))
        .expect("grammar");
    let line = pest.lines().find(|l| l.trim_start().starts_with("keyword ")).expect("keyword rule");
    let kws: Vec<String> = line.split('"').skip(1).step_by(2).map(String::from).collect();
    assert_eq!(kws.len(), 8, "the spec names 8 keywords: {kws:?}");
    kws
}

#[test]
fn grammar_highlights_the_language() {
    let rules = rules();
    assert!(rules.len() >= 8);
    for kw in grammar_keywords() {
        let line = format!("{kw} x");
        let scope = scope_of(&line, &kw, &rules);
        assert!(
            scope.starts_with("keyword.") || scope.starts_with("constant.language"),
            "keyword `{kw}` gets scope {scope:?}"
        );
    }
    for layer in geonetc::check::layers::layer_names() {
        let line = format!("    y = x -> {layer}(1)");
        assert_eq!(scope_of(&line, &layer, &rules), "support.function.layer.geonet", "{layer}");
    }
    let line = "    e1 = x  -> conv(16, kernel=3, pad=1) -> relu  # the first level";
    assert_eq!(scope_of(line, "->", &rules), "keyword.operator.pipe.geonet");
    assert_eq!(scope_of(line, "16", &rules), "constant.numeric.geonet");
    assert_eq!(scope_of(line, "# the first level", &rules), "comment.line.number-sign.geonet");
    assert!(scope_of(line, "kernel=", &rules).starts_with("variable.parameter"));
    for n in ["1e-3", "2.5E+2", "0.9", "128"] {
        let line = format!("lr = {n}");
        assert_eq!(scope_of(&line, n, &rules), "constant.numeric.geonet", "{n}");
    }
    let line = "    data = npy(input = \"x.npy\", target = \"y.npy\")";
    assert_eq!(scope_of(line, "\"x.npy\"", &rules).as_str(), "string.quoted.double.geonet");
    // A user block call is a function; a `#` inside a comment does not start anything new.
    assert_eq!(scope_of("    b = a -> down(8)", "down", &rules), "entity.name.function.geonet");
    assert_eq!(highlight("# a -> conv(3) # b", &rules).len(), 1);
    // Identifiers that merely contain a keyword are not keywords.
    assert!(highlight("    modelx = inputs", &rules).iter().all(|(_, s)| !s.starts_with("keyword")));
}

/// docs/language.md names every layer of the op table.
#[test]
fn docs_name_every_layer() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/language.md")).expect("docs/language.md");
    for def in geonetc::ops::layers() {
        assert!(docs.contains(&format!("`{}", def.name)), "no documentation names `{}`", def.name);
    }
}

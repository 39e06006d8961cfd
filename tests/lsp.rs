//! `geonetc lsp` driven over stdio with JSON-RPC and Content-Length framing, as an editor does.
//! Expected positions are counted by hand from the documents below (0-based lines, UTF-16
//! columns).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

struct Client {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    next_id: i64,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_geonetc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn geonetc lsp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        len = v.parse::<usize>().ok();
                    }
                }
                let mut body = vec![0; len.expect("Content-Length header")];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let v: Value = serde_json::from_slice(&body).expect("JSON body");
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut c = Client { child, stdin, rx, next_id: 1 };
        let init = c.request("initialize", json!({"capabilities": {}, "processId": null, "rootUri": null}));
        let caps = &init["result"]["capabilities"];
        assert_eq!(caps["hoverProvider"], json!(true), "{init}");
        assert_eq!(caps["definitionProvider"], json!(true));
        assert_eq!(caps["inlayHintProvider"], json!(true));
        assert!(caps["completionProvider"].is_object());
        c.notify("initialized", json!({}));
        c
    }

    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{}", body.len(), body).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn recv(&mut self) -> Value {
        self.rx.recv_timeout(Duration::from_secs(20)).expect("a message from the server within 20 s")
    }

    /// Sends a request and returns its response (skipping notifications in between).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let m = self.recv();
            if m["id"] == json!(id) {
                return m;
            }
        }
    }

    fn diagnostics(&mut self) -> Value {
        loop {
            let m = self.recv();
            if m["method"] == "textDocument/publishDiagnostics" {
                return m["params"].clone();
            }
        }
    }

    fn open(&mut self, uri: &str, text: &str) -> Value {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "geonet", "version": 1, "text": text}}),
        );
        self.diagnostics()
    }

    fn at(&mut self, method: &str, uri: &str, line: u32, character: u32) -> Value {
        self.request(
            method,
            json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}),
        )
    }

    fn shutdown(mut self) {
        let r = self.request("shutdown", Value::Null);
        assert!(r.get("error").is_none(), "{r}");
        self.notify("exit", Value::Null);
        let status = wait(&mut self.child);
        assert!(status.success(), "exit status {status:?}");
    }
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the server did not exit after `exit`");
}

const GOOD: &str = "\
block double_conv(c) = conv(c, kernel=3, pad=1) -> relu
model m {
    input x: [1, 64, 64]
    e1 = x -> conv(16, kernel=3, pad=1) -> relu
    e2 = e1 -> maxpool(2) -> double_conv(32)
    output e2
}
";

#[test]
fn diagnostics_on_open_and_change() {
    let mut c = Client::start();
    let uri = "file:///tmp/bad.geonet";
    // Line 3: `    y = x -> conv(4, kernel_size=3)`; `kernel_size` starts at column 21.
    let bad =
        "# é 𝄞\nmodel m {\n    input x: [1, 8, 8]\n    y = x -> conv(4, kernel_size=3)\n    output y\n}\n";
    let d = c.open(uri, bad);
    assert_eq!(d["uri"], uri);
    let diags = d["diagnostics"].as_array().expect("array");
    assert_eq!(diags.len(), 1, "{d}");
    assert_eq!(diags[0]["code"], "E0301");
    assert_eq!(diags[0]["severity"], 1);
    assert_eq!(diags[0]["source"], "geonetc");
    assert_eq!(diags[0]["range"]["start"], json!({"line": 3, "character": 21}));
    let msg = diags[0]["message"].as_str().unwrap_or("");
    assert!(msg.contains("kernel_size") && msg.contains("help:") && msg.contains("`kernel`"), "{msg}");

    // After a change that adds a comment line: the statement is on line 4 now. `kernel_size`
    // spans columns 21..32.
    let changed = bad.replace("model m {\n", "model m {\n    # 𝄞𝄞\n");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": changed}]}),
    );
    let d = c.diagnostics();
    let diags = d["diagnostics"].as_array().expect("array");
    assert_eq!(diags[0]["range"]["start"], json!({"line": 4, "character": 21}));
    assert_eq!(diags[0]["range"]["end"], json!({"line": 4, "character": 32}));

    // Fixed: no diagnostics.
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": changed.replace("kernel_size", "kernel")}]}),
    );
    let d = c.diagnostics();
    assert_eq!(d["diagnostics"], json!([]));
    c.shutdown();
}

#[test]
fn warnings_have_warning_severity() {
    let mut c = Client::start();
    // Unused binding `h` (W0002) on line 3, column 4.
    let d = c.open(
        "file:///tmp/w.geonet",
        "model m {\n    input x: [1, 8]\n    y = x -> relu\n    h = x -> relu\n    output y\n}\n",
    );
    let diags = d["diagnostics"].as_array().expect("array");
    assert_eq!(diags.len(), 1, "{d}");
    assert_eq!(diags[0]["code"], "W0002");
    assert_eq!(diags[0]["severity"], 2);
    assert_eq!(diags[0]["range"]["start"], json!({"line": 3, "character": 4}));
    c.shutdown();
}

#[test]
fn hover_shows_shapes_and_arithmetic() {
    let mut c = Client::start();
    let uri = "file:///tmp/good.geonet";
    let d = c.open(uri, GOOD);
    assert_eq!(d["diagnostics"], json!([]));

    // On the binding `e1` (line 3, column 4): [16, 64, 64]; receptive field 3×3.
    let h = c.at("textDocument/hover", uri, 3, 5);
    let text = h["result"]["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(text.contains("[16, 64, 64]"), "{text}");
    assert!(text.contains("receptive field: 3×3"), "{text}");
    assert_eq!(h["result"]["range"]["start"], json!({"line": 3, "character": 4}));

    // On a use of `e1` (line 4, `    e2 = e1 -> ...`, column 9): the same shape.
    let h = c.at("textDocument/hover", uri, 4, 10);
    let text = h["result"]["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(text.contains("[16, 64, 64]"), "{text}");

    // On `conv` (line 3, column 13): N_y = (64 + 2·1 − 3)/1 + 1 = 64 on both axes, 160 params.
    let h = c.at("textDocument/hover", uri, 3, 14);
    let text = h["result"]["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(text.contains("height: N_y = (64 + 2·1 − 3)/1 + 1 = 64"), "{text}");
    assert!(text.contains("width: N_y = (64 + 2·1 − 3)/1 + 1 = 64"), "{text}");
    assert!(text.contains("e1.conv0") && text.contains("parameters 160"), "{text}");

    // On `maxpool` (line 4, column 19): (64 + 0 − 2)/2 + 1 = 32.
    let h = c.at("textDocument/hover", uri, 4, 20);
    let text = h["result"]["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(text.contains("N_y = (64 + 2·0 − 2)/2 + 1 = 32"), "{text}");

    // On the block call `double_conv` (line 4, column 32): [32, 32, 32];
    // params 16·32·9 + 32 = 4640; two layers (conv, relu).
    let h = c.at("textDocument/hover", uri, 4, 33);
    let text = h["result"]["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(text.contains("block `double_conv(c)`"), "{text}");
    assert!(text.contains("output `[32, 32, 32]`") && text.contains("4640 parameters"), "{text}");

    // On the input `x` (line 2, column 10): accepted sizes (pool 2: any size ≥ 2 is accepted;
    // even sizes drop nothing).
    let h = c.at("textDocument/hover", uri, 2, 10);
    let text = h["result"]["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(text.contains("input `[1, 64, 64]`"), "{text}");
    assert!(text.contains("height accepts: any size ≥ 2; without dropped samples multiples of 2"), "{text}");

    // Nothing under the cursor (inside a number): null.
    let h = c.at("textDocument/hover", uri, 2, 16);
    assert_eq!(h["result"], Value::Null, "{h}");
    c.shutdown();
}

#[test]
fn definition_of_bindings_and_blocks() {
    let mut c = Client::start();
    let uri = "file:///tmp/good.geonet";
    c.open(uri, GOOD);
    // `e1` used on line 4 → bound on line 3, columns 4..6.
    let r = c.at("textDocument/definition", uri, 4, 10);
    assert_eq!(r["result"]["uri"], uri);
    assert_eq!(
        r["result"]["range"],
        json!({"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 6}})
    );
    // `x` used on line 3 (column 9) → `input x` on line 2, column 10.
    let r = c.at("textDocument/definition", uri, 3, 9);
    assert_eq!(r["result"]["range"]["start"], json!({"line": 2, "character": 10}));
    // `double_conv` called on line 4 → defined on line 0, columns 6..17.
    let r = c.at("textDocument/definition", uri, 4, 35);
    assert_eq!(
        r["result"]["range"],
        json!({"start": {"line": 0, "character": 6}, "end": {"line": 0, "character": 17}})
    );
    // `c` inside the block body (line 0, column 28) → the parameter at column 18.
    let r = c.at("textDocument/definition", uri, 0, 28);
    assert_eq!(r["result"]["range"]["start"], json!({"line": 0, "character": 18}));
    c.shutdown();
}

fn labels(r: &Value) -> Vec<String> {
    r["result"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["label"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[test]
fn completion_of_layers_attributes_and_keys() {
    let mut c = Client::start();
    let uri = "file:///tmp/typing.geonet";
    // Being typed: does not parse, completion must still work.
    let text = "block b(c) = relu\nmodel m {\n    input x: [1, 8, 8]\n    y = x -> conv(4, \n    z = x -> \n}\noptimizer sgd { \ntrain {\n    loss = \n    data = synthetic(\n}\n";
    c.open(uri, text);
    // Inside `conv(4, ` (line 3, column 21): conv's attributes.
    let l = labels(&c.at("textDocument/completion", uri, 3, 21));
    for k in ["kernel", "stride", "pad", "dilation", "bias", "init"] {
        assert!(l.contains(&k.to_string()), "{k} missing from {l:?}");
    }
    assert!(!l.contains(&"relu".to_string()));
    // After `->` (line 4, column 13): layers and the block `b`.
    let l = labels(&c.at("textDocument/completion", uri, 4, 13));
    for k in ["conv", "maxpool", "unet", "batchnorm", "b"] {
        assert!(l.contains(&k.to_string()), "{k} missing from {l:?}");
    }
    // In `optimizer sgd { ` (line 6, column 16): sgd's keys.
    let l = labels(&c.at("textDocument/completion", uri, 6, 16));
    assert_eq!(l, ["lr", "momentum", "nesterov", "weight_decay", "clip"]);
    // `loss = ` in train (line 8, column 11): the losses.
    let l = labels(&c.at("textDocument/completion", uri, 8, 11));
    assert_eq!(l, ["mse", "mae", "cross_entropy"]);
    // Inside `synthetic(` (line 9, column 21): its keys.
    let l = labels(&c.at("textDocument/completion", uri, 9, 21));
    assert_eq!(l, ["shape", "count", "noise", "seed"]);
    // At the start of a train line (line 8, column 4): the train keys.
    let l = labels(&c.at("textDocument/completion", uri, 8, 4));
    assert!(l.contains(&"epochs".to_string()) && l.contains(&"validate".to_string()), "{l:?}");
    c.shutdown();
}

#[test]
fn inlay_hints_give_binding_shapes() {
    let mut c = Client::start();
    let uri = "file:///tmp/good.geonet";
    c.open(uri, GOOD);
    let r = c.request(
        "textDocument/inlayHint",
        json!({"textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 99, "character": 0}}}),
    );
    let hints = r["result"].as_array().expect("array");
    let got: Vec<(Value, Value)> =
        hints.iter().map(|h| (h["position"].clone(), h["label"].clone())).collect();
    assert_eq!(
        got,
        vec![
            (json!({"line": 3, "character": 6}), json!(": [16, 64, 64]")),
            (json!({"line": 4, "character": 6}), json!(": [32, 32, 32]")),
        ]
    );
    // A range covering only line 4.
    let r = c.request(
        "textDocument/inlayHint",
        json!({"textDocument": {"uri": uri}, "range": {"start": {"line": 4, "character": 0}, "end": {"line": 5, "character": 0}}}),
    );
    assert_eq!(r["result"].as_array().map(Vec::len), Some(1));
    c.shutdown();
}

#[test]
fn formatting_and_unet_hover() {
    let mut c = Client::start();
    let uri = "file:///tmp/messy.geonet";
    let messy = "model m {\n  input x:[1,32,32]\n  y=x->unet(1,depth=4,base=4)\n  output y\n}\n";
    c.open(uri, messy);
    let r = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    let edits = r["result"].as_array().expect("edits");
    assert_eq!(edits.len(), 1, "{r}");
    assert_eq!(
        edits[0]["newText"],
        "model m {\n    input x: [1, 32, 32]\n    y = x -> unet(1, depth=4, base=4)\n    output y\n}\n"
    );
    // The whole document: from 0:0 to the end (line 5, column 0).
    assert_eq!(
        edits[0]["range"],
        json!({"start": {"line": 0, "character": 0}, "end": {"line": 5, "character": 0}})
    );
    // Hover on `unet` (line 2, `  y=x->unet(`, column 7): 4 encoder levels of 5 layers, a
    // bottleneck of 4, 4 decoder levels of 6, the head: 49 layers; sizes multiples of 2^4.
    let h = c.at("textDocument/hover", uri, 2, 8);
    let text = h["result"]["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(text.contains("built-in `unet`") && text.contains("49 layers"), "{text}");
    assert!(text.contains("output `[1, 32, 32]`"), "{text}");
    assert!(text.contains("input `x` height accepts: multiples of 16"), "{text}");
    // A document that does not parse: no edits.
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": "model m {\n y = = x\n}\n"}]}),
    );
    c.diagnostics();
    let r = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    assert_eq!(r["result"], Value::Null, "{r}");
    c.shutdown();
}

#[test]
fn unknown_requests_and_bad_input_do_not_crash() {
    let mut c = Client::start();
    let r = c.request("textDocument/frobnicate", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    // Malformed params: an error response, not a crash.
    let r = c.request("textDocument/hover", json!({"nonsense": true}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    // A document that is garbage, positions far outside it, an unknown document.
    c.open("file:///tmp/junk.geonet", "model {{{ ((( -> -> \u{0} 𝄞 \"unterminated\n]]]");
    for (line, ch) in [(0, 0), (0, 9), (1, 3), (50, 50)] {
        for m in ["textDocument/hover", "textDocument/definition", "textDocument/completion"] {
            let r = c.at(m, "file:///tmp/junk.geonet", line, ch);
            assert!(r.get("error").is_none(), "{m} {line}:{ch} → {r}");
        }
    }
    let r = c.at("textDocument/hover", "file:///tmp/never-opened.geonet", 0, 0);
    assert_eq!(r["result"], Value::Null);
    // Still alive.
    let r = c.at("textDocument/hover", "file:///tmp/junk.geonet", 0, 0);
    assert!(r.get("result").is_some());
    c.shutdown();
}

mod analysis_never_panics {
    use geonetc::lsp::analysis::{Analysis, completions, definition, hover, inlay_hints};
    use proptest::prelude::*;

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
            "conv",
            "relu",
            "unet",
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
            "é",
            "𝄞",
            "\"s",
            " ",
            "\n",
            "# c\n",
            "sgd",
            "data",
            "synthetic(",
            "concat",
        ]);
        prop::collection::vec(tokens, 0..50).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]
        #[test]
        fn on_any_text_and_offset(text in soup(), at in 0usize..400) {
            let a = Analysis::new(&text);
            let _ = hover(&a, at);
            let _ = definition(&a, at);
            let _ = completions(&a, at);
            let _ = inlay_hints(&a);
        }
    }

    #[test]
    fn on_a_checked_file_every_offset() {
        let text = super::GOOD;
        let a = Analysis::new(text);
        for at in 0..=text.len() + 2 {
            let _ = hover(&a, at);
            let _ = completions(&a, at);
            if let Some(span) = definition(&a, at) {
                assert!(span.end <= text.len());
            }
        }
    }
}

//! Every diagnostic code `check` can emit: a program that triggers it, and `geonetc explain`
//! prints its long form. The list of codes used by the checker is read from its source, so a
//! new code without a trigger here fails this test.

use geonetc::check::check_bytes;
use geonetc::diag::codes;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn model(body: &str) -> String {
    format!("model m {{\n{body}\n}}\n")
}

/// (constant name, code, a file that makes `check` emit it).
fn triggers() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, &'static str, Vec<u8>)> =
        text_triggers().into_iter().map(|(n, c, s)| (n, c, s.into_bytes())).collect();
    v.push(("NOT_UTF8", codes::NOT_UTF8, b"model m {\n  input x: [1, 8]  # \xff\n  output x\n}\n".to_vec()));
    v
}

fn text_triggers() -> Vec<(&'static str, &'static str, String)> {
    let deep = format!(
        "model m {{\n input x: [1, 8]\n y = x -> conv(1, kernel={}3{})\n output y\n}}\n",
        "(".repeat(300),
        ")".repeat(300)
    );
    vec![
        ("SYNTAX", codes::SYNTAX, model(" input x: [1, 8]\n y = = x\n output x")),
        (
            "LITERAL",
            codes::LITERAL,
            model(" input x: [1, 8]\n y = x -> conv(99999999999999999999, kernel=3)\n output y"),
        ),
        ("TOO_DEEP", codes::TOO_DEEP, deep),
        ("MODEL_COUNT", codes::MODEL_COUNT, "block b = relu\n".to_string()),
        (
            "DUPLICATE_ITEM",
            codes::DUPLICATE_ITEM,
            model(" input x: [4]\n output x") + "optimizer sgd { lr = 0.1 }\noptimizer sgd { lr = 0.1 }\n",
        ),
        ("UNBOUND", codes::UNBOUND, model(" input x: [1, 8]\n output z")),
        ("REBOUND", codes::REBOUND, model(" input x: [1, 8]\n y = x -> relu\n y = x -> relu\n output y")),
        (
            "UNKNOWN_LAYER",
            codes::UNKNOWN_LAYER,
            model(" input x: [1, 8]\n y = x -> convolution(4, kernel=3)\n output y"),
        ),
        (
            "RECURSION",
            codes::RECURSION,
            "block a(c) = b(c)\nblock b(c) = a(c)\n".to_string()
                + &model(" input x: [1, 8]\n y = x -> a(2)\n output y"),
        ),
        ("CALL_ARGS", codes::CALL_ARGS, model(" input x: [1, 8]\n y = x -> conv(4, 5, kernel=3)\n output y")),
        ("VALUE_KIND", codes::VALUE_KIND, model(" input x: [1, 8]\n y = x -> x\n output y")),
        ("INPUT_DECL", codes::INPUT_DECL, model(" input x: [1, 0]\n output x")),
        ("MISSING_OUTPUT", codes::MISSING_OUTPUT, model(" input x: [1, 8]")),
        (
            "UNKNOWN_ATTRIBUTE",
            codes::UNKNOWN_ATTRIBUTE,
            model(" input x: [1, 8]\n y = x -> conv(4, kernel_size=3)\n output y"),
        ),
        (
            "MISSING_ATTRIBUTE",
            codes::MISSING_ATTRIBUTE,
            model(" input x: [1, 8]\n y = x -> conv(4)\n output y"),
        ),
        (
            "BAD_VALUE",
            codes::BAD_VALUE,
            model(" input x: [1, 8]\n y = x -> conv(4, kernel=\"3\")\n output y"),
        ),
        (
            "DUPLICATE_ATTRIBUTE",
            codes::DUPLICATE_ATTRIBUTE,
            model(" input x: [1, 8]\n y = x -> conv(4, kernel=3, kernel=3)\n output y"),
        ),
        (
            "PAD_SAME",
            codes::PAD_SAME,
            model(" input x: [1, 8]\n y = x -> conv(4, kernel=2, pad=same)\n output y"),
        ),
        (
            "INIT_SHAPE",
            codes::INIT_SHAPE,
            model(" input x: [1, 8]\n y = x -> conv(1, kernel=3, init=[1, 2])\n output y"),
        ),
        (
            "EMPTY_OUTPUT",
            codes::EMPTY_OUTPUT,
            model(" input x: [1, 5, 5]\n y = x -> conv(4, kernel=7)\n output y"),
        ),
        ("RANK", codes::RANK, model(" input x: [1, 8]\n y = x -> conv2d(4, kernel=3)\n output y")),
        ("NOT_FLAT", codes::NOT_FLAT, model(" input x: [1, 8, 8]\n y = x -> dense(10)\n output y")),
        (
            "MERGE_SHAPES",
            codes::MERGE_SHAPES,
            model(" input x: [1, 8]\n a = x -> maxpool(2)\n y = concat(x, a)\n output y"),
        ),
        (
            "UNET_SIZE",
            codes::UNET_SIZE,
            model(" input x: [1, 100, 100]\n y = x -> unet(1, depth=3, base=8)\n output y"),
        ),
        (
            "OVERFLOW",
            codes::OVERFLOW,
            model(" input x: [1, 100000000]\n y = x -> upsample(100000000)\n output y"),
        ),
        (
            "ATTR_ARITY",
            codes::ATTR_ARITY,
            model(" input x: [1, 8, 8]\n y = x -> conv(4, kernel=(3, 3, 3))\n output y"),
        ),
        ("TENSOR_ARITHMETIC", codes::TENSOR_ARITHMETIC, model(" input x: [1, 8]\n y = x + x\n output y")),
        (
            "UNKNOWN_OPTIMIZER",
            codes::UNKNOWN_OPTIMIZER,
            model(" input x: [4]\n output x") + "optimizer adamw { lr = 0.1 }\n",
        ),
        (
            "UNKNOWN_KEY",
            codes::UNKNOWN_KEY,
            model(" input x: [4]\n output x") + "optimizer adam { learning_rate = 0.1 }\n",
        ),
        (
            "OUT_OF_RANGE",
            codes::OUT_OF_RANGE,
            model(" input x: [4]\n output x") + "optimizer adam { lr = -1 }\n",
        ),
        (
            "BAD_DATA",
            codes::BAD_DATA,
            model(" input x: [1, 8]\n y = x -> relu\n output y") + "train {\n data = csv(\"a\")\n}\n",
        ),
        (
            "DATA_SHAPE",
            codes::DATA_SHAPE,
            model(" input x: [1, 8]\n y = x -> relu\n output y")
                + "train {\n data = synthetic(shape = [1, 16])\n}\n",
        ),
        (
            "STRIDE_DROPS",
            codes::STRIDE_DROPS,
            model(" input x: [1, 5]\n y = x -> conv(1, kernel=2, stride=2)\n output y"),
        ),
        (
            "UNUSED_BINDING",
            codes::UNUSED_BINDING,
            model(" input x: [1, 8]\n y = x -> relu\n h = x -> relu\n output y"),
        ),
        (
            "UNUSED_BLOCK",
            codes::UNUSED_BLOCK,
            "block b = relu\n".to_string() + &model(" input x: [1, 8]\n output x"),
        ),
    ]
}

/// A safetensors file of F32 zeros, with metadata.
fn safetensors_file(tensors: &[(&str, &[usize])], meta: &[(&str, &str)]) -> Vec<u8> {
    use safetensors::{Dtype, tensor::TensorView};
    let data: Vec<Vec<u8>> =
        tensors.iter().map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()]).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (n.to_string(), TensorView::new(Dtype::F32, s.to_vec(), d).expect("view")))
        .collect();
    let meta: std::collections::HashMap<String, String> =
        meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    safetensors::serialize(views, Some(meta)).expect("serialize")
}

/// (constant name, code, program, weights file, RMS of the data at hand) for the weights check.
type WeightsTrigger = (&'static str, &'static str, String, Vec<u8>, Option<f64>);

fn weights_triggers() -> Vec<WeightsTrigger> {
    let src = model(" input x: [1, 8]\n y = x -> conv(2, kernel=3)\n output y");
    let w: &[usize] = &[2, 1, 3];
    let b: &[usize] = &[2];
    vec![
        (
            "WEIGHTS_NOT_SAFETENSORS",
            codes::WEIGHTS_NOT_SAFETENSORS,
            src.clone(),
            b"PK\x03\x04".to_vec(),
            None,
        ),
        (
            "WEIGHTS_MISSING",
            codes::WEIGHTS_MISSING,
            src.clone(),
            safetensors_file(&[("y.conv0.weight", w)], &[]),
            None,
        ),
        (
            "WEIGHTS_EXTRA",
            codes::WEIGHTS_EXTRA,
            src.clone(),
            safetensors_file(&[("y.conv0.weight", w), ("y.conv0.bias", b), ("z.conv0.bias", b)], &[]),
            None,
        ),
        (
            "WEIGHTS_SHAPE",
            codes::WEIGHTS_SHAPE,
            src.clone(),
            safetensors_file(&[("y.conv0.weight", &[1, 2, 3]), ("y.conv0.bias", b)], &[]),
            None,
        ),
        (
            "WEIGHTS_INPUT_SIZE",
            codes::WEIGHTS_INPUT_SIZE,
            src.clone(),
            safetensors_file(&[("y.conv0.weight", w), ("y.conv0.bias", b)], &[("input_shapes", "[[1, 64]]")]),
            None,
        ),
        (
            "WEIGHTS_DATA_RMS",
            codes::WEIGHTS_DATA_RMS,
            src,
            safetensors_file(&[("y.conv0.weight", w), ("y.conv0.bias", b)], &[("data_rms", "1")]),
            Some(5.0),
        ),
    ]
}

/// `codes::NAME` constants used by the checker and the parser (not the table itself).
fn codes_used_in_source() -> BTreeSet<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut used = BTreeSet::new();
    let re = regex::Regex::new(r"codes::([A-Z][A-Z0-9_]+)").expect("regex");
    for dir in ["check", "syntax", "diag", "weights"] {
        for e in std::fs::read_dir(root.join(dir)).expect("src dir").flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|f| f == "codes.rs" || f == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for c in re.captures_iter(&text) {
                if &c[1] != "ALL" {
                    used.insert(c[1].to_string());
                }
            }
        }
    }
    used
}

#[test]
fn every_code_check_emits_has_a_trigger() {
    let triggers = triggers();
    let weights = weights_triggers();
    let named: BTreeSet<String> =
        triggers.iter().map(|t| t.0.to_string()).chain(weights.iter().map(|t| t.0.to_string())).collect();
    let used = codes_used_in_source();
    let missing: Vec<&String> = used.difference(&named).collect();
    assert!(missing.is_empty(), "codes the checker uses without a trigger here: {missing:?}");
    // And every code in the table is one the checker can emit.
    let table: BTreeSet<&str> = codes::ALL.iter().map(|c| c.code).collect();
    let triggered: BTreeSet<&str> = triggers.iter().map(|t| t.1).chain(weights.iter().map(|t| t.1)).collect();
    assert_eq!(table, triggered, "the table of codes and the triggers differ");
    for (name, code, src, bytes, rms) in &weights {
        let program = check_bytes(src.as_bytes()).program.expect("the weights triggers' program checks");
        let kind = geonetc::weights::WeightsKind::Weights;
        let got: Vec<&str> = geonetc::weights::check_weights(&program, src, bytes, "w", kind, *rms)
            .iter()
            .map(|d| d.code)
            .collect();
        assert!(got.contains(code), "{name} ({code}) not emitted by the weights check; got {got:?}");
    }
    for (name, code, src) in &triggers {
        let out = check_bytes(src);
        let got: Vec<&str> = out.diagnostics.iter().map(|d| d.code).collect();
        assert!(
            got.contains(code),
            "{name} ({code}) not emitted; got {got:?} for\n{}",
            String::from_utf8_lossy(src)
        );
    }
}

#[test]
fn explain_prints_every_code() {
    for info in codes::ALL {
        let out =
            Command::new(env!("CARGO_BIN_EXE_geonetc")).args(["explain", info.code]).output().expect("run");
        assert!(out.status.success(), "{}", info.code);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(&format!("{}: {}", info.code, info.title)), "{text}");
        assert!(text.len() > info.title.len() + 40, "{}: explanation too short", info.code);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc")).args(["explain", "E9999"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

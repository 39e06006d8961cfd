//! `geonetc diff`: snapshot tests on pairs of examples (read every `.snap` before accepting),
//! exit codes as diff(1), and the copies that must diff as equal (formatted, bindings renamed).

// Only the binary runner of the shared helpers is used here.
#[allow(dead_code)]
mod common;
use common::geonetc;

use geonetc::check::check_source;
use geonetc::diff::{Change, diff, to_table};
use std::path::Path;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn program(source: &str) -> geonetc::check::program::Program {
    let out = check_source(source);
    out.program.unwrap_or_else(|| panic!("does not check: {:?}", out.diagnostics))
}

fn table(a: &str, b: &str, na: &str, nb: &str) -> String {
    to_table(&diff(&program(a), &program(b)), na, nb)
}

/// Replaces a whole identifier (not inside a longer one).
fn rename(source: &str, from: &str, to: &str) -> String {
    let re = regex::Regex::new(&format!(r"\b{from}\b")).expect("regex");
    re.replace_all(source, to).into_owned()
}

/// `source` with its layout changed: a comment on every line, wider spacing, a line break in
/// each pipeline.
fn reformatted(source: &str) -> String {
    source
        .lines()
        .map(|l| {
            let l = l.replace(" -> ", "   ->\n        ").replace(", ", " ,  ");
            if l.trim().is_empty() || l.trim_end().ends_with('{') || l.contains('#') {
                l
            } else {
                format!("{l}   # note")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const EXAMPLES: &[&str] = &[
    "blocks.geonet",
    "classifier.geonet",
    "dncnn.geonet",
    "seed_edge_filter.geonet",
    "seed_pad_stride.geonet",
    "trace_denoiser.geonet",
    "unet_builtin.geonet",
    "unet_s.geonet",
];

#[test]
fn formatted_and_reformatted_copies_are_equal() {
    for name in EXAMPLES {
        let src = example(name);
        let canonical = geonetc::fmt::format_source(&src).expect("formats");
        let messy = reformatted(&src);
        for copy in [&canonical, &messy] {
            let d = diff(&program(&src), &program(copy));
            assert!(d.is_equal(), "{name}: {}\n{copy}", to_table(&d, "a", "b"));
            assert!(d.renamed.is_empty());
        }
    }
}

#[test]
fn renamed_bindings_are_equal() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("unet_s.geonet", &[("e1", "enc1"), ("u2", "up2"), ("y", "out")]),
        ("dncnn.geonet", &[("noise", "residual")]),
        ("blocks.geonet", &[("a", "first"), ("d", "trace_features")]),
        // (`noise` is also a setting of its synthetic data: only the input is renamed.)
        ("trace_denoiser.geonet", &[("trace", "tr")]),
    ];
    for (name, renames) in cases {
        let src = example(name);
        let mut copy = src.clone();
        for (from, to) in *renames {
            copy = rename(&copy, from, to);
        }
        assert_ne!(copy, src);
        let d = diff(&program(&src), &program(&copy));
        assert!(d.is_equal(), "{name}: {}", to_table(&d, "a", "b"));
    }
}

#[test]
fn a_renamed_binding_with_other_attributes_is_paired_and_changed() {
    let src = example("dncnn.geonet");
    let copy = rename(&src, "noise", "n").replace("conv(1, kernel=3", "conv(1, kernel=5");
    let d = diff(&program(&src), &program(&copy));
    assert_eq!(d.renamed, vec![("noise".to_string(), "n".to_string())]);
    // The conv (kernel, pad, params, FLOPs, receptive field) and the sub after it (receptive field).
    assert_eq!(d.layers.len(), 2, "{}", to_table(&d, "a", "b"));
    assert_eq!(d.layers[0].change, Change::Changed);
    assert_eq!(d.layers[0].a.as_ref().map(|s| s.name.as_str()), Some("noise.conv3"));
    assert_eq!(d.layers[0].b.as_ref().map(|s| s.name.as_str()), Some("n.conv3"));
}

#[test]
fn a_renamed_binding_with_other_layers_is_removed_and_added() {
    let src = example("dncnn.geonet");
    let copy = rename(&src, "noise", "n")
        .replace("conv(1, kernel=3, pad=same)", "conv(1, kernel=3, pad=same) -> tanh");
    let d = diff(&program(&src), &program(&copy));
    assert!(d.renamed.is_empty());
    assert!(d.layers.iter().any(|l| l.change == Change::Removed));
    assert!(d.layers.iter().any(|l| l.change == Change::Added));
}

#[test]
fn unet_s_against_the_builtin_unet() {
    let t = table(
        &example("unet_s.geonet"),
        &example("unet_builtin.geonet"),
        "unet_s.geonet",
        "unet_builtin.geonet",
    );
    insta::assert_snapshot!(t);
}

#[test]
fn unet_s_with_wider_encoder_and_new_settings() {
    let a = example("unet_s.geonet");
    let b = a
        .replace("e1 = x  -> conv(16, kernel=3, pad=1)", "e1 = x  -> conv(24, kernel=5, pad=2)")
        .replace(
            "y  = d1 -> conv(1, kernel=1)",
            "y  = d1 -> conv(8, kernel=3, pad=1) -> relu -> conv(1, kernel=1)",
        )
        .replace("lr = 1e-3", "lr = 3e-4")
        .replace("epochs = 2", "epochs = 20");
    let d = diff(&program(&a), &program(&b));
    insta::assert_snapshot!(to_table(&d, "unet_s.geonet", "unet_s_wide.geonet"));
    insta::assert_json_snapshot!(geonetc::diff::to_json(&d, "unet_s.geonet", "unet_s_wide.geonet"));
}

#[test]
fn classifier_with_another_head_and_input() {
    let a = example("classifier.geonet");
    let b = a
        .replace("[3, 64, 64]", "[3, 32, 32]")
        .replace("-> dense(100) -> relu\n", "-> dense(64) -> relu -> dropout(0.5)\n")
        .replace("sgd { lr = 0.01, momentum = 0.9, nesterov = true }", "adam { lr = 0.001 }");
    insta::assert_snapshot!(table(&a, &b, "classifier.geonet", "classifier_small.geonet"));
}

#[test]
fn dncnn_against_the_trace_denoiser() {
    let t = table(
        &example("dncnn.geonet"),
        &example("trace_denoiser.geonet"),
        "dncnn.geonet",
        "trace_denoiser.geonet",
    );
    insta::assert_snapshot!(t);
}

#[test]
fn exit_status_is_that_of_diff() {
    let (code, out, _) = geonetc(&["diff", "examples/unet_s.geonet", "examples/unet_s.geonet"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("are the same model"), "{out}");
    let (code, out, _) =
        geonetc(&["diff", "examples/unet_s.geonet", "examples/unet_builtin.geonet", "--format", "json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["equal"], false);
    assert!(json["layers"].as_array().is_some_and(|l| !l.is_empty()));
    let (code, _, err) = geonetc(&["diff", "examples/unet_s.geonet", "examples/errors/two_errors.geonet"]);
    assert_eq!(code, 2);
    assert!(err.contains("E0404") && err.contains("has errors"), "{err}");
    let (code, _, err) = geonetc(&["diff", "examples/unet_s.geonet", "no/such.geonet"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: cannot read no/such.geonet"), "{err}");
}

//! Repetition (`cbr(64) * 15`): it expands exactly as the written-out calls (same layer names,
//! shapes, parameter counts and checkpoint tensor names), its count is checked before anything
//! is expanded, and a diagnostic inside it says which repetition failed.

use geonetc::check::{CheckOutput, check_source};
use geonetc::diag::Diagnostic;
use geonetc::ir;
use geonetc::lsp::analysis::{Analysis, hover};

const CBR: &str = "block cbr(c) = conv(c, kernel=3, pad=same) -> batchnorm -> relu\n";

fn dncnn17(middle: &str) -> String {
    format!(
        "{CBR}model dncnn17 {{\n    input x: [1, 40, 40]\n    noise = x -> conv(64, kernel=3, pad=same) -> relu{middle}\n        -> conv(1, kernel=3, pad=same)\n    output sub(x, noise)\n}}\n"
    )
}

fn errors(out: &CheckOutput) -> Vec<&Diagnostic> {
    out.diagnostics.iter().filter(|d| d.is_error()).collect()
}

/// (name, shape, params) of every layer, and the checkpoint tensor names with their shapes.
type Summary = (Vec<(String, Vec<usize>, usize)>, Vec<(String, Vec<usize>)>);

fn summary(src: &str) -> Summary {
    let out = check_source(src);
    let program = out.program.unwrap_or_else(|| panic!("{:#?}", out.diagnostics));
    let layers = program.model.layers.iter().map(|l| (l.name.clone(), l.shape.clone(), l.params)).collect();
    let graph = ir::lower(&program, 1);
    let tensors = graph.params().iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    (layers, tensors)
}

#[test]
fn dncnn17_repeated_is_the_written_out_network() {
    let written = dncnn17(&"\n        -> cbr(64)".repeat(15));
    let repeated = dncnn17(" -> cbr(64) * 15");
    let (wl, wt) = summary(&written);
    let (rl, rt) = summary(&repeated);
    assert_eq!(wl, rl);
    assert_eq!(wt, rt);
    // By hand: 1→64 conv 640, fifteen × (64→64 conv 36,928 + batchnorm 128), 64→1 conv 577.
    let params: usize = rl.iter().map(|l| l.2).sum();
    assert_eq!(params, 640 + 15 * (36_928 + 128) + 577);
    assert_eq!(params, 557_057);
    let names: Vec<&str> = rl.iter().map(|l| l.0.as_str()).collect();
    assert!(names.contains(&"noise.cbr0.conv0") && names.contains(&"noise.cbr14.batchnorm0"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("noise.cbr15")), "{names:?}");
    let tensor_names: Vec<&str> = rt.iter().map(|t| t.0.as_str()).collect();
    for t in ["noise.cbr14.conv0.weight", "noise.cbr7.batchnorm0.running_var", "noise.conv1.bias"] {
        assert!(tensor_names.contains(&t), "{t} missing from {tensor_names:?}");
    }
}

#[test]
fn a_repeated_group_and_a_count_from_a_block_parameter() {
    // `(a -> b) * 2` is `a -> b -> a -> b`; `conv(..) * n` inside a block takes n from the call.
    let repeated = "block stack(n) = conv(4, kernel=3, pad=same) * n\nmodel m {\n    input x: [1, 8, 8]\n    y = x -> (conv(4, kernel=3, pad=same) -> relu) * 2 -> stack(3)\n    output y\n}\n";
    let written = "block stack(n) = conv(4, kernel=3, pad=same) -> conv(4, kernel=3, pad=same) -> conv(4, kernel=3, pad=same)\nmodel m {\n    input x: [1, 8, 8]\n    y = x -> conv(4, kernel=3, pad=same) -> relu -> conv(4, kernel=3, pad=same) -> relu -> stack(3)\n    output y\n}\n";
    assert_eq!(summary(repeated), summary(written));
    let names: Vec<String> = summary(repeated).0.into_iter().map(|l| l.0).collect();
    assert_eq!(
        names,
        ["y.conv0", "y.relu0", "y.conv1", "y.relu1", "y.stack0.conv0", "y.stack0.conv1", "y.stack0.conv2"]
    );
}

fn single_error(src: &str) -> Diagnostic {
    let out = check_source(src);
    let errs = errors(&out);
    assert_eq!(errs.len(), 1, "{:#?}", out.diagnostics);
    errs[0].clone()
}

fn model(line: &str) -> String {
    format!("{CBR}model m {{\n    input x: [1, 8, 8]\n    {line}\n    output y\n}}\n")
}

#[test]
fn counts_that_are_not_positive_integers_are_located_errors() {
    for (count, found) in [("0", "found 0"), ("-2", "found -2"), ("2.5", "2.5"), ("(1-1)", "found 0")] {
        let src = model(&format!("y = x -> cbr(4) * {count}"));
        let d = single_error(&src);
        assert_eq!(&src[d.primary.span.clone()], count, "{d:?}");
        assert!(d.message.contains("positive integer") && d.message.contains(found), "{d:?}");
    }
}

#[test]
fn a_huge_count_is_refused_before_expanding() {
    let src = model("y = x -> cbr(4) * 1000000000");
    let start = std::time::Instant::now();
    let d = single_error(&src);
    assert!(start.elapsed().as_secs() < 5);
    assert_eq!(&src[d.primary.span.clone()], "1000000000");
    assert!(d.message.contains("at most 10000"), "{d:?}");
    // The largest allowed count expands (and checks) normally.
    let ok = check_source(&model("y = x -> relu() * 10000"));
    assert_eq!(ok.program.map(|p| p.model.layers.len()), Some(10_000));
}

#[test]
fn an_error_inside_says_which_repetition_failed() {
    // 8 → 6 → 4 → 2 → empty: the fourth of five 3×3 convolutions fails.
    let src = model("y = x -> conv(4, kernel=3) * 5");
    let d = single_error(&src);
    // The primary label is on the attribute at fault inside the repeated call.
    assert_eq!(&src[d.primary.span.clone()], "kernel=3", "{d:?}");
    let label = d.secondary.iter().find(|l| l.message == "in repetition 4 of 5");
    assert_eq!(label.map(|l| &src[l.span.clone()]), Some("5"), "{d:?}");

    // Inside a repeated block call: the block's call site and the repetition are both named.
    let src = "block shrink(c) = conv(c, kernel=3)\nmodel m {\n    input x: [1, 8, 8]\n    y = x -> shrink(4) * 5\n    output y\n}\n";
    let d = single_error(src);
    let messages: Vec<&str> = d.secondary.iter().map(|l| l.message.as_str()).collect();
    assert!(messages.contains(&"in repetition 4 of 5"), "{d:?}");
    assert!(messages.contains(&"in this call of `shrink`"), "{d:?}");
}

#[test]
fn arithmetic_that_is_no_repetition_keeps_its_error_with_a_hint() {
    let d = single_error(&model("y = x -> relu * 2"));
    assert!(d.help.as_deref().is_some_and(|h| h.contains("`relu() * 2`")), "{d:?}");
    let d = single_error(&model("y = x -> 2 * relu()"));
    assert!(d.help.as_deref().is_some_and(|h| h.contains("`relu(...) * N`")), "{d:?}");
    // A value times a number is still arithmetic on values.
    let d = single_error(&model("a = x -> relu()\n    y = a * 2"));
    assert!(d.message.contains("not on values"), "{d:?}");
}

#[test]
fn fmt_keeps_a_repetition_and_spaces_it() {
    let src = model("y = x->cbr(4)*3->(conv(4,kernel=3,pad=same)->relu)*(1+1)");
    let once = geonetc::fmt::format_source(&src).expect("formats");
    assert!(once.contains("y = x -> cbr(4) * 3 -> (conv(4, kernel=3, pad=same) -> relu) * (1+1)"), "{once}");
    assert_eq!(geonetc::fmt::format_source(&once).expect("formats"), once);
}

#[test]
fn hover_on_a_repeated_block_call_shows_all_its_layers() {
    let src = dncnn17(" -> cbr(64) * 15 -> cbr(64)");
    let a = Analysis::new(&src);
    let at = src.find("cbr(64) * 15").expect("call") + 1;
    let (text, _) = hover(&a, at).expect("hover");
    assert!(text.contains("repeated 15 times: `noise.cbr0` … `noise.cbr14`"), "{text}");
    assert!(text.contains("45 layers") && text.contains("555840 parameters"), "{text}");
    // The call after the repetition is the sixteenth instance.
    let at = src.find("cbr(64)\n").expect("last call") + 1;
    let (text, _) = hover(&a, at).expect("hover");
    assert!(!text.contains("repeated"), "{text}");
    assert!(text.contains("3 layers") && text.contains("37056 parameters"), "{text}");
}

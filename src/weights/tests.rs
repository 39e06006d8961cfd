//! One test per problem the weights check names; the tensors are built here, not by `run`.

use super::*;
use crate::check::check_source;
use crate::diag::line_column;
use safetensors::tensor::TensorView;

const SOURCE: &str = "model m {
    input x: [2, 16, 16]
    a = x -> conv(8, kernel=3, pad=1) -> relu
    u = a -> upconv(4, kernel=2, stride=2)
    y = u -> conv(1, kernel=1, bias=false)
    output y
}
";

/// A safetensors file of F32 zeros of the given shapes.
fn file(tensors: &[(&str, &[usize])], meta: &[(&str, &str)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> =
        tensors.iter().map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()]).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (n.to_string(), TensorView::new(Dtype::F32, s.to_vec(), d).expect("view")))
        .collect();
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    safetensors::serialize(views, Some(meta)).expect("serialize")
}

/// The tensors this model needs, correct.
fn fitting() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("a.conv0.weight", vec![8, 2, 3, 3]),
        ("a.conv0.bias", vec![8]),
        ("u.upconv0.weight", vec![4, 8, 2, 2]),
        ("u.upconv0.bias", vec![4]),
        ("y.conv0.weight", vec![1, 4, 1, 1]),
    ]
}

fn run(tensors: &[(&str, Vec<usize>)], meta: &[(&str, &str)], rms: Option<f64>) -> Vec<Diagnostic> {
    let out = check_source(SOURCE);
    let program = out.program.expect("the test model checks");
    let refs: Vec<(&str, &[usize])> = tensors.iter().map(|(n, s)| (*n, s.as_slice())).collect();
    check_weights(&program, SOURCE, &file(&refs, meta), "w.safetensors", WeightsKind::Weights, rms)
}

fn line_of(d: &Diagnostic) -> usize {
    line_column(SOURCE, d.primary.span.start).0
}

#[test]
fn fitting_weights_have_no_diagnostics() {
    assert_eq!(run(&fitting(), &[], None), vec![]);
}

#[test]
fn missing_tensor_is_named_on_its_layer_line() {
    let t: Vec<_> = fitting().into_iter().filter(|(n, _)| *n != "u.upconv0.bias").collect();
    let d = run(&t, &[], None);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, codes::WEIGHTS_MISSING);
    assert!(d[0].message.contains("`u.upconv0.bias`"), "{}", d[0].message);
    assert_eq!(line_of(&d[0]), 4);
    assert!(d[0].help.is_some());
}

#[test]
fn renamed_layer_is_suggested() {
    let mut t = fitting();
    t[0].0 = "enc.conv0.weight";
    let d = run(&t, &[], None);
    let missing = d.iter().find(|d| d.code == codes::WEIGHTS_MISSING).expect("missing");
    assert!(missing.help.as_deref().unwrap_or("").contains("`enc.conv0.weight`"), "{:?}", missing.help);
    assert!(d.iter().any(|d| d.code == codes::WEIGHTS_EXTRA));
}

#[test]
fn extra_tensor_is_named() {
    let mut t = fitting();
    t.push(("z.dense0.weight", vec![3, 3]));
    let d = run(&t, &[], None);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, codes::WEIGHTS_EXTRA);
    assert!(d[0].message.contains("`z.dense0.weight`"));
    assert_eq!(line_of(&d[0]), 1, "points at the model");
}

#[test]
fn a_bias_the_layer_lacks_points_at_the_layer() {
    let mut t = fitting();
    t.push(("y.conv0.bias", vec![1]));
    let d = run(&t, &[], None);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, codes::WEIGHTS_EXTRA);
    assert_eq!(line_of(&d[0]), 5);
    assert!(d[0].help.as_deref().unwrap_or("").contains("bias=false"));
}

#[test]
fn transposed_kernel_is_recognised() {
    let mut t = fitting();
    t[2].1 = vec![8, 4, 2, 2]; // PyTorch's ConvTranspose layout [in, out, k, k]
    let d = run(&t, &[], None);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, codes::WEIGHTS_SHAPE);
    assert_eq!(line_of(&d[0]), 4);
    assert!(
        d[0].message.contains("[8, 4, 2, 2]") && d[0].message.contains("[4, 8, 2, 2]"),
        "{}",
        d[0].message
    );
    assert!(d[0].help.as_deref().unwrap_or("").contains("transposed"), "{:?}", d[0].help);
}

#[test]
fn another_channel_count_is_recognised() {
    // Weights of the same model with conv(16) in `a`: its weight, its bias and the upconv's input.
    let mut t = fitting();
    t[0].1 = vec![16, 2, 3, 3];
    t[1].1 = vec![16];
    t[2].1 = vec![4, 16, 2, 2];
    let d = run(&t, &[], None);
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d.iter().all(|d| d.code == codes::WEIGHTS_SHAPE));
    assert!(d[0].help.as_deref().unwrap_or("").contains("16 output channels"), "{:?}", d[0].help);
    assert!(d[2].help.as_deref().unwrap_or("").contains("16 input channels"), "{:?}", d[2].help);
    assert_eq!((line_of(&d[0]), line_of(&d[2])), (3, 4));
}

#[test]
fn not_safetensors_is_one_error() {
    let program = check_source(SOURCE).program.expect("checks");
    for bytes in [&b""[..], b"hello, world", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'"] {
        let d = check_weights(&program, SOURCE, bytes, "w.pt", WeightsKind::Weights, None);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, codes::WEIGHTS_NOT_SAFETENSORS);
        assert!(d[0].message.starts_with("w.pt is not a safetensors file"));
        assert_eq!(line_of(&d[0]), 1);
    }
}

#[test]
fn other_training_size_and_rms_are_warnings() {
    let meta = [(META_INPUT_SHAPES, "[[2, 64, 64]]"), (META_DATA_RMS, "1.0")];
    let d = run(&fitting(), &meta, Some(3.0));
    let codes_found: Vec<&str> = d.iter().map(|d| d.code).collect();
    assert_eq!(codes_found, vec![codes::WEIGHTS_INPUT_SIZE, codes::WEIGHTS_DATA_RMS], "{d:?}");
    assert!(d.iter().all(|d| !d.is_error()));
    assert_eq!(line_of(&d[0]), 2, "on the input declaration");
    // The same size and an RMS within 10 % say nothing.
    let meta = [(META_INPUT_SHAPES, "[[2, 16, 16]]"), (META_DATA_RMS, "1.0")];
    assert_eq!(run(&fitting(), &meta, Some(1.05)), vec![]);
}

#[test]
fn checkpoint_names_are_prefixed_and_optimizer_state_ignored() {
    let program = check_source(SOURCE).program.expect("checks");
    let shapes = fitting();
    let names: Vec<String> = shapes.iter().map(|(n, _)| format!("param/{n}")).collect();
    let mut t: Vec<(&str, &[usize])> =
        names.iter().zip(&shapes).map(|(n, (_, s))| (n.as_str(), s.as_slice())).collect();
    t.push(("opt/a.conv0.weight/0", &[144]));
    let bytes = file(&t, &[]);
    let d = check_weights(&program, SOURCE, &bytes, "c.ckpt", WeightsKind::Checkpoint, None);
    assert_eq!(d, vec![]);
    let d = check_weights(&program, SOURCE, &bytes, "c.ckpt", WeightsKind::Weights, None);
    assert!(d.iter().any(|d| d.code == codes::WEIGHTS_MISSING));
}

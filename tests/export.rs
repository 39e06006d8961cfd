//! ONNX export, checked by running the exported model in tract (a pure-Rust ONNX runtime) and
//! comparing with the interpreter (the oracle `geonetc infer --backend interp` runs) on random
//! inputs and random parameters: relative error ≤ 1e-5. Every example, every peer model in
//! `../shared/peers/` (skipped when absent), and programs that use every op in 1-D and 2-D.

use geonetc::check::check_source;
use geonetc::check::check_source_with_inputs;
use geonetc::check::program::Program;
use geonetc::export::{self, Dim};
use geonetc::ir::{self, Params};
use geonetc::ops::{Op, ParamRole};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::prelude::*;

const TOLERANCE: f64 = 1e-5;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Random parameters: weights as initialised, biases and batchnorm state random, so every
/// tensor's placement in the ONNX graph matters.
fn random_params(graph: &ir::Graph, rng: &mut ChaCha8Rng) -> Params {
    let mut params = ir::init_params(graph, 7);
    for (info, p) in graph.params().iter().zip(params.iter_mut()) {
        let is_bn = matches!(graph.node(info.node).op, Op::BatchNorm(_));
        match info.role {
            ParamRole::Weight if !is_bn => {}
            ParamRole::RunningVar => p.mapv_inplace(|_| rng.random_range(0.5..2.0)),
            ParamRole::Weight => p.mapv_inplace(|_| rng.random_range(0.5..1.5)),
            _ => p.mapv_inplace(|_| rng.random_range(-0.5..0.5)),
        }
    }
    params
}

/// Rounds to f32 (what the ONNX model computes in), kept as f64 for the interpreter.
fn random_input(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0) as f64)
}

/// Runs the model in tract at the inputs' sizes. `value_info` is dropped first: tract unifies
/// its symbolic dimensions strictly with the concrete input sizes given here (`batch` against
/// 2). The `value_info` shapes are checked by `value_info_has_every_layer_and_symbolic_axes` and
/// by ONNX's own shape inference (`onnx.checker` with `full_check`) in scripts/onnx_check.py.
fn run_tract(onnx: &[u8], inputs: &[ArrayD<f64>]) -> TractResult<Vec<ArrayD<f64>>> {
    use prost::Message;
    let mut proto = export::onnx::ModelProto::decode(onnx)?;
    if let Some(g) = proto.graph.as_mut() {
        g.value_info.clear();
    }
    let onnx = proto.encode_to_vec();
    let mut model = tract_onnx::onnx().model_for_read(&mut &onnx[..])?;
    for (i, x) in inputs.iter().enumerate() {
        model = model.with_input_fact(i, InferenceFact::dt_shape(f32::datum_type(), x.shape()))?;
    }
    let plan = model.into_optimized()?.into_runnable()?;
    let tensors: TVec<TValue> = inputs
        .iter()
        .map(|x| {
            let data: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            Tensor::from_shape(x.shape(), &data).map(|t| t.into())
        })
        .collect::<TractResult<_>>()?;
    let outputs = plan.run(tensors)?;
    outputs
        .iter()
        .map(|t| {
            let view = t.to_plain_array_view::<f32>()?;
            Ok(ArrayD::from_shape_vec(IxDyn(view.shape()), view.iter().map(|&v| v as f64).collect())?)
        })
        .collect()
}

/// max |a − b| / max |b|.
fn relative_error(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    diff / b.iter().map(|v| v.abs()).fold(1e-12, f64::max)
}

/// Exports `source` at its declared size and compares tract with the interpreter there and,
/// when the export made spatial axes symbolic, at twice the size.
fn export_and_compare(name: &str, source: &str) -> f64 {
    let program = check_source(source).program.unwrap_or_else(|| panic!("{name} does not check"));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let params = random_params(&ir::lower(&program, 1), &mut rng);
    let model = export::to_onnx(&program, &params).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bytes = export::encode(&model);
    let mut worst = compare_at(name, &program, &params, &bytes, &mut rng);
    let dims = export::symbolic_dims(&program);
    let other: Vec<Vec<usize>> = program
        .model
        .inputs
        .iter()
        .zip(&dims.inputs)
        .map(|(t, d)| {
            let mut s = t.shape.clone();
            for (a, n) in s.iter_mut().enumerate().skip(1) {
                if matches!(d[a + 1], Dim::Symbol(_)) {
                    *n *= 2;
                }
            }
            s
        })
        .collect();
    if other.iter().zip(&program.model.inputs).any(|(s, t)| *s != t.shape)
        && let Some(bigger) = check_source_with_inputs(source, Some(&other)).program
        // (A `dense` after `flatten` would need other weights at another size.)
        && ir::lower(&bigger, 1).params().iter().zip(&params).all(|(p, a)| p.shape == a.shape())
    {
        worst = worst.max(compare_at(&format!("{name} at {other:?}"), &bigger, &params, &bytes, &mut rng));
    }
    worst
}

fn compare_at(name: &str, program: &Program, params: &Params, onnx: &[u8], rng: &mut ChaCha8Rng) -> f64 {
    let graph = ir::lower(program, 2);
    let inputs: Vec<ArrayD<f64>> = graph.inputs().iter().map(|s| random_input(s, rng)).collect();
    let mut p = params.clone();
    let tape = geonetc::interp::forward(&graph, &mut p, &inputs, false, 0);
    let expected = geonetc::interp::outputs(&graph, &inputs, &tape);
    let got = run_tract(onnx, &inputs).unwrap_or_else(|e| panic!("{name}: tract: {e:?}"));
    assert_eq!(got.len(), expected.len(), "{name}");
    let mut worst = 0.0f64;
    for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
        let err = relative_error(g, e);
        assert!(err <= TOLERANCE, "{name}: output {k} relative error {err:e}");
        worst = worst.max(err);
    }
    worst
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(manifest().join("tests/fixtures").join(name)).expect("fixture")
}

#[test]
fn every_op_in_2d_matches_the_interpreter() {
    export_and_compare("ops2d", &fixture("onnx_ops2d.geonet"));
}

#[test]
fn every_op_in_1d_matches_the_interpreter() {
    export_and_compare("ops1d", &fixture("onnx_ops1d.geonet"));
}

#[test]
fn every_example_matches_the_interpreter() {
    let mut n = 0;
    for e in std::fs::read_dir(manifest().join("examples")).expect("examples").flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "geonet") {
            let src = std::fs::read_to_string(&p).expect("read");
            let err = export_and_compare(&p.display().to_string(), &src);
            eprintln!("{}: relative error {err:.2e}", p.display());
            n += 1;
        }
    }
    assert!(n >= 8, "examples found: {n}");
}

#[test]
fn every_peer_model_matches_the_interpreter() {
    let dir = manifest().join("../shared/peers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} is absent", dir.display());
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "geonet") {
            let Ok(src) = std::fs::read_to_string(&p) else { continue };
            let err = export_and_compare(&p.display().to_string(), &src);
            eprintln!("{}: relative error {err:.2e}", p.display());
        }
    }
}

#[test]
fn value_info_has_every_layer_and_symbolic_axes() {
    let src = std::fs::read_to_string(manifest().join("examples/unet_s.geonet")).expect("read");
    let program = check_source(&src).program.expect("checks");
    let graph = ir::lower(&program, 1);
    let model = export::to_onnx(&program, &ir::init_params(&graph, 1)).expect("export");
    let g = model.graph.expect("graph");
    assert_eq!(g.value_info.len(), program.model.layers.len());
    let dims = |v: &export::onnx::ValueInfoProto| -> Vec<String> {
        use export::onnx::tensor_shape_proto::dimension::Value as D;
        use export::onnx::type_proto::Value as T;
        let Some(T::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone()) else { return vec![] };
        t.shape
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(D::DimValue(n)) => n.to_string(),
                        Some(D::DimParam(p)) => p.clone(),
                        None => "?".into(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // unet_s takes multiples of 4: height and width are symbols, the batch too.
    assert_eq!(dims(&g.input[0]), ["batch", "1", "x_height", "x_width"]);
    let e2 = g.value_info.iter().find(|v| v.name.as_deref() == Some("e2.conv0")).expect("e2.conv0");
    assert_eq!(dims(e2), ["batch", "32", "x_height/2", "x_width/2"]);
    assert_eq!(dims(&g.output[0]), ["batch", "1", "x_height", "x_width"]);
    // Node and initializer names are the layer and tensor names.
    assert!(
        g.node.iter().any(|n| n.name.as_deref() == Some("e1.conv0") && n.op_type.as_deref() == Some("Conv"))
    );
    assert!(
        g.initializer
            .iter()
            .any(|t| t.name.as_deref() == Some("u2.upconv0.weight") && t.dims == [64, 32, 2, 2])
    );
}

fn geonetc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(args)
        .current_dir(manifest())
        .output()
        .expect("run geonetc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geonetc-export-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The CLI end to end: weights written as `run` writes them, `export --weights`, tract on the
/// file against `geonetc infer --backend interp` on the same .npy.
#[test]
fn cli_export_matches_cli_infer() {
    let dir = temp_dir("cli");
    let src = std::fs::read_to_string(manifest().join("examples/dncnn.geonet")).expect("read");
    let program = check_source(&src).program.expect("checks");
    let graph = ir::lower(&program, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let params = random_params(&graph, &mut rng);
    let weights = dir.join("dncnn.safetensors");
    geonetc::runtime::checkpoint::save_weights(&weights, &graph, &params, Default::default()).expect("save");
    let onnx = dir.join("dncnn.onnx");
    let (w, o) = (weights.to_str().expect("utf8"), onnx.to_str().expect("utf8"));
    let (code, _, err) = geonetc(&["export", "examples/dncnn.geonet", "--weights", w, "--output", o]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("opset 17") && err.contains("x_height"), "{err}");
    let x = random_input(&[1, 1, 64, 64], &mut rng);
    let input = dir.join("x.npy");
    let output = dir.join("y.npy");
    geonetc::runtime::data::write_npy(&input, &x).expect("npy");
    let (i, out) = (input.to_str().expect("utf8"), output.to_str().expect("utf8"));
    let (code, _, err) = geonetc(&[
        "infer",
        "examples/dncnn.geonet",
        "--weights",
        w,
        "--input",
        i,
        "--output",
        out,
        "--backend",
        "interp",
    ]);
    assert_eq!(code, 0, "{err}");
    let expected = geonetc::runtime::data::read_npy(&output).expect("read");
    let got = run_tract(&std::fs::read(&onnx).expect("onnx"), &[x]).expect("tract");
    let err = relative_error(&got[0], &expected);
    assert!(err <= TOLERANCE, "relative error {err:e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_export_refuses_what_it_cannot_do() {
    let dir = temp_dir("refuse");
    let before = std::fs::read(manifest().join("examples/dncnn.geonet")).expect("read");
    // Overwriting the program is refused, and the program is left untouched.
    let (code, _, err) = geonetc(&["export", "examples/dncnn.geonet", "--output", "examples/./dncnn.geonet"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("would overwrite"), "{err}");
    assert_eq!(std::fs::read(manifest().join("examples/dncnn.geonet")).expect("read"), before);
    // Layers without `init` need weights.
    let out = dir.join("m.onnx");
    let o = out.to_str().expect("utf8");
    let (code, _, err) = geonetc(&["export", "examples/dncnn.geonet", "--output", o]);
    assert_eq!(code, 2);
    assert!(err.contains("--weights"), "{err}");
    assert!(!out.exists());
    // A model whose every layer has an `init` exports without them.
    let (code, _, err) = geonetc(&["export", "examples/seed_edge_filter.geonet", "--output", o]);
    assert_eq!(code, 0, "{err}");
    assert!(Path::new(&out).exists());
    // Weights that do not fit: diagnostics, exit 1, nothing written.
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not safetensors").expect("write");
    let out2 = dir.join("n.onnx");
    let (code, _, err) = geonetc(&[
        "export",
        "examples/dncnn.geonet",
        "--weights",
        bad.to_str().expect("utf8"),
        "--output",
        out2.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E0601"), "{err}");
    assert!(!out2.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

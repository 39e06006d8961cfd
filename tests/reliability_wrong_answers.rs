//! Issue 15, wrong answers: inference checks the model only (not the train block); NaN never
//! reads as a great SNR; bad class indices, empty data, wrong-rank targets, two-input models,
//! mismatched resumes, damaged `data_rms` and oversized data are clear errors.

use geonetc::runtime::data::{snr_db, snr_from_energies};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

mod common;
use common::{geonetc, s};

fn tmp(name: &str) -> PathBuf {
    common::tmp("rel-wrong", name)
}

fn npy(path: &Path, shape: &[usize], f: impl Fn(usize) -> f32) {
    let n: usize = shape.iter().product();
    let a = ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(f).collect()).unwrap();
    ndarray_npy::write_npy(path, &a).unwrap();
}

const TRACE_MODEL: &str = "model t {
    input trace: [1, 64]
    n = trace -> conv(4, kernel=7, pad=same) -> relu -> conv(1, kernel=7, pad=same)
    output sub(trace, n)
}
";

const TRACE_TRAIN: &str = "optimizer rmsprop { lr = 1e-3 }
train {
    data   = synthetic(shape = [1, 64], count = 32, noise = 0.3, seed = 3)
    batch  = 8
    epochs = 1
    save   = \"t.safetensors\"
}
";

#[test]
fn inference_does_not_depend_on_the_train_block() {
    let d = tmp("train-block");
    let with = d.join("with.geonet");
    let without = d.join("without.geonet");
    std::fs::write(&with, format!("{TRACE_MODEL}{TRACE_TRAIN}")).unwrap();
    std::fs::write(&without, TRACE_MODEL).unwrap();
    let (code, _, err) = geonetc(&["run", s(&with), "--backend", "interp"]);
    assert_eq!(code, 0, "{err}");
    let w = d.join("t.safetensors");
    // A trace of 1,751 samples (the SU gather's length) though the train block says 64.
    let x = d.join("x.npy");
    npy(&x, &[1, 1751], |i| ((i * 37) % 101) as f32 / 50.0 - 1.0);
    let (ya, yb) = (d.join("a.npy"), d.join("b.npy"));
    for (prog, y) in [(&with, &ya), (&without, &yb)] {
        let (code, _, err) =
            geonetc(&["infer", s(prog), "--weights", s(&w), "--input", s(&x), "--output", s(y)]);
        assert_eq!(code, 0, "{}: {err}", prog.display());
    }
    let a = std::fs::read(&ya).unwrap();
    assert_eq!(a, std::fs::read(&yb).unwrap(), "the train block changed the output");
    let y: ArrayD<f32> = ndarray_npy::read_npy(&ya).unwrap();
    assert_eq!(y.shape(), &[1, 1751]);

    // A section (1,501 samples per trace) through a 2-D model whose train block says 16×16,
    // and training data that does not exist where inference runs.
    let model = "model s {\n    input x: [1, 16, 16]\n    y = x -> conv(1, kernel=3, pad=same, bias=false, init=[[0, 0, 0], [0, 1, 0], [0, 0, 0]])\n    output y\n}\n";
    let train = "train {\n    data = npy(input = \"missing_x.npy\", target = \"missing_t.npy\")\n}\n";
    let (sa, sb) = (d.join("sa.geonet"), d.join("sb.geonet"));
    std::fs::write(&sa, format!("{model}{train}")).unwrap();
    std::fs::write(&sb, model).unwrap();
    let section = d.join("section.npy");
    npy(&section, &[1501, 7], |i| (i % 13) as f32 - 6.0);
    let (oa, ob) = (d.join("oa.npy"), d.join("ob.npy"));
    for (prog, y) in [(&sa, &oa), (&sb, &ob)] {
        let (code, _, err) = geonetc(&["infer", s(prog), "--input", s(&section), "--output", s(y)]);
        assert_eq!(code, 0, "{}: {err}", prog.display());
    }
    assert_eq!(std::fs::read(&oa).unwrap(), std::fs::read(&ob).unwrap());
    // The identity kernel gives the section back (the blending weights sum to one).
    let back: ArrayD<f32> = ndarray_npy::read_npy(&oa).unwrap();
    let orig: ArrayD<f32> = ndarray_npy::read_npy(&section).unwrap();
    assert!(back.iter().zip(orig.iter()).all(|(a, b)| (a - b).abs() < 1e-5));
}

#[test]
fn nan_is_never_a_good_snr_and_exact_is_infinite() {
    // By definition 10·log10(signal/error): error 0 is +inf, NaN stays NaN.
    assert_eq!(snr_from_energies(4.0, 0.0), f64::INFINITY);
    assert!(snr_from_energies(4.0, f64::NAN).is_nan());
    assert!((snr_from_energies(100.0, 1.0) - 20.0).abs() < 1e-12);
    let clean = ArrayD::from_elem(IxDyn(&[4]), 1.0);
    let nan = ArrayD::from_elem(IxDyn(&[4]), f64::NAN);
    assert!(snr_db(&clean, &nan).is_nan());

    let d = tmp("snr");
    let prog = d.join("id.geonet");
    std::fs::write(
        &prog,
        "model id {\n    input x: [1, 8, 8]\n    y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n    output y\n}\n",
    )
    .unwrap();
    let clean = d.join("clean.npy");
    npy(&clean, &[20, 10], |i| (i % 7) as f32 - 3.0);
    // clean == noisy: the SNR is infinite, printed as such.
    let (code, out, err) = geonetc(&["eval", s(&prog), "--clean", s(&clean), "--noisy", s(&clean)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SNR noisy        inf dB"), "{out}");
    // A NaN in the noisy data: the noisy SNR says NaN, and the NaN output is an error, never
    // ~3,000 dB.
    let noisy = d.join("noisy.npy");
    npy(&noisy, &[20, 10], |i| if i == 17 { f32::NAN } else { (i % 7) as f32 - 3.0 });
    let (code, out, err) = geonetc(&["eval", s(&prog), "--clean", s(&clean), "--noisy", s(&noisy)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("3030") && !err.contains("3030"), "{out}{err}");
    assert!(err.contains("NaN or infinite"), "{err}");
}

fn classifier(d: &Path, targets: &[f64], loss: &str) -> (i32, String) {
    let x = d.join("x.npy");
    npy(&x, &[targets.len(), 1, 8], |i| (i % 5) as f32);
    let t = d.join("t.npy");
    ndarray_npy::write_npy(&t, &ArrayD::from_shape_vec(IxDyn(&[targets.len()]), targets.to_vec()).unwrap())
        .unwrap();
    let prog = d.join("c.geonet");
    std::fs::write(
        &prog,
        format!(
            "model c {{\n    input x: [1, 8]\n    y = x -> flatten -> dense(3)\n    output y\n}}\ntrain {{\n    data = npy(input = \"x.npy\", target = \"t.npy\")\n    loss = {loss}\n    epochs = 1\n}}\n"
        ),
    )
    .unwrap();
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
    (code, err)
}

#[test]
fn bad_class_indices_and_wrong_rank_targets_are_data_errors() {
    for (targets, bad) in [
        (vec![0.0, 1.0, 7.0, 2.0], "target 2 is 7"),
        (vec![1e300, 1.0], "target 0 is 1"),
        (vec![0.0, -1.0], "target 1 is -1"),
        (vec![0.5, 1.0], "target 0 is 0.5"),
    ] {
        let d = tmp("classes");
        let (code, err) = classifier(&d, &targets, "cross_entropy");
        assert_eq!(code, 2, "{targets:?}: {err}");
        assert!(err.contains("t.npy") && err.contains(bad) && err.contains("0 to 2"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!d.join("c.safetensors").exists());
    }
    let d = tmp("classes-ok");
    let (code, err) = classifier(&d, &[0.0, 1.0, 2.0, 2.0], "cross_entropy");
    assert_eq!(code, 0, "{err}");
    // Class indices for mse: the wrong rank, a data error rather than a panic.
    let d = tmp("rank");
    let (code, err) = classifier(&d, &[0.0, 1.0, 2.0], "mse");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("t.npy") && err.contains("model output is [3]"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn training_on_no_samples_writes_nothing() {
    let d = tmp("empty");
    npy(&d.join("x.npy"), &[0, 1, 8], |_| 0.0);
    npy(&d.join("t.npy"), &[0, 1, 8], |_| 0.0);
    let prog = d.join("e.geonet");
    std::fs::write(
        &prog,
        "model e {\n    input x: [1, 8]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y\n}\ntrain {\n    data = npy(input = \"x.npy\", target = \"t.npy\")\n}\n",
    )
    .unwrap();
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no samples"), "{err}");
    let written: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("safetensors") || n.contains("metrics"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}

#[test]
fn two_input_models_are_refused_by_infer_on_both_backends() {
    let d = tmp("two-inputs");
    let prog = d.join("two.geonet");
    std::fs::write(
        &prog,
        "model two {\n    input a: [1, 8]\n    input b: [1, 8]\n    y = add(a, b) -> conv(1, kernel=1, bias=false, init=[[1]])\n    output y\n}\n",
    )
    .unwrap();
    let x = d.join("x.npy");
    npy(&x, &[1, 8], |i| i as f32);
    for backend in ["interp", "jit"] {
        let y = d.join(format!("y_{backend}.npy"));
        let (code, _, err) =
            geonetc(&["infer", s(&prog), "--backend", backend, "--input", s(&x), "--output", s(&y)]);
        assert_eq!(code, 2, "{backend}: {err}");
        assert!(err.contains("2 inputs") && !err.contains("panicked"), "{err}");
        assert!(!y.exists());
    }
}

const RESUMABLE: &str = "model r {
    input t: [1, 16]
    y = t -> conv(2, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)
    output y
}
optimizer OPT
train {
    data   = synthetic(count = 16, noise = 0.5, seed = 2)
    batch  = 4
    epochs = 1
    seed   = SEED
    save   = \"r.safetensors\"
}
";

#[test]
fn resume_refuses_a_checkpoint_of_another_run() {
    let d = tmp("resume");
    let prog = d.join("r.geonet");
    let write = |opt: &str, seed: &str| {
        std::fs::write(&prog, RESUMABLE.replace("OPT", opt).replace("SEED", seed)).unwrap();
    };
    write("sgd { lr = 0.01, momentum = 0.9 }", "1");
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
    assert_eq!(code, 0, "{err}");
    let ckpt = d.join("r.ckpt.safetensors");
    let saved = std::fs::read(&ckpt).unwrap();
    // RMSProp also has one slot per parameter of the same size: only the fingerprint tells.
    write("rmsprop { lr = 0.01 }", "1");
    let (code, _, err) =
        geonetc(&["run", s(&prog), "--backend", "interp", "--epochs", "2", "--resume", s(&ckpt)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("different run") && err.contains("optimizer"), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), saved);
    write("sgd { lr = 0.01, momentum = 0.9 }", "2");
    let (code, _, err) =
        geonetc(&["run", s(&prog), "--backend", "interp", "--epochs", "2", "--resume", s(&ckpt)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("seed (checkpoint 1, now 2)") && !err.contains("optimizer"), "{err}");
    // The same run resumes.
    write("sgd { lr = 0.01, momentum = 0.9 }", "1");
    let (code, _, err) =
        geonetc(&["run", s(&prog), "--backend", "interp", "--epochs", "2", "--resume", s(&ckpt)]);
    assert_eq!(code, 0, "{err}");
}

/// A weights file for the 1×1 identity conv with the given `data_rms` metadata.
fn identity_weights(path: &Path, data_rms: &str) {
    let one = 1f32.to_le_bytes();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 1, 1, 1], &one).unwrap();
    let meta = std::collections::HashMap::from([("data_rms".to_string(), data_rms.to_string())]);
    let bytes = safetensors::serialize(vec![("y.conv0.weight", view)], Some(meta)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_data_rms_is_an_error_not_nan_output() {
    let d = tmp("rms");
    let prog = d.join("id.geonet");
    std::fs::write(
        &prog,
        "model id {\n    input x: [1, 8, 8]\n    y = x -> conv(1, kernel=1, bias=false)\n    output y\n}\n",
    )
    .unwrap();
    let x = d.join("x.npy");
    npy(&x, &[12, 9], |i| (i % 5) as f32 - 2.0);
    for bad in ["inf", "NaN", "-1", "0", "1e300", "abc"] {
        let w = d.join("w.safetensors");
        identity_weights(&w, bad);
        let y = d.join("y.npy");
        let (code, _, err) =
            geonetc(&["infer", s(&prog), "--weights", s(&w), "--input", s(&x), "--output", s(&y)]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("data_rms") && err.contains("w.safetensors"), "{err}");
        assert!(!y.exists());
    }
    // A sane one scales the section to it and back: the identity model gives the input back.
    let w = d.join("w.safetensors");
    identity_weights(&w, "0.7");
    let y = d.join("y.npy");
    let (code, _, err) =
        geonetc(&["infer", s(&prog), "--weights", s(&w), "--input", s(&x), "--output", s(&y)]);
    assert_eq!(code, 0, "{err}");
    let a: ArrayD<f32> = ndarray_npy::read_npy(&y).unwrap();
    let b: ArrayD<f32> = ndarray_npy::read_npy(&x).unwrap();
    assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-5));
}

#[test]
fn empty_sections_are_one_line_errors() {
    let d = tmp("empty-section");
    let prog = d.join("id.geonet");
    std::fs::write(
        &prog,
        "model id {\n    input x: [1, 8, 8]\n    y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n    output y\n}\n",
    )
    .unwrap();
    for shape in [[0usize, 5], [5, 0]] {
        let x = d.join("x.npy");
        npy(&x, &shape, |_| 0.0);
        let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&x), "--output", s(&d.join("y.npy"))]);
        assert_eq!(code, 2, "{shape:?}: {err}");
        assert!(err.contains("empty") && err.lines().count() == 1, "{err}");
        let (code, _, err) = geonetc(&["eval", s(&prog), "--clean", s(&x), "--noisy", s(&x)]);
        assert_eq!(code, 2, "{shape:?}: {err}");
        assert!(err.contains("empty") && err.lines().count() == 1, "{err}");
    }
}

#[test]
fn oversized_data_and_options_are_refused_before_allocating() {
    let d = tmp("oversized");
    let prog = d.join("big.geonet");
    std::fs::write(
        &prog,
        "model b {\n    input x: [1, 4096, 4096]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y\n}\ntrain {\n    data = synthetic(count = 16777216, noise = 0.1)\n}\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("memory"), "{err}");
    assert!(started.elapsed().as_secs() < 30);
    for threads in ["0", "5000"] {
        let (code, _, err) = geonetc(&["check", "examples/trace_denoiser.geonet"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = geonetc(&["run", s(&prog), "--threads", threads]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("1..=1024") || err.contains("1024"), "{err}");
    }
    let (code, _, err) =
        geonetc(&["bench", "examples/trace_denoiser.geonet", "--batch", "18446744073709551615"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = geonetc(&["bench", "examples/trace_denoiser.geonet", "--steps", "0"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn the_interpreter_checks_memory_before_allocating() {
    let src = "model big {\n    input x: [1, 4096, 4096]\n    y = x -> conv(4096, kernel=3, pad=same) -> conv(1, kernel=3, pad=same)\n    output y\n}\n";
    let program = geonetc::check::check_source(src).program.unwrap();
    let graph = geonetc::ir::lower(&program, 64);
    // 64 × 4096 channels × 4096² values in f64 is about 35 TB: refused, nothing allocated.
    let err = match geonetc::runtime::engine::Engine::new(&graph, geonetc::runtime::engine::Backend::Interp) {
        Ok(_) => panic!("a 35 TB model was accepted"),
        Err(e) => e,
    };
    assert!(err.contains("MB") && err.contains("batch 64"), "{err}");
}

/// A big-endian SEG-Y rev 1 file of int32 samples (format 2).
fn write_int32_segy(path: &Path, traces: &[Vec<i32>]) {
    let ns = traces[0].len();
    let mut bytes = vec![b' '; 3200];
    let mut bin = [0u8; 400];
    bin[16..18].copy_from_slice(&4000u16.to_be_bytes());
    bin[20..22].copy_from_slice(&(ns as u16).to_be_bytes());
    bin[24..26].copy_from_slice(&2u16.to_be_bytes());
    bin[300..302].copy_from_slice(&0x0100u16.to_be_bytes());
    bin[302..304].copy_from_slice(&1u16.to_be_bytes());
    bytes.extend_from_slice(&bin);
    for (i, t) in traces.iter().enumerate() {
        let mut h = [0u8; 240];
        h[0..4].copy_from_slice(&(i as i32 + 1).to_be_bytes());
        h[114..116].copy_from_slice(&(ns as u16).to_be_bytes());
        h[116..118].copy_from_slice(&4000u16.to_be_bytes());
        bytes.extend_from_slice(&h);
        for v in t {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn int32_samples_beyond_2_pow_24_stay_exact_on_the_interpreter_and_are_noted_on_the_jit() {
    let d = tmp("int32");
    let prog = d.join("id.geonet");
    std::fs::write(
        &prog,
        "model id {\n    input x: [1, 8, 8]\n    y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n    output y\n}\n",
    )
    .unwrap();
    let small: Vec<Vec<i32>> = (0..9).map(|t| (0..10).map(|k| t * 100 + k).collect()).collect();
    let input = d.join("small.sgy");
    write_int32_segy(&input, &small);
    let out = d.join("out.sgy");
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&input), "--output", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("2^24"), "{err}");
    // Small integers pass through the identity model exactly.
    let f = geonetc::seismic::segy::SeismicFile::open(&out).unwrap();
    let want: Vec<f32> = small.iter().flatten().map(|&v| v as f32).collect();
    assert_eq!(f.section().expect("section").iter().copied().collect::<Vec<f32>>(), want);
    // Beyond ±2^24 (odd values there are not f32 numbers): the interpreter computes in f64 end
    // to end and gives them back exactly; the JIT (f32) says that it rounds them.
    let big: Vec<Vec<i32>> =
        (0..9).map(|t| (0..10).map(|k| (1 << 25) + 1 + 2 * (t * 10 + k)).collect()).collect();
    write_int32_segy(&input, &big);
    let (code, _, err) =
        geonetc(&["infer", s(&prog), "--backend", "interp", "--input", s(&input), "--output", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("2^24"), "{err}");
    let f = geonetc::seismic::segy::SeismicFile::open(&out).unwrap();
    let want: Vec<f64> = big.iter().flatten().map(|&v| v as f64).collect();
    assert_eq!(f.section_f64().iter().copied().collect::<Vec<f64>>(), want);
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&input), "--output", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2^24") && err.contains("small.sgy") && err.contains("--backend interp"), "{err}");
}

//! Training and inference end to end: the seed filter through `infer`, `run` outputs, exact
//! resume (after an epoch and mid-epoch after a Ctrl-C), divergence, weight-file mismatches,
//! inputs of sizes the model cannot take directly.

use geonetc::check::check_source;
use geonetc::runtime::engine::Backend;
use geonetc::runtime::train::{self, TrainError, TrainOptions};
use geonetc::runtime::{checkpoint, data, infer};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geonetc-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn geonetc(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

const TINY: &str = "model tiny {
    input t: [1, 64]
    n = t -> conv(4, kernel=5, pad=same) -> batchnorm -> relu -> dropout(0.1) -> conv(1, kernel=3, pad=same)
    output sub(t, n)
}
optimizer adam { lr = 1e-2 }
train {
    data = synthetic(count = 40, noise = 0.5, seed = 4)
    batch = 8
    epochs = 4
    validate = 0.2
    seed = 9
    save = \"tiny.safetensors\"
}
";

fn opts(epochs: Option<usize>, out: &Path, resume: Option<PathBuf>, stop: bool) -> TrainOptions {
    TrainOptions {
        epochs,
        out_dir: Some(out.to_path_buf()),
        resume,
        stop: Arc::new(AtomicBool::new(stop)),
        progress_bar: false,
        backend: Backend::Jit,
    }
}

fn weights(path: &Path, src: &str) -> Vec<ArrayD<f64>> {
    let p = check_source(src).program.unwrap();
    let g = geonetc::ir::lower(&p, 1);
    checkpoint::load_weights(path, &g).unwrap().0
}

#[test]
fn seed_edge_filter_infers_the_slide_exactly() {
    let d = tmp("seed");
    let image: Vec<f32> = [
        [1, 0, 0, 0, 0, 1],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 1, 0, 1, 0],
    ]
    .iter()
    .flatten()
    .map(|&v| v as f32)
    .collect();
    let a = ArrayD::from_shape_vec(IxDyn(&[1, 6, 6]), image).unwrap();
    let input = d.join("image.npy");
    ndarray_npy::write_npy(&input, &a).unwrap();
    let output = d.join("s.npy");
    let (code, err) = geonetc(&[
        "infer",
        "examples/seed_edge_filter.geonet",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let s: ArrayD<f32> = ndarray_npy::read_npy(&output).unwrap();
    assert_eq!(s.shape(), &[1, 4, 4]);
    let want = [3., -1., -3., -1., -3., 1., 0., -3., -3., -3., 0., 1., 3., -2., -2., -1.];
    assert_eq!(s.iter().copied().collect::<Vec<f32>>(), want);
}

#[test]
fn run_writes_weights_metrics_and_checkpoint() {
    let d = tmp("run");
    let file = d.join("tiny.geonet");
    std::fs::write(&file, TINY).unwrap();
    let (code, err) = geonetc(&["run", file.to_str().unwrap(), "--backend", "interp", "--epochs", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("epoch 2/2") && err.contains("val SNR"), "{err}");
    let metrics = std::fs::read_to_string(d.join("tiny.metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let w = weights(&d.join("tiny.safetensors"), TINY);
    assert_eq!(w.len(), 8); // conv0 (weight, bias), batchnorm0 (weight, bias, running mean, var), conv1 (weight, bias)
    assert!(d.join("tiny.ckpt.safetensors").exists());
}

#[test]
fn resume_continues_exactly_after_an_epoch_and_mid_epoch() {
    let src = TINY;
    let program = check_source(src).program.unwrap();
    let base = tmp("resume-base");
    let mut quiet = |_: &str| {};
    // Uninterrupted: 4 epochs.
    let a = tmp("resume-a");
    train::train(&program, &base, &opts(None, &a, None, false), &mut quiet).unwrap();
    // 2 epochs, then resume to 4.
    let b = tmp("resume-b");
    let r = train::train(&program, &base, &opts(Some(2), &b, None, false), &mut quiet).unwrap();
    train::train(&program, &base, &opts(Some(4), &b, Some(r.checkpoint), false), &mut quiet).unwrap();
    assert_eq!(weights(&a.join("tiny.safetensors"), src), weights(&b.join("tiny.safetensors"), src));
    // Ctrl-C after the first step, then resume.
    let c = tmp("resume-c");
    let r = train::train(&program, &base, &opts(None, &c, None, true), &mut quiet).unwrap();
    assert!(r.interrupted);
    assert!(r.epochs.is_empty());
    let r = train::train(&program, &base, &opts(None, &c, Some(r.checkpoint), false), &mut quiet).unwrap();
    assert!(!r.interrupted);
    assert_eq!(r.epochs.len(), 4);
    assert_eq!(weights(&a.join("tiny.safetensors"), src), weights(&c.join("tiny.safetensors"), src));
}

#[test]
fn a_diverging_run_stops_and_leaves_the_earlier_weights_alone() {
    let d = tmp("nan");
    let file = d.join("tiny.geonet");
    std::fs::write(&file, TINY).unwrap();
    let (code, err) = geonetc(&["run", file.to_str().unwrap(), "--backend", "interp", "--epochs", "1"]);
    assert_eq!(code, 0, "{err}");
    let good = std::fs::read(d.join("tiny.safetensors")).unwrap();
    std::fs::write(&file, TINY.replace("optimizer adam { lr = 1e-2 }", "optimizer sgd { lr = 1e30 }"))
        .unwrap();
    let (code, err) = geonetc(&["run", file.to_str().unwrap(), "--backend", "interp"]);
    assert_eq!(code, 1, "{err}");
    // The weights in the folder are an earlier run's: the message must not call them this run's.
    assert!(err.contains("the loss became") && err.contains("This run saved no weights"), "{err}");
    assert_eq!(std::fs::read(d.join("tiny.safetensors")).unwrap(), good);
}

#[test]
fn run_without_train_block_is_an_error_with_help() {
    let (code, err) = geonetc(&["run", "examples/classifier.geonet"]);
    assert_eq!(code, 1);
    assert!(err.contains("no `train` block") && err.contains("help:"), "{err}");
}

#[test]
fn weights_that_do_not_fit_are_named() {
    let d = tmp("mismatch");
    let file = d.join("tiny.geonet");
    std::fs::write(&file, TINY).unwrap();
    assert_eq!(geonetc(&["run", file.to_str().unwrap(), "--backend", "interp", "--epochs", "1"]).0, 0);
    let other = d.join("other.geonet");
    std::fs::write(&other, "model o {\n input t: [1, 64]\n n = t -> conv(4, kernel=3, pad=same) -> conv(2, kernel=1) -> conv(1, kernel=1)\n output n\n}\n").unwrap();
    let x = d.join("x.npy");
    ndarray_npy::write_npy(&x, &ArrayD::<f32>::zeros(IxDyn(&[1, 64]))).unwrap();
    let (code, err) = geonetc(&[
        "infer",
        other.to_str().unwrap(),
        "--backend",
        "interp",
        "--weights",
        d.join("tiny.safetensors").to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--output",
        d.join("y.npy").to_str().unwrap(),
    ]);
    // The weights check runs first: one located diagnostic per tensor, exit 1.
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E0602") && err.contains("`n.conv2.weight`"), "{err}");
    assert!(err.contains("E0604") && err.contains("[4, 1, 5]") && err.contains("[4, 1, 3]"), "{err}");
    assert!(err.contains("E0603") && err.contains("`n.batchnorm0.running_mean`"), "{err}");
    assert!(!d.join("y.npy").exists());
}

#[test]
fn inputs_of_any_size_are_padded_and_cropped_back() {
    let src = "model u {\n input x: [1, 16, 16]\n y = x -> unet(1, depth=2, base=2)\n output y\n}\n";
    let program = check_source(src).program.unwrap();
    let declared = program.model.inputs[0].shape.clone();
    let g = geonetc::ir::lower(&program, 1);
    let params = geonetc::ir::init_params(&g, 3);
    let load = move |_: &geonetc::ir::Graph| Ok(params.clone());
    let x = ArrayD::from_shape_fn(IxDyn(&[1, 10, 13]), |i| (i[1] * 13 + i[2]) as f64 / 100.0);
    let y = infer::run(src, Some(&load), &x, &declared, Backend::Jit).unwrap();
    assert_eq!(y.shape(), &[1, 10, 13]);
    // The 10×13 input was mirrored to 12×16 (multiples of 4), run, and cropped: equal to
    // running the padded input by hand and cropping.
    let prepared = infer::prepare(src, &[1, 10, 13]).unwrap();
    assert_eq!(prepared.padded, vec![1, 12, 16]);
    let batched =
        infer::run(src, Some(&load), &x.clone().insert_axis(ndarray::Axis(0)), &declared, Backend::Jit)
            .unwrap();
    assert_eq!(batched.index_axis(ndarray::Axis(0), 0), y.view());
    assert!(y.iter().all(|v| v.is_finite()));
    assert!(
        infer::run(src, Some(&load), &ArrayD::zeros(IxDyn(&[2, 16, 16])), &declared, Backend::Jit).is_err()
    );
}

#[test]
fn npy_data_is_validated_with_file_names() {
    let d = tmp("npy");
    let x = d.join("x.npy");
    let t = d.join("t.npy");
    ndarray_npy::write_npy(&x, &ArrayD::<f32>::zeros(IxDyn(&[5, 1, 8]))).unwrap();
    ndarray_npy::write_npy(&t, &ArrayD::<f64>::zeros(IxDyn(&[4, 1, 8]))).unwrap();
    let err = data::npy(&x, &t, &[1, 8], &[1, 8]).unwrap_err();
    assert!(err.contains("t.npy") && err.contains("4 targets for 5 inputs"), "{err}");
    let err = data::npy(&x, &t, &[1, 9], &[1, 9]).unwrap_err();
    assert!(err.contains("x.npy"), "{err}");
    std::fs::write(&t, b"not an npy").unwrap();
    assert!(data::npy(&x, &t, &[1, 8], &[1, 8]).unwrap_err().contains("t.npy"));
    let _ = TrainError::Io(String::new());
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    let d = tmp("sigint");
    let file = d.join("tiny.geonet");
    std::fs::write(&file, TINY.replace("count = 40", "count = 20000").replace("epochs = 4", "epochs = 50"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(["run", file.to_str().unwrap(), "--backend", "interp"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has started (the data set is built first), then interrupt.
    let ckpt = d.join("tiny.ckpt.safetensors");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Exit 130 like other tools stopped by SIGINT, so `run … && infer …` does not go on.
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: checkpoint saved"), "{err}");
    assert!(ckpt.exists());
    // Finish the interrupted epoch and no more.
    let done = err.lines().filter(|l| l.starts_with("epoch ")).count();
    let until = (done + 1).to_string();
    let (code, err) = geonetc(&[
        "run",
        file.to_str().unwrap(),
        "--backend",
        "interp",
        "--epochs",
        &until,
        "--resume",
        ckpt.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming from") && err.contains(&format!("epoch {until}/{until}")), "{err}");
    assert_eq!(err.matches("train loss").count(), 1, "{err}");
}

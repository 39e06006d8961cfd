//! Issue 15, clear answers: what a diverged run really saved, output locations checked before
//! the first epoch, `--epochs 0` and finished resumes claim nothing, precise messages for
//! directories, plot extensions and shrinking models, the run summary on stdout, reproducible
//! weights files with provenance, and JSON from `check --format json` on I/O errors.

use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

mod common;
use common::{geonetc, s};

fn tmp(name: &str) -> PathBuf {
    common::tmp("rel-clear", name)
}

const TINY: &str = "model tiny {
    input t: [1, 32]
    y = t -> conv(2, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)
    output y
}
optimizer OPT
train {
    data     = synthetic(count = 24, noise = 0.5, seed = 4)
    batch    = 8
    epochs   = 2
    validate = 0.25
    seed     = 9
    save     = \"tiny.safetensors\"
}
";

fn tiny(d: &Path, opt: &str) -> PathBuf {
    let p = d.join("tiny.geonet");
    std::fs::write(&p, TINY.replace("OPT", opt)).unwrap();
    p
}

fn files(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".geonet") && n != ".geonetc.lock")
        .collect();
    v.sort();
    v
}

#[test]
fn divergence_says_what_this_run_saved() {
    let d = tmp("diverge");
    // An earlier, good run left weights in the folder.
    let prog = tiny(&d, "adam { lr = 1e-2 }");
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp", "--epochs", "1"]);
    assert_eq!(code, 0, "{err}");
    let earlier = std::fs::read(d.join("tiny.safetensors")).unwrap();
    let prog = tiny(&d, "sgd { lr = 1e30 }");
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the loss became") && err.contains("e"), "{err}");
    // Never "last good weights" that belong to the earlier run.
    assert!(!err.contains("last good weights"), "{err}");
    assert!(err.contains("This run saved no weights"), "{err}");
    assert!(err.contains("all finite"), "{err}");
    assert_eq!(std::fs::read(d.join("tiny.safetensors")).unwrap(), earlier);
    // Losses far from 1 are printed in scientific notation.
    assert_eq!(geonetc::runtime::train::fmt_loss(5e21), "5.000e21");
    assert_eq!(geonetc::runtime::train::fmt_loss(0.25), "0.250000");
}

#[test]
fn output_locations_are_checked_before_the_first_epoch() {
    let d = tmp("outputs");
    let prog = tiny(&d, "adam { lr = 1e-3 }");
    // The weights path is a directory.
    std::fs::create_dir(d.join("tiny.safetensors")).unwrap();
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a directory") && !err.contains("epoch 1/"), "{err}");
    std::fs::remove_dir(d.join("tiny.safetensors")).unwrap();
    // --out under a regular file.
    std::fs::write(d.join("plain"), "x").unwrap();
    let (code, _, err) =
        geonetc(&["run", s(&prog), "--backend", "interp", "--out", s(&d.join("plain").join("sub"))]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("epoch 1/"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn nothing_trained_claims_no_files() {
    let d = tmp("epochs0");
    let prog = tiny(&d, "adam { lr = 1e-3 }");
    let (code, out, err) = geonetc(&["run", s(&prog), "--backend", "interp", "--epochs", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing trained") && out.contains("no file written"), "{out}");
    assert!(!out.contains("wrote") && !err.contains("weights:"), "{out}{err}");
    assert!(files(&d).is_empty(), "{:?}", files(&d));
    // Resuming a finished run: nothing trained, nothing rewritten.
    let (code, _, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
    assert_eq!(code, 0, "{err}");
    let ckpt = d.join("tiny.ckpt.safetensors");
    let before: Vec<Vec<u8>> = files(&d).iter().map(|f| std::fs::read(d.join(f)).unwrap()).collect();
    let (code, out, err) = geonetc(&["run", s(&prog), "--backend", "interp", "--resume", s(&ckpt)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing trained") && out.contains("2 already done"), "{out}");
    let after: Vec<Vec<u8>> = files(&d).iter().map(|f| std::fs::read(d.join(f)).unwrap()).collect();
    assert_eq!(before, after);
}

#[test]
fn run_prints_its_summary_on_stdout_and_weights_are_reproducible() {
    let (a, b) = (tmp("repro-a"), tmp("repro-b"));
    for d in [&a, &b] {
        let prog = tiny(d, "adam { lr = 1e-3 }");
        let (code, out, err) = geonetc(&["run", s(&prog), "--backend", "interp"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("epoch 2/2"), "progress goes to stderr: {err}");
        assert!(!out.contains("epoch 1/2"), "{out}");
        assert!(out.contains("final epoch 2: train loss") && out.contains("val SNR"), "{out}");
        for f in ["tiny.safetensors", "tiny.ckpt.safetensors", "tiny.metrics.jsonl"] {
            assert!(out.contains(&format!("wrote {}", d.join(f).display())), "{out}");
        }
    }
    let wa = std::fs::read(a.join("tiny.safetensors")).unwrap();
    assert_eq!(wa, std::fs::read(b.join("tiny.safetensors")).unwrap());
    assert_eq!(
        std::fs::read(a.join("tiny.ckpt.safetensors")).unwrap(),
        std::fs::read(b.join("tiny.ckpt.safetensors")).unwrap()
    );
    // Provenance in the metadata, read back with the safetensors crate.
    let (_, meta) = safetensors::SafeTensors::read_metadata(&wa).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["geonetc_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["seed"], "9");
    assert_eq!(meta["noise"], "0.5");
    assert_eq!(meta["epochs"], "2");
    assert_eq!(meta["patch"], "[1,32]");
    assert!(meta["data"].contains("Synthetic"), "{meta:?}");
    assert!(meta["data_rms"].parse::<f64>().unwrap() > 0.0);
}

#[test]
fn vague_messages_are_precise() {
    let d = tmp("vague");
    let prog = d.join("id.geonet");
    std::fs::write(
        &prog,
        "model id {\n    input x: [1, 8, 8]\n    y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n    output y\n}\n",
    )
    .unwrap();
    // A directory as input.
    let dir_su = d.join("gather.su");
    std::fs::create_dir(&dir_su).unwrap();
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&dir_su), "--output", s(&d.join("o.su"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a directory") && !err.contains("No such device"), "{err}");
    // A plot extension no image format has: refused before the output is written.
    let x = d.join("x.npy");
    ndarray_npy::write_npy(&x, &ArrayD::<f32>::ones(IxDyn(&[16, 16]))).unwrap();
    let y = d.join("y.npy");
    let (code, _, err) =
        geonetc(&["infer", s(&prog), "--input", s(&x), "--output", s(&y), "--plot", s(&d.join("p.jpgx"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(".png") && err.lines().count() == 1 && !err.contains("Error {"), "{err}");
    assert!(!y.exists());
    // A plot that works is a PNG.
    let png = d.join("p.png");
    let (code, _, err) =
        geonetc(&["infer", s(&prog), "--input", s(&x), "--output", s(&y), "--plot", s(&png)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    // A model that shrinks its input: which layer, and what to do.
    let (code, _, err) = geonetc(&[
        "infer",
        "examples/seed_edge_filter.geonet",
        "--input",
        s(&x),
        "--output",
        s(&d.join("z.npy")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("size-preserving") && err.contains("s.conv0 (6×6 → 4×4)") && err.contains("pad=same"),
        "{err}"
    );
}

#[test]
fn check_json_reports_io_errors_as_json() {
    let (code, out, err) = geonetc(&["check", "does/not/exist.geonet", "--format", "json"]);
    assert_eq!(code, 2, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["kind"], "io");
    assert!(v["error"]["message"].as_str().unwrap().contains("does/not/exist.geonet"));
}

#[test]
fn the_help_for_a_missing_train_block_is_valid_syntax() {
    let d = tmp("help");
    let prog = d.join("m.geonet");
    std::fs::write(
        &prog,
        "model m {\n    input x: [1, 16]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y\n}\n",
    )
    .unwrap();
    let (code, _, err) = geonetc(&["run", s(&prog)]);
    assert_eq!(code, 1, "{err}");
    let block: String = err.lines().skip_while(|l| !l.contains("train {")).collect::<Vec<_>>().join("\n");
    assert!(block.contains("train {"), "{err}");
    let with = format!("{}\n{block}\n", std::fs::read_to_string(&prog).unwrap());
    let out = geonetc::check::check_source(&with);
    assert!(!out.has_errors(), "{block}");
}

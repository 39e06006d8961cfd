//! Self-supervised training and honest validation (docs/selfsup.md): the checker's
//! `target = blindspot(...)` / `blindtrace(...)`, the masked mse on both backends (against a
//! finite difference and against each other), the noise draws, the validation split's baseline
//! line and the worse-than-input warning, and a short blind-spot run that denoises.

use geonetc::check::check_source;
use geonetc::check::program::{DataSpec, LossKind, NoiseSpec, SelfSupervised};
use geonetc::ir::{self, Params};
use geonetc::ops::loss::masked_mse;
use geonetc::runtime::data::{self, NOISE_FIXED};
use geonetc::runtime::engine::{Backend, Engine};
use geonetc::runtime::masking::mask_batch;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::process::Command;

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geonetc-selfsup-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// (exit code, stdout, stderr) of `geonetc run FILE`, with `src` written to FILE.
fn run(name: &str, src: &str) -> (i32, String, String) {
    let dir = tmp(name);
    let file = dir.join(format!("{name}.geonet"));
    std::fs::write(&file, src).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc")).arg("run").arg(&file).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- the checker -------------------------------------------------------------------------

fn model_with(input: &str, train: &str) -> String {
    format!(
        "model m {{\n  input x: {input}\n  n = x -> conv(4, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)\n  output sub(x, n)\n}}\ntrain {{\n{train}\n}}\n"
    )
}

/// The first error's message and the source text its primary label points at.
fn first_error(src: &str) -> (String, String) {
    let out = check_source(src);
    let d = out
        .diagnostics
        .iter()
        .find(|d| d.code.starts_with('E'))
        .unwrap_or_else(|| panic!("no error in\n{src}"));
    (d.message.clone(), src[d.primary.span.clone()].to_string())
}

#[test]
fn targets_are_checked_with_located_errors() {
    let ok = check_source(&model_with(
        "[1, 32, 32]",
        "  data = synthetic(count = 8, noise = 0.5)\n  target = blindspot(ratio = 0.01, radius = 3)",
    ));
    let train = ok.program.expect("valid").train.unwrap();
    assert_eq!(train.target, Some(SelfSupervised::BlindSpot { ratio: 0.01, radius: 3 }));
    // Defaults: Noise2Void's 0.2 % in ±5; blind-trace 5 % of the traces within ±3.
    let d =
        check_source(&model_with("[1, 32, 32]", "  data = synthetic(count = 8)\n  target = blindtrace()"));
    assert_eq!(
        d.program.unwrap().train.unwrap().target,
        Some(SelfSupervised::BlindTrace { ratio: 0.05, radius: 3 })
    );

    let cases: &[(&str, &str, &str, &str)] = &[
        ("[1, 32, 32]", "  data = synthetic(count = 8)\n  target = blindspot(ratio = 1.5)", "ratio", "1.5"),
        ("[1, 32, 32]", "  data = synthetic(count = 8)\n  target = blindspot(radius = 0)", "radius", "0"),
        ("[1, 32, 32]", "  data = synthetic(count = 8)\n  target = blindspt()", "unknown target", "blindspt"),
        ("[1, 32, 32]", "  data = synthetic(count = 8)\n  target = clean", "`target` must be", "clean"),
        (
            "[1, 32, 32]",
            "  data = synthetic(count = 8)\n  target = blindspot(size = 3)",
            "unknown setting",
            "size",
        ),
        (
            "[1, 32, 32]",
            "  data = synthetic(count = 8)\n  loss = mae\n  target = blindspot()",
            "the loss must be mse",
            "mae",
        ),
        ("[1, 64]", "  data = synthetic(count = 8)\n  target = blindtrace()", "whole traces", "blindtrace"),
    ];
    for (input, train, message, at) in cases {
        let src = model_with(input, train);
        let (m, span) = first_error(&src);
        assert!(m.contains(message), "{m}\n{src}");
        assert_eq!(span, *at, "{m}\n{src}");
    }
}

#[test]
fn npy_data_needs_a_target_file_only_when_supervised() {
    let dir = tmp("npy-check");
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 1, 8, 8]));
    data::write_npy(&dir.join("noisy.npy"), &x).unwrap();
    let src =
        |target: &str| model_with("[1, 8, 8]", &format!("  data = npy(input = \"noisy.npy\")\n{target}"));
    let out = geonetc::check::check_bytes_in(src("  target = blindspot()").as_bytes(), Some(&dir));
    assert!(out.program.is_some(), "{:#?}", out.diagnostics);
    let p = out.program.unwrap();
    assert!(matches!(p.train.unwrap().data, DataSpec::Npy { target: None, .. }));
    let (m, _) = first_error(&src(""));
    assert!(m.contains("needs `target`"), "{m}");
}

// ---- the masked mse on both backends -----------------------------------------------------

const MODELS: &[&str] = &[
    // The output is an unfused linear node: the JIT writes the gradient over it in place.
    "model m {\n input x: [2, 12, 10]\n y = x -> conv(5, kernel=3, pad=same) -> relu -> conv(3, kernel=3, pad=same)\n output y\n}\n",
    // The output is a `sub`: the gradient goes to its own buffer.
    "model m {\n input x: [1, 40]\n n = x -> conv(4, kernel=5, pad=same) -> relu -> conv(1, kernel=3, pad=same)\n output sub(x, n)\n}\n",
];

fn setup(src: &str, batch: usize) -> (ir::Graph, Params, ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
    let program = check_source(src).program.expect("valid model");
    let g = ir::lower(&program, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let params = ir::init_params(&g, 1);
    let x = random(&g.inputs()[0], &mut rng);
    let out_shape = g.shape(g.outputs()[0]).to_vec();
    let t = random(&out_shape, &mut rng);
    let (_, mask) = mask_batch(&t, SelfSupervised::BlindSpot { ratio: 0.05, radius: 2 }, 9);
    (g, params, x, t, mask)
}

#[test]
fn masked_mse_gradients_match_a_finite_difference() {
    for src in MODELS {
        let (g, params, x, t, mask) = setup(src, 3);
        let mut e = Engine::new(&g, Backend::Interp).unwrap();
        let (_, grads) = e.train_step_masked(
            &mut params.clone(),
            std::slice::from_ref(&x),
            &t,
            Some(&mask),
            LossKind::Mse,
            0,
        );
        let mut f = |p: &Params| {
            let y = e.forward(&mut p.clone(), std::slice::from_ref(&x), true, 0).remove(0);
            masked_mse(&y, &t, &mask).0
        };
        let eps = 1e-6;
        for (k, p) in params.iter().enumerate() {
            for i in (0..p.len()).step_by(p.len().div_ceil(6)) {
                let mut plus = params.clone();
                plus[k].as_slice_mut().unwrap()[i] += eps;
                let mut minus = params.clone();
                minus[k].as_slice_mut().unwrap()[i] -= eps;
                let fd = (f(&plus) - f(&minus)) / (2.0 * eps);
                let an = grads[k].as_slice().unwrap()[i];
                assert!((fd - an).abs() <= 1e-7 + 1e-5 * fd.abs(), "param {k}[{i}]: fd {fd}, backward {an}");
            }
        }
    }
}

#[test]
fn masked_mse_on_the_jit_matches_the_interpreter() {
    for src in MODELS {
        let (g, params, x, t, mask) = setup(src, 3);
        let mut interp = Engine::new(&g, Backend::Interp).unwrap();
        let mut jit = Engine::new(&g, Backend::Jit).unwrap();
        let (li, gi) = interp.train_step_masked(
            &mut params.clone(),
            std::slice::from_ref(&x),
            &t,
            Some(&mask),
            LossKind::Mse,
            0,
        );
        let (lj, gj) = jit.train_step_masked(
            &mut params.clone(),
            std::slice::from_ref(&x),
            &t,
            Some(&mask),
            LossKind::Mse,
            0,
        );
        assert!((li - lj).abs() <= 1e-4 * li.abs(), "loss: interp {li}, jit {lj}");
        for (a, b) in gi.iter().zip(&gj) {
            let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
            for (u, v) in a.iter().zip(b.iter()) {
                assert!((u - v).abs() <= 1e-4 * scale, "gradient: interp {u}, jit {v}");
            }
        }
        // The masked loss is not the plain one (the mask matters), and the next unmasked step
        // on the same engine forgets the mask.
        let (plain, _) = jit.train_step(&mut params.clone(), std::slice::from_ref(&x), &t, LossKind::Mse, 0);
        let (reference, _) =
            interp.train_step(&mut params.clone(), std::slice::from_ref(&x), &t, LossKind::Mse, 0);
        assert!(
            (plain - reference).abs() <= 1e-4 * reference,
            "unmasked after masked: {plain} vs {reference}"
        );
        assert!((plain - lj).abs() > 1e-3 * plain);
        // An all-ones mask is the plain mse.
        let ones = ArrayD::ones(t.raw_dim());
        let (all, _) = jit.train_step_masked(
            &mut params.clone(),
            std::slice::from_ref(&x),
            &t,
            Some(&ones),
            LossKind::Mse,
            0,
        );
        assert!((all - reference).abs() <= 1e-4 * reference);
    }
}

// ---- noise draws and validation ----------------------------------------------------------

#[test]
fn validation_noise_is_fixed_and_training_noise_is_fresh_each_epoch() {
    let ds = data::synthetic(&[1, 16, 16], 6, &NoiseSpec::gaussian(0.5), 2).unwrap();
    let idx = [1, 4];
    let (fixed, clean) = ds.batch_with_noise(&idx, NOISE_FIXED).unwrap();
    assert_eq!(fixed, ds.batch(&idx).0, "validation sees the stored draw");
    assert_eq!(ds.batch_with_noise(&idx, NOISE_FIXED).unwrap().0, fixed, "the same every epoch");
    let (e1, c1) = ds.batch_with_noise(&idx, 1).unwrap();
    let (e2, _) = ds.batch_with_noise(&idx, 2).unwrap();
    assert_eq!(c1, clean, "the clean targets do not change");
    assert_ne!(e1, fixed);
    assert_ne!(e1, e2);
    assert_eq!(ds.batch_with_noise(&idx, 1).unwrap().0, e1, "a draw is reproducible (resume)");
    // Each draw has the requested level: noise std / clean RMS = 0.5.
    for x in [&fixed, &e1, &e2] {
        let ratio = data::rms(&(x - &clean)) / data::rms(&clean);
        assert!((ratio - 0.5).abs() < 0.08, "noise level {ratio}");
    }
}

#[test]
fn run_prints_the_baseline_and_warns_when_the_model_is_worse_than_its_input() {
    // A model that doubles its input, trained with a vanishing learning rate: its output is
    // 2·(s + n), worse than the noisy input s + n.
    let src = "model double {\n  input x: [1, 64]\n  y = x -> conv(1, kernel=1, bias=false, init=[2])\n  output y\n}\n\
               optimizer sgd { lr = 1e-12, momentum = 0 }\n\
               train {\n  data = synthetic(count = 20, noise = 0.5, seed = 1)\n  epochs = 2\n  batch = 4\n  validate = 0.2\n  seed = 5\n}\n";
    let (code, _, err) = run("double", src);
    assert_eq!(code, 0, "{err}");
    let baseline = err.lines().position(|l| l.contains("noisy-input SNR")).expect(&err);
    let first_epoch = err.lines().position(|l| l.starts_with("epoch 1/2")).expect(&err);
    assert!(baseline < first_epoch, "the baseline comes before the first epoch:\n{err}");
    assert!(err.contains("validation: 4 samples chosen by the seed, 16 train"), "{err}");
    assert!(err.contains("warning: after epoch 2 the model makes validation worse than its input"), "{err}");
    // The same model scaled by 1 is the input itself: no warning... and a denoiser beats it.
    let identity = src.replace("init=[2]", "init=[1]").replace("double", "identity");
    let (code, _, err) = run("identity", &identity);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn segy_patches_validate_on_held_out_traces_only() {
    let file = PathBuf::from("/work/shared/data/seismic/field/penobscot_xl1155.sgy");
    if !file.exists() {
        eprintln!("skipped: {} is absent", file.display());
        return;
    }
    let ds = data::segy(&file, &[1, 64, 64], &data::SegyPlan::new(None, None), &NoiseSpec::gaussian(0.5), 1)
        .unwrap();
    let split = geonetc::runtime::validation::split_of(&ds, 0.1, 3).unwrap();
    let index = ds.patches.as_ref().unwrap();
    assert_eq!(index.split_extent, 601);
    assert!(!split.val.is_empty() && !split.held_out.is_empty());
    for &v in &split.val {
        let c = index.traces_of(v).0[0];
        for &t in &split.train {
            let d = index.traces_of(t).0[0];
            assert!(c + 64 <= d || d + 64 <= c, "val patch at trace {c} overlaps train patch at {d}");
        }
    }
}

#[test]
fn blindspot_training_on_noisy_data_alone_denoises() {
    // Noisy synthetic sections; the clean ones are only scored against. A small 2-D network
    // trained blind-spot must beat the noisy input on the held-out sections.
    let src = "model bs {\n  input x: [1, 32, 32]\n  y = x -> conv(16, kernel=3, pad=same) -> relu -> conv(16, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)\n  output y\n}\n\
               optimizer adam { lr = 3e-3 }\n\
               train {\n  data = synthetic(count = 96, noise = 1.0, seed = 2)\n  target = blindspot(ratio = 0.02, radius = 3)\n  epochs = 8\n  batch = 8\n  validate = 0.25\n  seed = 1\n}\n";
    let (code, out, err) = run("blindspot", src);
    assert_eq!(code, 0, "{err}");
    let snr = |text: &str, key: &str| -> f64 {
        let at = text.find(key).unwrap_or_else(|| panic!("no `{key}` in\n{text}")) + key.len();
        text[at..].split_whitespace().next().unwrap().trim_end_matches(',').parse().unwrap()
    };
    let input = snr(&out, "validation input SNR ");
    let output = snr(&out, "val SNR ");
    assert!(output > input + 1.0, "blind-spot: {output} dB vs the input's {input} dB\n{out}\n{err}");
}

#[test]
fn a_checkpoint_resumes_only_with_its_own_target() {
    let dir = tmp("resume-target");
    let src = "model r {\n  input x: [1, 32]\n  y = x -> conv(2, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)\n  output y\n}\n\
               train {\n  data = synthetic(count = 8, noise = 0.5)\n  epochs = 1\n  batch = 4\n}\n";
    let file = dir.join("r.geonet");
    std::fs::write(&file, src).unwrap();
    let geonetc =
        |args: &[&std::ffi::OsStr]| Command::new(env!("CARGO_BIN_EXE_geonetc")).args(args).output().unwrap();
    let out = geonetc(&["run".as_ref(), file.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ckpt = dir.join("r.ckpt.safetensors");
    let self_supervised = src.replace("  epochs = 1\n", "  epochs = 2\n  target = blindspot()\n");
    std::fs::write(&file, self_supervised).unwrap();
    let out = geonetc(&["run".as_ref(), file.as_os_str(), "--resume".as_ref(), ckpt.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("target (checkpoint supervised, now {\"blindspot\""), "{err}");
}

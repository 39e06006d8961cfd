//! Quality control (issue 13, item 4) and field-data hygiene at inference (item 3): the eval
//! measures against scikit-image and a numpy script (`scripts/qc_reference.py`, fixtures in
//! `tests/fixtures/qc/`), `infer --residual`, and synthetic gathers with a NaN, a 1e6 spike, a
//! muted zone and dead traces through `infer`.

mod common;

use common::{geonetc, s, tmp};
use geonetc::seismic::qc;
use geonetc::seismic::segy::SeismicFile;
use ndarray::{Array2, Ix2};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qc").join(name)
}

fn section(name: &str) -> Array2<f64> {
    geonetc::runtime::data::read_npy(&fixture(name)).unwrap().into_dimensionality::<Ix2>().unwrap()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}: {a} vs reference {b}");
}

#[test]
fn snr_psnr_and_ssim_match_scikit_image() {
    let r = reference();
    let clean = section("clean.npy");
    close(qc::data_range(clean.view()), r["data_range"].as_f64().unwrap(), 1e-12, "data range");
    for name in ["noisy", "denoised"] {
        let x = section(&format!("{name}.npy"));
        let got = qc::scores(clean.view(), x.view());
        close(got.snr_db, r[name]["snr_db"].as_f64().unwrap(), 1e-10, &format!("{name} SNR"));
        close(got.psnr_db, r[name]["psnr_db"].as_f64().unwrap(), 1e-10, &format!("{name} PSNR"));
        close(got.ssim, r[name]["ssim"].as_f64().unwrap(), 1e-9, &format!("{name} SSIM"));
    }
}

#[test]
fn local_similarity_matches_the_numpy_script() {
    let r = reference();
    let (noisy, denoised, clean) = (section("noisy.npy"), section("denoised.npy"), section("clean.npy"));
    let removed = &noisy - &denoised;
    let radii = qc::Radii { samples: 10, traces: 5 };
    let field = qc::local_similarity(removed.view(), denoised.view(), radii);
    let ls = &r["local_similarity"];
    for p in ls["samples"].as_array().unwrap() {
        let (i, j, v) =
            (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize, p[2].as_f64().unwrap());
        close(field[[i, j]], v, 1e-9, &format!("similarity at {i}, {j}"));
    }
    let leak = qc::leakage(removed.view(), denoised.view(), radii);
    close(leak.mean_abs, ls["mean_abs"].as_f64().unwrap(), 1e-9, "mean |s|");
    close(leak.max, ls["max"].as_f64().unwrap(), 1e-9, "max s");
    close(leak.above_0_3, ls["above_0_3"].as_f64().unwrap(), 1e-12, "share above 0.3");
    let other = qc::local_similarity(noisy.view(), clean.view(), qc::Radii { samples: 4, traces: 2 });
    for p in r["local_similarity_noisy_clean_r4x2"].as_array().unwrap() {
        let (i, j, v) =
            (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize, p[2].as_f64().unwrap());
        assert!((other[[i, j]] - v).abs() < 1e-9, "radii 4×2 at {i}, {j}: {} vs {v}", other[[i, j]]);
    }
}

// ---- synthetic gathers through infer ---------------------------------------------------------

const TRACES: usize = 40;
const SAMPLES: usize = 200;

/// A gather: dipping Ricker events plus a little deterministic noise, `[traces, samples]`.
fn gather() -> Array2<f64> {
    let ricker = |t: f64| {
        let a = (std::f64::consts::PI * 25.0 * t).powi(2);
        (1.0 - 2.0 * a) * (-a).exp()
    };
    Array2::from_shape_fn((TRACES, SAMPLES), |(x, s)| {
        let t = s as f64 * 0.004;
        let noise = (((x * 7919 + s * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.2;
        1000.0 * (ricker(t - 0.2 - 0.003 * x as f64) - 0.7 * ricker(t - 0.5 + 0.002 * x as f64) + noise)
    })
}

/// A big-endian IEEE SEG-Y file of `section` (4 ms): CDP 100 + trace, trace identification
/// code 1, or 2 for the traces in `dead`.
fn write_segy(path: &Path, section: &Array2<f64>, dead: &[usize]) {
    let (traces, samples) = section.dim();
    let mut b = vec![0x40u8; 3200];
    b.resize(3600, 0);
    b[3216..3218].copy_from_slice(&4000u16.to_be_bytes());
    b[3220..3222].copy_from_slice(&(samples as u16).to_be_bytes());
    b[3224..3226].copy_from_slice(&5u16.to_be_bytes());
    for t in 0..traces {
        let mut h = vec![0u8; 240];
        h[0..4].copy_from_slice(&(t as i32 + 1).to_be_bytes());
        h[20..24].copy_from_slice(&(t as i32 + 100).to_be_bytes());
        h[28..30].copy_from_slice(&(if dead.contains(&t) { 2i16 } else { 1 }).to_be_bytes());
        h[114..116].copy_from_slice(&(samples as u16).to_be_bytes());
        h[116..118].copy_from_slice(&4000u16.to_be_bytes());
        b.extend(h);
        for &v in section.row(t) {
            b.extend((v as f32).to_be_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

/// A 2-D model with biases (so zeros in do not give zeros out) and a 5 × 5 receptive field, and
/// its weights: fixed pseudo-random kernels, biases 0.1, the training RMS 1 in the metadata (so
/// sections are scaled).
fn biased_model(d: &Path) -> (PathBuf, PathBuf) {
    let model = "model m {\n input x: [1, 32, 32]\n h = x -> conv(4, kernel=3, pad=1) -> relu\n y = h -> conv(1, kernel=3, pad=1)\n output y\n}\n";
    let file = d.join("m.geonet");
    std::fs::write(&file, model).unwrap();
    let out = geonetc::check::check_model(model, None);
    let graph = geonetc::ir::lower(out.program.as_ref().unwrap(), 1);
    let mut params = geonetc::ir::init_params(&graph, 7);
    for (info, p) in graph.params().iter().zip(params.iter_mut()) {
        if info.name.ends_with(".bias") {
            p.fill(0.1);
        }
    }
    let weights = d.join("m.safetensors");
    let meta = vec![("data_rms".to_string(), "1".to_string())];
    geonetc::runtime::checkpoint::save_weights(&weights, &graph, &params, meta).unwrap();
    (file, weights)
}

fn infer(file: &Path, weights: &Path, input: &Path, output: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args =
        vec!["infer", s(file), "--weights", s(weights), "--input", s(input), "--output", s(output)];
    args.extend(extra);
    geonetc(&args)
}

fn read(path: &Path) -> Array2<f64> {
    SeismicFile::open(path).unwrap().section_f64()
}

#[test]
fn a_nan_sample_is_refused_naming_trace_and_sample_or_masked() {
    let d = tmp("qc", "nan");
    let (file, weights) = biased_model(&d);
    let mut x = gather();
    x[[6, 49]] = f64::NAN;
    let (input, output) = (d.join("nan.sgy"), d.join("out.sgy"));
    write_segy(&input, &x, &[]);
    let (code, _, err) = infer(&file, &weights, &input, &output, &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nan.sgy: trace 7 (of 40), sample 50 is NaN"), "{err}");
    assert!(!output.exists());
    // Masked: the NaN comes back NaN, everything else is finite.
    let (code, _, err) = infer(&file, &weights, &input, &output, &["--nonfinite", "mask"]);
    assert_eq!(code, 0, "{err}");
    let y = read(&output);
    assert!(y[[6, 49]].is_nan());
    assert_eq!(y.iter().filter(|v| !v.is_finite()).count(), 1);
}

#[test]
fn a_spike_harms_only_its_neighbourhood() {
    let d = tmp("qc", "spike");
    let (file, weights) = biased_model(&d);
    let x = gather();
    let mut spiked = x.clone();
    spiked[[20, 100]] = 1e6;
    let (a, b) = (d.join("a.sgy"), d.join("b.sgy"));
    write_segy(&a, &x, &[]);
    write_segy(&b, &spiked, &[]);
    let (ya, yb) = (d.join("ya.sgy"), d.join("yb.sgy"));
    for (i, o) in [(&a, &ya), (&b, &yb)] {
        let (code, _, err) = infer(&file, &weights, i, o, &[]);
        assert_eq!(code, 0, "{err}");
    }
    let (ya, yb) = (read(&ya), read(&yb));
    let rms = (ya.iter().map(|v| v * v).sum::<f64>() / ya.len() as f64).sqrt();
    // Two 3 × 3 convolutions: the spike reaches 2 traces and 2 samples either side.
    let mut worst: f64 = 0.0;
    for ((t, s), v) in ya.indexed_iter() {
        if t.abs_diff(20) > 2 || s.abs_diff(100) > 2 {
            worst = worst.max((v - yb[[t, s]]).abs());
        }
    }
    // The clipped RMS moves by one clipped sample of 8000 (~1e-3 relative): with the global RMS
    // the section was scaled 37× too small and the output became the biases' constant.
    assert!(worst <= 5e-3 * rms, "outside the spike's neighbourhood the output moved by {worst} (RMS {rms})");
    // The output is not a constant.
    assert!(ya.std(0.0) > 0.1 * rms);
}

#[test]
fn muted_zones_come_back_unchanged() {
    let d = tmp("qc", "mute");
    let (file, weights) = biased_model(&d);
    let mut x = gather();
    for t in 0..TRACES {
        x.row_mut(t).slice_mut(ndarray::s![..30 + t]).fill(0.0); // a top mute growing with offset
        x.row_mut(t).slice_mut(ndarray::s![120..140]).fill(0.0); // a surgical mute of 20 samples
    }
    let (input, output) = (d.join("mute.sgy"), d.join("out.sgy"));
    write_segy(&input, &x, &[]);
    let (code, out, err) = infer(&file, &weights, &input, &output, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("muted samples in 40 traces"), "{out}");
    let y = read(&output);
    for t in 0..TRACES {
        assert!(y.row(t).slice(ndarray::s![..30 + t]).iter().all(|&v| v == 0.0), "top mute of trace {t}");
        assert!(y.row(t).slice(ndarray::s![120..140]).iter().all(|&v| v == 0.0), "mute of trace {t}");
    }
    // The model alone (biases 0.1) would have filled them.
    let (code, _, err) = infer(&file, &weights, &input, &output, &["--no-pass-through"]);
    assert_eq!(code, 0, "{err}");
    assert!(read(&output).row(0).slice(ndarray::s![..30]).iter().any(|&v| v != 0.0));
}

#[test]
fn dead_traces_come_back_unchanged() {
    let d = tmp("qc", "dead");
    let (file, weights) = biased_model(&d);
    let mut x = gather();
    x.row_mut(9).fill(0.0); // dead: all zero
    x.row_mut(25).mapv_inplace(|v| v * 3.0 + 17.0); // dead by its header (code 2), garbage samples
    let (input, output) = (d.join("dead.sgy"), d.join("out.sgy"));
    write_segy(&input, &x, &[25]);
    let (code, out, err) = infer(&file, &weights, &input, &output, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 dead traces (10, 26)"), "{out}");
    let y = read(&output);
    assert!(y.row(9).iter().all(|&v| v == 0.0));
    let x32 = read(&input);
    assert_eq!(y.row(25), x32.row(25));
    // Live traces were denoised (changed).
    assert!(y.row(5).iter().zip(x32.row(5)).any(|(a, b)| a != b));
    // `--no-pass-through` denoises dead traces too: the model alone (biases 0.1) fills them.
    let (code, _, err) = infer(&file, &weights, &input, &output, &["--no-pass-through"]);
    assert_eq!(code, 0, "{err}");
    let y = read(&output);
    assert!(y.row(9).iter().any(|&v| v != 0.0), "all-zero dead trace passed through");
    assert!(y.row(25).iter().zip(x32.row(25)).any(|(a, b)| a != b), "header-dead trace passed through");
}

#[test]
fn the_residual_is_input_minus_output_with_the_input_headers() {
    let d = tmp("qc", "residual");
    let (file, weights) = biased_model(&d);
    let (input, output, residual) = (d.join("in.sgy"), d.join("out.sgy"), d.join("removed.sgy"));
    write_segy(&input, &gather(), &[]);
    let (code, _, err) = infer(&file, &weights, &input, &output, &["--residual", s(&residual)]);
    assert_eq!(code, 0, "{err}");
    let (x, y, r) = (read(&input), read(&output), read(&residual));
    for ((a, b), c) in x.iter().zip(&y).zip(&r) {
        // The file holds f32: the output and the residual are each rounded once.
        assert!((c - (a - b)).abs() <= 2e-7 * (a.abs() + b.abs() + c.abs()), "{c} vs {a} − {b}");
    }
    assert!(r.iter().any(|&v| v != 0.0));
    let (bi, br) = (std::fs::read(&input).unwrap(), std::fs::read(&residual).unwrap());
    assert_eq!(bi.len(), br.len());
    assert_eq!(bi[..3600], br[..3600]);
    for t in 0..TRACES {
        let at = 3600 + t * (240 + 4 * SAMPLES);
        assert_eq!(bi[at..at + 240], br[at..at + 240], "header of trace {t}");
    }
    // .npy too; and never over an input.
    let npy = d.join("removed.npy");
    let (code, _, err) = infer(&file, &weights, &input, &output, &["--residual", s(&npy)]);
    assert_eq!(code, 0, "{err}");
    let a = geonetc::runtime::data::read_npy(&npy).unwrap();
    assert_eq!(a.shape(), &[SAMPLES, TRACES]);
    let (code, _, err) = infer(&file, &weights, &input, &output, &["--residual", s(&input)]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to overwrite an input"), "{err}");
}

#[test]
fn a_zero_mean_section_stays_zero_mean() {
    // An identity-like model (centre tap 2, no bias) with the training RMS 1: the section is
    // scaled, tiled (601 × 76 is no multiple of 32), blended and scaled back.
    let d = tmp("qc", "dc");
    let model = "model m {\n input x: [1, 32, 32]\n y = x -> conv(1, kernel=3, pad=1, bias=false, init=[[0, 0, 0], [0, 2, 0], [0, 0, 0]])\n output y\n}\n";
    let file = d.join("m.geonet");
    std::fs::write(&file, model).unwrap();
    let graph = geonetc::ir::lower(geonetc::check::check_model(model, None).program.as_ref().unwrap(), 1);
    let params = geonetc::ir::init_params(&graph, 0);
    let weights = d.join("m.safetensors");
    let meta = vec![("data_rms".to_string(), "1".to_string())];
    geonetc::runtime::checkpoint::save_weights(&weights, &graph, &params, meta).unwrap();
    // Exactly zero-mean and exact in f32: trace j + 38 is trace j with its polarity reversed.
    let x = Array2::from_shape_fn((601, 76), |(i, j)| {
        let v = ((i * 31 + (j % 38) * 17) % 23) as f64 * 1e4 + 1e5;
        if j < 38 { v } else { -v }
    });
    assert_eq!(x.sum(), 0.0);
    let (input, output) = (d.join("x.npy"), d.join("y.npy"));
    geonetc::runtime::data::write_npy(&input, &x.clone().into_dyn()).unwrap();
    // The interpreter (f64), so the test sees the pipeline and not f32 rounding.
    let (code, _, err) = infer(&file, &weights, &input, &output, &["--backend", "interp"]);
    assert_eq!(code, 0, "{err}");
    let y = geonetc::runtime::data::read_npy(&output).unwrap();
    let rms = (y.iter().map(|v| v * v).sum::<f64>() / y.len() as f64).sqrt();
    assert!(y.mean().unwrap().abs() < 1e-9 * rms, "mean {} of RMS {rms}", y.mean().unwrap());
    // Twice the input, in the input's units (the scale was undone).
    assert!(y.iter().zip(x.iter()).all(|(a, b)| (a - 2.0 * b).abs() < 1e-9 * rms));
}

// ---- eval's report and the pictures ----------------------------------------------------------

/// (width, height) of a PNG file, after checking its signature.
fn png_size(path: &Path) -> (u32, u32) {
    let png = std::fs::read(path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{} is no PNG", path.display());
    let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (dim(16), dim(20))
}

/// An identity model (no weights needed).
fn identity_model(d: &Path) -> PathBuf {
    let file = d.join("id.geonet");
    let model = "model id {\n input x: [1, 16, 16]\n y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n output y\n}\n";
    std::fs::write(&file, model).unwrap();
    file
}

#[test]
fn eval_json_reports_the_measures_of_the_fixtures() {
    let d = tmp("qc", "eval-json");
    let file = identity_model(&d);
    // eval reads a 2-D .npy as [time, traces]: the fixtures are [traces, samples], so transpose.
    let (clean, noisy) = (d.join("clean.npy"), d.join("noisy.npy"));
    for (name, path) in [("clean.npy", &clean), ("noisy.npy", &noisy)] {
        geonetc::runtime::data::write_npy(path, &section(name).t().to_owned().into_dyn()).unwrap();
    }
    let (code, out, err) = geonetc(&[
        "eval",
        s(&file),
        "--clean",
        s(&clean),
        "--noisy",
        s(&noisy),
        "--format",
        "json",
        "--backend",
        "interp",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = reference();
    // SNR, PSNR and SSIM do not depend on the transposition (the SSIM window is square).
    for (key, reference_key) in [("noisy_scores", "noisy"), ("denoised_scores", "noisy")] {
        for m in ["snr_db", "psnr_db", "ssim"] {
            close(
                v[key][m].as_f64().unwrap(),
                r[reference_key][m].as_f64().unwrap(),
                1e-6,
                &format!("{key}.{m}"),
            );
        }
    }
    // An identity model removes nothing (up to the tiles' rounding): no leakage.
    assert!(v["leakage"]["max"].as_f64().unwrap().abs() < 1e-6, "{}", v["leakage"]);
    assert_eq!(v["hygiene"]["scale"]["method"], "clipped RMS");
    // The human table has every measure.
    let (code, out, err) = geonetc(&["eval", s(&file), "--clean", s(&clean), "--noisy", s(&noisy)]);
    assert_eq!(code, 0, "{err}");
    for line in ["SNR noisy", "PSNR noisy", "SSIM denoised", "local similarity of removed noise and output"] {
        assert!(out.contains(line), "{line} missing in\n{out}");
    }
    assert!(
        out.contains(&format!("SNR noisy    {:7.2} dB", r["noisy"]["snr_db"].as_f64().unwrap())),
        "{out}"
    );
}

#[test]
fn eval_and_infer_draw_pictures_of_the_stated_size_and_clip() {
    let d = tmp("qc", "plots");
    let file = identity_model(&d);
    let noisy = d.join("noisy.sgy");
    write_segy(&noisy, &gather(), &[]);
    let clean = d.join("clean.sgy");
    write_segy(&clean, &gather().mapv(|v| v * 0.9), &[]);
    let png = d.join("eval.png");
    let (code, out, err) = geonetc(&[
        "eval",
        s(&file),
        "--clean",
        s(&clean),
        "--noisy",
        s(&noisy),
        "--plot",
        s(&png),
        "--spectrum",
    ]);
    assert_eq!(code, 0, "{err}");
    // Five 360 × 540 panels, a 110-pixel colour bar and a 420-pixel spectrum.
    assert_eq!(png_size(&png), (5 * 360 + 110 + 420, 540));
    assert!(out.contains(&format!("plot {}: 2330 × 540 px, clip ±", png.display())), "{out}");
    assert!(out.contains("(99th percentile of |noisy|)"), "{out}");
    let (png, output) = (d.join("infer.png"), d.join("out.sgy"));
    let (code, out, err) = geonetc(&[
        "infer",
        s(&file),
        "--input",
        s(&noisy),
        "--output",
        s(&output),
        "--plot",
        s(&png),
        "--clip",
        "98",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(png_size(&png), (3 * 360 + 110, 540));
    assert!(out.contains("(98th percentile of |input|)"), "{out}");
    let (code, _, err) =
        geonetc(&["infer", s(&file), "--input", s(&noisy), "--output", s(&output), "--clip", "101"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn run_draws_its_training_curves() {
    let d = tmp("qc", "run-plot");
    let file = d.join("t.geonet");
    std::fs::write(
        &file,
        "model t {\n input x: [1, 64]\n y = x -> conv(4, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)\n output y\n}\n\noptimizer adam { lr = 1e-3 }\n\ntrain {\n data = synthetic(shape = [1, 64], count = 64, noise = 0.3, seed = 1)\n loss = mse\n batch = 16\n epochs = 3\n}\n",
    )
    .unwrap();
    let png = d.join("curves.png");
    let (code, out, err) = geonetc(&["run", s(&file), "--out", s(&d.join("out")), "--plot", s(&png)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(png_size(&png), (900, 420));
    assert!(out.contains("training curves"), "{out}");
}

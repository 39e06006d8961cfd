//! Quality control (issue 13, item 4) and field-data hygiene at inference (item 3): the eval
//! measures against scikit-image and a numpy script (`scripts/qc_reference.py`, fixtures in
//! `tests/fixtures/qc/`), `infer --residual`, and synthetic gathers with a NaN, a 1e6 spike, a
//! muted zone and dead traces through `infer`.

mod common;

use common::{geonetc, s, tmp};
use geonetc::seismic::qc;
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

//! The shipped models (`models/*.geonet` + `.safetensors`): they load, run without `--weights`
//! (the weights `run` writes for them), and denoise sections they never saw; `infer` warns
//! about inputs far from their training data. Slow parts run one small section each.

mod common;
use common::{geonetc, s, tmp};
use geonetc::check::program::NoiseSpec;
use ndarray::{Array2, Axis};
use std::path::Path;

const MODELS: [&str; 2] = ["models/section_denoiser.geonet", "models/trace_denoiser.geonet"];

/// A synthetic section `[time, traces]` (clean, noisy) from a seed no model was trained with
/// (they used 11 and 12), with white Gaussian noise of `std` × the clean RMS.
fn unseen_section(time: usize, traces: usize, std: f64) -> (Array2<f64>, Array2<f64>) {
    let ds =
        geonetc::runtime::data::synthetic(&[1, time, traces], 1, &NoiseSpec::gaussian(std), 4242).unwrap();
    let take = |a: &ndarray::ArrayD<f64>| {
        a.index_axis(Axis(0), 0).index_axis(Axis(0), 0).to_owned().into_dimensionality().unwrap()
    };
    (take(&ds.targets), take(&ds.inputs))
}

fn write_npy(path: &Path, a: &Array2<f64>) {
    geonetc::runtime::data::write_npy(path, &a.clone().into_dyn()).unwrap();
}

/// The two SNR values `eval` prints (noisy, denoised).
fn eval_snr(args: &[&str]) -> (f64, f64, String) {
    let (code, out, err) = geonetc(args);
    assert_eq!(code, 0, "{out}{err}");
    let db = |label: &str| -> f64 {
        let line =
            out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` in {out}"));
        line[label.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    (db("SNR noisy"), db("SNR denoised"), err)
}

#[test]
fn the_shipped_models_match_their_weights() {
    for model in MODELS {
        let weights = model.replace(".geonet", ".safetensors");
        let (code, out, err) = geonetc(&["check", model, "--weights", &weights]);
        assert_eq!(code, 0, "{model}: {out}{err}");
        assert!(!err.contains("warning"), "{model}: {err}");
        let size = std::fs::metadata(Path::new(env!("CARGO_MANIFEST_DIR")).join(&weights)).unwrap().len();
        assert!(size < 4 << 20, "{weights} is {size} bytes: shipped models stay small");
    }
}

#[test]
fn the_shipped_models_improve_a_section_they_never_saw_without_weights_given() {
    let dir = tmp("models", "unseen");
    let (clean, noisy) = unseen_section(256, 128, 0.7);
    let (c, n) = (dir.join("clean.npy"), dir.join("noisy.npy"));
    write_npy(&c, &clean);
    write_npy(&n, &noisy);
    for model in MODELS {
        let (before, after, err) = eval_snr(&["eval", model, "--clean", s(&c), "--noisy", s(&n)]);
        // 0.7 × RMS is 3.1 dB; both models gain at least 6 dB on it.
        assert!((before - 3.1).abs() < 0.3, "{model}: input SNR {before}");
        assert!(after > before + 6.0, "{model}: {before} → {after} dB");
        assert!(err.contains("note: using models/"), "{model}: says which weights: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_section_denoiser_reaches_10_db_on_the_patchunet_synthetic_pair() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/seismic/synthetic");
    let (c, n) = (data.join("patchunet_synthetic_clean.npy"), data.join("patchunet_synthetic_noisy.npy"));
    if !c.is_file() || !n.is_file() {
        eprintln!("skipped: the PATCHUNET synthetic pair is not in {}", data.display());
        return;
    }
    let (before, after, _) =
        eval_snr(&["eval", "models/section_denoiser.geonet", "--clean", s(&c), "--noisy", s(&n)]);
    // The README's numbers (PATCHUNET's published result: 11.80 dB).
    assert!((before + 0.30).abs() < 0.01, "input SNR {before}");
    assert!(after >= 10.0, "section_denoiser: {after} dB");
}

/// A Seismic Unix file (big-endian float32, 240-byte trace headers) of `traces` sampled every
/// `dt_us`.
fn write_su(path: &Path, section: &Array2<f64>, dt_us: u16) {
    let (samples, traces) = section.dim();
    let mut bytes = vec![];
    for j in 0..traces {
        let mut header = [0u8; 240];
        header[0..4].copy_from_slice(&(j as i32 + 1).to_be_bytes());
        header[114..116].copy_from_slice(&(samples as u16).to_be_bytes());
        header[116..118].copy_from_slice(&dt_us.to_be_bytes());
        bytes.extend_from_slice(&header);
        for i in 0..samples {
            bytes.extend_from_slice(&(section[[i, j]] as f32).to_be_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn infer_warns_when_the_input_is_far_from_the_training_data() {
    let dir = tmp("models", "far");
    let (_, noisy) = unseen_section(128, 64, 0.5);
    // Sampled every 1 ms: the models saw 4 ms.
    let su = dir.join("fast.su");
    write_su(&su, &noisy, 1000);
    let (code, _, err) = geonetc(&[
        "infer",
        "models/section_denoiser.geonet",
        "--input",
        s(&su),
        "--output",
        s(&dir.join("out.su")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("is sampled every 1 ms but the model was trained on data sampled every 4 ms"),
        "{err}"
    );
    // The same data at 4 ms: no warning.
    let su4 = dir.join("four.su");
    write_su(&su4, &noisy, 4000);
    let (code, _, err) = geonetc(&[
        "infer",
        "models/section_denoiser.geonet",
        "--input",
        s(&su4),
        "--output",
        s(&dir.join("out4.su")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    // One huge spike: amplitudes far beyond the training data's range.
    let mut spiky = noisy.clone();
    spiky[[40, 10]] = 1e6;
    let npy = dir.join("spiky.npy");
    write_npy(&npy, &spiky);
    let (code, _, err) = geonetc(&[
        "infer",
        "models/section_denoiser.geonet",
        "--input",
        s(&npy),
        "--output",
        s(&dir.join("out.npy")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("has amplitudes up to") && err.contains("its RMS"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_weights_and_without_the_run_output_infer_still_asks_for_weights() {
    // A copy of the model in a folder without its weights: nothing to take by default.
    let dir = tmp("models", "noweights");
    let model = dir.join("section_denoiser.geonet");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(MODELS[0]), &model).unwrap();
    let (_, noisy) = unseen_section(64, 64, 0.5);
    let npy = dir.join("in.npy");
    write_npy(&npy, &noisy);
    let (code, _, err) =
        geonetc(&["infer", s(&model), "--input", s(&npy), "--output", s(&dir.join("o.npy"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--weights"), "{err}");
    assert!(!err.contains("note: using"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_models_denoise_shared_field_files_with_the_readme_command() {
    let field = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/seismic/field");
    let dir = tmp("models", "field");
    // Small files of both kinds (SEG-Y int16, SU); each skipped when absent.
    for name in ["f3.sgy", "gom_cdp_nmo.su"] {
        let input = field.join(name);
        if !input.is_file() {
            eprintln!("skipped: {} is absent", input.display());
            continue;
        }
        for model in MODELS {
            let out = dir.join(format!("out_{name}"));
            let (code, _, err) = geonetc(&["infer", model, "--input", s(&input), "--output", s(&out)]);
            assert_eq!(code, 0, "{model} on {name}: {err}");
            let (written, read) =
                (std::fs::metadata(&out).unwrap().len(), std::fs::metadata(&input).unwrap().len());
            // Same headers and trace count; SEG-Y int16 input is written in its own format.
            assert_eq!(written, read, "{model} on {name}: output size");
            let _ = std::fs::remove_file(&out);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

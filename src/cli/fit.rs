//! What `infer` and `eval` use without `--weights` (the weights file `run` writes for the
//! model), and the warnings when an input is far from the data those weights were trained on
//! (the sample interval and crest factor `run` stores in the metadata).

use geonetc::check::program::Program;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `--weights` as given, or else the file `geonetc run` writes for this program (`save =` of its
/// train block, relative to the .geonet file) when that file exists; said on stderr.
pub fn weights_or_default(
    program: &Program,
    source: &str,
    file: &Path,
    given: Option<PathBuf>,
) -> Option<PathBuf> {
    if given.is_some() {
        return given;
    }
    // The train block alone decides the name; a model file without one has no default.
    let mut with_training = program.clone();
    with_training.train = Some(geonetc::check::check_source(source).program.and_then(|p| p.train)?);
    let paths = geonetc::runtime::train::output_paths(&with_training, super::program_dir(file), None).ok()?;
    paths.weights.is_file().then(|| {
        eprintln!(
            "note: using {} (the weights `geonetc run` writes for this model; --weights chooses others)",
            paths.weights.display()
        );
        paths.weights
    })
}

/// Warning lines for an input whose sample interval (ms; `None` when unknown) or crest factor
/// (max |x| / RMS) is far from what the weights saw in training.
pub fn far_from_training(
    meta: &HashMap<String, String>,
    input: &Path,
    section: &ndarray::Array2<f64>,
    dt_ms: Option<f64>,
) -> Vec<String> {
    let mut out = vec![];
    let seen =
        |key: &str| meta.get(key).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0);
    if let (Some(trained), Some(dt)) = (seen("data_dt_ms"), dt_ms.filter(|d| *d > 0.0))
        && (dt / trained > 1.5 || trained / dt > 1.5)
    {
        out.push(format!(
            "warning: {} is sampled every {dt} ms but the model was trained on data sampled every {trained} ms: its frequencies look {:.2}× {} to the model; resample the data or train on data like it",
            input.display(),
            trained / dt,
            if dt > trained { "lower" } else { "higher" }
        ));
    }
    let n = section.len().max(1) as f64;
    let finite = section.iter().filter(|v| v.is_finite());
    let rms = (finite.clone().map(|v| v * v).sum::<f64>() / n).sqrt();
    let peak = finite.fold(0.0f64, |m, v| m.max(v.abs()));
    if let Some(trained) = seen("data_peak_to_rms")
        && rms > 0.0
        && peak / rms > 4.0 * trained
    {
        out.push(format!(
            "warning: {} has amplitudes up to {:.0}× its RMS, the model's training data only {:.0}×: spikes or bursts far above the rest dominate the scaling (the section is scaled to the training data's RMS)",
            input.display(),
            peak / rms,
            trained
        ));
    }
    out
}

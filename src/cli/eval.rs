use super::common::{backend, check_outputs, load_model, load_weights, note_inexact_integers, set_threads};
use super::*;
use geonetc::runtime::infer;
use geonetc::seismic::segy::SeismicFile;
use ndarray::{Array2, ArrayD, Ix2};
use std::path::Path;

#[derive(Debug)]
pub struct EvalArgs {
    pub file: PathBuf,
    pub weights: Option<PathBuf>,
    pub clean: PathBuf,
    pub noisy: PathBuf,
    pub plot: Option<PathBuf>,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
}

/// A section `[traces, samples]` from SEG-Y/SU, or a 2-D `.npy` read as `[time, traces]`;
/// never empty.
fn read_section(path: &Path, be: geonetc::runtime::engine::Backend) -> Result<Array2<f64>, String> {
    let section = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let a: ArrayD<f64> = geonetc::seismic::npy::read_nonempty(path)?;
        let a = a
            .into_dimensionality::<Ix2>()
            .map_err(|_| format!("{}: expected a 2-D [time, traces] array", path.display()))?;
        a.t().to_owned()
    } else {
        let f = SeismicFile::open(path).map_err(|e| e.to_string())?;
        let section = f.section_f64();
        note_inexact_integers(&f, &section, be);
        section
    };
    let (traces, samples) = section.dim();
    if traces == 0 || samples == 0 {
        return Err(format!(
            "{}: the section is empty ({traces} traces of {samples} samples)",
            path.display()
        ));
    }
    Ok(section)
}

fn snr_db(clean: &Array2<f64>, estimate: &Array2<f64>) -> f64 {
    let s: f64 = clean.iter().map(|&v| v * v).sum();
    let e: f64 = clean.iter().zip(estimate).map(|(&a, &b)| (a - b) * (a - b)).sum();
    geonetc::runtime::data::snr_from_energies(s, e)
}

/// `  12.34 dB`, `    inf dB` (the estimate equals the clean data), `    NaN dB`.
fn fmt_db(db: f64) -> String {
    format!("{db:7.2} dB")
}

pub fn run(mut args: EvalArgs) -> ExitCode {
    let (program, source) = match load_model(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    args.weights = super::fit::weights_or_default(&program, &source, &args.file, args.weights.take());
    if let Err(code) =
        super::weights::check_weights_arg(&program, &source, &args.file, args.weights.as_deref())
    {
        return code;
    }
    if let Err(code) = set_threads(args.threads) {
        return code;
    }
    if let Some(png) = &args.plot {
        if let Err(e) = geonetc::seismic::plot::image_format(png) {
            return fail(e);
        }
        let mut inputs =
            vec![("the clean data", args.clean.as_path()), ("the noisy data", args.noisy.as_path())];
        inputs.push(("the program", args.file.as_path()));
        inputs.extend(args.weights.as_deref().map(|w| ("the weights", w)));
        if let Err(code) = check_outputs(&[("--plot", png)], &inputs) {
            return code;
        }
    }
    let (clean, noisy) = match (
        read_section(&args.clean, backend(args.backend)),
        read_section(&args.noisy, backend(args.backend)),
    ) {
        (Ok(c), Ok(n)) => (c, n),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    if clean.dim() != noisy.dim() {
        return fail(format_args!(
            "{} is {:?} but {} is {:?}",
            args.clean.display(),
            clean.dim(),
            args.noisy.display(),
            noisy.dim()
        ));
    }
    let (weights, data_rms) = match load_weights(&program, args.weights.as_deref()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    super::infer::warn_far_from_training(weights.as_ref(), &args.noisy, &noisy, None);
    let load = |_: &geonetc::ir::Graph| weights.as_ref().map(|(p, _)| p.clone()).ok_or_else(String::new);
    let loader: Option<infer::ParamLoader> = if weights.is_some() { Some(&load) } else { None };
    let declared = program.model.inputs[0].shape.clone();
    let started = std::time::Instant::now();
    match infer::run_section(&source, loader, &noisy, &declared, data_rms, backend(args.backend)) {
        Ok(denoised) => {
            println!("SNR noisy    {}", fmt_db(snr_db(&clean, &noisy)));
            println!(
                "SNR denoised {}   ({:.1} s)",
                fmt_db(snr_db(&clean, &denoised)),
                started.elapsed().as_secs_f64()
            );
            if let Some(png) = &args.plot {
                let (noisy, denoised) = (noisy.mapv(|v| v as f32), denoised.mapv(|v| v as f32));
                let removed = &noisy - &denoised;
                let dt = SeismicFile::open(&args.noisy).map_or(0, |f| f.dt_us);
                let panels = [("noisy", &noisy), ("denoised", &denoised), ("removed", &removed)];
                if let Err(e) = geonetc::seismic::plot::panels(
                    png,
                    &panels,
                    dt,
                    geonetc::seismic::plot::Palette::RedWhiteBlue,
                ) {
                    return fail(e);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!("{}: {e}", args.noisy.display())),
    }
}

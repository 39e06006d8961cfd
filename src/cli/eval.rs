use super::common::{backend, load_program, set_threads};
use super::*;
use geonetc::runtime::{checkpoint, data, infer};
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

/// A section `[traces, samples]` from SEG-Y/SU, or a 2-D `.npy` read as `[time, traces]`.
fn read_section(path: &Path) -> Result<Array2<f32>, String> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let a: ArrayD<f64> = data::read_npy(path)?;
        let a = a
            .into_dimensionality::<Ix2>()
            .map_err(|_| format!("{}: expected a 2-D [time, traces] array", path.display()))?;
        Ok(a.t().mapv(|v| v as f32))
    } else {
        SeismicFile::open(path).map(|f| f.section()).map_err(|e| e.to_string())
    }
}

fn snr_db(clean: &Array2<f32>, estimate: &Array2<f32>) -> f64 {
    let s: f64 = clean.iter().map(|&v| (v as f64).powi(2)).sum();
    let e: f64 = clean.iter().zip(estimate).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
    10.0 * (s / e.max(1e-300)).log10()
}

pub fn run(args: EvalArgs) -> ExitCode {
    let (program, source) = match load_program(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(w) = &args.weights
        && let Err(code) = super::weights::check_file(
            &program,
            &source,
            &args.file,
            w,
            geonetc::weights::WeightsKind::Weights,
            None,
        )
    {
        return code;
    }
    if let Err(code) = set_threads(args.threads) {
        return code;
    }
    let (clean, noisy) = match (read_section(&args.clean), read_section(&args.noisy)) {
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
    let g = geonetc::ir::lower(&program, 1);
    let weights = match &args.weights {
        Some(w) => match checkpoint::load_weights(w, &g) {
            Ok(w) => Some(w),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let data_rms = weights.as_ref().and_then(|(_, m)| m.get("data_rms")).and_then(|v| v.parse().ok());
    let load = |_: &geonetc::ir::Graph| weights.as_ref().map(|(p, _)| p.clone()).ok_or_else(String::new);
    let loader: Option<infer::ParamLoader> = if weights.is_some() { Some(&load) } else { None };
    let declared = program.model.inputs[0].shape.clone();
    let started = std::time::Instant::now();
    match infer::run_section(&source, loader, &noisy, &declared, data_rms, backend(args.backend)) {
        Ok(denoised) => {
            println!("SNR noisy    {:7.2} dB", snr_db(&clean, &noisy));
            println!(
                "SNR denoised {:7.2} dB   ({:.1} s)",
                snr_db(&clean, &denoised),
                started.elapsed().as_secs_f64()
            );
            if let Some(png) = &args.plot {
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
        Err(e) => fail(e),
    }
}

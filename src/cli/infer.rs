use super::common::{backend, load_program, set_threads};
use super::*;
use geonetc::runtime::{checkpoint, data, infer};
use geonetc::seismic::segy::SeismicFile;
use std::path::Path;

/// Parameters and the metadata stored beside them.
type Weights = (geonetc::ir::Params, std::collections::HashMap<String, String>);

#[derive(Debug)]
pub struct InferArgs {
    pub file: PathBuf,
    pub weights: Option<PathBuf>,
    pub input: PathBuf,
    pub output: PathBuf,
    pub plot: Option<PathBuf>,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
}

pub fn run(args: InferArgs) -> ExitCode {
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
    let is_npy = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let declared = program.model.inputs[0].shape.clone();
    // Weights are read once; parameter shapes do not depend on the input size.
    let cache: std::cell::OnceCell<Result<Weights, String>> = std::cell::OnceCell::new();
    let weights = args.weights.clone();
    let load = |g: &geonetc::ir::Graph| match &weights {
        Some(w) => cache.get_or_init(|| checkpoint::load_weights(w, g)).clone().map(|(p, _)| p),
        None => Err(String::new()),
    };
    let loader: Option<infer::ParamLoader> = if args.weights.is_some() { Some(&load) } else { None };
    // Sections are scaled to the training data's RMS, stored with the weights.
    let data_rms = match &args.weights {
        Some(w) => {
            let g = geonetc::ir::lower(&program, 1);
            match cache.get_or_init(|| checkpoint::load_weights(w, &g)) {
                Ok((_, meta)) => meta.get("data_rms").and_then(|v| v.parse().ok()),
                Err(e) => return fail(e),
            }
        }
        None => None,
    };
    if is_npy(&args.input) {
        if !is_npy(&args.output) {
            return fail("a .npy input gives a .npy output: name the output *.npy");
        }
        let input = match data::read_npy(&args.input) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        // A 2-D array for a one-channel 2-D model is a section [time, traces], as `eval` reads
        // it, denoised in blended tiles. (For a 1-D model a 2-D array stays one sample [C, N].)
        if input.ndim() == 2 && matches!(declared.as_slice(), [1, _, _]) {
            let section = input.t().mapv(|v| v as f32).into_dimensionality::<ndarray::Ix2>();
            let Ok(section) = section else { return fail("expected a 2-D array") };
            return match infer::run_section(
                &source,
                loader,
                &section,
                &declared,
                data_rms,
                backend(args.backend),
            ) {
                Ok(y) => {
                    let out = y.t().mapv(f64::from).into_dyn();
                    if let Err(e) = data::write_npy(&args.output, &out) {
                        return fail(e);
                    }
                    if let Some(png) = &args.plot {
                        let removed = &section - &y;
                        let panels = [("input", &section), ("output", &y), ("difference", &removed)];
                        let palette = geonetc::seismic::plot::Palette::RedWhiteBlue;
                        if let Err(e) = geonetc::seismic::plot::panels(png, &panels, 0, palette) {
                            return fail(e);
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        if args.plot.is_some() {
            eprintln!(
                "note: --plot draws sections (SEG-Y/SU or a 2-D [time, traces] .npy); none for this input"
            );
        }
        return match infer::run(&source, loader, &input, &declared, backend(args.backend)) {
            Ok(y) => match data::write_npy(&args.output, &y) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        };
    }
    // SEG-Y or SU: every header is kept, samples replaced.
    let file = match SeismicFile::open(&args.input) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if is_npy(&args.output) {
        return fail(
            "a SEG-Y/SU input gives a SEG-Y/SU output (all headers kept): name the output like the input",
        );
    }
    let section = file.section();
    match infer::run_section(&source, loader, &section, &declared, data_rms, backend(args.backend)) {
        Ok(y) => {
            if let Err(e) = file.write_like(&args.output, &y) {
                return fail(e);
            }
            if let Some(png) = &args.plot {
                let removed = &section - &y;
                let panels = [("input", &section), ("output", &y), ("difference", &removed)];
                if let Err(e) = geonetc::seismic::plot::panels(
                    png,
                    &panels,
                    file.dt_us,
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

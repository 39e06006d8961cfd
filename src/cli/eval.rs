use super::common::{
    backend, check_outputs, hygiene_options, load_model, load_weights, note_inexact_integers, plot_options,
    set_threads,
};
use super::*;
use geonetc::runtime::infer;
use geonetc::seismic::qc;
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
    pub qc: super::QcArgs,
    pub format: Format,
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
    let is_npy = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    // SEG-Y/SU in and no picture: streamed in bounded memory (a picture needs whole sections).
    if args.plot.is_none() && !is_npy(&args.clean) && !is_npy(&args.noisy) {
        return streamed(&args, &program, &source);
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
    let options = hygiene_options(&args.qc);
    let noisy_file = SeismicFile::open(&args.noisy).ok();
    let dead = noisy_file.as_ref().map(geonetc::seismic::hygiene::dead_in_headers).unwrap_or_default();
    let clean_up = infer::SectionHygiene { options: &options, dead_in_header: &dead, target_rms: data_rms };
    let (denoised, report) =
        match infer::run_section(&source, loader, &noisy, &declared, &clean_up, backend(args.backend)) {
            Ok(done) => done,
            Err(e) => return fail(format_args!("{}: {e}", args.noisy.display())),
        };
    let seconds = started.elapsed().as_secs_f64();
    let before = qc::scores(clean.view(), noisy.view());
    let after = qc::scores(clean.view(), denoised.view());
    let removed = &noisy - &denoised;
    let leakage = qc::leakage(removed.view(), denoised.view(), qc::Radii::default());
    let drawn = match &args.plot {
        Some(png) => {
            let f32s = |a: &Array2<f64>| a.mapv(|v| v as f32);
            let error = &clean - &denoised;
            let (n, d, r, c, e) = (f32s(&noisy), f32s(&denoised), f32s(&removed), f32s(&clean), f32s(&error));
            let panels = [
                ("noisy", &n),
                ("denoised", &d),
                ("removed (noisy − denoised)", &r),
                ("clean", &c),
                ("error (clean − denoised)", &e),
            ];
            let axes = match &noisy_file {
                Some(f) => geonetc::seismic::plot::Axes::from_file(f),
                None => geonetc::seismic::plot::Axes::plain(noisy.nrows(), 0),
            };
            match geonetc::seismic::plot::sections(png, &panels, &axes, &plot_options(&args.qc)) {
                Ok(drawn) => Some((png, drawn)),
                Err(e) => return fail(e),
            }
        }
        None => None,
    };
    let measured = Measured {
        data_range: qc::data_range(clean.view()),
        before,
        after,
        leakage,
        hygiene: report,
        seconds,
    };
    print_report(&args, &measured, drawn.as_ref().map(|(p, d)| (p.as_path(), d)));
    ExitCode::SUCCESS
}

/// What `eval` measured, in memory or streamed.
struct Measured {
    data_range: f64,
    before: qc::Scores,
    after: qc::Scores,
    leakage: qc::Leakage,
    hygiene: geonetc::seismic::hygiene::Report,
    seconds: f64,
}

/// `eval` on SEG-Y/SU files of any size: both files read a window of traces at a time, the
/// model run over the noisy one as a 2-D line (runtime/stream_eval.rs); the same numbers as the
/// in-memory path.
fn streamed(args: &EvalArgs, program: &geonetc::check::program::Program, source: &str) -> ExitCode {
    let open = |p: &Path| SeismicFile::open(p).map_err(|e| e.to_string());
    let (clean, noisy) = match (open(&args.clean), open(&args.noisy)) {
        (Ok(c), Ok(n)) => (c, n),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    for (f, path) in [(&clean, &args.clean), (&noisy, &args.noisy)] {
        if f.traces() == 0 || f.samples == 0 {
            return fail(format_args!(
                "{}: the section is empty ({} traces of {} samples)",
                path.display(),
                f.traces(),
                f.samples
            ));
        }
    }
    if (clean.traces(), clean.samples) != (noisy.traces(), noisy.samples) {
        return fail(format_args!(
            "{} is {:?} but {} is {:?}",
            args.clean.display(),
            (clean.traces(), clean.samples),
            args.noisy.display(),
            (noisy.traces(), noisy.samples)
        ));
    }
    let (weights, data_rms) = match load_weights(program, args.weights.as_deref()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let be = backend(args.backend);
    // The far-from-training check on a bounded sample: the first traces of the file.
    let head = super::infer::leading_traces(&noisy, 4096);
    super::infer::warn_far_from_training(weights.as_ref(), &args.noisy, &head, None);
    let load = |_: &geonetc::ir::Graph| weights.as_ref().map(|(p, _)| p.clone()).ok_or_else(String::new);
    let loader: Option<infer::ParamLoader> = if weights.is_some() { Some(&load) } else { None };
    let declared = program.model.inputs[0].shape.clone();
    let stop = super::infer::stop_on_signal();
    let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
    let bar = super::infer::Progress::new();
    let progress = |done: usize, total: usize| bar.update(done, total);
    let opts = geonetc::runtime::stream::StreamOptions {
        along: geonetc::runtime::stream::Along::Inline,
        gather_key: None,
        geometry: geonetc::seismic::geometry::GeometryOptions::default(),
        window_traces: WINDOW_TRACES,
        data_rms,
        hygiene: hygiene_options(&args.qc),
        progress: &progress,
        stop: &stopped,
    };
    let started = std::time::Instant::now();
    let result =
        geonetc::runtime::stream_eval::eval_files(source, loader, be, &declared, &clean, &noisy, &opts);
    bar.finish();
    match result {
        Ok(done) => {
            super::common::note_inexact_int32(&noisy, done.max_abs_input, be);
            let measured = Measured {
                data_range: done.data_range,
                before: done.noisy,
                after: done.denoised,
                leakage: done.leakage,
                hygiene: done.hygiene,
                seconds: started.elapsed().as_secs_f64(),
            };
            print_report(args, &measured, None);
            ExitCode::SUCCESS
        }
        Err(e) if stopped() => {
            eprintln!("error: {e}");
            ExitCode::from(130)
        }
        Err(e) => fail(format_args!("{}: {e}", args.noisy.display())),
    }
}

/// Traces read at a time by streamed `eval` (the clean file's range pass; 1-D models).
const WINDOW_TRACES: usize = 4096;

fn print_report(args: &EvalArgs, m: &Measured, drawn: Option<(&Path, &geonetc::seismic::plot::Drawn)>) {
    let (before, after, leakage, seconds) = (&m.before, &m.after, &m.leakage, m.seconds);
    if args.format == Format::Json {
        let json = serde_json::json!({
            "clean": args.clean.display().to_string(),
            "noisy": args.noisy.display().to_string(),
            "data_range": m.data_range,
            "noisy_scores": before,
            "denoised_scores": after,
            "leakage": leakage,
            "hygiene": m.hygiene,
            "plot": drawn.map(|(p, d)| serde_json::json!({
                "file": p.display().to_string(), "width": d.width, "height": d.height,
                "clip": d.clip, "clip_percentile": d.percentile,
            })),
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        return;
    }
    println!("SNR noisy    {}", fmt_db(before.snr_db));
    println!("SNR denoised {}   ({seconds:.1} s)", fmt_db(after.snr_db));
    println!("PSNR noisy   {}   (peak: the clean data's range {:.4e})", fmt_db(before.psnr_db), m.data_range);
    println!("PSNR denoised{}", fmt_db(after.psnr_db));
    println!("SSIM noisy    {:8.4}   (7 × 7 uniform window)", before.ssim);
    println!("SSIM denoised {:8.4}", after.ssim);
    println!(
        "local similarity of removed noise and output: mean |s| {:.3}, max {:.3}, {:.1} % of samples above 0.3   (triangle radii {} samples × {} traces)",
        leakage.mean_abs,
        leakage.max,
        100.0 * leakage.above_0_3,
        leakage.radii.samples,
        leakage.radii.traces
    );
    print!("{}", m.hygiene.describe());
    if let Some((png, drawn)) = drawn {
        println!("plot {}: {} × {} px, {}", png.display(), drawn.width, drawn.height, drawn.clip_text());
    }
}

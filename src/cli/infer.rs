use super::common::{
    DataFormat, backend, check_outputs, data_format, load_model, load_weights, note_inexact_int32,
    note_inexact_integers, set_threads,
};
use super::*;
use geonetc::runtime::{data, infer};
use geonetc::seismic::segy::SeismicFile;
use std::path::Path;

/// Parameters and the metadata stored beside them.

#[derive(Debug)]
pub struct InferArgs {
    pub file: PathBuf,
    pub weights: Option<PathBuf>,
    pub input: PathBuf,
    pub output: PathBuf,
    pub plot: Option<PathBuf>,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
    pub stream: StreamArgs,
}

/// How SEG-Y/SU input is streamed (3-D volumes, gathers, window size).
#[derive(Debug)]
pub struct StreamArgs {
    pub along: AlongChoice,
    pub gather_key: Option<geonetc::seismic::geometry::HeaderField>,
    pub iline: geonetc::seismic::geometry::HeaderField,
    pub xline: geonetc::seismic::geometry::HeaderField,
    pub window_traces: usize,
}

/// Everything is checked before the model runs (output format, plot format, outputs that would
/// replace an input, unwritable locations), and nothing is written when anything fails.
pub fn run(args: InferArgs) -> ExitCode {
    let (program, source) = match load_model(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(code) =
        super::weights::check_weights_arg(&program, &source, &args.file, args.weights.as_deref())
    {
        return code;
    }
    if let Err(code) = set_threads(args.threads) {
        return code;
    }
    let out_format = match data_format(&args.output) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if let Some(png) = &args.plot
        && let Err(e) = geonetc::seismic::plot::image_format(png)
    {
        return fail(e);
    }
    let mut outputs = vec![("--output", args.output.as_path())];
    outputs.extend(args.plot.as_deref().map(|p| ("--plot", p)));
    let mut inputs = vec![("the input", args.input.as_path()), ("the program", args.file.as_path())];
    inputs.extend(args.weights.as_deref().map(|w| ("the weights", w)));
    if let Err(code) = check_outputs(&outputs, &inputs) {
        return code;
    }
    if program.model.inputs.len() != 1 {
        return fail(format_args!(
            "{}: the model has {} inputs; infer feeds one input file, so it runs models with one input",
            args.file.display(),
            program.model.inputs.len()
        ));
    }
    let declared = program.model.inputs[0].shape.clone();
    let (weights, rms) = match load_weights(&program, args.weights.as_deref()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let load = |_: &geonetc::ir::Graph| weights.as_ref().map(|(p, _)| p.clone()).ok_or_else(String::new);
    let loader: Option<infer::ParamLoader> = if weights.is_some() { Some(&load) } else { None };
    let be = backend(args.backend);
    let on_input = |e: String| fail(format_args!("{}: {e}", args.input.display()));
    let is_npy = args.input.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));

    if is_npy {
        let input = match geonetc::seismic::npy::read_nonempty(&args.input) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        if input.is_empty() {
            return on_input(format!("the array is empty (shape {:?})", input.shape()));
        }
        if out_format != DataFormat::Npy {
            return fail(format_args!(
                "{}: a .npy input has no SEG-Y/SU headers to write; name the output *.npy",
                args.output.display()
            ));
        }
        // A 2-D array for a one-channel 2-D model is a section [time, traces], as `eval` reads
        // it, denoised in blended tiles. (For a 1-D model a 2-D array stays one sample [C, N].)
        if input.ndim() == 2 && matches!(declared.as_slice(), [1, _, _]) {
            let section = input.t().to_owned().into_dimensionality::<ndarray::Ix2>();
            let Ok(section) = section else { return fail("expected a 2-D array") };
            return match infer::run_section(&source, loader, &section, &declared, rms, be) {
                Ok(y) => {
                    let out = y.t().to_owned().into_dyn();
                    if let Err(e) = data::write_npy(&args.output, &out) {
                        return fail(e);
                    }
                    plot(args.plot.as_deref(), &section, &y, 0)
                }
                Err(e) => on_input(e),
            };
        }
        if args.plot.is_some() {
            eprintln!(
                "note: --plot draws sections (SEG-Y/SU or a 2-D [time, traces] .npy); none for this input"
            );
        }
        return match infer::run(&source, loader, &input, &declared, be) {
            Ok(y) => match data::write_npy(&args.output, &y) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => on_input(e),
        };
    }
    // SEG-Y or SU.
    let file = match SeismicFile::open(&args.input) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if file.traces() == 0 || file.samples == 0 {
        return on_input(format!(
            "the section is empty ({} traces of {} samples)",
            file.traces(),
            file.samples
        ));
    }
    // Same format out as in, no picture: streamed in bounded memory. (A picture or a format
    // conversion holds the section.)
    if out_format == DataFormat::Seismic(file.kind) && args.plot.is_none() {
        return stream(&args, &file, &source, loader, &declared, rms, be);
    }
    let section = file.section_f64();
    note_inexact_integers(&file, &section, be);
    match infer::run_section(&source, loader, &section, &declared, rms, be) {
        Ok(y) => {
            let written = match out_format {
                // Every header kept (SEG-Y → SEG-Y, SU → SU), or converted between the two.
                DataFormat::Seismic(kind) => file.write_as(&args.output, kind, &y).map_err(|e| e.to_string()),
                // The section as a 2-D [time, traces] array, as `eval` and `infer` read one.
                DataFormat::Npy => data::write_npy(&args.output, &y.t().to_owned().into_dyn()),
            };
            if let Err(e) = written {
                return fail(e);
            }
            plot(args.plot.as_deref(), &section, &y, file.dt_us)
        }
        Err(e) => on_input(e),
    }
}

fn plot(
    png: Option<&Path>,
    section: &ndarray::Array2<f64>,
    y: &ndarray::Array2<f64>,
    dt_us: u32,
) -> ExitCode {
    let Some(png) = png else { return ExitCode::SUCCESS };
    let (section, y) = (section.mapv(|v| v as f32), y.mapv(|v| v as f32));
    let removed = &section - &y;
    let panels = [("input", &section), ("output", &y), ("difference", &removed)];
    match geonetc::seismic::plot::panels(png, &panels, dt_us, geonetc::seismic::plot::Palette::RedWhiteBlue) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn stream(
    args: &InferArgs,
    file: &SeismicFile,
    source: &str,
    loader: Option<infer::ParamLoader>,
    declared: &[usize],
    rms: Option<f64>,
    be: geonetc::runtime::engine::Backend,
) -> ExitCode {
    use geonetc::runtime::stream::{Along, StreamOptions, infer_file};
    use std::io::IsTerminal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C or SIGTERM: the run stops at the next window and the temporary output is removed.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} traces  {per_sec}  [{elapsed} < {eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let started = std::time::Instant::now();
    let last_line = std::cell::Cell::new(0usize);
    let progress = |done: usize, total: usize| match &bar {
        Some(b) => {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
        None => {
            // Plain lines, about every tenth of the work.
            let tenth = done * 10 / total.max(1);
            if tenth > last_line.get() {
                last_line.set(tenth);
                let secs = started.elapsed().as_secs_f64();
                let rate = done as f64 / secs.max(1e-9);
                eprintln!(
                    "{done}/{total} traces, {rate:.0} traces/s, {:.0} s left",
                    (total - done) as f64 / rate.max(1e-9)
                );
            }
        }
    };
    let stopped = || stop.load(Ordering::SeqCst);
    let s = &args.stream;
    let opts = StreamOptions {
        along: match s.along {
            AlongChoice::Inline => Along::Inline,
            AlongChoice::Crossline => Along::Crossline,
            AlongChoice::Both => Along::Both,
        },
        gather_key: s.gather_key,
        geometry: geonetc::seismic::geometry::GeometryOptions { inline: s.iline, crossline: s.xline },
        window_traces: s.window_traces,
        data_rms: rms,
        progress: &progress,
        stop: &stopped,
    };
    let result = infer_file(source, loader, be, declared, file, &args.output, opts);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(done) => {
            let mode = done.mode;
            note_inexact_int32(file, done.max_abs_input, be);
            eprintln!(
                "wrote {} ({} traces, {mode}) in {:.1} s",
                args.output.display(),
                file.traces(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) if stopped() => {
            eprintln!("error: {e}");
            ExitCode::from(130)
        }
        Err(e) => fail(format_args!("{}: {e}", args.input.display())),
    }
}

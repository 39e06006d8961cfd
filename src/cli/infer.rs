use super::common::{
    DataFormat, backend, check_outputs, data_format, hygiene_options, load_model, load_weights,
    note_inexact_int32, note_inexact_integers, plot_options, scale_note, set_threads,
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
    pub residual: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub qc: super::QcArgs,
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
pub fn run(mut args: InferArgs) -> ExitCode {
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
    let out_format = match data_format(&args.output) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if let Some(png) = &args.plot
        && let Err(e) = geonetc::seismic::plot::image_format(png)
    {
        return fail(e);
    }
    let residual_format = match args.residual.as_deref().map(data_format).transpose() {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let mut outputs = vec![("--output", args.output.as_path())];
    outputs.extend(args.residual.as_deref().map(|p| ("--residual", p)));
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
    let options = hygiene_options(&args.qc);

    if is_npy {
        let input = match geonetc::seismic::npy::read_nonempty(&args.input) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        if input.is_empty() {
            return on_input(format!("the array is empty (shape {:?})", input.shape()));
        }
        for (flag, path, format) in [
            ("--output", Some(&args.output), Some(out_format)),
            ("--residual", args.residual.as_ref(), residual_format),
        ] {
            if let (Some(path), Some(format)) = (path, format)
                && format != DataFormat::Npy
            {
                return fail(format_args!(
                    "{}: a .npy input has no SEG-Y/SU headers to write; name the {flag} file *.npy",
                    path.display()
                ));
            }
        }
        // A 2-D array for a one-channel 2-D model is a section [time, traces], as `eval` reads
        // it, denoised in blended tiles. (For a 1-D model a 2-D array stays one sample [C, N].)
        if input.ndim() == 2 && matches!(declared.as_slice(), [1, _, _]) {
            let section = input.t().to_owned().into_dimensionality::<ndarray::Ix2>();
            let Ok(section) = section else { return fail("expected a 2-D array") };
            warn_far_from_training(weights.as_ref(), &args.input, &section, None);
            let clean = infer::SectionHygiene { options: &options, dead_in_header: &[], target_rms: rms };
            return match infer::run_section(&source, loader, &section, &declared, &clean, be) {
                Ok((y, report)) => {
                    let removed = &section - &y;
                    let mut writes = vec![(args.output.as_path(), y.t().to_owned().into_dyn())];
                    writes.extend(args.residual.as_deref().map(|r| (r, removed.t().to_owned().into_dyn())));
                    for (path, a) in writes {
                        if let Err(e) = data::write_npy(path, &a) {
                            return fail(e);
                        }
                    }
                    print!("{}{}", report.describe(), scale_note(&weights));
                    let axes = geonetc::seismic::plot::Axes::plain(section.nrows(), 0);
                    plot(args.plot.as_deref(), &section, &y, &axes, &args.qc)
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
            Ok(y) => {
                let residual = match &args.residual {
                    Some(_) if y.shape() != input.shape() => {
                        return on_input(format!(
                            "the model turns shape {:?} into {:?}, so there is no input − output to write (--residual); nothing written",
                            input.shape(),
                            y.shape()
                        ));
                    }
                    Some(path) => Some((path, &input - &y)),
                    None => None,
                };
                let mut writes = vec![(&args.output, y)];
                writes.extend(residual);
                for (path, a) in writes {
                    if let Err(e) = data::write_npy(path, &a) {
                        return fail(e);
                    }
                }
                ExitCode::SUCCESS
            }
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
    if out_format == DataFormat::Seismic(file.kind) && args.plot.is_none() && args.residual.is_none() {
        // The far-from-training check on a bounded sample: the first traces of the file.
        let head = leading_traces(&file, 4096);
        warn_far_from_training(weights.as_ref(), &args.input, &head, Some(f64::from(file.dt_us) / 1000.0));
        return stream(&args, &file, &source, loader, &declared, (rms, &scale_note(&weights)), be);
    }
    let section = file.section_f64();
    note_inexact_integers(&file, &section, be);
    warn_far_from_training(weights.as_ref(), &args.input, &section, Some(f64::from(file.dt_us) / 1000.0));
    let dead = geonetc::seismic::hygiene::dead_in_headers(&file);
    let clean = infer::SectionHygiene { options: &options, dead_in_header: &dead, target_rms: rms };
    match infer::run_section(&source, loader, &section, &declared, &clean, be) {
        Ok((y, report)) => {
            let removed = &section - &y;
            let mut writes = vec![(args.output.as_path(), out_format, &y)];
            if let (Some(path), Some(format)) = (args.residual.as_deref(), residual_format) {
                writes.push((path, format, &removed));
            }
            for (path, format, a) in writes {
                let written = match format {
                    // Every header kept (SEG-Y → SEG-Y, SU → SU), or converted between the two.
                    DataFormat::Seismic(kind) => file.write_as(path, kind, a).map_err(|e| e.to_string()),
                    // The section as a 2-D [time, traces] array, as `eval` and `infer` read one.
                    DataFormat::Npy => data::write_npy(path, &a.t().to_owned().into_dyn()),
                };
                if let Err(e) = written {
                    return fail(e);
                }
            }
            print!("{}{}", report.describe(), scale_note(&weights));
            plot(
                args.plot.as_deref(),
                &section,
                &y,
                &geonetc::seismic::plot::Axes::from_file(&file),
                &args.qc,
            )
        }
        Err(e) => on_input(e),
    }
}

/// Says when the input is far from what the weights were trained on (see `fit`).
/// The first `n` traces of `file` as `[samples, traces]` (fewer if the file is shorter).
pub(super) fn leading_traces(file: &SeismicFile, n: usize) -> ndarray::Array2<f64> {
    let n = n.min(file.traces());
    let mut out = ndarray::Array2::zeros((file.samples, n));
    let mut trace = vec![0f32; file.samples];
    for j in 0..n {
        if file.read_trace(j, &mut trace).is_some() {
            out.column_mut(j).iter_mut().zip(&trace).for_each(|(o, &v)| *o = f64::from(v));
        }
    }
    out
}

pub fn warn_far_from_training(
    weights: Option<&super::common::Weights>,
    input: &Path,
    section: &ndarray::Array2<f64>,
    dt_ms: Option<f64>,
) {
    if let Some((_, meta)) = weights {
        for line in super::fit::far_from_training(meta, input, section, dt_ms) {
            eprintln!("{line}");
        }
    }
}

fn plot(
    png: Option<&Path>,
    section: &ndarray::Array2<f64>,
    y: &ndarray::Array2<f64>,
    axes: &geonetc::seismic::plot::Axes,
    qc: &super::QcArgs,
) -> ExitCode {
    let Some(png) = png else { return ExitCode::SUCCESS };
    let (section, y) = (section.mapv(|v| v as f32), y.mapv(|v| v as f32));
    let removed = &section - &y;
    let panels = [("input", &section), ("output", &y), ("removed (input − output)", &removed)];
    match geonetc::seismic::plot::sections(png, &panels, axes, &plot_options(qc)) {
        Ok(drawn) => {
            println!("plot {}: {} × {} px, {}", png.display(), drawn.width, drawn.height, drawn.clip_text());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn stream(
    args: &InferArgs,
    file: &SeismicFile,
    source: &str,
    loader: Option<infer::ParamLoader>,
    declared: &[usize],
    (rms, note): (Option<f64>, &str),
    be: geonetc::runtime::engine::Backend,
) -> ExitCode {
    use geonetc::runtime::stream::{Along, StreamOptions, infer_file};
    use std::sync::atomic::Ordering;
    let stop = stop_on_signal();
    let started = std::time::Instant::now();
    let bar = Progress::new();
    let progress = |done: usize, total: usize| bar.update(done, total);
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
        hygiene: hygiene_options(&args.qc),
        progress: &progress,
        stop: &stopped,
    };
    let result = infer_file(source, loader, be, declared, file, &args.output, opts);
    bar.finish();
    match result {
        Ok(done) => {
            let mode = done.mode;
            note_inexact_int32(file, done.max_abs_input, be);
            print!("{}{}", done.hygiene.describe(), note);
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

/// A flag that Ctrl-C or SIGTERM sets: a streamed run stops at the next window (and removes
/// its temporary output).
pub(super) fn stop_on_signal() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    stop
}

/// The progress of a streamed run on stderr: a bar with throughput and time left on a
/// terminal, plain lines about every tenth of the work otherwise.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: std::cell::Cell<std::time::Instant>,
    last_line: std::cell::Cell<usize>,
}

impl Progress {
    pub(super) fn new() -> Progress {
        use std::io::IsTerminal;
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
        Progress {
            bar,
            started: std::cell::Cell::new(std::time::Instant::now()),
            last_line: std::cell::Cell::new(0),
        }
    }

    /// `done` of `total` traces; a new pass starts when `done` goes back.
    pub(super) fn update(&self, done: usize, total: usize) {
        match &self.bar {
            Some(b) => {
                b.set_length(total as u64);
                b.set_position(done as u64);
            }
            None => {
                let tenth = done * 10 / total.max(1);
                if tenth < self.last_line.get() {
                    self.last_line.set(0);
                    self.started.set(std::time::Instant::now());
                }
                if tenth > self.last_line.get() {
                    self.last_line.set(tenth);
                    let secs = self.started.get().elapsed().as_secs_f64();
                    let rate = done as f64 / secs.max(1e-9);
                    eprintln!(
                        "{done}/{total} traces, {rate:.0} traces/s, {:.0} s left",
                        (total - done) as f64 / rate.max(1e-9)
                    );
                }
            }
        }
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

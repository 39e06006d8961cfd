//! Inference over a SEG-Y/SU file in bounded memory: traces are read with positioned reads a
//! window at a time and the output is written progressively into a temporary file beside the
//! target (renamed at the end, removed on error or interruption), every header byte copied
//! from the input. Memory depends on the model, the tile and the window, not on the file.
//!
//! - 1-D models ([1, N]) run trace by trace, `window_traces` at a time.
//! - 2-D models ([1, H, W]) on a 2-D line: overlapping tiles streamed along the line
//!   ([`apply_tiled_streaming`](crate::seismic::tiling::apply_tiled_streaming)), the same result
//!   as tiling the whole section at once.
//! - Pre-stack data with a gather key: each gather (run of consecutive traces sharing the key)
//!   on its own; no tile crosses a gather boundary.
//! - A regular 3-D volume: each inline section, each crossline section, or both averaged
//!   (`Along`). Missing traces are not in the file and stay so; the model sees zeros there.
//!
//! Dead traces (trace identification code 2) are written back as they were, everywhere. With
//! the training data's RMS (from the weights), the input is scaled by one factor for the whole
//! file (an extra reading pass computes its RMS), as section inference does.

use super::engine::Backend;
use super::infer::{ParamLoader, Runner, check_size_preserving};
use crate::output::AtomicFile;
use crate::seismic::geometry::{Geometry, GeometryOptions, HeaderField, Layout, gathers};
use crate::seismic::hygiene::{self, NonFinite, Options};
use crate::seismic::segy::{SeismicFile, write_at};
use crate::seismic::{apply_tiled, apply_tiled_streaming};
use ndarray::{Array2, Axis};
use std::path::Path;

/// Which sections of a 3-D volume a 2-D model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Along {
    Inline,
    Crossline,
    /// Both, averaged.
    Both,
}

pub struct StreamOptions<'a> {
    pub along: Along,
    /// Pre-stack: process gathers of consecutive traces sharing this header field.
    pub gather_key: Option<HeaderField>,
    pub geometry: GeometryOptions,
    /// Traces per read for 1-D models and for the RMS pass.
    pub window_traces: usize,
    pub data_rms: Option<f64>,
    /// Field-data hygiene, as for an in-memory section (`seismic::hygiene`): non-finite samples
    /// refused (or masked), the scale a clipped RMS of the live samples, dead and muted samples
    /// passed through. Mutes are found trace by trace, so windows give the same answer.
    pub hygiene: crate::seismic::hygiene::Options,
    /// Called with (traces written, traces to write) as work proceeds.
    pub progress: &'a dyn Fn(usize, usize),
    /// Polled between windows; true stops the run (an interruption: nothing is written).
    pub stop: &'a dyn Fn() -> bool,
}

/// What ran, for the summary line.
pub fn describe_mode(declared: &[usize], geometry: Option<&Geometry>, opts: &StreamOptions) -> String {
    match (declared, opts.gather_key, geometry) {
        ([1, _], _, _) => "trace by trace".into(),
        (_, Some(k), _) => format!("gather by gather (key at byte {})", k.byte),
        (_, _, Some(g)) if g.layout == Layout::Volume => {
            format!("3-D volume along {}", format!("{:?}", opts.along).to_lowercase())
        }
        _ => "2-D line in tiles".into(),
    }
}

/// What a streamed run did.
pub struct Streamed {
    /// A short description of what ran (line, gathers, volume along ...).
    pub mode: String,
    /// The largest |sample| of the input the model saw (int32 beyond ±2^24 is inexact in f32).
    pub max_abs_input: f64,
    /// What field-data hygiene found and did (dead traces, mutes, non-finite samples, scale).
    pub hygiene: hygiene::Report,
}

/// Runs the model on every trace of `input` and writes `out` in the same format.
pub fn infer_file(
    source: &str,
    params: Option<ParamLoader>,
    backend: Backend,
    declared: &[usize],
    input: &SeismicFile,
    out: &Path,
    opts: StreamOptions,
) -> Result<Streamed, String> {
    let (mut ctx, report) = prepare(source, params, backend, input, out, &opts)?;
    let mode = run_modes(&mut ctx, source, declared, opts)?;
    Ok(Streamed { mode, max_abs_input: ctx.max_abs.get(), hygiene: report })
}

/// The context of a run over `input`, after the one pass before any output: non-finite
/// samples are refused there, and the scale is set.
fn prepare<'a, 'p>(
    source: &'p str,
    params: Option<ParamLoader<'p>>,
    backend: Backend,
    input: &'a SeismicFile,
    out: &'a Path,
    opts: &StreamOptions,
) -> Result<(Context<'a, 'p>, hygiene::Report), String> {
    if input.traces() == 0 || input.samples == 0 {
        return Err(format!("the section is empty ({} traces of {} samples)", input.traces(), input.samples));
    }
    let mut ctx = Context {
        input,
        out,
        runner: Runner::new(source, params, backend),
        scale: 1.0,
        hygiene: Options::default(),
        done: 0,
        total: 0,
        max_abs: std::cell::Cell::new(0.0),
    };
    // One pass before any output: non-finite samples are refused here, and the scale is set.
    let (found, (rms, clip, live), _) = file_scan(input, opts.window_traces, &opts.hygiene, opts.stop)?;
    if let Some(target) = opts.data_rms
        && rms > 0.0
        && target > 0.0
        && (target / rms).is_normal()
    {
        ctx.scale = target / rms;
    }
    let scale = hygiene::Scale {
        method: "clipped RMS",
        clip_quantile: opts.hygiene.clip_quantile,
        clip,
        clipped_rms: rms,
        live_samples: live,
        target_rms: opts.data_rms,
        factor: ctx.scale,
    };
    let report = hygiene::Report::new(&found, scale, &opts.hygiene);
    ctx.hygiene = opts.hygiene.clone();
    Ok((ctx, report))
}

/// Receives `(first trace, [samples, count])` blocks of a streamed run's output.
pub type Consumer<'c> = dyn FnMut(usize, &Array2<f64>) -> Result<(), String> + 'c;

/// Where the model's output goes, a block of consecutive traces at a time, in trace order.
enum Sink<'s> {
    /// Encoded into the output file, every header byte kept.
    File(&'s mut AtomicFile),
    /// Handed over as `(first trace, [samples, count])` in the file's units (f64, not
    /// encoded), dead and masked samples as the input holds them.
    Columns(&'s mut Consumer<'s>),
}

/// The model over a whole file seen as one 2-D line in file order (or trace by trace for a
/// 1-D model), exactly as `infer::run_section` treats the section held in memory, with the
/// output handed to a consumer instead of a file: `eval` on files of any size. Prepared once
/// (the hygiene scan and the scale), then run as often as the consumer needs passes.
pub struct LineRun<'a, 'p> {
    ctx: Context<'a, 'p>,
    source: &'p str,
    declared: Vec<usize>,
    /// What field-data hygiene found and did over the whole file.
    pub hygiene: hygiene::Report,
}

impl<'a, 'p> LineRun<'a, 'p> {
    pub fn new(
        source: &'p str,
        params: Option<ParamLoader<'p>>,
        backend: Backend,
        declared: &[usize],
        input: &'a SeismicFile,
        opts: &StreamOptions,
    ) -> Result<LineRun<'a, 'p>, String> {
        // No output file: the path only names one in messages of the file sink.
        let (ctx, hygiene) = prepare(source, params, backend, input, Path::new(""), opts)?;
        Ok(LineRun { ctx, source, declared: declared.to_vec(), hygiene })
    }

    /// The largest |sample| of the input the model saw so far.
    pub fn max_abs_input(&self) -> f64 {
        self.ctx.max_abs.get()
    }

    /// One pass of the model over the file; `consume(first, block)` gets every trace once, in
    /// order, `block` being `[samples, count]` in the file's units.
    pub fn run(&mut self, opts: &StreamOptions, consume: &mut Consumer<'_>) -> Result<(), String> {
        let ctx = &mut self.ctx;
        ctx.done = 0;
        ctx.total = ctx.input.traces();
        let mut sink = Sink::Columns(consume);
        match self.declared.as_slice() {
            [1, _] => ctx.trace_by_trace(&mut sink, &self.declared, opts),
            [1, h, w] => {
                check_size_preserving(self.source)?;
                let traces = ctx.input.traces();
                let overlap = (h.min(w) / 4).max(1);
                ctx.stream_range(&mut sink, 0, traces, [*h, *w], overlap, &self.declared, opts)
            }
            declared => Err(format!(
                "a SEG-Y section feeds models with one input channel ([1, N] or [1, H, W]); this one takes {declared:?}"
            )),
        }
    }
}

/// The mode `declared`, the options and the file's geometry call for; returns its description.
fn run_modes(
    ctx: &mut Context,
    source: &str,
    declared: &[usize],
    opts: StreamOptions,
) -> Result<String, String> {
    let (input, out) = (ctx.input, ctx.out);
    match declared {
        [1, _] => {
            ctx.total = input.traces();
            let mut file = start_in_order(input, out)?;
            let description = describe_mode(declared, None, &opts);
            ctx.trace_by_trace(&mut Sink::File(&mut file), declared, &opts)?;
            file.commit()?;
            Ok(description)
        }
        [1, h, w] => {
            check_size_preserving(source)?;
            let tile = [*h, *w];
            let overlap = (h.min(w) / 4).max(1);
            if let Some(key) = opts.gather_key {
                let runs = gathers(input, key)?;
                ctx.total = input.traces();
                let mut file = start_in_order(input, out)?;
                for (first, count, _) in runs {
                    ctx.stream_range(
                        &mut Sink::File(&mut file),
                        first,
                        count,
                        tile,
                        overlap,
                        declared,
                        &opts,
                    )?;
                }
                file.commit()?;
                return Ok(describe_mode(declared, None, &opts));
            }
            let geometry = Geometry::index(input, opts.geometry)?;
            let description = describe_mode(declared, Some(&geometry), &opts);
            match geometry.grid() {
                Some(grid) => {
                    let mut file = input.copy_to_temp(out).map_err(|e| e.to_string())?;
                    let passes: &[(Along, bool)] = match opts.along {
                        Along::Inline => &[(Along::Inline, false)],
                        Along::Crossline => &[(Along::Crossline, false)],
                        Along::Both => &[(Along::Inline, false), (Along::Crossline, true)],
                    };
                    ctx.total = input.traces() * passes.len();
                    for &(along, average) in passes {
                        let sections = match along {
                            Along::Inline => (0..grid.inlines).map(|i| grid.inline(i)).collect::<Vec<_>>(),
                            _ => (0..grid.crosslines).map(|x| grid.crossline(x)).collect(),
                        };
                        for traces in sections {
                            ctx.section(
                                &mut file, &traces, &geometry, tile, overlap, declared, average, &opts,
                            )?;
                        }
                    }
                    file.commit()?;
                }
                None => {
                    ctx.total = input.traces();
                    let mut file = start_in_order(input, out)?;
                    ctx.stream_range(
                        &mut Sink::File(&mut file),
                        0,
                        input.traces(),
                        tile,
                        overlap,
                        declared,
                        &opts,
                    )?;
                    file.commit()?;
                }
            }
            Ok(description)
        }
        _ => Err(format!(
            "a SEG-Y section feeds models with one input channel ([1, N] or [1, H, W]); this one takes {declared:?}"
        )),
    }
}

/// The output's bytes before the first trace (textual, binary and extended headers), copied;
/// traces are then written in order.
fn start_in_order(input: &SeismicFile, out: &Path) -> Result<AtomicFile, String> {
    let mut file = AtomicFile::create(out)?;
    let mut prefix = vec![0u8; input.trace_offset(0)];
    input.read_at(0, &mut prefix).map_err(|e| e.to_string())?;
    write_at(&mut file, out, 0, &prefix).map_err(|e| e.to_string())?;
    Ok(file)
}

/// The RMS of every sample of the file, read a window at a time.
/// At most this many live samples are kept to estimate the clip level of the clipped RMS.
const SCALE_SAMPLES: usize = 4_000_000;

/// What [`file_scan`] returns: what hygiene found; (clipped RMS, clip, live samples); (largest
/// |sample|, plain RMS).
pub(crate) type FileScan = (hygiene::Scan, (f64, f64, usize), (f64, f64));

/// The hygiene pass over the whole file, a window of traces at a time: refuses non-finite
/// samples (unless masked); returns what the scan found over the file (without the per-sample
/// mask) and (clipped RMS, clip level, live samples), the clip estimated from an even subsample
/// of at most [`SCALE_SAMPLES`] live samples when the file is larger; and (largest |sample|,
/// plain RMS) of the finite samples (training's crest factor). Training scales by this same
/// pass (`data::segy`), so training and inference agree on a file's scale.
pub(crate) fn file_scan(
    input: &SeismicFile,
    window: usize,
    options: &Options,
    stop: &dyn Fn() -> bool,
) -> Result<FileScan, String> {
    let mut found = hygiene::Scan {
        nonfinite: vec![],
        dead: vec![],
        muted: 0,
        muted_traces: 0,
        masked: Array2::from_elem((0, 0), false),
    };
    let window = window.max(1);
    let every = (input.traces() * input.samples).div_ceil(SCALE_SAMPLES).max(1);
    let (mut raw, mut live, mut seen) = (Vec::new(), Vec::new(), 0usize);
    let (mut peak, mut squares, mut finite) = (0.0f64, 0.0f64, 0usize);
    for first in (0..input.traces()).step_by(window) {
        if stop() {
            return Err(interrupted());
        }
        let count = window.min(input.traces() - first);
        input.read_raw_traces(first, count, &mut raw).map_err(|e| e.to_string())?;
        let (x, dead) = decode_window(input, &raw, count);
        let scan = hygiene::scan(x.view(), &dead, options);
        if options.nonfinite == NonFinite::Refuse
            && let Some(&(t, s)) = scan.nonfinite.first()
        {
            return Err(hygiene::nonfinite_refusal(first + t, input.traces(), s, x[[t, s]], ""));
        }
        for v in x.iter().filter(|v| v.is_finite()) {
            peak = peak.max(v.abs());
            squares += v * v;
            finite += 1;
        }
        for (v, m) in x.iter().zip(scan.masked.iter()) {
            if !m {
                if seen % every == 0 {
                    live.push(v.abs());
                }
                seen += 1;
            }
        }
        found.nonfinite.extend(scan.nonfinite.iter().map(|&(t, s)| (first + t, s)));
        found.dead.extend(scan.dead.iter().map(|t| first + t));
        found.muted += scan.muted;
        found.muted_traces += scan.muted_traces;
    }
    let all_live = ndarray::Array2::from_shape_vec((1, live.len()), live).map_err(|e| e.to_string())?;
    let none_masked = ndarray::Array2::from_elem(all_live.dim(), false);
    let (rms, clip, _) = hygiene::clipped_rms(all_live.view(), &none_masked, options.clip_quantile);
    let plain_rms = (squares / finite.max(1) as f64).sqrt();
    Ok((found, (rms, clip, seen), (peak, plain_rms)))
}

/// Decoded traces `[count, samples]` of a raw window, and which headers mark them dead.
pub(crate) fn decode_window(input: &SeismicFile, raw: &[u8], count: usize) -> (Array2<f64>, Vec<bool>) {
    let mut x = Array2::zeros((count, input.samples));
    let mut dead = Vec::with_capacity(count);
    for (mut row, trace) in x.rows_mut().into_iter().zip(raw.chunks_exact(input.trace_bytes())) {
        if let Some(row) = row.as_slice_mut() {
            input.decode_samples(trace, row);
        }
        dead.push(is_dead(trace, input));
    }
    (x, dead)
}

fn interrupted() -> String {
    "interrupted: nothing written".into()
}

fn is_dead(raw_trace: &[u8], input: &SeismicFile) -> bool {
    HeaderField::TRACE_ID.read(raw_trace, input.endian) == 2
}

struct Context<'a, 'p> {
    input: &'a SeismicFile,
    out: &'a Path,
    runner: Runner<'p>,
    scale: f64,
    hygiene: Options,
    done: usize,
    total: usize,
    max_abs: std::cell::Cell<f64>,
}

impl Context<'_, '_> {
    fn model_2d(
        &mut self,
        declared: &[usize],
        patch: ndarray::ArrayView2<f64>,
    ) -> Result<Array2<f64>, String> {
        let sample = patch.to_owned().insert_axis(Axis(0)).into_dyn();
        let out = self.runner.run(&sample, declared)?;
        out.index_axis(Axis(0), 0).to_owned().into_dimensionality::<ndarray::Ix2>().map_err(|e| e.to_string())
    }

    /// Decoded, scaled samples of traces `first..first + count` as `[samples, count]`, as the
    /// model sees them: dead, muted and (masked) non-finite samples zero.
    fn read_columns(&self, first: usize, count: usize) -> Result<Array2<f64>, String> {
        let mut raw = Vec::new();
        self.input.read_raw_traces(first, count, &mut raw).map_err(|e| e.to_string())?;
        let (mut x, dead) = decode_window(self.input, &raw, count);
        let scan = hygiene::scan(x.view(), &dead, &self.hygiene);
        let max_abs = x.iter().filter(|v| v.is_finite()).fold(self.max_abs.get(), |m, v| m.max(v.abs()));
        self.max_abs.set(max_abs);
        x.zip_mut_with(&scan.masked, |v, &m| *v = if m { 0.0 } else { *v * self.scale });
        Ok(x.t().to_owned())
    }

    /// `column` (the model's output for one trace, in the file's units) with the trace's
    /// dead, muted and non-finite samples taken from `input_trace` (its raw bytes), as
    /// `hygiene::restore` does for a whole section.
    fn pass_through(&self, input_trace: &[u8], column: &mut [f64]) {
        let mut x = Array2::zeros((1, self.input.samples));
        if let Some(row) = x.as_slice_mut() {
            self.input.decode_samples(input_trace, row);
        }
        let scan = hygiene::scan(x.view(), &[is_dead(input_trace, self.input)], &self.hygiene);
        for ((c, &v), &m) in column.iter_mut().zip(x.iter()).zip(scan.masked.iter()) {
            if m && (self.hygiene.pass_through || !v.is_finite()) {
                *c = v;
            }
        }
    }

    /// Writes `values` (`[samples, count]`, scaled) as traces `first..` with the input's headers
    /// (or hands them, in the file's units, to a consumer); dead traces as they were unless
    /// `--no-pass-through`.
    fn write_columns(&mut self, sink: &mut Sink, first: usize, values: &Array2<f64>) -> Result<(), String> {
        let count = values.ncols();
        let mut raw = Vec::new();
        self.input.read_raw_traces(first, count, &mut raw).map_err(|e| e.to_string())?;
        let tb = self.input.trace_bytes();
        let mut column = vec![0f64; self.input.samples];
        let to_file = matches!(sink, Sink::File(_));
        let mut block = Array2::zeros(if to_file { (0, 0) } else { (self.input.samples, count) });
        for (j, trace) in raw.chunks_exact_mut(tb).enumerate() {
            // (`--no-pass-through`: dead traces get the model's output too, as in memory.)
            if is_dead(trace, self.input) && self.hygiene.pass_through {
                if !to_file {
                    self.input.decode_samples(trace, &mut column);
                    block.column_mut(j).iter_mut().zip(&column).for_each(|(b, &c)| *b = c);
                }
                continue;
            }
            for (c, v) in column.iter_mut().zip(values.column(j)) {
                *c = v / self.scale;
            }
            self.pass_through(trace, &mut column);
            if to_file {
                self.input.encode_samples(&column, trace);
            } else {
                block.column_mut(j).iter_mut().zip(&column).for_each(|(b, &c)| *b = c);
            }
        }
        match sink {
            Sink::File(file) => {
                write_at(file, self.out, self.input.trace_offset(first), &raw).map_err(|e| e.to_string())
            }
            Sink::Columns(consume) => consume(first, &block),
        }
    }

    fn advance(&mut self, n: usize, opts: &StreamOptions) -> Result<(), String> {
        self.done += n;
        (opts.progress)(self.done, self.total);
        if (opts.stop)() { Err(interrupted()) } else { Ok(()) }
    }

    fn trace_by_trace(
        &mut self,
        sink: &mut Sink,
        declared: &[usize],
        opts: &StreamOptions,
    ) -> Result<(), String> {
        let window = opts.window_traces.max(1);
        for first in (0..self.input.traces()).step_by(window) {
            let count = window.min(self.input.traces() - first);
            let x = self.read_columns(first, count)?;
            let batch = x.t().to_owned().insert_axis(Axis(1)).into_dyn();
            let y = self.runner.run(&batch, declared)?;
            let y = y
                .index_axis(Axis(1), 0)
                .to_owned()
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| e.to_string())?;
            if y.dim() != (count, self.input.samples) {
                return Err(format!(
                    "the model turned {count} traces of {} samples into {:?}",
                    self.input.samples,
                    y.dim()
                ));
            }
            self.write_columns(sink, first, &y.t().to_owned())?;
            self.advance(count, opts)?;
        }
        Ok(())
    }

    /// Traces `first..first + count` as one section, tiled and streamed.
    #[allow(clippy::too_many_arguments)]
    fn stream_range(
        &mut self,
        sink: &mut Sink,
        first: usize,
        count: usize,
        tile: [usize; 2],
        overlap: usize,
        declared: &[usize],
        opts: &StreamOptions,
    ) -> Result<(), String> {
        // The closures below each need the context; they run one at a time.
        let samples = self.input.samples;
        let cell = std::cell::RefCell::new(&mut *self);
        apply_tiled_streaming(
            [samples, count],
            tile,
            overlap,
            |a, b| cell.borrow().read_columns(first + a, b - a),
            |patch| cell.borrow_mut().model_2d(declared, patch),
            |at, block| {
                let mut ctx = cell.borrow_mut();
                ctx.write_columns(sink, first + at, &block)?;
                ctx.advance(block.ncols(), opts)
            },
        )
    }

    /// One section of a volume (`traces` in order, `None` where missing): run in memory (a
    /// section, not the file), written to its traces; with `average`, averaged with what an
    /// earlier pass wrote there.
    #[allow(clippy::too_many_arguments)]
    fn section(
        &mut self,
        file: &mut AtomicFile,
        traces: &[Option<usize>],
        geometry: &Geometry,
        tile: [usize; 2],
        overlap: usize,
        declared: &[usize],
        average: bool,
        opts: &StreamOptions,
    ) -> Result<(), String> {
        let samples = self.input.samples;
        let mut x = Array2::<f64>::zeros((samples, traces.len()));
        for (j, t) in traces.iter().enumerate() {
            if let Some(t) = *t
                && !geometry.dead_traces.get(t).copied().unwrap_or(false)
            {
                x.column_mut(j).assign(&self.read_columns(t, 1)?.column(0));
            }
        }
        let y = apply_tiled(&x, tile, overlap, |patch| self.model_2d(declared, patch))?;
        let tb = self.input.trace_bytes();
        let mut raw = vec![0u8; tb];
        // The input trace: its headers are written, and its masked samples passed through.
        let mut input_trace = vec![0u8; tb];
        let mut column = vec![0f64; samples];
        let mut present = 0;
        for (j, t) in traces.iter().enumerate() {
            let Some(t) = *t else { continue };
            present += 1;
            if geometry.dead_traces.get(t).copied().unwrap_or(false) {
                continue;
            }
            let at = self.input.trace_offset(t);
            self.input.read_at(at, &mut input_trace).map_err(|e| e.to_string())?;
            if average {
                use std::os::unix::fs::FileExt;
                file.file()
                    .read_exact_at(&mut raw, at as u64)
                    .map_err(|e| format!("{}: {e}", self.out.display()))?;
                self.input.decode_samples(&raw, &mut column);
                for (c, v) in column.iter_mut().zip(y.column(j)) {
                    *c = 0.5 * (*c + v / self.scale);
                }
            } else {
                raw.copy_from_slice(&input_trace);
                for (c, v) in column.iter_mut().zip(y.column(j)) {
                    *c = v / self.scale;
                }
            }
            self.pass_through(&input_trace, &mut column);
            self.input.encode_samples(&column, &mut raw);
            write_at(file, self.out, at, &raw).map_err(|e| e.to_string())?;
        }
        self.advance(present, opts)
    }
}

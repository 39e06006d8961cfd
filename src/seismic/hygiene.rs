//! Field-data hygiene around a model, on one section, gather or window of traces
//! (`[traces, samples]`): pure functions, so a caller that streams windows of a large file calls
//! them per window. The choices are documented in docs/qc.md:
//!
//! - [`scan`]: non-finite samples (with their trace and sample), dead traces (every sample zero,
//!   or trace identification code 2 in the header) and muted zones (runs of exact zeros at a
//!   trace's start or end of at least [`Options::min_edge_zeros`] samples, or anywhere of at
//!   least [`Options::min_interior_zeros`]).
//! - [`prepare`]: refuses non-finite samples (one line: trace and sample) or, with
//!   [`NonFinite::Mask`], sets them to zero; then scales the section so its clipped RMS is the
//!   training data's RMS. Clipped RMS, not the median absolute deviation: the weights store the
//!   training data's plain RMS, and the clipped RMS estimates that same quantity (it differs from
//!   it only through the top 0.5 % of amplitudes), while the MAD of heavy-tailed seismic
//!   amplitudes is a data-dependent fraction of the RMS. One spike of 1e6 moves the global RMS
//!   by orders of magnitude (the model then sees a section scaled to nearly zero and returns its
//!   biases: a constant, a DC shift); it moves the clipped RMS by one clipped sample.
//! - [`restore`]: scales back and passes masked samples (dead, muted, non-finite) through
//!   unchanged, so mutes stay exact zeros and a masked NaN comes back NaN.

use ndarray::{Array2, ArrayView2};
use serde::Serialize;

/// What to do with NaN or infinite samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinite {
    /// Stop with one line naming the first bad sample (the default).
    Refuse,
    /// Treat them as zero for the model and restore them (NaN stays NaN) in the output.
    Mask,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub nonfinite: NonFinite,
    /// A run of exact zeros touching a trace's first or last sample is a mute from this length.
    pub min_edge_zeros: usize,
    /// A run of exact zeros inside a trace is a mute from this length.
    pub min_interior_zeros: usize,
    /// Amplitudes are clipped at this quantile of the live |samples| before the RMS is taken.
    pub clip_quantile: f64,
    /// Dead, muted (and masked non-finite) samples come back unchanged.
    pub pass_through: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nonfinite: NonFinite::Refuse,
            min_edge_zeros: 2,
            min_interior_zeros: 16,
            clip_quantile: 0.995,
            pass_through: true,
        }
    }
}

/// Which traces of a SEG-Y/SU file its headers mark dead (trace identification code 2).
pub fn dead_in_headers(file: &super::segy::SeismicFile) -> Vec<bool> {
    (0..file.traces()).map(|i| file.trace_header(i).is_some_and(|h| h.trace_id == 2)).collect()
}

/// What [`scan`] found in a section.
#[derive(Clone, Debug)]
pub struct Scan {
    /// `(trace, sample)` of every NaN or infinite sample, 0-based, in trace order.
    pub nonfinite: Vec<(usize, usize)>,
    /// Traces with every sample zero or marked dead in their header, 0-based.
    pub dead: Vec<usize>,
    /// Samples in muted zones of live traces.
    pub muted: usize,
    /// Live traces that have a muted zone.
    pub muted_traces: usize,
    /// Samples the model does not see and the output passes through: dead, muted, non-finite.
    pub masked: Array2<bool>,
}

/// Scans a `[traces, samples]` section. `dead_in_header[i]` says trace `i`'s header marks it
/// dead (trace identification code 2); it may be empty (`.npy` has no headers).
pub fn scan(section: ArrayView2<f64>, dead_in_header: &[bool], options: &Options) -> Scan {
    let (traces, samples) = section.dim();
    let mut masked = Array2::from_elem((traces, samples), false);
    let (mut nonfinite, mut dead, mut muted, mut muted_traces) = (vec![], vec![], 0, 0);
    for (t, trace) in section.rows().into_iter().enumerate() {
        for (s, v) in trace.iter().enumerate() {
            if !v.is_finite() {
                nonfinite.push((t, s));
                masked[[t, s]] = true;
            }
        }
        if dead_in_header.get(t).copied().unwrap_or(false) || trace.iter().all(|&v| v == 0.0) {
            dead.push(t);
            masked.row_mut(t).fill(true);
            continue;
        }
        let mut in_trace = 0;
        let mut s = 0;
        while s < samples {
            if trace[s] != 0.0 {
                s += 1;
                continue;
            }
            let start = s;
            while s < samples && trace[s] == 0.0 {
                s += 1;
            }
            let len = s - start;
            let at_edge = start == 0 || s == samples;
            let min = if at_edge { options.min_edge_zeros } else { options.min_interior_zeros };
            if len >= min.max(1) {
                masked.row_mut(t).slice_mut(ndarray::s![start..s]).fill(true);
                in_trace += len;
            }
        }
        muted += in_trace;
        muted_traces += usize::from(in_trace > 0);
    }
    Scan { nonfinite, dead, muted, muted_traces, masked }
}

/// The clipped RMS of the live (unmasked) samples and the scale factor applied to the section.
#[derive(Clone, Debug, Serialize)]
pub struct Scale {
    /// `"clipped RMS"`: the RMS of the live samples with |x| clipped at `clip`.
    pub method: &'static str,
    /// The quantile of the live |samples| at which they are clipped (0.995).
    pub clip_quantile: f64,
    /// That quantile's value.
    pub clip: f64,
    pub clipped_rms: f64,
    pub live_samples: usize,
    /// The training data's RMS the section is scaled to (None: not scaled).
    pub target_rms: Option<f64>,
    /// The model sees `section × factor`; its output is divided by it.
    pub factor: f64,
}

/// The RMS of the unmasked samples of `section` with |x| clipped at the `q`-quantile of their
/// magnitudes: (clipped RMS, clip, live samples).
pub fn clipped_rms(section: ArrayView2<f64>, masked: &Array2<bool>, q: f64) -> (f64, f64, usize) {
    let mut live: Vec<f64> =
        section.iter().zip(masked.iter()).filter(|(_, m)| !**m).map(|(v, _)| v.abs()).collect();
    if live.is_empty() {
        return (0.0, 0.0, 0);
    }
    let k = ((live.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, clip, _) = live.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    let clip = *clip;
    let sum: f64 = live.iter().map(|v| v.min(clip).powi(2)).sum();
    ((sum / live.len() as f64).sqrt(), clip, live.len())
}

/// A non-finite sample that stops inference: one line (the caller prefixes the file).
pub fn refusal(scan: &Scan, section: ArrayView2<f64>) -> Option<String> {
    let &(t, s) = scan.nonfinite.first()?;
    let n = scan.nonfinite.len();
    let traces: std::collections::BTreeSet<usize> = scan.nonfinite.iter().map(|p| p.0).collect();
    let more =
        if n > 1 { format!(" ({n} non-finite samples in {} traces)", traces.len()) } else { String::new() };
    Some(nonfinite_refusal(t, section.nrows(), s, section[[t, s]], &more))
}

/// The one-line refusal of a non-finite sample: trace `t` (0-based) of `traces`, sample `s`
/// (0-based) with its value, and `more` (how many others, when known).
pub fn nonfinite_refusal(t: usize, traces: usize, s: usize, value: f64, more: &str) -> String {
    format!(
        "trace {} (of {traces}), sample {} is {value}{more}; refusing to denoise NaN or infinite samples (--nonfinite mask treats such samples as zero for the model and writes them back unchanged)",
        t + 1,
        s + 1,
    )
}

/// The section as the model should see it: masked samples zero, scaled so its clipped RMS is
/// `target_rms` (unscaled without one). Refuses non-finite samples unless they are masked.
pub fn prepare(
    section: ArrayView2<f64>,
    scan: &Scan,
    target_rms: Option<f64>,
    options: &Options,
) -> Result<(Array2<f64>, Scale), String> {
    if options.nonfinite == NonFinite::Refuse
        && let Some(message) = refusal(scan, section)
    {
        return Err(message);
    }
    let (rms, clip, live) = clipped_rms(section, &scan.masked, options.clip_quantile);
    let factor = match target_rms {
        Some(target) if rms > 0.0 && target > 0.0 && (target / rms).is_normal() => target / rms,
        _ => 1.0,
    };
    let mut x = section.to_owned();
    x.zip_mut_with(&scan.masked, |v, &m| *v = if m { 0.0 } else { *v * factor });
    let scale = Scale {
        method: "clipped RMS",
        clip_quantile: options.clip_quantile,
        clip,
        clipped_rms: rms,
        live_samples: live,
        target_rms,
        factor,
    };
    Ok((x, scale))
}

/// The model's output in the section's units: divided by the scale factor; masked samples
/// (dead, muted) taken from the input when `pass_through`, and non-finite ones always.
pub fn restore(
    output: ArrayView2<f64>,
    input: ArrayView2<f64>,
    scan: &Scan,
    scale: &Scale,
    options: &Options,
) -> Array2<f64> {
    let mut y = if scale.factor == 1.0 { output.to_owned() } else { output.mapv(|v| v / scale.factor) };
    for ((y, &x), &m) in y.iter_mut().zip(input.iter()).zip(scan.masked.iter()) {
        if m && (options.pass_through || !x.is_finite()) {
            *y = x;
        }
    }
    y
}

/// What hygiene did to one section, for the command's summary.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub nonfinite: usize,
    pub dead_traces: Vec<usize>,
    pub muted_samples: usize,
    pub muted_traces: usize,
    pub passed_through: bool,
    pub scale: Scale,
}

impl Report {
    pub fn new(scan: &Scan, scale: Scale, options: &Options) -> Report {
        Report {
            nonfinite: scan.nonfinite.len(),
            dead_traces: scan.dead.clone(),
            muted_samples: scan.muted,
            muted_traces: scan.muted_traces,
            passed_through: options.pass_through,
            scale,
        }
    }

    /// Two or three lines for a person.
    pub fn describe(&self) -> String {
        let s = &self.scale;
        let mut out = match s.target_rms {
            Some(target) => format!(
                "scale: clipped RMS {:.6e} of {} live samples (|x| clipped at the {}th percentile, {:.6e}) scaled to the training RMS {target:.6e} (×{:.6e})\n",
                s.clipped_rms,
                s.live_samples,
                s.clip_quantile * 100.0,
                s.clip,
                s.factor
            ),
            None => format!(
                "scale: none (the weights state no training RMS); clipped RMS {:.6e} of {} live samples\n",
                s.clipped_rms, s.live_samples
            ),
        };
        let dead = match self.dead_traces.len() {
            0 => "no dead traces".to_string(),
            n => {
                let list: Vec<String> =
                    self.dead_traces.iter().take(8).map(|t| (t + 1).to_string()).collect();
                format!("{n} dead traces ({}{})", list.join(", "), if n > 8 { ", …" } else { "" })
            }
        };
        out.push_str(&format!(
            "hygiene: {dead}, {} muted samples in {} traces, {} non-finite samples masked; {}\n",
            self.muted_samples,
            self.muted_traces,
            self.nonfinite,
            if self.passed_through {
                "dead and muted samples passed through unchanged"
            } else {
                "dead and muted samples denoised like the rest (--no-pass-through)"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn scan_finds_dead_muted_and_nonfinite() {
        let mut x = Array2::from_shape_fn((4, 40), |(t, s)| ((t * 7 + s * 3) % 11) as f64 - 5.0 + 0.5);
        x.row_mut(1).fill(0.0); // dead by zeros
        x.row_mut(2).slice_mut(ndarray::s![..5]).fill(0.0); // top mute, 5 samples
        x.row_mut(2).slice_mut(ndarray::s![20..24]).fill(0.0); // 4 interior zeros: not a mute
        x[[3, 39]] = 0.0; // one trailing zero: not a mute
        x[[0, 10]] = f64::NAN;
        let options = Options::default();
        let scan = scan(x.view(), &[false, false, false, true], &options);
        assert_eq!(scan.nonfinite, vec![(0, 10)]);
        assert_eq!(scan.dead, vec![1, 3]);
        assert_eq!((scan.muted, scan.muted_traces), (5, 1));
        assert!(scan.masked[[2, 4]] && !scan.masked[[2, 5]] && !scan.masked[[2, 21]]);
        let message = refusal(&scan, x.view()).unwrap();
        assert!(message.starts_with("trace 1 (of 4), sample 11 is NaN;"), "{message}");
    }

    #[test]
    fn clipped_rms_ignores_one_spike() {
        // 1000 samples of ±1 and one of 1e6: RMS ≈ 31623, clipped RMS exactly 1.
        let mut x = Array2::from_shape_fn((10, 100), |(t, s)| if (t + s) % 2 == 0 { 1.0 } else { -1.0 });
        x[[3, 50]] = 1e6;
        let masked = Array2::from_elem(x.dim(), false);
        let (rms, clip, live) = clipped_rms(x.view(), &masked, 0.995);
        assert_eq!((rms, clip, live), (1.0, 1.0, 1000));
    }

    #[test]
    fn prepare_and_restore_are_inverse_and_pass_masked_samples_through() {
        let x = array![[0.0, 0.0, 2.0, -2.0, 4.0], [f64::NAN, 1.0, -1.0, 3.0, 1.0]];
        let options = Options { nonfinite: NonFinite::Mask, ..Options::default() };
        let scan = scan(x.view(), &[], &options);
        let (prepared, scale) = prepare(x.view(), &scan, Some(1.0), &options).unwrap();
        assert_eq!(prepared[[0, 0]], 0.0);
        assert_eq!(prepared[[1, 0]], 0.0);
        assert!((prepared[[0, 2]] - 2.0 * scale.factor).abs() < 1e-15);
        // A model that adds 1 everywhere: masked samples come back as they were.
        let y = restore(prepared.mapv(|v| v + 1.0).view(), x.view(), &scan, &scale, &options);
        assert_eq!(&y.row(0).to_vec()[..2], &[0.0, 0.0]);
        assert!(y[[1, 0]].is_nan());
        assert!((y[[0, 2]] - (2.0 + 1.0 / scale.factor)).abs() < 1e-12);
        let refuse = Options::default();
        assert!(prepare(x.view(), &scan, Some(1.0), &refuse).is_err());
    }
}

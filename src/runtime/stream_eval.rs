//! `eval` over SEG-Y/SU files of any size: the noisy file streamed through the model as one 2-D
//! line (as the in-memory `eval` treats its section), the measures accumulated trace by trace
//! ([`qc_stream`](crate::seismic::qc_stream)). Memory depends on the model, the tiles and the
//! window, not on the files.
//!
//! Three passes, because two of the measures need a whole-file quantity first: the clean
//! file's range (PSNR's peak, SSIM's C1 and C2), then the model with SNR, PSNR, SSIM and Σ
//! output² (local similarity's ε), then the model again with local similarity. The model thus
//! runs twice; nothing is written to disk.

use super::engine::Backend;
use super::infer::ParamLoader;
use super::stream::{LineRun, StreamOptions, decode_window};
use crate::seismic::hygiene;
use crate::seismic::qc::{Leakage, Radii, Scores};
use crate::seismic::qc_stream::{Range, ScoreSums, SimilaritySums};
use crate::seismic::segy::SeismicFile;
use ndarray::Array2;

/// What `eval` reports.
pub struct Evaluated {
    /// The clean data's max − min.
    pub data_range: f64,
    pub noisy: Scores,
    pub denoised: Scores,
    pub leakage: Leakage,
    pub hygiene: hygiene::Report,
    /// The largest |sample| of the noisy input the model saw.
    pub max_abs_input: f64,
}

/// Traces `first..first + count` of `file`, decoded, `[count, samples]`.
fn traces(file: &SeismicFile, first: usize, count: usize) -> Result<Array2<f64>, String> {
    let mut raw = Vec::new();
    file.read_raw_traces(first, count, &mut raw).map_err(|e| e.to_string())?;
    Ok(decode_window(file, &raw, count).0)
}

/// Scores `clean` and `noisy` (same number of traces and samples: the caller checks) and the
/// model's output on `noisy` against `clean`.
pub fn eval_files(
    source: &str,
    params: Option<ParamLoader>,
    backend: Backend,
    declared: &[usize],
    clean: &SeismicFile,
    noisy: &SeismicFile,
    opts: &StreamOptions,
) -> Result<Evaluated, String> {
    let (n_traces, samples) = (noisy.traces(), noisy.samples);
    if clean.traces() != n_traces || clean.samples != samples {
        return Err(format!(
            "the clean data has {} traces of {} samples, the noisy data {n_traces} of {samples}",
            clean.traces(),
            clean.samples
        ));
    }
    let window = opts.window_traces.max(1);
    let mut range = Range::default();
    for first in (0..n_traces).step_by(window) {
        if (opts.stop)() {
            return Err("interrupted".into());
        }
        let block = traces(clean, first, window.min(n_traces - first))?;
        // A NaN would pass the range silently (`min`/`max` skip it) and turn every score NaN.
        if let Some(((t, s), v)) = block.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!(
                "the clean data's trace {} (of {n_traces}), sample {} is {v}; a reference must be finite",
                first + t + 1,
                s + 1
            ));
        }
        for row in block.rows() {
            match row.as_slice() {
                Some(r) => range.add_trace(r),
                None => range.add_trace(&row.to_vec()),
            }
        }
    }
    let mut run = LineRun::new(source, params, backend, declared, noisy, opts)?;
    let mut before = ScoreSums::new(range.range(), samples);
    let mut after = ScoreSums::new(range.range(), samples);
    let mut sum_b2 = 0.0;
    run.run(opts, &mut |first, block| {
        let count = block.ncols();
        let (c, n) = (traces(clean, first, count)?, traces(noisy, first, count)?);
        for j in 0..count {
            let estimate = block.column(j).to_vec();
            let clean_trace = c.row(j).to_vec();
            before.add_trace(&clean_trace, &n.row(j).to_vec());
            after.add_trace(&clean_trace, &estimate);
            for v in &estimate {
                sum_b2 += v * v;
            }
        }
        Ok(())
    })?;
    let mut similarity = SimilaritySums::new(Radii::default(), sum_b2, n_traces, samples);
    run.run(opts, &mut |first, block| {
        let n = traces(noisy, first, block.ncols())?;
        for (j, noisy_trace) in n.rows().into_iter().enumerate() {
            let estimate = block.column(j).to_vec();
            let removed: Vec<f64> = noisy_trace.iter().zip(&estimate).map(|(x, y)| x - y).collect();
            similarity.add_trace(&removed, &estimate);
        }
        Ok(())
    })?;
    Ok(Evaluated {
        data_range: range.range(),
        noisy: before.finish(),
        denoised: after.finish(),
        leakage: similarity.finish(),
        max_abs_input: run.max_abs_input(),
        hygiene: run.hygiene,
    })
}

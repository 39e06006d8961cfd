//! The measures of [`qc`](super::qc) over a section fed one trace at a time, in trace order, in
//! memory that depends on the trace length and the windows, not on the number of traces: what
//! `eval` uses on SEG-Y/SU files of any size.
//!
//! Each accumulator adds in the order the whole-section functions of `qc` do (sums in
//! `[traces, samples]` order, the same running box sums, the same triangle loops), so on a
//! section that fits in memory both give the same numbers; `tests/stream.rs` checks it.
//!
//! What must be known first: SSIM's constants C1, C2 come from the clean data's range, and local
//! similarity's stabiliser ε from Σ b² of the whole output, so a caller makes a pass for each
//! (the range from the clean file alone; Σ b² during the SSIM pass).

use super::qc::{Leakage, Radii, Scores, box_sums_1d, similarity, ssim_window, stabiliser, triangle_1d};
use std::collections::VecDeque;

/// SSIM's window (7 × 7, as `qc::ssim`).
const W: usize = 7;

/// SNR, PSNR and SSIM of an estimate against the clean section, trace by trace.
///
/// SSIM's windows are those lying inside the section, as in `qc::ssim`: 7 traces × 7 samples,
/// so a window's sums need the last 7 traces' sums along time (kept, with one more for the
/// running sum across traces); edges need no special case because no window crosses them.
pub struct ScoreSums {
    range: f64,
    samples: usize,
    traces: usize,
    signal: f64,
    error: f64,
    /// Per trace of the last W + 1: the box sums along time of x, y, x², y², xy.
    rows: VecDeque<[Vec<f64>; 5]>,
    /// The running box sums across the last W traces, per window start along time.
    across: [Vec<f64>; 5],
    ssim_sum: f64,
    windows: usize,
}

impl ScoreSums {
    /// For traces of `samples` samples; `range` is the clean section's max − min.
    pub fn new(range: f64, samples: usize) -> ScoreSums {
        ScoreSums {
            range,
            samples,
            traces: 0,
            signal: 0.0,
            error: 0.0,
            rows: VecDeque::with_capacity(W + 1),
            across: Default::default(),
            ssim_sum: 0.0,
            windows: 0,
        }
    }

    /// The next trace of the clean section and of the estimate.
    pub fn add_trace(&mut self, clean: &[f64], estimate: &[f64]) {
        for (&a, &b) in clean.iter().zip(estimate) {
            self.signal += a * a;
            self.error += (a - b) * (a - b);
        }
        self.traces += 1;
        if self.samples < W {
            return;
        }
        let products = |f: fn(f64, f64) -> f64| -> Vec<f64> {
            clean.iter().zip(estimate).map(|(&a, &b)| f(a, b)).collect()
        };
        let row = [
            box_sums_1d(clean, W),
            box_sums_1d(estimate, W),
            box_sums_1d(&products(|a, _| a * a), W),
            box_sums_1d(&products(|_, b| b * b), W),
            box_sums_1d(&products(|a, b| a * b), W),
        ];
        self.rows.push_back(row);
        if self.rows.len() > W + 1 {
            self.rows.pop_front();
        }
        match self.traces {
            t if t < W => return,
            // The first window across traces: a plain sum of W traces (as `box_sums_1d` starts).
            t if t == W => {
                for (q, sums) in self.across.iter_mut().enumerate() {
                    *sums =
                        (0..self.samples + 1 - W).map(|j| self.rows.iter().map(|r| r[q][j]).sum()).collect();
                }
            }
            // Then running: add the new trace, take away the one W traces before it.
            _ => {
                let (newest, leaving) = (&self.rows[W], &self.rows[0]);
                for (q, sums) in self.across.iter_mut().enumerate() {
                    for (j, s) in sums.iter_mut().enumerate() {
                        *s += newest[q][j] - leaving[q][j];
                    }
                }
            }
        }
        let r = self.range;
        let (c1, c2) = ((0.01 * r).powi(2), (0.03 * r).powi(2));
        let np = (W * W) as f64;
        let cov_norm = np / (np - 1.0);
        for j in 0..self.samples + 1 - W {
            let means = [0, 1, 2, 3, 4].map(|q| self.across[q][j] / np);
            self.ssim_sum += ssim_window(means, c1, c2, cov_norm);
        }
        self.windows += self.samples + 1 - W;
    }

    /// The scores of every trace added (SSIM NaN when the section is smaller than a window).
    pub fn finish(&self) -> Scores {
        let n = (self.traces * self.samples).max(1) as f64;
        let r = self.range;
        let ssim =
            if self.traces < W || self.samples < W { f64::NAN } else { self.ssim_sum / self.windows as f64 };
        Scores {
            snr_db: crate::runtime::data::snr_from_energies(self.signal, self.error),
            psnr_db: 10.0 * (r * r / (self.error / n)).log10(),
            ssim,
        }
    }
}

/// The clean section's range, fed trace by trace (as `qc::data_range`).
#[derive(Clone, Copy)]
pub struct Range {
    lo: f64,
    hi: f64,
}

impl Default for Range {
    fn default() -> Range {
        Range { lo: f64::INFINITY, hi: f64::NEG_INFINITY }
    }
}

impl Range {
    pub fn add_trace(&mut self, trace: &[f64]) {
        for &v in trace {
            (self.lo, self.hi) = (self.lo.min(v), self.hi.max(v));
        }
    }

    pub fn range(&self) -> f64 {
        if self.hi >= self.lo { self.hi - self.lo } else { 0.0 }
    }
}

/// Local similarity of the removed noise `a` and the output `b` (as `qc::leakage`), trace by
/// trace: each trace smoothed along time as it comes, then across the traces within the
/// smoothing radius once they have come (so `2 · radius − 1` traces are held). Needs ε, that
/// is Σ b² over the whole output, before the first trace ([`ScoreSums`]'s pass gives it).
pub struct SimilaritySums {
    radii: Radii,
    eps: f64,
    /// Time-smoothed a·b, a², b² of the last traces (those an unfinished trace still needs).
    held: VecDeque<[Vec<f64>; 3]>,
    /// The first trace whose s is not yet summed.
    first_held: usize,
    traces: usize,
    sum_abs: f64,
    max: f64,
    above: usize,
    count: usize,
}

impl SimilaritySums {
    /// `sum_b2` is Σ b² over the `samples` of every trace of the output (`traces` of them).
    pub fn new(radii: Radii, sum_b2: f64, traces: usize, samples: usize) -> SimilaritySums {
        SimilaritySums {
            radii,
            eps: stabiliser(radii, sum_b2, (traces * samples).max(1) as f64),
            held: VecDeque::new(),
            first_held: 0,
            traces: 0,
            sum_abs: 0.0,
            max: f64::NEG_INFINITY,
            above: 0,
            count: 0,
        }
    }

    fn radius(&self) -> usize {
        self.radii.traces.max(1)
    }

    pub fn add_trace(&mut self, a: &[f64], b: &[f64]) {
        let along = |f: fn(f64, f64) -> f64| -> Vec<f64> {
            let v: Vec<f64> = a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
            triangle_1d(&v, self.radii.samples)
        };
        self.held.push_back([along(|x, y| x * y), along(|x, _| x * x), along(|_, y| y * y)]);
        self.traces += 1;
        // Trace t is complete once trace t + radius − 1 has come.
        while self.first_held + self.radius() <= self.traces {
            self.finish_first();
        }
    }

    /// Smooths the first unfinished trace across traces (every trace within the radius after
    /// it has come, or none will), adds its s to the summary, drops what no later trace needs.
    fn finish_first(&mut self) {
        let r = self.radius() as isize;
        let t = self.first_held as isize;
        let start = start_of(self);
        let samples = self.held.front().map_or(0, |h| h[0].len());
        let mut smoothed = [vec![0.0; samples], vec![0.0; samples], vec![0.0; samples]];
        for (q, out) in smoothed.iter_mut().enumerate() {
            for (i, o) in out.iter_mut().enumerate() {
                let mut s = 0.0;
                for k in (1 - r)..r {
                    let tt = t + k;
                    if tt >= 0 && (tt as usize) < self.traces && tt as usize >= start {
                        s += (r - k.abs()) as f64 * self.held[tt as usize - start][q][i];
                    }
                }
                *o = s;
            }
        }
        let [ab, aa, bb] = &smoothed;
        for ((&ab, &aa), &bb) in ab.iter().zip(aa).zip(bb) {
            let s = similarity(ab, aa, bb, self.eps);
            self.sum_abs += s.abs();
            self.max = self.max.max(s);
            self.above += usize::from(s > 0.3);
            self.count += 1;
        }
        self.first_held += 1;
        // Trace first_held − radius is no longer needed by any trace still to finish.
        let keep_from = self.first_held.saturating_sub(self.radius() - 1);
        while start_of(self) < keep_from {
            self.held.pop_front();
        }
    }

    /// The summary over every trace added.
    pub fn finish(mut self) -> Leakage {
        while self.first_held < self.traces {
            self.finish_first();
        }
        let n = self.count.max(1) as f64;
        Leakage {
            radii: self.radii,
            mean_abs: self.sum_abs / n,
            max: self.max,
            above_0_3: self.above as f64 / n,
        }
    }
}

/// The index of the first held trace.
fn start_of(s: &SimilaritySums) -> usize {
    s.traces - s.held.len()
}

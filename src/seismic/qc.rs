//! Quality-control measures of a denoised section against a clean one and of the removed noise
//! against the output (docs/qc.md). Sections are `[traces, samples]` arrays; every measure is
//! checked against an independent implementation (`scripts/qc_reference.py`: scikit-image and
//! numpy) by `tests/qc.rs`.

use ndarray::{Array2, ArrayView2};
use serde::Serialize;

/// SNR in dB: 10·log10(Σ clean² / Σ (clean − estimate)²).
pub fn snr_db(clean: ArrayView2<f64>, estimate: ArrayView2<f64>) -> f64 {
    let s: f64 = clean.iter().map(|&v| v * v).sum();
    let e: f64 = clean.iter().zip(estimate.iter()).map(|(&a, &b)| (a - b) * (a - b)).sum();
    crate::runtime::data::snr_from_energies(s, e)
}

/// The clean section's range max − min: the `data_range` of PSNR and SSIM (as
/// scikit-image's `data_range` argument).
pub fn data_range(clean: ArrayView2<f64>) -> f64 {
    let (lo, hi) = clean.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    if hi >= lo { hi - lo } else { 0.0 }
}

/// PSNR in dB: 10·log10(range² / mean (clean − estimate)²), range = [`data_range`] of the
/// clean section (scikit-image `peak_signal_noise_ratio(clean, estimate, data_range=range)`).
pub fn psnr_db(clean: ArrayView2<f64>, estimate: ArrayView2<f64>) -> f64 {
    let n = clean.len().max(1) as f64;
    let mse: f64 = clean.iter().zip(estimate.iter()).map(|(&a, &b)| (a - b) * (a - b)).sum::<f64>() / n;
    let r = data_range(clean);
    10.0 * (r * r / mse).log10()
}

/// Sums over every `w`-long window of `v` (valid windows only: `len − w + 1`), a running sum.
/// One row of [`box_sums_rows`]; the streamed measures (`qc_stream`) call it per trace, so
/// both add in the same order.
pub(super) fn box_sums_1d(v: &[f64], w: usize) -> Vec<f64> {
    let m = v.len() + 1 - w;
    let mut out = vec![0.0; m];
    let mut s: f64 = v[..w].iter().sum();
    out[0] = s;
    for j in 1..m {
        s += v[j + w - 1] - v[j - 1];
        out[j] = s;
    }
    out
}

/// Sums over every `w`-long window along axis 1 (valid windows only: `n − w + 1` per row).
fn box_sums_rows(a: &Array2<f64>, w: usize) -> Array2<f64> {
    let (h, n) = a.dim();
    let m = n + 1 - w;
    let mut out = Array2::zeros((h, m));
    for (i, row) in a.rows().into_iter().enumerate() {
        let row: Vec<f64> = row.iter().copied().collect();
        out.row_mut(i).iter_mut().zip(box_sums_1d(&row, w)).for_each(|(o, v)| *o = v);
    }
    out
}

/// Means over every `w × w` window lying inside the array.
fn box_means(a: &Array2<f64>, w: usize) -> Array2<f64> {
    let rows = box_sums_rows(a, w);
    let cols = box_sums_rows(&rows.t().to_owned(), w).t().to_owned();
    cols / (w * w) as f64
}

/// SSIM as scikit-image's `structural_similarity(clean, estimate, data_range=range,
/// win_size=7, gaussian_weights=False)`: a uniform 7 × 7 window, K1 = 0.01, K2 = 0.03, sample
/// covariances (divided by 48), averaged over the windows lying inside the section (its
/// result crops 3 samples at every edge, so its boundary mode does not matter).
pub fn ssim(clean: ArrayView2<f64>, estimate: ArrayView2<f64>) -> f64 {
    const W: usize = 7;
    let (h, w) = clean.dim();
    if h < W || w < W {
        return f64::NAN;
    }
    let (x, y) = (clean.to_owned(), estimate.to_owned());
    let r = data_range(clean);
    let (c1, c2) = ((0.01 * r).powi(2), (0.03 * r).powi(2));
    let np = (W * W) as f64;
    let cov_norm = np / (np - 1.0);
    let ux = box_means(&x, W);
    let uy = box_means(&y, W);
    let uxx = box_means(&(&x * &x), W);
    let uyy = box_means(&(&y * &y), W);
    let uxy = box_means(&(&x * &y), W);
    let mut sum = 0.0;
    ndarray::Zip::from(&ux).and(&uy).and(&uxx).and(&uyy).and(&uxy).for_each(|&mx, &my, &xx, &yy, &xy| {
        sum += ssim_window([mx, my, xx, yy, xy], c1, c2, cov_norm);
    });
    sum / ux.len() as f64
}

/// SSIM of one window from its means of x, y, x², y², xy.
pub(super) fn ssim_window([mx, my, xx, yy, xy]: [f64; 5], c1: f64, c2: f64, cov_norm: f64) -> f64 {
    let (vx, vy, vxy) = (cov_norm * (xx - mx * mx), cov_norm * (yy - my * my), cov_norm * (xy - mx * my));
    ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
}

/// Triangle smoothing along axis 1 with radius `r`: weights r − |k| for |k| < r, samples outside
/// the array count as zero. Unnormalised: local similarity is a ratio of smoothed quantities,
/// so the normalisation cancels.
fn triangle_rows(a: &Array2<f64>, r: usize) -> Array2<f64> {
    let (h, n) = a.dim();
    let mut out = Array2::zeros((h, n));
    for (i, row) in a.rows().into_iter().enumerate() {
        let row: Vec<f64> = row.iter().copied().collect();
        out.row_mut(i).iter_mut().zip(triangle_1d(&row, r)).for_each(|(o, v)| *o = v);
    }
    out
}

/// One row of [`triangle_rows`] (also the streamed measures' smoothing along time).
pub(super) fn triangle_1d(v: &[f64], r: usize) -> Vec<f64> {
    let n = v.len();
    let r = r.max(1) as isize;
    (0..n)
        .map(|j| {
            let mut s = 0.0;
            for k in (1 - r)..r {
                let jj = j as isize + k;
                if jj >= 0 && (jj as usize) < n {
                    s += (r - k.abs()) as f64 * v[jj as usize];
                }
            }
            s
        })
        .collect()
}

/// Triangle smoothing over samples (radius `r_time`) and traces (radius `r_traces`) of a
/// `[traces, samples]` array.
fn smooth(a: &Array2<f64>, r_time: usize, r_traces: usize) -> Array2<f64> {
    let along_time = triangle_rows(a, r_time);
    triangle_rows(&along_time.t().to_owned(), r_traces).t().to_owned()
}

/// The radii of local similarity's smoothing: samples along time, traces across.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Radii {
    pub samples: usize,
    pub traces: usize,
}

impl Default for Radii {
    fn default() -> Radii {
        Radii { samples: 10, traces: 5 }
    }
}

/// Local similarity of `a` and `b` (Chen & Fomel 2015) in its non-iterative ratio form:
/// s = S[a·b] / sqrt(S[a²]·S[b²] + ε²), S triangle smoothing with `radii`, ε = 1e-6 × W ×
/// mean(b²) with W = r_samples² · r_traces² the smoothing's total weight: a stabiliser for
/// silent zones that also makes a removed noise below ~1e-6 of the output (rounding) count as
/// dissimilar, since s alone does not depend on a's scale. s is the product of the two local
/// regression coefficients S[ab]/S[a²] and S[ab]/S[b²] under a square root, with its sign; it
/// lies in [−1, 1].
pub fn local_similarity(a: ArrayView2<f64>, b: ArrayView2<f64>, radii: Radii) -> Array2<f64> {
    let (a, b) = (a.to_owned(), b.to_owned());
    let n = a.len().max(1) as f64;
    let eps = stabiliser(radii, b.iter().map(|v| v * v).sum::<f64>(), n);
    let ab = smooth(&(&a * &b), radii.samples, radii.traces);
    let aa = smooth(&(&a * &a), radii.samples, radii.traces);
    let bb = smooth(&(&b * &b), radii.samples, radii.traces);
    let mut s = ab;
    ndarray::Zip::from(&mut s).and(&aa).and(&bb).for_each(|s, &aa, &bb| *s = similarity(*s, aa, bb, eps));
    s
}

/// ε of [`local_similarity`] from Σ b² over `n` samples.
pub(super) fn stabiliser(radii: Radii, sum_b2: f64, n: f64) -> f64 {
    let weight =
        (radii.samples.max(1) * radii.samples.max(1) * radii.traces.max(1) * radii.traces.max(1)) as f64;
    1e-6 * weight * sum_b2 / n
}

/// s at one sample from the smoothed S[ab], S[a²], S[b²].
pub(super) fn similarity(ab: f64, aa: f64, bb: f64, eps: f64) -> f64 {
    let d = (aa.max(0.0) * bb.max(0.0) + eps * eps).sqrt();
    if d > 0.0 { ab / d } else { 0.0 }
}

/// One estimate's scores against the clean section.
#[derive(Clone, Debug, Serialize)]
pub struct Scores {
    pub snr_db: f64,
    pub psnr_db: f64,
    pub ssim: f64,
}

pub fn scores(clean: ArrayView2<f64>, estimate: ArrayView2<f64>) -> Scores {
    Scores { snr_db: snr_db(clean, estimate), psnr_db: psnr_db(clean, estimate), ssim: ssim(clean, estimate) }
}

/// The signal-leakage summary: local similarity of the removed noise and the output.
#[derive(Clone, Debug, Serialize)]
pub struct Leakage {
    pub radii: Radii,
    /// Mean of |s| over the section.
    pub mean_abs: f64,
    /// Largest s.
    pub max: f64,
    /// Share of samples with s > 0.3 (where signal visibly leaked into the removed noise).
    pub above_0_3: f64,
}

pub fn leakage(removed: ArrayView2<f64>, output: ArrayView2<f64>, radii: Radii) -> Leakage {
    let s = local_similarity(removed, output, radii);
    let n = s.len().max(1) as f64;
    Leakage {
        radii,
        mean_abs: s.iter().map(|v| v.abs()).sum::<f64>() / n,
        max: s.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        above_0_3: s.iter().filter(|&&v| v > 0.3).count() as f64 / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sections_score_perfectly() {
        let x = Array2::from_shape_fn((20, 30), |(i, j)| ((i * 13 + j * 7) % 17) as f64 - 8.0);
        assert_eq!(snr_db(x.view(), x.view()), f64::INFINITY);
        assert!((ssim(x.view(), x.view()) - 1.0).abs() < 1e-12);
        let s = local_similarity(x.view(), x.view(), Radii::default());
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-9));
        let s = local_similarity(x.view(), (-&x).view(), Radii::default());
        assert!(s.iter().all(|v| (v + 1.0).abs() < 1e-9));
    }

    #[test]
    fn box_means_are_window_means() {
        let x = Array2::from_shape_fn((9, 8), |(i, j)| (i * 8 + j) as f64);
        let m = box_means(&x, 7);
        assert_eq!(m.dim(), (3, 2));
        // The window at (0, 0) covers rows 0..7, columns 0..7: mean of i*8+j = 3*8 + 3.
        assert_eq!(m[[0, 0]], 27.0);
    }
}

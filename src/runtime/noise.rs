//! Drawing the train block's noise ([`NoiseSpec`], checked in `check::noise`) onto data.
//!
//! A panel is `[time samples, traces]`; a 1-D sample is one trace (`[N, 1]`). Amplitudes are
//! relative to a reference RMS the caller gives (the clean sample's, or 1 for a SEG-Y section
//! already scaled to unit RMS); frequencies are in Hz and need the sample interval `dt` (s).
//! Everything is drawn from the caller's generator, so a seed gives the same noise.

use crate::check::program::{NoiseKind, NoiseSpec};
use ndarray::{Array1, ArrayViewMut2, ArrayViewMutD, Axis, Ix2};
use num_traits::Float;
use rand::Rng;
use rand_distr::StandardNormal;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

fn add<A: Float>(v: &mut A, d: f64) {
    *v = *v + A::from(d).unwrap_or_else(A::zero);
}

fn normal(rng: &mut impl Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// Hann taper value at `k` of `len` samples (1 in the middle, 0 just outside the ends).
fn hann(k: usize, len: usize) -> f64 {
    let x = (k as f64 + 1.0) / (len as f64 + 1.0);
    (std::f64::consts::PI * x).sin().powi(2)
}

/// `n` samples of Gaussian noise with every frequency outside `band` (Hz) removed, scaled to
/// unit standard deviation. When no frequency of an `n`-point FFT falls inside the band, the
/// one nearest its centre is kept.
pub fn band_limited(n: usize, dt: f64, band: [f64; 2], rng: &mut impl Rng) -> Vec<f64> {
    if n == 0 {
        return vec![];
    }
    let mut buf: Vec<Complex<f64>> = (0..n).map(|_| Complex::new(normal(rng), 0.0)).collect();
    let mut planner = FftPlanner::<f64>::new();
    planner.plan_fft_forward(n).process(&mut buf);
    let freq = |k: usize| k.min(n - k) as f64 / (n as f64 * dt);
    let mut keep: Vec<bool> = (0..n).map(|k| (band[0]..=band[1]).contains(&freq(k))).collect();
    if !keep.iter().any(|k| *k) {
        let centre = 0.5 * (band[0] + band[1]);
        let best = (0..n)
            .min_by(|a, b| (freq(*a) - centre).abs().total_cmp(&(freq(*b) - centre).abs()))
            .unwrap_or(0);
        keep[best] = true;
        keep[(n - best) % n] = true;
    }
    for (c, k) in buf.iter_mut().zip(&keep) {
        if !k {
            *c = Complex::new(0.0, 0.0);
        }
    }
    planner.plan_fft_inverse(n).process(&mut buf);
    let out: Vec<f64> = buf.iter().map(|c| c.re).collect();
    let mean = out.iter().sum::<f64>() / n as f64;
    let std = (out.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64).sqrt();
    if std > 0.0 { out.iter().map(|v| v / std).collect() } else { out }
}

/// The number of samples closest to `ms` milliseconds at interval `dt` seconds (at least 1).
fn samples_of(ms: f64, dt: f64) -> usize {
    ((ms / 1000.0 / dt).round() as usize).max(1)
}

impl NoiseSpec {
    /// Refuses frequencies at or above the Nyquist frequency of data sampled every `dt` s.
    pub fn check_interval(&self, dt: f64, what: &str) -> Result<(), String> {
        let nyquist = 0.5 / dt;
        match self.max_freq() {
            Some(f) if f >= nyquist => Err(format!(
                "{what}: the noise asks for {f} Hz, at or above the data's Nyquist frequency ({nyquist} Hz at {} ms)",
                dt * 1000.0
            )),
            _ => Ok(()),
        }
    }

    /// Adds this noise to one panel `[time, traces]` sampled every `dt` s; amplitudes are
    /// relative to `rms`. Additive kinds in the written order, then reversed and dead traces.
    pub fn apply<A: Float>(&self, x: &mut ArrayViewMut2<A>, rms: f64, dt: f64, rng: &mut impl Rng) {
        let (nt, ntr) = x.dim();
        for part in &self.parts {
            match *part {
                NoiseKind::Gaussian { std, band: None } => {
                    x.iter_mut().for_each(|v| add(v, std * rms * normal(rng)));
                }
                NoiseKind::Gaussian { std, band: Some(band) } => {
                    for mut trace in x.columns_mut() {
                        let series = band_limited(nt, dt, band, rng);
                        trace.iter_mut().zip(series).for_each(|(v, s)| add(v, std * rms * s));
                    }
                }
                NoiseKind::Spikes { rate, amplitude } => {
                    for v in x.iter_mut() {
                        if rng.random::<f64>() < rate {
                            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                            add(v, sign * amplitude * rms);
                        }
                    }
                }
                NoiseKind::Bursts { rate, amplitude, length } => {
                    let len = samples_of(length, dt);
                    for mut trace in x.columns_mut() {
                        for start in 0..nt {
                            if rng.random::<f64>() < rate {
                                for k in 0..len.min(nt - start) {
                                    add(&mut trace[start + k], amplitude * rms * hann(k, len) * normal(rng));
                                }
                            }
                        }
                    }
                }
                NoiseKind::Linear { amplitude, dip, freq, count } => {
                    let slope = dip / 1000.0; // s per trace
                    let span_t = (nt.max(1) - 1) as f64 * dt;
                    let drift = slope * (ntr.max(1) - 1) as f64;
                    let sigma = 1.0 / freq;
                    for _ in 0..count {
                        // Any start time whose event crosses the panel.
                        let (lo, hi) = ((-drift).min(0.0), span_t.max(span_t - drift));
                        let t0 = lo + rng.random::<f64>() * (hi - lo);
                        for (j, mut trace) in x.columns_mut().into_iter().enumerate() {
                            let t = t0 + slope * j as f64;
                            let lo = ((t - 4.0 * sigma) / dt).floor().max(0.0);
                            let hi = ((t + 4.0 * sigma) / dt).ceil().min(nt as f64 - 1.0);
                            if hi < lo {
                                continue;
                            }
                            for i in lo as usize..=hi as usize {
                                let tau = i as f64 * dt - t;
                                let w = (2.0 * std::f64::consts::PI * freq * tau).cos()
                                    * (-0.5 * (tau / sigma).powi(2)).exp();
                                add(&mut trace[i], amplitude * rms * w);
                            }
                        }
                    }
                }
                NoiseKind::Swell { amplitude, fraction, width, band } => {
                    let width = width.min(ntr.max(1));
                    let groups = ((fraction * ntr as f64 / width as f64).round() as usize).max(1);
                    for _ in 0..groups {
                        let first = rng.random_range(0..=ntr.saturating_sub(width));
                        let series = band_limited(nt, dt, band, rng);
                        // A burst over a random half to all of the trace length, Hann-tapered.
                        let len = rng.random_range(nt.div_ceil(2).max(1)..=nt.max(1));
                        let start = rng.random_range(0..=nt - len.min(nt));
                        for k in 0..width.min(ntr - first) {
                            // Coherent across the group, strongest in its middle traces.
                            let gain = 0.6 + 0.4 * hann(k, width);
                            let mut trace = x.column_mut(first + k);
                            for i in 0..len.min(nt - start) {
                                add(
                                    &mut trace[start + i],
                                    amplitude * rms * gain * hann(i, len) * series[start + i],
                                );
                            }
                        }
                    }
                }
                NoiseKind::DeadTraces { .. } | NoiseKind::ReversedTraces { .. } => {}
            }
        }
        let trace_wise =
            |want: fn(&NoiseKind) -> Option<f64>| self.parts.iter().filter_map(want).collect::<Vec<_>>();
        let reversed = trace_wise(|p| match p {
            NoiseKind::ReversedTraces { fraction } => Some(*fraction),
            _ => None,
        });
        let dead = trace_wise(|p| match p {
            NoiseKind::DeadTraces { fraction } => Some(*fraction),
            _ => None,
        });
        for fraction in reversed {
            for mut trace in x.columns_mut() {
                if rng.random::<f64>() < fraction {
                    trace.mapv_inplace(|v| -v);
                }
            }
        }
        for fraction in dead {
            for mut trace in x.columns_mut() {
                if rng.random::<f64>() < fraction {
                    trace.fill(A::zero());
                }
            }
        }
    }

    /// Adds this noise to one sample `[C, H, W]` (each channel a panel of H time samples × W
    /// traces) or `[C, N]` (each channel one trace); other shapes are one trace. `rms`: the
    /// reference, or the sample's own RMS when `None`.
    pub fn apply_to_sample(
        &self,
        mut sample: ArrayViewMutD<f64>,
        rms: Option<f64>,
        dt: f64,
        rng: &mut impl Rng,
    ) {
        let rms = rms.unwrap_or_else(|| {
            (sample.iter().map(|v| v * v).sum::<f64>() / sample.len().max(1) as f64).sqrt().max(1e-12)
        });
        match sample.ndim() {
            3 => {
                for channel in sample.axis_iter_mut(Axis(0)) {
                    if let Ok(mut panel) = channel.into_dimensionality::<Ix2>() {
                        self.apply(&mut panel, rms, dt, rng);
                    }
                }
            }
            2 => {
                for channel in sample.axis_iter_mut(Axis(0)) {
                    if let Ok(mut panel) = channel.insert_axis(Axis(1)).into_dimensionality::<Ix2>() {
                        self.apply(&mut panel, rms, dt, rng);
                    }
                }
            }
            _ => {
                let mut flat = Array1::from_iter(sample.iter().copied()).insert_axis(Axis(1));
                self.apply(&mut flat.view_mut(), rms, dt, rng);
                sample.iter_mut().zip(flat.iter()).for_each(|(v, n)| *v = *n);
            }
        }
    }

    /// Adds noise to every sample of `[N, ...]` data (see [`NoiseSpec::apply_to_sample`]).
    pub fn apply_to_samples(
        &self,
        data: &mut ndarray::ArrayD<f64>,
        rms: Option<f64>,
        dt: f64,
        rng: &mut impl Rng,
    ) {
        for sample in data.axis_iter_mut(Axis(0)) {
            self.apply_to_sample(sample, rms, dt, rng);
        }
    }
}

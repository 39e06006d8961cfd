//! Training data: seismic-like synthetic sections and traces, and `.npy` arrays.
//! A [`Dataset`] holds inputs and targets with the sample axis first, in f64.

use super::patches::{FilePatches, PatchIndex};
use crate::check::program::{DataSpec, Holdout, LossKind, NoiseSpec};
use ndarray::{ArrayD, Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[N, ...]`: what the model sees (with added noise: its fixed draw, see [`NOISE_FIXED`]).
    /// Patches read from a file ([`Dataset::file`]) are not held: `[0, ...]` then.
    pub inputs: ArrayD<f64>,
    /// `[N, ...]` (or `[N]` class indices for cross_entropy); `[0, ...]` for a file's patches.
    pub targets: ArrayD<f64>,
    /// The noise added to the targets to make the inputs, so it can be drawn again.
    pub noise: Option<AddedNoise>,
    /// Where each sample was cut from a section or volume: the validation split then holds out
    /// traces or inlines (`PatchIndex::split`).
    pub patches: Option<PatchIndex>,
    /// The file the patches are read from, a batch at a time (SEG-Y/SU training data).
    pub file: Option<Arc<FilePatches>>,
    /// The range the user held out for validation (`holdout = ...`).
    pub holdout: Option<Holdout>,
    /// Whether the targets are a clean reference, so that an SNR against them means something
    /// (not for self-supervised data with no clean target, or a recorded section with no noise
    /// added).
    pub clean_targets: bool,
    /// The largest |sample| over the plain RMS of a file's samples (its crest factor), from
    /// the scan that set its scale; in-memory data computes it from its arrays.
    pub file_peak_to_rms: Option<f64>,
}

/// The noise added to the clean targets to make the inputs (any [`NoiseSpec`]); draw `d` of
/// sample `i` comes from `seed`, `d` and `i` alone, so training can draw afresh each epoch while
/// validation keeps one draw.
#[derive(Clone, Debug, PartialEq)]
pub struct AddedNoise {
    pub spec: NoiseSpec,
    /// Amplitudes relative to this RMS, or to each sample's own RMS when `None`.
    pub reference_rms: Option<f64>,
    /// Sample interval in seconds (for noise given in Hz or ms).
    pub dt: f64,
    pub seed: u64,
}

/// The draw of the noise that `Dataset::inputs` holds: validation always sees this one.
pub const NOISE_FIXED: u64 = 0;

/// Patches of a file read to measure the level of its noisy inputs ([`Dataset::levels`]).
pub const LEVEL_PATCHES: usize = 256;

impl AddedNoise {
    /// Adds draw `draw` of this noise for sample `index` to `sample` (a clean sample).
    pub fn add_to(&self, sample: ndarray::ArrayViewMutD<f64>, index: usize, draw: u64) {
        let mix = self.seed
            ^ (draw.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (index as u64).wrapping_add(1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let mut rng = ChaCha8Rng::seed_from_u64(mix);
        self.spec.apply_to_sample(sample, self.reference_rms, self.dt, &mut rng);
    }

    /// Every sample of `clean` (`[N, ...]`) with draw `draw`.
    pub fn add_all(&self, clean: &ArrayD<f64>, draw: u64) -> ArrayD<f64> {
        let mut out = clean.as_standard_layout().into_owned();
        for (i, sample) in out.outer_iter_mut().enumerate() {
            self.add_to(sample, i, draw);
        }
        out
    }
}

impl Dataset {
    /// Inputs and targets as given (no noise to redraw, independent samples).
    pub fn new(inputs: ArrayD<f64>, targets: ArrayD<f64>) -> Dataset {
        Dataset {
            inputs,
            targets,
            noise: None,
            patches: None,
            file: None,
            holdout: None,
            clean_targets: true,
            file_peak_to_rms: None,
        }
    }

    /// Samples `idx` as one batch with draw `draw` of the added noise (the inputs as stored
    /// when no noise was added, or for [`NOISE_FIXED`]). A file's patches are read here, and
    /// get the same noise as the same patches held in memory would.
    pub fn batch_with_noise(&self, idx: &[usize], draw: u64) -> Result<(ArrayD<f64>, ArrayD<f64>), String> {
        let t = match (&self.file, &self.patches) {
            (Some(file), Some(index)) => file.read(index, idx)?,
            _ => match self.noise.as_ref().filter(|_| draw != NOISE_FIXED) {
                None => return Ok(self.batch(idx)),
                Some(_) => self.targets.select(Axis(0), idx),
            },
        };
        let mut x = t.clone();
        if let Some(noise) = &self.noise {
            for (sample, &i) in x.outer_iter_mut().zip(idx) {
                noise.add_to(sample, i, draw);
            }
        }
        Ok((x, t))
    }

    pub fn len(&self) -> usize {
        match (&self.file, &self.patches) {
            (Some(_), Some(index)) => index.len(),
            _ => self.inputs.shape()[0],
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Samples `idx` stacked into one batch (held in memory; see [`batch_with_noise`](Self::batch_with_noise)).
    pub fn batch(&self, idx: &[usize]) -> (ArrayD<f64>, ArrayD<f64>) {
        (self.inputs.select(Axis(0), idx), self.targets.select(Axis(0), idx))
    }

    /// The shape of one input sample.
    pub fn sample_shape(&self) -> Vec<usize> {
        self.inputs.shape().get(1..).unwrap_or(&[]).to_vec()
    }

    /// The validation split: `holdout` when given, else held-out blocks of traces (or inlines)
    /// for patches, a seeded choice of samples otherwise.
    pub fn split(&self, fraction: f64, seed: u64, what: &str) -> Result<super::split::Split, String> {
        match &self.patches {
            Some(index) => index.split(self.holdout, fraction, seed, what),
            None => Ok(super::split::split_samples(self.len(), fraction, seed)),
        }
    }

    /// The level of the data the model sees (the targets, or the inputs when `of_inputs`), as
    /// inference measures a file's: see [`Levels`].
    ///
    /// A file's patches are divided by the file's clipped RMS (`FilePatches::scale`), so their
    /// level is 1 — unless the model sees them with noise added, which raises it: that level is
    /// measured on up to [`LEVEL_PATCHES`] evenly spaced patches with the fixed noise draw (what
    /// the in-memory path measures on all of them), read from the file.
    pub fn levels(&self, of_inputs: bool) -> Result<Levels, String> {
        match (&self.file, self.file_peak_to_rms, &self.patches) {
            (Some(_), Some(crest), Some(index)) if of_inputs && self.noise.is_some() && !index.is_empty() => {
                let n = index.len();
                let k = n.min(LEVEL_PATCHES);
                let idx: Vec<usize> = (0..k).map(|i| i * n / k).collect();
                let (noisy, _) = self.batch_with_noise(&idx, NOISE_FIXED)?;
                Ok(Levels { clipped_rms: Levels::of(&noisy).clipped_rms, peak_to_rms: crest })
            }
            (Some(_), Some(crest), _) => Ok(Levels { clipped_rms: 1.0, peak_to_rms: crest }),
            _ => Ok(Levels::of(if of_inputs { &self.inputs } else { &self.targets })),
        }
    }
}

/// The scale a model learned: the clipped RMS of the live samples (|x| clipped at the 99.5th
/// percentile; dead traces and muted zones left out) — what inference measures on a file
/// (`seismic::hygiene`) and scales it to — and the crest factor (max |x| / plain RMS).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Levels {
    pub clipped_rms: f64,
    pub peak_to_rms: f64,
}

/// The weights' metadata naming how `data_rms` was measured (weights from before it hold the
/// plain RMS of every sample).
pub const SCALE_METHOD: &str = "clipped RMS of live samples (99.5th percentile)";

impl Levels {
    /// Of samples `[N, ...]`: a `[1, H, W]` sample is a section of W traces of H samples, a
    /// `[1, N]` sample one trace, anything else values with nothing masked.
    pub fn of(a: &ArrayD<f64>) -> Levels {
        use crate::seismic::hygiene;
        let options = hygiene::Options::default();
        let mut live: Vec<f64> = vec![];
        for sample in a.outer_iter() {
            let section = match sample.shape() {
                [1, _, _] => sample
                    .index_axis(Axis(0), 0)
                    .into_dimensionality::<ndarray::Ix2>()
                    .ok()
                    .map(|s| s.reversed_axes()),
                [1, _] => sample.view().into_dimensionality::<ndarray::Ix2>().ok(),
                _ => None,
            };
            match section {
                Some(s) => {
                    let scan = hygiene::scan(s, &[], &options);
                    live.extend(s.iter().zip(scan.masked.iter()).filter(|(_, m)| !**m).map(|(v, _)| v.abs()));
                }
                None => live.extend(sample.iter().filter(|v| v.is_finite()).map(|v| v.abs())),
            }
        }
        let n = live.len();
        let all =
            ndarray::Array2::from_shape_vec((1, n), live).unwrap_or_else(|_| ndarray::Array2::zeros((1, 0)));
        let (clipped_rms, _, _) = hygiene::clipped_rms(
            all.view(),
            &ndarray::Array2::from_elem((1, n), false),
            options.clip_quantile,
        );
        let peak = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let r = rms(a);
        Levels { clipped_rms, peak_to_rms: if r > 0.0 { peak / r } else { 0.0 } }
    }
}

/// The Ricker wavelet of peak frequency `f` (cycles per sample) at time `t` (samples).
pub fn ricker(f: f64, t: f64) -> f64 {
    let a = (std::f64::consts::PI * f * t).powi(2);
    (1.0 - 2.0 * a) * (-a).exp()
}

/// One clean seismic-like panel `[rows = time samples, cols = traces]`: a handful of linear and
/// hyperbolic events, each a Ricker wavelet (peak 10–40 Hz at 4 ms sampling) with a random
/// amplitude and polarity. A 1-D sample is one trace of such a panel.
fn clean_panel(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    let events = rng.random_range(3..=8);
    for _ in 0..events {
        let f: f64 = rng.random_range(10.0..40.0) * 0.004; // cycles per sample at dt = 4 ms
        let amp = rng.random_range(0.3..1.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let t0 = rng.random_range(0.0..rows as f64);
        let hyperbolic = rng.random_bool(0.5);
        let dip = rng.random_range(-6.0..6.0); // samples per trace: steep events too
        let x0 = rng.random_range(0.0..cols as f64);
        let v = rng.random_range(0.5..3.0) * cols as f64 / rows as f64;
        let half = (2.0 / f).ceil() as isize;
        for c in 0..cols {
            let x = c as f64 - x0;
            let t = if hyperbolic { (t0 * t0 + (x / v) * (x / v)).sqrt() } else { t0 + dip * c as f64 };
            let center = t.round() as isize;
            for r in (center - half).max(0)..(center + half + 1).min(rows as isize) {
                out[r as usize * cols + c] += amp * ricker(f, r as f64 - t);
            }
        }
    }
    out
}

/// Memory still available to this process (Linux `MemAvailable`), if known.
pub(crate) fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Refuses a dataset of `count` samples of `per` values (inputs and targets, f64) that cannot
/// fit in memory, before anything is allocated.
fn check_dataset_size(what: &str, count: usize, per: usize) -> Result<(), String> {
    let bytes = count.checked_mul(per).and_then(|v| v.checked_mul(16)).and_then(|b| u64::try_from(b).ok());
    let fits = match (bytes, available_memory()) {
        (None, _) => false,
        (Some(b), Some(avail)) => b <= avail,
        (Some(b), None) => b <= 1 << 40,
    };
    if fits {
        Ok(())
    } else {
        let gb = count as f64 * per as f64 * 16.0 / 1e9;
        Err(format!(
            "{what}: {count} samples of {per} values need {gb:.3e} GB of memory (inputs and targets in f64), more than is available; use fewer or smaller samples"
        ))
    }
}

/// The sample interval of the synthetic data (s): its Ricker peaks are 10–40 Hz at 4 ms.
pub const SYNTHETIC_DT: f64 = 0.004;

/// `synthetic(shape, count, noise, seed)`: `[C, H, W]` sections or `[C, N]` traces; input =
/// clean + noise (amplitudes relative to each sample's clean RMS, sampled at
/// [`SYNTHETIC_DT`]), target = clean. Deterministic from `seed`. Refused before allocating
/// when it would not fit in memory.
pub fn synthetic(shape: &[usize], count: usize, noise: &NoiseSpec, seed: u64) -> Result<Dataset, String> {
    let per = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).unwrap_or(usize::MAX);
    check_dataset_size("synthetic data", count, per)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (c, rows, cols) = match shape {
        [c, n] => (*c, *n, 1),
        [c, h, w] => (*c, *h, *w),
        _ => (1, per, 1),
    };
    noise.check_interval(SYNTHETIC_DT, "synthetic data")?;
    let mut clean = Vec::with_capacity(count * per);
    for _ in 0..count {
        for _ in 0..c {
            clean.extend(clean_panel(rows, cols, &mut rng));
        }
    }
    let full: Vec<usize> = std::iter::once(count).chain(shape.iter().copied()).collect();
    let targets = ArrayD::from_shape_vec(IxDyn(&full), clean).map_err(|e| e.to_string())?;
    let added = AddedNoise { spec: noise.clone(), reference_rms: None, dt: SYNTHETIC_DT, seed };
    let inputs = added.add_all(&targets, NOISE_FIXED);
    Ok(Dataset { noise: Some(added), ..Dataset::new(inputs, targets) })
}

/// What a model saw in training, stored in its weights' metadata (`data_dt_ms`,
/// `data_peak_to_rms`) so that inference can warn about data far from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// The sample interval in ms, when known (synthetic: 4; SEG-Y: the headers; npy: `dt_ms`
    /// when noise is added).
    pub dt_ms: Option<f64>,
    /// max |x| / RMS(x) over the data (the crest factor).
    pub peak_to_rms: f64,
}

impl Seen {
    pub fn of(spec: &DataSpec, base_dir: &Path, levels: &Levels) -> Seen {
        let dt_ms = match spec {
            DataSpec::Synthetic { .. } => Some(SYNTHETIC_DT * 1000.0),
            DataSpec::Npy { noise: Some(_), dt_ms, .. } => Some(*dt_ms),
            DataSpec::Npy { .. } => None,
            DataSpec::Segy { path, .. } => crate::seismic::segy::SeismicFile::open(&base_dir.join(path))
                .ok()
                .filter(|f| f.dt_us > 0)
                .map(|f| f64::from(f.dt_us) / 1000.0),
        };
        Seen { dt_ms, peak_to_rms: levels.peak_to_rms }
    }

    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut m = vec![("data_peak_to_rms".to_string(), self.peak_to_rms.to_string())];
        if let Some(dt) = self.dt_ms {
            m.push(("data_dt_ms".to_string(), dt.to_string()));
        }
        m
    }
}

/// Refuses NaN or infinite values in a data file, naming the first.
pub fn check_values(a: &ArrayD<f64>, file: &Path) -> Result<(), String> {
    use ndarray::Dimension;
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((at, v)) => Err(format!(
            "{}: holds {v} at index {:?} ({} non-finite values in all); training needs finite data",
            file.display(),
            at.slice(),
            a.iter().filter(|v| !v.is_finite()).count()
        )),
    }
}

/// Checks targets against the loss: for `cross_entropy`, `[N]` class indices must be whole
/// numbers in `0..K` (K = the output's size), else `[N, K]` probabilities; for `mse`/`mae` the
/// targets must have the output's shape. Names the file and the first bad value.
pub fn check_targets(
    targets: &ArrayD<f64>,
    loss: LossKind,
    out_shape: &[usize],
    file: &Path,
) -> Result<(), String> {
    check_values(targets, file)?;
    let name = file.display();
    let sample = targets.shape().get(1..).unwrap_or(&[]);
    match loss {
        LossKind::CrossEntropy if targets.ndim() == 1 => {
            let classes: usize = out_shape.iter().product();
            if let Some((i, v)) = targets
                .iter()
                .enumerate()
                .find(|(_, v)| v.fract() != 0.0 || **v < 0.0 || **v >= classes as f64)
            {
                let v = if v.abs() >= 1e6 { format!("{v:e}") } else { v.to_string() };
                return Err(format!(
                    "{name}: target {i} is {v}, not a class index: class targets are whole numbers 0 to {} for the model's {classes} classes",
                    classes.saturating_sub(1)
                ));
            }
            Ok(())
        }
        _ if sample != out_shape => Err(format!(
            "{name}: targets are {sample:?} per sample but the model output is {out_shape:?}{}",
            if targets.ndim() == 1 { " (a 1-D array is class indices, for cross_entropy only)" } else { "" }
        )),
        _ => Ok(()),
    }
}

/// Reads a float32 or float64 `.npy` (integers too, for class targets) as f64; declared sizes
/// are checked against the file before anything is allocated (see `seismic::npy`).
pub fn read_npy(path: &Path) -> Result<ArrayD<f64>, String> {
    crate::seismic::npy::read(path)
}

/// Writes float32 `.npy`, atomically.
pub fn write_npy(path: &Path, a: &ArrayD<f64>) -> Result<(), String> {
    use ndarray_npy::WriteNpyExt;
    let mut bytes = vec![];
    a.mapv(|v| v as f32).write_npy(&mut bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    super::write_atomically(path, &bytes)
}

/// `npy(input=, target=)`: both with the sample axis first and the same count; samples must
/// have the model's input shape (targets: the output shape, or `[N]` class indices).
pub fn npy(input: &Path, target: &Path, in_shape: &[usize], out_shape: &[usize]) -> Result<Dataset, String> {
    let inputs = read_npy(input)?;
    let targets = read_npy(target)?;
    if inputs.shape().get(1..) != Some(in_shape) {
        return Err(format!(
            "{}: samples are {:?} but the model input is {:?} (the sample axis comes first)",
            input.display(),
            inputs.shape().get(1..).unwrap_or(&[]),
            in_shape
        ));
    }
    let class_targets = targets.ndim() == 1;
    if !class_targets && targets.shape().get(1..) != Some(out_shape) {
        return Err(format!(
            "{}: targets are {:?} but the model output is {:?}",
            target.display(),
            targets.shape().get(1..).unwrap_or(&[]),
            out_shape
        ));
    }
    if targets.shape()[0] != inputs.shape()[0] {
        return Err(format!(
            "{}: {} targets for {} inputs",
            target.display(),
            targets.shape()[0],
            inputs.shape()[0]
        ));
    }
    Ok(Dataset::new(inputs, targets))
}

/// SNR in dB of an estimate against the clean signal: 10·log10(‖s‖² / ‖s − ŝ‖²).
pub fn snr_db(clean: &ArrayD<f64>, estimate: &ArrayD<f64>) -> f64 {
    let s: f64 = clean.iter().map(|v| v * v).sum();
    let e: f64 = clean.iter().zip(estimate.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
    snr_from_energies(s, e)
}

/// 10·log10(signal / error): `inf` for an exact estimate (error 0), NaN when either energy is
/// NaN (a NaN output must never read as a great SNR; `f64::max` would drop the NaN).
pub fn snr_from_energies(signal: f64, error: f64) -> f64 {
    if signal.is_nan() || error.is_nan() {
        f64::NAN
    } else if error == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / error).log10()
    }
}

/// Per-sample RMS, for tests and reports.
pub fn rms(a: &ArrayD<f64>) -> f64 {
    (a.iter().map(|v| v * v).sum::<f64>() / a.len().max(1) as f64).sqrt()
}

/// How `segy(...)` cuts a file: the patch and its step (`None`: the model's input size, half
/// of it), what is held out for validation, the header bytes of inline and crossline numbers.
pub struct SegyPlan<'a> {
    pub patch: Option<&'a [usize]>,
    pub step: Option<&'a [usize]>,
    pub holdout: Option<Holdout>,
    pub geometry: crate::seismic::geometry::GeometryOptions,
    /// Polled during the passes over the file (Ctrl-C); true stops with an error.
    pub stop: &'a dyn Fn() -> bool,
}

fn never() -> bool {
    false
}

impl SegyPlan<'_> {
    pub fn new<'a>(patch: Option<&'a [usize]>, step: Option<&'a [usize]>) -> SegyPlan<'a> {
        SegyPlan { patch, step, holdout: None, geometry: Default::default(), stop: &never }
    }
}

/// `segy("file", patch, step, noise, seed, holdout)`: training pairs cut from a recorded line
/// or volume, read from the file a batch at a time (docs/seismic.md, "Training on a file").
/// The data are divided by their clipped RMS of live samples (the scale inference measures):
/// one pass over the file a window at a time (`stream::file_scan`), which also refuses NaN or
/// infinite samples. A 2-D line gives patches of `patch = [H, W]` (time samples × traces,
/// default the model's input size) every `step` (default half a patch), the last flush with
/// each edge; a 3-D volume (by its headers, `seismic::geometry`) gives such patches of every
/// inline and every crossline section, never across a missing trace; 1-D models take windows
/// of `N` samples of every trace. Traces whose header marks them dead read as zeros. The input
/// adds `noise` (amplitudes relative to the data's scale, frequencies at the headers' sample
/// interval); the target is the recorded data.
pub fn segy(
    path: &Path,
    model_in: &[usize],
    plan: &SegyPlan,
    noise: &NoiseSpec,
    seed: u64,
) -> Result<Dataset, String> {
    let f = crate::seismic::segy::SeismicFile::open(path).map_err(|e| e.to_string())?;
    let name = path.display().to_string();
    let dt = f64::from(f.dt_us) * 1e-6;
    if dt <= 0.0 && noise.max_freq().is_some() {
        return Err(format!("{name}: the headers give no sample interval, which noise in Hz needs"));
    }
    noise.check_interval(dt, &name)?;
    if f.traces() == 0 || f.samples == 0 {
        return Err(format!(
            "{name}: empty section: {} traces of {} samples, nothing to read",
            f.traces(),
            f.samples
        ));
    }
    let (size, step, one_d) = patch_plan(model_in, plan.patch, plan.step, &name)?;
    let (rows, cols) = (f.samples, f.traces());
    let geometry = crate::seismic::geometry::Geometry::index_until(&f, plan.geometry, plan.stop)
        .map_err(|e| format!("{name}: {e}"))?;
    let index = match PatchIndex::volume(&geometry, rows, size, step, one_d) {
        Some(index) => index,
        None => {
            check_fits(rows, cols, size, one_d, &name)?;
            PatchIndex::line(cols, rows, size, step, one_d)
        }
    };
    if index.is_empty() {
        // Only a volume can give an empty index (`check_fits` refused a line above): its
        // sections are short, or cut short at missing traces.
        let count = |a: &Option<crate::seismic::geometry::AxisRange>| a.as_ref().map_or(0, |a| a.count);
        let missing = match geometry.missing {
            0 => String::new(),
            m => format!(", cut at its {m} missing traces"),
        };
        return Err(format!(
            "{name}: no {}×{} patch fits in the volume's sections ({rows} samples; inline sections of {} traces, crossline sections of {}{missing}); give a smaller `patch` or model input",
            size[0],
            size.get(1).copied().unwrap_or(1),
            count(&geometry.crosslines),
            count(&geometry.inlines),
        ));
    }
    let options = crate::seismic::hygiene::Options {
        nonfinite: crate::seismic::hygiene::NonFinite::Mask,
        ..Default::default()
    };
    let (found, (scale, _, _), (peak, plain)) =
        super::stream::file_scan(&f, 1024, &options, plan.stop).map_err(|e| format!("{name}: {e}"))?;
    if let Some(&(t, s)) = found.nonfinite.first() {
        return Err(format!(
            "{name}: trace {} (of {cols}), sample {} is NaN or infinite ({} such samples in all); training needs finite data",
            t + 1,
            s + 1,
            found.nonfinite.len()
        ));
    }
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let added = AddedNoise { spec: noise.clone(), reference_rms: Some(1.0), dt: dt.max(1e-6), seed };
    let with_noise = !added.spec.is_none();
    let empty: Vec<usize> = std::iter::once(0).chain(model_in.iter().copied()).collect();
    Ok(Dataset {
        inputs: ArrayD::zeros(IxDyn(&empty)),
        targets: ArrayD::zeros(IxDyn(&empty)),
        noise: with_noise.then_some(added),
        patches: Some(index),
        file: Some(Arc::new(FilePatches { file: f, scale })),
        holdout: plan.holdout,
        // With no noise added the recorded data is input and target alike: nothing to score.
        clean_targets: with_noise,
        file_peak_to_rms: Some(if plain > 0.0 { peak / plain } else { 0.0 }),
    })
}

/// The patch `[H, W]` (`[N, 1]` for 1-D windows), its step, and whether windows are 1-D.
fn patch_plan(
    model_in: &[usize],
    patch: Option<&[usize]>,
    step: Option<&[usize]>,
    name: &str,
) -> Result<([usize; 2], [usize; 2], bool), String> {
    if model_in.first() != Some(&1) {
        return Err(format!("{name}: a section has one channel; the model takes {model_in:?}"));
    }
    let spatial = &model_in[1..];
    let patch: Vec<usize> = patch.map_or_else(|| spatial.to_vec(), <[usize]>::to_vec);
    let step: Vec<usize> =
        step.map_or_else(|| patch.iter().map(|p| (p / 2).max(1)).collect(), <[usize]>::to_vec);
    match (patch.as_slice(), step.as_slice()) {
        ([h, w], [sh, sw]) => Ok(([*h, *w], [*sh, *sw], false)),
        ([n], [s]) => Ok(([*n, 1], [*s, 1], true)),
        _ => Err(format!("{name}: patch {patch:?} / step {step:?} do not fit the model input {model_in:?}")),
    }
}

/// Refuses a line smaller than one patch.
fn check_fits(rows: usize, cols: usize, size: [usize; 2], one_d: bool, name: &str) -> Result<(), String> {
    let [h, w] = size;
    if one_d && rows < h {
        return Err(format!("{name}: traces have {rows} samples, fewer than the model's {h}"));
    }
    if rows < h || cols < w {
        return Err(format!(
            "{name}: the section is {rows}×{cols} (samples × traces), smaller than a {h}×{w} patch"
        ));
    }
    Ok(())
}

/// Patches of a section `[samples (time), traces]` held in memory (a 2-D `.npy` section for
/// self-supervised training, laid out as `infer` reads it), cut as [`segy`] cuts a line: the
/// same positions in the same order, divided by the section's clipped RMS of live samples.
pub fn section_patches(
    section: ndarray::Array2<f64>,
    path: &Path,
    model_in: &[usize],
    patch: Option<&[usize]>,
    step: Option<&[usize]>,
    added: AddedNoise,
) -> Result<Dataset, String> {
    use crate::seismic::hygiene;
    let name = path.display().to_string();
    let options = hygiene::Options::default();
    let scan = hygiene::scan(section.t(), &[], &options);
    let (scale, _, _) = hygiene::clipped_rms(section.t(), &scan.masked, options.clip_quantile);
    let section = section / if scale > 0.0 { scale } else { 1.0 };
    let (size, step, one_d) = patch_plan(model_in, patch, step, &name)?;
    let (rows, cols) = section.dim();
    check_fits(rows, cols, size, one_d, &name)?;
    let index = PatchIndex::line(cols, rows, size, step, one_d);
    let per = size[0] * size[1];
    check_dataset_size(&name, index.len(), per)?;
    let mut clean = vec![0.0; index.len() * per];
    for (i, out) in clean.chunks_exact_mut(per).enumerate() {
        index.cut(section.view(), i, out);
    }
    let full: Vec<usize> = std::iter::once(index.len()).chain(index.sample_shape()).collect();
    let targets = ArrayD::from_shape_vec(IxDyn(&full), clean).map_err(|e| e.to_string())?;
    // The section has unit scale: amplitudes are relative to it.
    let with_noise = !added.spec.is_none();
    Ok(Dataset {
        inputs: if with_noise { added.add_all(&targets, NOISE_FIXED) } else { targets.clone() },
        targets,
        noise: with_noise.then_some(added),
        patches: Some(index),
        // With no noise added the recorded data is input and target alike: nothing to score.
        clean_targets: with_noise,
        ..Dataset::new(ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ricker_matches_its_formula() {
        // r(0) = 1; zero crossings at t = ±1/(π f √2); minimum −2e^{−3/2} at t = ±√(3/2)/(π f).
        let f = 0.1;
        assert_eq!(ricker(f, 0.0), 1.0);
        let t0 = 1.0 / (std::f64::consts::PI * f * 2f64.sqrt());
        assert!(ricker(f, t0).abs() < 1e-12);
        let tm = (1.5f64).sqrt() / (std::f64::consts::PI * f);
        assert!((ricker(f, tm) + 2.0 * (-1.5f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn synthetic_is_deterministic_and_has_the_requested_noise() {
        let a = synthetic(&[1, 32, 32], 4, &NoiseSpec::gaussian(0.5), 7).unwrap();
        let b = synthetic(&[1, 32, 32], 4, &NoiseSpec::gaussian(0.5), 7).unwrap();
        assert_eq!(a.inputs, b.inputs);
        let c = synthetic(&[1, 32, 32], 4, &NoiseSpec::gaussian(0.5), 8).unwrap();
        assert_ne!(a.inputs, c.inputs);
        // noise std / clean RMS ≈ 0.5 → SNR ≈ −20·log10(0.5) = 6.02 dB.
        let big = synthetic(&[1, 64, 64], 16, &NoiseSpec::gaussian(0.5), 1).unwrap();
        let snr = snr_db(&big.targets, &big.inputs);
        assert!((snr - 6.02).abs() < 0.2, "SNR {snr}");
        let traces = synthetic(&[1, 256], 64, &NoiseSpec::gaussian(0.3), 2).unwrap();
        let snr = snr_db(&traces.targets, &traces.inputs);
        assert!((snr - 10.46).abs() < 0.3, "SNR {snr}");
        assert!(rms(&traces.targets) > 0.0);
    }
}

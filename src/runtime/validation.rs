//! Validation during training (docs/selfsup.md, "Honest validation"): which samples validate,
//! the baseline a denoiser must beat (the noisy inputs' own SNR), the loss and SNR of each
//! epoch on the fixed noise draw, and the warning when the model makes the data worse.

use super::data::{self, Dataset, NOISE_FIXED};
use super::patches::PatchIndex;
use super::split::Split;
use crate::check::program::{LossKind, SelfSupervised};
use crate::ir::Params;
use crate::ops::loss::{loss, masked_mse};
use ndarray::ArrayD;

/// The validation split of `dataset`: the held-out range, or blocks of traces (inlines of a
/// volume) for patches, a seeded choice of samples otherwise (`Dataset::split`).
pub fn split_of(dataset: &Dataset, fraction: f64, seed: u64) -> Result<Split, String> {
    dataset.split(fraction, seed, "the training data")
}

/// At most this many held-out samples validate each epoch: a file of any size then validates
/// in bounded time (10 % of a 20 GB line's patches would be a million patches).
pub const MAX_VALIDATION: usize = 4096;

/// The held-out samples that validate: all of them up to [`MAX_VALIDATION`], else that many
/// evenly spaced through them (the same every epoch).
pub fn bounded(val: &[usize]) -> Vec<usize> {
    if val.len() <= MAX_VALIDATION {
        return val.to_vec();
    }
    (0..MAX_VALIDATION).map(|k| val[k * val.len() / MAX_VALIDATION]).collect()
}

/// One line saying what validates, and the baseline: the SNR of the noisy validation inputs
/// against their clean targets, which a denoiser must beat.
pub fn describe(
    split: &Split,
    index: Option<&PatchIndex>,
    fraction: f64,
    input_snr_db: Option<f64>,
) -> String {
    let mut line = if split.val.is_empty() {
        if fraction > 0.0 {
            "validation: none (the data is too small to hold a block out)".to_string()
        } else {
            "validation: none (`validate = 0`)".to_string()
        }
    } else if split.held_out.is_empty() {
        format!("validation: {} samples chosen by the seed, {} train", split.val.len(), split.train.len())
    } else {
        let blocks: Vec<String> = split
            .held_out
            .iter()
            .map(|r| {
                index.map_or_else(|| format!("traces {}–{}", r.start + 1, r.end), |i| i.describe_range(r))
            })
            .collect();
        format!(
            "validation: {} patches from {} (held out), {} train{}",
            split.val.len(),
            blocks.join(", "),
            split.train.len(),
            if split.dropped > 0 {
                format!(", {} straddling the held-out part left out", split.dropped)
            } else {
                String::new()
            }
        )
    };
    if split.val.len() > MAX_VALIDATION {
        line += &format!(" ({MAX_VALIDATION} of the held-out samples, evenly spaced, validate each epoch)");
    }
    if let Some(snr) = input_snr_db {
        line += &format!("; noisy-input SNR {} (the baseline)", super::train::fmt_snr(snr));
    }
    line
}

/// Below the input's SNR by more than this is "worse" (f32 arithmetic moves an identity's SNR
/// by far less; both are printed to 0.01 dB).
const WORSE_DB: f64 = 0.01;

/// The warning when the model's validation SNR is below its noisy input's.
pub fn worse_than_input(epoch: usize, val_snr_db: Option<f64>, input_snr_db: Option<f64>) -> Option<String> {
    let (v, i) = (val_snr_db?, input_snr_db?);
    (v < i - WORSE_DB || v.is_nan()).then(|| {
        format!(
            "warning: after epoch {epoch} the model makes validation worse than its input: SNR {} against the noisy input's {}",
            super::train::fmt_snr(v),
            super::train::fmt_snr(i)
        )
    })
}

/// How validation runs: the loss, and for self-supervised training the masking and the seed of
/// its fixed masks.
pub struct Validation<'a> {
    pub dataset: &'a Dataset,
    pub idx: &'a [usize],
    pub batch: usize,
    pub kind: LossKind,
    /// SNR against the targets (denoising data with a clean reference).
    pub score: bool,
    pub target: Option<SelfSupervised>,
    pub seed: u64,
}

/// The model's first output for one batch, in inference mode.
pub type Forward<'f> = dyn FnMut(&mut Params, ArrayD<f64>) -> Result<ArrayD<f64>, String> + 'f;

/// Validation loss and SNR over the held-out samples, in inference mode, on the fixed noise
/// draw. Self-supervised: the loss is the masked mse on masks fixed by the seed (the same every
/// epoch), the SNR that of the unmasked input's output against the clean reference.
pub fn validate(
    v: &Validation,
    forward: &mut Forward,
    params: &mut Params,
) -> Result<(Option<f64>, Option<f64>), String> {
    if v.idx.is_empty() {
        return Ok((None, None));
    }
    let (mut loss_sum, mut s2, mut e2) = (0.0, 0.0, 0.0);
    for (k, chunk) in v.idx.chunks(v.batch).enumerate() {
        let (x, t) = v.dataset.batch_with_noise(chunk, NOISE_FIXED)?;
        let l = match v.target {
            Some(scheme) => {
                let seed = v.seed ^ 0x7A11_DA7E ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let (masked, mask) = super::masking::mask_batch(&x, scheme, seed);
                let y = forward(params, masked)?;
                masked_mse(&y, &x, &mask).0
            }
            None => 0.0,
        };
        if v.target.is_none() || v.score {
            let y = forward(params, x)?;
            if v.target.is_none() {
                loss_sum += loss(v.kind, &y, &t).0 * chunk.len() as f64;
            }
            if v.score {
                s2 += t.iter().map(|v| v * v).sum::<f64>();
                e2 += t.iter().zip(y.iter()).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
            }
        }
        loss_sum += l * chunk.len() as f64;
    }
    Ok((Some(loss_sum / v.idx.len() as f64), v.score.then(|| data::snr_from_energies(s2, e2))))
}

/// The noisy validation inputs' SNR against their clean targets (the fixed draw).
/// Read a batch at a time, so a file's held-out patches need not fit in memory.
pub fn input_snr(dataset: &Dataset, idx: &[usize]) -> Result<f64, String> {
    let (mut s2, mut e2) = (0.0, 0.0);
    for chunk in idx.chunks(256) {
        let (x, t) = dataset.batch_with_noise(chunk, NOISE_FIXED)?;
        s2 += t.iter().map(|v| v * v).sum::<f64>();
        e2 += t.iter().zip(x.iter()).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
    }
    Ok(data::snr_from_energies(s2, e2))
}

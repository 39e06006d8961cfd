//! Losses: means over every element of the batch (mse, mae) or over the batch (cross_entropy),
//! with their gradients with respect to the prediction.

use crate::check::program::LossKind;
use ndarray::{ArrayD, Axis};

/// The masked mse of self-supervised training: the mean of (pred − target)² over the samples
/// where `mask` is 1 (Noise2Void's loss), and its gradient (0 where the mask is 0). No masked
/// sample: loss and gradient 0.
pub fn masked_mse(pred: &ArrayD<f64>, target: &ArrayD<f64>, mask: &ArrayD<f64>) -> (f64, ArrayD<f64>) {
    let count: f64 = mask.sum();
    if count == 0.0 {
        return (0.0, ArrayD::zeros(pred.raw_dim()));
    }
    let d = (pred - target) * mask;
    (d.mapv(|v| v * v).sum() / count, d * (2.0 / count))
}

/// (loss, ∂loss/∂prediction). For cross_entropy, `pred` holds logits `[B, K]` and `target`
/// either probabilities `[B, K]` or class indices `[B]`.
pub fn loss(kind: LossKind, pred: &ArrayD<f64>, target: &ArrayD<f64>) -> (f64, ArrayD<f64>) {
    let n = pred.len() as f64;
    match kind {
        LossKind::Mse => {
            let d = pred - target;
            (d.mapv(|v| v * v).sum() / n, d * (2.0 / n))
        }
        LossKind::Mae => {
            let d = pred - target;
            (d.mapv(f64::abs).sum() / n, d.mapv(|v| if v > 0.0 { 1.0 } else if v < 0.0 { -1.0 } else { 0.0 } / n))
        }
        LossKind::CrossEntropy => {
            let b = pred.shape()[0];
            let k = pred.shape()[1];
            let probs = if target.ndim() == 1 {
                let mut p = ArrayD::zeros(pred.raw_dim());
                for (i, &c) in target.iter().enumerate() {
                    let c = (c.max(0.0) as usize).min(k - 1);
                    p[[i, c]] = 1.0;
                }
                p
            } else {
                target.clone()
            };
            let max = pred.fold_axis(Axis(1), f64::NEG_INFINITY, |a, &v| a.max(v)).insert_axis(Axis(1));
            let shifted = pred - &max;
            let lse = shifted.mapv(f64::exp).sum_axis(Axis(1)).mapv(f64::ln).insert_axis(Axis(1));
            let log_softmax = &shifted - &lse;
            let total = -(&probs * &log_softmax).sum() / b as f64;
            let softmax = log_softmax.mapv(f64::exp);
            let tsum = probs.sum_axis(Axis(1)).insert_axis(Axis(1));
            (total, (softmax * &tsum - &probs) / b as f64)
        }
    }
}

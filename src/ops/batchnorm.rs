//! `batchnorm`: per-channel normalisation over batch and spatial axes.
//! Training uses the biased batch variance; running estimates (unbiased variance, `momentum`)
//! serve inference. Scale starts at 1, shift at 0.

use super::{ParamRole, ParamSpec};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BatchNorm {
    pub momentum: f64,
    pub eps: f64,
}

/// Scale (`weight`) and shift (`bias`) are trainable; running mean and variance are state.
pub fn params(input: &[usize]) -> Vec<ParamSpec> {
    let c = input[0];
    [ParamRole::Weight, ParamRole::Bias, ParamRole::RunningMean, ParamRole::RunningVar]
        .into_iter()
        .map(|role| ParamSpec { role, shape: vec![c] })
        .collect()
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::{Array1, ArrayD, Axis};

/// Per-channel statistics over every axis but 1 (channels).
fn reduce_axes(x: &ArrayD<f64>) -> Vec<Axis> {
    (0..x.ndim()).filter(|&a| a != 1).rev().map(Axis).collect()
}

fn channel_mean(x: &ArrayD<f64>) -> Array1<f64> {
    let n = (x.len() / x.shape()[1]) as f64;
    let mut s = x.clone();
    for a in reduce_axes(x) {
        s = s.sum_axis(a);
    }
    s.into_dimensionality::<ndarray::Ix1>().expect("[C]") / n
}

/// Broadcasts a `[C]` vector against a batched value.
fn per_channel(v: &Array1<f64>, ndim: usize) -> ArrayD<f64> {
    let mut shape = vec![1; ndim];
    shape[1] = v.len();
    v.clone().into_shape_with_order(ndarray::IxDyn(&shape)).expect("broadcast shape")
}

/// What the backward pass needs from a training forward.
pub struct BatchNormCache {
    pub x_hat: ArrayD<f64>,
    pub inv_std: Array1<f64>,
}

impl BatchNorm {
    /// Training forward: batch statistics (biased variance); updates the running estimates
    /// with `momentum` and the unbiased variance, as PyTorch does.
    pub fn forward_train(
        &self,
        x: &ArrayD<f64>,
        gamma: &Array1<f64>,
        beta: &Array1<f64>,
        running_mean: &mut Array1<f64>,
        running_var: &mut Array1<f64>,
    ) -> (ArrayD<f64>, BatchNormCache) {
        let n = (x.len() / x.shape()[1]) as f64;
        let mean = channel_mean(x);
        let centered = x - &per_channel(&mean, x.ndim());
        let var = channel_mean(&centered.mapv(|v| v * v));
        let inv_std = var.mapv(|v| 1.0 / (v + self.eps).sqrt());
        let x_hat = &centered * &per_channel(&inv_std, x.ndim());
        let y = &x_hat * &per_channel(gamma, x.ndim()) + per_channel(beta, x.ndim());
        let m = self.momentum;
        let unbiased = if n > 1.0 { &var * (n / (n - 1.0)) } else { var.clone() };
        *running_mean = &*running_mean * (1.0 - m) + &mean * m;
        *running_var = &*running_var * (1.0 - m) + &unbiased * m;
        (y, BatchNormCache { x_hat, inv_std })
    }

    pub fn forward_eval(
        &self,
        x: &ArrayD<f64>,
        gamma: &Array1<f64>,
        beta: &Array1<f64>,
        mean: &Array1<f64>,
        var: &Array1<f64>,
    ) -> ArrayD<f64> {
        let inv_std = var.mapv(|v| 1.0 / (v + self.eps).sqrt());
        let scale = gamma * &inv_std;
        let shift = beta - &(mean * &scale);
        x * &per_channel(&scale, x.ndim()) + per_channel(&shift, x.ndim())
    }

    /// (dx, dgamma, dbeta) of the training forward.
    pub fn backward(
        &self,
        cache: &BatchNormCache,
        gamma: &Array1<f64>,
        dy: &ArrayD<f64>,
    ) -> (ArrayD<f64>, Array1<f64>, Array1<f64>) {
        let nd = dy.ndim();
        let n = (dy.len() / dy.shape()[1]) as f64;
        let dbeta = channel_mean(dy) * n;
        let dgamma = channel_mean(&(dy * &cache.x_hat)) * n;
        // dx = γ·inv_std/n · (n·dy − Σdy − x̂·Σ(dy·x̂))
        let term = dy * n - per_channel(&dbeta, nd) - &cache.x_hat * &per_channel(&dgamma, nd);
        let dx = term * &per_channel(&(gamma * &cache.inv_std / n), nd);
        (dx, dgamma, dbeta)
    }
}

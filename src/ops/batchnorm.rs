//! `batchnorm`: per-channel normalisation over batch and spatial axes.
//! Training uses the biased batch variance; running estimates (unbiased variance, `momentum`)
//! serve inference. Scale starts at 1, shift at 0.

use super::attrs::Attrs;
use super::{
    Backward, Backwarded, Cache, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, ParamInit,
    ParamRole, ParamSpec, Takes,
};
use crate::diag::Diagnostic;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BatchNorm {
    pub momentum: f64,
    pub eps: f64,
}

impl Layers for BatchNorm {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        name: "batchnorm",
        takes: Takes::One,
        positional: &[],
        named: &["momentum", "eps"],
        required: &[],
        aliases: &[
            ("batchnormalization", "batchnorm"),
            ("batch_norm", "batchnorm"),
            ("batchnorm2d", "batchnorm"),
            ("batchnorm1d", "batchnorm"),
            ("bn", "batchnorm"),
        ],
        summary: "per-channel normalisation over batch and spatial axes, with scale and shift",
        build: build_batchnorm,
    }];
}

/// `batchnorm`, for expansions that build it (the built-in `unet`).
pub const BATCHNORM: &LayerDef = &<BatchNorm as Layers>::LAYERS[0];

fn build_batchnorm(attrs: &Attrs, _spatial: usize) -> Result<Op, Diagnostic> {
    let momentum = attrs.number_or("momentum", 0.1)?;
    if !(0.0..=1.0).contains(&momentum) {
        return Err(attrs.bad("momentum", "a number in [0, 1]"));
    }
    let eps = attrs.number_or("eps", 1e-5)?;
    if eps <= 0.0 {
        return Err(attrs.bad("eps", "a positive number"));
    }
    Ok(Op::BatchNorm(BatchNorm { momentum, eps }))
}

impl OpRules for BatchNorm {
    fn kind(&self) -> &'static str {
        "batchnorm"
    }

    /// Scale (`weight`, starts at 1) and shift (`bias`, 0) are trainable; running mean (0) and
    /// variance (1) are state.
    fn params(&self, inputs: &[&[usize]]) -> Vec<ParamSpec> {
        let c = inputs[0][0];
        [
            (ParamRole::Weight, ParamInit::Ones),
            (ParamRole::Bias, ParamInit::Zeros),
            (ParamRole::RunningMean, ParamInit::Zeros),
            (ParamRole::RunningVar, ParamInit::Ones),
        ]
        .into_iter()
        .map(|(role, init)| ParamSpec { role, shape: vec![c], init })
        .collect()
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let p = step.params;
        let (gamma, beta) = (vec1(p[0]), vec1(p[1]));
        if step.training {
            let (mut rm, mut rv) = (vec1(p[2]), vec1(p[3]));
            let (y, c) = self.forward_train(step.xs[0], &gamma, &beta, &mut rm, &mut rv);
            Forwarded { y, cache: Cache::keep(c), state: vec![(2, rm.into_dyn()), (3, rv.into_dyn())] }
        } else {
            Forwarded::plain(self.forward_eval(step.xs[0], &gamma, &beta, &vec1(p[2]), &vec1(p[3])))
        }
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let p = step.params;
        if let Some(cache) = step.cache.get::<BatchNormCache>() {
            let (dx, dg, db) = self.backward_train(cache, &vec1(p[0]), &step.dy);
            return Backwarded { dxs: vec![dx], grads: vec![(0, dg.into_dyn()), (1, db.into_dyn())] };
        }
        // Inference-mode batchnorm is an affine map per channel: y = γ·x̂ + β with
        // x̂ = (x − running mean)·inv_std.
        let dy = &step.dy;
        let inv = vec1(p[3]).mapv(|v| 1.0 / (v + self.eps).sqrt());
        let x_hat = (step.xs[0] - &per_channel(&vec1(p[2]), dy.ndim())) * &per_channel(&inv, dy.ndim());
        let channel_sum = |a: ArrayD<f64>| {
            let mut s = a;
            while s.ndim() > 2 {
                s = s.sum_axis(Axis(2));
            }
            s.sum_axis(Axis(0))
        };
        let dgamma = channel_sum(dy * &x_hat);
        let dbeta = channel_sum(dy.clone());
        let dx = dy * &per_channel(&(&vec1(p[0]) * &inv), dy.ndim());
        Backwarded { dxs: vec![dx], grads: vec![(0, dgamma.into_dyn()), (1, dbeta.into_dyn())] }
    }

    /// Statistics, normalisation and backward as per-channel generated kernels.
    fn lowering(&self) -> Lowering {
        Lowering::Channel
    }
}

fn vec1(a: &ArrayD<f64>) -> Array1<f64> {
    a.view().into_dimensionality::<ndarray::Ix1>().expect("[C]").to_owned()
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::{Array1, ArrayD, Axis};

/// Per-channel statistics over every axis but 1 (channels).
fn reduce_axes(x: &ArrayD<f64>) -> Vec<Axis> {
    (0..x.ndim()).filter(|&a| a != 1).rev().map(Axis).collect()
}

fn channel_mean(x: &ArrayD<f64>) -> Array1<f64> {
    let n = (x.len() / x.shape()[1]) as f64;
    channel_sum(x) / n
}

fn channel_sum(x: &ArrayD<f64>) -> Array1<f64> {
    let mut s = x.clone();
    for a in reduce_axes(x) {
        s = s.sum_axis(a);
    }
    s.into_dimensionality::<ndarray::Ix1>().expect("[C]")
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
        let (n, mean, centered, var) = match current_sync() {
            None => {
                let mean = channel_mean(x);
                let centered = x - &per_channel(&mean, x.ndim());
                let var = channel_mean(&centered.mapv(|v| v * v));
                ((x.len() / x.shape()[1]) as f64, mean, centered, var)
            }
            // Data-parallel training: the statistics of the global batch (two passes, f64).
            Some(sync) => {
                let (n, sum) = synced_channel_sum(&*sync, x);
                let mean = sum / n;
                let centered = x - &per_channel(&mean, x.ndim());
                let (_, sq) = synced_channel_sum(&*sync, &centered.mapv(|v| v * v));
                (n, mean, centered, sq / n)
            }
        };
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
    pub fn backward_train(
        &self,
        cache: &BatchNormCache,
        gamma: &Array1<f64>,
        dy: &ArrayD<f64>,
    ) -> (ArrayD<f64>, Array1<f64>, Array1<f64>) {
        let nd = dy.ndim();
        let n = (dy.len() / dy.shape()[1]) as f64;
        let dbeta = channel_mean(dy) * n;
        let dgamma = channel_mean(&(dy * &cache.x_hat)) * n;
        // Data-parallel training: dx needs the sums over the global batch; the parameter
        // gradients stay this shard's (the training loop adds them across ranks).
        let (n_all, dbeta_all, dgamma_all) = match current_sync() {
            None => (n, dbeta.clone(), dgamma.clone()),
            Some(sync) => {
                let c = dbeta.len();
                let mut buf: Vec<f64> = std::iter::once(n).chain(dbeta.iter().copied()).collect();
                buf.extend(dgamma.iter().copied());
                // The count is not a gradient: add it unweighted.
                let mut count = [n];
                sync.sum_forward(&mut count);
                sync.sum_backward(&mut buf[1..]);
                (count[0], Array1::from(buf[1..1 + c].to_vec()), Array1::from(buf[1 + c..].to_vec()))
            }
        };
        // dx = γ·inv_std/n · (n·dy − Σdy − x̂·Σ(dy·x̂))
        let term = dy * n_all - per_channel(&dbeta_all, nd) - &cache.x_hat * &per_channel(&dgamma_all, nd);
        let dx = term * &per_channel(&(gamma * &cache.inv_std / n_all), nd);
        (dx, dgamma, dbeta)
    }
}

// ---- statistics over the global batch (data-parallel training) ---------------------------

/// Adds per-channel partial sums across the processes of a data-parallel run, so batchnorm's
/// training statistics are those of the global batch (as PyTorch's SyncBatchNorm). Installed
/// by the training loop around a step with [`with_stats_sync`].
pub trait StatsSync {
    /// Sums over the global batch of the forward pass (counts, Σx, Σ(x − mean)²).
    fn sum_forward(&self, partial: &mut [f64]);
    /// Sums of the backward pass (Σdy, Σdy·x̂), which scale with each shard's loss.
    fn sum_backward(&self, partial: &mut [f64]);
    /// Forward sums from per-sample rows (`k` values per sample of this shard, in order): the
    /// sums over the global batch added one sample at a time in global sample order, so every
    /// rank gets the bits [`sum_rows`] gives one process on the whole batch.
    fn sum_samples_forward(&self, rows: &[f64], k: usize) -> Vec<f64> {
        let mut total = sum_rows(rows, k);
        self.sum_forward(&mut total);
        total
    }
    /// [`sum_samples_forward`](StatsSync::sum_samples_forward) for backward sums.
    fn sum_samples_backward(&self, rows: &[f64], k: usize) -> Vec<f64> {
        let mut total = sum_rows(rows, k);
        self.sum_backward(&mut total);
        total
    }
}

/// The column sums of `rows` (`k` values per row), added one row at a time in row order.
pub fn sum_rows(rows: &[f64], k: usize) -> Vec<f64> {
    let mut total = vec![0.0; k];
    for row in rows.chunks_exact(k.max(1)) {
        for (t, v) in total.iter_mut().zip(row) {
            *t += v;
        }
    }
    total
}

thread_local! {
    /// The reduction of the step running on this thread. A thread-local rather than an argument
    /// threaded through every backend: the interpreter and the JIT both reach batchnorm's
    /// training code through `interp::forward_node`/`backward_node`, on the thread that runs
    /// the step, and nothing else needs it.
    static SYNC: std::cell::RefCell<Option<std::rc::Rc<dyn StatsSync>>> = const { std::cell::RefCell::new(None) };
}

/// The reduction installed for the step running on this thread, if any (the JIT's generated
/// batchnorm reads it too).
pub fn current_sync() -> Option<std::rc::Rc<dyn StatsSync>> {
    SYNC.with(|s| s.borrow().clone())
}

/// Runs `f` with batchnorm's training statistics summed by `sync` (restored afterwards, also
/// on panic).
pub fn with_stats_sync<R>(sync: std::rc::Rc<dyn StatsSync>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<std::rc::Rc<dyn StatsSync>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SYNC.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(SYNC.with(|s| s.borrow_mut().replace(sync)));
    f()
}

/// (count, per-channel sums) of `x` over the global batch.
fn synced_channel_sum(sync: &dyn StatsSync, x: &ArrayD<f64>) -> (f64, Array1<f64>) {
    let n = (x.len() / x.shape()[1]) as f64;
    let mut buf: Vec<f64> = std::iter::once(n).chain(channel_sum(x)).collect();
    sync.sum_forward(&mut buf);
    (buf[0], Array1::from(buf[1..].to_vec()))
}

//! Optimizers exactly as language.md writes them, in PyTorch's arithmetic so results can be
//! compared with it. With g the mini-batch mean gradient: first `clip` rescales g when its
//! global L2 norm exceeds c (g·c/‖g‖), then `weight_decay` adds wd·θ (L2, not AdamW).
//!
//! - sgd: buf ← γ·buf + g; θ ← θ − α·buf (or α·(g + γ·buf) with nesterov). With v = −α·buf this
//!   is the course's v ← γ·v − α·g; θ ← θ + v, and nesterov is its re-parameterised form.
//! - adagrad: r ← r + g²; θ ← θ − α·g/(δ + √r)
//! - rmsprop: r ← ρ·r + (1−ρ)·g²; θ ← θ − α·g/(δ + √r)
//! - adam: m ← ρ1·m + (1−ρ1)·g; v ← ρ2·v + (1−ρ2)·g²; θ ← θ − α·m̂/(δ + √v̂), t from 1.

use crate::check::program::{OptimizerKind, OptimizerSpec};
use ndarray::ArrayD;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Optimizer state: the step count and, per parameter, its slots (sgd: momentum buffer;
/// adagrad/rmsprop: squared-gradient accumulator; adam: first and second moments).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OptState {
    pub t: u64,
    pub slots: Vec<Vec<Vec<f64>>>,
}

fn slots_per_param(kind: &OptimizerKind) -> usize {
    match kind {
        OptimizerKind::Adam { .. } => 2,
        _ => 1,
    }
}

impl OptState {
    pub fn new(spec: &OptimizerSpec, sizes: &[usize]) -> OptState {
        let k = slots_per_param(&spec.kind);
        OptState { t: 0, slots: sizes.iter().map(|&n| vec![vec![0.0; n]; k]).collect() }
    }
}

/// Elements per parallel task of the update (and the least a parameter needs to be split).
const CHUNK: usize = 4096;

/// One optimizer step over every trainable parameter (`trainable[i]` false: left alone).
/// Parameters, and chunks of large ones, are updated in parallel: every element's update reads
/// only its own slots, so the result does not depend on the thread count; the clipping norm
/// sums each parameter in its order and the parameters in theirs (also thread-independent).
pub fn step(
    spec: &OptimizerSpec,
    state: &mut OptState,
    params: &mut [ArrayD<f64>],
    grads: &[ArrayD<f64>],
    trainable: &[bool],
) {
    state.t += 1;
    let t = state.t as i32;
    let scale = match spec.clip {
        Some(c) => {
            let sums: Vec<f64> = grads
                .par_iter()
                .zip(trainable)
                .map(|(g, &tr)| if tr { g.iter().map(|v| v * v).sum::<f64>() } else { 0.0 })
                .collect();
            let norm = sums.iter().zip(trainable).filter(|(_, tr)| **tr).map(|(s, _)| s).sum::<f64>().sqrt();
            if norm > c { c / norm } else { 1.0 }
        }
        None => 1.0,
    };
    let rule = Rule { kind: spec.kind.clone(), scale, wd: spec.weight_decay, t };
    params.par_iter_mut().zip(grads).zip(&mut state.slots).zip(trainable).for_each(
        |(((theta, grad), slots), &trainable)| {
            if !trainable {
                return;
            }
            let theta = theta.as_slice_mut().expect("parameters are contiguous");
            let grad = grad.as_standard_layout();
            let grad = grad.as_slice().expect("standard layout");
            let (first, rest) = slots.split_at_mut(1);
            let s0 = first[0].chunks_mut(CHUNK);
            // adam's second moment; the other rules have one slot.
            let s1: Vec<Option<&mut [f64]>> = match rest.first_mut() {
                Some(v) => v.chunks_mut(CHUNK).map(Some).collect(),
                None => (0..theta.len().div_ceil(CHUNK)).map(|_| None).collect(),
            };
            theta
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(s0.collect::<Vec<_>>())
                .zip(s1)
                .for_each(|(((th, g), s0), s1)| rule.apply(th, g, s0, s1));
        },
    );
}

/// The update of one element range, with the step's clip scale, weight decay and step count.
struct Rule {
    kind: OptimizerKind,
    scale: f64,
    wd: f64,
    t: i32,
}

impl Rule {
    fn apply(&self, theta: &mut [f64], grad: &[f64], s0: &mut [f64], s1: Option<&mut [f64]>) {
        let g_at = |j: usize, th: f64| grad[j] * self.scale + self.wd * th;
        match self.kind {
            OptimizerKind::Sgd { lr, momentum, nesterov } => {
                let buf = s0;
                for j in 0..theta.len() {
                    let g = g_at(j, theta[j]);
                    // PyTorch starts the buffer at g on the first step; with buf = 0 that is the same.
                    buf[j] = momentum * buf[j] + g;
                    let d = if nesterov { g + momentum * buf[j] } else { buf[j] };
                    theta[j] -= lr * d;
                }
            }
            OptimizerKind::Adagrad { lr, eps } => {
                let r = s0;
                for j in 0..theta.len() {
                    let g = g_at(j, theta[j]);
                    r[j] += g * g;
                    theta[j] -= lr * g / (eps + r[j].sqrt());
                }
            }
            OptimizerKind::RmsProp { lr, rho, eps } => {
                let r = s0;
                for j in 0..theta.len() {
                    let g = g_at(j, theta[j]);
                    r[j] = rho * r[j] + (1.0 - rho) * g * g;
                    theta[j] -= lr * g / (eps + r[j].sqrt());
                }
            }
            OptimizerKind::Adam { lr, rho1, rho2, eps } => {
                let (c1, c2) = (1.0 - rho1.powi(self.t), 1.0 - rho2.powi(self.t));
                let (m, v) = (s0, s1.expect("adam keeps two slots"));
                for j in 0..theta.len() {
                    let g = g_at(j, theta[j]);
                    m[j] = rho1 * m[j] + (1.0 - rho1) * g;
                    v[j] = rho2 * v[j] + (1.0 - rho2) * g * g;
                    theta[j] -= lr * (m[j] / c1) / (eps + (v[j] / c2).sqrt());
                }
            }
        }
    }
}

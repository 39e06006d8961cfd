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
use crate::jit::update::{self, UpdateRule};
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
/// The update runs as generated code (`jit::update`, bit-identical to [`Rule::apply`], the
/// native loop kept for hosts Cranelift cannot generate for); returns the seconds spent in it
/// (0 on the native loop).
pub fn step(
    spec: &OptimizerSpec,
    state: &mut OptState,
    params: &mut [ArrayD<f64>],
    grads: &[ArrayD<f64>],
    trainable: &[bool],
) -> f64 {
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
    let generated = update::kernel(rule.shape()).map(|f| (f, rule.coefficients()));
    let started = std::time::Instant::now();
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
                .for_each(|(((th, g), s0), s1)| match &generated {
                    Some((f, coef)) => {
                        let s1p = s1.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr());
                        debug_assert!(g.len() == th.len() && s0.len() == th.len(), "slot lengths");
                        // SAFETY: the kernel reads and writes elements 0..th.len() of theta,
                        // grad and s0 (equal lengths: chunks of equal-length arrays), and of
                        // s1 only for adam, which has a second slot of the same length; the
                        // coefficients are `COEFFICIENTS` f64. The chunks are this task's own.
                        unsafe {
                            f(
                                th.as_mut_ptr(),
                                g.as_ptr(),
                                s0.as_mut_ptr(),
                                s1p,
                                coef.as_ptr(),
                                th.len() as i64,
                            )
                        }
                    }
                    None => rule.apply(th, g, s0, s1),
                });
        },
    );
    if generated.is_some() { started.elapsed().as_secs_f64() } else { 0.0 }
}

/// The update of one element range, with the step's clip scale, weight decay and step count.
struct Rule {
    kind: OptimizerKind,
    scale: f64,
    wd: f64,
    t: i32,
}

impl Rule {
    /// The generated kernel's rule.
    fn shape(&self) -> UpdateRule {
        match self.kind {
            OptimizerKind::Sgd { nesterov, .. } => UpdateRule::Sgd { nesterov },
            OptimizerKind::Adagrad { .. } => UpdateRule::Adagrad,
            OptimizerKind::RmsProp { .. } => UpdateRule::RmsProp,
            OptimizerKind::Adam { .. } => UpdateRule::Adam,
        }
    }

    /// The generated kernel's coefficients for this step (the same numbers [`Rule::apply`]
    /// computes with).
    fn coefficients(&self) -> [f64; update::COEFFICIENTS] {
        let c = |lr: f64, rest: &[f64]| UpdateRule::coefficients(self.scale, self.wd, lr, rest);
        match self.kind {
            OptimizerKind::Sgd { lr, momentum, .. } => c(lr, &[momentum]),
            OptimizerKind::Adagrad { lr, eps } => c(lr, &[eps]),
            OptimizerKind::RmsProp { lr, rho, eps } => c(lr, &[eps, rho, 1.0 - rho]),
            OptimizerKind::Adam { lr, rho1, rho2, eps } => {
                let (c1, c2) = (1.0 - rho1.powi(self.t), 1.0 - rho2.powi(self.t));
                c(lr, &[eps, rho1, 1.0 - rho1, rho2, 1.0 - rho2, c1, c2])
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The generated update (`jit::update`) is the native rule bit for bit: every rule, with
    /// and without nesterov, clip scale and weight decay, over three steps (adam's corrections
    /// change), on an odd length (pairs, then the scalar tail) with values of mixed sign and
    /// size.
    #[test]
    fn the_generated_update_is_the_native_rule_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let kinds = [
            OptimizerKind::Sgd { lr: 0.1, momentum: 0.9, nesterov: false },
            OptimizerKind::Sgd { lr: 0.03, momentum: 0.7, nesterov: true },
            OptimizerKind::Adagrad { lr: 0.05, eps: 1e-10 },
            OptimizerKind::RmsProp { lr: 0.01, rho: 0.99, eps: 1e-8 },
            OptimizerKind::Adam { lr: 1e-3, rho1: 0.9, rho2: 0.999, eps: 1e-8 },
        ];
        for kind in kinds {
            for (scale, wd) in [(1.0, 0.0), (0.37, 1e-4)] {
                let n = 1001;
                let mut r = |s: f64| (0..n).map(|_| rng.random_range(-s..s)).collect::<Vec<f64>>();
                let (mut th_n, grad) = (r(1.0), r(3.0));
                let mut th_g = th_n.clone();
                let slots = |v: Vec<f64>| (v.clone(), v.iter().map(|x| x.abs()).collect::<Vec<f64>>());
                let (mut a_n, mut b_n) = slots(r(0.1));
                let (mut a_g, mut b_g) = (a_n.clone(), b_n.clone());
                for t in 1..=3 {
                    let rule = Rule { kind: kind.clone(), scale, wd, t };
                    let f = update::kernel(rule.shape()).expect("this host generates code");
                    let coef = rule.coefficients();
                    rule.apply(&mut th_n, &grad, &mut a_n, Some(&mut b_n));
                    // SAFETY: every buffer holds n elements; coef holds COEFFICIENTS.
                    unsafe {
                        f(
                            th_g.as_mut_ptr(),
                            grad.as_ptr(),
                            a_g.as_mut_ptr(),
                            b_g.as_mut_ptr(),
                            coef.as_ptr(),
                            n as i64,
                        )
                    };
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
                    assert_eq!(bits(&th_n), bits(&th_g), "{kind:?} scale {scale} wd {wd} step {t}: θ");
                    assert_eq!(bits(&a_n), bits(&a_g), "{kind:?}: first slot");
                    if matches!(kind, OptimizerKind::Adam { .. }) {
                        assert_eq!(bits(&b_n), bits(&b_g), "{kind:?}: second slot");
                    }
                }
            }
        }
    }
}

//! groupnorm on the buffers (`Lowering::Channel`), with the per-channel kernels of
//! [`super::channel`] run once per sample: the shifted moments of each channel over the sample's
//! positions, combined in f64 into each group's mean and variance; the normalisation as one
//! affine pass per sample (`(x − μ)·γ/σ + β`, coefficients per channel from its group); the
//! backward pass as batchnorm's (`Σ dy` and `Σ dy·(x − μ)` per channel, then `dx` in one affine
//! pass), with the sums taken per group. Training and inference compute the same thing.

use super::channel::{ChannelKind, ChannelSpec};
use super::codegen::{Codegen, Epilogue};
use super::exec::{BACKWARD, FORWARD, run_affine, run_moments};
use super::layout::Layout;
use super::norm::{CHUNK_POSITIONS, ChannelCall};
use super::{JitModel, Step};
use crate::ir::{Node, NodeId, Params, Value};
use crate::ops::Op;
use ndarray::{ArrayD, IxDyn};
use std::time::Instant;

pub(crate) struct GroupNormPlan {
    pub layout: Layout,
    pub groups: usize,
    pub eps: f64,
    pub stats: ChannelCall,
    pub normalise: ChannelCall,
    pub grad_sums: ChannelCall,
    pub grad_input: ChannelCall,
    /// Per sample `[shift | a | c | d]` (`4·cs` floats each).
    coef: Vec<f32>,
    partials: Vec<f32>,
    /// Of the last forward pass, per (sample, group): the mean and 1/σ.
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl GroupNormPlan {
    fn new(cg: &mut Codegen, layout: Layout, groups: usize, eps: f64) -> Result<GroupNormPlan, String> {
        let spec = |kind, shift_p, has_q| ChannelSpec {
            kind,
            cs: layout.cs,
            shift_p,
            has_q,
            epilogue: Epilogue::None,
        };
        Ok(GroupNormPlan {
            layout,
            groups,
            eps,
            stats: ChannelCall::new(cg, spec(ChannelKind::Moments, true, false))?,
            normalise: ChannelCall::new(cg, spec(ChannelKind::Affine, true, false))?,
            grad_sums: ChannelCall::new(cg, spec(ChannelKind::Moments, false, true))?,
            grad_input: ChannelCall::new(cg, spec(ChannelKind::Affine, false, true))?,
            coef: vec![],
            partials: vec![],
            mean: vec![],
            inv_std: vec![],
        })
    }

    pub(crate) fn link(&mut self, cg: &Codegen) {
        for call in [&mut self.stats, &mut self.normalise, &mut self.grad_sums, &mut self.grad_input] {
            call.link(cg);
        }
    }

    /// Positions of one sample.
    fn hw(&self) -> usize {
        self.layout.h * self.layout.w
    }

    fn chunks(&self) -> usize {
        self.hw().div_ceil(CHUNK_POSITIONS)
    }

    /// Floats of the coefficients and the partial sums.
    pub(crate) fn len(&self) -> usize {
        let cs = self.layout.cs;
        self.layout.n * 4 * cs + self.chunks() * 2 * cs
    }

    pub(crate) fn allocate(&mut self) {
        let cs = self.layout.cs;
        self.coef = vec![0.0; self.layout.n * 4 * cs];
        self.partials = vec![0.0; self.chunks() * 2 * cs];
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "per-channel kernels per sample over {} positions (cs {}), {} groups: shifted moments in chunks of {CHUNK_POSITIONS}, group statistics in f64, normalise; backward: sums of dy and dy·(x − mean), input gradient; {} floats of coefficients and partial sums",
            self.hw(),
            self.layout.cs,
            self.groups,
            self.len()
        )
    }

    /// The f64 per-channel sums of moments kernel `call` over sample `n`'s positions.
    fn moments(&mut self, backward: bool, n: usize, p: &[f32], q: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (c, cs, hw) = (self.layout.c, self.layout.cs, self.hw());
        let call = if backward { &self.grad_sums } else { &self.stats };
        let span = n * hw * cs..(n + 1) * hw * cs;
        let coef = &self.coef[n * 4 * cs..(n + 1) * 4 * cs];
        if let Some(f) = call.f {
            let (p, q) = (&p[span.clone()], &q[span]);
            run_moments(f, &call.spec, (hw, CHUNK_POSITIONS), p, q, coef, &mut self.partials);
        }
        let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
        for part in self.partials.chunks(2 * cs) {
            for k in 0..c {
                s1[k] += f64::from(part[k]);
                s2[k] += f64::from(part[cs + k]);
            }
        }
        (s1, s2)
    }

    /// Sets lane block `block` of sample `n`'s coefficients to `values` (pad lanes 0).
    fn set_coef(&mut self, n: usize, block: usize, values: impl Iterator<Item = f64>) {
        let cs = self.layout.cs;
        let lanes = &mut self.coef[(4 * n + block) * cs..(4 * n + block + 1) * cs];
        lanes.fill(0.0);
        for (l, v) in lanes.iter_mut().zip(values) {
            *l = v as f32;
        }
    }

    fn coef_block(&self, n: usize, block: usize) -> Vec<f64> {
        let cs = self.layout.cs;
        self.coef[(4 * n + block) * cs..][..self.layout.c].iter().map(|&v| f64::from(v)).collect()
    }
}

impl JitModel {
    pub(crate) fn forward_groupnorm(
        &mut self,
        id: NodeId,
        node: &Node,
        plan: &mut GroupNormPlan,
        params: &Params,
    ) {
        let (l, groups) = (plan.layout, plan.groups);
        let (c, cs, hw) = (l.c, l.cs, plan.hw());
        let per = c / groups;
        let m = (per * hw) as f64;
        let (gamma, beta) = (&params[node.params[0]], &params[node.params[1]]);
        let mut y = std::mem::take(&mut self.nodes[id.index()].value);
        let x = self.buf(node.inputs[0]);
        let mut kernel_s = 0.0;
        plan.mean = vec![0.0; l.n * groups];
        plan.inv_std = vec![0.0; l.n * groups];
        for n in 0..l.n {
            // Shift: the sample's first position, within a few σ of each channel's mean.
            let first = &x[n * hw * cs..][..c];
            plan.set_coef(n, 0, first.iter().map(|&v| f64::from(v)));
            let shift = plan.coef_block(n, 0);
            let t = Instant::now();
            let (s1, s2) = plan.moments(false, n, x, x);
            kernel_s += t.elapsed().as_secs_f64();
            for g in 0..groups {
                let ch = g * per..(g + 1) * per;
                let mean = ch.clone().map(|k| s1[k] + hw as f64 * shift[k]).sum::<f64>() / m;
                // Σ (x − μ)² from the sums around each channel's shift.
                let sq: f64 = ch
                    .map(|k| {
                        let d = shift[k] - mean;
                        s2[k] + 2.0 * d * s1[k] + hw as f64 * d * d
                    })
                    .sum();
                plan.mean[n * groups + g] = mean;
                plan.inv_std[n * groups + g] = 1.0 / ((sq / m).max(0.0) + plan.eps).sqrt();
            }
            let group = |k: usize| n * groups + k / per;
            let (mean, inv) = (plan.mean.clone(), plan.inv_std.clone());
            plan.set_coef(n, 0, (0..c).map(|k| mean[group(k)]));
            plan.set_coef(n, 1, (0..c).map(|k| gamma[k] * inv[group(k)]));
            plan.set_coef(n, 2, std::iter::empty());
            // y = (x − s)·a + β + (s − μ)·a, s the f32 rounding of μ.
            let s = plan.coef_block(n, 0);
            plan.set_coef(n, 3, (0..c).map(|k| beta[k] + (s[k] - mean[group(k)]) * gamma[k] * inv[group(k)]));
            let t = Instant::now();
            if let Some(f) = plan.normalise.f {
                let span = n * hw * cs..(n + 1) * hw * cs;
                let coef = &plan.coef[n * 4 * cs..(n + 1) * 4 * cs];
                let xs = &x[span.clone()];
                run_affine(f, &plan.normalise.spec, hw, xs, xs, coef, &mut y[span]);
            }
            kernel_s += t.elapsed().as_secs_f64();
        }
        self.nodes[id.index()].value = y;
        self.profile_kernel(id, FORWARD, kernel_s);
    }

    /// `dγ = Σ dy·x̂`, `dβ = Σ dy` over samples and positions; per (sample, group) of `m`
    /// values `dx = inv/m·(m·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂))` with `dx̂ = dy·γ`, as one affine pass
    /// `dx = dy·(γ·inv) + (x − μ)·c + d`.
    pub(crate) fn backward_groupnorm(
        &mut self,
        id: NodeId,
        node: &Node,
        plan: &mut GroupNormPlan,
        params: &Params,
        pgrads: &mut Params,
    ) {
        let (l, groups) = (plan.layout, plan.groups);
        let (c, cs, hw) = (l.c, l.cs, plan.hw());
        let per = c / groups;
        let m = (per * hw) as f64;
        let dy = std::mem::take(self.grad_buf(id));
        let xv = node.inputs[0];
        let mut kernel_s = 0.0;
        let (mut dgamma, mut dbeta) = (vec![0.0f64; c], vec![0.0f64; c]);
        let gamma = &params[node.params[0]];
        for n in 0..l.n {
            // The shift lanes still hold the f32 mean of the forward pass.
            let shift = plan.coef_block(n, 0);
            let t = Instant::now();
            let (s1, s2_shifted) = plan.moments(true, n, &dy, self.buf(xv));
            kernel_s += t.elapsed().as_secs_f64();
            let group = |k: usize| n * groups + k / per;
            // Σ dy·(x − μ) from the sums around the f32 shift.
            let s2: Vec<f64> =
                (0..c).map(|k| s2_shifted[k] - (plan.mean[group(k)] - shift[k]) * s1[k]).collect();
            for k in 0..c {
                dbeta[k] += s1[k];
                dgamma[k] += s2[k] * plan.inv_std[group(k)];
            }
            let (mut cc, mut d) = (vec![0.0f64; c], vec![0.0f64; c]);
            for g in 0..groups {
                let ch = g * per..(g + 1) * per;
                let inv = plan.inv_std[n * groups + g];
                let sum: f64 = ch.clone().map(|k| gamma[k] * s1[k]).sum();
                let dot: f64 = ch.clone().map(|k| gamma[k] * s2[k]).sum::<f64>() * inv;
                for k in ch {
                    cc[k] = -inv * inv * dot / m;
                    d[k] = -inv * sum / m - cc[k] * (plan.mean[n * groups + g] - shift[k]);
                }
            }
            plan.set_coef(n, 2, cc.into_iter());
            plan.set_coef(n, 3, d.into_iter());
        }
        pgrads[node.params[0]] = ArrayD::from_shape_vec(IxDyn(&[c]), dgamma).expect("[C]");
        pgrads[node.params[1]] = ArrayD::from_shape_vec(IxDyn(&[c]), dbeta).expect("[C]");
        if let Value::Node(_) = xv {
            self.emit_grad(xv, |me, dx| {
                let t = Instant::now();
                if m == 1.0 {
                    // Groups of one value: the output is β whatever x is, so dx is exactly 0
                    // (the affine pass would leave f32 round-off of dy·γ/√eps − dy·γ/√eps).
                    dx.fill(0.0);
                } else if let Some(f) = plan.grad_input.f {
                    let x = me.buf(xv);
                    for n in 0..l.n {
                        let span = n * hw * cs..(n + 1) * hw * cs;
                        let coef = &plan.coef[n * 4 * cs..(n + 1) * 4 * cs];
                        run_affine(
                            f,
                            &plan.grad_input.spec,
                            hw,
                            &dy[span.clone()],
                            &x[span.clone()],
                            coef,
                            &mut dx[span],
                        );
                    }
                }
                kernel_s += t.elapsed().as_secs_f64();
            });
        }
        *self.grad_buf(id) = dy;
        self.profile_kernel(id, BACKWARD, kernel_s);
    }
}

/// The step of a groupnorm.
pub(crate) fn plan(cg: &mut Codegen, node: &Node, layout: Layout) -> Result<Option<Step>, String> {
    let Op::GroupNorm(gn) = &node.op else { return Ok(None) };
    Ok(Some(Step::GroupNorm(Box::new(GroupNormPlan::new(cg, layout, gn.groups, gn.eps)?))))
}

//! `groupnorm(groups)`: normalisation that does not depend on the batch size. Per sample, the
//! channels are split into `groups` groups of C/groups consecutive channels; each group is
//! normalised over its channels and every spatial position with the biased variance, then each
//! channel is scaled and shifted: `y = (x − μ)/√(σ² + eps)·weight[c] + bias[c]`.
//! PyTorch's `nn.GroupNorm(groups, C, eps=1e-5, affine=True)`: weight starts at 1, bias at 0;
//! training and inference compute the same thing (no running statistics).

use super::attrs::Attrs;
use super::{
    Backward, Backwarded, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, ParamInit, ParamRole,
    ParamSpec, Shape, ShapeError, ShapeWarning, Takes, single,
};
use crate::diag::Diagnostic;
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
}

impl Layers for GroupNorm {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        name: "groupnorm",
        takes: Takes::One,
        positional: &["groups"],
        named: &["eps"],
        required: &["groups"],
        aliases: &[("group_norm", "groupnorm"), ("groupnormalization", "groupnorm"), ("gn", "groupnorm")],
        summary: "per-sample normalisation over groups of channels (and space), with scale and shift; \
                  `groups` must divide the channel count",
        build: build_groupnorm,
    }];
}

fn build_groupnorm(attrs: &Attrs, _spatial: usize) -> Result<Op, Diagnostic> {
    let groups = attrs.positive("groups")?;
    let eps = attrs.number_or("eps", 1e-5)?;
    if eps <= 0.0 {
        return Err(attrs.bad("eps", "a positive number"));
    }
    Ok(Op::GroupNorm(GroupNorm { groups, eps }))
}

impl GroupNorm {
    /// (batch, channels, positions per channel) of a batched value.
    fn dims(x: &ArrayD<f64>) -> (usize, usize, usize) {
        let (b, c) = (x.shape()[0], x.shape()[1]);
        (b, c, x.len() / (b * c).max(1))
    }

    /// The normalised values `x̂` and each (sample, group)'s 1/√(σ² + eps). The backward step
    /// recomputes them from the input rather than relying on a cache, so it works after any
    /// forward (training or not, on either backend).
    fn normalise(&self, x: &ArrayD<f64>) -> (Vec<f64>, Vec<f64>) {
        let (b, c, s) = Self::dims(x);
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let per_group = c / self.groups;
        let m = (per_group * s) as f64;
        let mut x_hat = vec![0.0; xs.len()];
        let mut inv_std = vec![0.0; b * self.groups];
        for n in 0..b {
            for g in 0..self.groups {
                // Consecutive channels: one contiguous run of per_group·s values.
                let start = (n * c + g * per_group) * s;
                let run = start..start + per_group * s;
                let mean = xs[run.clone()].iter().sum::<f64>() / m;
                let var = xs[run.clone()].iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
                let inv = 1.0 / (var + self.eps).sqrt();
                inv_std[n * self.groups + g] = inv;
                for i in run {
                    x_hat[i] = (xs[i] - mean) * inv;
                }
            }
        }
        (x_hat, inv_std)
    }
}

impl OpRules for GroupNorm {
    fn kind(&self) -> &'static str {
        "groupnorm"
    }

    /// The shape is kept; the channel count must be a multiple of `groups`.
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        let input = single(inputs)?;
        let channels = input[0];
        if channels % self.groups != 0 {
            return Err(ShapeError::Channels { attr: "groups", channels, value: self.groups });
        }
        Ok((input.to_vec(), vec![]))
    }

    /// `weight` (starts at 1) and `bias` (0), one per channel.
    fn params(&self, inputs: &[&[usize]]) -> Vec<ParamSpec> {
        let c = inputs[0][0];
        vec![
            ParamSpec { role: ParamRole::Weight, shape: vec![c], init: ParamInit::Ones },
            ParamSpec { role: ParamRole::Bias, shape: vec![c], init: ParamInit::Zeros },
        ]
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let (_, c, s) = Self::dims(step.xs[0]);
        let (gamma, beta) = (step.params[0], step.params[1]);
        let (x_hat, _) = self.normalise(step.xs[0]);
        let y: Vec<f64> = x_hat
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / s) % c;
                v * gamma[[ch]] + beta[[ch]]
            })
            .collect();
        Forwarded::plain(
            ArrayD::from_shape_vec(IxDyn(step.xs[0].shape()), y).expect("same shape as the input"),
        )
    }

    /// Per group of `m` values: `dx = inv/m·(m·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂))` with `dx̂ = dy·weight[c]`;
    /// `dweight[c] = Σ dy·x̂`, `dbias[c] = Σ dy` over samples and positions.
    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let (b, c, s) = Self::dims(step.xs[0]);
        let (x_hat, inv_std) = self.normalise(step.xs[0]);
        let dy = step.dy.as_standard_layout();
        let dy = dy.as_slice().expect("standard layout");
        let gamma = step.params[0];
        let per_group = c / self.groups;
        let m = (per_group * s) as f64;
        let mut dgamma = vec![0.0; c];
        let mut dbeta = vec![0.0; c];
        let mut dx = vec![0.0; dy.len()];
        for n in 0..b {
            for g in 0..self.groups {
                let start = (n * c + g * per_group) * s;
                let run = start..start + per_group * s;
                let (mut sum, mut dot) = (0.0, 0.0);
                for i in run.clone() {
                    let ch = (i / s) % c;
                    let d = dy[i] * gamma[[ch]];
                    sum += d;
                    dot += d * x_hat[i];
                    dgamma[ch] += dy[i] * x_hat[i];
                    dbeta[ch] += dy[i];
                }
                let inv = inv_std[n * self.groups + g];
                for i in run {
                    let ch = (i / s) % c;
                    let d = dy[i] * gamma[[ch]];
                    dx[i] = inv / m * (m * d - sum - x_hat[i] * dot);
                }
            }
        }
        let dx = ArrayD::from_shape_vec(IxDyn(step.xs[0].shape()), dx).expect("same shape as the input");
        let vec1 = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&[c]), v).expect("[C]");
        Backwarded { dxs: vec![dx], grads: vec![(0, vec1(dgamma)), (1, vec1(dbeta))] }
    }

    /// The per-channel kernels, run per sample (`jit/groupnorm.rs`).
    fn lowering(&self) -> Lowering {
        Lowering::Channel
    }
}

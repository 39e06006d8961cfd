//! The layer kinds of geonet, one module each.
//!
//! Each op module holds everything the compiler knows about that op: its attributes, its
//! shape rule, its parameter shapes and FLOP count (used by `check`), its reference forward and
//! backward (used by the `interp` backend, the oracle), and its JIT emitter (used by `jit`).
//! Adding an op means adding one module here and one variant to [`Op`].
//!
//! Shapes never include the batch axis: `[C, N]` (1-D signal), `[C, H, W]` (2-D section) or
//! `[F]` (flat feature vector).

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod loss;
pub mod merge;
pub mod pool;
pub mod upsample;

use serde::Serialize;

/// A tensor shape without the batch axis.
pub type Shape = Vec<usize>;

/// One layer instance's kind and attributes, fully resolved: per-axis attributes have one
/// entry per spatial axis of the actual input, `pad = same` is already a number.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Op {
    Conv(conv::Conv),
    UpConv(conv::UpConv),
    Pool(pool::Pool),
    Upsample(upsample::Upsample),
    Flatten,
    Dense(dense::Dense),
    Activation(activation::Activation),
    BatchNorm(batchnorm::BatchNorm),
    Dropout(dropout::Dropout),
    Concat,
    Add,
    Sub,
}

/// What the JIT backend does with an op. The op decides — it knows which of its attributes the
/// generated kernels support — and the JIT obeys; it never routes an op by its variant alone, so
/// an attribute the kernels ignore cannot be silently miscompiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Lowering {
    /// The correlation and weight-gradient kernel families (conv, upconv, dense).
    Linear,
    /// A native NHWC loop of the JIT.
    Native,
    /// The interpreter's per-node reference code on converted f64 copies: correct, slow, and
    /// reported as such by the JIT's profile.
    Reference,
}

/// What a parameter tensor is for. Its file name in a checkpoint is `{layer}.{suffix}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ParamRole {
    Weight,
    Bias,
    /// batchnorm's running mean: state, not trained.
    RunningMean,
    /// batchnorm's running (unbiased) variance: state, not trained.
    RunningVar,
}

impl ParamRole {
    /// Tensor-name suffix, as PyTorch's `state_dict` spells it.
    pub fn suffix(self) -> &'static str {
        match self {
            ParamRole::Weight => "weight",
            ParamRole::Bias => "bias",
            ParamRole::RunningMean => "running_mean",
            ParamRole::RunningVar => "running_var",
        }
    }
    pub fn trainable(self) -> bool {
        matches!(self, ParamRole::Weight | ParamRole::Bias)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamSpec {
    pub role: ParamRole,
    pub shape: Shape,
}

/// A shape rule's verdict that is not an error: the layer works but something is likely wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum ShapeWarning {
    /// `(N_x + 2·pad − dilation·(N_h − 1) − 1)` is not a multiple of the stride on `axis`, so the
    /// last `dropped` input samples along it are never read.
    StrideDropsSamples { axis: usize, input: usize, dropped: usize },
}

/// Why a shape rule rejects its input(s). `attr` names the attribute at fault, when one is,
/// so that diagnostics can point at it.
#[derive(Clone, Debug, PartialEq)]
pub enum ShapeError {
    /// The op needs a given rank (e.g. `conv2d` on a `[C, N]` value, `dense` on `[C, H, W]`).
    Rank { expected: &'static str, found: Shape },
    /// `dense` (or anything flat-only) got a spatial value.
    NotFlat { found: Shape },
    /// A per-axis attribute was given with the wrong number of entries.
    AttrArity { attr: &'static str, expected: usize, found: usize },
    /// An attribute is zero where it must be positive (kernel, stride, dilation, factor, out).
    NotPositive { attr: &'static str },
    /// The size formula gives less than one output sample on `axis`.
    /// `formula` is the arithmetic written out, e.g. `(5 + 2·0 − 7)/1 + 1 = −1`;
    /// `min_input` is the smallest input size along that axis that would work.
    AxisTooSmall { axis: usize, formula: String, value: i64, min_input: u64 },
    /// Two inputs of a merge disagree in a spatial size (concat) or in their whole shape (add, sub).
    Mismatch { what: &'static str, first: Shape, other: Shape, other_index: usize },
    /// A merge got fewer inputs than it needs.
    Arity { expected: &'static str, found: usize },
    /// Size arithmetic overflowed (absurdly large sizes).
    Overflow,
}

impl ShapeError {
    /// The attribute at fault, for pointing a label at it.
    pub fn attr(&self) -> Option<&'static str> {
        match self {
            ShapeError::AttrArity { attr, .. } | ShapeError::NotPositive { attr } => Some(attr),
            _ => None,
        }
    }
}

/// Checked arithmetic helpers: every size computation goes through these so absurd sizes
/// become [`ShapeError::Overflow`] instead of a panic or a wrap-around.
pub(crate) fn checked_product(dims: &[usize]) -> Result<usize, ShapeError> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(ShapeError::Overflow)
}

/// Broadcast a per-axis attribute (already validated non-empty) to `rank` axes.
pub fn per_axis(values: &[usize], rank: usize, attr: &'static str) -> Result<Vec<usize>, ShapeError> {
    match values.len() {
        1 => Ok(vec![values[0]; rank]),
        n if n == rank => Ok(values.to_vec()),
        n => Err(ShapeError::AttrArity { attr, expected: rank, found: n }),
    }
}

impl Op {
    /// The op's name as written in the language (`conv`, `maxpool`, ...), used in layer names.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "conv",
            Op::UpConv(_) => "upconv",
            Op::Pool(p) => p.kind.name(),
            Op::Upsample(_) => "upsample",
            Op::Flatten => "flatten",
            Op::Dense(_) => "dense",
            Op::Activation(a) => a.name(),
            Op::BatchNorm(_) => "batchnorm",
            Op::Dropout(_) => "dropout",
            Op::Concat => "concat",
            Op::Add => "add",
            Op::Sub => "sub",
        }
    }

    /// What the JIT does with this op (see [`Lowering`]).
    pub fn lowering(&self) -> Lowering {
        match self {
            // Every attribute of these three is honoured by the kernel families (stride, pad,
            // dilation, bias; upconv's stride and pad through interleaving).
            Op::Conv(_) | Op::UpConv(_) | Op::Dense(_) => Lowering::Linear,
            Op::Pool(p) if p.kind == pool::PoolKind::Max => Lowering::Native,
            Op::Concat | Op::Add | Op::Sub | Op::Flatten => Lowering::Native,
            Op::Activation(activation::Activation::Relu) => Lowering::Native,
            // The native loop computes leaky relu as a max, which needs 0 ≤ slope ≤ 1.
            Op::Activation(activation::Activation::LeakyRelu { slope }) if (0.0..=1.0).contains(slope) => {
                Lowering::Native
            }
            _ => Lowering::Reference,
        }
    }

    /// The shape rule: output shape of this op for the given input shapes.
    pub fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        let single = || -> Result<&[usize], ShapeError> {
            match inputs {
                [one] => Ok(one),
                _ => Err(ShapeError::Arity { expected: "one input", found: inputs.len() }),
            }
        };
        match self {
            Op::Conv(c) => c.output_shape(single()?),
            Op::UpConv(c) => c.output_shape(single()?).map(|s| (s, vec![])),
            Op::Pool(p) => p.output_shape(single()?),
            Op::Upsample(u) => u.output_shape(single()?).map(|s| (s, vec![])),
            Op::Flatten => dense::flatten_shape(single()?).map(|s| (s, vec![])),
            Op::Dense(d) => d.output_shape(single()?).map(|s| (s, vec![])),
            Op::Activation(_) | Op::Dropout(_) => Ok((single()?.to_vec(), vec![])),
            Op::BatchNorm(_) => Ok((single()?.to_vec(), vec![])),
            Op::Concat => merge::concat_shape(inputs).map(|s| (s, vec![])),
            Op::Add | Op::Sub => merge::elementwise_shape(inputs).map(|s| (s, vec![])),
        }
    }

    /// Parameter and state tensors of this op for the given input shapes, in checkpoint order.
    pub fn params(&self, inputs: &[&[usize]]) -> Vec<ParamSpec> {
        match self {
            Op::Conv(c) => c.params(inputs[0]),
            Op::UpConv(c) => c.params(inputs[0]),
            Op::Dense(d) => d.params(inputs[0]),
            Op::BatchNorm(_) => batchnorm::params(inputs[0]),
            _ => vec![],
        }
    }

    /// Trainable parameter count.
    pub fn trainable_params(&self, inputs: &[&[usize]]) -> usize {
        self.params(inputs)
            .iter()
            .filter(|p| p.role.trainable())
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Forward FLOPs per sample, counting a multiply-add as 2. Only the linear layers (conv,
    /// upconv, dense) do multiply-adds; element-wise ops, pooling and merges count 0, as in
    /// fvcore and the peers' `flops.py`.
    pub fn flops(&self, inputs: &[&[usize]], output: &[usize]) -> u64 {
        let elems = |s: &[usize]| s.iter().map(|&d| d as u64).product::<u64>();
        match self {
            Op::Conv(c) => {
                let taps: u64 = c.kernel.iter().map(|&k| k as u64).product();
                2 * elems(output) * inputs[0][0] as u64 * taps
            }
            Op::UpConv(c) => {
                let taps: u64 = c.kernel.iter().map(|&k| k as u64).product();
                2 * elems(inputs[0]) * c.out as u64 * taps
            }
            Op::Dense(d) => 2 * elems(inputs[0]) * d.out as u64,
            _ => 0,
        }
    }
}

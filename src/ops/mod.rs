//! The layer kinds of geonet, one module each.
//!
//! Each op module is the only home of what the compiler knows about its layer kind:
//!
//! - its [`LayerDef`]: the name(s) as written, the attribute signature, other frameworks' names
//!   for did-you-mean, a one-line summary, and the builder from checked attributes to an [`Op`];
//! - its [`OpRules`]: the shape rule (with the per-axis size formula as an [`AxisRule`], so the
//!   numbers diagnostics and the language server print come from the same arithmetic), the
//!   receptive-field step, parameter shapes and their initialisation, the FLOP count (checked),
//!   the reference forward and backward (the interpreter's oracle), and what the JIT does with
//!   it ([`Lowering`]).
//!
//! `check`, `check::sizes`, the language server, the interpreter and the editor-grammar test
//! read the table ([`LAYERS`], [`Op::rules`]); nothing outside this module spells an op's name.
//! Adding an op means one module and one line in [`register_ops!`] below.
//!
//! Shapes never include the batch axis: `[C, N]` (1-D signal), `[C, H, W]` (2-D section) or
//! `[F]` (flat feature vector).

pub mod activation;
pub mod attrs;
pub mod batchnorm;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod groupnorm;
pub mod loss;
pub mod merge;
pub mod pool;
pub mod upsample;
pub mod window;

use crate::diag::Diagnostic;
use attrs::Attrs;
use ndarray::ArrayD;
use serde::Serialize;
use std::any::Any;
pub use window::AxisRule;

/// A tensor shape without the batch axis.
pub type Shape = Vec<usize>;

/// Declares [`Op`] (one variant per op type; unit variants for attribute-less ops), its
/// dispatch to [`OpRules`], and the table of every [`LayerDef`]. Each line is one op type and
/// the module that describes it; the module lists its layer names in `LAYERS`.
macro_rules! register_ops {
    (
        $( $variant:ident ( $module:ident :: $ty:ident ) ),* $(,)?
        ; $( $unit:ident = $umodule:ident :: $uty:ident ),* $(,)?
    ) => {
        /// One layer instance's kind and attributes, fully resolved: per-axis attributes have
        /// one entry per spatial axis of the actual input, `pad = same` is already a number.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        pub enum Op {
            $( $variant($module::$ty), )*
            $( $unit, )*
        }

        impl Op {
            /// Everything the compiler knows about this op.
            pub fn rules(&self) -> &dyn OpRules {
                match self {
                    $( Op::$variant(x) => x, )*
                    $( Op::$unit => &$umodule::$uty, )*
                }
            }
        }

        /// Every layer name of every op, in registration order.
        pub static LAYERS: &[&[LayerDef]] = &[ $( $module::$ty::LAYERS, )* $( $umodule::$uty::LAYERS, )* ];
    };
}

register_ops! {
    Conv(conv::Conv),
    UpConv(conv::UpConv),
    Pool(pool::Pool),
    Upsample(upsample::Upsample),
    Dense(dense::Dense),
    Activation(activation::Activation),
    BatchNorm(batchnorm::BatchNorm),
    Dropout(dropout::Dropout),
    GroupNorm(groupnorm::GroupNorm),
    ;
    Flatten = dense::Flatten,
    Concat = merge::Concat,
    Add = merge::Add,
    Sub = merge::Sub,
}

/// Layer names of one op type (`LAYERS` is read by the table above).
pub trait Layers {
    const LAYERS: &'static [LayerDef];
}

/// What a call of a layer takes besides its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    /// One piped value.
    One,
    /// One piped value of rank 2 or 3 (`[C, N]` or `[C, H, W]`); with `ranked`, also spelled
    /// `{name}1d` / `{name}2d` to fix the rank.
    Spatial { ranked: bool },
    /// Values as positional arguments (and the piped one first): merges.
    Values,
}

/// A layer name as the language knows it.
pub struct LayerDef {
    pub name: &'static str,
    pub takes: Takes,
    /// Attributes that may be given positionally, in order.
    pub positional: &'static [&'static str],
    /// Attributes that must be named.
    pub named: &'static [&'static str],
    pub required: &'static [&'static str],
    /// Other frameworks' names (lower-case) → the name to suggest (this one or a ranked form).
    pub aliases: &'static [(&'static str, &'static str)],
    /// One line for hover and completion.
    pub summary: &'static str,
    /// The op from checked attributes, for an input with `spatial` spatial axes.
    pub build: fn(&Attrs, usize) -> Result<Op, Diagnostic>,
}

impl LayerDef {
    /// Every attribute name, positional ones first.
    pub fn attributes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.positional.iter().chain(self.named).copied()
    }
}

/// Every layer definition.
pub fn layers() -> impl Iterator<Item = &'static LayerDef> {
    LAYERS.iter().flat_map(|l| l.iter())
}

/// Looks a written layer name up: `conv2d` → (conv, Some(2)).
pub fn find_layer(name: &str) -> Option<(&'static LayerDef, Option<usize>)> {
    if let Some(def) = layers().find(|d| d.name == name) {
        return Some((def, None));
    }
    for (suffix, rank) in [("1d", 1), ("2d", 2)] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(def) = layers().find(|d| d.name == base && d.takes == Takes::Spatial { ranked: true })
        {
            return Some((def, Some(rank)));
        }
    }
    None
}

/// Every name a layer may be written as (with the ranked forms), for completion and
/// did-you-mean.
pub fn layer_names() -> Vec<String> {
    let mut names: Vec<String> = layers().map(|d| d.name.to_string()).collect();
    for d in layers().filter(|d| d.takes == Takes::Spatial { ranked: true }) {
        names.push(format!("{}1d", d.name));
        names.push(format!("{}2d", d.name));
    }
    names
}

/// Another framework's name for one of our layers, for help lines.
pub fn layer_alias(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    layers().flat_map(|d| d.aliases.iter()).find(|(alias, _)| *alias == lower).map(|(_, ours)| *ours)
}

/// What the JIT backend does with an op. The op decides — it knows which of its attributes the
/// generated kernels support — and the JIT obeys; it never routes an op by its variant alone, so
/// an attribute the kernels ignore cannot be silently miscompiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Lowering {
    /// The correlation and weight-gradient kernel families (conv, upconv, dense).
    Linear,
    /// The per-channel kernel family (statistics over positions, a per-channel affine map, a
    /// mask): batchnorm, groupnorm (per sample), relu, leaky_relu, add, sub.
    Channel,
    /// The point-wise kernel family (element-wise functions with `exp` generated inline, a
    /// reduction over the channels of each position, a mask): sigmoid, tanh, silu, softmax,
    /// dropout.
    Pointwise,
    /// A native NHWC loop of the JIT.
    Native,
    /// The gather kernel family (each destination pixel a weighted sum, maximum or copy of
    /// source pixels from tap tables, channels in vector lanes): maxpool, avgpool, upsample,
    /// concat.
    Spatial,
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

/// How a parameter tensor starts (unless `init` gives it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ParamInit {
    /// He-uniform, U(−b, b) with b = √(6/fan_in), fan_in = the product of all axes but the first.
    HeUniform,
    Zeros,
    Ones,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamSpec {
    pub role: ParamRole,
    pub shape: Shape,
    pub init: ParamInit,
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
    /// The size formula gives less than one output sample on `axis`.
    /// `formula` is the arithmetic written out, e.g. `(5 + 2·0 − 7)/1 + 1 = −1`;
    /// `min_input` is the smallest input size along that axis that would work.
    AxisTooSmall { axis: usize, formula: String, value: i64, min_input: u64 },
    /// Two inputs of a merge disagree in a spatial size (concat) or in their whole shape (add, sub).
    Mismatch { what: &'static str, first: Shape, other: Shape, other_index: usize },
    /// A merge got fewer inputs than it needs.
    Arity { expected: &'static str, found: usize },
    /// The channel count does not fit an attribute (`groupnorm`'s groups must divide it).
    Channels { attr: &'static str, channels: usize, value: usize },
    /// Size arithmetic overflowed (absurdly large sizes).
    Overflow,
}

/// Checked arithmetic helpers: every size computation goes through these so absurd sizes
/// become [`ShapeError::Overflow`] instead of a panic or a wrap-around.
pub(crate) fn checked_product(dims: &[usize]) -> Result<usize, ShapeError> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(ShapeError::Overflow)
}

/// `2·∏dims`: the FLOPs of one multiply-add per element, `None` on u64 overflow.
pub(crate) fn mac_flops(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(2u64, |acc, &d| acc.checked_mul(d))
}

/// The part of a value each output depends on, per spatial axis: (extent, jump) in input
/// samples, or the whole input.
#[derive(Clone, Debug, PartialEq)]
pub enum Reach {
    Axes(Vec<(f64, f64)>),
    Whole,
}

/// What one op's forward step needs. Arrays carry the batch axis.
pub struct Forward<'a> {
    pub xs: &'a [&'a ArrayD<f64>],
    /// The op's parameter tensors, in [`OpRules::params`] order.
    pub params: &'a [&'a ArrayD<f64>],
    /// Output shape with the batch axis.
    pub shape: &'a [usize],
    pub training: bool,
    pub rng: &'a mut dyn rand::RngCore,
}

/// A forward step's result.
pub struct Forwarded {
    pub y: ArrayD<f64>,
    /// Whatever the backward step needs beyond inputs and output.
    pub cache: Cache,
    /// New values of state tensors (batchnorm's running statistics), by parameter position.
    pub state: Vec<(usize, ArrayD<f64>)>,
}

impl Forwarded {
    pub fn plain(y: ArrayD<f64>) -> Forwarded {
        Forwarded { y, cache: Cache::None, state: vec![] }
    }
}

/// What one op's backward step needs.
pub struct Backward<'a> {
    pub xs: &'a [&'a ArrayD<f64>],
    pub params: &'a [&'a ArrayD<f64>],
    pub y: &'a ArrayD<f64>,
    pub cache: &'a Cache,
    pub dy: ArrayD<f64>,
}

/// A backward step's result.
pub struct Backwarded {
    /// One gradient per input.
    pub dxs: Vec<ArrayD<f64>>,
    /// Parameter gradients by parameter position (the others are zero).
    pub grads: Vec<(usize, ArrayD<f64>)>,
}

impl Backwarded {
    pub fn inputs(dxs: Vec<ArrayD<f64>>) -> Backwarded {
        Backwarded { dxs, grads: vec![] }
    }
}

/// What a forward step keeps for its backward step; each op knows its own type.
pub enum Cache {
    None,
    Kept(Box<dyn Any + Send + Sync>),
}

impl Cache {
    pub fn keep<T: Any + Send + Sync>(value: T) -> Cache {
        Cache::Kept(Box::new(value))
    }
    pub fn get<T: Any>(&self) -> Option<&T> {
        match self {
            Cache::Kept(b) => b.downcast_ref(),
            Cache::None => None,
        }
    }
}

/// Everything the compiler knows about one op type beyond its name table. Defaults fit an
/// element-wise op without parameters.
pub trait OpRules: Sync {
    /// The name as written in the language (`conv`, `maxpool`, ...), used in layer names.
    fn kind(&self) -> &'static str;

    /// The shape rule: output shape for the given input shapes.
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        Ok((single(inputs)?.to_vec(), vec![]))
    }

    /// The size rule of spatial axis `axis` for input size `n`, for ops that change sizes.
    fn axis_rule(&self, _axis: usize, _n: usize) -> Option<AxisRule> {
        None
    }

    /// The sliding-window kernel extent, for diagnostics ("a 3×3 kernel on a 2×2 input").
    fn kernel(&self) -> Option<&[usize]> {
        None
    }

    /// Receptive-field step from the inputs' reaches.
    fn reach(&self, inputs: &[Reach]) -> Reach {
        inputs.first().cloned().unwrap_or(Reach::Whole)
    }

    /// Parameter and state tensors for the given input shapes, in checkpoint order.
    fn params(&self, _inputs: &[&[usize]]) -> Vec<ParamSpec> {
        vec![]
    }

    /// Forward FLOPs per sample, counting a multiply-add as 2; `None` when the count overflows
    /// u64. Only the linear layers do multiply-adds; element-wise ops, normalisation, pooling
    /// and merges count 0, as in fvcore and the peers' `flops.py`.
    fn flops(&self, _inputs: &[&[usize]], _output: &[usize]) -> Option<u64> {
        Some(0)
    }

    /// The reference forward step (f64, the oracle).
    fn forward(&self, step: Forward<'_>) -> Forwarded;

    /// The reference backward step.
    fn backward(&self, step: Backward<'_>) -> Backwarded;

    /// What the JIT does with this op.
    fn lowering(&self) -> Lowering {
        Lowering::Reference
    }
}

/// The one input of a single-input op.
pub(crate) fn single<'a>(inputs: &[&'a [usize]]) -> Result<&'a [usize], ShapeError> {
    match inputs {
        [one] => Ok(one),
        _ => Err(ShapeError::Arity { expected: "one input", found: inputs.len() }),
    }
}

impl Op {
    /// The op's name as written in the language (`conv`, `maxpool`, ...), used in layer names.
    pub fn kind(&self) -> &'static str {
        self.rules().kind()
    }

    /// What the JIT does with this op (see [`Lowering`]).
    pub fn lowering(&self) -> Lowering {
        self.rules().lowering()
    }

    /// The shape rule: output shape of this op for the given input shapes.
    pub fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        self.rules().output_shape(inputs)
    }

    /// Parameter and state tensors of this op for the given input shapes, in checkpoint order.
    pub fn params(&self, inputs: &[&[usize]]) -> Vec<ParamSpec> {
        self.rules().params(inputs)
    }

    /// Trainable parameter count, `None` on overflow.
    pub fn trainable_params(&self, inputs: &[&[usize]]) -> Option<usize> {
        self.params(inputs)
            .iter()
            .filter(|p| p.role.trainable())
            .try_fold(0usize, |acc, p| acc.checked_add(checked_product(&p.shape).ok()?))
    }

    /// Forward FLOPs per sample (see [`OpRules::flops`]).
    pub fn flops(&self, inputs: &[&[usize]], output: &[usize]) -> Option<u64> {
        self.rules().flops(inputs, output)
    }
}

/// Weight `[out, in, k...]` and optional bias `[out]`: the parameters of conv, upconv, dense.
pub(crate) fn linear_params(
    out: usize,
    input_channels: usize,
    kernel: &[usize],
    bias: bool,
) -> Vec<ParamSpec> {
    let mut w = vec![out, input_channels];
    w.extend_from_slice(kernel);
    let mut p = vec![ParamSpec { role: ParamRole::Weight, shape: w, init: ParamInit::HeUniform }];
    if bias {
        p.push(ParamSpec { role: ParamRole::Bias, shape: vec![out], init: ParamInit::Zeros });
    }
    p
}

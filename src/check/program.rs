//! The checker's result: a fully expanded, shape-checked program. Blocks and `unet` are
//! inlined, every layer has its stable name, concrete attributes and output shape.
//! This is what `ir` lowers and what `check --format json` prints.

pub use super::noise::{NoiseKind, NoiseSpec};
use crate::ops::{Op, Shape};
use serde::Serialize;

/// A byte range into the source file.
/// A byte range into the source (the one span type, defined with the diagnostics).
pub use crate::diag::Span;

#[derive(Clone, Debug, Serialize)]
pub struct Program {
    pub model: Model,
    /// The `optimizer` item, or the documented default (adam, lr 1e-3) when there is none.
    pub optimizer: OptimizerSpec,
    /// Whether `optimizer` was written in the file.
    pub optimizer_given: bool,
    pub train: Option<TrainSpec>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Model {
    pub name: String,
    pub inputs: Vec<Tensor>,
    /// Layer instances in a valid evaluation order (source order after expansion).
    pub layers: Vec<Layer>,
    /// Every name bound with `=` in the model, in source order.
    pub values: Vec<NamedValue>,
    pub outputs: Vec<NamedValue>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Shape,
}

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ValueRef {
    /// `model.inputs[i]`
    Input(usize),
    /// the output of `model.layers[i]`
    Layer(usize),
}

#[derive(Clone, Debug, Serialize)]
pub struct NamedValue {
    pub name: String,
    pub value: ValueRef,
    pub shape: Shape,
}

#[derive(Clone, Debug, Serialize)]
pub struct Layer {
    /// Stable, unique name, e.g. `e1.conv0`; checkpoint tensors are `{name}.weight` etc.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueRef>,
    pub shape: Shape,
    /// The binding this layer belongs to (`e1`), or `output0`, ... for an output expression.
    pub value: String,
    pub params: usize,
    pub flops: u64,
    /// Fixed starting weights from `init`, already in the full parameter shape `[out, in, k...]`.
    pub init: Option<Init>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Init {
    pub shape: Shape,
    /// Row-major values.
    pub values: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub clip: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum OptimizerKind {
    Sgd { lr: f64, momentum: f64, nesterov: bool },
    Adagrad { lr: f64, eps: f64 },
    RmsProp { lr: f64, rho: f64, eps: f64 },
    Adam { lr: f64, rho1: f64, rho2: f64, eps: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainSpec {
    pub data: DataSpec,
    pub loss: LossKind,
    pub batch: usize,
    pub epochs: usize,
    pub validate: f64,
    pub seed: u64,
    /// As written; relative to the `.geonet` file. Default: `{model name}.safetensors`.
    pub save: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LossKind {
    Mse,
    Mae,
    CrossEntropy,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum DataSpec {
    /// Seismic-like sections (`shape = [C, H, W]`) or traces (`[C, N]`) of Ricker wavelets on
    /// linear and hyperbolic events, sampled at 4 ms; input = clean + noise, target = clean.
    Synthetic { shape: Shape, count: usize, noise: NoiseSpec, seed: u64 },
    /// Patches (2-D models) or traces (1-D models) cut from a SEG-Y/SU file; paths as written.
    Segy { path: String, patch: Option<Vec<usize>>, step: Option<Vec<usize>>, noise: NoiseSpec, seed: u64 },
    /// Arrays with the batch axis first; paths as written. With `noise`, the inputs get that
    /// noise (sample interval `dt_ms`, default 4 ms), and the target defaults to the input file.
    Npy { input: String, target: String, noise: Option<NoiseSpec>, dt_ms: f64, seed: u64 },
}

//! The checker's result: a fully expanded, shape-checked program. Blocks and `unet` are
//! inlined, every layer has its stable name, concrete attributes and output shape.
//! This is what `ir` lowers and what `check --format json` prints.

pub use super::noise::{NoiseKind, NoiseSpec};
use crate::ops::{Op, Shape};
use crate::syntax::ast::{ExprId, SourceMap};
use serde::Serialize;

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
    /// Where the file's expressions are written. Private to `check`, which also makes a
    /// `Program` something only the checker builds.
    #[serde(skip)]
    pub(in crate::check) source_map: SourceMap,
}

impl Program {
    /// Where `layer` is written: its own call (inside the block body for a block's layer).
    pub fn span_of(&self, layer: &Layer) -> Span {
        layer.origin.last().map_or(0..0, |&id| self.source_map.span(id))
    }

    /// The layers that call expression `id` produced: the layer of a layer call, or every
    /// layer of a block call (all instances of a repeated call), in evaluation order.
    pub fn layers_from(&self, id: ExprId) -> impl Iterator<Item = (usize, &Layer)> {
        self.model.layers.iter().enumerate().filter(move |(_, l)| l.origin.contains(&id))
    }
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
    /// The call expressions this layer came from, outermost first (a block call, the calls
    /// inside it, ..., the layer's own call); spans via [`Program::span_of`].
    #[serde(skip)]
    pub origin: Vec<ExprId>,
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
    /// `target = blindspot(...)` / `blindtrace(...)`: self-supervised training on the noisy
    /// inputs alone (clean targets, where the source has them, are used only for scoring).
    /// Left out of the JSON when absent, so supervised runs keep their fingerprints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<SelfSupervised>,
}

/// How self-supervised training masks its inputs (docs/selfsup.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfSupervised {
    /// Noise2Void (Krull et al. 2019; seismic: Birnie et al. 2021): a fraction `ratio` of the
    /// samples is replaced by a random other sample within `radius` along every spatial axis.
    BlindSpot { ratio: f64, radius: usize },
    /// Blind-trace (Liu, Birnie & Alkhalifah 2022): a fraction `ratio` of the traces (the last
    /// axis) is replaced whole by a random other trace within `radius` traces.
    BlindTrace { ratio: f64, radius: usize },
}

/// The part of a recorded file held out for validation (`holdout = inlines(a, b)` or
/// `traces(a, b)`): inclusive, in the file's own numbers (inline numbers from the headers;
/// traces counted from 1, as `inspect` and the validation line print them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holdout {
    Inlines { first: i64, last: i64 },
    Traces { first: i64, last: i64 },
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
    /// `holdout` names the part that validates (docs/seismic.md, "Holding out for validation").
    Segy {
        path: String,
        patch: Option<Vec<usize>>,
        step: Option<Vec<usize>>,
        noise: NoiseSpec,
        seed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holdout: Option<Holdout>,
    },
    /// Arrays with the batch axis first; paths as written. With `noise`, the inputs get that
    /// noise (sample interval `dt_ms`, default 4 ms), and the target defaults to the input file.
    /// `target` is None only for self-supervised training without noise (nothing is scored
    /// against a clean reference).
    Npy {
        input: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        noise: Option<NoiseSpec>,
        dt_ms: f64,
        seed: u64,
    },
}

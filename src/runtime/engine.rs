//! One interface over the two backends, so the training loop, inference and `bench` do not care
//! which one runs: forward (keeping what backward needs), then backward.

use crate::check::program::LossKind;
use crate::interp::{self, Tape};
use crate::ir::{Graph, Params};
use crate::jit::{JitModel, JitOptions, Profile};
use crate::ops::loss::{loss, masked_mse};
use ndarray::ArrayD;

/// Which backend runs the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Jit,
    Interp,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Jit => "jit",
            Backend::Interp => "interp",
        }
    }
}

/// A graph ready to run on one backend at one batch size.
pub enum Engine {
    Interp { graph: Graph, last: Option<(Vec<ArrayD<f64>>, Tape)> },
    Jit(Box<JitModel>),
}

impl Engine {
    /// Compiles (JIT, default options) or just keeps (interpreter) the graph.
    pub fn new(graph: &Graph, backend: Backend) -> Result<Engine, String> {
        Self::with_options(graph, backend, &JitOptions::default())
    }

    /// Compiles (JIT, with `jit`'s options) or just keeps (interpreter) the graph.
    pub fn with_options(graph: &Graph, backend: Backend, jit: &JitOptions) -> Result<Engine, String> {
        Ok(match backend {
            Backend::Interp => {
                interp_fits_in_memory(graph)?;
                Engine::Interp { graph: graph.clone(), last: None }
            }
            Backend::Jit => Engine::Jit(Box::new(JitModel::compile_with(graph, jit)?)),
        })
    }

    /// The JIT's per-node times, when it was compiled with `JitOptions::profile`.
    pub fn profile(&self) -> Option<&Profile> {
        match self {
            Engine::Interp { .. } => None,
            Engine::Jit(j) => j.profile(),
        }
    }

    pub fn graph(&self) -> &Graph {
        match self {
            Engine::Interp { graph, .. } => graph,
            Engine::Jit(j) => j.graph(),
        }
    }

    /// JIT compile time in milliseconds (0 for the interpreter).
    pub fn compile_ms(&self) -> f64 {
        match self {
            Engine::Interp { .. } => 0.0,
            Engine::Jit(j) => j.compile_ms,
        }
    }

    /// Bytes of planned buffers (JIT) or None.
    pub fn memory_bytes(&self) -> Option<usize> {
        match self {
            Engine::Interp { .. } => None,
            Engine::Jit(j) => Some(j.memory_bytes),
        }
    }

    /// The graph's outputs. In training mode batchnorm updates its running statistics in
    /// `params` and dropout draws masks from `seed`.
    pub fn forward(
        &mut self,
        params: &mut Params,
        inputs: &[ArrayD<f64>],
        training: bool,
        seed: u64,
    ) -> Vec<ArrayD<f64>> {
        match self {
            Engine::Interp { graph, last } => {
                let tape = interp::forward(graph, params, inputs, training, seed);
                let outs = interp::outputs(graph, inputs, &tape);
                *last = Some((inputs.to_vec(), tape));
                outs
            }
            Engine::Jit(j) => j.forward(params, inputs, training, seed),
        }
    }

    /// One training step's loss and parameter gradients on a batch (forward in training mode,
    /// the loss of the first output against `target`, backward).
    pub fn train_step(
        &mut self,
        params: &mut Params,
        inputs: &[ArrayD<f64>],
        target: &ArrayD<f64>,
        kind: LossKind,
        seed: u64,
    ) -> (f64, Params) {
        self.train_step_masked(params, inputs, target, None, kind, seed)
    }

    /// [`Engine::train_step`] with the masked mse of self-supervised training when `mask` is
    /// given (1 where the loss is taken; `kind` must then be mse). Both backends compute it on
    /// their own buffers.
    pub fn train_step_masked(
        &mut self,
        params: &mut Params,
        inputs: &[ArrayD<f64>],
        target: &ArrayD<f64>,
        mask: Option<&ArrayD<f64>>,
        kind: LossKind,
        seed: u64,
    ) -> (f64, Params) {
        match self {
            Engine::Interp { .. } => {
                let y = self.forward(params, inputs, true, seed).remove(0);
                let (l, dy) = match mask {
                    Some(m) => masked_mse(&y, target, m),
                    None => loss(kind, &y, target),
                };
                (l, self.backward(params, &[dy]))
            }
            Engine::Jit(j) => {
                j.load_inputs(inputs);
                // Every step loads its own target and mask (or clears the last ones), so a loss
                // is never taken against an earlier batch's.
                j.load_target(target);
                j.load_mask(mask);
                j.forward_loaded(params, true, seed);
                j.loss_backward(params, kind, target)
            }
        }
    }

    /// Hands back a step's parameter gradients once they are used, for the next step to reuse
    /// (the JIT; the interpreter drops them).
    pub fn recycle_grads(&mut self, grads: Params) {
        if let Engine::Jit(j) = self {
            j.recycle_grads(grads);
        }
    }

    /// Parameter gradients of the last forward pass, given the gradients of its outputs.
    pub fn backward(&mut self, params: &Params, d_outputs: &[ArrayD<f64>]) -> Params {
        match self {
            Engine::Interp { graph, last } => {
                let (inputs, tape) = last.as_ref().expect("forward before backward");
                interp::backward(graph, params, inputs, tape, d_outputs)
            }
            Engine::Jit(j) => j.backward(params, d_outputs),
        }
    }
}

/// The interpreter keeps every node's f64 output on its tape and, in backward, a gradient of
/// the same size: refuse a model that cannot fit before anything is allocated (the JIT checks
/// its own buffer plan).
fn interp_fits_in_memory(graph: &Graph) -> Result<(), String> {
    let elements = |shape: &[usize]| shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let values = graph.nodes().iter().map(|n| elements(&n.shape));
    let params = graph.params().iter().map(|p| elements(&p.shape));
    let total = values.chain(params).try_fold(0usize, |acc, n| acc.checked_add(n?));
    let bytes = total.and_then(|n| n.checked_mul(16)).and_then(|b| u64::try_from(b).ok());
    let avail = super::data::available_memory();
    match (bytes, avail) {
        (Some(b), Some(a)) if b <= a => Ok(()),
        (Some(b), None) if b <= 1 << 40 => Ok(()),
        _ => Err(format!(
            "the model needs {} for the interpreter's values and gradients at batch {} ({} MB available); use a smaller batch or input",
            bytes.map_or("more than 2^64 bytes".into(), |b| format!("about {} MB", b >> 20)),
            graph.batch(),
            avail.map_or("?".into(), |a| (a >> 20).to_string())
        )),
    }
}

//! The `jit` backend: an [`ir::Graph`](crate::ir::Graph) at one batch size compiled into
//! Cranelift kernels, specialised on every shape, run on f32 NHWC buffers planned once and
//! reused every step.
//!
//! Each op says what the JIT does with it ([`Lowering`]); the JIT obeys and never routes an op
//! by its variant alone:
//! - `Linear` (conv, upconv, dense; forward, input gradient, weight gradient) is generated code:
//!   two kernel families in [`codegen`], register-blocked on f32x4 with FMA;
//! - `Channel` (batchnorm, groupnorm, relu, leaky_relu, add, sub) is generated code too: the
//!   per-channel family in `channel` (moments over positions, an affine map, a mask), planned by
//!   `norm`, `groupnorm` and `elementwise`;
//! - `Spatial` (maxpool, avgpool, upsample, concat) is generated code: the gather family in
//!   `gather` (tap tables per destination row and column), planned by `spatial`;
//! - `Pointwise` (sigmoid, tanh, silu, softmax, dropout; and the losses) is the point-wise family
//!   in `pointwise` with the generated `exp` of `exp` inline, planned by `unary` and `loss`;
//! - `Native` ops are loops on the NHWC buffers ([`native`]);
//! - `Reference` ops run the interpreter's own per-node step on converted copies — correct, not
//!   fast, and marked as such by the profile.
//!
//! Beyond that, `linear -> relu|leaky_relu` (and `sigmoid|tanh` when a linear layer reads it) is
//! one kernel forward, a batchnorm after a conv/dense is folded into its weights at inference,
//! and a conv, a pixel-shuffle upconv, a pooling or an upsample writes straight into the concat
//! that reads it ([`fusion`]).
//!
//! The modules, in the order a model is compiled and run: [`layout`] (values as NHWC buffers),
//! [`fusion`] (what merges with what), [`lower`] (linear ops onto kernels, one [`Geometry`] per
//! kernel) into [`linear`] plans, [`memory`] (the buffer plan), then [`exec`] (the forward and
//! backward executors — the only code that calls generated functions), [`native`] loops,
//! [`loss`] on the buffers, and [`profile`] / [`describe`] for people.
//!
//! [`Geometry`]: codegen::Geometry

mod channel;
pub mod codegen;
mod describe;
mod elementwise;
pub(crate) mod exec;
mod exp;
mod fusion;
mod gather;
mod gradw_finish;
mod groupnorm;
mod layout;
mod linear;
mod linear_emit;
mod loss;
mod lower;
mod memory;
mod native;
mod norm;
mod pack;
mod pointwise;
mod profile;
mod spatial;
pub(crate) mod unary;
pub mod update;
mod winograd;
mod winograd_choice;
mod winograd_combos;
mod winograd_emit;
mod winograd_gradw;
mod winograd_tile;

pub use codegen::{Blocking, OptLevel};
pub use layout::{Layout, from_nhwc, to_nhwc};
pub use profile::{LOSS, NodeProfile, OPTIMIZER, Profile, StepPartProfile};
pub use winograd_choice::ConvAlgorithm;

use crate::interp::Cache;
use crate::ir::{Graph, NodeId, Params, Value};
use crate::ops::Lowering;
use codegen::Codegen;
use fusion::Fusion;
use linear::LinearPlan;
use ndarray::ArrayD;
use std::sync::Arc;
use std::time::Instant;

/// The tuning knobs of the JIT. Built by the CLI (or a benchmark); the defaults are what we
/// measured fastest on our kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitOptions {
    /// Cranelift's optimisation level.
    pub opt_level: OptLevel,
    /// Register blocking of the correlation kernels and of the weight-gradient kernels.
    pub corr_blocking: Blocking,
    pub gradw_blocking: Blocking,
    /// Direct or Winograd correlation for 3×3 stride-1 2-D layers (forward and input gradient).
    pub conv: ConvAlgorithm,
    /// Time every node's forward and backward step and the generated kernels in them
    /// ([`JitModel::profile`]).
    pub profile: bool,
    /// In training, let a Winograd conv after a batchnorm (and its relu) normalise the
    /// batchnorm's input as it loads it, instead of the batchnorm storing a normalised copy
    /// (`Fusion::norm_on_load`). On by default; off to measure it, and in the tests that show
    /// it gives the same bits.
    pub norm_on_load: bool,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            opt_level: OptLevel::None,
            corr_blocking: codegen::CORR_BLOCKING,
            gradw_blocking: codegen::GRADW_BLOCKING,
            conv: ConvAlgorithm::Auto,
            profile: false,
            norm_on_load: true,
        }
    }
}

/// What one node's step is.
pub(crate) enum Step {
    /// The generated kernels.
    Linear(Box<LinearPlan>),
    /// Folded into the linear node that produces its input; backward, the derivative's mask
    /// kernel, unless the consumer's input-gradient kernel applies it (`Fusion::mask_folded`).
    FusedActivation(Option<Box<elementwise::FusedMask>>),
    /// A native loop.
    Native,
    /// The per-channel kernels of a batchnorm.
    Norm(Box<norm::NormPlan>),
    /// The per-channel kernel of relu, leaky_relu, add or sub.
    Elementwise(Box<elementwise::ElementPlan>),
    /// The gather kernels of a pooling, upsample or concat.
    Spatial(Box<spatial::SpatialPlan>),
    /// The per-channel kernels of a groupnorm, run per sample.
    GroupNorm(Box<groupnorm::GroupNormPlan>),
    /// The point-wise kernels of sigmoid, tanh, silu, softmax or dropout.
    Unary(Box<unary::UnaryPlan>),
    /// The interpreter's per-node step on converted copies.
    Reference,
}

impl Step {
    /// How people see it in the profile and the plan.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Step::Linear(_)
            | Step::Norm(_)
            | Step::Elementwise(_)
            | Step::Spatial(_)
            | Step::Unary(_)
            | Step::GroupNorm(_) => "kernels",
            Step::FusedActivation(_) => "fused",
            Step::Native => "native",
            Step::Reference => "reference",
        }
    }
}

/// Everything the JIT keeps per node.
pub(crate) struct NodeState {
    pub layout: Layout,
    pub step: Step,
    pub fusion: Fusion,
    /// The node's value (empty for a linear node with a fused activation, whose value is the
    /// activation's).
    pub value: Vec<f32>,
    /// The gradient buffer of this node's value ([`memory`]: shared by liveness), and whether
    /// the current backward pass has written it yet.
    pub grad_slot: usize,
    pub grad_written: bool,
    /// Max pooling's argmax per output element.
    pub argmax: Vec<u32>,
    /// What a reference step keeps for its backward step.
    pub cache: Option<Cache>,
}

/// One model compiled at one batch size.
pub struct JitModel {
    /// Shared so that a step can hold a node while mutating the model (no per-step clones).
    /// The graph it runs: the given one with `upsample → 1×1 conv` pairs commuted
    /// ([`Graph::with_upsample_after_pointwise_conv`]); `commuted` lists each pair's first node,
    /// whose value is then the conv's, not the upsample's.
    executed: Arc<Graph>,
    commuted: Vec<NodeId>,
    /// The graph as given (the parameters, shapes and outputs callers see).
    graph: Arc<Graph>,
    input_layouts: Vec<Layout>,
    nodes: Vec<NodeState>,
    inputs: Vec<Vec<f32>>,
    grad_bufs: Vec<Vec<f32>>,
    /// A gradient contribution before it is added to a gradient already written.
    tmp: Vec<f32>,
    target: Vec<f32>,
    /// Self-supervised training: 1 where the loss is taken, 0 elsewhere (empty: everywhere).
    mask: Vec<f32>,
    /// Transient buffers lent to one node's step at a time.
    pool: Vec<Vec<f32>>,
    /// The sizes every buffer was allocated with.
    buffers: memory::BufferPlan,
    /// The generated loss kernels of the first output (mse, mae, masked mse).
    losses: loss::LossKernels,
    _codegen: Codegen,
    pub compile_ms: f64,
    pub memory_bytes: usize,
    profile: Option<Profile>,
    /// Parameter gradients handed back after a step ([`JitModel::recycle_grads`]), zeroed and
    /// reused by the next backward pass instead of fresh arrays.
    spare_grads: Params,
}

impl JitModel {
    /// Compiles every kernel of `graph` with the default options and plans its buffers.
    pub fn compile(graph: &Graph) -> Result<JitModel, String> {
        Self::compile_with(graph, &JitOptions::default())
    }

    pub fn compile_with(graph: &Graph, options: &JitOptions) -> Result<JitModel, String> {
        Self::build(graph, Codegen::new(options.opt_level)?, options)
    }

    /// Bytes of the buffers [`JitModel::compile`] would plan for `graph` (activations, gradients
    /// shared by liveness, scratch, packed weights), without generating code.
    pub fn plan_bytes(graph: &Graph) -> Result<usize, String> {
        Ok(Self::build(graph, Codegen::dry()?, &JitOptions::default())?.memory_bytes)
    }

    /// The plan of `graph` in words, one line per node: its step and kernel family, fusions and
    /// folds, kernel geometries and buffer sizes, then `memory_bytes`. No code is generated.
    pub fn describe_plan(graph: &Graph) -> Result<String, String> {
        Ok(Self::build(graph, Codegen::dry()?, &JitOptions::default())?.describe())
    }

    fn build(source: &Graph, mut cg: Codegen, options: &JitOptions) -> Result<JitModel, String> {
        let started = Instant::now();
        let (rewritten, commuted) = source.with_upsample_after_pointwise_conv();
        let graph = &rewritten;
        let input_layouts: Vec<Layout> = graph.inputs().iter().map(|s| Layout::of(s)).collect();
        let layouts: Vec<Layout> = graph.nodes().iter().map(|n| Layout::of(&n.shape)).collect();
        let layout_of = |v: Value| match v {
            Value::Input(i) => input_layouts[i],
            Value::Node(n) => layouts[n.index()],
        };
        let fusion = fusion::decide(graph, layout_of, options.norm_on_load);
        let mut steps = Vec::with_capacity(layouts.len());
        for (node, f) in graph.nodes().iter().zip(&fusion) {
            let step = match node.op.lowering() {
                _ if f.into_linear.is_some() => Step::FusedActivation(elementwise::fused_mask(
                    &mut cg,
                    node,
                    f,
                    layouts[node.id.index()],
                )?),
                Lowering::Linear => {
                    let io = (layout_of(node.inputs[0]), layouts[node.id.index()]);
                    let into = f.concat_in_place.map(|(cn, _)| layouts[cn.index()]);
                    Step::Linear(Box::new(lower::plan_linear(&mut cg, options, node, io, f, into)?))
                }
                Lowering::Channel => norm::plan(&mut cg, node, layouts[node.id.index()], f.epilogue)?,
                Lowering::Spatial => {
                    spatial::plan(&mut cg, node, &layout_of, layouts[node.id.index()], &fusion)?
                }
                Lowering::Pointwise => unary::plan(&mut cg, node, layouts[node.id.index()])?,
                Lowering::Native => Step::Native,
                Lowering::Reference => Step::Reference,
            };
            steps.push(step);
        }
        let mut losses = loss::LossKernels::new(&mut cg, graph, layout_of)?;
        cg.finish()?;
        let dry = cg.is_dry();
        if !dry {
            losses.link(&cg);
        }
        for s in steps.iter_mut().filter(|_| !dry) {
            match s {
                Step::Linear(p) => {
                    p.fwd.f = p.fwd.handle.map(|h| cg.corr_fn(h));
                    if let Some(folded) = &mut p.fwd_folded {
                        folded.f = folded.handle.map(|h| cg.corr_fn(h));
                    }
                    p.bwd_in.f = p.bwd_in.handle.map(|h| cg.corr_fn(h));
                    p.gradw = p.gradw_handle.map(|h| cg.gradw_fn(h));
                    p.wino_fwd.iter_mut().chain(p.wino_bwd.iter_mut()).for_each(|w| w.link(&cg));
                    p.wino_gradw.iter_mut().for_each(|w| w.link(&cg));
                    p.finish.link(&cg);
                    p.pack_fwd.link(&cg);
                    p.pack_bwd.link(&cg);
                }
                Step::Norm(p) => p.link(&cg),
                Step::Elementwise(p) => p.link(&cg),
                Step::Spatial(p) => p.link(&cg),
                Step::Unary(p) => p.link(&cg),
                Step::GroupNorm(p) => p.link(&cg),
                Step::FusedActivation(Some(m)) => m.call.link(&cg),
                _ => {}
            }
        }
        let linear_plans = steps.iter().filter_map(|s| match s {
            Step::Linear(p) => Some(&**p),
            _ => None,
        });
        let mut plan = memory::plan_buffers(graph, &input_layouts, &layouts, &fusion, linear_plans);
        // The per-channel plans' coefficients and partial sums.
        let channel_floats = |s: &Step| match s {
            Step::Norm(p) => p.len(),
            Step::Elementwise(p) => p.len(),
            Step::Spatial(p) => p.len(),
            Step::Unary(p) => p.len(),
            Step::GroupNorm(p) => p.len(),
            _ => 0,
        };
        plan.bytes += 4 * steps.iter().map(channel_floats).sum::<usize>();
        if !dry {
            if let Some(avail) = memory::available_memory()
                && plan.bytes > avail
            {
                return Err(format!(
                    "the model needs {} MB of buffers at batch {} and the machine has {} MB available; use a smaller batch or input",
                    plan.bytes >> 20,
                    graph.batch(),
                    avail >> 20
                ));
            }
            for s in &mut steps {
                match s {
                    Step::Linear(p) => p.allocate_persistent(),
                    Step::Norm(p) => p.allocate(),
                    Step::Elementwise(p) => p.allocate(),
                    Step::Unary(p) => p.allocate(),
                    Step::GroupNorm(p) => p.allocate(),
                    _ => {}
                }
            }
        }
        let zeros = |len: usize| if dry { vec![] } else { vec![0.0f32; len] };
        let mut nodes = Vec::with_capacity(steps.len());
        for (i, (step, fusion)) in steps.into_iter().zip(fusion).enumerate() {
            nodes.push(NodeState {
                layout: layouts[i],
                step,
                fusion,
                value: zeros(plan.value_len[i]),
                grad_slot: plan.grad_slot[i],
                grad_written: false,
                argmax: if dry { vec![] } else { vec![0; plan.argmax_len[i]] },
                cache: None,
            });
        }
        let graph = Arc::new(rewritten);
        Ok(JitModel {
            commuted,
            graph: Arc::new(source.clone()),
            memory_bytes: plan.bytes,
            profile: options.profile.then(|| Profile::new(&graph, &nodes)),
            spare_grads: Params::new(),
            executed: graph,
            input_layouts,
            nodes,
            inputs: plan.input_len.iter().map(|&l| zeros(l)).collect(),
            grad_bufs: plan.grad_len.iter().map(|&l| zeros(l)).collect(),
            tmp: vec![],
            target: vec![],
            mask: vec![],
            pool: vec![],
            buffers: plan,
            losses,
            _codegen: cg,
            compile_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The graph as given.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Times per node since compiling, when compiled with [`JitOptions::profile`].
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Where value `v`'s data lives (a fused linear node's value is its activation's).
    fn value_index(&self, v: Value) -> Value {
        match v {
            Value::Node(n) => match self.nodes[n.index()].fusion.activation {
                Some(a) => Value::Node(a),
                None => v,
            },
            other => other,
        }
    }

    fn buf(&self, v: Value) -> &[f32] {
        match self.value_index(v) {
            Value::Input(i) => &self.inputs[i],
            Value::Node(n) => &self.nodes[n.index()].value,
        }
    }

    fn layout(&self, v: Value) -> Layout {
        match v {
            Value::Input(i) => self.input_layouts[i],
            Value::Node(n) => self.nodes[n.index()].layout,
        }
    }

    fn value_f64(&self, v: Value) -> ArrayD<f64> {
        if let Some(y) = self.normalised_by_consumer(v) {
            return from_nhwc(&y, self.layout(v), self.executed.shape(v));
        }
        if let Value::Node(n) = v
            && let Some((cn, off)) = self.nodes[n.index()].fusion.concat_in_place
        {
            // Written into its slice of the concat's buffer (it has none of its own).
            let slice = Layout { cs: self.nodes[cn.index()].layout.cs, ..self.layout(v) };
            return from_nhwc(&self.nodes[cn.index()].value[off..], slice, self.executed.shape(v));
        }
        from_nhwc(self.buf(v), self.layout(v), self.executed.shape(v))
    }

    /// The gradient buffer of node `n`'s value.
    fn grad_buf(&mut self, n: NodeId) -> &mut Vec<f32> {
        &mut self.grad_bufs[self.nodes[n.index()].grad_slot]
    }

    /// Runs the graph; returns its outputs. Keeps what the backward pass needs.
    pub fn forward(
        &mut self,
        params: &mut Params,
        inputs: &[ArrayD<f64>],
        training: bool,
        seed: u64,
    ) -> Vec<ArrayD<f64>> {
        self.load_inputs(inputs);
        self.forward_loaded(params, training, seed);
        (0..self.executed.outputs().len()).map(|k| self.output(k)).collect()
    }

    /// Converts a batch into the input buffers.
    pub fn load_inputs(&mut self, inputs: &[ArrayD<f64>]) {
        for (i, x) in inputs.iter().enumerate() {
            to_nhwc(x, self.input_layouts[i], &mut self.inputs[i]);
        }
    }

    /// Converts a target for the first output (same shape) into the target buffer.
    pub fn load_target(&mut self, target: &ArrayD<f64>) {
        let out = self.output_shape(0);
        if let ([b, k], [tb]) = (out, target.shape())
            && b == tb
        {
            // Class indices for logits [B, K]: one-hot, the index clamped as `ops::loss` does.
            let (k, l) = (*k, self.layout(self.executed.outputs()[0]));
            self.target.clear();
            self.target.resize(l.len(), 0.0);
            for (n, &c) in target.iter().enumerate() {
                self.target[n * l.cs + (c.max(0.0) as usize).min(k - 1)] = 1.0;
            }
            return;
        }
        if target.shape() != out {
            // Not a target for this output: `loss_backward` takes the converted path.
            self.target.clear();
            return;
        }
        let l = self.layout(self.executed.outputs()[0]);
        to_nhwc(target, l, &mut self.target);
    }

    /// Shape of output `k`, with the batch axis.
    pub fn output_shape(&self, k: usize) -> &[usize] {
        self.executed.shape(self.executed.outputs()[k])
    }

    /// Value `v` of the last forward pass (for differential tests and debugging). A linear
    /// node or batchnorm with a fused activation has no value of its own: this is the
    /// activation's ([`JitModel::has_own_value`]).
    pub fn value(&self, v: Value) -> ArrayD<f64> {
        self.value_f64(v)
    }

    /// Whether [`JitModel::value`] of `v` is `v`'s own value: false for a linear node or a
    /// batchnorm whose fused activation's kernel stores only the activation's output, and for
    /// an upsample commuted with the 1×1 conv after it (its node holds the conv's value).
    pub fn has_own_value(&self, v: Value) -> bool {
        match v {
            Value::Node(n) => {
                self.nodes[n.index()].fusion.activation.is_none() && !self.commuted.contains(&n)
            }
            Value::Input(_) => true,
        }
    }

    /// Output `k` of the last forward pass.
    pub fn output(&self, k: usize) -> ArrayD<f64> {
        self.value_f64(self.executed.outputs()[k])
    }

    /// Hands back the parameter gradients of a step once they are used: the next backward pass
    /// zeroes and fills these arrays instead of allocating (and faulting in) new ones.
    pub fn recycle_grads(&mut self, grads: Params) {
        self.spare_grads = grads;
    }

    /// Gradients of every parameter, given the gradients of the graph's outputs (after
    /// [`JitModel::forward`] in training mode).
    pub fn backward(&mut self, params: &Params, d_outputs: &[ArrayD<f64>]) -> Params {
        self.nodes.iter_mut().for_each(|n| n.grad_written = false);
        let graph = Arc::clone(&self.executed);
        for (&v, d) in graph.outputs().iter().zip(d_outputs) {
            let mut g = vec![0.0; self.layout(v).len()];
            to_nhwc(d, self.layout(v), &mut g);
            self.accumulate(v, &g);
        }
        self.backward_seeded(params)
    }
}

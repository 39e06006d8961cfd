//! Fusion decisions: which nodes the JIT merges into a neighbour's work, decided once per graph
//! from its structure, one [`Fusion`] per node. The lowering, the memory plan and the executors
//! read these decisions; none of them re-derives them.

use super::codegen::Epilogue;
use super::layout::Layout;
use crate::ir::{Graph, NodeId, Value};
use crate::ops::activation::Activation;
use crate::ops::{Lowering, Op};

/// What was fused into or out of one node. All `None`/`false` means the node runs on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Fusion {
    /// A linear node or a batchnorm: the activation that follows it, applied by its forward
    /// kernel as it stores (the correlation's, or the normalisation's). Its value and its
    /// gradient buffer are that activation's.
    pub activation: Option<NodeId>,
    /// An activation computed by the kernel of the node that produces its input (a linear node
    /// or a batchnorm).
    pub into_linear: Option<NodeId>,
    /// A linear node's or batchnorm's forward kernel epilogue (its fused activation).
    pub epilogue: Epilogue,
    /// A linear node's input-gradient kernel epilogue: the derivative of the fused activation
    /// before it, applied as the gradient is stored.
    pub bwd_epilogue: Epilogue,
    /// A fused activation whose derivative its consumer's input-gradient kernel applies (so its
    /// own backward step does nothing).
    pub mask_folded: bool,
    /// A pixel-shuffle upconv, a conv, a pooling or an upsample writing straight into the concat that
    /// consumes it (it has no buffer of its own):
    /// (the concat, the first channel it writes).
    pub concat_in_place: Option<(NodeId, usize)>,
    /// A conv/dense: the inference-mode batchnorm after it, folded into its packed weights.
    pub bn_fold: Option<NodeId>,
    /// A conv/dense with a batchnorm folded into it: the epilogue of the activation fused after
    /// that batchnorm, which its inference kernel then applies too (`None` without one).
    pub folded_epilogue: Epilogue,
    /// A batchnorm folded into the layer before it at inference.
    pub bn_folded_from: Option<NodeId>,
    /// A conv: the batchnorm after it (its only consumer), whose training statistics its
    /// Winograd output transform gathers as it stores (`norm::FusedStats`; a direct conv
    /// leaves them to the batchnorm's moments kernel).
    pub stats_into: Option<NodeId>,
    /// A batchnorm: the conv that may gather its training statistics.
    pub stats_from: Option<NodeId>,
    /// A conv reading a batchnorm's value (or the activation fused into it) alone: the
    /// batchnorm, whose backward sums (`Σ dy`, `Σ dy·(x − mean)`) its Winograd input-gradient
    /// output transform gathers as it stores that `dy`.
    pub grad_stats_into: Option<NodeId>,
    /// A batchnorm: the conv that may gather its backward sums.
    pub grad_stats_from: Option<NodeId>,
    /// A conv reading a batchnorm's value (or the activation fused into it) alone, with the
    /// batchnorm's input laid out as its own input: the batchnorm, whose normalisation and
    /// activation its Winograd input transforms may apply as they load the batchnorm's input in
    /// training (when all three directions run Winograd: `LinearPlan::norm_load`), so that the
    /// batchnorm stores no normalised copy.
    pub norm_on_load: Option<NodeId>,
    /// A batchnorm: the conv that may normalise its input as it loads it.
    pub norm_on_load_by: Option<NodeId>,
}

impl Default for Fusion {
    fn default() -> Fusion {
        Fusion {
            activation: None,
            into_linear: None,
            epilogue: Epilogue::None,
            bwd_epilogue: Epilogue::None,
            mask_folded: false,
            concat_in_place: None,
            bn_fold: None,
            folded_epilogue: Epilogue::None,
            bn_folded_from: None,
            stats_into: None,
            stats_from: None,
            grad_stats_into: None,
            grad_stats_from: None,
            norm_on_load: None,
            norm_on_load_by: None,
        }
    }
}

/// The activations a correlation kernel can apply as it stores. The derivative is then taken
/// from the activation's output (`y > 0`), which has the sign of its input only for slope ≥ 0;
/// a negative slope runs standalone, its mask from the input.
fn fusable(a: &Activation) -> Option<Epilogue> {
    match *a {
        Activation::Relu => Some(Epilogue::Relu),
        Activation::LeakyRelu { slope } if slope >= 0.0 => Some(Epilogue::LeakyRelu(slope as f32)),
        // Derivatives from the output: y(1 − y) and 1 − y².
        Activation::Sigmoid => Some(Epilogue::Sigmoid),
        Activation::Tanh => Some(Epilogue::Tanh),
        _ => None,
    }
}

/// Whether an upconv writes disjoint `kernel`-sized blocks (kernel = stride, no padding), so it
/// runs as a 1×1 correlation plus a depth-to-space copy.
pub(crate) fn is_pixel(c: &crate::ops::conv::UpConv) -> bool {
    use super::layout::window2;
    window2(&c.kernel, 1) == window2(&c.stride, 1) && window2(&c.pad, 0) == [0, 0]
}

/// Decides every fusion of `graph`; `layout_of` gives each value's layout; `norm_on_load`
/// allows [`Fusion::norm_on_load`] (an option, for measuring and testing it).
pub(crate) fn decide(graph: &Graph, layout_of: impl Fn(Value) -> Layout, norm_on_load: bool) -> Vec<Fusion> {
    let nn = graph.nodes().len();
    let linear = |n: NodeId| graph.node(n).op.lowering() == Lowering::Linear;
    // Consumers of each node's value: only a value read once can be fused away.
    let consumers = graph.readers();
    // Values whose only reader is a linear layer's input: that layer's input-gradient kernel
    // can apply their derivative.
    let mut read_by_linear_only = vec![false; nn];
    for node in graph.nodes().iter().filter(|n| linear(n.id)) {
        if let Value::Node(a) = node.inputs[0] {
            read_by_linear_only[a.index()] = consumers[a.index()] == 1;
        }
    }
    let mut fusion = vec![Fusion::default(); nn];
    // linear → relu|leaky_relu|sigmoid|tanh: one kernel forward. sigmoid and tanh only when the
    // next layer's input-gradient kernel applies their derivative (else the point-wise kernels).
    for node in graph.nodes() {
        let derivative_folds = read_by_linear_only[node.id.index()];
        let smooth = matches!(node.op, Op::Activation(Activation::Sigmoid | Activation::Tanh));
        if let (Op::Activation(a), [Value::Node(p)]) = (&node.op, node.inputs.as_slice())
            && let (true, 1, Some(e)) = (linear(*p), consumers[p.index()], fusable(a))
            && (derivative_folds || !smooth)
        {
            fusion[p.index()].activation = Some(node.id);
            fusion[p.index()].epilogue = e;
            fusion[node.id.index()].into_linear = Some(*p);
        }
    }
    // batchnorm → relu|leaky_relu (slope ≥ 0): the normalisation kernel applies it as it stores
    // (one pass over the values instead of two), and its derivative is taken from its output
    // as after a linear node. At inference this replaces folding the batchnorm into the conv
    // before it: the same passes (conv, then normalise + relu instead of conv + bn, then relu).
    for node in graph.nodes() {
        let norm = |p: NodeId| matches!(graph.node(p).op, Op::BatchNorm(_));
        if let (Op::Activation(a), [Value::Node(p)]) = (&node.op, node.inputs.as_slice())
            && let (true, 1, Some(e @ (Epilogue::Relu | Epilogue::LeakyRelu(_)))) =
                (norm(*p), consumers[p.index()], fusable(a))
        {
            fusion[p.index()].activation = Some(node.id);
            fusion[p.index()].epilogue = e;
            fusion[node.id.index()].into_linear = Some(*p);
        }
    }
    // A pixel-shuffle upconv or a conv whose only consumer is a concat writes its output
    // straight into the concat's buffer (when its channel count fills whole 4-lane vectors); so
    // does a pooling or an upsample (its gather kernel writes any channel count into a slice).
    for node in graph.nodes().iter().filter(|n| matches!(n.op, Op::Concat)) {
        let mut off = 0;
        for &v in &node.inputs {
            let l = layout_of(v);
            if let Value::Node(u) = v {
                let f = &fusion[u.index()];
                let pixel = linear(u) && matches!(&graph.node(u).op, Op::UpConv(uc) if is_pixel(uc));
                let spatial = matches!(&graph.node(u).op, Op::Pool(_) | Op::Upsample(_))
                    && graph.node(u).op.lowering() == Lowering::Spatial;
                // A conv's kernel stores whole 4-lane vectors too; not with an activation after it
                // (that activation is the concat's input then).
                let direct = linear(u) && matches!(&graph.node(u).op, Op::Conv(_));
                let fits = ((pixel || direct) && l.c.is_multiple_of(4)) || spatial;
                if fits && consumers[u.index()] == 1 && f.activation.is_none() {
                    fusion[u.index()].concat_in_place = Some((node.id, off));
                }
            }
            off += l.c;
        }
    }
    // conv/dense → batchnorm: at inference the normalisation is folded into the layer's packed
    // weights and bias, and the layer writes the batchnorm's value directly — or, with an
    // activation fused after the batchnorm, that activation's value, applying it as it stores
    // (conv + batchnorm + relu in one kernel: no pass of the batchnorm's own).
    for node in graph.nodes() {
        if let (Op::BatchNorm(_), [Value::Node(p)]) = (&node.op, node.inputs.as_slice()) {
            let foldable = linear(*p) && matches!(graph.node(*p).op, Op::Conv(_) | Op::Dense(_));
            if foldable && consumers[p.index()] == 1 && fusion[p.index()].activation.is_none() {
                fusion[p.index()].bn_fold = Some(node.id);
                fusion[p.index()].folded_epilogue = fusion[node.id.index()].epilogue;
                fusion[node.id.index()].bn_folded_from = Some(*p);
            }
        }
    }
    // conv → batchnorm (its only consumer): in training the conv sums the batchnorm's
    // statistics as it stores its output, so the batchnorm does not read it for them.
    for node in graph.nodes() {
        if let (Op::BatchNorm(_), [Value::Node(p)]) = (&node.op, node.inputs.as_slice())
            && linear(*p)
            && matches!(graph.node(*p).op, Op::Conv(_))
            && consumers[p.index()] == 1
            && fusion[p.index()].activation.is_none()
            && fusion[p.index()].concat_in_place.is_none()
        {
            fusion[p.index()].stats_into = Some(node.id);
            fusion[node.id.index()].stats_from = Some(*p);
        }
    }
    // batchnorm (→ its fused activation) → conv, read by the conv alone: the conv's input
    // gradient is the batchnorm's whole output gradient (the activation's derivative applied
    // by the conv's kernel), so that kernel can sum it for the batchnorm's backward pass.
    for node in graph.nodes().iter().filter(|n| linear(n.id) && matches!(n.op, Op::Conv(_))) {
        let Value::Node(v) = node.inputs[0] else { continue };
        let bn = fusion[v.index()].into_linear.unwrap_or(v);
        if matches!(graph.node(bn).op, Op::BatchNorm(_))
            && consumers[v.index()] == 1
            && consumers[bn.index()] == 1
        {
            fusion[node.id.index()].grad_stats_into = Some(bn);
            fusion[bn.index()].grad_stats_from = Some(node.id);
            // The same reader may normalise the batchnorm's input as it loads it, reading it
            // where the batchnorm's value would be (same layout).
            let bn_input = graph.node(bn).inputs[0];
            if norm_on_load && layout_of(bn_input) == layout_of(node.inputs[0]) {
                fusion[node.id.index()].norm_on_load = Some(bn);
                fusion[bn.index()].norm_on_load_by = Some(node.id);
            }
        }
    }
    // A fused activation whose only consumer is a linear layer: that layer's input-gradient
    // kernel applies the activation's derivative as it stores (no separate pass).
    for node in graph.nodes().iter().filter(|n| linear(n.id)) {
        let Value::Node(a) = node.inputs[0] else { continue };
        let (Some(p), 1) = (fusion[a.index()].into_linear, consumers[a.index()]) else { continue };
        fusion[node.id.index()].bwd_epilogue = match fusion[p.index()].epilogue {
            Epilogue::LeakyRelu(s) => Epilogue::LeakyMask(s),
            Epilogue::Sigmoid => Epilogue::SigmoidMask,
            Epilogue::Tanh => Epilogue::TanhMask,
            _ => Epilogue::ReluMask,
        };
        fusion[a.index()].mask_folded = true;
    }
    fusion
}

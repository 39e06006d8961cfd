//! The reference backend: runs an [`ir::Graph`] on ndarray in f64, forward and backward, with
//! the math of each op from `ops`. It is the oracle every other backend is tested against, so it
//! is plain: one array per value, one pass per op, nothing fused.

use crate::ir::{Graph, Node, Params, Value};
use crate::ops::{Backward, Forward};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a forward step keeps for its backward step (each op knows its own contents).
pub use crate::ops::Cache;

/// Values of one forward pass, kept for the backward pass.
pub struct Tape {
    pub values: Vec<ArrayD<f64>>,
    caches: Vec<Cache>,
}

fn value<'a>(inputs: &'a [ArrayD<f64>], values: &'a [ArrayD<f64>], v: Value) -> &'a ArrayD<f64> {
    match v {
        Value::Input(i) => &inputs[i],
        Value::Node(n) => &values[n.index()],
    }
}

/// Runs the graph. In training mode batchnorm uses batch statistics and updates its running
/// estimates in `params`, and dropout draws its masks from `seed`.
pub fn forward(
    graph: &Graph,
    params: &mut Params,
    inputs: &[ArrayD<f64>],
    training: bool,
    seed: u64,
) -> Tape {
    let mut values: Vec<ArrayD<f64>> = Vec::with_capacity(graph.nodes().len());
    let mut caches = Vec::with_capacity(graph.nodes().len());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for node in graph.nodes() {
        let xs: Vec<&ArrayD<f64>> = node.inputs.iter().map(|&v| value(inputs, &values, v)).collect();
        let (y, cache) = forward_node(node, params, &xs, training, &mut rng);
        values.push(y);
        caches.push(cache);
    }
    Tape { values, caches }
}

/// One node's forward step (also the JIT backend's path for ops it does not generate code for):
/// the op's reference code, with the running statistics it updates written back to `params`.
pub fn forward_node(
    node: &Node,
    params: &mut Params,
    xs: &[&ArrayD<f64>],
    training: bool,
    rng: &mut ChaCha8Rng,
) -> (ArrayD<f64>, Cache) {
    let out = {
        let own: Vec<&ArrayD<f64>> = node.params.iter().map(|&i| &params[i]).collect();
        node.op.rules().forward(Forward { xs, params: &own, shape: &node.shape, training, rng })
    };
    for (k, v) in out.state {
        params[node.params[k]] = v;
    }
    (out.y, out.cache)
}

/// The graph's outputs from a tape.
pub fn outputs(graph: &Graph, inputs: &[ArrayD<f64>], tape: &Tape) -> Vec<ArrayD<f64>> {
    graph.outputs().iter().map(|&v| value(inputs, &tape.values, v).clone()).collect()
}

/// Gradients of a scalar with respect to every parameter (zeros for state tensors), given the
/// gradients with respect to the graph's outputs.
pub fn backward(
    graph: &Graph,
    params: &Params,
    inputs: &[ArrayD<f64>],
    tape: &Tape,
    d_outputs: &[ArrayD<f64>],
) -> Params {
    let mut grads: Vec<Option<ArrayD<f64>>> = vec![None; graph.nodes().len()];
    let add = |grads: &mut Vec<Option<ArrayD<f64>>>, v: Value, g: ArrayD<f64>| {
        if let Value::Node(n) = v {
            match &mut grads[n.index()] {
                Some(acc) => *acc += &g,
                slot => *slot = Some(g),
            }
        }
    };
    for (&v, d) in graph.outputs().iter().zip(d_outputs) {
        add(&mut grads, v, d.clone());
    }
    let mut pgrads: Params = graph.params().iter().map(|p| ArrayD::zeros(IxDyn(&p.shape))).collect();
    for (i, node) in graph.nodes().iter().enumerate().rev() {
        let Some(dy) = grads[i].take() else { continue };
        let xs: Vec<&ArrayD<f64>> = node.inputs.iter().map(|&v| value(inputs, &tape.values, v)).collect();
        let dxs = backward_node(node, params, &xs, &tape.values[i], &tape.caches[i], dy, &mut pgrads);
        for (&v, dx) in node.inputs.iter().zip(dxs) {
            add(&mut grads, v, dx);
        }
    }
    pgrads
}

/// One node's backward step: writes its parameter gradients into `pgrads`, returns the
/// gradients of its inputs.
pub fn backward_node(
    node: &Node,
    params: &Params,
    xs: &[&ArrayD<f64>],
    y: &ArrayD<f64>,
    cache: &Cache,
    dy: ArrayD<f64>,
    pgrads: &mut Params,
) -> Vec<ArrayD<f64>> {
    let own: Vec<&ArrayD<f64>> = node.params.iter().map(|&i| &params[i]).collect();
    let out = node.op.rules().backward(Backward { xs, params: &own, y, cache, dy });
    for (k, g) in out.grads {
        pgrads[node.params[k]] = g;
    }
    out.dxs
}

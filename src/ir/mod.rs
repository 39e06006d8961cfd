//! The typed graph a backend runs: the checked program's layers at a concrete batch size, with
//! their parameter tensors (named `{layer}.{suffix}`, the checkpoint names) listed once.

use crate::check::program::{Init, Program, ValueRef};
use crate::ops::{Op, ParamInit, ParamRole};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct Graph {
    pub batch: usize,
    /// Input shapes with the batch axis.
    pub inputs: Vec<Vec<usize>>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<ValueRef>,
    pub params: Vec<ParamInfo>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueRef>,
    /// Output shape with the batch axis.
    pub shape: Vec<usize>,
    /// Indices into [`Graph::params`], in the order of `Op::params`.
    pub params: Vec<usize>,
    pub init: Option<Init>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub role: ParamRole,
    pub shape: Vec<usize>,
    pub node: usize,
    /// How it starts when no `init` gives it (the op decides).
    pub init: ParamInit,
}

impl ParamInfo {
    pub fn trainable(&self) -> bool {
        self.role.trainable()
    }
}

/// Lowers a checked program for batches of `batch` samples.
pub fn lower(program: &Program, batch: usize) -> Graph {
    let m = &program.model;
    let with_batch = |s: &[usize]| std::iter::once(batch).chain(s.iter().copied()).collect::<Vec<_>>();
    let shape_of = |v: &ValueRef| -> Vec<usize> {
        match *v {
            ValueRef::Input(i) => m.inputs[i].shape.clone(),
            ValueRef::Layer(i) => m.layers[i].shape.clone(),
        }
    };
    let mut params = vec![];
    let mut nodes = vec![];
    for (i, l) in m.layers.iter().enumerate() {
        let in_shapes: Vec<Vec<usize>> = l.inputs.iter().map(shape_of).collect();
        let refs: Vec<&[usize]> = in_shapes.iter().map(Vec::as_slice).collect();
        let mut ids = vec![];
        for spec in l.op.params(&refs) {
            ids.push(params.len());
            params.push(ParamInfo {
                name: format!("{}.{}", l.name, spec.role.suffix()),
                role: spec.role,
                shape: spec.shape,
                node: i,
                init: spec.init,
            });
        }
        nodes.push(Node {
            name: l.name.clone(),
            op: l.op.clone(),
            inputs: l.inputs.clone(),
            shape: with_batch(&l.shape),
            params: ids,
            init: l.init.clone(),
        });
    }
    Graph {
        batch,
        inputs: m.inputs.iter().map(|t| with_batch(&t.shape)).collect(),
        nodes,
        outputs: m.outputs.iter().map(|o| o.value).collect(),
        params,
    }
}

/// Parameter values, in [`Graph::params`] order.
pub type Params = Vec<ArrayD<f64>>;

/// Starting values: `init` where given; otherwise He-uniform weights, U(−b, b) with
/// b = √(6/fan_in), fan_in = in·∏kernel, drawn from a ChaCha8 stream seeded with `seed` in
/// parameter order; otherwise what the op asks for (zero biases; batchnorm scale 1, shift 0,
/// running mean 0, running var 1).
pub fn init_params(graph: &Graph, seed: u64) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    graph
        .params
        .iter()
        .map(|p| {
            let node = &graph.nodes[p.node];
            let n: usize = p.shape.iter().product();
            let values: Vec<f64> = match (&node.init, p.role, p.init) {
                (Some(init), ParamRole::Weight, _) => init.values.clone(),
                (_, _, ParamInit::HeUniform) => {
                    let fan_in: usize = p.shape[1..].iter().product();
                    let bound = (6.0 / fan_in.max(1) as f64).sqrt();
                    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
                }
                (_, _, ParamInit::Zeros) => vec![0.0; n],
                (_, _, ParamInit::Ones) => vec![1.0; n],
            };
            ArrayD::from_shape_vec(IxDyn(&p.shape), values).expect("init has the parameter's shape")
        })
        .collect()
}

/// Whether every weight has an `init`, so the model runs without a weights file.
pub fn fully_initialised(graph: &Graph) -> bool {
    graph.params.iter().all(|p| {
        let node = &graph.nodes[p.node];
        p.init != ParamInit::HeUniform || node.init.is_some()
    })
}

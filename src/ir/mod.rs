//! The typed graph a backend runs: the checked program's layers at a concrete batch size, with
//! their parameter tensors (named `{layer}.{suffix}`, the checkpoint names) listed once.

mod commute;

use crate::check::program::{Init, Program, ValueRef};
use crate::ops::{Op, ParamInit, ParamRole};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// A node of one [`Graph`]: its position in [`Graph::nodes`] (topological order). Only `ir`
/// makes them, so an id always names a node of the graph it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(usize);

/// A parameter or state tensor of one [`Graph`]: its position in [`Graph::params`] and in
/// [`Params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(usize);

impl NodeId {
    pub fn index(self) -> usize {
        self.0
    }
}

impl ParamId {
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A value a node reads or the graph returns: a graph input or a node's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// `Graph::inputs()[i]`
    Input(usize),
    Node(NodeId),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Input(i) => write!(f, "in{i}"),
            Value::Node(n) => n.fmt(f),
        }
    }
}

/// The checked program at one batch size. Built only by [`lower`]; read through accessors.
#[derive(Clone, Debug)]
pub struct Graph {
    batch: usize,
    /// Input shapes with the batch axis.
    inputs: Vec<Vec<usize>>,
    nodes: Vec<Node>,
    outputs: Vec<Value>,
    params: Vec<ParamInfo>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Value>,
    /// Output shape with the batch axis.
    pub shape: Vec<usize>,
    /// This node's tensors in [`Graph::params`], in the order of `Op::params`.
    pub params: Vec<ParamId>,
    pub init: Option<Init>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub role: ParamRole,
    pub shape: Vec<usize>,
    pub node: NodeId,
    /// How it starts when no `init` gives it (the op decides).
    pub init: ParamInit,
}

impl ParamInfo {
    pub fn trainable(&self) -> bool {
        self.role.trainable()
    }
}

impl Graph {
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Input shapes, with the batch axis.
    pub fn inputs(&self) -> &[Vec<usize>] {
        &self.inputs
    }

    /// Every node, in topological order (a node's inputs come before it).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The ids of [`Graph::nodes`], in order.
    pub fn node_ids(&self) -> impl DoubleEndedIterator<Item = NodeId> + ExactSizeIterator + use<> {
        (0..self.nodes.len()).map(NodeId)
    }

    pub fn outputs(&self) -> &[Value] {
        &self.outputs
    }

    /// Every parameter and state tensor, in checkpoint order.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    pub fn param(&self, id: ParamId) -> &ParamInfo {
        &self.params[id.0]
    }

    /// How many times each node's value is read: as a node's input (once per input slot) or
    /// as a graph output.
    pub fn readers(&self) -> Vec<usize> {
        let mut readers = vec![0usize; self.nodes.len()];
        for v in self.nodes.iter().flat_map(|n| n.inputs.iter()).chain(&self.outputs) {
            if let Value::Node(n) = v {
                readers[n.index()] += 1;
            }
        }
        readers
    }

    /// The shape of a value, with the batch axis.
    pub fn shape(&self, v: Value) -> &[usize] {
        match v {
            Value::Input(i) => &self.inputs[i],
            Value::Node(n) => &self.nodes[n.0].shape,
        }
    }
}

/// One line per input, node (with its parameters) and output: what the IR snapshot tests read.
impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
        writeln!(f, "batch {}", self.batch)?;
        for (i, s) in self.inputs.iter().enumerate() {
            writeln!(f, "in{i}: {}", shape(s))?;
        }
        for n in &self.nodes {
            let ins: Vec<String> = n.inputs.iter().map(Value::to_string).collect();
            writeln!(f, "{} {} = {:?}({}) -> {}", n.id, n.name, n.op, ins.join(", "), shape(&n.shape))?;
            for &p in &n.params {
                let info = &self.params[p.0];
                let init = if n.init.is_some() && info.role == ParamRole::Weight { " (init)" } else { "" };
                writeln!(f, "    {p} {} {:?} {}{init}", info.name, info.role, shape(&info.shape))?;
            }
        }
        let outs: Vec<String> = self.outputs.iter().map(Value::to_string).collect();
        writeln!(f, "outputs: {}", outs.join(", "))
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
    // The checked program's layers become the nodes one for one, in the same order.
    let value = |v: &ValueRef| match *v {
        ValueRef::Input(i) => Value::Input(i),
        ValueRef::Layer(i) => Value::Node(NodeId(i)),
    };
    let mut params = vec![];
    let mut nodes = vec![];
    for (i, l) in m.layers.iter().enumerate() {
        let in_shapes: Vec<Vec<usize>> = l.inputs.iter().map(shape_of).collect();
        let refs: Vec<&[usize]> = in_shapes.iter().map(Vec::as_slice).collect();
        let mut ids = vec![];
        for spec in l.op.params(&refs) {
            ids.push(ParamId(params.len()));
            params.push(ParamInfo {
                name: format!("{}.{}", l.name, spec.role.suffix()),
                role: spec.role,
                shape: spec.shape,
                node: NodeId(i),
                init: spec.init,
            });
        }
        nodes.push(Node {
            id: NodeId(i),
            name: l.name.clone(),
            op: l.op.clone(),
            inputs: l.inputs.iter().map(value).collect(),
            shape: with_batch(&l.shape),
            params: ids,
            init: l.init.clone(),
        });
    }
    Graph {
        batch,
        inputs: m.inputs.iter().map(|t| with_batch(&t.shape)).collect(),
        nodes,
        outputs: m.outputs.iter().map(|o| value(&o.value)).collect(),
        params,
    }
}

/// Parameter values, in [`Graph::params`] order.
pub type Params = Vec<ArrayD<f64>>;

/// `params[id]`: a parameter's value by its id.
impl std::ops::Index<ParamId> for Params {
    type Output = ArrayD<f64>;
    fn index(&self, id: ParamId) -> &ArrayD<f64> {
        &self[id.0]
    }
}

impl std::ops::IndexMut<ParamId> for Params {
    fn index_mut(&mut self, id: ParamId) -> &mut ArrayD<f64> {
        &mut self[id.0]
    }
}

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
            let node = graph.node(p.node);
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
        let node = graph.node(p.node);
        p.init != ParamInit::HeUniform || node.init.is_some()
    })
}

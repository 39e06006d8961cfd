//! The memory plan: how many floats every buffer of a compiled model has, which gradients
//! share a buffer, and whether it all fits. Sized before anything is allocated, so a dry plan
//! (`check`'s `memory_bytes`) allocates nothing and an oversized model gets an error instead of
//! an allocation abort.

use super::fusion::Fusion;
use super::layout::Layout;
use super::linear::LinearPlan;
use crate::ir::{Graph, Value};
use crate::ops::Op;
use crate::ops::pool::PoolKind;

/// Floats of every buffer, by role.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BufferPlan {
    /// Per node: its value (0 for a linear node whose fused activation holds its value, and for
    /// a node that writes into its concat's buffer).
    pub value_len: Vec<usize>,
    /// Per node: the gradient buffer it uses; and per gradient buffer, its length.
    pub grad_slot: Vec<usize>,
    pub grad_len: Vec<usize>,
    /// Per node: max-pooling argmax indices (0 for other nodes).
    pub argmax_len: Vec<usize>,
    pub input_len: Vec<usize>,
    /// The scratch gradient of a value with several consumers, and the loss target.
    pub tmp_len: usize,
    pub target_len: usize,
    /// Transient buffers lent to one linear step at a time: how many at once, each how long.
    pub pool_buffers: usize,
    pub pool_len: usize,
    /// Everything above plus the linear plans' persistent scratch and packed weights.
    pub bytes: usize,
}

/// Sizes every buffer of a model whose nodes have `layouts` and whose linear nodes have
/// `linear` plans.
pub(crate) fn plan_buffers<'a>(
    graph: &Graph,
    input_layouts: &[Layout],
    layouts: &[Layout],
    fusion: &[Fusion],
    linear: impl Iterator<Item = &'a LinearPlan>,
) -> BufferPlan {
    let layout_of = |v: Value| match v {
        Value::Input(i) => input_layouts[i],
        Value::Node(n) => layouts[n.index()],
    };
    let value_len: Vec<usize> = layouts
        .iter()
        .zip(fusion)
        .map(|(l, f)| if f.activation.is_some() || f.concat_in_place.is_some() { 0 } else { l.len() })
        .collect();
    let grad_slot = plan_gradient_buffers(graph, layouts, fusion);
    let mut grad_len: Vec<usize> = vec![0; grad_slot.iter().map(|s| s + 1).max().unwrap_or(0)];
    for (i, &slot) in grad_slot.iter().enumerate() {
        grad_len[slot] = grad_len[slot].max(layouts[i].len());
    }
    let tmp_len = layouts.iter().map(Layout::len).max().unwrap_or(0);
    let argmax_len: Vec<usize> = graph
        .nodes()
        .iter()
        .zip(layouts)
        .map(|(n, l)| match &n.op {
            Op::Pool(p) if p.kind == PoolKind::Max => l.len(),
            _ => 0,
        })
        .collect();
    let input_len: Vec<usize> = input_layouts.iter().map(Layout::len).collect();
    let target_len = graph.outputs().first().map_or(0, |&v| layout_of(v).len());
    let mut floats: usize = value_len.iter().chain(&grad_len).chain(&input_len).chain(&argmax_len).sum();
    floats += tmp_len + target_len;
    let (mut pool_buffers, mut pool_len) = (0, 0);
    for p in linear {
        floats += p.persistent_len() + p.packed_len();
        let (n, len) = p.transient();
        pool_buffers = pool_buffers.max(n);
        pool_len = pool_len.max(len);
    }
    floats += pool_buffers * pool_len;
    BufferPlan {
        value_len,
        grad_slot,
        grad_len,
        argmax_len,
        input_len,
        tmp_len,
        target_len,
        pool_buffers,
        pool_len,
        bytes: 4 * floats,
    }
}

/// Assigns gradient buffers by liveness. In the backward pass (nodes in decreasing order) the
/// gradient of node `j` is first written by its last consumer (or, for an output, at the
/// start) and last read by node `j` itself; two gradients whose intervals do not overlap share a
/// buffer. A linear node fused with the activation after it inherits that activation's buffer
/// (the derivative is applied in place). Greedy in order of first write: a buffer is reused once
/// its previous owner's node has run.
fn plan_gradient_buffers(graph: &Graph, layouts: &[Layout], fusion: &[Fusion]) -> Vec<usize> {
    let nn = graph.nodes().len();
    let mut first_write = vec![0usize; nn];
    for (c, node) in graph.nodes().iter().enumerate() {
        for v in &node.inputs {
            if let Value::Node(j) = *v {
                first_write[j.index()] = first_write[j.index()].max(c);
            }
        }
    }
    for v in graph.outputs() {
        if let Value::Node(j) = *v {
            first_write[j.index()] = nn;
        }
    }
    // (buffer length, node whose gradient last used it)
    let mut buffers: Vec<(usize, usize)> = vec![];
    let mut slot = vec![usize::MAX; nn];
    let mut order: Vec<usize> = (0..nn).collect();
    order.sort_by(|a, b| first_write[*b].cmp(&first_write[*a]).then(b.cmp(a)));
    for j in order {
        if fusion[j].activation.is_some() {
            // Assigned with its activation (whose gradient is written earlier in backward time).
            continue;
        }
        let len = layouts[j].len();
        // The buffer is free after the backward step of the activation's linear producer when
        // the activation is fused (it reads the same buffer), else after this node's.
        let last = fusion[j].into_linear.map_or(j, |p| p.index());
        let free = buffers.iter().position(|&(l, owner)| l == len && owner > first_write[j]);
        let k = match free {
            Some(k) => k,
            None => {
                buffers.push((len, 0));
                buffers.len() - 1
            }
        };
        buffers[k].1 = last;
        slot[j] = k;
        if let Some(p) = fusion[j].into_linear {
            slot[p.index()] = k;
        }
    }
    slot
}

/// `MemAvailable` of /proc/meminfo in bytes, where there is one.
pub(crate) fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

//! A rewrite for the compiled backend: `upsample → 1×1 conv` run as `1×1 conv → upsample`.
//!
//! Both are linear maps. The conv mixes channels at each position; the upsample mixes positions
//! within each channel, with weights that sum to 1 (nearest: one tap; linear: the half-pixel
//! taps, [`crate::ops::upsample::taps`]). So they commute, the conv's bias included, and the
//! conv then runs on `f_h·f_w` times fewer positions — U-Nets with `up = upsample` upsample and
//! then halve the channels with such a conv at every level. The result differs from the graph
//! as written by rounding only. The interpreter runs the graph as written: it is the oracle the
//! rewrite is tested against (`tests/jit_spatial.rs`).

use super::{Graph, NodeId, Value};
use crate::ops::Op;

impl Graph {
    /// This graph with every `upsample → conv(kernel 1, stride 1, pad 0, dilation 1)` pair run
    /// the other way round, and the first node of each pair. A pair qualifies when the conv is
    /// the upsample's only reader and it does not widen the upsampled values (its output
    /// channels are at most its input channels times the upsampling factors, so the upsample
    /// moves no more values than before). The pair's two nodes exchange op, name, parameters
    /// and `init`: the first node is the conv, at the input's resolution, and the second the
    /// upsample, with the conv's old shape — every other value, every node id and every
    /// parameter keep their meaning (the parameters now name the first node).
    pub fn with_upsample_after_pointwise_conv(&self) -> (Graph, Vec<NodeId>) {
        let readers = self.readers();
        let mut g = self.clone();
        let mut firsts = vec![];
        for c in 0..g.nodes.len() {
            let (Op::Conv(conv), [Value::Node(u)]) = (&g.nodes[c].op, g.nodes[c].inputs.as_slice()) else {
                continue;
            };
            let u = *u;
            let Op::Upsample(up) = &g.nodes[u.index()].op else { continue };
            let pointwise =
                [&conv.kernel, &conv.stride, &conv.dilation].iter().all(|v| v.iter().all(|&k| k == 1))
                    && conv.pad.iter().all(|&p| p == 0);
            let input = g.shape(g.nodes[u.index()].inputs[0]).to_vec();
            let factor: usize = up.factor.iter().product();
            if !pointwise || readers[u.index()] != 1 || conv.out > input[1] * factor {
                continue;
            }
            let mut low = input;
            low[1] = conv.out;
            let (first, second) = g.nodes.split_at_mut(c);
            let (upsample, conv) = (&mut first[u.index()], &mut second[0]);
            std::mem::swap(&mut upsample.op, &mut conv.op);
            std::mem::swap(&mut upsample.name, &mut conv.name);
            std::mem::swap(&mut upsample.params, &mut conv.params);
            std::mem::swap(&mut upsample.init, &mut conv.init);
            upsample.shape = low;
            for &p in &upsample.params {
                g.params[p.index()].node = u;
            }
            firsts.push(u);
        }
        (g, firsts)
    }
}

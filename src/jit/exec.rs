//! The executors: one node's forward and backward step on the planned buffers. This module
//! calls the generated code ([`run_corr`], [`run_gradw`]; Winograd layers through
//! `WinoCall::run` in [`super::winograd`], the only other caller); each call checks every buffer
//! length against the kernel's spec first (in debug builds) and says why it is sound.

use super::channel::{ChannelFn, ChannelSpec};
use super::codegen::{Epilogue, GradWFn, GradWSpec};
use super::elementwise::FusedMask;
use super::gather::{GatherFn, GatherSpec};
use super::linear::{CorrCall, LinearKind, LinearPlan, Src};
use super::native::{add_into, flatten, unflatten};
use super::pointwise::{PointwiseFn, PointwiseSpec};
use super::winograd::{Output, SumsOut};
use super::{JitModel, Step, from_nhwc, to_nhwc};
use crate::interp::{self, Cache};
use crate::ir::{Node, NodeId, Params, Value};
use crate::ops::Op;
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// Forward and backward, as the profile indexes them.
pub(crate) const FORWARD: usize = 0;
pub(crate) const BACKWARD: usize = 1;

impl JitModel {
    /// Runs the graph on the loaded inputs, leaving the outputs in their buffers.
    pub fn forward_loaded(&mut self, params: &mut Params, training: bool, seed: u64) {
        let pass = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let graph = Arc::clone(&self.executed);
        for id in graph.node_ids() {
            let t = Instant::now();
            self.forward_node(id, params, training, &mut rng);
            self.profile_step(id, FORWARD, t);
        }
        self.profile_pass(FORWARD, pass);
    }

    fn forward_node(&mut self, id: NodeId, params: &mut Params, training: bool, rng: &mut ChaCha8Rng) {
        let i = id.index();
        let graph = Arc::clone(&self.executed);
        let node = graph.node(id);
        let out_l = self.nodes[i].layout;
        let fusion = self.nodes[i].fusion;
        let mut step = std::mem::replace(&mut self.nodes[i].step, Step::Native);
        match &mut step {
            Step::FusedActivation(_) => {}
            Step::Linear(plan) => {
                let fold_bn = if training { None } else { fusion.bn_fold };
                // A conv or pixel-shuffle upconv writing into a concat's slice (the forward
                // kernel stores with the concat's strides).
                let into = fusion.concat_in_place;
                // A folded batchnorm's value is the activation fused after it, if any.
                let folded_into = fold_bn.map(|bn| self.nodes[bn.index()].fusion.activation.unwrap_or(bn));
                let dst = into.map(|(cn, _)| cn).or(folded_into).or(fusion.activation).unwrap_or(id).index();
                let folded_act = fold_bn.is_some() && fusion.folded_epilogue != Epilogue::None;
                let mut y = std::mem::take(&mut self.nodes[dst].value);
                let pack_s = plan.pack(params, node, training);
                self.profile_kernel(id, FORWARD, pack_s);
                if let Some(bn) = fold_bn {
                    plan.fold_batchnorm(params, graph.node(bn));
                }
                if let Some((k, _)) = plan.fwd_scatter {
                    plan.lend(k, &mut self.pool);
                }
                let wino_k = plan.wino_fwd.as_ref().map(|w| w.scratch);
                let mut wino_scratch = wino_k.map(|k| {
                    plan.lend(k, &mut self.pool);
                    std::mem::take(&mut plan.scratch[k])
                });
                // Training with the batchnorm before applied as the input is loaded: the
                // batchnorm's input and coefficients.
                let norm = self.norm_source(plan, fusion).filter(|_| training);
                let x = norm.map_or_else(|| self.buf(node.inputs[0]), |(x, _)| x);
                if let Some((k, sc)) = plan.fwd_scatter {
                    sc.run(x, &mut plan.scratch[k]);
                }
                let xb: &[f32] = match plan.fwd_src {
                    Src::Value => x,
                    Src::Scratch(k) => &plan.scratch[k],
                };
                let kernel = Instant::now();
                // (Winograd is never planned for a conv writing into a concat: `lower.rs`.)
                let y_at = &mut y[into.map_or(0, |(_, off)| off)..];
                // Training: the batchnorm's statistics as the output is stored (when generated).
                let stats = plan.stats.as_mut().zip(fusion.stats_into).filter(|_| training).map(|(s, bn)| {
                    s.set_shift(params, graph.node(bn));
                    s.fresh = true;
                    SumsOut { sums: &mut s.sums, shift: &s.shift, q: None }
                });
                let output = match stats {
                    Some(sums) => Output::Sums(sums),
                    None if folded_act => Output::Folded,
                    None => Output::Plain,
                };
                let fwd = match &plan.fwd_folded {
                    Some(folded) if folded_act => folded,
                    _ => &plan.fwd,
                };
                match (&plan.wino_fwd, wino_scratch.as_mut()) {
                    (Some(wc), Some(ws)) => {
                        let xn = (xb, norm.map(|(_, coef)| coef));
                        wc.run(xn, &plan.packed_fwd, &plan.packed_bias, (y_at, &[]), ws, output)
                    }
                    _ => run_corr(fwd, xb, &plan.packed_fwd, &plan.packed_bias, y_at, &[], plan.fwd_rows),
                }
                self.profile_kernel(id, FORWARD, kernel.elapsed().as_secs_f64());
                if let (Some(k), Some(ws)) = (wino_k, wino_scratch) {
                    plan.scratch[k] = ws;
                }
                self.nodes[dst].value = y;
                plan.give_back(&mut self.pool);
            }
            Step::Native => {
                let mut y = std::mem::take(&mut self.nodes[i].value);
                self.forward_native(id, node, &mut y);
                self.nodes[i].value = y;
            }
            Step::Norm(_) if !training && fusion.bn_folded_from.is_some() => {
                // Computed by the layer before, with this batchnorm folded into its weights.
            }
            Step::Norm(plan) => self.forward_norm(id, node, plan, params, training),
            Step::Elementwise(plan) => self.forward_elementwise(id, node, plan),
            Step::Spatial(plan) => self.forward_spatial(id, node, plan),
            Step::Unary(plan) => self.forward_unary(id, node, plan, training, rng),
            Step::GroupNorm(plan) => self.forward_groupnorm(id, node, plan, params),
            Step::Reference if !training && fusion.bn_folded_from.is_some() => {
                // Computed by the layer before, with this batchnorm folded into its weights.
            }
            Step::Reference => {
                let xs: Vec<ArrayD<f64>> = node.inputs.iter().map(|&v| self.value_f64(v)).collect();
                let refs: Vec<&ArrayD<f64>> = xs.iter().collect();
                let (y, cache) = interp::forward_node(node, params, &refs, training, rng);
                to_nhwc(&y, out_l, &mut self.nodes[i].value);
                self.nodes[i].cache = Some(cache);
            }
        }
        self.nodes[i].step = step;
    }

    /// The forward loop of a `Lowering::Native` op into its value `y`.
    fn forward_native(&mut self, id: NodeId, node: &Node, y: &mut [f32]) {
        let out_l = self.nodes[id.index()].layout;
        match &node.op {
            Op::Flatten => flatten(self.buf(node.inputs[0]), self.layout(node.inputs[0]), y, out_l),
            other => unreachable!("`{}` has no native loop but its lowering says Native", other.kind()),
        }
    }

    /// Lets `f` produce a gradient contribution for value `v` (overwriting every element of the
    /// buffer it is given): straight into `v`'s gradient buffer the first time this step,
    /// otherwise into a scratch buffer that is then added.
    pub(crate) fn emit_grad(&mut self, v: Value, f: impl FnOnce(&Self, &mut [f32])) {
        let Value::Node(n) = v else { return };
        if !self.nodes[n.index()].grad_written {
            let mut g = std::mem::take(self.grad_buf(n));
            f(self, &mut g);
            *self.grad_buf(n) = g;
            self.nodes[n.index()].grad_written = true;
        } else {
            let mut tmp = std::mem::take(&mut self.tmp);
            tmp.resize(self.grad_buf(n).len(), 0.0);
            f(self, &mut tmp);
            add_into(self.grad_buf(n), &tmp);
            self.tmp = tmp;
        }
    }

    /// Adds (or, first time this step, writes) `g` into the gradient of value `v`.
    pub(crate) fn accumulate(&mut self, v: Value, g: &[f32]) {
        if let Value::Node(n) = v {
            let written = self.nodes[n.index()].grad_written;
            let dst = self.grad_buf(n);
            if written {
                add_into(dst, g);
            } else {
                dst.copy_from_slice(g);
                self.nodes[n.index()].grad_written = true;
            }
        }
    }

    /// The backward pass from the output gradients already in place.
    pub(crate) fn backward_seeded(&mut self, params: &Params) -> Params {
        let pass = Instant::now();
        let graph = Arc::clone(&self.executed);
        let mut pgrads = self.zeroed_grads();
        for id in graph.node_ids().rev() {
            let i = id.index();
            if !self.nodes[i].grad_written {
                continue;
            }
            let t = Instant::now();
            let node = graph.node(id);
            let mut step = std::mem::replace(&mut self.nodes[i].step, Step::Native);
            match &mut step {
                Step::FusedActivation(mask) => self.backward_fused_activation(id, node, mask.as_deref()),
                Step::Linear(plan) => self.backward_linear(id, node, plan, params, &mut pgrads),
                Step::Native => self.backward_native(id, node),
                Step::Norm(plan) => self.backward_norm(id, node, plan, &mut pgrads),
                Step::Elementwise(plan) => self.backward_elementwise(id, node, plan),
                Step::Spatial(plan) => self.backward_spatial(id, node, plan),
                Step::Unary(plan) => self.backward_unary(id, node, plan),
                Step::GroupNorm(plan) => self.backward_groupnorm(id, node, plan, params, &mut pgrads),
                Step::Reference => {
                    let xs: Vec<ArrayD<f64>> = node.inputs.iter().map(|&v| self.value_f64(v)).collect();
                    let refs: Vec<&ArrayD<f64>> = xs.iter().collect();
                    let y = self.value_f64(Value::Node(id));
                    let dy = from_nhwc(
                        &self.grad_bufs[self.nodes[i].grad_slot],
                        self.nodes[i].layout,
                        &node.shape,
                    );
                    let cache = self.nodes[i].cache.take().unwrap_or(Cache::None);
                    let dxs = interp::backward_node(node, params, &refs, &y, &cache, dy, &mut pgrads);
                    self.nodes[i].cache = Some(cache);
                    for (&v, dx) in node.inputs.iter().zip(dxs) {
                        let mut g = vec![0.0; self.layout(v).len()];
                        to_nhwc(&dx, self.layout(v), &mut g);
                        self.accumulate(v, &g);
                    }
                }
            }
            self.nodes[i].step = step;
            self.profile_step(id, BACKWARD, t);
        }
        self.profile_pass(BACKWARD, pass);
        pgrads
    }

    /// Zero gradients of every parameter: the arrays handed back by
    /// [`JitModel::recycle_grads`] when they fit (zeroed in place: no fresh pages every step),
    /// else new ones.
    fn zeroed_grads(&mut self) -> Params {
        let mut spare = std::mem::take(&mut self.spare_grads);
        let params = self.executed.params();
        let fits = spare.len() == params.len()
            && spare
                .iter()
                .zip(params)
                .all(|(g, p)| g.shape() == p.shape.as_slice() && g.is_standard_layout());
        if !fits {
            return params.iter().map(|p| ArrayD::zeros(IxDyn(&p.shape))).collect();
        }
        spare.par_iter_mut().for_each(|g| g.fill(0.0));
        spare
    }

    /// dy of the linear node = dy · act'(y), from the activation's output, in place in the
    /// gradient buffer the two share, by the generated mask kernel — unless the consumer's
    /// input-gradient kernel applied it (then `mask` is `None`).
    fn backward_fused_activation(&mut self, id: NodeId, node: &Node, mask: Option<&FusedMask>) {
        let i = id.index();
        let Value::Node(p) = node.inputs[0] else { unreachable!("fused after a layer") };
        if let Some(m) = mask
            && let Some(f) = m.call.f
        {
            let t = Instant::now();
            let state = &self.nodes[i];
            let positions = state.layout.positions();
            run_mask_in_place(
                f,
                &m.call.spec,
                positions,
                &state.value,
                &m.coef,
                &mut self.grad_bufs[state.grad_slot],
            );
            self.profile_kernel(id, BACKWARD, t.elapsed().as_secs_f64());
        }
        // The memory plan gave the linear node this activation's gradient buffer.
        debug_assert_eq!(self.nodes[i].grad_slot, self.nodes[p.index()].grad_slot);
        self.nodes[p.index()].grad_written = true;
    }

    fn backward_native(&mut self, id: NodeId, node: &Node) {
        let gl = self.nodes[id.index()].layout;
        let dy = std::mem::take(self.grad_buf(id));
        match &node.op {
            Op::Flatten => {
                let xl = self.layout(node.inputs[0]);
                self.emit_grad(node.inputs[0], |_, dx| unflatten(&dy, gl, dx, xl));
            }
            other => unreachable!("`{}` has no native loop but its lowering says Native", other.kind()),
        }
        *self.grad_buf(id) = dy;
    }

    fn backward_linear(
        &mut self,
        id: NodeId,
        node: &Node,
        plan: &mut LinearPlan,
        params: &Params,
        pgrads: &mut Params,
    ) {
        let pack_s = plan.pack_backward(params, node);
        self.profile_kernel(id, BACKWARD, pack_s);
        let dy = std::mem::take(self.grad_buf(id));
        let x_ref = node.inputs[0];
        // Bias gradient: per-channel sums over fixed row chunks (f64), added in chunk order —
        // unless the weight-gradient kernel sums dy in its own pass.
        if plan.bias && !plan.gradw_spec.bias {
            let yl = self.nodes[id.index()].layout;
            let per = plan.bias_chunk_rows * yl.w * yl.cs;
            let parts: Vec<Vec<f64>> = dy
                .par_chunks(per.max(1))
                .map(|rows| {
                    // f64 lanes over whole pixels (vectorised); pad lanes dropped at the end.
                    let mut sums = vec![0.0f64; yl.cs];
                    for pos in rows.chunks_exact(yl.cs) {
                        for (s, &v) in sums.iter_mut().zip(pos) {
                            *s += f64::from(v);
                        }
                    }
                    sums.truncate(yl.c);
                    sums
                })
                .collect();
            let mut sums = vec![0.0f64; yl.c];
            for p in parts {
                for (s, v) in sums.iter_mut().zip(p) {
                    *s += v;
                }
            }
            grad_slice(&mut pgrads[node.params[1]]).copy_from_slice(&sums);
        }
        // Input gradient (skipped for graph inputs, which need none).
        // (upconv's weight gradient reads the scattered dy too.)
        if let Some((k, sc)) = plan.bwd_scatter {
            let needed = matches!(x_ref, Value::Node(_)) || plan.gradw_x == Src::Scratch(k);
            if needed {
                plan.lend(k, &mut self.pool);
                sc.run(&dy, &mut plan.scratch[k]);
            }
        }
        if let Some(px) = plan.pixel() {
            plan.lend(px.t_bwd, &mut self.pool);
            px.space_to_depth(&dy, &mut plan.scratch[px.t_bwd]);
        }
        plan.lend_partials(&mut self.pool);
        let mut kernel_s = 0.0;
        if let Value::Node(_) = x_ref {
            let wino_k = plan.wino_bwd.as_ref().map(|w| w.scratch);
            let mut wino_scratch = wino_k.map(|k| {
                plan.lend(k, &mut self.pool);
                std::mem::take(&mut plan.scratch[k])
            });
            let src: &[f32] = match plan.bwd_src {
                Src::Value => &dy,
                Src::Scratch(k) => &plan.scratch[k],
            };
            let grad_stats_into = self.nodes[id.index()].fusion.grad_stats_into;
            self.emit_grad(x_ref, |me, dx| {
                // With a folded activation derivative, the mask is that activation's output —
                // unless it is recomputed from the batchnorm's input (`norm_load`).
                let m = if plan.bwd_in.spec.epilogue == Epilogue::None || plan.norm_load.is_some() {
                    &[][..]
                } else {
                    me.buf(x_ref)
                };
                // The backward sums of the batchnorm before: of dx (its output gradient) and
                // of dx·(x − mean), x its input and mean its f32 forward mean (the first block
                // of its coefficients, which the mask recomputed from x reads too).
                let sums = match (plan.grad_stats.as_mut(), grad_stats_into) {
                    (Some(s), Some(bn)) => match &me.nodes[bn.index()].step {
                        Step::Norm(norm) => {
                            s.fresh = true;
                            let q = me.buf(me.executed.node(bn).inputs[0]);
                            Some(SumsOut { sums: &mut s.sums, shift: norm.coef(), q: Some(q) })
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let t = Instant::now();
                match (&plan.wino_bwd, wino_scratch.as_mut()) {
                    (Some(wc), Some(ws)) => {
                        let output = sums.map_or(Output::Plain, Output::Sums);
                        wc.run((src, None), &plan.packed_bwd, &[], (dx, m), ws, output)
                    }
                    _ => run_corr(&plan.bwd_in, src, &plan.packed_bwd, &[], dx, m, plan.bwd_rows),
                }
                kernel_s += t.elapsed().as_secs_f64();
            });
            if let (Some(k), Some(ws)) = (wino_k, wino_scratch) {
                plan.scratch[k] = ws;
            }
        }
        // The Winograd weight gradient's task scratch, when it runs instead of the direct kernel.
        let wino_k = plan.wino_gradw.as_ref().map(|w| w.scratch);
        let mut wino_scratch = wino_k.map(|k| {
            plan.lend(k, &mut self.pool);
            std::mem::take(&mut plan.scratch[k])
        });
        // Weight gradient over fixed row chunks, summed in chunk order. Its operands: `gx`
        // reduced over, `gd` the per-position lanes (see `LinearKind`). A forward that read x in
        // place left no padded x: it is made now.
        if let Some((k, sc)) = plan.gradw_scatter {
            plan.lend(k, &mut self.pool);
            sc.run(self.buf(x_ref), &mut plan.scratch[k]);
        }
        // With the batchnorm before applied as x is loaded, x is the batchnorm's input.
        let fusion = self.nodes[id.index()].fusion;
        let norm = self.norm_source(plan, fusion);
        let gx: &[f32] = match (plan.gradw_x, norm) {
            (Src::Value, Some((x, _))) => x,
            (Src::Value, None) => self.buf(x_ref),
            (Src::Scratch(k), _) => &plan.scratch[k],
        };
        let gd: &[f32] = match plan.kind {
            LinearKind::PixelShuffle(px) => &plan.scratch[px.t_bwd],
            LinearKind::Transposed => self.buf(x_ref),
            LinearKind::Direct => &dy,
        };
        // The chunks' partial sums, by Winograd or by the direct kernel.
        match (&plan.wino_gradw, wino_scratch.as_mut()) {
            (Some(wg), Some(ws)) => {
                kernel_s += wg.run((gx, norm.map(|(_, coef)| coef)), gd, &mut plan.partials, ws)
            }
            _ => {
                let Some(f) = plan.gradw else { return };
                let t = Instant::now();
                let rows = (plan.gradw_chunk_rows, plan.gradw_rows);
                run_gradw(f, &plan.gradw_spec, rows, &mut plan.partials, gx, gd);
                kernel_s += t.elapsed().as_secs_f64();
            }
        }
        if let (Some(k), Some(ws)) = (wino_k, wino_scratch) {
            plan.scratch[k] = ws;
        }
        // Summed in chunk order (Winograd's transformed back) straight into the weight's layout
        // by the generated finish; the bias sums' few lanes natively.
        let t = Instant::now();
        plan.finish.run(&plan.partials, grad_slice(&mut pgrads[node.params[0]]));
        kernel_s += t.elapsed().as_secs_f64();
        if plan.gradw_spec.bias {
            plan.finish.bias(&plan.partials, grad_slice(&mut pgrads[node.params[1]]));
        }
        plan.give_back(&mut self.pool);
        *self.grad_buf(id) = dy;
        self.profile_kernel(id, BACKWARD, kernel_s);
    }
}

/// Floats of weight-gradient sums per parallel task of [`sum_partials`].
#[cfg(test)]
const SUM_BLOCK: usize = 2048;

/// A parameter gradient's elements (the arrays [`JitModel::backward_seeded`] makes are in
/// standard layout).
fn grad_slice(g: &mut ArrayD<f64>) -> &mut [f64] {
    g.as_slice_mut().expect("parameter gradients are in standard layout")
}

/// The weight-gradient chunks' partial sums (`len` floats each: `wlen` f32 weight sums, then
/// `bias_lanes` f64 bias sums stored as pairs of f32 slots, little-endian) added in f64 in
/// chunk order, element blocks in parallel: the same sums whatever the thread count. The
/// generated finish ([`super::gradw_finish`]) replaced it; this is the tests' oracle.
#[cfg(test)]
pub(crate) fn sum_partials(partials: &[f32], len: usize, wlen: usize, bias_lanes: usize) -> Vec<f64> {
    let mut sum = vec![0.0f64; wlen + bias_lanes];
    let (weights, bias) = sum.split_at_mut(wlen);
    weights.par_chunks_mut(SUM_BLOCK).enumerate().for_each(|(blk, s)| {
        let (e0, n) = (blk * SUM_BLOCK, s.len());
        // One contiguous run per chunk: converted and added lane-wise (vectorised).
        for part in partials.chunks_exact(len) {
            for (sv, &p) in s.iter_mut().zip(&part[e0..e0 + n]) {
                *sv += f64::from(p);
            }
        }
    });
    for part in partials.chunks_exact(len) {
        for (c, sv) in bias.iter_mut().enumerate() {
            let (lo, hi) = (part[wlen + 2 * c].to_bits() as u64, part[wlen + 2 * c + 1].to_bits() as u64);
            *sv += f64::from_bits(hi << 32 | lo);
        }
    }
    sum
}

/// The native unpack the generated finish replaced, as the tests' oracle: the summed weight
/// gradient `sum` (`[r][tap][lanes]`, then the bias sums) into `dw[a][b][taps]` and `db[a]`.
#[cfg(test)]
pub(crate) fn unpack_oracle(
    kind: LinearKind,
    (a, b, taps): (usize, usize, usize),
    (lanes, wlen): (usize, usize),
    sum: &[f64],
    bias: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut dw = vec![0.0f64; a * b * taps];
    dw.par_chunks_mut((b * taps).max(1)).enumerate().for_each(|(ia, row)| {
        for ib in 0..b {
            for t in 0..taps {
                row[ib * taps + t] = match kind {
                    // sum[in][out·taps + t]
                    LinearKind::PixelShuffle(_) => sum[ib * lanes + ia * taps + t],
                    // sum[out][tap][in]: upconv's dy role is its input
                    LinearKind::Transposed => sum[(ia * taps + t) * lanes + ib],
                    // sum[in][tap][out]
                    LinearKind::Direct => sum[(ib * taps + t) * lanes + ia],
                };
            }
        }
    });
    let db = if !bias {
        vec![]
    } else {
        match kind {
            // lanes out·taps + t
            LinearKind::PixelShuffle(_) => {
                (0..a).map(|o| (0..taps).map(|t| sum[wlen + o * taps + t]).sum()).collect()
            }
            _ => sum[wlen..wlen + a].to_vec(),
        }
    };
    (dw, db)
}

/// Runs a correlation kernel over output rows `0..rows`, in parallel tasks of whole rows.
fn run_corr(call: &CorrCall, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], m: &[f32], rows: usize) {
    let per_task = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let Some(f) = call.f else { return };
    let g = &call.spec.geo;
    // Rows `n·ho + oh` read the padded rows of samples `0..⌈rows/ho⌉` of x, the packed weights
    // `[ci][tap][co4]`, `co4` bias lanes, and write (and read the mask at) `wo` positions of
    // `cso` floats per row.
    // (x read in place is `pad` smaller on every side.)
    let (hs, ws) = (g.hp - 2 * call.spec.pad[0], g.wp - 2 * call.spec.pad[1]);
    debug_assert!(x.len() >= rows.div_ceil(g.ho) * hs * ws * g.csx, "x too short");
    debug_assert!(w.len() >= g.weight_len(), "packed weights too short");
    debug_assert!(!call.spec.bias || b.len() >= g.co4, "bias too short");
    // (`y` may be a concat's buffer from this layer's first channel on: its last position ends
    // `co4` lanes in.)
    debug_assert!(y.len() >= call.spec.y_len(rows), "y too short");
    let masked = call.spec.epilogue.reads_mask();
    debug_assert!(!masked || m.len() >= call.spec.y_len(rows), "mask too short");
    let (xp, wp, bp, mp) =
        (x.as_ptr() as usize, w.as_ptr() as usize, b.as_ptr() as usize, m.as_ptr() as usize);
    let yp = y.as_mut_ptr() as usize;
    (0..rows.div_ceil(per_task)).into_par_iter().for_each(|t| {
        let r0 = t * per_task;
        let r1 = ((t + 1) * per_task).min(rows);
        // SAFETY: the kernel was generated for `call.spec`, whose sizes are constants in it; the
        // buffers are at least as long as that spec reads and writes over rows `0..rows` (the
        // assertions above; a kernel reading x in place loads only positions inside it and its
        // own zero row); every task writes only its own rows `r0..r1` of `y`, so no two
        // tasks write the same element, and nothing else touches `y` meanwhile (`&mut`).
        unsafe {
            f(
                xp as *const f32,
                wp as *const f32,
                bp as *const f32,
                yp as *mut f32,
                mp as *const f32,
                r0 as i64,
                r1 as i64,
            )
        };
    });
}

/// Runs the weight-gradient kernel of `spec` over rows `0..total` in fixed chunks of `chunk`
/// rows, one chunk's partial sums per `spec.partial_len()` floats of `partials`.
fn run_gradw(
    f: GradWFn,
    spec: &GradWSpec,
    (chunk, total): (usize, usize),
    partials: &mut [f32],
    gx: &[f32],
    gd: &[f32],
) {
    let len = spec.partial_len();
    let g = &spec.geo;
    // (x read in place is `pad` smaller on every side.)
    let (hs, ws) = (g.hp - 2 * spec.pad[0], g.wp - 2 * spec.pad[1]);
    debug_assert!(gx.len() >= total.div_ceil(g.ho) * hs * ws * g.csx, "gradw x too short");
    debug_assert!(gd.len() >= total * g.wo * g.cso, "gradw dy too short");
    debug_assert!(partials.len() >= total.div_ceil(chunk) * len, "gradw partials too short");
    let (gxp, gdp) = (gx.as_ptr() as usize, gd.as_ptr() as usize);
    partials.par_chunks_mut(len).enumerate().for_each(|(c, part)| {
        let r0 = c * chunk;
        let r1 = ((c + 1) * chunk).min(total);
        part.fill(0.0);
        // SAFETY: the kernel was generated for `spec`; `gx` and `gd` cover rows
        // `0..total` of that spec (a kernel reading x in place loads only positions inside it) and `part` is one chunk's `partial_len` floats (the assertions
        // above); the kernel only reads `gx`/`gd` and writes `part`, which no other task touches.
        unsafe { f(gxp as *const f32, gdp as *const f32, part.as_mut_ptr(), r0 as i64, r1 as i64) };
    });
}

/// Runs the moments kernel of `spec` over positions `0..positions` in fixed chunks of `chunk`,
/// each chunk's `2·cs` sums into its slice of `partials`.
pub(crate) fn run_moments(
    f: ChannelFn,
    spec: &ChannelSpec,
    (positions, chunk): (usize, usize),
    p: &[f32],
    q: &[f32],
    coef: &[f32],
    partials: &mut [f32],
) {
    let len = spec.moments_len();
    debug_assert!(p.len() >= positions * spec.cs && q.len() >= positions * spec.cs, "operand too short");
    debug_assert!(coef.len() >= 4 * spec.cs, "coefficients too short");
    debug_assert!(partials.len() >= positions.div_ceil(chunk) * len, "partials too short");
    let (pp, qp, cp) = (p.as_ptr() as usize, q.as_ptr() as usize, coef.as_ptr() as usize);
    partials.par_chunks_mut(len).take(positions.div_ceil(chunk)).enumerate().for_each(|(k, part)| {
        let (p0, p1) = (k * chunk, ((k + 1) * chunk).min(positions));
        // SAFETY: the kernel was generated for `spec` (channel stride `cs`); it reads positions
        // `p0..p1` of `p` and `q` and the `4·cs` coefficients, all in bounds (the assertions
        // above), and writes only this chunk's `2·cs` floats, which no other task touches.
        unsafe {
            f(pp as *const f32, qp as *const f32, cp as *const f32, part.as_mut_ptr(), p0 as i64, p1 as i64)
        };
    });
}

/// Runs the mask kernel of `spec` (`ChannelKind::Mask`) in place over positions
/// `0..positions` of `g`: `g` where `y > 0`, else `slope·g`.
pub(crate) fn run_mask_in_place(
    f: ChannelFn,
    spec: &ChannelSpec,
    positions: usize,
    y: &[f32],
    coef: &[f32],
    g: &mut [f32],
) {
    debug_assert!(y.len() >= positions * spec.cs && g.len() >= positions * spec.cs, "operand too short");
    debug_assert!(coef.len() >= 4 * spec.cs, "coefficients too short");
    let (yp, cp, gp) = (y.as_ptr() as usize, coef.as_ptr() as usize, g.as_mut_ptr() as usize);
    let per_task = positions.div_ceil(rayon::current_num_threads() * 4).max(64);
    (0..positions.div_ceil(per_task)).into_par_iter().for_each(|k| {
        let (p0, p1) = (k * per_task, ((k + 1) * per_task).min(positions));
        // SAFETY: the kernel was generated for `spec` (channel stride `cs`); it reads positions
        // `p0..p1` of `g` (as `p`) and `y` (as `q`) and the coefficients, all in bounds (the
        // assertions above), and writes those positions of `g` (as `out`), each vector after
        // loading it, so the in-place alias is sound; no other task touches positions
        // `p0..p1`, and nothing else touches `g` meanwhile (`&mut`).
        unsafe {
            f(gp as *const f32, yp as *const f32, cp as *const f32, gp as *mut f32, p0 as i64, p1 as i64)
        };
    });
}

/// Runs the affine kernel of `spec` over positions `0..positions` into `out`.
pub(crate) fn run_affine(
    f: ChannelFn,
    spec: &ChannelSpec,
    positions: usize,
    p: &[f32],
    q: &[f32],
    coef: &[f32],
    out: &mut [f32],
) {
    debug_assert!(p.len() >= positions * spec.cs && q.len() >= positions * spec.cs, "operand too short");
    debug_assert!(out.len() >= positions * spec.cs, "out too short");
    debug_assert!(coef.len() >= 4 * spec.cs, "coefficients too short");
    let (pp, qp, cp) = (p.as_ptr() as usize, q.as_ptr() as usize, coef.as_ptr() as usize);
    let per_task = positions.div_ceil(rayon::current_num_threads() * 4).max(64);
    let op = out.as_mut_ptr() as usize;
    (0..positions.div_ceil(per_task)).into_par_iter().for_each(|k| {
        let (p0, p1) = (k * per_task, ((k + 1) * per_task).min(positions));
        // SAFETY: as for `run_moments`; every task writes only its own positions `p0..p1` of
        // `out`, so no two tasks write the same element, and nothing else touches `out`
        // meanwhile (`&mut`).
        unsafe {
            f(pp as *const f32, qp as *const f32, cp as *const f32, op as *mut f32, p0 as i64, p1 as i64)
        };
    });
}

/// Runs the gather kernel of `spec` over destination rows `0..rows` of `y`, in tasks of whole
/// rows. `aux` is the argmax: written by a `Max` kernel (rows of the pool's output), read by an
/// `ArgMatch` kernel (laid out like `x`); untouched otherwise.
pub(crate) fn run_gather(
    f: GatherFn,
    spec: &GatherSpec,
    rows: usize,
    x: &[f32],
    table: &[i32],
    aux: &mut [u32],
    y: &mut [f32],
) {
    debug_assert!(x.len() >= spec.x_len(rows), "gather x too short");
    debug_assert!(y.len() >= spec.y_len(rows), "gather y too short");
    debug_assert!(aux.len() >= spec.aux_len(rows), "gather argmax too short");
    debug_assert!(table.len() >= spec.table_len(), "gather table too short");
    let per_task = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let (xp, tp, ap) = (x.as_ptr() as usize, table.as_ptr() as usize, aux.as_mut_ptr() as usize);
    let yp = y.as_mut_ptr() as usize;
    (0..rows.div_ceil(per_task)).into_par_iter().for_each(|t| {
        let (r0, r1) = (t * per_task, ((t + 1) * per_task).min(rows));
        // SAFETY: the kernel was generated for `spec`, whose sizes, strides and offsets are
        // constants in it, and reads only the table entries `spec.table_len()` covers; over rows
        // `0..rows` it reads at most `x_len` floats of `x` (and `aux_len` of `aux`) and writes at
        // most `y_len` of `y` (the assertions above). Every task writes only destination rows
        // `r0..r1` of `y` (and, for `Max`, the same rows of `aux`), so no two tasks write the
        // same element, and nothing else touches `y` or `aux` meanwhile (`&mut`).
        unsafe {
            f(xp as *const f32, yp as *mut f32, tp as *const i32, ap as *mut i32, r0 as i64, r1 as i64)
        };
    });
}

/// Runs the point-wise kernel of `spec` over positions `0..positions` into `out`, reading the
/// operands `a`, `b`, `c` (unused ones may be any slice of the same length).
pub(crate) fn run_pointwise(
    f: PointwiseFn,
    spec: &PointwiseSpec,
    positions: usize,
    [a, b, c]: [&[f32]; 3],
    coef: &[f32],
    out: &mut [f32],
) {
    let len = positions * spec.cs;
    debug_assert!(a.len() >= len && b.len() >= len && c.len() >= len, "operand too short");
    debug_assert!(out.len() >= len, "out too short");
    debug_assert!(coef.len() >= spec.coef_len(), "coefficients too short");
    let ptrs = [a.as_ptr() as usize, b.as_ptr() as usize, c.as_ptr() as usize, coef.as_ptr() as usize];
    let per_task = positions.div_ceil(rayon::current_num_threads() * 4).max(16);
    let op = out.as_mut_ptr() as usize;
    (0..positions.div_ceil(per_task)).into_par_iter().for_each(|k| {
        let (p0, p1) = (k * per_task, ((k + 1) * per_task).min(positions));
        let mut aux = [0.0f32; 4];
        // SAFETY: the kernel was generated for `spec` (channel stride `cs`); it reads positions
        // `p0..p1` of `a`, `b`, `c` and the coefficients (in bounds: the assertions above) and
        // writes only positions `p0..p1` of `out`, which no other task writes (`&mut`), and
        // `aux`, this task's own (a point-wise kernel other than the loss writes none).
        unsafe {
            f(
                ptrs[0] as *const f32,
                ptrs[1] as *const f32,
                ptrs[2] as *const f32,
                ptrs[3] as *const f32,
                op as *mut f32,
                aux.as_mut_ptr(),
                p0 as i64,
                p1 as i64,
            )
        };
    });
}

/// Runs the loss kernel of `spec` over positions `0..positions` in fixed chunks of `chunk`:
/// the output gradient into `out`, each chunk's four lane sums into `partials`. `y: None` reads
/// the prediction from `out` itself (the gradient is written over it, element by element after
/// reading it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_loss(
    f: PointwiseFn,
    spec: &PointwiseSpec,
    (positions, chunk): (usize, usize),
    y: Option<&[f32]>,
    target: &[f32],
    mask: &[f32],
    coef: &[f32],
    out: &mut [f32],
    partials: &mut [f32],
) {
    let len = positions * spec.cs;
    debug_assert!(y.is_none_or(|y| y.len() >= len) && target.len() >= len, "operand too short");
    debug_assert!(mask.len() >= len, "mask too short");
    debug_assert!(out.len() >= len, "out too short");
    debug_assert!(coef.len() >= spec.coef_len(), "coefficients too short");
    debug_assert!(partials.len() >= 4 * positions.div_ceil(chunk), "partials too short");
    let op = out.as_mut_ptr() as usize;
    let yp = y.map_or(op, |y| y.as_ptr() as usize);
    let (tp, mp, cp) = (target.as_ptr() as usize, mask.as_ptr() as usize, coef.as_ptr() as usize);
    partials.par_chunks_mut(4).take(positions.div_ceil(chunk)).enumerate().for_each(|(k, part)| {
        let (p0, p1) = (k * chunk, ((k + 1) * chunk).min(positions));
        // SAFETY: as for `run_pointwise`: every read is within positions `p0..p1` of operands
        // at least `positions·cs` long, and the task writes only those positions of `out` and
        // its own four partial sums. When `y` is `out` (in place), each element is loaded
        // before the gradient is stored over it, by this task alone.
        unsafe {
            f(
                yp as *const f32,
                tp as *const f32,
                mp as *const f32,
                cp as *const f32,
                op as *mut f32,
                part.as_mut_ptr(),
                p0 as i64,
                p1 as i64,
            )
        };
    });
}

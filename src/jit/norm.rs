//! Batchnorm on the buffers (`Lowering::Channel`), with the per-channel kernels of
//! [`super::channel`]: training-mode statistics (two passes: Σx, then the moments around the
//! mean; per sample, added in sample order so ranks and one process agree), the running-statistics
//! update, the normalisation, and the backward pass (two sums, then `dx` in one pass); at
//! inference the same affine kernel with the running statistics (when the batchnorm is not
//! folded into the conv before it). Only the per-channel coefficients are computed here, in f64.

use super::channel::{ChannelFn, ChannelKind, ChannelSpec};
use super::codegen::{Codegen, Epilogue, FnHandle};
use super::exec::{BACKWARD, FORWARD, run_affine, run_moments};
use super::fusion::Fusion;
use super::layout::Layout;
use super::linear::LinearPlan;
use super::{JitModel, Step};
use crate::ir::{Node, NodeId, Params, Value};
use crate::ops::Op;
use ndarray::{ArrayD, IxDyn};
use std::time::Instant;

/// Positions per chunk of the moments: short f32 partial sums, added in f64 in chunk order.
/// Chunks never hold positions of two samples (each sample is run on its own), so a shard of
/// a data-parallel batch has exactly the partial sums one process has for its samples.
pub(crate) const CHUNK_POSITIONS: usize = 64;

/// One generated kernel and its spec.
pub(crate) struct ChannelCall {
    pub handle: FnHandle,
    pub f: Option<ChannelFn>,
    pub spec: ChannelSpec,
}

impl ChannelCall {
    pub(crate) fn new(cg: &mut Codegen, spec: ChannelSpec) -> Result<ChannelCall, String> {
        Ok(ChannelCall { handle: cg.channel(&spec)?, f: None, spec })
    }

    pub(crate) fn link(&mut self, cg: &Codegen) {
        self.f = Some(cg.channel_fn(self.handle));
    }
}

/// A batchnorm's training statistics gathered by the conv before it: its Winograd output
/// transform sums `y − s` and `(y − s)²` per tile and channel as it stores `y`
/// ([`super::winograd::WinoCall::run`]), so the batchnorm does not read `y` for them. Held by the
/// conv's plan; read (and the shift set) by the batchnorm's forward step.
pub(crate) struct FusedStats {
    /// Per tile, `[Σ(y − s) | Σ(y − s)²]` of `co4` lanes each, tiles in order (sample after
    /// sample): `sums_len` floats once allocated.
    pub sums: Vec<f32>,
    sums_len: usize,
    /// The shift `s` of the forward sums, `co4` lanes: the batchnorm's running mean in f32 (set
    /// by [`FusedStats::set_shift`] before the conv runs). Near the batch mean once training has
    /// run a while, and — a parameter — the same on every rank and after a resume. Empty for the
    /// backward sums, whose shift is the batchnorm's forward mean ([`NormPlan::coef`]).
    pub shift: Vec<f32>,
    shift_len: usize,
    tiles_per_sample: usize,
    co4: usize,
    /// Whether the last forward pass wrote `sums` (a training pass).
    pub fresh: bool,
}

impl FusedStats {
    /// `forward`: the statistics (with a shift of their own), else the backward sums.
    pub(crate) fn new(sums_len: usize, tiles_per_sample: usize, co4: usize, forward: bool) -> FusedStats {
        let shift_len = if forward { co4 } else { 0 };
        FusedStats { sums: vec![], sums_len, shift: vec![], shift_len, tiles_per_sample, co4, fresh: false }
    }

    /// Floats it holds once allocated.
    pub(crate) fn len(&self) -> usize {
        self.sums_len + self.shift_len
    }

    pub(crate) fn allocate(&mut self) {
        self.sums = vec![0.0; self.sums_len];
        self.shift = vec![0.0; self.shift_len];
    }

    /// Takes the shift from the running mean of the batchnorm `bn`.
    pub(crate) fn set_shift(&mut self, params: &Params, bn: &Node) {
        self.shift.fill(0.0);
        for (s, &m) in self.shift.iter_mut().zip(params[bn.params[2]].iter()) {
            *s = m as f32;
        }
    }

    /// The per-sample rows `[Σ(y − s) | Σ(y − s)²]` (`2·c` values each) of the last forward
    /// pass, each sample's tiles added in f64 in order — the rows [`NormPlan::moments`] gives.
    fn rows(&self, n: usize, c: usize) -> Vec<f64> {
        let tile_len = 2 * self.co4;
        let mut rows = vec![0.0f64; n * 2 * c];
        let per_sample = self.sums.chunks_exact(tile_len * self.tiles_per_sample);
        for (row, tiles) in rows.chunks_exact_mut(2 * c).zip(per_sample) {
            for tile in tiles.chunks_exact(tile_len) {
                for k in 0..c {
                    row[k] += f64::from(tile[k]);
                    row[c + k] += f64::from(tile[self.co4 + k]);
                }
            }
        }
        rows
    }
}

/// Sums around a shift `s` (the running mean) lose `(mean − s)² / σ²` times f32's precision to
/// cancellation: beyond this ratio the batch statistics are taken again in two passes (Σx, then
/// the moments around the mean).
const SHIFT_SLACK: f64 = 16.0;

/// The kernels of one batchnorm node and what its forward pass leaves for the backward pass.
pub(crate) struct NormPlan {
    pub layout: Layout,
    /// Statistics of x (shifted), the normalisation, the backward sums and the input gradient.
    pub stats: ChannelCall,
    pub normalise: ChannelCall,
    pub grad_sums: ChannelCall,
    pub grad_input: ChannelCall,
    /// `[shift | scale | c | d]` lanes for the kernels of the forward pass (and the backward
    /// sums); `grad_coef` the same for the input gradient.
    coef: Vec<f32>,
    grad_coef: Vec<f32>,
    partials: Vec<f32>,
    /// Of the last forward pass: the mean it normalised with (f64, and its f32 shift in
    /// `coef`), 1/σ, and whether these are batch statistics.
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    batch_stats: bool,
    /// Whether the last forward pass left the normalisation to the conv after it
    /// (`LinearPlan::norm_load`): its value buffer was not written.
    normalised_by_consumer: bool,
}

impl NormPlan {
    /// `activation`: the epilogue of an activation fused after the normalisation.
    pub(crate) fn new(cg: &mut Codegen, layout: Layout, activation: Epilogue) -> Result<NormPlan, String> {
        let spec = |kind, shift_p, has_q| ChannelSpec {
            kind,
            cs: layout.cs,
            shift_p,
            has_q,
            epilogue: Epilogue::None,
        };
        let normalise = ChannelSpec { epilogue: activation, ..spec(ChannelKind::Affine, true, false) };
        Ok(NormPlan {
            layout,
            stats: ChannelCall::new(cg, spec(ChannelKind::Moments, true, false))?,
            normalise: ChannelCall::new(cg, normalise)?,
            grad_sums: ChannelCall::new(cg, spec(ChannelKind::Moments, false, true))?,
            grad_input: ChannelCall::new(cg, spec(ChannelKind::Affine, false, true))?,
            coef: vec![],
            grad_coef: vec![],
            partials: vec![],
            mean: vec![],
            inv_std: vec![],
            batch_stats: false,
            normalised_by_consumer: false,
        })
    }

    /// The forward's `[shift | scale | c | d]` lanes (`cs` each): after a forward pass the
    /// shift is its f32 mean (the shift of the backward sums), and shift, scale and `d`
    /// normalise as it did (`(x − shift)·scale + d`).
    pub(crate) fn coef(&self) -> &[f32] {
        &self.coef
    }

    /// `y = act((x − shift)·scale + d)` with the coefficients as they are.
    fn normalise_into(&self, x: &[f32], y: &mut [f32]) {
        if let Some(f) = self.normalise.f {
            run_affine(f, &self.normalise.spec, self.positions(), x, x, &self.coef, y);
        }
    }

    pub(crate) fn link(&mut self, cg: &Codegen) {
        for call in [&mut self.stats, &mut self.normalise, &mut self.grad_sums, &mut self.grad_input] {
            call.link(cg);
        }
    }

    fn positions(&self) -> usize {
        self.layout.n * self.sample_positions()
    }

    fn sample_positions(&self) -> usize {
        self.layout.h * self.layout.w
    }

    /// Chunks of the moments over the whole batch (each sample's chunks, sample after sample).
    fn chunks(&self) -> usize {
        self.layout.n * self.sample_positions().div_ceil(CHUNK_POSITIONS)
    }

    /// Floats of the coefficients and the partial sums.
    pub(crate) fn len(&self) -> usize {
        let cs = self.layout.cs;
        8 * cs + self.chunks() * 2 * cs
    }

    /// The plan in words (the plan snapshots); `fused`: whether the conv before it sums the
    /// training statistics, and the conv after it the backward sums; `by_consumer`: whether
    /// the conv after it normalises as it loads, in training.
    pub(crate) fn describe(&self, (fused, grad_fused): (bool, bool), by_consumer: bool) -> String {
        let stats = if fused {
            "training statistics summed per tile by the conv before (around the running mean)".to_string()
        } else {
            format!("training statistics around the running mean in chunks of {CHUNK_POSITIONS}")
        };
        let grad_sums = if grad_fused { "summed per tile by the conv after" } else { "in chunks" };
        let normalise = if by_consumer {
            "normalise at inference (in training the conv after normalises as it loads)"
        } else {
            "normalise"
        };
        format!(
            "per-channel kernels over {} positions (cs {}): {stats}, {normalise}; backward: sums of dy and dy·(x − mean) {grad_sums}, input gradient; {} floats of coefficients and partial sums",
            self.layout.positions(),
            self.layout.cs,
            self.len()
        )
    }

    pub(crate) fn allocate(&mut self) {
        let cs = self.layout.cs;
        self.coef = vec![0.0; 4 * cs];
        self.grad_coef = vec![0.0; 4 * cs];
        self.partials = vec![0.0; self.chunks() * 2 * cs];
    }

    /// The f64 per-channel sums of the moments kernel `call`, per sample: `n` rows of
    /// `[Σ first | Σ second]` (`2·c` values), each sample's chunks added in f64 in order.
    fn moments(&mut self, which: usize, p: &[f32], q: &[f32]) -> Vec<f64> {
        let call = if which == 0 { &self.stats } else { &self.grad_sums };
        let (c, cs) = (self.layout.c, self.layout.cs);
        let per_sample = self.sample_positions();
        let chunks = per_sample.div_ceil(CHUNK_POSITIONS);
        let mut rows = vec![0.0f64; self.layout.n * 2 * c];
        for (sample, row) in rows.chunks_exact_mut(2 * c).enumerate() {
            let at = sample * per_sample * cs..(sample + 1) * per_sample * cs;
            let partials = &mut self.partials[sample * chunks * 2 * cs..(sample + 1) * chunks * 2 * cs];
            if let Some(f) = call.f {
                run_moments(
                    f,
                    &call.spec,
                    (per_sample, CHUNK_POSITIONS),
                    &p[at.clone()],
                    &q[at],
                    &self.coef,
                    partials,
                );
            }
            for part in partials.chunks(2 * cs) {
                for k in 0..c {
                    row[k] += f64::from(part[k]);
                    row[c + k] += f64::from(part[cs + k]);
                }
            }
        }
        rows
    }

    fn set_coef(&mut self, block: usize, values: impl Iterator<Item = f64>) {
        set_lanes(&mut self.coef, self.layout.cs, block, values);
    }
}

/// Block `block` of `cs` lanes of `coef` set to `values` in f32 (zeros past them).
fn set_lanes(coef: &mut [f32], cs: usize, block: usize, values: impl Iterator<Item = f64>) {
    let lanes = &mut coef[block * cs..(block + 1) * cs];
    lanes.fill(0.0);
    for (l, v) in lanes.iter_mut().zip(values) {
        *l = v as f32;
    }
}

fn vector(a: &ArrayD<f64>) -> impl Iterator<Item = f64> + '_ {
    a.iter().copied()
}

impl JitModel {
    /// Whether the conv reading batchnorm `bn` normalises its input as it loads it in training.
    pub(crate) fn consumer_normalises(&self, bn: NodeId) -> bool {
        let conv = self.nodes[bn.index()].fusion.norm_on_load_by;
        matches!(conv.map(|c| &self.nodes[c.index()].step), Some(Step::Linear(p)) if p.norm_load.is_some())
    }

    /// For a linear layer normalising the batchnorm before it as it loads
    /// (`LinearPlan::norm_load`, with `fusion` its fusions): that batchnorm's input and
    /// coefficients.
    pub(crate) fn norm_source(&self, plan: &LinearPlan, fusion: Fusion) -> Option<(&[f32], &[f32])> {
        plan.norm_load?;
        let bn = fusion.norm_on_load?;
        let Step::Norm(p) = &self.nodes[bn.index()].step else { return None };
        Some((self.buf(self.executed.node(bn).inputs[0]), p.coef()))
    }

    /// Value `v` when it is a batchnorm's (or the activation's fused into it) whose last
    /// forward pass left the normalisation to the conv after it: computed now by the
    /// batchnorm's normalisation kernel (the values that conv loaded, bit for bit).
    pub(crate) fn normalised_by_consumer(&self, v: Value) -> Option<Vec<f32>> {
        let Value::Node(n) = v else { return None };
        let bn = self.nodes[n.index()].fusion.into_linear.unwrap_or(n);
        let Step::Norm(p) = &self.nodes[bn.index()].step else { return None };
        if !p.normalised_by_consumer {
            return None;
        }
        let mut y = vec![0.0; p.layout.len()];
        p.normalise_into(self.buf(self.executed.node(bn).inputs[0]), &mut y);
        Some(y)
    }

    /// The per-sample rows the conv `conv` summed for this batchnorm in this pass — its
    /// statistics forward, its output-gradient sums `backward` — taken once (`FusedStats`).
    fn fused_rows(
        &mut self,
        conv: Option<NodeId>,
        backward: bool,
        (n, c): (usize, usize),
    ) -> Option<Vec<f64>> {
        let Some(Step::Linear(p)) = conv.map(|p| &mut self.nodes[p.index()].step) else { return None };
        let stats = if backward { p.grad_stats.as_mut() } else { p.stats.as_mut() }?;
        if !stats.fresh {
            return None;
        }
        stats.fresh = false;
        Some(stats.rows(n, c))
    }

    /// Batchnorm forward into the node's value: batch statistics (and the running-statistics
    /// update, as the interpreter does) in training, the running statistics at inference.
    pub(crate) fn forward_norm(
        &mut self,
        id: NodeId,
        node: &Node,
        plan: &mut NormPlan,
        params: &mut Params,
        training: bool,
    ) {
        let Op::BatchNorm(bn) = &node.op else { unreachable!("a norm plan is a batchnorm's") };
        let c = plan.layout.c;
        let mut kernel_s = 0.0;
        let (mean, var) = if training {
            // Every sum is per sample, added in global sample order (over the ranks in
            // data-parallel training): one process and any number of ranks take the same
            // shift and add the same numbers in the same order.
            let sync = crate::ops::batchnorm::current_sync();
            let batch_sums = |rows: &[f64], k: usize| match &sync {
                Some(sync) => sync.sum_samples_forward(rows, k),
                None => crate::ops::batchnorm::sum_rows(rows, k),
            };
            let mut n = plan.positions() as f64;
            if let Some(sync) = &sync {
                let mut count = [n];
                sync.sum_forward(&mut count);
                n = count[0];
            }
            // One pass: the sums around the running mean, gathered by the conv before as it
            // stored x (`FusedStats`), else by the moments kernel.
            let shift: Vec<f64> = params[node.params[2]].iter().map(|&m| f64::from(m as f32)).collect();
            let fused = self.fused_rows(self.nodes[id.index()].fusion.stats_from, false, (plan.layout.n, c));
            let rows = match fused {
                Some(rows) => rows,
                None => {
                    plan.set_coef(0, shift.iter().copied());
                    let t = Instant::now();
                    let rows = plan.moments(0, self.buf(node.inputs[0]), self.buf(node.inputs[0]));
                    kernel_s += t.elapsed().as_secs_f64();
                    rows
                }
            };
            let sums = batch_sums(&rows, 2 * c);
            let mut mean: Vec<f64> = (0..c).map(|k| shift[k] + sums[k] / n).collect();
            let mut var: Vec<f64> = (0..c)
                .map(|k| {
                    let d = sums[k] / n;
                    (sums[c + k] / n - d * d).max(0.0)
                })
                .collect();
            if (0..c).any(|k| (mean[k] - shift[k]).powi(2) > SHIFT_SLACK * var[k]) {
                // The mean moved far from the shift (the first step, or a jump): two passes, Σx
                // (no shift), then the moments around the mean (its f32 rounding as the shift).
                let x = self.buf(node.inputs[0]);
                plan.set_coef(0, std::iter::empty());
                let t = Instant::now();
                let rows = plan.moments(0, x, x);
                kernel_s += t.elapsed().as_secs_f64();
                let sum_x: Vec<f64> = rows.chunks_exact(2 * c).flat_map(|r| r[..c].to_vec()).collect();
                mean = batch_sums(&sum_x, c).iter().map(|s| s / n).collect();
                plan.set_coef(0, mean.iter().copied());
                let shift: Vec<f64> = plan.coef[..c].iter().map(|&v| f64::from(v)).collect();
                let t = Instant::now();
                let rows = plan.moments(0, x, x);
                kernel_s += t.elapsed().as_secs_f64();
                let sums = batch_sums(&rows, 2 * c);
                var = (0..c)
                    .map(|k| {
                        let d = mean[k] - shift[k];
                        ((sums[c + k] - 2.0 * d * sums[k] + n * d * d) / n).max(0.0)
                    })
                    .collect();
            }
            let m = bn.momentum;
            let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
            let (rm, rv) = (node.params[2], node.params[3]);
            for k in 0..c {
                params[rm][k] = params[rm][k] * (1.0 - m) + mean[k] * m;
                params[rv][k] = params[rv][k] * (1.0 - m) + var[k] * unbiased * m;
            }
            (mean, var)
        } else {
            (vector(&params[node.params[2]]).collect(), vector(&params[node.params[3]]).collect())
        };
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + bn.eps).sqrt()).collect();
        let gamma = &params[node.params[0]];
        plan.set_coef(0, mean.iter().copied());
        plan.set_coef(1, gamma.iter().zip(&inv_std).map(|(g, s)| g * s));
        plan.set_coef(2, std::iter::empty());
        // y = (x − shift)·γ/σ + β + (shift − mean)·γ/σ, the last term the f32 rounding of the mean.
        let shift: Vec<f64> = plan.coef[..c].iter().map(|&v| f64::from(v)).collect();
        let beta = &params[node.params[1]];
        let d: Vec<f64> = (0..c).map(|k| beta[k] + (shift[k] - mean[k]) * gamma[k] * inv_std[k]).collect();
        plan.set_coef(3, d.into_iter());
        // Into the value of the activation fused after it, when there is one — unless, in
        // training, the conv after it normalises as it loads x.
        let by_consumer = training && self.consumer_normalises(id);
        if !by_consumer {
            let dst = self.nodes[id.index()].fusion.activation.unwrap_or(id).index();
            let mut y = std::mem::take(&mut self.nodes[dst].value);
            let t = Instant::now();
            plan.normalise_into(self.buf(node.inputs[0]), &mut y);
            kernel_s += t.elapsed().as_secs_f64();
            self.nodes[dst].value = y;
        }
        plan.normalised_by_consumer = by_consumer;
        plan.mean = mean;
        plan.inv_std = inv_std;
        plan.batch_stats = training;
        self.profile_kernel(id, FORWARD, kernel_s);
    }

    /// Batchnorm backward: γ and β gradients from `Σ dy` and `Σ dy·(x − mean)`, then
    /// `dx = γ/σ·(dy − Σdy/n − x̂·Σ(dy·x̂)/n)` (batch statistics) or `γ/σ·dy` (running ones).
    pub(crate) fn backward_norm(
        &mut self,
        id: NodeId,
        node: &Node,
        plan: &mut NormPlan,
        pgrads: &mut Params,
    ) {
        let c = plan.layout.c;
        let dy = std::mem::take(self.grad_buf(id));
        let xv = node.inputs[0];
        // The shift lanes still hold the f32 mean of the forward pass.
        let shift: Vec<f64> = plan.coef[..c].iter().map(|&v| f64::from(v)).collect();
        // Σ dy and Σ dy·(x − shift) per sample: summed by the conv after as it stored dy
        // (`FusedStats`), else by the moments kernel.
        let fused = self.fused_rows(self.nodes[id.index()].fusion.grad_stats_from, true, (plan.layout.n, c));
        let mut kernel_s = 0.0;
        let rows = match fused {
            Some(rows) => rows,
            None => {
                let t = Instant::now();
                let rows = plan.moments(1, &dy, self.buf(xv));
                kernel_s += t.elapsed().as_secs_f64();
                rows
            }
        };
        // Σ dy·(x − mean) from the sums around the f32 shift.
        let around_mean = |sums: &[f64]| -> (Vec<f64>, Vec<f64>) {
            let s1 = sums[..c].to_vec();
            let s2 = (0..c).map(|k| sums[c + k] - (plan.mean[k] - shift[k]) * s1[k]).collect();
            (s1, s2)
        };
        // The parameter gradients are this shard's (the training loop adds them across ranks).
        let (s1, s2) = around_mean(&crate::ops::batchnorm::sum_rows(&rows, 2 * c));
        pgrads[node.params[0]] =
            ArrayD::from_shape_vec(IxDyn(&[c]), (0..c).map(|k| s2[k] * plan.inv_std[k]).collect())
                .expect("[C]");
        pgrads[node.params[1]] = ArrayD::from_shape_vec(IxDyn(&[c]), s1.clone()).expect("[C]");
        if let Value::Node(_) = xv {
            let mut n = plan.positions() as f64;
            // Data-parallel training: dx needs Σdy and Σdy·x̂ over the global batch, per sample
            // in global sample order (the bits one process has).
            let (mut s1, mut s2) = (s1, s2);
            if plan.batch_stats
                && let Some(sync) = crate::ops::batchnorm::current_sync()
            {
                let mut count = [n];
                sync.sum_forward(&mut count);
                n = count[0];
                (s1, s2) = around_mean(&sync.sum_samples_backward(&rows, 2 * c));
            }
            let cs = plan.layout.cs;
            let scale: Vec<f64> = plan.coef[cs..cs + c].iter().map(|&v| f64::from(v)).collect();
            let (cc, d): (Vec<f64>, Vec<f64>) = if plan.batch_stats {
                (0..c)
                    .map(|k| {
                        let ck = -scale[k] * plan.inv_std[k].powi(2) * s2[k] / n;
                        (ck, -scale[k] * s1[k] / n - ck * (plan.mean[k] - shift[k]))
                    })
                    .unzip()
            } else {
                (vec![0.0; c], vec![0.0; c])
            };
            // dx's own coefficients: the forward's stay as they normalised (the conv after may
            // have normalised as it loaded, and `value` recomputes from them).
            plan.grad_coef.copy_from_slice(&plan.coef);
            set_lanes(&mut plan.grad_coef, cs, 2, cc.into_iter());
            set_lanes(&mut plan.grad_coef, cs, 3, d.into_iter());
            let positions = plan.positions();
            self.emit_grad(xv, |me, dx| {
                let t = Instant::now();
                if let Some(f) = plan.grad_input.f {
                    run_affine(f, &plan.grad_input.spec, positions, &dy, me.buf(xv), &plan.grad_coef, dx);
                }
                kernel_s += t.elapsed().as_secs_f64();
            });
        }
        *self.grad_buf(id) = dy;
        self.profile_kernel(id, BACKWARD, kernel_s);
    }
}

/// The step of a `Lowering::Channel` op: element-wise, or a normalisation.
/// `activation`: the epilogue of an activation fused after a batchnorm.
pub(crate) fn plan(
    cg: &mut Codegen,
    node: &Node,
    layout: Layout,
    activation: Epilogue,
) -> Result<Step, String> {
    if let Some(step) = super::elementwise::plan(cg, node, layout)? {
        return Ok(step);
    }
    if let Some(step) = super::groupnorm::plan(cg, node, layout)? {
        return Ok(step);
    }
    match &node.op {
        Op::BatchNorm(_) => Ok(Step::Norm(Box::new(NormPlan::new(cg, layout, activation)?))),
        other => Err(format!("`{}` has no per-channel kernels", other.kind())),
    }
}

//! The plan of one linear node (conv, upconv, dense): its three generated kernels (forward,
//! input gradient, weight gradient), where each reads its input from, its scratch buffers, and
//! its weights packed into the kernels' layouts. Built by [`super::lower`], run by
//! [`super::exec`].

use super::codegen::{self, CorrFn, CorrSpec, GradWFn, GradWSpec};
use super::gradw_finish::GradWFinish;
use super::native::{Pixel, Scatter};
use super::norm::FusedStats;
use super::pack::WeightPack;
use super::winograd::WinoCall;
use super::winograd_emit::Normalise;
use super::winograd_gradw::WinoGradW;
use crate::ir::{Node, Params};
use crate::ops::Op;
use rayon::prelude::*;

/// Where a kernel reads its `x` from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Src {
    /// The node's input value as it is.
    Value,
    /// The node's scratch buffer `i`, filled by a scatter first.
    Scratch(usize),
}

/// Packing of a `[A, B, k…]` weight into the kernels' `[reduced][tap][lanes rounded to 4]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packing {
    /// Whether the reduced channel is axis 0 (else axis 1).
    pub reduce_axis0: bool,
    /// Taps reversed (for input gradients and transposed convolutions).
    pub flip: bool,
}

/// One correlation kernel and the weight packing it reads.
pub(crate) struct CorrCall {
    /// None when a Winograd call replaces this direction: its direct kernel is never run, so
    /// none is generated (compile time); `spec` still describes it for the plan.
    pub handle: Option<codegen::FnHandle>,
    pub f: Option<CorrFn>,
    pub spec: CorrSpec,
    pub pack: Packing,
    /// Lanes per (reduced channel, tap) row of the packed weights (`spec.geo.co4` except for
    /// pixel-shuffle upconvs, whose output lanes are taps × channels).
    pub pack_lanes: usize,
}

/// How a linear layer maps onto the kernels, which decides where the weight-gradient kernel
/// reads its two operands and how its sums unpack into the weight's `[a, b, taps]`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LinearKind {
    /// conv and dense (weight `[out, in, taps]`): the weight gradient correlates the forward's
    /// (padded) input with the output gradient.
    Direct,
    /// upconv through zero-interleaving (weight `[in, out, taps]`): the weight gradient
    /// correlates the (padded) output gradient with the layer's input, which plays `dy`.
    Transposed,
    /// upconv with kernel = stride and no padding: a 1×1 correlation to taps × channels lanes
    /// and a depth-to-space copy (see [`Pixel`]).
    PixelShuffle(Pixel),
}

pub(crate) struct LinearPlan {
    pub kind: LinearKind,
    /// Weight `[a, b, taps]` and whether there is a bias.
    pub a: usize,
    pub b: usize,
    pub taps: usize,
    pub bias: bool,
    pub fwd: CorrCall,
    /// The direct forward kernel with the folded batchnorm's activation as its epilogue
    /// (`Fusion::folded_epilogue`), run at inference.
    pub fwd_folded: Option<CorrCall>,
    pub fwd_src: Src,
    pub fwd_scatter: Option<(usize, Scatter)>,
    /// The zero-padded x of the weight gradient when the forward does not read it (a Winograd
    /// forward reads x in place): made in the backward pass, into transient scratch.
    pub gradw_scatter: Option<(usize, Scatter)>,
    /// Rows the forward kernel is called on (`n·ho + oh`).
    pub fwd_rows: usize,
    pub bwd_in: CorrCall,
    pub bwd_src: Src,
    pub bwd_scatter: Option<(usize, Scatter)>,
    pub bwd_rows: usize,
    /// None when the Winograd weight gradient replaces the direct kernel (never generated).
    pub gradw_handle: Option<codegen::FnHandle>,
    pub gradw: Option<GradWFn>,
    pub gradw_spec: GradWSpec,
    /// Weight gradient: the `x` operand (the forward's prepared input for conv/dense, the
    /// padded output gradient for upconv).
    pub gradw_x: Src,
    /// Row chunks of the weight-gradient reduction (fixed by the shapes, not the thread count).
    pub gradw_chunk_rows: usize,
    pub gradw_rows: usize,
    /// Output rows per bias-gradient chunk.
    pub bias_chunk_rows: usize,
    pub scratch: Vec<Vec<f32>>,
    pub scratch_len: Vec<usize>,
    /// The padded forward input of a direct conv lives until the backward pass reads it; every
    /// other scratch is transient, borrowed from a pool shared by all nodes for one step.
    pub scratch_persistent: Vec<bool>,
    /// The generated packings of the weight into `packed_fwd` and `packed_bwd` (the taps, or a
    /// Winograd direction's transformed filter).
    pub pack_fwd: WeightPack,
    pub pack_bwd: WeightPack,
    pub packed_fwd: Vec<f32>,
    pub packed_bwd: Vec<f32>,
    /// Whether `packed_bwd` holds the parameters the last forward pass packed.
    pub bwd_packed: bool,
    pub packed_bias: Vec<f32>,
    /// Weight-gradient partial sums: borrowed from the pool during the backward step.
    pub partials: Vec<f32>,
    pub partials_len: usize,
    /// The forward and input-gradient correlations as Winograd, when chosen: `packed_fwd` /
    /// `packed_bwd` then hold the transformed filter instead of the taps.
    pub wino_fwd: Option<WinoCall>,
    pub wino_bwd: Option<WinoCall>,
    /// The weight gradient as Winograd, when chosen (conv only): `gradw_spec` then describes
    /// the direct kernel it replaces (its bias sums come from the output-gradient transform).
    pub wino_gradw: Option<WinoGradW>,
    /// The generated finish: the chunks' partial sums (of the direct or Winograd weight
    /// gradient) into the f64 gradient in the weight's layout.
    pub finish: GradWFinish,
    /// The training statistics of the batchnorm after this conv, gathered by its Winograd
    /// forward (`Fusion::stats_into`).
    pub stats: Option<FusedStats>,
    /// The backward sums of the batchnorm before this conv, gathered by its Winograd input
    /// gradient (`Fusion::grad_stats_into`).
    pub grad_stats: Option<FusedStats>,
    /// Training: the batchnorm before the layer (`Fusion::norm_on_load`), normalised (and
    /// activated) by the forward and weight-gradient input transforms as they load its input,
    /// its activation's derivative taken from that input by the input gradient's output
    /// transform; so the batchnorm stores no normalised copy. Used by training passes only
    /// (inference reads the batchnorm's value); `None` unless all three directions run Winograd.
    pub norm_load: Option<Normalise>,
}

impl LinearPlan {
    /// The algorithms of the forward, input-gradient and weight-gradient passes, for the
    /// profile: `direct`, `F(4x4, 3x3)` or `F(2x2, 3x3)` each.
    pub fn algorithms(&self) -> String {
        let name = |w: &Option<WinoCall>| w.as_ref().map_or("direct", |w| w.spec.tile.name());
        let gradw = self.wino_gradw.as_ref().map_or("direct", |w| w.spec.tile.name());
        format!("{} / {} / {gradw}", name(&self.wino_fwd), name(&self.wino_bwd))
    }

    /// The pixel shuffle of a pixel-shuffle upconv.
    pub fn pixel(&self) -> Option<Pixel> {
        match self.kind {
            LinearKind::PixelShuffle(px) => Some(px),
            _ => None,
        }
    }

    /// Packs the current parameters into the kernels' layouts — the input gradient's too when
    /// `backward` (a training pass); else it is packed by [`Self::pack_backward`] if a backward
    /// pass comes (inference never needs it: for a Winograd layer it is a second filter
    /// transform). The seconds spent in the generated packing kernels (the bias, a few floats,
    /// is copied natively).
    pub fn pack(&mut self, params: &Params, node: &Node, backward: bool) -> f64 {
        let w = params[node.params[0]].as_standard_layout();
        let w = w.as_slice().expect("standard layout");
        let started = std::time::Instant::now();
        if backward {
            // The two directions' layouts (and filter transforms) at once.
            rayon::join(
                || self.pack_fwd.run(w, &mut self.packed_fwd),
                || self.pack_bwd.run(w, &mut self.packed_bwd),
            );
        } else {
            self.pack_fwd.run(w, &mut self.packed_fwd);
        }
        self.bwd_packed = backward;
        let kernel_s = started.elapsed().as_secs_f64();
        if !self.bias {
            self.packed_bias.fill(0.0);
        }
        if self.bias {
            let b = &params[node.params[1]];
            // Pixel-shuffle upconvs repeat the bias for every tap's lanes.
            let lanes = self.fwd.pack_lanes;
            for part in self.packed_bias.chunks_mut(lanes) {
                for (d, &s) in part.iter_mut().zip(b.iter()) {
                    *d = s as f32;
                }
            }
        }
        kernel_s
    }

    /// Packs the input gradient's layout if the last forward pass did not (an inference pass
    /// followed by a backward one); the seconds it took.
    pub fn pack_backward(&mut self, params: &Params, node: &Node) -> f64 {
        if self.bwd_packed {
            return 0.0;
        }
        let w = params[node.params[0]].as_standard_layout();
        let w = w.as_slice().expect("standard layout");
        let started = std::time::Instant::now();
        self.pack_bwd.run(w, &mut self.packed_bwd);
        self.bwd_packed = true;
        started.elapsed().as_secs_f64()
    }

    /// Folds an inference-mode batchnorm after this conv/dense into the packed forward weights
    /// and bias: y = γ·(x − μ)/√(σ² + ε) + β per output channel.
    pub fn fold_batchnorm(&mut self, params: &Params, bn_node: &Node) {
        let Op::BatchNorm(bn) = &bn_node.op else { return };
        let p = |k: usize| &params[bn_node.params[k]];
        let lanes = self.fwd.pack_lanes;
        let scale: Vec<f64> = (0..self.a).map(|c| p(0)[c] / (p(3)[c] + bn.eps).sqrt()).collect();
        for (c, &sc) in scale.iter().enumerate() {
            let b = f64::from(self.packed_bias[c]);
            self.packed_bias[c] = ((b - p(2)[c]) * sc + p(1)[c]) as f32;
        }
        // Every row of output lanes scaled at once (rows in parallel, lanes contiguous).
        self.packed_fwd.par_chunks_mut(lanes.max(1) * 64).for_each(|rows| {
            for row in rows.chunks_mut(lanes.max(1)) {
                for (v, &sc) in row.iter_mut().zip(&scale) {
                    *v = (f64::from(*v) * sc) as f32;
                }
            }
        });
    }

    /// Borrows transient scratch `k` from the pool, unless it is persistent.
    pub fn lend(&mut self, k: usize, pool: &mut Vec<Vec<f32>>) {
        if self.scratch_persistent[k] {
            return;
        }
        // Not zeroed: every user overwrites it whole (scatters zero what they do not copy).
        let mut b = pool.pop().unwrap_or_default();
        b.resize(self.scratch_len[k], 0.0);
        self.scratch[k] = b;
    }

    /// Borrows the weight-gradient partial sums from the pool.
    pub fn lend_partials(&mut self, pool: &mut Vec<Vec<f32>>) {
        let mut b = pool.pop().unwrap_or_default();
        b.resize(self.partials_len, 0.0);
        self.partials = b;
    }

    /// Returns every borrowed buffer to the pool.
    pub fn give_back(&mut self, pool: &mut Vec<Vec<f32>>) {
        let persistent = &self.scratch_persistent;
        for (k, b) in self.scratch.iter_mut().enumerate() {
            if !persistent[k] && !b.is_empty() {
                pool.push(std::mem::take(b));
            }
        }
        if !self.partials.is_empty() {
            pool.push(std::mem::take(&mut self.partials));
        }
    }

    /// Floats of the persistent scratch (the padded forward inputs).
    /// Floats kept from step to step: the persistent scratch and the fused statistics.
    pub fn persistent_len(&self) -> usize {
        let stats = self.stats.iter().chain(&self.grad_stats).map(|s| s.len()).sum::<usize>();
        self.scratch_len
            .iter()
            .zip(&self.scratch_persistent)
            .filter(|(_, p)| **p)
            .map(|(l, _)| l)
            .sum::<usize>()
            + stats
    }

    pub fn allocate_persistent(&mut self) {
        for (k, b) in self.scratch.iter_mut().enumerate() {
            if self.scratch_persistent[k] {
                *b = vec![0.0; self.scratch_len[k]];
            }
        }
        self.stats.iter_mut().chain(&mut self.grad_stats).for_each(|s| s.allocate());
    }

    /// Floats of the packed weights (forward and input-gradient layouts) and bias.
    pub fn packed_len(&self) -> usize {
        self.pack_fwd.spec.out_len() + self.pack_bwd.spec.out_len() + self.packed_bias.len()
    }

    /// Floats this plan borrows at most at once: (buffers, largest).
    pub fn transient(&self) -> (usize, usize) {
        let lens =
            self.scratch_len.iter().zip(&self.scratch_persistent).filter(|(_, p)| !**p).map(|(l, _)| *l);
        (lens.clone().count() + 1, lens.chain([self.partials_len]).max().unwrap_or(0))
    }
}

/// The native packing the generated one ([`super::pack`]) replaced, kept as its test oracle:
/// `w[a][b][taps]` (f64) into `out[r][tap][lane]` (f32): `r` the reduced channel, `lane` the
/// other one (lanes beyond it zero), taps flipped when the packing says; rows in parallel.
#[cfg(test)]
pub(crate) fn pack_weight(
    w: &[f64],
    a: usize,
    b: usize,
    taps: usize,
    p: Packing,
    lanes: usize,
    out: &mut Vec<f32>,
) {
    let red = if p.reduce_axis0 { a } else { b };
    out.clear();
    out.resize(red * taps * lanes, 0.0);
    out.par_chunks_mut((taps * lanes).max(1)).enumerate().for_each(|(r, row)| {
        let other = if p.reduce_axis0 { b } else { a };
        debug_assert!(other <= lanes, "every packing has a lane per channel");
        for l in 0..other.min(lanes) {
            let (ia, ib) = if p.reduce_axis0 { (r, l) } else { (l, r) };
            for t in 0..taps {
                let tp = if p.flip { taps - 1 - t } else { t };
                row[tp * lanes + l] = w[(ia * b + ib) * taps + t] as f32;
            }
        }
    });
}

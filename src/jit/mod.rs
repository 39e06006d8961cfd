//! The `jit` backend: an [`ir::Graph`] at one batch size compiled into Cranelift kernels,
//! specialised on every shape, run on f32 NHWC buffers planned once and reused every step.
//!
//! - conv, upconv and dense (forward, input-gradient, weight-gradient) are generated code: two
//!   kernel families in [`codegen`] (a strided dilated correlation with fused bias + activation,
//!   and a weight-gradient reduction), register-blocked on f32x4 with FMA;
//! - `conv/upconv/dense -> relu|leaky_relu` is one kernel forward; backward the activation's
//!   derivative is applied once to the output gradient before both gradient kernels read it;
//! - maxpool, concat, add, sub, flatten and standalone relu/leaky_relu are native loops on NHWC;
//! - the remaining ops (avg pooling, upsample, batchnorm, dropout, sigmoid, tanh, softmax) run the
//!   interpreter's own per-node step on converted copies — correct, not fast; see ARCHITECTURE.md.
//!
//! Layout: `[N, H, W, C]` with the channel stride rounded up to 4 (`[N, C, N]` 1-D values have
//! H = 1; flat `[N, F]` values are `[N, 1, 1, F]`). Lanes past C hold don't-care values that
//! nothing reads. Inputs and outputs are converted at the graph's edges.

pub mod codegen;

use crate::check::program::{LossKind, ValueRef};
use crate::interp::{self, Cache};
use crate::ir::{Graph, Node, Params};
use crate::ops::activation::Activation;
use crate::ops::pool::PoolKind;
use crate::ops::{Lowering, Op};
use codegen::{Blocking, Codegen, CorrFn, CorrSpec, Epilogue, GradWFn, GradWSpec};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::time::Instant;

/// Assigns gradient buffers by liveness. In the backward pass (nodes in decreasing order) the
/// gradient of node `j` is first written by its last consumer (or, for an output, at the
/// start) and last read by node `j` itself; two gradients whose intervals do not overlap share a
/// buffer. A linear node fused with the activation after it inherits that activation's buffer
/// (the derivative is applied in place). Greedy in order of first write: a buffer is reused once
/// its previous owner's node has run.
fn plan_gradient_buffers(graph: &Graph, layouts: &[Layout], fused_into: &[Option<usize>]) -> Vec<usize> {
    let nn = graph.nodes.len();
    let mut first_write = vec![0usize; nn];
    for (c, node) in graph.nodes.iter().enumerate() {
        for v in &node.inputs {
            if let ValueRef::Layer(j) = *v {
                first_write[j] = first_write[j].max(c);
            }
        }
    }
    for v in &graph.outputs {
        if let ValueRef::Layer(j) = *v {
            first_write[j] = nn;
        }
    }
    // (buffer length, node whose gradient last used it)
    let mut buffers: Vec<(usize, usize)> = vec![];
    let mut slot = vec![usize::MAX; nn];
    let mut order: Vec<usize> = (0..nn).collect();
    order.sort_by(|a, b| first_write[*b].cmp(&first_write[*a]).then(b.cmp(a)));
    for j in order {
        if fused_into[j].is_some() {
            // Assigned with its activation (whose gradient is written earlier in backward time).
            continue;
        }
        let len = layouts[j].len();
        let last = fused_owner(j, fused_into);
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
        for (p, a) in fused_into.iter().enumerate() {
            if *a == Some(j) {
                slot[p] = k;
            }
        }
    }
    slot
}

/// The node after whose backward step a gradient buffer is free: the activation's linear
/// producer when the activation is fused (it reads the same buffer), else the node itself.
fn fused_owner(j: usize, fused_into: &[Option<usize>]) -> usize {
    fused_into.iter().position(|a| *a == Some(j)).unwrap_or(j)
}

/// Whether an upconv writes disjoint `kernel`-sized blocks (kernel = stride, no padding), so it
/// runs as a 1×1 correlation plus a depth-to-space copy.
fn is_pixel(c: &crate::ops::conv::UpConv) -> bool {
    window2(&c.kernel, 1) == window2(&c.stride, 1) && window2(&c.pad, 0) == [0, 0]
}

/// `MemAvailable` of /proc/meminfo in bytes, where there is one.
fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Elements per task of element-wise parallel loops.
const CHUNK: usize = 1 << 14;

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
        for (d, s) in d.iter_mut().zip(s) {
            *d += s;
        }
    });
}

fn round4(c: usize) -> usize {
    c.div_ceil(4) * 4
}

/// Shape of a value in NHWC with channel stride `cs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub cs: usize,
}

impl Layout {
    /// From a batched shape `[B, C, H, W]`, `[B, C, N]` or `[B, F]`.
    fn of(shape: &[usize]) -> Layout {
        let (n, c, h, w) = match shape.len() {
            4 => (shape[0], shape[1], shape[2], shape[3]),
            3 => (shape[0], shape[1], 1, shape[2]),
            2 => (shape[0], shape[1], 1, 1),
            _ => (shape[0], 1, 1, 1),
        };
        Layout { n, h, w, c, cs: round4(c) }
    }
    fn len(&self) -> usize {
        self.n * self.h * self.w * self.cs
    }
    fn rows(&self) -> usize {
        self.n * self.h
    }
}

/// Copies `src` into a zeroed `dst`, sample `o` along each spatial axis landing at `o·s + off`
/// (positions outside `dst` dropped). Zero padding (s = 1, off = pad) and the zero-interleaving
/// of transposed convolutions are both this.
#[derive(Clone, Copy, Debug)]
struct Scatter {
    src: Layout,
    dst: Layout,
    s: [usize; 2],
    off: [i64; 2],
}

impl Scatter {
    /// Also zeroes every destination element it does not write, so `dst` may hold anything
    /// (transient buffers are lent dirty).
    fn run(&self, src: &[f32], dst: &mut [f32]) {
        let (sl, dl) = (self.src, self.dst);
        let dst_sample = dl.h * dl.w * dl.cs;
        let rows_only = self.s == [1, 1] && sl.cs == dl.cs;
        dst.par_chunks_mut(dst_sample).enumerate().for_each(|(n, d)| {
            if rows_only {
                // Each destination row: the source row that lands there (if any), zeros around.
                let lo = (-self.off[1]).max(0) as usize;
                let hi = (sl.w as i64).min(dl.w as i64 - self.off[1]).max(lo as i64) as usize;
                for jh in 0..dl.h {
                    let row = &mut d[jh * dl.w * dl.cs..(jh + 1) * dl.w * dl.cs];
                    let oh = jh as i64 - self.off[0];
                    if oh < 0 || oh >= sl.h as i64 || hi <= lo {
                        row.fill(0.0);
                        continue;
                    }
                    let (jl, jr) = ((lo as i64 + self.off[1]) as usize, (hi as i64 + self.off[1]) as usize);
                    let si = ((n * sl.h + oh as usize) * sl.w + lo) * sl.cs;
                    row[..jl * dl.cs].fill(0.0);
                    row[jl * dl.cs..jr * dl.cs].copy_from_slice(&src[si..si + (hi - lo) * sl.cs]);
                    row[jr * dl.cs..].fill(0.0);
                }
                return;
            }
            d.fill(0.0);
            for oh in 0..sl.h {
                let jh = oh as i64 * self.s[0] as i64 + self.off[0];
                if jh < 0 || jh >= dl.h as i64 {
                    continue;
                }
                for ow in 0..sl.w {
                    let jw = ow as i64 * self.s[1] as i64 + self.off[1];
                    if jw < 0 || jw >= dl.w as i64 {
                        continue;
                    }
                    let si = ((n * sl.h + oh) * sl.w + ow) * sl.cs;
                    let di = (jh as usize * dl.w + jw as usize) * dl.cs;
                    d[di..di + sl.c].copy_from_slice(&src[si..si + sl.c]);
                }
            }
        });
    }
}

/// Where a kernel reads its `x` from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// The node's input value as it is.
    Value,
    /// The node's scratch buffer `i`, filled by a scatter first.
    Scratch(usize),
}

/// Packing of a `[A, B, k…]` weight into the kernels' `[reduced][tap][lanes rounded to 4]`.
#[derive(Clone, Copy, Debug)]
struct Packing {
    /// Whether the reduced channel is axis 0 (else axis 1).
    reduce_axis0: bool,
    /// Taps reversed (for input gradients and transposed convolutions).
    flip: bool,
}

struct CorrCall {
    handle: codegen::FnHandle,
    f: Option<CorrFn>,
    spec: CorrSpec,
    pack: Packing,
    /// Lanes per (reduced channel, tap) row of the packed weights (`spec.co4` except for
    /// pixel-shuffle upconvs, whose output lanes are taps × channels).
    pack_lanes: usize,
}

/// An upconv whose kernel equals its stride and has no padding writes each input pixel's
/// `k₀×k₁` output block independently: a 1×1 correlation to taps × channels lanes, then a
/// depth-to-space copy (and the reverse backward). No multiply touches an interleaved zero.
#[derive(Clone, Copy, Debug)]
struct Pixel {
    x: Layout,
    y: Layout,
    k: [usize; 2],
    /// Output channels rounded to 4 (lanes per tap in the forward).
    co4: usize,
    t_fwd: usize,
    t_bwd: usize,
    /// Channel stride of the space-to-depth dy: round4(out · taps).
    cs_bwd: usize,
}

impl Pixel {
    /// `t[n,h,w,(tap,co)]` → `y[n, h·k₀+kh, w·k₁+kw, co]`.
    /// Into `y` of layout `yl` (this upconv's own value, or the concat it feeds) at channel `off`.
    fn depth_to_space(&self, t: &[f32], y: &mut [f32], yl: Layout, off: usize) {
        let (x, k, co4) = (self.x, self.k, self.co4);
        let taps = k[0] * k[1];
        y.par_chunks_mut(yl.h * yl.w * yl.cs).zip(t.par_chunks(x.h * x.w * taps * co4)).for_each(|(y, t)| {
            for h in 0..x.h {
                for w in 0..x.w {
                    for kh in 0..k[0] {
                        for kw in 0..k[1] {
                            let src = ((h * x.w + w) * taps + kh * k[1] + kw) * co4;
                            let dst = ((h * k[0] + kh) * yl.w + w * k[1] + kw) * yl.cs + off;
                            y[dst..dst + co4].copy_from_slice(&t[src..src + co4]);
                        }
                    }
                }
            }
        });
    }

    /// `dy[n, h·k₀+kh, w·k₁+kw, co]` → `t[n,h,w, co·taps + tap]` (lanes past out·taps zero).
    fn space_to_depth(&self, dy: &[f32], t: &mut [f32]) {
        let (x, yl, k, cs) = (self.x, self.y, self.k, self.cs_bwd);
        let taps = k[0] * k[1];
        t.par_chunks_mut(x.h * x.w * cs).zip(dy.par_chunks(yl.h * yl.w * yl.cs)).for_each(|(t, dy)| {
            for h in 0..x.h {
                for w in 0..x.w {
                    let o = (h * x.w + w) * cs;
                    for kh in 0..k[0] {
                        for kw in 0..k[1] {
                            let src = ((h * k[0] + kh) * yl.w + w * k[1] + kw) * yl.cs;
                            for co in 0..yl.c {
                                t[o + co * taps + kh * k[1] + kw] = dy[src + co];
                            }
                        }
                    }
                    t[o + yl.c * taps..o + cs].fill(0.0);
                }
            }
        });
    }
}

struct LinearPlan {
    a: usize,
    b: usize,
    taps: usize,
    bias: bool,
    fwd: CorrCall,
    fwd_src: Src,
    fwd_scatter: Option<(usize, Scatter)>,
    bwd_in: CorrCall,
    bwd_src: Src,
    bwd_scatter: Option<(usize, Scatter)>,
    gradw_handle: codegen::FnHandle,
    gradw: Option<GradWFn>,
    gradw_spec: GradWSpec,
    /// Weight gradient: `x` buffer (forward's prepared input for conv/dense, the padded output
    /// gradient for upconv) and whether the "dy" role is the node's input (upconv).
    gradw_x: Src,
    gradw_x_from_dy: bool,
    gradw_unpack_reduce_axis0: bool,
    pixel: Option<Pixel>,
    /// Row chunks of the weight-gradient reduction (fixed by the shapes, not the thread count).
    gradw_chunk_rows: usize,
    gradw_rows: usize,
    /// Output rows per bias-gradient chunk.
    gradw_chunk_rows_out: usize,
    scratch: Vec<Vec<f32>>,
    packed_fwd: Vec<f32>,
    packed_bwd: Vec<f32>,
    packed_bias: Vec<f32>,
    /// Weight-gradient partial sums: borrowed from the pool during the backward step.
    partials: Vec<f32>,
    partials_len: usize,
    scratch_len: Vec<usize>,
    scratch_persistent: Vec<bool>,
}

/// What every linear plan needs; the rest starts at "read the value as it is, no scatter".
struct LinearParts {
    /// Weight `[a, b, taps]` and whether there is a bias.
    a: usize,
    b: usize,
    taps: usize,
    bias: bool,
    fwd: CorrCall,
    bwd_in: CorrCall,
    gradw_handle: codegen::FnHandle,
    gradw_spec: GradWSpec,
    /// Output-row width of the weight-gradient pass and of the bias sums.
    gradw_width: usize,
    bias_width: usize,
    scratch: Vec<Vec<f32>>,
    /// Lanes of the packed bias.
    bias_lanes: usize,
}

impl LinearParts {
    fn plan(self) -> LinearPlan {
        LinearPlan {
            a: self.a,
            b: self.b,
            taps: self.taps,
            bias: self.bias,
            fwd: self.fwd,
            fwd_src: Src::Value,
            fwd_scatter: None,
            bwd_in: self.bwd_in,
            bwd_src: Src::Value,
            bwd_scatter: None,
            gradw_handle: self.gradw_handle,
            gradw: None,
            gradw_x: Src::Value,
            gradw_x_from_dy: false,
            gradw_unpack_reduce_axis0: false,
            pixel: None,
            gradw_chunk_rows: chunk_rows(self.gradw_width),
            gradw_rows: 1,
            gradw_chunk_rows_out: chunk_rows(self.bias_width),
            gradw_spec: self.gradw_spec,
            scratch: self.scratch,
            packed_fwd: vec![],
            packed_bwd: vec![],
            packed_bias: vec![0.0; self.bias_lanes],
            partials: vec![],
            partials_len: 0,
            scratch_len: vec![],
            scratch_persistent: vec![],
        }
    }
}

impl LinearPlan {
    /// Folds an inference-mode batchnorm after this conv/dense into the packed forward weights
    /// and bias: y = γ·(x − μ)/√(σ² + ε) + β per output channel.
    fn fold_batchnorm(&mut self, params: &Params, bn_node: &Node) {
        let Op::BatchNorm(bn) = &bn_node.op else { return };
        let p = |k: usize| &params[bn_node.params[k]];
        let lanes = self.fwd.pack_lanes;
        for c in 0..self.a {
            let scale = p(0)[c] / (p(3)[c] + bn.eps).sqrt();
            let b = f64::from(self.packed_bias[c]);
            self.packed_bias[c] = ((b - p(2)[c]) * scale + p(1)[c]) as f32;
            for row in self.packed_fwd.chunks_mut(lanes) {
                row[c] = (f64::from(row[c]) * scale) as f32;
            }
        }
    }

    /// Borrows transient scratch `k` (zeroed) from the pool, unless it is persistent.
    fn lend(&mut self, k: usize, pool: &mut Vec<Vec<f32>>) {
        if self.scratch_persistent[k] {
            return;
        }
        // Not zeroed: every user overwrites it whole (scatters zero what they do not copy).
        let mut b = pool.pop().unwrap_or_default();
        b.resize(self.scratch_len[k], 0.0);
        self.scratch[k] = b;
    }

    /// Returns every borrowed buffer to the pool.
    /// Borrows the weight-gradient partial sums from the pool.
    fn lend_partials(&mut self, pool: &mut Vec<Vec<f32>>) {
        let mut b = pool.pop().unwrap_or_default();
        b.resize(self.partials_len, 0.0);
        self.partials = b;
    }

    /// Floats of the persistent scratch (the padded forward inputs).
    fn persistent_len(&self) -> usize {
        self.scratch_len.iter().zip(&self.scratch_persistent).filter(|(_, p)| **p).map(|(l, _)| l).sum()
    }

    fn allocate_persistent(&mut self) {
        for (k, b) in self.scratch.iter_mut().enumerate() {
            if self.scratch_persistent[k] {
                *b = vec![0.0; self.scratch_len[k]];
            }
        }
    }

    /// Floats of the packed weights (forward and input-gradient layouts) and bias.
    fn packed_len(&self) -> usize {
        let rows = |c: &CorrCall| if c.pack.reduce_axis0 { self.a } else { self.b };
        (rows(&self.fwd) * self.fwd.pack_lanes + rows(&self.bwd_in) * self.bwd_in.pack_lanes) * self.taps
            + self.packed_bias.len()
    }

    /// Bytes this plan borrows at most at once: (buffers, largest).
    fn transient(&self) -> (usize, usize) {
        let lens =
            self.scratch_len.iter().zip(&self.scratch_persistent).filter(|(_, p)| !**p).map(|(l, _)| *l);
        (lens.clone().count() + 1, lens.chain([self.partials_len]).max().unwrap_or(0))
    }

    fn give_back(&mut self, pool: &mut Vec<Vec<f32>>) {
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
}

enum Step {
    Linear(Box<LinearPlan>),
    /// Folded into the linear node that produces its input.
    FusedActivation,
    Native,
    /// The interpreter's per-node step on converted copies.
    Reference,
}

/// One model compiled at one batch size.
pub struct JitModel {
    /// Shared so that a step can hold a node while mutating the model (no per-step clones).
    graph: std::sync::Arc<Graph>,
    input_layouts: Vec<Layout>,
    layouts: Vec<Layout>,
    steps: Vec<Step>,
    /// For a linear node fused with the activation that follows: that activation's node.
    fused_into: Vec<Option<usize>>,
    /// Fused activations whose derivative the consumer's input-gradient kernel applies.
    mask_folded: Vec<bool>,
    /// A pixel-shuffle upconv writing into the concat that consumes it: (concat node, channel).
    concat_in_place: Vec<Option<(usize, usize)>>,
    /// conv/dense → its batchnorm folded in at inference, and the reverse link.
    bn_fold: Vec<Option<usize>>,
    bn_folded_from: Vec<Option<usize>>,
    values: Vec<Vec<f32>>,
    inputs: Vec<Vec<f32>>,
    /// Gradient buffers, shared by values whose gradients are never live at once
    /// ([`plan_gradient_buffers`]), and each node's buffer.
    grad_bufs: Vec<Vec<f32>>,
    grad_slot: Vec<usize>,
    grad_written: Vec<bool>,
    argmax: Vec<Vec<u32>>,
    caches: Vec<Option<Cache>>,
    tmp: Vec<f32>,
    target: Vec<f32>,
    /// Transient buffers lent to one node's step at a time.
    pool: Vec<Vec<f32>>,
    _codegen: Codegen,
    pub compile_ms: f64,
    pub memory_bytes: usize,
    profile: Option<Vec<[f64; 2]>>,
}

impl Drop for JitModel {
    fn drop(&mut self) {
        if let Some(p) = &self.profile {
            for (node, t) in self.graph.nodes.iter().zip(p) {
                eprintln!(
                    "{:>24} {:>9} fwd {:8.1} ms  bwd {:8.1} ms",
                    node.name,
                    node.op.kind(),
                    t[0] * 1e3,
                    t[1] * 1e3
                );
            }
        }
    }
}

fn window2(v: &[usize], fill: usize) -> [usize; 2] {
    if v.len() == 1 { [fill, v[0]] } else { [v[0], v[1]] }
}

fn fusable(a: &Activation) -> Option<Epilogue> {
    match *a {
        Activation::Relu => Some(Epilogue::Relu),
        Activation::LeakyRelu { slope } if (0.0..=1.0).contains(&slope) => {
            Some(Epilogue::LeakyRelu(slope as f32))
        }
        _ => None,
    }
}

impl JitModel {
    /// Compiles every kernel of `graph` and plans its buffers.
    pub fn compile(graph: &Graph) -> Result<JitModel, String> {
        let opt = std::env::var("GEONETC_JIT_OPT").unwrap_or_else(|_| "none".into());
        Self::compile_with(graph, &opt)
    }

    /// Bytes of the buffers [`JitModel::compile`] would plan for `graph` (activations, gradients
    /// shared by liveness, scratch, packed weights), without generating code.
    pub fn plan_bytes(graph: &Graph) -> Result<usize, String> {
        Ok(Self::build(graph, Codegen::dry()?)?.memory_bytes)
    }

    pub fn compile_with(graph: &Graph, opt_level: &str) -> Result<JitModel, String> {
        Self::build(graph, Codegen::new(opt_level)?)
    }

    fn build(graph: &Graph, mut cg: Codegen) -> Result<JitModel, String> {
        let started = Instant::now();
        let nn = graph.nodes.len();
        let input_layouts: Vec<Layout> = graph.inputs.iter().map(|s| Layout::of(s)).collect();
        let layouts: Vec<Layout> = graph.nodes.iter().map(|n| Layout::of(&n.shape)).collect();
        let layout_of = |v: ValueRef| match v {
            ValueRef::Input(i) => input_layouts[i],
            ValueRef::Layer(i) => layouts[i],
        };
        // Consumers of each node's value, to find activations to fuse.
        let mut consumers = vec![0usize; nn];
        for node in &graph.nodes {
            for v in &node.inputs {
                if let ValueRef::Layer(i) = v {
                    consumers[*i] += 1;
                }
            }
        }
        for v in &graph.outputs {
            if let ValueRef::Layer(i) = v {
                consumers[*i] += 1;
            }
        }
        let mut fused_into = vec![None; nn];
        let mut epilogues = vec![Epilogue::None; nn];
        let mut steps: Vec<Option<Step>> = (0..nn).map(|_| None).collect();
        for (i, node) in graph.nodes.iter().enumerate() {
            if let (Op::Activation(a), [ValueRef::Layer(p)]) = (&node.op, node.inputs.as_slice()) {
                let linear = matches!(graph.nodes[*p].op, Op::Conv(_) | Op::UpConv(_) | Op::Dense(_));
                if let (true, 1, Some(e)) = (linear, consumers[*p], fusable(a)) {
                    fused_into[*p] = Some(i);
                    epilogues[*p] = e;
                    steps[i] = Some(Step::FusedActivation);
                }
            }
        }
        // A pixel-shuffle upconv whose only consumer is a concat writes its output straight into
        // the concat's buffer (when its channel count fills whole 4-lane vectors).
        let mut concat_in_place: Vec<Option<(usize, usize)>> = vec![None; nn];
        for (c, node) in graph.nodes.iter().enumerate() {
            if !matches!(node.op, Op::Concat) {
                continue;
            }
            let mut off = 0;
            for v in &node.inputs {
                let l = layout_of(*v);
                if let ValueRef::Layer(u) = *v {
                    let pixel = matches!(&graph.nodes[u].op, Op::UpConv(uc) if is_pixel(uc));
                    if pixel && consumers[u] == 1 && fused_into[u].is_none() && l.c % 4 == 0 {
                        concat_in_place[u] = Some((c, off));
                    }
                }
                off += l.c;
            }
        }
        // conv/dense → batchnorm: at inference the normalisation is folded into the layer's
        // packed weights and bias, and the layer writes the batchnorm's value directly.
        let mut bn_fold: Vec<Option<usize>> = vec![None; nn];
        let mut bn_folded_from: Vec<Option<usize>> = vec![None; nn];
        for (i, node) in graph.nodes.iter().enumerate() {
            if let (Op::BatchNorm(_), [ValueRef::Layer(p)]) = (&node.op, node.inputs.as_slice()) {
                let foldable = matches!(graph.nodes[*p].op, Op::Conv(_) | Op::Dense(_));
                if foldable && consumers[*p] == 1 && fused_into[*p].is_none() {
                    bn_fold[*p] = Some(i);
                    bn_folded_from[i] = Some(*p);
                }
            }
        }
        // A fused activation whose only consumer is a linear layer: that layer's input-gradient
        // kernel applies the activation's derivative as it stores (no separate pass).
        let mut mask_folded = vec![false; nn];
        let mut bwd_epilogues = vec![Epilogue::None; nn];
        for (i, node) in graph.nodes.iter().enumerate() {
            let linear = matches!(node.op, Op::Conv(_) | Op::UpConv(_) | Op::Dense(_));
            if let (true, ValueRef::Layer(a)) = (linear, node.inputs[0]) {
                let p = graph.nodes[a].inputs[0];
                if let (Some(Step::FusedActivation), 1, ValueRef::Layer(p)) = (&steps[a], consumers[a], p) {
                    bwd_epilogues[i] = match epilogues[p] {
                        Epilogue::LeakyRelu(s) => Epilogue::LeakyMask(s),
                        _ => Epilogue::ReluMask,
                    };
                    mask_folded[a] = true;
                }
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            if steps[i].is_some() {
                continue;
            }
            let step = match node.op.lowering() {
                Lowering::Linear => {
                    let x = layout_of(node.inputs[0]);
                    let (e, be, bn) = (epilogues[i], bwd_epilogues[i], bn_fold[i].is_some());
                    Step::Linear(Box::new(plan_linear(&mut cg, node, x, layouts[i], e, be, bn)?))
                }
                Lowering::Native => Step::Native,
                Lowering::Reference => Step::Reference,
            };
            steps[i] = Some(step);
        }
        cg.finish()?;
        let dry = cg.is_dry();
        let mut steps: Vec<Step> = steps.into_iter().map(|s| s.unwrap_or(Step::Reference)).collect();
        for s in steps.iter_mut().filter(|_| !dry) {
            if let Step::Linear(p) = s {
                p.fwd.f = Some(cg.corr_fn(p.fwd.handle));
                p.bwd_in.f = Some(cg.corr_fn(p.bwd_in.handle));
                p.gradw = Some(cg.gradw_fn(p.gradw_handle));
            }
        }
        // Buffer sizes first (a dry plan, e.g. `check`'s `memory_bytes`, allocates nothing);
        // then a model whose buffers cannot fit gets an error instead of an allocation abort.
        let value_len: Vec<usize> = layouts
            .iter()
            .enumerate()
            .map(|(i, l)| if fused_into[i].is_some() { 0 } else { l.len() })
            .collect();
        let grad_slot = plan_gradient_buffers(graph, &layouts, &fused_into);
        let mut grad_len: Vec<usize> = vec![0; grad_slot.iter().map(|s| s + 1).max().unwrap_or(0)];
        for (i, &slot) in grad_slot.iter().enumerate() {
            grad_len[slot] = grad_len[slot].max(layouts[i].len());
        }
        let tmp_len = layouts.iter().map(Layout::len).max().unwrap_or(0);
        let argmax_len: Vec<usize> = graph
            .nodes
            .iter()
            .zip(&layouts)
            .map(|(n, l)| match &n.op {
                Op::Pool(p) if p.kind == PoolKind::Max => l.len(),
                _ => 0,
            })
            .collect();
        let input_len: Vec<usize> = input_layouts.iter().map(Layout::len).collect();
        let target_len = graph.outputs.first().map_or(0, |&v| layout_of(v).len());
        let mut floats: usize = value_len.iter().chain(&grad_len).chain(&input_len).chain(&argmax_len).sum();
        floats += tmp_len + target_len;
        let (mut pool_buffers, mut pool_len) = (0, 0);
        for s in &steps {
            if let Step::Linear(p) = s {
                floats += p.persistent_len() + p.packed_len();
                let (n, len) = p.transient();
                pool_buffers = pool_buffers.max(n);
                pool_len = pool_len.max(len);
            }
        }
        floats += pool_buffers * pool_len;
        let bytes = 4 * floats;
        if !dry {
            if let Some(avail) = available_memory()
                && bytes > avail
            {
                return Err(format!(
                    "the model needs {} MB of buffers at batch {} and the machine has {} MB available; use a smaller batch or input",
                    bytes >> 20,
                    graph.batch,
                    avail >> 20
                ));
            }
            for s in &mut steps {
                if let Step::Linear(p) = s {
                    p.allocate_persistent();
                }
            }
        }
        let zeros = |len: usize| if dry { vec![] } else { vec![0.0f32; len] };
        let values: Vec<Vec<f32>> = value_len.iter().map(|&l| zeros(l)).collect();
        let grad_bufs: Vec<Vec<f32>> = grad_len.iter().map(|&l| zeros(l)).collect();
        let inputs: Vec<Vec<f32>> = input_len.iter().map(|&l| zeros(l)).collect();
        let argmax: Vec<Vec<u32>> =
            argmax_len.iter().map(|&l| if dry { vec![] } else { vec![0; l] }).collect();
        Ok(JitModel {
            graph: std::sync::Arc::new(graph.clone()),
            input_layouts,
            layouts,
            steps,
            fused_into,
            mask_folded,
            concat_in_place,
            bn_fold,
            bn_folded_from,
            values,
            inputs,
            grad_written: vec![false; nn],
            grad_bufs,
            grad_slot,
            argmax,
            caches: (0..nn).map(|_| None).collect(),
            tmp: vec![],
            target: vec![],
            pool: vec![],
            _codegen: cg,
            compile_ms: started.elapsed().as_secs_f64() * 1e3,
            memory_bytes: bytes,
            profile: std::env::var_os("GEONETC_PROFILE").map(|_| vec![[0.0; 2]; nn]),
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Where value `v`'s data lives (a fused linear node's value is its activation's).
    fn value_index(&self, v: ValueRef) -> ValueRef {
        match v {
            ValueRef::Layer(i) => match self.fused_into[i] {
                Some(a) => ValueRef::Layer(a),
                None => v,
            },
            other => other,
        }
    }

    fn buf(&self, v: ValueRef) -> &[f32] {
        match self.value_index(v) {
            ValueRef::Input(i) => &self.inputs[i],
            ValueRef::Layer(i) => &self.values[i],
        }
    }

    fn layout(&self, v: ValueRef) -> Layout {
        match v {
            ValueRef::Input(i) => self.input_layouts[i],
            ValueRef::Layer(i) => self.layouts[i],
        }
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
        (0..self.graph.outputs.len()).map(|k| self.output(k)).collect()
    }

    /// Converts a batch into the input buffers.
    pub fn load_inputs(&mut self, inputs: &[ArrayD<f64>]) {
        for (i, x) in inputs.iter().enumerate() {
            to_nhwc(x, self.input_layouts[i], &mut self.inputs[i]);
        }
    }

    /// Converts a target for the first output (same shape) into the target buffer.
    pub fn load_target(&mut self, target: &ArrayD<f64>) {
        if target.shape() != self.output_shape(0) {
            // Not a target for this output: `loss_backward` takes the converted path.
            self.target.clear();
            return;
        }
        let v = self.graph.outputs[0];
        let l = self.layout(v);
        let mut t = std::mem::take(&mut self.target);
        to_nhwc(target, l, &mut t);
        self.target = t;
    }

    /// Runs the graph on the loaded inputs, leaving the outputs in their buffers.
    pub fn forward_loaded(&mut self, params: &mut Params, training: bool, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in 0..self.graph.nodes.len() {
            let t = Instant::now();
            self.forward_node(i, params, training, &mut rng);
            self.profile_add(i, 0, t);
        }
    }

    /// Shape of output `k`, with the batch axis.
    pub fn output_shape(&self, k: usize) -> &[usize] {
        match self.graph.outputs[k] {
            ValueRef::Input(i) => &self.graph.inputs[i],
            ValueRef::Layer(i) => &self.graph.nodes[i].shape,
        }
    }

    /// Output `k` of the last forward pass.
    pub fn output(&self, k: usize) -> ArrayD<f64> {
        let v = self.graph.outputs[k];
        let shape = match v {
            ValueRef::Input(i) => self.graph.inputs[i].clone(),
            ValueRef::Layer(i) => self.graph.nodes[i].shape.clone(),
        };
        from_nhwc(self.buf(v), self.layout(v), &shape)
    }

    /// Loss of the first output against the loaded target and the parameter gradients, after
    /// [`JitModel::forward_loaded`] in training mode. mse and mae are computed on the buffers
    /// (sums in f64, in a fixed chunk order); cross_entropy on the converted logits.
    pub fn loss_backward(&mut self, params: &Params, kind: LossKind, target: &ArrayD<f64>) -> (f64, Params) {
        let v = self.graph.outputs[0];
        let single = self.graph.outputs.len() == 1;
        let loaded = self.target.len() == self.layout(v).len();
        let (ValueRef::Layer(o), true, true, LossKind::Mse | LossKind::Mae) = (v, single, loaded, kind)
        else {
            let y = self.output(0);
            let (l, dy) = crate::ops::loss::loss(kind, &y, target);
            return (l, self.backward(params, &[dy]));
        };
        let l = self.layout(v);
        let count = (l.n * l.h * l.w * l.c) as f64;
        // An unfused linear output's value is not read by the backward pass: the gradient is
        // written over it in place (one buffer streamed instead of two), and the buffers trade.
        let in_place = matches!(self.steps[o], Step::Linear(_)) && self.fused_into[o].is_none();
        let mut g = if in_place {
            std::mem::take(&mut self.values[o])
        } else {
            std::mem::take(&mut self.grad_bufs[self.grad_slot[o]])
        };
        let y: &[f32] = if in_place { &[] } else { self.buf(v) };
        let t = &self.target;
        let per = l.cs * PIXELS;
        // Per-lane f32 partial sums within a fixed chunk (vectorised), f64 across chunks in order.
        let scale = if kind == LossKind::Mse { (2.0 / count) as f32 } else { (1.0 / count) as f32 };
        let mse = kind == LossKind::Mse;
        // One pixel: d = y − t over the real channels; the gradient goes to `g` (which may be
        // `y` itself), the loss terms to `lanes`. Written without branches on the element so it
        // vectorises.
        let pixel = |g: &mut [f32], y: &[f32], t: &[f32], lanes: &mut [f32]| {
            for c in 0..g.len() {
                let d = y[c] - t[c];
                if mse {
                    lanes[c] += d * d;
                    g[c] = d * scale;
                } else {
                    lanes[c] += d.abs();
                    g[c] = scale * d.signum() * f32::from(u8::from(d != 0.0));
                }
            }
        };
        let partials: Vec<f64> = if in_place {
            g.par_chunks_mut(per)
                .zip(t.par_chunks(per))
                .map(|(g, t)| {
                    let mut lanes = vec![0.0f32; l.c];
                    let mut y = vec![0.0f32; l.c];
                    for (g, t) in g.chunks_exact_mut(l.cs).zip(t.chunks_exact(l.cs)) {
                        y.copy_from_slice(&g[..l.c]);
                        pixel(&mut g[..l.c], &y, &t[..l.c], &mut lanes);
                    }
                    lanes.iter().map(|&v| v as f64).sum::<f64>()
                })
                .collect()
        } else {
            g.par_chunks_mut(per)
                .zip(y.par_chunks(per).zip(t.par_chunks(per)))
                .map(|(g, (y, t))| {
                    let mut lanes = vec![0.0f32; l.c];
                    for ((g, y), t) in
                        g.chunks_exact_mut(l.cs).zip(y.chunks_exact(l.cs)).zip(t.chunks_exact(l.cs))
                    {
                        pixel(&mut g[..l.c], &y[..l.c], &t[..l.c], &mut lanes);
                    }
                    lanes.iter().map(|&v| v as f64).sum::<f64>()
                })
                .collect()
        };
        if in_place {
            let old = std::mem::replace(&mut self.grad_bufs[self.grad_slot[o]], g);
            self.values[o] = old;
        } else {
            self.grad_bufs[self.grad_slot[o]] = g;
        }
        self.grad_written.iter_mut().for_each(|w| *w = false);
        self.grad_written[o] = true;
        let loss = partials.iter().sum::<f64>() / count;
        (loss, self.backward_seeded(params))
    }

    fn forward_node(&mut self, i: usize, params: &mut Params, training: bool, rng: &mut ChaCha8Rng) {
        let graph = std::sync::Arc::clone(&self.graph);
        let node = &graph.nodes[i];
        let out_l = self.layouts[i];
        let mut step = std::mem::replace(&mut self.steps[i], Step::Native);
        match &mut step {
            Step::FusedActivation => {}
            Step::Linear(plan) => {
                let fold_bn = if training { None } else { self.bn_fold[i] };
                let dst = fold_bn.or(self.fused_into[i]).unwrap_or(i);
                let mut y = std::mem::take(&mut self.values[dst]);
                plan.pack(params, node);
                if let Some(bn) = fold_bn {
                    plan.fold_batchnorm(params, &self.graph.nodes[bn]);
                }
                if let Some((k, _)) = plan.fwd_scatter {
                    plan.lend(k, &mut self.pool);
                }
                if let Some(px) = plan.pixel {
                    plan.lend(px.t_fwd, &mut self.pool);
                }
                let x = self.buf(node.inputs[0]);
                if let Some((k, sc)) = plan.fwd_scatter {
                    sc.run(x, &mut plan.scratch[k]);
                }
                let xb: &[f32] = match plan.fwd_src {
                    Src::Value => x,
                    Src::Scratch(k) => &plan.scratch[k],
                };
                if let Some(px) = plan.pixel {
                    let mut t = std::mem::take(&mut plan.scratch[px.t_fwd]);
                    run_corr(&plan.fwd, x, &plan.packed_fwd, &plan.packed_bias, &mut t, &[], px.x.rows());
                    match self.concat_in_place[i] {
                        Some((cn, off)) => {
                            let mut cy = std::mem::take(&mut self.values[cn]);
                            px.depth_to_space(&t, &mut cy, self.layouts[cn], off);
                            self.values[cn] = cy;
                        }
                        None => px.depth_to_space(&t, &mut y, out_l, 0),
                    }
                    plan.scratch[px.t_fwd] = t;
                } else {
                    let rows = if matches!(node.op, Op::Dense(_)) { 1 } else { out_l.rows() };
                    run_corr(&plan.fwd, xb, &plan.packed_fwd, &plan.packed_bias, &mut y, &[], rows);
                }
                self.values[dst] = y;
                plan.give_back(&mut self.pool);
            }
            Step::Native => {
                let mut y = std::mem::take(&mut self.values[i]);
                match &node.op {
                    Op::Pool(p) => {
                        let g = p.window();
                        let mut arg = std::mem::take(&mut self.argmax[i]);
                        maxpool_forward(
                            self.buf(node.inputs[0]),
                            self.layout(node.inputs[0]),
                            out_l,
                            &g,
                            &mut y,
                            &mut arg,
                        );
                        self.argmax[i] = arg;
                    }
                    Op::Concat => {
                        let mut off = 0;
                        for &v in &node.inputs {
                            let l = self.layout(v);
                            // Inputs written straight into this buffer by their producer.
                            let in_place =
                                matches!(v, ValueRef::Layer(u) if self.concat_in_place[u] == Some((i, off)));
                            if !in_place {
                                copy_channels(self.buf(v), l, &mut y, out_l, off);
                            }
                            off += l.c;
                        }
                    }
                    Op::Add | Op::Sub => {
                        let (a, b) = (self.buf(node.inputs[0]), self.buf(node.inputs[1]));
                        let sub = matches!(node.op, Op::Sub);
                        y.par_iter_mut().zip(a.par_iter().zip(b.par_iter())).for_each(|(y, (a, b))| {
                            *y = if sub { a - b } else { a + b };
                        });
                    }
                    Op::Flatten => {
                        flatten(self.buf(node.inputs[0]), self.layout(node.inputs[0]), &mut y, out_l)
                    }
                    Op::Activation(a) => {
                        let slope = match a {
                            Activation::LeakyRelu { slope } => *slope as f32,
                            _ => 0.0,
                        };
                        let x = self.buf(node.inputs[0]);
                        y.par_iter_mut()
                            .zip(x.par_iter())
                            .for_each(|(y, &x)| *y = if x > 0.0 { x } else { slope * x });
                    }
                    _ => unreachable!("native ops are listed in compile"),
                }
                self.values[i] = y;
            }
            Step::Reference if !training && self.bn_folded_from[i].is_some() => {
                // Computed by the layer before, with this batchnorm folded into its weights.
            }
            Step::Reference => {
                let xs: Vec<ArrayD<f64>> = node.inputs.iter().map(|&v| self.value_f64(v)).collect();
                let refs: Vec<&ArrayD<f64>> = xs.iter().collect();
                let (y, cache) = interp::forward_node(node, params, &refs, training, rng);
                let mut buf = std::mem::take(&mut self.values[i]);
                to_nhwc(&y, out_l, &mut buf);
                self.values[i] = buf;
                self.caches[i] = Some(cache);
            }
        }
        self.steps[i] = step;
    }

    fn value_f64(&self, v: ValueRef) -> ArrayD<f64> {
        let shape = match v {
            ValueRef::Input(i) => self.graph.inputs[i].clone(),
            ValueRef::Layer(i) => self.graph.nodes[i].shape.clone(),
        };
        from_nhwc(self.buf(v), self.layout(v), &shape)
    }

    /// Lets `f` produce a gradient contribution for value `v` (overwriting every element of the
    /// buffer it is given): straight into `v`'s gradient buffer the first time this step,
    /// otherwise into a scratch buffer that is then added.
    fn emit_grad(&mut self, v: ValueRef, f: impl FnOnce(&Self, &mut [f32])) {
        let ValueRef::Layer(i) = v else { return };
        if !self.grad_written[i] {
            let mut g = std::mem::take(&mut self.grad_bufs[self.grad_slot[i]]);
            f(self, &mut g);
            self.grad_bufs[self.grad_slot[i]] = g;
            self.grad_written[i] = true;
        } else {
            let mut tmp = std::mem::take(&mut self.tmp);
            tmp.resize(self.grad_bufs[self.grad_slot[i]].len(), 0.0);
            f(self, &mut tmp);
            add_into(&mut self.grad_bufs[self.grad_slot[i]], &tmp);
            self.tmp = tmp;
        }
    }

    /// Adds (or, first time this step, writes) `g` into the gradient of value `v`.
    fn accumulate(&mut self, v: ValueRef, g: &[f32]) {
        if let ValueRef::Layer(i) = v {
            let dst = &mut self.grad_bufs[self.grad_slot[i]];
            if self.grad_written[i] {
                add_into(dst, g);
            } else {
                dst.copy_from_slice(g);
                self.grad_written[i] = true;
            }
        }
    }

    /// Gradients of every parameter, given the gradients of the graph's outputs (after
    /// [`JitModel::forward`] in training mode).
    pub fn backward(&mut self, params: &Params, d_outputs: &[ArrayD<f64>]) -> Params {
        self.grad_written.iter_mut().for_each(|w| *w = false);
        let graph = std::sync::Arc::clone(&self.graph);
        for (&v, d) in graph.outputs.iter().zip(d_outputs) {
            let mut g = vec![0.0; self.layout(v).len()];
            to_nhwc(d, self.layout(v), &mut g);
            self.accumulate(v, &g);
        }
        self.backward_seeded(params)
    }

    /// The backward pass from the output gradients already in place.
    fn backward_seeded(&mut self, params: &Params) -> Params {
        let mut pgrads: Params = self.graph.params.iter().map(|p| ArrayD::zeros(IxDyn(&p.shape))).collect();
        for i in (0..self.graph.nodes.len()).rev() {
            if !self.grad_written[i] {
                continue;
            }
            let t = Instant::now();
            let graph = std::sync::Arc::clone(&self.graph);
            let node = &graph.nodes[i];
            let mut step = std::mem::replace(&mut self.steps[i], Step::Native);
            match &mut step {
                Step::FusedActivation => {
                    // dy of the linear node = dy · act'(y), from the activation's output.
                    let ValueRef::Layer(p) = node.inputs[0] else { unreachable!("fused after a layer") };
                    let slope = match node.op {
                        Op::Activation(Activation::LeakyRelu { slope }) => slope as f32,
                        _ => 0.0,
                    };
                    let y = &self.values[i];
                    let folded = self.mask_folded[i];
                    if !folded {
                        self.grad_bufs[self.grad_slot[i]]
                            .par_chunks_mut(CHUNK)
                            .zip(y.par_chunks(CHUNK))
                            .for_each(|(g, y)| {
                                for (g, &y) in g.iter_mut().zip(y) {
                                    *g = if y > 0.0 { *g } else { *g * slope };
                                }
                            });
                    }
                    // The memory plan gave the linear node this activation's gradient buffer.
                    debug_assert_eq!(self.grad_slot[i], self.grad_slot[p]);
                    self.grad_written[p] = true;
                }
                Step::Linear(plan) => self.backward_linear(i, node, plan, &mut pgrads),
                Step::Native => self.backward_native(i, node),
                Step::Reference => {
                    let xs: Vec<ArrayD<f64>> = node.inputs.iter().map(|&v| self.value_f64(v)).collect();
                    let refs: Vec<&ArrayD<f64>> = xs.iter().collect();
                    let y = self.value_f64(ValueRef::Layer(i));
                    let dy = from_nhwc(&self.grad_bufs[self.grad_slot[i]], self.layouts[i], &node.shape);
                    let cache = self.caches[i].take().unwrap_or(Cache::None);
                    let dxs = interp::backward_node(node, params, &refs, &y, &cache, dy, &mut pgrads);
                    self.caches[i] = Some(cache);
                    for (&v, dx) in node.inputs.iter().zip(dxs) {
                        let mut g = vec![0.0; self.layout(v).len()];
                        to_nhwc(&dx, self.layout(v), &mut g);
                        self.accumulate(v, &g);
                    }
                }
            }
            self.steps[i] = step;
            self.profile_add(i, 1, t);
        }
        pgrads
    }

    /// `GEONETC_PROFILE=1`: time per node and direction, printed when the model is dropped.
    fn profile_add(&mut self, i: usize, dir: usize, t: Instant) {
        if let Some(p) = self.profile.as_mut() {
            p[i][dir] += t.elapsed().as_secs_f64();
        }
    }

    fn backward_native(&mut self, i: usize, node: &Node) {
        let gl = self.layouts[i];
        let dy = std::mem::take(&mut self.grad_bufs[self.grad_slot[i]]);
        match &node.op {
            Op::Pool(_) => {
                let xl = self.layout(node.inputs[0]);
                self.emit_grad(node.inputs[0], |me, dx| maxpool_backward(&dy, gl, &me.argmax[i], dx, xl));
            }
            Op::Concat => {
                let mut off = 0;
                for &v in &node.inputs {
                    let l = self.layout(v);
                    self.emit_grad(v, |_, dx| take_channels(&dy, gl, dx, l, off));
                    off += l.c;
                }
            }
            Op::Add => {
                self.accumulate(node.inputs[0], &dy);
                self.accumulate(node.inputs[1], &dy);
            }
            Op::Sub => {
                self.accumulate(node.inputs[0], &dy);
                let neg: Vec<f32> = dy.par_iter().map(|v| -v).collect();
                self.accumulate(node.inputs[1], &neg);
            }
            Op::Flatten => {
                let xl = self.layout(node.inputs[0]);
                self.emit_grad(node.inputs[0], |_, dx| unflatten(&dy, gl, dx, xl));
            }
            Op::Activation(a) => {
                let slope = match a {
                    Activation::LeakyRelu { slope } => *slope as f32,
                    _ => 0.0,
                };
                let xv = node.inputs[0];
                self.emit_grad(xv, |me, dx| {
                    let x = me.buf(xv);
                    dx.par_chunks_mut(CHUNK).zip(dy.par_chunks(CHUNK).zip(x.par_chunks(CHUNK))).for_each(
                        |(dx, (dy, x))| {
                            for ((d, &g), &x) in dx.iter_mut().zip(dy).zip(x) {
                                *d = if x > 0.0 { g } else { slope * g };
                            }
                        },
                    );
                });
            }
            _ => unreachable!("native ops are listed in compile"),
        }
        self.grad_bufs[self.grad_slot[i]] = dy;
    }

    fn backward_linear(&mut self, i: usize, node: &Node, plan: &mut LinearPlan, pgrads: &mut Params) {
        let dy = std::mem::take(&mut self.grad_bufs[self.grad_slot[i]]);
        let dense = matches!(node.op, Op::Dense(_));
        let x_ref = node.inputs[0];
        let xl = self.layout(x_ref);
        // Bias gradient: per-channel sums over fixed row chunks (f64), added in chunk order —
        // unless the weight-gradient kernel sums dy in its own pass.
        if plan.bias && !plan.gradw_spec.bias {
            let yl = self.layouts[i];
            let per = plan.gradw_chunk_rows_out * yl.w * yl.cs;
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
            pgrads[node.params[1]] = ArrayD::from_shape_vec(IxDyn(&[yl.c]), sums).expect("bias shape");
        }
        // Input gradient (skipped for graph inputs, which need none).
        // (upconv's weight gradient reads the scattered dy too.)
        if let Some((k, sc)) = plan.bwd_scatter {
            let needed =
                matches!(x_ref, ValueRef::Layer(_)) || matches!(plan.gradw_x, Src::Scratch(j) if j == k);
            if needed {
                plan.lend(k, &mut self.pool);
                sc.run(&dy, &mut plan.scratch[k]);
            }
        }
        if let Some(px) = plan.pixel {
            plan.lend(px.t_bwd, &mut self.pool);
            px.space_to_depth(&dy, &mut plan.scratch[px.t_bwd]);
        }
        plan.lend_partials(&mut self.pool);
        if let ValueRef::Layer(_) = x_ref {
            let src: &[f32] = match plan.bwd_src {
                Src::Value => &dy,
                Src::Scratch(k) => &plan.scratch[k],
            };
            let rows = if dense { 1 } else { xl.rows() };
            self.emit_grad(x_ref, |me, dx| {
                // With a folded activation derivative, the mask is that activation's output.
                let m = if plan.bwd_in.spec.epilogue == Epilogue::None { &[][..] } else { me.buf(x_ref) };
                run_corr(&plan.bwd_in, src, &plan.packed_bwd, &[], dx, m, rows)
            });
        }
        // Weight gradient over fixed row chunks, summed in chunk order.
        let gx: &[f32] = match plan.gradw_x {
            Src::Value => self.buf(x_ref),
            Src::Scratch(k) => &plan.scratch[k],
        };
        let gd: &[f32] = match plan.pixel {
            Some(px) => &plan.scratch[px.t_bwd],
            None if plan.gradw_x_from_dy => self.buf(x_ref),
            None => &dy,
        };
        let chunk = plan.gradw_chunk_rows;
        let total = plan.gradw_rows;
        let gs = &plan.gradw_spec;
        let wlen = gs.ci * gs.k[0] * gs.k[1] * gs.co4;
        let len = wlen + if gs.bias { 2 * gs.co4 } else { 0 };
        let Some(f) = plan.gradw else { return };
        let (gxp, gdp) = (gx.as_ptr() as usize, gd.as_ptr() as usize);
        plan.partials.par_chunks_mut(len).enumerate().for_each(|(c, part)| {
            let r0 = c * chunk;
            let r1 = ((c + 1) * chunk).min(total);
            part.fill(0.0);
            // SAFETY: buffers are sized by the plan the kernel was specialised for.
            unsafe { f(gxp as *const f32, gdp as *const f32, part.as_mut_ptr(), r0 as i64, r1 as i64) };
        });
        // Chunk partial sums added in chunk order, element blocks in parallel.
        let mut sum = vec![0.0f64; wlen + if gs.bias { gs.co4 } else { 0 }];
        let partials = &plan.partials;
        sum.par_chunks_mut(256).enumerate().for_each(|(blk, s)| {
            for part in partials.chunks(len) {
                for (k, sv) in s.iter_mut().enumerate() {
                    let e = blk * 256 + k;
                    *sv += if e < wlen {
                        part[e] as f64
                    } else {
                        // The bias sums are f64, stored as pairs of f32 slots (little-endian).
                        let c = e - wlen;
                        let (lo, hi) =
                            (part[wlen + 2 * c].to_bits() as u64, part[wlen + 2 * c + 1].to_bits() as u64);
                        f64::from_bits(hi << 32 | lo)
                    };
                }
            }
        });
        let lanes = plan.gradw_spec.co4;
        let (a, b, taps) = (plan.a, plan.b, plan.taps);
        let mut dw = vec![0.0f64; a * b * taps];
        for ia in 0..a {
            for ib in 0..b {
                for t in 0..taps {
                    dw[(ia * b + ib) * taps + t] = match plan.pixel {
                        // sum[in][out·taps + t]
                        Some(_) => sum[ib * lanes + ia * taps + t],
                        None => {
                            let (red, lane) =
                                if plan.gradw_unpack_reduce_axis0 { (ia, ib) } else { (ib, ia) };
                            sum[(red * taps + t) * lanes + lane]
                        }
                    };
                }
            }
        }
        let shape = &self.graph.params[node.params[0]].shape;
        pgrads[node.params[0]] = ArrayD::from_shape_vec(IxDyn(shape), dw).expect("weight shape");
        if plan.gradw_spec.bias {
            let db: Vec<f64> = match plan.pixel {
                // lanes out·taps + t
                Some(_) => (0..a).map(|o| (0..taps).map(|t| sum[wlen + o * taps + t]).sum()).collect(),
                None => sum[wlen..wlen + a].to_vec(),
            };
            pgrads[node.params[1]] = ArrayD::from_shape_vec(IxDyn(&[a]), db).expect("bias shape");
        }
        plan.give_back(&mut self.pool);
        self.grad_bufs[self.grad_slot[i]] = dy;
    }
}

fn run_corr(call: &CorrCall, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], m: &[f32], rows: usize) {
    let per_task = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let Some(f) = call.f else { return };
    let (xp, wp, bp, mp) =
        (x.as_ptr() as usize, w.as_ptr() as usize, b.as_ptr() as usize, m.as_ptr() as usize);
    let yp = y.as_mut_ptr() as usize;
    (0..rows.div_ceil(per_task)).into_par_iter().for_each(|t| {
        let r0 = t * per_task;
        let r1 = ((t + 1) * per_task).min(rows);
        // SAFETY: every task writes its own rows of `y`; buffers match the kernel's spec.
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

impl LinearPlan {
    /// Packs the current parameters into the kernels' layouts.
    fn pack(&mut self, params: &Params, node: &Node) {
        let w = params[node.params[0]].as_standard_layout();
        let w = w.as_slice().expect("standard layout");
        pack_weight(w, self.a, self.b, self.taps, self.fwd.pack, self.fwd.pack_lanes, &mut self.packed_fwd);
        pack_weight(
            w,
            self.a,
            self.b,
            self.taps,
            self.bwd_in.pack,
            self.bwd_in.pack_lanes,
            &mut self.packed_bwd,
        );
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
    }
}

fn pack_weight(w: &[f64], a: usize, b: usize, taps: usize, p: Packing, lanes: usize, out: &mut Vec<f32>) {
    let red = if p.reduce_axis0 { a } else { b };
    out.clear();
    out.resize(red * taps * lanes, 0.0);
    for ia in 0..a {
        for ib in 0..b {
            for t in 0..taps {
                let (r, l) = if p.reduce_axis0 { (ia, ib) } else { (ib, ia) };
                let tp = if p.flip { taps - 1 - t } else { t };
                out[(r * taps + tp) * lanes + l] = w[(ia * b + ib) * taps + t] as f32;
            }
        }
    }
}

fn plan_linear(
    cg: &mut Codegen,
    node: &Node,
    x: Layout,
    y: Layout,
    epilogue: Epilogue,
    bwd_epilogue: Epilogue,
    bn_follows: bool,
) -> Result<LinearPlan, String> {
    let env = |k: &str, d: Blocking| {
        std::env::var(k)
            .ok()
            .and_then(|v| {
                let (r, v) = v.split_once('x')?;
                Some(Blocking { r: r.parse().ok()?, v: v.parse().ok()? })
            })
            .unwrap_or(d)
    };
    let blk = env("GEONETC_CORR_BLOCK", codegen::CORR_BLOCKING);
    let gblk = env("GEONETC_GRADW_BLOCK", codegen::GRADW_BLOCKING);
    let mut scratch: Vec<Vec<f32>> = vec![];
    // Scratch buffers: the padded forward input of a conv lives until the backward pass reads
    // it; every other scratch (interleaved or padded gradients, pixel shuffles) is transient —
    // borrowed from a pool shared by all nodes for the one step that uses it.
    let mut scratch_len: Vec<usize> = vec![];
    let mut scratch_persistent: Vec<bool> = vec![];
    let mut new_scratch = |l: Layout, persistent: bool, scratch: &mut Vec<Vec<f32>>| {
        // Persistent scratch is allocated by `allocate_persistent` once sizes are known to fit.
        scratch.push(vec![]);
        scratch_len.push(l.len());
        scratch_persistent.push(persistent);
        scratch.len() - 1
    };
    let corr = |cg: &mut Codegen, spec: CorrSpec, pack: Packing, blk: Blocking| -> Result<CorrCall, String> {
        let h = cg.corr(&spec, blk)?;
        let pack_lanes = spec.co4;
        Ok(CorrCall { handle: h, f: None, spec, pack, pack_lanes })
    };
    let plan = match &node.op {
        Op::Conv(c) => {
            let (k, s, p, d) =
                (window2(&c.kernel, 1), window2(&c.stride, 1), window2(&c.pad, 0), window2(&c.dilation, 1));
            // forward input: x zero-padded by p
            let padded = Layout { h: x.h + 2 * p[0], w: x.w + 2 * p[1], ..x };
            let (fwd_src, fwd_scatter) = if p == [0, 0] {
                (Src::Value, None)
            } else {
                let k0 = new_scratch(padded, true, &mut scratch);
                (
                    Src::Scratch(k0),
                    Some((k0, Scatter { src: x, dst: padded, s: [1, 1], off: [p[0] as i64, p[1] as i64] })),
                )
            };
            let fwd = corr(
                cg,
                CorrSpec {
                    ho: y.h,
                    wo: y.w,
                    hp: padded.h,
                    wp: padded.w,
                    k,
                    s,
                    d,
                    ci: x.c,
                    csx: x.cs,
                    co4: round4(y.c),
                    csy: y.cs,
                    bias: c.bias || bn_follows,
                    epilogue,
                },
                Packing { reduce_axis0: false, flip: false },
                blk,
            )?;
            // input gradient: dy interleaved (stride) and shifted, then a stride-1 correlation
            let z = Layout { h: x.h + d[0] * (k[0] - 1), w: x.w + d[1] * (k[1] - 1), ..y };
            let kz = new_scratch(z, false, &mut scratch);
            let off = |a: usize| (d[a] * (k[a] - 1)) as i64 - p[a] as i64;
            let bwd_in = corr(
                cg,
                CorrSpec {
                    ho: x.h,
                    wo: x.w,
                    hp: z.h,
                    wp: z.w,
                    k,
                    s: [1, 1],
                    d,
                    ci: y.c,
                    csx: y.cs,
                    co4: round4(x.c),
                    csy: x.cs,
                    bias: false,
                    epilogue: bwd_epilogue,
                },
                Packing { reduce_axis0: true, flip: true },
                blk,
            )?;
            let gspec = GradWSpec {
                ho: y.h,
                wo: y.w,
                hp: padded.h,
                wp: padded.w,
                k,
                s,
                d,
                ci: x.c,
                csx: x.cs,
                co4: round4(y.c),
                csd: y.cs,
                bias: c.bias,
            };
            LinearPlan {
                fwd_src,
                fwd_scatter,
                bwd_src: Src::Scratch(kz),
                bwd_scatter: Some((kz, Scatter { src: y, dst: z, s, off: [off(0), off(1)] })),
                gradw_x: fwd_src,
                gradw_rows: y.rows(),
                ..LinearParts {
                    a: c.out,
                    b: x.c,
                    taps: k[0] * k[1],
                    bias: c.bias,
                    fwd,
                    bwd_in,
                    gradw_handle: cg.gradw(&gspec, gblk)?,
                    gradw_spec: gspec,
                    gradw_width: y.w,
                    bias_width: y.w,
                    scratch,
                    bias_lanes: round4(c.out),
                }
                .plan()
            }
        }
        Op::UpConv(c) if is_pixel(c) => {
            let k = window2(&c.kernel, 1);
            let taps = k[0] * k[1];
            let co4 = round4(y.c);
            let t_fwd = new_scratch(Layout { c: taps * co4, cs: taps * co4, ..x }, false, &mut scratch);
            let cs_bwd = round4(y.c * taps);
            let t_bwd = new_scratch(Layout { c: y.c * taps, cs: cs_bwd, ..x }, false, &mut scratch);
            let one = |ci, csx, co4, csy, bias, epilogue| CorrSpec {
                ho: x.h,
                wo: x.w,
                hp: x.h,
                wp: x.w,
                k: [1, 1],
                s: [1, 1],
                d: [1, 1],
                ci,
                csx,
                co4,
                csy,
                bias,
                epilogue,
            };
            let mut fwd = corr(
                cg,
                one(x.c, x.cs, taps * co4, taps * co4, c.bias, epilogue),
                Packing { reduce_axis0: false, flip: false },
                blk,
            )?;
            fwd.pack_lanes = co4;
            let bwd_in = corr(
                cg,
                one(y.c * taps, cs_bwd, round4(x.c), x.cs, false, bwd_epilogue),
                Packing { reduce_axis0: true, flip: false },
                blk,
            )?;
            let gspec = GradWSpec {
                ho: x.h,
                wo: x.w,
                hp: x.h,
                wp: x.w,
                k: [1, 1],
                s: [1, 1],
                d: [1, 1],
                ci: x.c,
                csx: x.cs,
                co4: cs_bwd,
                csd: cs_bwd,
                bias: c.bias,
            };
            LinearPlan {
                bwd_src: Src::Scratch(t_bwd),
                pixel: Some(Pixel { x, y, k, co4, t_fwd, t_bwd, cs_bwd }),
                gradw_rows: x.rows(),
                ..LinearParts {
                    a: c.out,
                    b: x.c,
                    taps,
                    bias: c.bias,
                    fwd,
                    bwd_in,
                    gradw_handle: cg.gradw(&gspec, gblk)?,
                    gradw_spec: gspec,
                    gradw_width: x.w,
                    bias_width: y.w,
                    scratch,
                    bias_lanes: taps * co4,
                }
                .plan()
            }
        }
        Op::UpConv(c) => {
            let (k, s, p) = (window2(&c.kernel, 1), window2(&c.stride, 1), window2(&c.pad, 0));
            // forward: x interleaved by the stride and shifted, then a stride-1 correlation
            let z = Layout { h: y.h + k[0] - 1, w: y.w + k[1] - 1, ..x };
            let kz = new_scratch(z, false, &mut scratch);
            let off = |a: usize| (k[a] - 1) as i64 - p[a] as i64;
            let fwd = corr(
                cg,
                CorrSpec {
                    ho: y.h,
                    wo: y.w,
                    hp: z.h,
                    wp: z.w,
                    k,
                    s: [1, 1],
                    d: [1, 1],
                    ci: x.c,
                    csx: x.cs,
                    co4: round4(y.c),
                    csy: y.cs,
                    bias: c.bias,
                    epilogue,
                },
                Packing { reduce_axis0: false, flip: true },
                blk,
            )?;
            // input gradient: the strided convolution of dy zero-padded by p
            let padded = Layout { h: y.h + 2 * p[0], w: y.w + 2 * p[1], ..y };
            let (bwd_src, bwd_scatter) = if p == [0, 0] {
                (Src::Value, None)
            } else {
                let kp = new_scratch(padded, false, &mut scratch);
                (
                    Src::Scratch(kp),
                    Some((kp, Scatter { src: y, dst: padded, s: [1, 1], off: [p[0] as i64, p[1] as i64] })),
                )
            };
            let bwd_in = corr(
                cg,
                CorrSpec {
                    ho: x.h,
                    wo: x.w,
                    hp: padded.h,
                    wp: padded.w,
                    k,
                    s,
                    d: [1, 1],
                    ci: y.c,
                    csx: y.cs,
                    co4: round4(x.c),
                    csy: x.cs,
                    bias: false,
                    epilogue: bwd_epilogue,
                },
                Packing { reduce_axis0: true, flip: false },
                blk,
            )?;
            let gspec = GradWSpec {
                ho: x.h,
                wo: x.w,
                hp: padded.h,
                wp: padded.w,
                k,
                s,
                d: [1, 1],
                ci: y.c,
                csx: y.cs,
                co4: round4(x.c),
                csd: x.cs,
                bias: false,
            };
            // When p = 0 the weight gradient reads dy itself, which lives in the gradient buffer:
            // give it a scratch copy so the source is uniform.
            let (gradw_x, bwd_scatter, bwd_src) = match bwd_src {
                Src::Scratch(kp) => (Src::Scratch(kp), bwd_scatter, bwd_src),
                Src::Value => {
                    let kp = new_scratch(padded, false, &mut scratch);
                    (
                        Src::Scratch(kp),
                        Some((kp, Scatter { src: y, dst: padded, s: [1, 1], off: [0, 0] })),
                        Src::Scratch(kp),
                    )
                }
            };
            LinearPlan {
                fwd_src: Src::Scratch(kz),
                fwd_scatter: Some((kz, Scatter { src: x, dst: z, s, off: [off(0), off(1)] })),
                bwd_src,
                bwd_scatter,
                gradw_x,
                gradw_x_from_dy: true,
                gradw_unpack_reduce_axis0: true,
                gradw_rows: x.rows(),
                ..LinearParts {
                    a: c.out,
                    b: x.c,
                    taps: k[0] * k[1],
                    bias: c.bias,
                    fwd,
                    bwd_in,
                    gradw_handle: cg.gradw(&gspec, gblk)?,
                    gradw_spec: gspec,
                    gradw_width: x.w,
                    bias_width: y.w,
                    scratch,
                    bias_lanes: round4(c.out),
                }
                .plan()
            }
        }
        Op::Dense(dn) => {
            let n = x.n;
            let fwd = corr(
                cg,
                CorrSpec {
                    ho: 1,
                    wo: n,
                    hp: 1,
                    wp: n,
                    k: [1, 1],
                    s: [1, 1],
                    d: [1, 1],
                    ci: x.c,
                    csx: x.cs,
                    co4: round4(y.c),
                    csy: y.cs,
                    bias: dn.bias || bn_follows,
                    epilogue,
                },
                Packing { reduce_axis0: false, flip: false },
                blk,
            )?;
            let bwd_in = corr(
                cg,
                CorrSpec {
                    ho: 1,
                    wo: n,
                    hp: 1,
                    wp: n,
                    k: [1, 1],
                    s: [1, 1],
                    d: [1, 1],
                    ci: y.c,
                    csx: y.cs,
                    co4: round4(x.c),
                    csy: x.cs,
                    bias: false,
                    epilogue: bwd_epilogue,
                },
                Packing { reduce_axis0: true, flip: false },
                blk,
            )?;
            let gspec = GradWSpec {
                ho: 1,
                wo: n,
                hp: 1,
                wp: n,
                k: [1, 1],
                s: [1, 1],
                d: [1, 1],
                ci: x.c,
                csx: x.cs,
                co4: round4(y.c),
                csd: y.cs,
                bias: dn.bias,
            };
            LinearPlan {
                gradw_chunk_rows: 1,
                gradw_rows: 1,
                gradw_chunk_rows_out: 1,
                ..LinearParts {
                    a: dn.out,
                    b: x.c,
                    taps: 1,
                    bias: dn.bias,
                    fwd,
                    bwd_in,
                    gradw_handle: cg.gradw(&gspec, gblk)?,
                    gradw_spec: gspec,
                    gradw_width: n,
                    bias_width: n,
                    scratch,
                    bias_lanes: round4(dn.out),
                }
                .plan()
            }
        }
        _ => return Err("not a linear layer".into()),
    };
    let mut plan = plan;
    let chunks = plan.gradw_rows.div_ceil(plan.gradw_chunk_rows);
    let gw = &plan.gradw_spec;
    plan.partials_len = chunks * (gw.ci * gw.k[0] * gw.k[1] * gw.co4 + if gw.bias { 2 * gw.co4 } else { 0 });
    plan.scratch_len = scratch_len;
    plan.scratch_persistent = scratch_persistent;
    Ok(plan)
}

/// Rows per weight-gradient chunk: about 512 output positions (short f32 partial sums), so a chunk's inputs stay in L2.
fn chunk_rows(width: usize) -> usize {
    (512 / width.max(1)).max(1)
}

fn maxpool_forward(
    x: &[f32],
    xl: Layout,
    yl: Layout,
    g: &crate::ops::conv::Window,
    y: &mut [f32],
    arg: &mut [u32],
) {
    let per = yl.h * yl.w * yl.cs;
    y.par_chunks_mut(per).zip(arg.par_chunks_mut(per)).enumerate().for_each(|(n, (y, arg))| {
        let xs = &x[n * xl.h * xl.w * xl.cs..(n + 1) * xl.h * xl.w * xl.cs];
        for oy in 0..yl.h {
            for ox in 0..yl.w {
                let o = (oy * yl.w + ox) * yl.cs;
                let (y, arg) = (&mut y[o..o + yl.c], &mut arg[o..o + yl.c]);
                y.fill(f32::NEG_INFINITY);
                arg.fill(0);
                // Window positions in scan order; the first maximum wins, as in the interpreter.
                for i in 0..g.k[0] {
                    let yy = (oy * g.s[0] + i) as isize - g.p[0] as isize;
                    if yy < 0 || yy >= xl.h as isize {
                        continue;
                    }
                    for j in 0..g.k[1] {
                        let xx = (ox * g.s[1] + j) as isize - g.p[1] as isize;
                        if xx < 0 || xx >= xl.w as isize {
                            continue;
                        }
                        let idx = yy as usize * xl.w + xx as usize;
                        let xv = &xs[idx * xl.cs..idx * xl.cs + yl.c];
                        for ((b, a), &v) in y.iter_mut().zip(arg.iter_mut()).zip(xv) {
                            let better = v > *b;
                            *b = if better { v } else { *b };
                            *a = if better { idx as u32 } else { *a };
                        }
                    }
                }
            }
        }
    });
}

fn maxpool_backward(dy: &[f32], yl: Layout, arg: &[u32], dx: &mut [f32], xl: Layout) {
    let per_y = yl.h * yl.w * yl.cs;
    let per_x = xl.h * xl.w * xl.cs;
    dx.par_chunks_mut(per_x).enumerate().for_each(|(n, dx)| {
        dx.fill(0.0);
        let (dy, arg) = (&dy[n * per_y..(n + 1) * per_y], &arg[n * per_y..(n + 1) * per_y]);
        for p in 0..yl.h * yl.w {
            for c in 0..yl.c {
                let at = arg[p * yl.cs + c] as usize;
                dx[at * xl.cs + c] += dy[p * yl.cs + c];
            }
        }
    });
}

/// Pixels per task of the channel copies.
const PIXELS: usize = 1024;

fn copy_channels(src: &[f32], sl: Layout, dst: &mut [f32], dl: Layout, off: usize) {
    dst.par_chunks_mut(dl.cs * PIXELS).zip(src.par_chunks(sl.cs * PIXELS)).for_each(|(d, s)| {
        for (d, s) in d.chunks_mut(dl.cs).zip(s.chunks(sl.cs)) {
            d[off..off + sl.c].copy_from_slice(&s[..sl.c]);
        }
    });
}

/// Channels `off..off + dl.c` of `src` into `dst` (every element of `dst` written).
fn take_channels(src: &[f32], sl: Layout, dst: &mut [f32], dl: Layout, off: usize) {
    dst.par_chunks_mut(dl.cs * PIXELS).zip(src.par_chunks(sl.cs * PIXELS)).for_each(|(d, s)| {
        for (d, s) in d.chunks_mut(dl.cs).zip(s.chunks(sl.cs)) {
            d[..dl.c].copy_from_slice(&s[off..off + dl.c]);
            d[dl.c..].fill(0.0);
        }
    });
}

/// NHWC → PyTorch's flat order `c·H·W + h·W + w`.
fn flatten(x: &[f32], xl: Layout, y: &mut [f32], yl: Layout) {
    for n in 0..xl.n {
        for c in 0..xl.c {
            for p in 0..xl.h * xl.w {
                y[n * yl.cs + c * xl.h * xl.w + p] = x[(n * xl.h * xl.w + p) * xl.cs + c];
            }
        }
    }
}

fn unflatten(dy: &[f32], yl: Layout, dx: &mut [f32], xl: Layout) {
    dx.fill(0.0);
    for n in 0..xl.n {
        for c in 0..xl.c {
            for p in 0..xl.h * xl.w {
                dx[(n * xl.h * xl.w + p) * xl.cs + c] = dy[n * yl.cs + c * xl.h * xl.w + p];
            }
        }
    }
}

/// A batched NCHW (or NCN, NF) array into NHWC with channel stride `l.cs`.
pub fn to_nhwc(x: &ArrayD<f64>, l: Layout, out: &mut Vec<f32>) {
    out.resize(l.len(), 0.0);
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let hw = l.h * l.w;
    out.par_chunks_mut(hw * l.cs).zip(xs.par_chunks(l.c * hw)).for_each(|(o, xs)| {
        for c in 0..l.c {
            for p in 0..hw {
                o[p * l.cs + c] = xs[c * hw + p] as f32;
            }
        }
    });
}

/// NHWC back to a batched array of `shape`.
pub fn from_nhwc(buf: &[f32], l: Layout, shape: &[usize]) -> ArrayD<f64> {
    let hw = l.h * l.w;
    let mut out = vec![0.0f64; l.n * l.c * hw];
    out.par_chunks_mut(l.c * hw).zip(buf.par_chunks(hw * l.cs)).for_each(|(o, b)| {
        for c in 0..l.c {
            for p in 0..hw {
                o[c * hw + p] = b[p * l.cs + c] as f64;
            }
        }
    });
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("layout matches shape")
}

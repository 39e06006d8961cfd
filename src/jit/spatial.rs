//! Pooling, upsampling and concat on the buffers (`Lowering::Spatial`), with the gather kernels
//! of [`super::gather`]: one kernel forward and one backward per op (concat: one per input each
//! way), their tap tables built here once from the ops' own definitions.
//!
//! - upsample: the interpreter's taps ([`crate::ops::upsample::taps`]: nearest, or linear with
//!   half-pixel centres); backward the same taps transposed.
//! - avgpool: `1/k` per axis over the window's taps inside the input (padded zeros count in the
//!   average); backward transposed.
//! - maxpool: the maximum and its argmax (first maximum in scan order); backward gathers, per
//!   input pixel, the gradients of the outputs whose argmax it is.
//! - concat: a copy of each input into its channel slice — skipped for an input whose producer
//!   (a pixel-shuffle upconv, a pooling or an upsample) wrote it there itself ([`super::fusion`])
//!   — and backward a copy of each slice of the gradient.

use super::codegen::{Codegen, FnHandle};
use super::exec::{BACKWARD, FORWARD, run_gather};
use super::fusion::Fusion;
use super::gather::{GatherFn, GatherKind, GatherSpec, INVALID, Side};
use super::layout::{Layout, window2};
use super::{JitModel, Step};
use crate::ir::{Node, NodeId, Value};
use crate::ops::Op;
use crate::ops::pool::PoolKind;
use crate::ops::upsample::{UpsampleMode, taps};
use std::time::Instant;

/// One gather kernel with its tap table.
pub(crate) struct GatherCall {
    pub spec: GatherSpec,
    handle: FnHandle,
    f: Option<GatherFn>,
    table: Vec<i32>,
}

impl GatherCall {
    fn new(cg: &mut Codegen, spec: GatherSpec, table: Vec<i32>) -> Result<GatherCall, String> {
        debug_assert_eq!(table.len(), spec.table_len(), "table of {spec:?}");
        Ok(GatherCall { handle: cg.gather(&spec)?, f: None, spec, table })
    }

    /// Runs the kernel over every destination row of a batch of `n` samples.
    fn run(&self, n: usize, x: &[f32], aux: &mut [u32], y: &mut [f32]) {
        if let Some(f) = self.f {
            run_gather(f, &self.spec, n * self.spec.y.h, x, &self.table, aux, y);
        }
    }
}

/// What the op is, as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SpatialOp {
    Upsample,
    AvgPool,
    MaxPool,
    Concat,
}

pub(crate) struct SpatialPlan {
    op: SpatialOp,
    batch: usize,
    /// Concat: per input, its copy into the slice (`None`: written there by its producer).
    forward: Vec<Option<GatherCall>>,
    /// Per input, the kernel of its gradient.
    backward: Vec<GatherCall>,
    /// Written straight into a concat's buffer: (the concat, its first channel).
    into_concat: Option<(NodeId, usize)>,
}

impl SpatialPlan {
    pub(crate) fn link(&mut self, cg: &Codegen) {
        for call in self.forward.iter_mut().flatten().chain(self.backward.iter_mut()) {
            call.f = Some(cg.gather_fn(call.handle));
        }
    }

    /// Floats (i32s) of the tap tables.
    pub(crate) fn len(&self) -> usize {
        self.forward.iter().flatten().chain(&self.backward).map(|c| c.table.len()).sum()
    }

    pub(crate) fn describe(&self) -> String {
        let taps = |c: &GatherCall| format!("{}x{} taps", c.spec.kh, c.spec.kw);
        let (what, fwd_kind) = match self.op {
            SpatialOp::Upsample => ("upsample", "weighted"),
            SpatialOp::AvgPool => ("avgpool", "weighted"),
            SpatialOp::MaxPool => ("maxpool", "max with argmax"),
            SpatialOp::Concat => ("concat", "copy"),
        };
        let bwd_kind = if self.op == SpatialOp::MaxPool { "argmax match" } else { fwd_kind };
        let fwd: Vec<String> = self
            .forward
            .iter()
            .map(|c| c.as_ref().map_or("in place".to_string(), |c| format!("{fwd_kind} {}", taps(c))))
            .collect();
        let bwd: Vec<String> = self.backward.iter().map(|c| format!("{bwd_kind} {}", taps(c))).collect();
        format!("gather kernels ({what}): forward [{}]; backward [{}]", fwd.join(", "), bwd.join(", "))
    }
}

/// Source taps of every destination index along one axis, before padding to a common count.
type AxisTaps<P> = Vec<Vec<(usize, P)>>;

/// The table of a kernel: rows then columns, each padded to its longest list with `pad` (given
/// the list being padded), as `(index, parameter bits)`.
fn table<P: Copy>(
    rows: &AxisTaps<P>,
    cols: &AxisTaps<P>,
    bits: impl Fn(P) -> i32,
    pad: impl Fn(&[(usize, P)]) -> (usize, P),
) -> (Vec<i32>, usize, usize) {
    let k = |a: &AxisTaps<P>| a.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (kh, kw) = (k(rows), k(cols));
    let mut t = Vec::with_capacity(2 * (rows.len() * kh + cols.len() * kw));
    for (axis, kk) in [(rows, kh), (cols, kw)] {
        for list in axis {
            let filler = pad(list);
            for i in 0..kk {
                let (idx, p) = list.get(i).copied().unwrap_or(filler);
                t.push(idx as i32);
                t.push(bits(p));
            }
        }
    }
    (t, kh, kw)
}

/// For every source index `0..n_src`: the destinations that read it, with the sum of their
/// weights (a destination reading one source twice, at a clamped border, counts once).
fn transpose(fwd: &AxisTaps<f32>, n_src: usize) -> AxisTaps<f32> {
    let mut t: AxisTaps<f32> = vec![vec![]; n_src];
    for (o, list) in fwd.iter().enumerate() {
        for &(i, w) in list {
            match t[i].last_mut() {
                Some((last, sum)) if *last == o => *sum += w,
                _ => t[i].push((o, w)),
            }
        }
    }
    t
}

/// The input indices of pooling window `o` along one axis (scan order, padding left out).
fn window_taps(n_in: usize, n_out: usize, k: usize, s: usize, p: usize) -> Vec<Vec<usize>> {
    (0..n_out)
        .map(|o| (0..k).filter_map(|i| (o * s + i).checked_sub(p).filter(|&x| x < n_in)).collect())
        .collect()
}

fn weighted(
    cg: &mut Codegen,
    c: usize,
    x: Side,
    y: Side,
    rows: &AxisTaps<f32>,
    cols: &AxisTaps<f32>,
) -> Result<GatherCall, String> {
    let (t, kh, kw) = table(rows, cols, f32::to_bits_i32, |_| (0, 0.0));
    GatherCall::new(cg, GatherSpec { kind: GatherKind::Weighted, c, x, y, kh, kw }, t)
}

trait Bits {
    fn to_bits_i32(self) -> i32;
}

impl Bits for f32 {
    fn to_bits_i32(self) -> i32 {
        self.to_bits() as i32
    }
}

fn side(l: Layout) -> Side {
    Side { h: l.h, w: l.w, cs: l.cs, off: 0 }
}

/// The plan of a `Lowering::Spatial` node with output layout `yl`.
pub(crate) fn plan(
    cg: &mut Codegen,
    node: &Node,
    layout_of: &dyn Fn(Value) -> Layout,
    yl: Layout,
    fusion: &[Fusion],
) -> Result<Step, String> {
    let into_concat = fusion[node.id.index()].concat_in_place;
    // Where the forward kernel writes: this node's buffer, or its slice of the concat's.
    let dest = |concat: Option<Layout>| match (into_concat, concat) {
        (Some((_, off)), Some(cl)) => Side { h: yl.h, w: yl.w, cs: cl.cs, off },
        _ => side(yl),
    };
    let concat_layout = into_concat.map(|(cn, _)| layout_of(Value::Node(cn)));
    let plan = |op, forward, backward| SpatialPlan { op, batch: yl.n, forward, backward, into_concat };
    let step = match &node.op {
        Op::Upsample(u) => {
            let xl = layout_of(node.inputs[0]);
            let [fh, fw] = window2(&u.factor, 1);
            let axis = |n: usize, f: usize| -> AxisTaps<f32> {
                taps(n, f, u.mode)
                    .into_iter()
                    .map(|(i0, i1, l)| match u.mode {
                        UpsampleMode::Nearest => vec![(i0, 1.0)],
                        UpsampleMode::Linear => vec![(i0, (1.0 - l) as f32), (i1, l as f32)],
                    })
                    .collect()
            };
            let (rows, cols) = (axis(xl.h, fh), axis(xl.w, fw));
            let fwd = weighted(cg, xl.c, side(xl), dest(concat_layout), &rows, &cols)?;
            let bwd =
                weighted(cg, xl.c, side(yl), side(xl), &transpose(&rows, xl.h), &transpose(&cols, xl.w))?;
            plan(SpatialOp::Upsample, vec![Some(fwd)], vec![bwd])
        }
        Op::Pool(p) => {
            let xl = layout_of(node.inputs[0]);
            if xl.h.checked_mul(xl.w).is_none_or(|px| px >= (1 << 28)) {
                return Err(format!("{}: more than 2^28 pixels per sample to pool", node.name));
            }
            let g = p.window();
            let rows = window_taps(xl.h, yl.h, g.k[0], g.s[0], g.p[0]);
            let cols = window_taps(xl.w, yl.w, g.k[1], g.s[1], g.p[1]);
            match p.kind {
                PoolKind::Avg => {
                    let avg = |a: Vec<Vec<usize>>, k: usize| -> AxisTaps<f32> {
                        a.into_iter().map(|l| l.into_iter().map(|i| (i, 1.0 / k as f32)).collect()).collect()
                    };
                    let (rows, cols) = (avg(rows, g.k[0]), avg(cols, g.k[1]));
                    let fwd = weighted(cg, xl.c, side(xl), dest(concat_layout), &rows, &cols)?;
                    let bwd = weighted(
                        cg,
                        xl.c,
                        side(yl),
                        side(xl),
                        &transpose(&rows, xl.h),
                        &transpose(&cols, xl.w),
                    )?;
                    plan(SpatialOp::AvgPool, vec![Some(fwd)], vec![bwd])
                }
                PoolKind::Max => {
                    // Keys sum to the interpreter's flat argmax `h·W + w`.
                    let keyed = |a: &[Vec<usize>], scale: usize| -> AxisTaps<i32> {
                        a.iter().map(|l| l.iter().map(|&i| (i, (i * scale) as i32)).collect()).collect()
                    };
                    let (kr, kc) = (keyed(&rows, xl.w), keyed(&cols, 1));
                    // A short window repeats its first tap (never a new strict maximum).
                    let (t, kh, kw) = table(&kr, &kc, |k| k, |l| l.first().copied().unwrap_or((0, INVALID)));
                    let spec = GatherSpec {
                        kind: GatherKind::Max,
                        c: xl.c,
                        x: side(xl),
                        y: dest(concat_layout),
                        kh,
                        kw,
                    };
                    let fwd = GatherCall::new(cg, spec, t)?;
                    // Backward: per input index, the outputs whose window holds it, keyed by it.
                    let back = |a: &[Vec<usize>], n_in: usize, scale: usize| -> AxisTaps<i32> {
                        let mut t: AxisTaps<i32> = vec![vec![]; n_in];
                        for (o, l) in a.iter().enumerate() {
                            for &i in l {
                                t[i].push((o, (i * scale) as i32));
                            }
                        }
                        t
                    };
                    let (br, bc) = (back(&rows, xl.h, xl.w), back(&cols, xl.w, 1));
                    let (t, kh, kw) = table(&br, &bc, |k| k, |_| (0, INVALID));
                    let spec =
                        GatherSpec { kind: GatherKind::ArgMatch, c: xl.c, x: side(yl), y: side(xl), kh, kw };
                    plan(SpatialOp::MaxPool, vec![Some(fwd)], vec![GatherCall::new(cg, spec, t)?])
                }
            }
        }
        Op::Concat => {
            let identity = |l: Layout| {
                let ident = |n: usize| -> AxisTaps<i32> { (0..n).map(|i| vec![(i, 0)]).collect() };
                table(&ident(l.h), &ident(l.w), |k| k, |_| (0, 0))
            };
            let (mut forward, mut backward, mut off) = (vec![], vec![], 0);
            for &v in &node.inputs {
                let l = layout_of(v);
                let slice = Side { h: l.h, w: l.w, cs: yl.cs, off };
                let copy = |x, y| GatherSpec { kind: GatherKind::Copy, c: l.c, x, y, kh: 1, kw: 1 };
                let in_place = matches!(v, Value::Node(u)
                    if fusion[u.index()].concat_in_place == Some((node.id, off)));
                forward.push(match in_place {
                    true => None,
                    false => Some(GatherCall::new(cg, copy(side(l), slice), identity(l).0)?),
                });
                backward.push(GatherCall::new(cg, copy(slice, side(l)), identity(l).0)?);
                off += l.c;
            }
            plan(SpatialOp::Concat, forward, backward)
        }
        other => return Err(format!("`{}` has no gather kernels", other.kind())),
    };
    Ok(Step::Spatial(Box::new(step)))
}

impl JitModel {
    pub(crate) fn forward_spatial(&mut self, id: NodeId, node: &Node, plan: &mut SpatialPlan) {
        let t = Instant::now();
        let n = plan.batch;
        if plan.op == SpatialOp::Concat {
            let mut y = std::mem::take(&mut self.nodes[id.index()].value);
            // Inputs without a copy were written into `y` by their producers.
            for (&v, call) in node.inputs.iter().zip(&plan.forward) {
                if let Some(call) = call {
                    call.run(n, self.buf(v), &mut [], &mut y);
                }
            }
            self.nodes[id.index()].value = y;
        } else if let Some(call) = &plan.forward[0] {
            let dst = plan.into_concat.map_or(id, |(cn, _)| cn).index();
            let mut y = std::mem::take(&mut self.nodes[dst].value);
            let mut arg = std::mem::take(&mut self.nodes[id.index()].argmax);
            call.run(n, self.buf(node.inputs[0]), &mut arg, &mut y);
            self.nodes[id.index()].argmax = arg;
            self.nodes[dst].value = y;
        }
        self.profile_kernel(id, FORWARD, t.elapsed().as_secs_f64());
    }

    pub(crate) fn backward_spatial(&mut self, id: NodeId, node: &Node, plan: &mut SpatialPlan) {
        let t = Instant::now();
        let n = plan.batch;
        let dy = std::mem::take(self.grad_buf(id));
        let mut arg = std::mem::take(&mut self.nodes[id.index()].argmax);
        for (&v, call) in node.inputs.iter().zip(&plan.backward) {
            self.emit_grad(v, |_, dx| call.run(n, &dy, &mut arg, dx));
        }
        self.nodes[id.index()].argmax = arg;
        *self.grad_buf(id) = dy;
        self.profile_kernel(id, BACKWARD, t.elapsed().as_secs_f64());
    }
}

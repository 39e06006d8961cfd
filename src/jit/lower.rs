//! Lowering of the linear op family (`Lowering::Linear`: conv, upconv, dense) onto the two
//! kernel families. Every kernel is described by one [`Geometry`] — which buffer it reads
//! (already padded or interleaved), which it writes, taps, stride, dilation — and the
//! weight-gradient kernel of a layer reuses the geometry of the correlation it differentiates.

use super::JitOptions;
use super::codegen::{Codegen, CorrSpec, Epilogue, Geometry, GradWSpec, MAX_ZERO_ROW_BYTES, Shuffle};
use super::fusion::{Fusion, is_pixel};
use super::gradw_finish::{FinishSpec, GradWFinish};
use super::layout::{Layout, round4, window2};
use super::linear::{CorrCall, LinearKind, LinearPlan, Packing, Src};
use super::native::{Pixel, Scatter};
use super::norm::FusedStats;
use super::pack::{PackSpec, WeightPack};
use super::winograd::{Variants, WinoCall, WinoSpec};
use super::winograd_emit::{Normalise, TileSums};
use super::winograd_gradw::WinoGradW;
use super::{winograd_choice, winograd_tile};
use crate::ir::Node;
use crate::ops::Op;

/// The geometry of a kernel that reads `src` (its height and width are the padded sizes) and
/// writes one result per position and channel of `out`.
fn geometry(src: Layout, out: Layout, k: [usize; 2], s: [usize; 2], d: [usize; 2]) -> Geometry {
    Geometry {
        ho: out.h,
        wo: out.w,
        hp: src.h,
        wp: src.w,
        k,
        s,
        d,
        ci: src.c,
        csx: src.cs,
        co4: round4(out.c),
        cso: out.cs,
    }
}

/// Rows per weight-gradient chunk: about 512 output positions (short f32 partial sums), so a
/// chunk's inputs stay in L2. Preferably a divisor of the height, so that no chunk holds rows of
/// two samples: a shard of a data-parallel batch then has exactly the chunks (and the f32
/// partial sums) one process has for its samples, which makes ranks agree with one process bit
/// for bit. When the height has no divisor of at least half the usual size (a prime height),
/// the usual size: more, smaller chunks would cost memory and time on every step.
fn chunk_rows(l: &Layout) -> usize {
    let most = (512 / l.w.max(1)).max(1);
    match (1..=most.min(l.h.max(1))).rev().find(|r| l.h.is_multiple_of(*r)) {
        Some(rows) if 2 * rows >= most.min(l.h.max(1)) => rows,
        _ => most,
    }
}

/// The scratch buffers of one plan, sized now and allocated later (persistent ones once the
/// whole model is known to fit, transient ones lent from the pool per step).
#[derive(Default)]
struct Scratch {
    len: Vec<usize>,
    persistent: Vec<bool>,
}

impl Scratch {
    fn add(&mut self, l: Layout, persistent: bool) -> usize {
        self.len.push(l.len());
        self.persistent.push(persistent);
        self.len.len() - 1
    }
}

/// A zero-padding scatter of `src` by `p` into scratch (persistent or not), or the value itself
/// when there is no padding.
fn padded_source(
    src: Layout,
    p: [usize; 2],
    persistent: bool,
    scratch: &mut Scratch,
) -> (Layout, Src, Option<(usize, Scatter)>) {
    let padded = Layout { h: src.h + 2 * p[0], w: src.w + 2 * p[1], ..src };
    if padded.h == src.h && padded.w == src.w {
        return (padded, Src::Value, None);
    }
    let k = scratch.add(padded, persistent);
    let scatter = Scatter { src, dst: padded, s: [1, 1], off: [p[0] as i64, p[1] as i64] };
    (padded, Src::Scratch(k), Some((k, scatter)))
}

/// The kernels and buffers of a linear node with input layout `x` and output layout `y`, given
/// its fusions: the activation after it (the forward epilogue), the derivative of the fused
/// activation before it (the input-gradient epilogue), a batchnorm folded into it at inference
/// (so the forward kernel always adds a bias), a concat of layout `into` it writes into.
pub(crate) fn plan_linear(
    cg: &mut Codegen,
    options: &JitOptions,
    node: &Node,
    (x, y): (Layout, Layout),
    fusion: &Fusion,
    into: Option<Layout>,
) -> Result<LinearPlan, String> {
    let (epilogue, bwd_epilogue) = (fusion.epilogue, fusion.bwd_epilogue);
    let bn_follows = fusion.bn_fold.is_some();
    let mut scratch = Scratch::default();
    let mut corr = |spec: CorrSpec, pack: Packing| -> Result<CorrCall, String> {
        let handle = Some(cg.corr(&spec, options.corr_blocking)?);
        let pack_lanes = spec.geo.co4;
        Ok(CorrCall { handle, f: None, spec, pack, pack_lanes })
    };
    // A direction a Winograd call runs: described, never generated.
    let replaced = |spec: CorrSpec, pack: Packing| {
        let pack_lanes = spec.geo.co4;
        CorrCall { handle: None, f: None, spec, pack, pack_lanes }
    };
    // A Winograd form of correlation `geo` when the options and the cost model choose one.
    let wino_tile = |geo: &Geometry| winograd_choice::choose(options.conv, geo);
    // Weights `[a, b, taps]` read as `[b][tap][a]` (forward of conv and dense), or as
    // `[a][tap][b]` (their input gradients; upconv's weight is `[in, out, taps]`), taps reversed
    // where the correlation runs the other way.
    let pack = |reduce_axis0: bool, flip: bool| Packing { reduce_axis0, flip };
    // What differs per family; the rest of the plan is assembled below.
    struct Family {
        kind: LinearKind,
        out: usize,
        bias: bool,
        taps: usize,
        fwd: CorrCall,
        fwd_src: Src,
        fwd_scatter: Option<(usize, Scatter)>,
        gradw_scatter: Option<(usize, Scatter)>,
        fwd_rows: usize,
        bwd_in: CorrCall,
        bwd_src: Src,
        bwd_scatter: Option<(usize, Scatter)>,
        bwd_rows: usize,
        gradw_spec: GradWSpec,
        gradw_x: Src,
        gradw_rows: usize,
        /// Rows per chunk of the weight-gradient pass and of the bias sums.
        gradw_chunk_rows: usize,
        bias_chunk_rows: usize,
        bias_lanes: usize,
    }
    let (mut wino_fwd, mut wino_bwd, mut wino_gradw) = (None, None, None);
    let mut norm_load = None;
    let f = match &node.op {
        Op::Conv(c) => {
            let (k, s, p, d) =
                (window2(&c.kernel, 1), window2(&c.stride, 1), window2(&c.pad, 0), window2(&c.dilation, 1));
            // forward: x read in place, the padding known to the kernel — Winograd's input
            // transform, or the direct kernel with a zero row on the stack (when that row is
            // small, else x zero-padded by a copy kept for the weight gradient).
            let padded_geo = geometry(Layout { h: x.h + 2 * p[0], w: x.w + 2 * p[1], ..x }, y, k, s, d);
            // A conv writing into a concat's slice stays direct (Winograd's output transform
            // stores with the layer's own channel stride).
            let fwd_tile = wino_tile(&padded_geo).filter(|_| into.is_none());
            let fits = |spec: &CorrSpec| spec.zero_row_bytes() <= MAX_ZERO_ROW_BYTES;
            let fwd_bias = c.bias || bn_follows;
            // Into a concat: rows of the concat's stride (the weight gradient reads this
            // layer's own dy, so its geometry keeps `y`'s).
            let fwd_geo = Geometry { cso: into.map_or(y.cs, |l| l.cs), ..padded_geo.clone() };
            let fwd_spec = CorrSpec { geo: fwd_geo, bias: fwd_bias, epilogue, pad: p, shuffle: None };
            let x_in_place = fwd_tile.is_some() || fits(&fwd_spec);
            let fwd_spec = CorrSpec { pad: if x_in_place { p } else { [0, 0] }, ..fwd_spec };
            // The weight gradient by Winograd whole tiles too when the cost model says so; its
            // input transform reads x in place, as the forward's does.
            let direct_chunk = chunk_rows(&y) * y.w;
            let gradw_tile = winograd_choice::choose_gradw(options.conv, &padded_geo, direct_chunk);
            // The direct weight-gradient kernel reads x in place too, skipping the taps outside
            // it (with fewer channels than its register block it blocks over the taps of a tap
            // row, each summing its own columns).
            let direct_gradw_in_place = gradw_tile.is_none() && x_in_place;
            let gradw_in_place = gradw_tile.is_some() || direct_gradw_in_place;
            let (fwd_src, fwd_scatter, gradw_scatter, gradw_x) = match (x_in_place, gradw_in_place) {
                (true, true) => (Src::Value, None, None, Src::Value),
                // A forward reading a padded x, kept for a direct weight gradient only.
                (false, in_place) => {
                    let (_, padded_src, pad_x) = padded_source(x, p, !in_place, &mut scratch);
                    (padded_src, pad_x, None, if in_place { Src::Value } else { padded_src })
                }
                // A direct weight gradient after a forward reading x in place: x padded in the
                // backward pass (transient).
                (true, false) => {
                    let (_, padded_src, pad_x) = padded_source(x, p, false, &mut scratch);
                    (Src::Value, None, pad_x, padded_src)
                }
            };
            let gradw_pad = if direct_gradw_in_place { p } else { [0, 0] };
            let geo = padded_geo;
            let fwd = match fwd_tile {
                Some(_) => replaced(fwd_spec, pack(false, false)),
                None => corr(fwd_spec, pack(false, false))?,
            };
            // input gradient: dy interleaved (stride) and shifted, then a stride-1 correlation.
            // A stride-1 conv's dy needs no interleaving: Winograd reads it in place, shifted,
            // and so does the direct kernel when the shift is a padding (d·(k − 1) ≥ p) whose
            // zero row is small — or no shift at all (e.g. 1×1 without padding).
            let z = Layout { h: x.h + d[0] * (k[0] - 1), w: x.w + d[1] * (k[1] - 1), ..y };
            let bwd_geo = geometry(z, x, k, [1, 1], d);
            let bwd_tile = wino_tile(&bwd_geo);
            let off = |a: usize| (d[a] * (k[a] - 1)) as i64 - p[a] as i64;
            let shift = [off(0).max(0) as usize, off(1).max(0) as usize];
            let bwd_spec = CorrSpec {
                geo: bwd_geo.clone(),
                bias: false,
                epilogue: bwd_epilogue,
                pad: shift,
                shuffle: None,
            };
            let direct_in_place = off(0) >= 0 && off(1) >= 0 && fits(&bwd_spec);
            let dy_in_place = s == [1, 1] && (bwd_tile.is_some() || direct_in_place);
            let bwd_spec = CorrSpec { pad: if dy_in_place { shift } else { [0, 0] }, ..bwd_spec };
            let (bwd_src, bwd_scatter) = if dy_in_place {
                (Src::Value, None)
            } else {
                let kz = scratch.add(z, false);
                (Src::Scratch(kz), Some((kz, Scatter { src: y, dst: z, s, off: [off(0), off(1)] })))
            };
            let bwd_in = match bwd_tile {
                Some(_) => replaced(bwd_spec, pack(true, true)),
                None => corr(bwd_spec, pack(true, true))?,
            };
            // Training: with every direction by Winograd, the batchnorm before (and its
            // activation, whose derivative is the input gradient's mask) applied as the input
            // transforms load its input, and the mask recomputed from it.
            let bn_act = match bwd_epilogue {
                Epilogue::ReluMask => Some(Epilogue::Relu),
                Epilogue::LeakyMask(s) => Some(Epilogue::LeakyRelu(s)),
                Epilogue::None => Some(Epilogue::None),
                _ => None,
            };
            // (A Winograd forward implies stride 1, so dy is read in place too.)
            let all_winograd = fwd_tile.is_some() && gradw_tile.is_some() && bwd_tile.is_some();
            norm_load = match (fusion.norm_on_load, bn_act) {
                (Some(_), Some(act)) if all_winograd => Some(Normalise { cs: x.cs, act }),
                _ => None,
            };
            let mut wino = |t: Option<winograd_tile::Tile>,
                            geo: &Geometry,
                            bias: bool,
                            e,
                            src: Option<(Layout, [i64; 2])>,
                            variants: Variants| {
                t.map(|t| {
                    let spec = WinoSpec::new(t, geo, x.n, bias, e);
                    let spec = match src {
                        Some((l, o)) => spec.reading(l, o),
                        None => spec,
                    };
                    let flat = Layout { n: 1, h: 1, w: spec.scratch_len(), c: 1, cs: 1 };
                    let k = scratch.add(flat, false);
                    WinoCall::generate(cg, spec, options.corr_blocking, k, variants)
                })
                .transpose()
            };
            let x_in_place = Some((x, [p[0] as i64, p[1] as i64]));
            let fwd_variants = Variants {
                sums: fusion.stats_into.map(|_| TileSums::Moments),
                folded: fusion.folded_epilogue,
                norm_input: norm_load,
            };
            wino_fwd = wino(fwd_tile, &geo, fwd_bias, epilogue, x_in_place, fwd_variants)?;
            let dy_src = (bwd_tile.is_some() && s == [1, 1]).then_some((y, [off(0), off(1)]));
            let mask = norm_load.filter(|_| bwd_epilogue.reads_mask());
            let bwd_variants = Variants {
                sums: fusion.grad_stats_into.map(|_| TileSums::WithOperand { mask }),
                ..Variants::default()
            };
            wino_bwd = wino(bwd_tile, &bwd_geo, false, bwd_epilogue, dy_src, bwd_variants)?;
            wino_gradw = gradw_tile
                .map(|t| {
                    let src = (x_in_place, norm_load);
                    let mut w = WinoGradW::generate(cg, t, &geo, src, x.n, c.bias, options.gradw_blocking)?;
                    let flat = Layout { n: 1, h: 1, w: w.scratch_len(), c: 1, cs: 1 };
                    w.scratch = scratch.add(flat, false);
                    Ok::<_, String>(w)
                })
                .transpose()?;
            Family {
                kind: LinearKind::Direct,
                out: c.out,
                bias: c.bias,
                taps: k[0] * k[1],
                fwd,
                fwd_src,
                fwd_scatter,
                gradw_scatter,
                fwd_rows: y.rows(),
                bwd_in,
                bwd_src,
                bwd_scatter,
                bwd_rows: x.rows(),
                gradw_spec: GradWSpec { geo, bias: c.bias, pad: gradw_pad },
                gradw_x,
                gradw_rows: y.rows(),
                gradw_chunk_rows: chunk_rows(&y),
                bias_chunk_rows: chunk_rows(&y),
                bias_lanes: round4(c.out),
            }
        }
        Op::UpConv(c) if is_pixel(c) => {
            let k = window2(&c.kernel, 1);
            let taps = k[0] * k[1];
            let co4 = round4(y.c);
            // forward: a 1×1 correlation to taps × channels lanes, each tap's lanes stored at
            // its output position (in this layer's value or the concat's slice it feeds)
            let t_fwd_layout = Layout { c: taps * co4, cs: taps * co4, ..x };
            let out = into.unwrap_or(y);
            let shuffle = Shuffle { k, lanes: co4, wy: out.w, cs: out.cs };
            // backward: dy space-to-depth, then 1×1 correlations
            let cs_bwd = round4(y.c * taps);
            let t_bwd_layout = Layout { c: y.c * taps, cs: cs_bwd, ..x };
            let t_bwd = scratch.add(t_bwd_layout, false);
            let one = [1, 1];
            let mut fwd = corr(
                CorrSpec {
                    geo: geometry(x, t_fwd_layout, one, one, one),
                    bias: c.bias,
                    epilogue,
                    pad: [0, 0],
                    shuffle: Some(shuffle),
                },
                pack(false, false),
            )?;
            fwd.pack_lanes = co4;
            let bwd_geo = geometry(t_bwd_layout, x, one, one, one);
            let bwd_in = corr(
                CorrSpec { geo: bwd_geo, bias: false, epilogue: bwd_epilogue, pad: [0, 0], shuffle: None },
                pack(true, false),
            )?;
            Family {
                kind: LinearKind::PixelShuffle(Pixel { x, y, k, t_bwd, cs_bwd }),
                out: c.out,
                bias: c.bias,
                taps,
                fwd,
                fwd_src: Src::Value,
                fwd_scatter: None,
                gradw_scatter: None,
                fwd_rows: x.rows(),
                bwd_in,
                bwd_src: Src::Scratch(t_bwd),
                bwd_scatter: None,
                bwd_rows: x.rows(),
                gradw_spec: GradWSpec {
                    geo: geometry(x, t_bwd_layout, one, one, one),
                    bias: c.bias,
                    pad: [0, 0],
                },
                gradw_x: Src::Value,
                gradw_rows: x.rows(),
                gradw_chunk_rows: chunk_rows(&x),
                bias_chunk_rows: chunk_rows(&y),
                bias_lanes: taps * co4,
            }
        }
        Op::UpConv(c) => {
            let (k, s, p) = (window2(&c.kernel, 1), window2(&c.stride, 1), window2(&c.pad, 0));
            // forward: x interleaved by the stride and shifted, then a stride-1 correlation
            let z = Layout { h: y.h + k[0] - 1, w: y.w + k[1] - 1, ..x };
            let kz = scratch.add(z, false);
            let off = |a: usize| (k[a] - 1) as i64 - p[a] as i64;
            let fwd = corr(
                CorrSpec {
                    geo: geometry(z, y, k, [1, 1], [1, 1]),
                    bias: c.bias,
                    epilogue,
                    pad: [0, 0],
                    shuffle: None,
                },
                pack(false, true),
            )?;
            // input gradient: the strided convolution of dy zero-padded by p; the weight
            // gradient reads the same padded dy, so it is a scratch copy even when p = 0 (dy
            // itself lives in the gradient buffer)
            let padded = Layout { h: y.h + 2 * p[0], w: y.w + 2 * p[1], ..y };
            let kp = scratch.add(padded, false);
            let pad = Scatter { src: y, dst: padded, s: [1, 1], off: [p[0] as i64, p[1] as i64] };
            let bwd_geo = geometry(padded, x, k, s, [1, 1]);
            let bwd_in = corr(
                CorrSpec {
                    geo: bwd_geo.clone(),
                    bias: false,
                    epilogue: bwd_epilogue,
                    pad: [0, 0],
                    shuffle: None,
                },
                pack(true, false),
            )?;
            Family {
                kind: LinearKind::Transposed,
                out: c.out,
                bias: c.bias,
                taps: k[0] * k[1],
                fwd,
                fwd_src: Src::Scratch(kz),
                fwd_scatter: Some((kz, Scatter { src: x, dst: z, s, off: [off(0), off(1)] })),
                gradw_scatter: None,
                fwd_rows: y.rows(),
                bwd_in,
                bwd_src: Src::Scratch(kp),
                bwd_scatter: Some((kp, pad)),
                bwd_rows: x.rows(),
                gradw_spec: GradWSpec { geo: bwd_geo, bias: false, pad: [0, 0] },
                gradw_x: Src::Scratch(kp),
                gradw_rows: x.rows(),
                gradw_chunk_rows: chunk_rows(&x),
                bias_chunk_rows: chunk_rows(&y),
                bias_lanes: round4(c.out),
            }
        }
        Op::Dense(dn) => {
            // The batch is the row of positions: [N, 1, 1, F] as one row of N pixels.
            let (xr, yr) = (Layout { n: 1, h: 1, w: x.n, ..x }, Layout { n: 1, h: 1, w: x.n, ..y });
            let one = [1, 1];
            let geo = geometry(xr, yr, one, one, one);
            let fwd = corr(
                CorrSpec {
                    geo: geo.clone(),
                    bias: dn.bias || bn_follows,
                    epilogue,
                    pad: [0, 0],
                    shuffle: None,
                },
                pack(false, false),
            )?;
            let bwd_geo = geometry(yr, xr, one, one, one);
            let bwd_in = corr(
                CorrSpec { geo: bwd_geo, bias: false, epilogue: bwd_epilogue, pad: [0, 0], shuffle: None },
                pack(true, false),
            )?;
            Family {
                kind: LinearKind::Direct,
                out: dn.out,
                bias: dn.bias,
                taps: 1,
                fwd,
                fwd_src: Src::Value,
                fwd_scatter: None,
                gradw_scatter: None,
                fwd_rows: 1,
                bwd_in,
                bwd_src: Src::Value,
                bwd_scatter: None,
                bwd_rows: 1,
                gradw_spec: GradWSpec { geo, bias: dn.bias, pad: [0, 0] },
                gradw_x: Src::Value,
                gradw_rows: 1,
                // One row of N positions: one chunk.
                gradw_chunk_rows: 1,
                bias_chunk_rows: 1,
                bias_lanes: round4(dn.out),
            }
        }
        other => return Err(format!("`{}` is not a linear layer", other.kind())),
    };
    // At inference with a batchnorm and its activation folded in, a direct forward kernel
    // applying that activation as it stores (a Winograd one has its output variant).
    let fwd_folded = match (&wino_fwd, fusion.folded_epilogue) {
        (None, e) if e != Epilogue::None => {
            let spec = CorrSpec { epilogue: e, ..f.fwd.spec.clone() };
            let handle = Some(cg.corr(&spec, options.corr_blocking)?);
            Some(CorrCall { handle, f: None, spec, pack: f.fwd.pack, pack_lanes: f.fwd.pack_lanes })
        }
        _ => None,
    };
    let gradw_handle = match wino_gradw {
        Some(_) => None,
        None => Some(cg.gradw(&f.gradw_spec, options.gradw_blocking)?),
    };
    // The weight packing of each direction: its taps, or its Winograd call's transformed filter.
    let abt = (f.out, x.c, f.taps);
    let tile = |w: &Option<WinoCall>| w.as_ref().map(|w| w.spec.tile);
    let pack_fwd = WeightPack::generate(cg, PackSpec::new(abt, &f.fwd, tile(&wino_fwd)))?;
    let pack_bwd = WeightPack::generate(cg, PackSpec::new(abt, &f.bwd_in, tile(&wino_bwd)))?;
    let chunks = f.gradw_rows.div_ceil(f.gradw_chunk_rows);
    let finish_spec = FinishSpec::new(f.kind, abt, &f.gradw_spec, chunks, wino_gradw.as_ref());
    let finish = GradWFinish::generate(cg, finish_spec)?;
    let partials_len = match &wino_gradw {
        Some(w) => w.partials_len(),
        None => chunks * f.gradw_spec.partial_len(),
    };
    let fused_stats = |w: &Option<WinoCall>, forward: bool| {
        w.as_ref().filter(|w| w.gathers_stats()).map(|w| {
            let s = &w.spec;
            FusedStats::new(w.sums_len(), s.th() * s.tw(), s.co4, forward)
        })
    };
    let (stats, grad_stats) = (fused_stats(&wino_fwd, true), fused_stats(&wino_bwd, false));
    Ok(LinearPlan {
        kind: f.kind,
        a: f.out,
        b: x.c,
        taps: f.taps,
        bias: f.bias,
        fwd: f.fwd,
        fwd_folded,
        fwd_src: f.fwd_src,
        fwd_scatter: f.fwd_scatter,
        gradw_scatter: f.gradw_scatter,
        fwd_rows: f.fwd_rows,
        bwd_in: f.bwd_in,
        bwd_src: f.bwd_src,
        bwd_scatter: f.bwd_scatter,
        bwd_rows: f.bwd_rows,
        gradw_handle,
        gradw: None,
        partials_len,
        gradw_spec: f.gradw_spec,
        gradw_x: f.gradw_x,
        gradw_chunk_rows: f.gradw_chunk_rows,
        gradw_rows: f.gradw_rows,
        bias_chunk_rows: f.bias_chunk_rows,
        scratch: vec![vec![]; scratch.len.len()],
        scratch_len: scratch.len,
        scratch_persistent: scratch.persistent,
        pack_fwd,
        pack_bwd,
        packed_fwd: vec![],
        packed_bwd: vec![],
        bwd_packed: false,
        packed_bias: vec![0.0; f.bias_lanes],
        partials: vec![],
        wino_fwd,
        wino_bwd,
        wino_gradw,
        finish,
        stats,
        grad_stats,
        norm_load,
    })
}

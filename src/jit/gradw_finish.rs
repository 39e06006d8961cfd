//! The weight gradient's way out: one generated kernel per layer shape that turns the
//! weight-gradient chunks' f32 partial sums into the f64 gradient in the parameter's layout.
//!
//! For each reduced channel `r` of its range (tasks of whole channels, so every output element
//! is computed by exactly one task, in one fixed order: results do not depend on the thread
//! count) the kernel
//!
//! 1. adds the chunks' partial sums of row `r` (`points × lanes` floats: taps × output lanes
//!    for the direct kernel, the α² transform points of `dU[ξ][ci][co4]` for Winograd) in f64,
//!    in chunk order, into a block of a stack buffer (`f32x4` loads, `f64x2` sums);
//! 2. for Winograd applies the inverse filter transform `dg = Gᵀ dU G` per output lane (f64,
//!    the products and sums in the order of the native transform it replaces);
//! 3. stores each valid lane's taps straight into `dw[a][b][taps]` at the offsets the layer's
//!    [`LinearKind`] gives (pad lanes are dropped).
//!
//! The bias sums (a few lanes per chunk) stay native: [`GradWFinish::bias`].

use super::codegen::{Codegen, F32X4, FnHandle, GradWSpec, PTR, counted_loop, flags};
use super::linear::LinearKind;
use super::winograd_gradw::WinoGradW;
use super::winograd_tile::Tile;
use cranelift_codegen::ir::{
    ConstantData, Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use rayon::prelude::*;

/// `fn(partials, dw, row0, row1)`: writes the weight gradient of reduced channels `row0..row1`.
pub(crate) type FinishFn = unsafe extern "C" fn(*const f32, *mut f64, i64, i64);

/// Bytes of the f64 stack buffer one row's sums are gathered in (as the correlations' zero
/// row, well inside a worker thread's stack); wider rows are finished in lane blocks.
const BUF_BYTES: usize = 64 << 10;

/// Lanes summed per inner group: four `f32x4` loads, one cache line of each chunk's partial.
const GROUP_LANES: usize = 16;

/// How a row's summed lanes become weight-gradient elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Unpack {
    /// The row's points are the taps; lane `l`'s tap `t` goes to `dw[r·row + t + l·lane]`.
    Taps(usize),
    /// One point of `out·taps` lanes (a pixel-shuffle upconv): lane `o·taps + t` goes to
    /// `dw[r·row + t + o·lane]`.
    Shuffle(usize),
    /// The α² points of `dU`, transformed to 3×3 taps, stored as [`Unpack::Taps`].
    Winograd(Tile),
}

/// The finish of one layer's weight gradient, fully specialised (all constants).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FinishSpec {
    /// Chunks of partial sums and floats per chunk.
    pub chunks: usize,
    pub partial_len: usize,
    /// Reduced channels (rows of the sums) and floats between rows.
    pub rows: usize,
    pub row_stride: usize,
    /// Points per row and floats between them; lanes per point (a multiple of 4).
    pub points: usize,
    pub point_stride: usize,
    pub lanes: usize,
    pub unpack: Unpack,
    /// f64 elements of `dw` between rows and between lanes (output channels for `Shuffle`).
    pub dst_row: usize,
    pub dst_lane: usize,
    /// Lanes (output channels for `Shuffle`) that are real, not padding.
    pub valid: usize,
}

impl FinishSpec {
    /// The finish of a linear layer with weight `[a, b, taps]`, by its direct weight-gradient
    /// kernel `gs` over `chunks` chunks, or by its Winograd weight gradient `wino`.
    pub(crate) fn new(
        kind: LinearKind,
        (a, b, taps): (usize, usize, usize),
        gs: &GradWSpec,
        chunks: usize,
        wino: Option<&WinoGradW>,
    ) -> FinishSpec {
        if let Some(w) = wino {
            let s = &w.spec;
            // A Winograd weight gradient is a 3×3 conv's: sums `dU[ξ][ci][co4]`, ci = b.
            return FinishSpec {
                chunks: w.chunks(),
                partial_len: w.partial_len(),
                rows: s.ci,
                row_stride: s.co4,
                points: s.points(),
                point_stride: s.filter_point_stride(),
                lanes: s.co4,
                unpack: Unpack::Winograd(s.tile),
                dst_row: taps,
                dst_lane: b * taps,
                valid: a,
            };
        }
        let g = &gs.geo;
        let gtaps = g.k[0] * g.k[1];
        let base = FinishSpec {
            chunks,
            partial_len: gs.partial_len(),
            rows: g.ci,
            row_stride: gtaps * g.co4,
            points: gtaps,
            point_stride: g.co4,
            lanes: g.co4,
            unpack: Unpack::Taps(taps),
            dst_row: taps,
            dst_lane: b * taps,
            valid: a,
        };
        match kind {
            // sums [in][tap][out]
            LinearKind::Direct => base,
            // sums [out][tap][in]: upconv's dy role is its input
            LinearKind::Transposed => FinishSpec { dst_row: b * taps, dst_lane: taps, valid: b, ..base },
            // sums [in][out·taps + t] of a 1×1 kernel
            LinearKind::PixelShuffle(_) => FinishSpec { unpack: Unpack::Shuffle(taps), ..base },
        }
    }

    /// Lanes per block of the stack buffer: a multiple of 4 (and, for a shuffle, of its taps,
    /// so no output channel straddles two blocks).
    fn block_lanes(&self) -> usize {
        let q = match self.unpack {
            Unpack::Shuffle(t) => lcm(4, t),
            _ => 4,
        };
        let budget = (BUF_BYTES / 8 / self.points.max(1)) / q * q;
        budget.max(q).min(self.lanes.div_ceil(q) * q).max(4)
    }

    /// Taps per output lane the kernel stores.
    fn taps(&self) -> usize {
        match self.unpack {
            Unpack::Taps(t) | Unpack::Shuffle(t) => t,
            Unpack::Winograd(_) => 9,
        }
    }

    /// One past the last element of `dw` the kernel writes: `r·dst_row + t + l·dst_lane` for the
    /// last row, tap and valid lane.
    fn dw_end(&self) -> usize {
        (self.rows.max(1) - 1) * self.dst_row + self.taps() + (self.valid.max(1) - 1) * self.dst_lane
    }

    /// One past the last float of a chunk's partial the kernel reads.
    fn partial_end(&self) -> usize {
        (self.rows.max(1) - 1) * self.row_stride + (self.points.max(1) - 1) * self.point_stride + self.lanes
    }
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b.max(1));
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b.max(1)
}

/// A layer's generated finish; its function linked after the module is finished.
pub(crate) struct GradWFinish {
    pub spec: FinishSpec,
    handle: FnHandle,
    f: Option<FinishFn>,
}

impl GradWFinish {
    /// Generates (or reuses, for a layer of the same sizes) the finish kernel of `spec`; nothing
    /// when `cg` is dry.
    pub(crate) fn generate(cg: &mut Codegen, spec: FinishSpec) -> Result<GradWFinish, String> {
        let handle = cg.cached(format!("gradw finish {spec:?}"), |cg| {
            cg.custom(2, |b, p, _fma| emit_finish(b, p, &spec))
        })?;
        Ok(GradWFinish { spec, handle, f: None })
    }

    /// Takes the generated function's address once the module is finished.
    pub(crate) fn link(&mut self, cg: &Codegen) {
        self.f = Some(cg.finish_fn(self.handle));
    }

    /// Writes the weight gradient of `partials` (at least `chunks · partial_len` floats) into
    /// `dw` (`a·b·taps` elements in the parameter's layout), reduced channels in parallel tasks.
    pub(crate) fn run(&self, partials: &[f32], dw: &mut [f64]) {
        let Some(f) = self.f else { return };
        let s = &self.spec;
        assert!(s.partial_end() <= s.partial_len, "gradw finish: rows beyond a chunk's partial");
        assert!(partials.len() >= s.chunks * s.partial_len, "gradw finish: partials too short");
        assert_eq!(dw.len(), s.rows * s.taps() * s.valid, "gradw finish: weight gradient of the wrong size");
        assert!(s.dw_end() <= dw.len(), "gradw finish: stores beyond the weight gradient");
        let per_task = s.rows.div_ceil(rayon::current_num_threads() * 4).max(1);
        let (pp, dp) = (partials.as_ptr() as usize, dw.as_mut_ptr() as usize);
        (0..s.rows.div_ceil(per_task)).into_par_iter().for_each(|t| {
            let (r0, r1) = (t * per_task, ((t + 1) * per_task).min(s.rows));
            // SAFETY: the kernel was generated for `s`, whose sizes are constants in it: it reads
            // floats below `partial_end` of each of `chunks` partials of `partial_len` floats (in
            // bounds: asserted above) and writes, for rows `r0..r1`, the elements
            // `r·dst_row + t + l·dst_lane` of `dw` (`l` a valid lane or output channel, `t` a
            // tap), all below `dw_end` (asserted). The layouts of `LinearKind` map distinct
            // (r, t, l) to distinct elements, so no two tasks write the same element, and nothing
            // else touches `dw` meanwhile (`&mut`).
            unsafe { f(pp as *const f32, dp as *mut f64, r0 as i64, r1 as i64) };
        });
    }

    /// The bias gradient `db[a]` from the chunks' bias sums, added in f64 in chunk order (a few
    /// lanes per chunk: native). By the direct kernel they are f64 lanes stored in pairs of f32
    /// slots after the weight sums (a shuffle's lanes are `out·taps + t`, summed over the taps
    /// after the chunks); by Winograd's dy transform, f32 lanes after `dU`.
    pub(crate) fn bias(&self, partials: &[f32], db: &mut [f64]) {
        let s = &self.spec;
        let wlen = s.rows * s.row_stride;
        let lanes = match s.unpack {
            Unpack::Shuffle(t) => db.len() * t,
            _ => db.len(),
        };
        let mut sums = [0.0f64; 64];
        let mut big = vec![];
        let sums: &mut [f64] = if lanes <= 64 {
            &mut sums[..lanes]
        } else {
            big.resize(lanes, 0.0);
            &mut big
        };
        for part in partials.chunks_exact(s.partial_len).take(s.chunks) {
            match s.unpack {
                Unpack::Winograd(_) => {
                    let filter_len = s.points * s.point_stride;
                    for (sv, &p) in sums.iter_mut().zip(&part[filter_len..]) {
                        *sv += f64::from(p);
                    }
                }
                _ => {
                    for (c, sv) in sums.iter_mut().enumerate() {
                        let (lo, hi) = (part[wlen + 2 * c].to_bits(), part[wlen + 2 * c + 1].to_bits());
                        *sv += f64::from_bits(u64::from(hi) << 32 | u64::from(lo));
                    }
                }
            }
        }
        match s.unpack {
            Unpack::Shuffle(t) => {
                for (o, d) in db.iter_mut().enumerate() {
                    *d = sums[o * t..(o + 1) * t].iter().sum();
                }
            }
            _ => db.copy_from_slice(sums),
        }
    }
}

/// The body of the finish of `spec`; `p` is `[partials, dw, row0, row1]`.
fn emit_finish(b: &mut FunctionBuilder, p: &[Value], s: &FinishSpec) {
    let (parts, dw, r0, r1) = (p[0], p[1], p[2], p[3]);
    let lb_max = s.block_lanes();
    let slot = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (s.points * lb_max * 8) as u32,
        4,
    ));
    counted_loop(b, r0, r1, 1, |b, r| {
        let buf = b.ins().stack_addr(PTR, slot, 0);
        let src_off = b.ins().imul_imm_s(r, (s.row_stride * 4) as i64);
        let src_row = b.ins().iadd(parts, src_off);
        let dst_off = b.ins().imul_imm_s(r, (s.dst_row * 8) as i64);
        let dst_row = b.ins().iadd(dw, dst_off);
        for l0 in (0..s.lanes).step_by(lb_max) {
            let lb = lb_max.min(s.lanes - l0);
            emit_block_sums(b, s, (src_row, buf), (l0, lb, lb_max));
            emit_block_unpack(b, s, (buf, dst_row), (l0, lb, lb_max));
        }
    });
}

/// Phase 1: lanes `l0..l0 + lb` of every point of the row at `src_row`, summed over the chunks
/// in f64 in chunk order, into `buf[point][lane − l0]` (points `lb_max` f64 apart).
fn emit_block_sums(
    b: &mut FunctionBuilder,
    s: &FinishSpec,
    (src_row, buf): (Value, Value),
    (l0, lb, lb_max): (usize, usize, usize),
) {
    let zero = b.ins().iconst(PTR, 0);
    let points = b.ins().iconst(PTR, s.points as i64);
    counted_loop(b, zero, points, 1, |b, pt| {
        let so = b.ins().imul_imm_s(pt, (s.point_stride * 4) as i64);
        let src = b.ins().iadd(src_row, so);
        let src = b.ins().iadd_imm_s(src, (l0 * 4) as i64);
        let dof = b.ins().imul_imm_s(pt, (lb_max * 8) as i64);
        let dst = b.ins().iadd(buf, dof);
        let full = lb / GROUP_LANES;
        if full > 0 {
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, full as i64);
            counted_loop(b, zero, end, 1, |b, g| {
                let so = b.ins().imul_imm_s(g, (GROUP_LANES * 4) as i64);
                let src = b.ins().iadd(src, so);
                let dof = b.ins().imul_imm_s(g, (GROUP_LANES * 8) as i64);
                let dst = b.ins().iadd(dst, dof);
                emit_group_sum(b, s, src, dst, GROUP_LANES / 4);
            });
        }
        let tail = (lb % GROUP_LANES) / 4;
        if tail > 0 {
            let src = b.ins().iadd_imm_s(src, (full * GROUP_LANES * 4) as i64);
            let dst = b.ins().iadd_imm_s(dst, (full * GROUP_LANES * 8) as i64);
            emit_group_sum(b, s, src, dst, tail);
        }
    });
}

/// `vectors` × 4 lanes at `src` of every chunk (`partial_len` floats apart), each converted to
/// f64 and added in chunk order from 0, stored as f64 at `dst`.
fn emit_group_sum(b: &mut FunctionBuilder, s: &FinishSpec, src: Value, dst: Value, vectors: usize) {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    // Bytes 8..16 then 0..8: the high two f32 lanes moved low, for `fvpromote_low`.
    let high_half = b
        .func
        .dfg
        .immediates
        .push(ConstantData::from(vec![8u8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7]));
    let z = b.ins().f64const(0.0);
    let z = b.ins().splat(types::F64X2, z);
    let accs: Vec<Variable> = (0..2 * vectors).map(|_| b.declare_var(types::F64X2)).collect();
    for a in &accs {
        b.def_var(*a, z);
    }
    let ptr = b.declare_var(PTR);
    b.def_var(ptr, src);
    let zero = b.ins().iconst(PTR, 0);
    let chunks = b.ins().iconst(PTR, s.chunks as i64);
    counted_loop(b, zero, chunks, 1, |b, _c| {
        let pv = b.use_var(ptr);
        for j in 0..vectors {
            let x = b.ins().load(F32X4, flags(), pv, (16 * j) as i32);
            let lo = b.ins().fvpromote_low(x);
            let bytes = b.ins().bitcast(types::I8X16, le, x);
            let swapped = b.ins().shuffle(bytes, bytes, high_half);
            let hi4 = b.ins().bitcast(F32X4, le, swapped);
            let hi = b.ins().fvpromote_low(hi4);
            for (k, v) in [(2 * j, lo), (2 * j + 1, hi)] {
                let a = b.use_var(accs[k]);
                let sum = b.ins().fadd(a, v);
                b.def_var(accs[k], sum);
            }
        }
        let next = b.ins().iadd_imm_s(pv, (s.partial_len * 4) as i64);
        b.def_var(ptr, next);
    });
    for (k, a) in accs.iter().enumerate() {
        let v = b.use_var(*a);
        b.ins().store(flags(), v, dst, (16 * k) as i32);
    }
}

/// Phase 2: the valid lanes of block `l0..l0 + lb` from `buf` into the row's elements of `dw`
/// (from `dst_row`), transformed first for Winograd.
fn emit_block_unpack(
    b: &mut FunctionBuilder,
    s: &FinishSpec,
    (buf, dst_row): (Value, Value),
    (l0, lb, lb_max): (usize, usize, usize),
) {
    // Per unit (a lane, or a shuffle's output channel): the buffer and `dw` steps in bytes, and
    // the units of this block.
    let (units, first, buf_step) = match s.unpack {
        Unpack::Shuffle(t) => {
            let (o0, o1) = (l0 / t, ((l0 + lb) / t).min(s.valid));
            (o1.saturating_sub(o0), o0, t * 8)
        }
        _ => (s.valid.min(l0 + lb).saturating_sub(l0), l0, 8),
    };
    if units == 0 {
        return;
    }
    let bp = b.declare_var(PTR);
    b.def_var(bp, buf);
    let dp = b.declare_var(PTR);
    let d0 = b.ins().iadd_imm_s(dst_row, (first * s.dst_lane * 8) as i64);
    b.def_var(dp, d0);
    let zero = b.ins().iconst(PTR, 0);
    let end = b.ins().iconst(PTR, units as i64);
    counted_loop(b, zero, end, 1, |b, _u| {
        let (bv, dv) = (b.use_var(bp), b.use_var(dp));
        match s.unpack {
            Unpack::Taps(taps) => {
                for t in 0..taps {
                    let v = b.ins().load(types::F64, flags(), bv, (t * lb_max * 8) as i32);
                    b.ins().store(flags(), v, dv, (t * 8) as i32);
                }
            }
            Unpack::Shuffle(taps) => {
                for t in 0..taps {
                    let v = b.ins().load(types::F64, flags(), bv, (t * 8) as i32);
                    b.ins().store(flags(), v, dv, (t * 8) as i32);
                }
            }
            Unpack::Winograd(tile) => emit_inverse_transform(b, tile, bv, lb_max, dv),
        }
        let bn = b.ins().iadd_imm_s(bv, buf_step as i64);
        b.def_var(bp, bn);
        let dn = b.ins().iadd_imm_s(dv, (s.dst_lane * 8) as i64);
        b.def_var(dp, dn);
    });
}

/// One lane's `dg[kh·3 + kw] = Σ_j G[j][kw] · (Σ_i G[i][kh] · dU[i·α + j])` from `dU[ξ]` at
/// `du + ξ·lb_max·8`, stored as f64 at `dst + (kh·3 + kw)·8`. Products and sums in the native
/// transform's order (i, then j, ascending; zero coefficients skipped; no fused multiply-add),
/// so the result is the same to the bit.
fn emit_inverse_transform(b: &mut FunctionBuilder, tile: Tile, du: Value, lb_max: usize, dst: Value) {
    let a = tile.alpha();
    let g = tile.g();
    // Σ of `terms` (coefficient, value) in order: `c₀·v₀ + c₁·v₁ + …`, None when all are zero.
    fn dot(b: &mut FunctionBuilder, terms: impl Iterator<Item = (f64, Value)>) -> Option<Value> {
        let mut acc: Option<Value> = None;
        for (c, v) in terms.filter(|(c, _)| *c != 0.0) {
            let cv = b.ins().f64const(c);
            let p = b.ins().fmul(cv, v);
            acc = Some(match acc {
                Some(s) => b.ins().fadd(s, p),
                None => p,
            });
        }
        acc
    }
    for kh in 0..3 {
        // t[j] = Σ_i G[i][kh] · dU[i][j]
        let t: Vec<Option<Value>> = (0..a)
            .map(|j| {
                let terms: Vec<(f64, Value)> = (0..a)
                    .filter(|&i| g[i * 3 + kh] != 0.0)
                    .map(|i| {
                        let v = b.ins().load(types::F64, flags(), du, ((i * a + j) * lb_max * 8) as i32);
                        (g[i * 3 + kh], v)
                    })
                    .collect();
                dot(b, terms.into_iter())
            })
            .collect();
        for kw in 0..3 {
            let terms: Vec<(f64, Value)> = (0..a).filter_map(|j| t[j].map(|v| (g[j * 3 + kw], v))).collect();
            let v = match dot(b, terms.into_iter()) {
                Some(v) => v,
                None => b.ins().f64const(0.0),
            };
            b.ins().store(flags(), v, dst, ((kh * 3 + kw) * 8) as i32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::codegen::{GRADW_BLOCKING, Geometry, OptLevel};
    use super::super::exec::{sum_partials, unpack_oracle};
    use super::super::layout::{Layout, round4};
    use super::super::native::Pixel;
    use super::*;

    /// Deterministic values in [−1, 1).
    fn values(n: usize, mut seed: u64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f64 / (1u64 << 23) as f64) - 1.0
            })
            .collect()
    }

    /// Random partial sums of `chunks` chunks of `spec`: f32 weight sums, then (with `bias`)
    /// `co4` f64 bias sums as pairs of f32 slots, as the direct weight-gradient kernel leaves them.
    fn direct_partials(spec: &GradWSpec, chunks: usize, seed: u64) -> Vec<f32> {
        let (len, wlen) = (spec.partial_len(), spec.geo.weight_len());
        let v = values(chunks * len, seed);
        let mut p: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        if spec.bias {
            for c in 0..chunks {
                for l in 0..spec.geo.co4 {
                    let bits = (v[c * len + l] * 100.0).to_bits();
                    p[c * len + wlen + 2 * l] = f32::from_bits(bits as u32);
                    p[c * len + wlen + 2 * l + 1] = f32::from_bits((bits >> 32) as u32);
                }
            }
        }
        p
    }

    /// A weight-gradient spec of `ci` reduced channels, `co` output lanes (rounded up to 4) and
    /// a `k` window (only these sizes matter to the finish).
    fn gradw_spec(ci: usize, co: usize, k: [usize; 2], bias: bool) -> GradWSpec {
        let geo = Geometry {
            ho: 4,
            wo: 4,
            hp: 4 + k[0] - 1,
            wp: 4 + k[1] - 1,
            k,
            s: [1, 1],
            d: [1, 1],
            ci,
            csx: round4(ci),
            co4: round4(co),
            cso: round4(co),
        };
        GradWSpec { geo, bias, pad: [0, 0] }
    }

    /// The generated finish of `spec` run over `partials`: (dw, db).
    fn generated(
        cg: &mut Codegen,
        spec: FinishSpec,
        partials: &[f32],
        abt: (usize, usize, usize),
        bias: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut fin = GradWFinish::generate(cg, spec).expect("generate");
        cg.finish().expect("finish");
        fin.link(cg);
        let (a, b, taps) = abt;
        // Filled with NaN: every element must be written.
        let mut dw = vec![f64::NAN; a * b * taps];
        fin.run(partials, &mut dw);
        let mut db = vec![f64::NAN; if bias { a } else { 0 }];
        if bias {
            fin.bias(partials, &mut db);
        }
        (dw, db)
    }

    fn pixel() -> LinearKind {
        let l = Layout { n: 1, h: 1, w: 1, c: 1, cs: 4 };
        LinearKind::PixelShuffle(Pixel { x: l, y: l, k: [1, 1], t_bwd: 0, cs_bwd: 4 })
    }

    /// A finish case: (what, kind, a, b, window, bias, chunks).
    type Case = (&'static str, LinearKind, usize, usize, [usize; 2], bool, usize);

    /// Direct conv, dense, transposed and pixel-shuffle upconvs, channel counts that are and are
    /// not multiples of 4, with and without bias: the generated finish gives the native sums
    /// and unpack bit for bit.
    #[test]
    fn generated_finish_matches_the_native_sum_and_unpack() {
        // (kind, a, b, window, bias, chunks); the gradw geometry's reduced channels and lanes
        // follow the kind, as `lower.rs` builds them.
        let cases: Vec<Case> = vec![
            ("conv", LinearKind::Direct, 8, 4, [3, 3], true, 5),
            ("conv", LinearKind::Direct, 5, 3, [3, 3], false, 3),
            ("conv", LinearKind::Direct, 21, 6, [1, 3], true, 2),
            ("conv", LinearKind::Direct, 37, 2, [3, 3], true, 1),
            // a row wider than one stack block
            ("conv", LinearKind::Direct, 1000, 1, [3, 3], true, 2),
            ("dense", LinearKind::Direct, 10, 7, [1, 1], true, 1),
            ("dense", LinearKind::Direct, 1100, 3, [1, 1], false, 2),
            ("upconv", LinearKind::Transposed, 6, 4, [2, 2], false, 4),
            ("upconv", LinearKind::Transposed, 3, 5, [3, 3], false, 3),
            ("pixel", pixel(), 8, 3, [2, 2], true, 3),
            ("pixel", pixel(), 3, 4, [3, 3], true, 2),
            ("pixel", pixel(), 5, 2, [2, 2], false, 4),
            ("pixel", pixel(), 2100, 2, [2, 2], true, 2),
        ];
        for (what, kind, a, b, k, bias, chunks) in cases {
            let taps = k[0] * k[1];
            let gs = match kind {
                LinearKind::Direct => gradw_spec(b, a, k, bias),
                LinearKind::Transposed => gradw_spec(a, b, k, false),
                LinearKind::PixelShuffle(_) => gradw_spec(b, a * taps, [1, 1], bias),
            };
            let partials = direct_partials(&gs, chunks, (a * 31 + b * 7 + taps) as u64);
            let (wlen, co4) = (gs.geo.weight_len(), gs.geo.co4);
            let sum = sum_partials(&partials, gs.partial_len(), wlen, if gs.bias { co4 } else { 0 });
            let (dw0, db0) = unpack_oracle(kind, (a, b, taps), (co4, wlen), &sum, gs.bias);
            let mut cg = Codegen::new(OptLevel::None).expect("host");
            let spec = FinishSpec::new(kind, (a, b, taps), &gs, chunks, None);
            let (dw, db) = generated(&mut cg, spec, &partials, (a, b, taps), gs.bias);
            assert_eq!(dw, dw0, "{what} a {a} b {b} k {k:?} bias {bias}: weight gradient");
            assert_eq!(db, db0, "{what} a {a} b {b} k {k:?} bias {bias}: bias gradient");
        }
    }

    /// Winograd F(4×4) and F(2×2), with and without bias, channel counts that are and are not
    /// multiples of 4, and a row wider than one stack block: the generated finish (sums,
    /// inverse filter transform, unpack) gives the native one's result bit for bit.
    #[test]
    fn generated_winograd_finish_matches_the_native_one() {
        for (tile, a, b, bias, n) in [
            (Tile::F4, 8, 4, true, 3),
            (Tile::F4, 6, 3, false, 2),
            (Tile::F2, 5, 7, true, 2),
            (Tile::F2, 12, 2, false, 3),
            (Tile::F6, 7, 5, true, 2),
            (Tile::F4, 230, 2, true, 2),
        ] {
            let geo = Geometry {
                ho: 8,
                wo: 8,
                hp: 10,
                wp: 10,
                k: [3, 3],
                s: [1, 1],
                d: [1, 1],
                ci: b,
                csx: round4(b),
                co4: round4(a),
                cso: round4(a),
            };
            let mut cg = Codegen::new(OptLevel::None).expect("host");
            let wg = WinoGradW::generate(&mut cg, tile, &geo, (None, None), n, bias, GRADW_BLOCKING)
                .expect("winograd");
            let partials: Vec<f32> =
                values(wg.partials_len(), (a * 13 + b) as u64).iter().map(|&x| x as f32).collect();
            let sum = wg.finish_oracle(&partials);
            let (co4, wlen) = (geo.co4, geo.weight_len());
            let (dw0, db0) = unpack_oracle(LinearKind::Direct, (a, b, 9), (co4, wlen), &sum, bias);
            let gs = GradWSpec { geo, bias, pad: [0, 0] };
            let spec = FinishSpec::new(LinearKind::Direct, (a, b, 9), &gs, 0, Some(&wg));
            let (dw, db) = generated(&mut cg, spec, &partials, (a, b, 9), bias);
            assert_eq!(dw, dw0, "{tile:?} a {a} b {b} bias {bias}: weight gradient");
            assert_eq!(db, db0, "{tile:?} a {a} b {b} bias {bias}: bias gradient");
        }
    }

    /// A dry code generator plans the finish without generating it, and its run writes nothing.
    #[test]
    fn a_dry_plan_generates_no_finish() {
        let mut cg = Codegen::dry().expect("host");
        let gs = gradw_spec(3, 5, [3, 3], true);
        let fin =
            GradWFinish::generate(&mut cg, FinishSpec::new(LinearKind::Direct, (5, 3, 9), &gs, 2, None))
                .expect("plan");
        let mut dw = vec![1.0; 5 * 3 * 9];
        fin.run(&[], &mut dw);
        assert!(dw.iter().all(|&v| v == 1.0));
    }
}

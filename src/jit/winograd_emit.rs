//! Cranelift: the two transform kernels of a Winograd layer ([`super::winograd`]), specialised
//! on the layer's sizes and vectorised over 4 channels (the NHWC lanes):
//!
//! - the input transform `V = Bᵀ d B` of every (m+2)×(m+2) input tile, for a range of tile rows,
//!   into the chunk's `V[point][tile][ci4]`;
//! - the output transform `y = act(Aᵀ M A + b)` of the chunk's `M[point][tile][co4]`, stored at
//!   the tile's m×m output positions (fewer at the bottom and right edges) with the bias and
//!   the same epilogues as the direct kernel;
//! - the output-gradient transform `A dY Aᵀ` of the weight gradient.
//!
//! Their variants: the output transform summing a batchnorm's statistics per tile as it stores
//! ([`TileSums`]), and the input transform normalising a batchnorm's input as it loads it
//! ([`Normalise`]). The products between them are the direct correlation kernel as a 1×1 GEMM
//! per point. Each transform is separable and runs as two loops over the tile's lines through a
//! stack stage ([`transform_pass`]), forming the rows of its matrix with the ±p pairs shared
//! ([`super::winograd_combos`]).

use super::codegen::{Epilogue, F32X4, PTR, counted_loop, flags, fmadd};
use super::linear_emit::{apply_epilogue, mask_select};
use super::winograd::WinoSpec;
use super::winograd_combos::{Consts, combos};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::FunctionBuilder;

/// `fn(x, v, coef, row0, row1)`: tile rows `row0..row1` (`n·th + tile row`) of the input `x`
/// (read in place, zeros around it) into `v`, the chunk's transformed tiles (tile row `row0`
/// first). The variant with a [`Normalise`] reads its coefficients at `coef`; the plain one
/// ignores it.
pub type InputFn = unsafe extern "C" fn(*const f32, *mut f32, *const f32, i64, i64);
/// `fn(m, bias, y, mask, sums, shift, q, row0, row1)`: the chunk's products `m` (tile row `row0`
/// first) into the output rows of tile rows `row0..row1`. The variants with [`TileSums`] also
/// write each tile's per-channel sums (a batchnorm's, [`super::norm::FusedStats`]) at
/// `sums + tile·2·co4` (`tile = row·tw + column`; two sums of `co4` lanes each); the plain
/// variant ignores `sums`, `shift` and `q`.
pub type OutputFn = unsafe extern "C" fn(
    *const f32,
    *const f32,
    *mut f32,
    *const f32,
    *mut f32,
    *const f32,
    *const f32,
    i64,
    i64,
);

/// The per-tile sums an output transform can gather as it stores `y`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum TileSums {
    /// `Σ (y − s)` and `Σ (y − s)²`: a batchnorm's statistics in the forward pass.
    Moments,
    /// `Σ y` and `Σ y·(q − s)`, `q` read at `y`'s positions (same layout): a batchnorm's
    /// backward sums, `y` its output gradient and `q` its input. With `mask`, the layer's mask
    /// epilogue takes its sign from the batchnorm's pre-activation `(q − s)·scale + d` (the
    /// coefficients at `shift`, whose first block is `s`), recomputed as the consumer's input
    /// transforms computed it, instead of from a stored activation.
    WithOperand { mask: Option<Normalise> },
}
/// A batchnorm's normalisation, and the relu/leaky_relu fused after it, applied by a Winograd
/// kernel to each value of the batchnorm's input as it loads it (training: the consumer conv's
/// input transforms read the batchnorm's input, and no normalised copy is stored):
/// `act((x − shift)·scale + d)`, with the batchnorm's per-channel lanes `[shift | scale | c | d]`
/// at `coef`, blocks `cs` floats apart ([`super::norm::NormPlan`]). The operations are those of
/// the batchnorm's own normalisation kernel ([`super::channel`]'s affine) in their order, so the
/// values are that kernel's bit for bit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Normalise {
    pub cs: usize,
    /// `None`, `Relu` or `LeakyRelu` (slope ≥ 0).
    pub act: Epilogue,
}

impl Normalise {
    /// The shift, scale and `d` lanes of the channel block at byte offset `cb`.
    fn coefficients(&self, b: &mut FunctionBuilder, coef: Value, cb: Value) -> [Value; 3] {
        let at = b.ins().iadd(coef, cb);
        let lanes = |b: &mut FunctionBuilder, block: usize| {
            b.ins().load(F32X4, flags(), at, (block * self.cs * 4) as i32)
        };
        [lanes(b, 0), lanes(b, 1), lanes(b, 3)]
    }

    /// `(x − shift)·scale + d`: the activation's input.
    fn pre_activation(
        b: &mut FunctionBuilder,
        has_fma: bool,
        x: Value,
        [shift, scale, d]: [Value; 3],
    ) -> Value {
        let x = b.ins().fsub(x, shift);
        fmadd(b, has_fma, x, scale, d)
    }

    /// The normalised, activated value of `x`.
    fn apply(&self, b: &mut FunctionBuilder, has_fma: bool, x: Value, k: [Value; 3], zero: Value) -> Value {
        let r = Self::pre_activation(b, has_fma, x, k);
        apply_epilogue(b, self.act, r, zero, (zero, 0), has_fma)
    }
}

/// `fn(dy, yhat, bias, row0, row1)`: the output-gradient transform of the Winograd weight
/// gradient ([`emit_dy_transform`]).
pub type DyFn = unsafe extern "C" fn(*const f32, *mut f32, *mut f32, i64, i64);

/// 0.0 in all four lanes.
fn splat_zero(b: &mut FunctionBuilder) -> Value {
    let z = b.ins().f32const(0.0);
    b.ins().splat(F32X4, z)
}

/// A 16-byte-aligned stack slot of `vectors` f32x4 values: the intermediate `L · d` of a
/// separable transform.
fn stage_slot(b: &mut FunctionBuilder, vectors: usize) -> cranelift_codegen::ir::StackSlot {
    b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (16 * vectors) as u32, 4))
}

/// `0..count` as a loop: the two passes of a separable transform are loops over the lines of
/// the tile, so the generated code holds one line's values at a time (α of them, not α²):
/// straight-line α×α transforms made regalloc the larger part of compile time for F(6×6).
fn each_line(b: &mut FunctionBuilder, count: usize, body: impl FnMut(&mut FunctionBuilder, Value)) {
    let zero = b.ins().iconst(PTR, 0);
    let end = b.ins().iconst(PTR, count as i64);
    counted_loop(b, zero, end, 1, body);
}

/// Where one pass of a transform reads or writes: line `s`'s value `q` at byte offset
/// `s·line + q·step` from `base`.
#[derive(Clone, Copy)]
struct Lines {
    base: Value,
    line: i64,
    step: i64,
}

/// What a transform pass does to each value it loads (a [`Normalise`]), if anything.
type OnLoad<'a> = Option<&'a dyn Fn(&mut FunctionBuilder, Value) -> Value>;

/// One pass of a separable transform over `lines` lines: each line's `n` values (the first
/// `known` loaded, mapped by `on_load`; the rest known zeros) combined by the first `keep` rows
/// of `l` (`· × n`), the results stored in order (a zero vector where a combination is known to
/// be zero).
fn transform_pass(
    b: &mut FunctionBuilder,
    has_fma: bool,
    (l, n, keep): (&[f64], usize, usize),
    (lines, known): (usize, usize),
    (src, on_load): (Lines, OnLoad),
    dst: Lines,
) {
    each_line(b, lines, |b, s| {
        let so = b.ins().imul_imm_s(s, src.line);
        let from = b.ins().iadd(src.base, so);
        let dof = b.ins().imul_imm_s(s, dst.line);
        let to = b.ins().iadd(dst.base, dof);
        let mut k = Consts::default();
        let d: Vec<Option<Value>> = (0..n)
            .map(|q| {
                (q < known).then(|| {
                    let v = b.ins().load(F32X4, flags(), from, (q as i64 * src.step) as i32);
                    on_load.map_or(v, |f| f(b, v))
                })
            })
            .collect();
        for (p, val) in combos(b, &mut k, has_fma, l, &d, keep).into_iter().enumerate() {
            let val = val.unwrap_or_else(|| k.get(b, 0.0));
            b.ins().store(flags(), val, to, (p as i64 * dst.step) as i32);
        }
    });
}

/// The input transform `V = Bᵀ d B` of one tile and channel block: `d` (α×α) at `src` with
/// the given (row, column) byte strides, `V` point `(i, j)` stored at `v + (i·α + j)·point_bytes`,
/// `t` a stage of α² vectors; each input mapped by `on_load` as it is loaded. Pass 1 (per
/// column j): `t[·][j] = Bᵀ d[·][j]`; pass 2 (per row i): `V[i][·] = B t[i][·]`.
fn input_tile(
    b: &mut FunctionBuilder,
    has_fma: bool,
    (bt, a): (&[f64], usize),
    (src, row_stride, col_stride, on_load): (Value, i64, i64, OnLoad),
    t: Value,
    (v, point_bytes): (Value, i64),
) {
    let stage_col = Lines { base: t, line: 16, step: (16 * a) as i64 };
    let stage_row = Lines { base: t, line: (16 * a) as i64, step: 16 };
    let input = Lines { base: src, line: col_stride, step: row_stride };
    transform_pass(b, has_fma, (bt, a, a), (a, a), (input, on_load), stage_col);
    let points = Lines { base: v, line: a as i64 * point_bytes, step: point_bytes };
    transform_pass(b, has_fma, (bt, a, a), (a, a), (stage_row, None), points);
}

/// Splits tile row `r` into the input (or output) row of its first position: `n·h + th·m`.
fn first_row(b: &mut FunctionBuilder, r: Value, th: usize, m: usize, h: usize) -> (Value, Value) {
    let n = b.ins().udiv_imm_s(r, th as i64);
    let nth = b.ins().imul_imm_s(n, th as i64);
    let t_h = b.ins().isub(r, nth);
    let nh = b.ins().imul_imm_s(n, h as i64);
    let tm = b.ins().imul_imm_s(t_h, m as i64);
    (b.ins().iadd(nh, tm), t_h)
}

/// The tile rows (or columns) `t` of `count` whose α inputs `t·m + i − off` all lie in
/// `0..len`: one contiguous run `lo..hi` (empty when there is none).
fn inside(count: usize, m: usize, alpha: usize, off: i64, len: usize) -> (usize, usize) {
    let whole = |t: usize| (t * m) as i64 - off >= 0 && (t * m + alpha) as i64 - off <= len as i64;
    let all: Vec<usize> = (0..count).filter(|&t| whole(t)).collect();
    match (all.first(), all.last()) {
        (Some(&lo), Some(&hi)) => (lo, hi + 1),
        _ => (0, 0),
    }
}

/// The input-transform kernel body ([`InputFn`]). The input is read where it is, with `off`
/// zero rows and columns before it: a tile whose inputs all lie inside (the interior) loads
/// them with constant offsets; a border tile is first staged on the stack by a small loop that
/// tests each input's row and column (zeros outside). Two transform bodies per kernel whatever
/// the padding, so the generated code stays small (compile time). With `norm`, each input
/// inside is normalised (and activated) as it is loaded; the zeros around stay zeros (the
/// padding is the normalised value's).
pub(crate) fn emit_input(
    b: &mut FunctionBuilder,
    p: &[Value],
    spec: &WinoSpec,
    has_fma: bool,
    norm: Option<Normalise>,
) {
    let (x, v, coef, row0, row1) = (p[0], p[1], p[2], p[3], p[4]);
    let (m, a) = (spec.tile.m(), spec.tile.alpha());
    let bt = spec.tile.bt();
    let (ci4, tw, th) = (spec.ci4(), spec.tw(), spec.th());
    let point_bytes = (spec.point_stride(ci4) * 4) as i64;
    let pos_bytes = (spec.csx * 4) as i64;
    let row_bytes = spec.wp as i64 * pos_bytes;
    let (r_lo, r_hi) = inside(th, m, a, spec.off[0], spec.hp);
    let (c_lo, c_hi) = inside(tw, m, a, spec.off[1], spec.wp);
    let stage = stage_slot(b, a * a);
    let t_stage = stage_slot(b, a * a);
    counted_loop(b, row0, row1, 1, |b, r| {
        let n = b.ins().udiv_imm_s(r, th as i64);
        let nth = b.ins().imul_imm_s(n, th as i64);
        let t_h = b.ins().isub(r, nth);
        // Source row n·hp + t_h·m − off₀, column −off₁: the tile row's first input, which may
        // lie outside `x` (only inputs inside are loaded).
        let nh = b.ins().imul_imm_s(n, spec.hp as i64);
        let tm = b.ins().imul_imm_s(t_h, m as i64);
        let sr = b.ins().iadd(nh, tm);
        let xoff = b.ins().imul_imm_s(sr, row_bytes);
        let xoff = b.ins().iadd_imm_s(xoff, -spec.off[0] * row_bytes - spec.off[1] * pos_bytes);
        let xrow = b.ins().iadd(x, xoff);
        let local = b.ins().isub(r, row0);
        let voff = b.ins().imul_imm_s(local, (tw * ci4 * 4) as i64);
        let vrow = b.ins().iadd(v, voff);
        // Whether this tile row's inputs are all inside: unsigned (t_h − lo) < (hi − lo).
        let rel = b.ins().iadd_imm_s(t_h, -(r_lo as i64));
        let row_whole = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, rel, (r_hi - r_lo) as i64);
        // The input rows of this tile row: inside or not (unsigned compare: below 0 wraps).
        // The first input row of this tile row (may be negative: unsigned compares below).
        let first_in = b.ins().iadd_imm_s(tm, -spec.off[0]);
        let zero = b.ins().iconst(PTR, 0);
        let end = b.ins().iconst(PTR, tw as i64);
        counted_loop(b, zero, end, 1, |b, t| {
            let xo = b.ins().imul_imm_s(t, m as i64 * pos_bytes);
            let xt = b.ins().iadd(xrow, xo);
            let vo = b.ins().imul_imm_s(t, (ci4 * 4) as i64);
            let vt = b.ins().iadd(vrow, vo);
            let crel = b.ins().iadd_imm_s(t, -(c_lo as i64));
            let col_whole = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, crel, (c_hi - c_lo) as i64);
            let whole = b.ins().band(row_whole, col_whole);
            let (interior, border, next) = (b.create_block(), b.create_block(), b.create_block());
            b.ins().brif(whole, interior, &[], border, &[]);
            b.switch_to_block(interior);
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, (ci4 * 4) as i64);
            counted_loop(b, zero, end, 16, |b, cb| {
                let xb = b.ins().iadd(xt, cb);
                let vb = b.ins().iadd(vt, cb);
                let ts = b.ins().stack_addr(PTR, t_stage, 0);
                let load = norm.map(|nm| (nm, nm.coefficients(b, coef, cb), splat_zero(b)));
                let f = |b: &mut FunctionBuilder, x| {
                    load.map_or(x, |(nm, k, zero)| nm.apply(b, has_fma, x, k, zero))
                };
                let on_load: OnLoad = load.is_some().then_some(&f);
                input_tile(b, has_fma, (bt, a), (xb, row_bytes, pos_bytes, on_load), ts, (vb, point_bytes));
            });
            b.ins().jump(next, &[]);
            // Border: per channel block, the α×α inputs staged on the stack by a small loop
            // (each input loaded from its address when inside, else from the buffer's start —
            // always readable — and replaced by zero), then the same body reading the stage.
            b.switch_to_block(border);
            let col0 = b.ins().imul_imm_s(t, m as i64);
            let col0 = b.ins().iadd_imm_s(col0, -spec.off[1]);
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, (ci4 * 4) as i64);
            counted_loop(b, zero, end, 16, |b, cb| {
                let xb = b.ins().iadd(xt, cb);
                let vb = b.ins().iadd(vt, cb);
                let safe = b.ins().iadd(x, cb);
                let st = b.ins().stack_addr(PTR, stage, 0);
                let zero_v = splat_zero(b);
                let k = norm.map(|nm| nm.coefficients(b, coef, cb));
                let zero = b.ins().iconst(PTR, 0);
                let end = b.ins().iconst(PTR, (a * a) as i64);
                counted_loop(b, zero, end, 1, |b, q| {
                    let i = b.ins().udiv_imm_s(q, a as i64);
                    let ia = b.ins().imul_imm_s(i, a as i64);
                    let j = b.ins().isub(q, ia);
                    let ih = b.ins().iadd(first_in, i);
                    let iw = b.ins().iadd(col0, j);
                    let row_ok = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ih, spec.hp as i64);
                    let col_ok = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, iw, spec.wp as i64);
                    let ok = b.ins().band(row_ok, col_ok);
                    let ro = b.ins().imul_imm_s(i, row_bytes);
                    let co = b.ins().imul_imm_s(j, pos_bytes);
                    let at = b.ins().iadd(xb, ro);
                    let at = b.ins().iadd(at, co);
                    let addr = b.ins().select(ok, at, safe);
                    let val = b.ins().load(F32X4, flags(), addr, 0);
                    let val = match (norm, k) {
                        (Some(nm), Some(k)) => nm.apply(b, has_fma, val, k, zero_v),
                        _ => val,
                    };
                    let val = b.ins().select(ok, val, zero_v);
                    let so = b.ins().imul_imm_s(q, 16);
                    let sa = b.ins().iadd(st, so);
                    b.ins().store(flags(), val, sa, 0);
                });
                let ts = b.ins().stack_addr(PTR, t_stage, 0);
                input_tile(b, has_fma, (bt, a), (st, (16 * a) as i64, 16, None), ts, (vb, point_bytes));
            });
            b.ins().jump(next, &[]);
            b.switch_to_block(next);
        });
    });
}

/// The output-transform kernel body ([`OutputFn`]).
/// With `stats`, a variant that also sums the values it stores per tile.
pub(crate) fn emit_output(
    b: &mut FunctionBuilder,
    p: &[Value],
    spec: &WinoSpec,
    has_fma: bool,
    stats: Option<TileSums>,
) {
    let (mm, bias, y, mask, sums, shift, q) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let (row0, row1) = (p[7], p[8]);
    // `q` at an output address `a`: `a + (q − y)`.
    let q_delta = b.ins().isub(q, y);
    let (m, a) = (spec.tile.m(), spec.tile.alpha());
    let at = spec.tile.at();
    let (co4, tw, th) = (spec.co4, spec.tw(), spec.th());
    let point_bytes = (spec.point_stride(co4) * 4) as i64;
    let y_row_bytes = (spec.wo * spec.cso * 4) as i64;
    let t_stage = stage_slot(b, m * a);
    counted_loop(b, row0, row1, 1, |b, r| {
        let (yr, t_h) = first_row(b, r, th, m, spec.ho);
        let yoff = b.ins().imul_imm_s(yr, y_row_bytes);
        let yrow = b.ins().iadd(y, yoff);
        let mrow = b.ins().iadd(mask, yoff);
        let local = b.ins().isub(r, row0);
        let moff = b.ins().imul_imm_s(local, (tw * co4 * 4) as i64);
        let mmrow = b.ins().iadd(mm, moff);
        // The sums of tile (r, 0): the tiles' sums are as contiguous as their products.
        let soff = b.ins().imul_imm_s(r, (tw * 2 * co4 * 4) as i64);
        let srow = b.ins().iadd(sums, soff);
        // One tile at tile column `t`, `rv × cv` of its outputs inside the layer.
        let tile = |b: &mut FunctionBuilder, t: Value, rv: usize, cv: usize| {
            let yo = b.ins().imul_imm_s(t, (m * spec.cso * 4) as i64);
            let yt = b.ins().iadd(yrow, yo);
            let mt = b.ins().iadd(mrow, yo);
            let mo = b.ins().imul_imm_s(t, (co4 * 4) as i64);
            let mmt = b.ins().iadd(mmrow, mo);
            let so = b.ins().imul_imm_s(t, (2 * co4 * 4) as i64);
            let st = b.ins().iadd(srow, so);
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, (co4 * 4) as i64);
            counted_loop(b, zero, end, 16, |b, cb| {
                let src = b.ins().iadd(mmt, cb);
                let dst = b.ins().iadd(yt, cb);
                let mdst = b.ins().iadd(mt, cb);
                let ts = b.ins().stack_addr(PTR, t_stage, 0);
                let bv = if spec.bias {
                    let bb = b.ins().iadd(bias, cb);
                    Some(b.ins().load(F32X4, flags(), bb, 0))
                } else {
                    None
                };
                // The tile's sums of `y − s` and `(y − s)²`, carried over its lines.
                let acc = stats.map(|kind| {
                    let sa = b.ins().iadd(shift, cb);
                    let s = b.ins().load(F32X4, flags(), sa, 0);
                    let zero_v = b.ins().f32const(0.0);
                    let zero_v = b.ins().splat(F32X4, zero_v);
                    let (s1, s2) = (b.declare_var(F32X4), b.declare_var(F32X4));
                    b.def_var(s1, zero_v);
                    b.def_var(s2, zero_v);
                    let mask = match kind {
                        TileSums::WithOperand { mask: Some(nm) } => Some(nm.coefficients(b, shift, cb)),
                        _ => None,
                    };
                    (kind, s, s1, s2, mask)
                });
                // Pass 1 (per column j of M): t[i][j] = Σ_q Aᵀ[i][q]·M[q][j], rows i < rv.
                let m_col = Lines { base: src, line: point_bytes, step: a as i64 * point_bytes };
                let stage_col = Lines { base: ts, line: 16, step: (16 * a) as i64 };
                transform_pass(b, has_fma, (at, a, rv), (a, a), (m_col, None), stage_col);
                // Pass 2 (per output row i): y[i][j] = Σ_q Aᵀ[j][q]·t[i][q] (+ bias, epilogue).
                each_line(b, rv, |b, i| {
                    let to = b.ins().imul_imm_s(i, (16 * a) as i64);
                    let trow = b.ins().iadd(ts, to);
                    let yo = b.ins().imul_imm_s(i, y_row_bytes);
                    let yrow = b.ins().iadd(dst, yo);
                    let mrow = b.ins().iadd(mdst, yo);
                    let mut k = Consts::default();
                    let d: Vec<Option<Value>> =
                        (0..a).map(|q| Some(b.ins().load(F32X4, flags(), trow, (16 * q) as i32))).collect();
                    let zero_v = k.get(b, 0.0);
                    for (j, val) in combos(b, &mut k, has_fma, at, &d, cv).into_iter().enumerate() {
                        let mut val = val.unwrap_or(zero_v);
                        if let Some(bv) = bv {
                            val = b.ins().fadd(val, bv);
                        }
                        let off = (j * spec.cso * 4) as i32;
                        let qv = match acc {
                            Some((TileSums::WithOperand { .. }, ..)) => {
                                let qa = b.ins().iadd(yrow, q_delta);
                                Some(b.ins().load(F32X4, flags(), qa, off))
                            }
                            _ => None,
                        };
                        let val = match (acc, qv) {
                            (Some((TileSums::WithOperand { mask: Some(_) }, .., Some(k))), Some(qv)) => {
                                let r = Normalise::pre_activation(b, has_fma, qv, k);
                                mask_select(b, spec.epilogue, val, r, zero_v)
                            }
                            _ => apply_epilogue(b, spec.epilogue, val, zero_v, (mrow, off), has_fma),
                        };
                        b.ins().store(flags(), val, yrow, off);
                        if let Some((kind, s, s1, s2, _)) = acc {
                            let (first, second) = match (kind, qv) {
                                (TileSums::WithOperand { .. }, Some(qv)) => (val, b.ins().fsub(qv, s)),
                                _ => {
                                    let d = b.ins().fsub(val, s);
                                    (d, d)
                                }
                            };
                            let a1 = b.use_var(s1);
                            let a1 = b.ins().fadd(a1, first);
                            b.def_var(s1, a1);
                            let a2 = b.use_var(s2);
                            let a2 = fmadd(b, has_fma, first, second, a2);
                            b.def_var(s2, a2);
                        }
                    }
                });
                if let Some((_, _, s1, s2, _)) = acc {
                    let dst = b.ins().iadd(st, cb);
                    let a1 = b.use_var(s1);
                    let a2 = b.use_var(s2);
                    b.ins().store(flags(), a1, dst, 0);
                    b.ins().store(flags(), a2, dst, (co4 * 4) as i32);
                }
            });
        };
        each_tile_of_row(b, (spec.ho, spec.wo, m), th, t_h, &tile);
    });
}

/// Emits `tile(b, t, rows, cols)` for every m×m tile of tile row `t_h` (of `th`) of an
/// `ho × wo` output: the full tiles in a loop over `t`, then the last column's partial tile;
/// the last tile row, when `ho` is not a multiple of `m`, has fewer rows (a branch on `t_h`).
fn each_tile_of_row(
    b: &mut FunctionBuilder,
    (ho, wo, m): (usize, usize, usize),
    th: usize,
    t_h: Value,
    tile: &dyn Fn(&mut FunctionBuilder, Value, usize, usize),
) {
    let row_of_tiles = |b: &mut FunctionBuilder, rv: usize| {
        let full = wo / m;
        if full > 0 {
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, full as i64);
            counted_loop(b, zero, end, 1, |b, t| tile(b, t, rv, m));
        }
        if !wo.is_multiple_of(m) {
            let t = b.ins().iconst(PTR, full as i64);
            tile(b, t, rv, wo % m);
        }
    };
    if ho.is_multiple_of(m) {
        row_of_tiles(b, m);
    } else {
        let last = b.create_block();
        let inner = b.create_block();
        let merge = b.create_block();
        let is_last = b.ins().icmp_imm_s(IntCC::Equal, t_h, (th - 1) as i64);
        b.ins().brif(is_last, last, &[], inner, &[]);
        b.switch_to_block(last);
        row_of_tiles(b, ho % m);
        b.ins().jump(merge, &[]);
        b.switch_to_block(inner);
        row_of_tiles(b, m);
        b.ins().jump(merge, &[]);
        b.switch_to_block(merge);
    }
}

/// The output-gradient transform of the Winograd weight gradient ([`super::winograd_gradw`]):
/// `Ŷ = A dY Aᵀ` of every m×m tile of `dy` (the adjoint of the output transform; positions
/// beyond the layer's output are zeros), for tile rows `row0..row1`, into the chunk's
/// `Ŷ[point][tile][co4]` (tile row `row0` first). With `spec.bias`, also adds each tile's sum
/// of `dY` — its transform at point (1, 1), where A's column is all ones — into the `co4` sums
/// at `bias` (the bias gradient in the same pass). [`DyFn`].
pub(crate) fn emit_dy_transform(b: &mut FunctionBuilder, p: &[Value], spec: &WinoSpec, has_fma: bool) {
    let (dy, yhat, bias, row0, row1) = (p[0], p[1], p[2], p[3], p[4]);
    let (m, a) = (spec.tile.m(), spec.tile.alpha());
    let at = spec.tile.at();
    // A (α × m) = (Aᵀ)ᵀ, row-major.
    let a_mat: Vec<f64> = (0..a * m).map(|k| at[(k % m) * a + k / m]).collect();
    let (co4, tw, th) = (spec.co4, spec.tw(), spec.th());
    let point_bytes = (spec.point_stride(co4) * 4) as i64;
    let dy_row_bytes = (spec.wo * spec.cso * 4) as i64;
    let t_stage = stage_slot(b, a * m);
    counted_loop(b, row0, row1, 1, |b, r| {
        let (yr, t_h) = first_row(b, r, th, m, spec.ho);
        let doff = b.ins().imul_imm_s(yr, dy_row_bytes);
        let drow = b.ins().iadd(dy, doff);
        let local = b.ins().isub(r, row0);
        let hoff = b.ins().imul_imm_s(local, (tw * co4 * 4) as i64);
        let hrow = b.ins().iadd(yhat, hoff);
        // One tile at tile column `t`, `rv × cv` of its positions inside the layer.
        let tile = |b: &mut FunctionBuilder, t: Value, rv: usize, cv: usize| {
            let dto = b.ins().imul_imm_s(t, (m * spec.cso * 4) as i64);
            let dt = b.ins().iadd(drow, dto);
            let ho = b.ins().imul_imm_s(t, (co4 * 4) as i64);
            let ht = b.ins().iadd(hrow, ho);
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, (co4 * 4) as i64);
            counted_loop(b, zero, end, 16, |b, cb| {
                let src = b.ins().iadd(dt, cb);
                let dst = b.ins().iadd(ht, cb);
                let ts = b.ins().stack_addr(PTR, t_stage, 0);
                // Pass 1 (per column j < cv of dY): t[i][j] = Σ_q A[i][q]·dY[q][j]; rows q ≥ rv
                // and columns j ≥ cv lie beyond the layer's output: known zeros.
                let dy_col = Lines { base: src, line: (spec.cso * 4) as i64, step: dy_row_bytes };
                let stage_col = Lines { base: ts, line: 16, step: (16 * m) as i64 };
                transform_pass(b, has_fma, (&a_mat, m, a), (cv, rv), (dy_col, None), stage_col);
                // Pass 2 (per row i): Ŷ[i][j] = Σ_q A[j][q]·t[i][q] (columns q ≥ cv: zeros).
                let stage_row = Lines { base: ts, line: (16 * m) as i64, step: 16 };
                let points = Lines { base: dst, line: a as i64 * point_bytes, step: point_bytes };
                transform_pass(b, has_fma, (&a_mat, m, a), (a, cv), (stage_row, None), points);
                if spec.bias {
                    // A's row 1 is all ones (the interpolation point 1): Ŷ(1, 1) = Σ dY.
                    debug_assert!(a_mat[m..2 * m].iter().all(|&c| c == 1.0));
                    let tile_sum = b.ins().load(F32X4, flags(), dst, ((a + 1) as i64 * point_bytes) as i32);
                    let bb = b.ins().iadd(bias, cb);
                    let acc = b.ins().load(F32X4, flags(), bb, 0);
                    let acc = b.ins().fadd(acc, tile_sum);
                    b.ins().store(flags(), acc, bb, 0);
                }
            });
        };
        each_tile_of_row(b, (spec.ho, spec.wo, m), th, t_h, &tile);
    });
}

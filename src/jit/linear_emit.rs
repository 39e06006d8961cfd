//! The bodies of the linear kernel family [`super::codegen`] declares and compiles: the
//! register-blocked correlation ([`CorrSpec`]: forward, input gradient, upconv) and the weight
//! gradient ([`GradWSpec`]), and the epilogue applied to each stored accumulator (shared with
//! Winograd's output transform).

use super::codegen::{Blocking, CorrSpec, Epilogue, F32X4, GradWSpec, PTR, counted_loop, flags, fmadd};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types};
use cranelift_frontend::{FunctionBuilder, Variable};

/// Output positions per iteration of the weight-gradient loop.
const UNROLL: usize = 8;

fn bcast(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let s = b.ins().load(types::F32, flags(), ptr, off as i32);
    b.ins().splat(F32X4, s)
}

/// The epilogue `e` applied to accumulator `a` before it is stored; a mask epilogue reads the
/// mask vector at `mask + off` (the mask has the output's layout). `zero` is a zero f32x4.
pub(crate) fn apply_epilogue(
    b: &mut FunctionBuilder,
    e: Epilogue,
    a: Value,
    zero: Value,
    (mask, off): (Value, i32),
    has_fma: bool,
) -> Value {
    match e {
        Epilogue::None => a,
        Epilogue::Relu => b.ins().fmax(a, zero),
        Epilogue::LeakyRelu(s) => {
            let sv = b.ins().f32const(s);
            let sv = b.ins().splat(F32X4, sv);
            let sa = b.ins().fmul(a, sv);
            if s <= 1.0 { b.ins().fmax(a, sa) } else { b.ins().fmin(a, sa) }
        }
        Epilogue::ReluMask | Epilogue::LeakyMask(_) => {
            let mv = b.ins().load(F32X4, flags(), mask, off);
            mask_select(b, e, a, mv, zero)
        }
        Epilogue::Sigmoid => super::exp::sigmoid(b, has_fma, a),
        Epilogue::Tanh => super::exp::tanh(b, has_fma, a),
        Epilogue::SigmoidMask | Epilogue::TanhMask => {
            let mv = b.ins().load(F32X4, flags(), mask, off);
            let one = b.ins().f32const(1.0);
            let one = b.ins().splat(F32X4, one);
            let d = if e == Epilogue::SigmoidMask {
                let r = b.ins().fsub(one, mv);
                b.ins().fmul(mv, r)
            } else {
                let nm = b.ins().fneg(mv);
                fmadd(b, has_fma, nm, mv, one)
            };
            b.ins().fmul(a, d)
        }
    }
}

/// A relu's (`ReluMask`) or leaky relu's (`LeakyMask`) derivative applied to the gradient `a`:
/// `a` where `mv > 0`, else 0 (or `slope·a`). `mv` is the activation's output — or its input,
/// which has the same sign for slopes ≥ 0 (the only ones fused).
pub(crate) fn mask_select(b: &mut FunctionBuilder, e: Epilogue, a: Value, mv: Value, zero: Value) -> Value {
    let pos = b.ins().fcmp(FloatCC::GreaterThan, mv, zero);
    let pos = b.ins().bitcast(
        F32X4,
        MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
        pos,
    );
    let other = match e {
        Epilogue::LeakyMask(s) => {
            let sv = b.ins().f32const(s);
            let sv = b.ins().splat(F32X4, sv);
            b.ins().fmul(a, sv)
        }
        Epilogue::ReluMask => zero,
        other => unreachable!("{other:?} is not a relu's derivative"),
    };
    b.ins().bitselect(pos, a, other)
}

/// Emits the correlation kernel body into a fresh function.
pub(super) fn emit_corr(b: &mut FunctionBuilder, spec: &CorrSpec, blk: Blocking, has_fma: bool) {
    let sp = &spec.geo;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (x, w, bias, y, m, row0, row1) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let ktaps = sp.k[0] * sp.k[1];
    let w_ci_stride = (ktaps * sp.co4 * 4) as i64;
    // Output lanes in groups stored together: all `co4`, or a pixel shuffle's per tap (a
    // register block never spans two taps, whose outputs lie apart).
    let (group_lanes, groups) = match spec.shuffle {
        Some(sh) => (sh.lanes, sp.co4 / sh.lanes),
        None => (sp.co4, 1),
    };
    // Floats from one output position to the next, and the byte offset of each group's.
    let y_pos = spec.shuffle.map_or(sp.cso, |sh| sh.pos_stride());
    let group_y_bytes = |g: usize| spec.shuffle.map_or(0, |sh| sh.tap_bytes(g));
    let vb = blk.v.min(group_lanes / 4).max(1);
    // `x` holds `hs × ws` positions per sample; `pad` zeros around it are not stored.
    let pad = spec.pad.map(|p| p as i64);
    let (hs, ws) = (sp.hp - 2 * spec.pad[0], sp.wp - 2 * spec.pad[1]);
    let pos_bytes = (sp.csx * 4) as i64;
    let x_row_bytes = ws as i64 * pos_bytes;
    let y_row_bytes = spec.shuffle.map_or((sp.wo * sp.cso * 4) as i64, |sh| sh.row_bytes());
    // Read in place: a zeroed row on the stack stands for the tap rows outside `x` (its
    // column 0 is input column 0, so the same offsets apply).
    let zero_row = spec.rows_outside().then(|| {
        let bytes = spec.zero_row_bytes();
        let slot =
            b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes as u32, 4));
        let base = b.ins().stack_addr(PTR, slot, 0);
        let z = b.ins().f32const(0.0);
        let z = b.ins().splat(F32X4, z);
        let zero = b.ins().iconst(PTR, 0);
        let end = b.ins().iconst(PTR, bytes as i64);
        counted_loop(b, zero, end, 16, |b, o| {
            let at = b.ins().iadd(base, o);
            b.ins().store(flags(), z, at, 0);
        });
        b.ins().iadd_imm_s(base, pad[1] * pos_bytes)
    });
    // Output columns `lo..hi` whose every tap column lies inside `x`; the others (at most a
    // few per edge) are computed one position at a time without the taps outside.
    let tap_col = |ow: usize, kw: usize| (ow * sp.s[1] + kw * sp.d[1]) as i64 - pad[1];
    let col_inside = |ow: usize| (0..sp.k[1]).all(|kw| (0..ws as i64).contains(&tap_col(ow, kw)));
    let lo = (0..sp.wo).find(|&ow| col_inside(ow)).unwrap_or(sp.wo);
    let hi = (lo..sp.wo).find(|&ow| !col_inside(ow)).unwrap_or(sp.wo);
    let r_full = (hi - lo) / blk.r;
    let r_tail = (hi - lo) % blk.r;
    counted_loop(b, row0, row1, 1, |b, row| {
        // input row of tap (0, ·): n·hs + oh·s₀ (− pad₀ by the tap rows below)
        let (ohs, xrow) = x_row_of(b, x, row, (sp.ho, hs, sp.s[0]), x_row_bytes);
        // Per tap row: (base pointer index, byte offset from it). Padded: one base. In place:
        // one per tap row, the zero row where its input row lies outside.
        let (bases, tap_rows): (Vec<Value>, Vec<(usize, i64)>) = match zero_row {
            // (Also in place when no tap row is ever outside: e.g. 1-D, padded along w only.)
            None => (
                vec![xrow],
                (0..sp.k[0]).map(|kh| (0, ((kh * sp.d[0]) as i64 - pad[0]) * x_row_bytes)).collect(),
            ),
            Some(zr) => {
                let ptrs = (0..sp.k[0])
                    .map(|kh| {
                        let first = (kh * sp.d[0]) as i64 - pad[0];
                        let at = b.ins().iadd_imm_s(xrow, first * x_row_bytes);
                        let always = first >= 0 && ((sp.ho - 1) * sp.s[0]) as i64 + first < hs as i64;
                        if always {
                            return at;
                        }
                        let ih = b.ins().iadd_imm_s(ohs, first);
                        let ok = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ih, hs as i64);
                        b.ins().select(ok, at, zr)
                    })
                    .collect();
                (ptrs, (0..sp.k[0]).map(|kh| (kh, 0)).collect())
            }
        };
        let yoff = b.ins().imul_imm_s(row, y_row_bytes);
        let yrow = b.ins().iadd(y, yoff);
        let mrow = b.ins().iadd(m, yoff);
        // One tile: positions [ow0, ow0 + r) × vectors [co0, co0 + v) of lane group `g`;
        // `ow_x` is the byte offset of input column ow0·s₁ − pad₁, `co_bytes` of vector co0
        // within the group. `cols`: the tap columns inside (all if None).
        let tile = |b: &mut FunctionBuilder,
                    ow_bytes_x: Value,
                    ow_bytes_y: Value,
                    (g, co_bytes): (usize, Value),
                    r: usize,
                    v: usize,
                    cols: Option<&[bool]>| {
            // (No add for group 0: the unshuffled kernel's code stays as it was.)
            let plus =
                |b: &mut FunctionBuilder, v: Value, k: i64| if k == 0 { v } else { b.ins().iadd_imm_s(v, k) };
            let lanes_at = plus(b, co_bytes, (g * group_lanes * 4) as i64);
            let out_at = plus(b, co_bytes, group_y_bytes(g));
            let yb = b.ins().iadd(yrow, ow_bytes_y);
            let yb = b.ins().iadd(yb, out_at);
            let mb = b.ins().iadd(mrow, ow_bytes_y);
            let mb = b.ins().iadd(mb, out_at);
            let wb = b.ins().iadd(w, lanes_at);
            let bb = b.ins().iadd(bias, lanes_at);
            let accs: Vec<Variable> = (0..r * v).map(|_| b.declare_var(F32X4)).collect();
            for j in 0..v {
                let init = if spec.bias {
                    b.ins().load(F32X4, flags(), bb, (16 * j) as i32)
                } else {
                    let z = b.ins().f32const(0.0);
                    b.ins().splat(F32X4, z)
                };
                for i in 0..r {
                    b.def_var(accs[i * v + j], init);
                }
            }
            let xps: Vec<Variable> = bases
                .iter()
                .map(|&base| {
                    let xp = b.declare_var(PTR);
                    let xb = b.ins().iadd(base, ow_bytes_x);
                    b.def_var(xp, xb);
                    xp
                })
                .collect();
            let wp = b.declare_var(PTR);
            b.def_var(wp, wb);
            let zero = b.ins().iconst(PTR, 0);
            // Channels unrolled by `unroll` when there are few taps (1×1 kernels, the
            // Winograd products), so the loop's own instructions do not rival the FMAs.
            let unroll = if ktaps >= 4 {
                1
            } else {
                [4, 2, 1].into_iter().find(|u| sp.ci.is_multiple_of(*u)).unwrap_or(1)
            };
            let end = b.ins().iconst(PTR, (sp.ci / unroll) as i64);
            counted_loop(b, zero, end, 1, |b, _ci| {
                let xpv: Vec<Value> = xps.iter().map(|&v| b.use_var(v)).collect();
                let wpv = b.use_var(wp);
                for q in 0..unroll {
                    for (kh, &(base, row_off)) in tap_rows.iter().enumerate() {
                        for kw in (0..sp.k[1]).filter(|&kw| cols.is_none_or(|c| c[kw])) {
                            let tap = kh * sp.k[1] + kw;
                            let wv: Vec<Value> = (0..v)
                                .map(|j| {
                                    let off = ((tap * sp.co4 + 4 * j) * 4) as i64 + q as i64 * w_ci_stride;
                                    b.ins().load(F32X4, flags(), wpv, off as i32)
                                })
                                .collect();
                            for i in 0..r {
                                let off =
                                    row_off + (kw * sp.d[1] + i * sp.s[1]) as i64 * pos_bytes + 4 * q as i64;
                                let xs = bcast(b, xpv[base], off);
                                for j in 0..v {
                                    let a = b.use_var(accs[i * v + j]);
                                    let a = fmadd(b, has_fma, xs, wv[j], a);
                                    b.def_var(accs[i * v + j], a);
                                }
                            }
                        }
                    }
                }
                for (xp, &xv) in xps.iter().zip(&xpv) {
                    let xn = b.ins().iadd_imm_s(xv, 4 * unroll as i64);
                    b.def_var(*xp, xn);
                }
                let wn = b.ins().iadd_imm_s(wpv, w_ci_stride * unroll as i64);
                b.def_var(wp, wn);
            });
            let zero_v = {
                let z = b.ins().f32const(0.0);
                b.ins().splat(F32X4, z)
            };
            for i in 0..r {
                for j in 0..v {
                    let a = b.use_var(accs[i * v + j]);
                    let off = ((i * y_pos + 4 * j) * 4) as i32;
                    let out = apply_epilogue(b, spec.epilogue, a, zero_v, (mb, off), has_fma);
                    b.ins().store(flags(), out, yb, off);
                }
            }
        };
        // Full and tail blocks along the width, each over full and tail channel blocks, of `v`
        // vectors per block.
        let width_part =
            |b: &mut FunctionBuilder, ow_x: Value, ow_y: Value, r: usize, v: usize, cols: Option<&[bool]>| {
                let (co_full, co_tail) = (group_lanes / (4 * v), (group_lanes / 4) % v);
                for g in 0..groups {
                    if co_full > 0 {
                        let zero = b.ins().iconst(PTR, 0);
                        let end = b.ins().iconst(PTR, (co_full * 16 * v) as i64);
                        counted_loop(b, zero, end, (16 * v) as i64, |b, co_bytes| {
                            tile(b, ow_x, ow_y, (g, co_bytes), r, v, cols)
                        });
                    }
                    if co_tail > 0 {
                        let co_bytes = b.ins().iconst(PTR, (co_full * 16 * v) as i64);
                        tile(b, ow_x, ow_y, (g, co_bytes), r, co_tail, cols);
                    }
                }
            };
        // The tail block of fewer positions takes more vectors, so that it still has about as
        // many independent accumulators as the FMA pipes need in flight (2 pipes × 4 cycles):
        // a 2-position tail of the 5×2 blocking had 4. At most 14 of the 16 vector registers:
        // r·v accumulators, v weights and one broadcast.
        let tail_v = |r: usize| (14 / (r + 1)).max(vb).min(group_lanes / 4).max(1);
        let x_at = |ow: usize| (ow * sp.s[1]) as i64 * pos_bytes - pad[1] * pos_bytes;
        if r_full > 0 {
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, r_full as i64);
            counted_loop(b, zero, end, 1, |b, ob| {
                let ow_x = b.ins().imul_imm_s(ob, (blk.r * sp.s[1]) as i64 * pos_bytes);
                let ow_x = b.ins().iadd_imm_s(ow_x, x_at(lo));
                let ow_y = b.ins().imul_imm_s(ob, (blk.r * y_pos * 4) as i64);
                let ow_y = b.ins().iadd_imm_s(ow_y, (lo * y_pos * 4) as i64);
                width_part(b, ow_x, ow_y, blk.r, vb, None);
            });
        }
        if r_tail > 0 {
            let ow = lo + r_full * blk.r;
            let ow_x = b.ins().iconst(PTR, x_at(ow));
            let ow_y = b.ins().iconst(PTR, (ow * y_pos * 4) as i64);
            width_part(b, ow_x, ow_y, r_tail, tail_v(r_tail), None);
        }
        for ow in (0..lo).chain(hi..sp.wo) {
            let cols: Vec<bool> = (0..sp.k[1]).map(|kw| (0..ws as i64).contains(&tap_col(ow, kw))).collect();
            let ow_x = b.ins().iconst(PTR, x_at(ow));
            let ow_y = b.ins().iconst(PTR, (ow * y_pos * 4) as i64);
            width_part(b, ow_x, ow_y, 1, vb, Some(&cols));
        }
    });
    b.ins().return_(&[]);
}

/// Emits the weight-gradient kernel body into a fresh function. Rows are the outer loop, so the
/// few input rows a tile reads stay in L1 while every tile passes over them; each tile's
/// accumulators are loaded from and stored back to `dw` per row (the caller zeroes `dw`).
pub(super) fn emit_gradw(b: &mut FunctionBuilder, spec: &GradWSpec, blk: Blocking, has_fma: bool) {
    let sp = &spec.geo;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (x, dy, dw, row0, row1) = (p[0], p[1], p[2], p[3], p[4]);
    let ktaps = sp.k[0] * sp.k[1];
    let vb = blk.v.min(sp.co4 / 4).max(1);
    let co_full = sp.co4 / (4 * vb);
    let co_tail = (sp.co4 / 4) % vb;
    let rb = blk.r.min(sp.ci).max(1);
    let ci_full = sp.ci / rb;
    let ci_tail = sp.ci % rb;
    // The buffer `x` is: `hs × ws` positions per sample, `pad` zeros around it not stored.
    let pad = spec.pad.map(|p| p as i64);
    let (hs, ws) = (sp.hp - 2 * spec.pad[0], sp.wp - 2 * spec.pad[1]);
    let x_row_bytes = (ws * sp.csx * 4) as i64;
    let d_row_bytes = (sp.wo * sp.cso * 4) as i64;
    // Output positions `lo..hi` whose input at column tap `kw` lies inside the buffer.
    let columns = |kw: usize| -> (usize, usize) {
        let first = (kw * sp.d[1]) as i64 - pad[1];
        let lo = ((-first).max(0) as usize).div_ceil(sp.s[1]).min(sp.wo);
        let hi = ((ws as i64 - first).max(0) as usize).div_ceil(sp.s[1]).min(sp.wo);
        (lo, hi.max(lo))
    };
    // Whether input row `oh·s₀ + kh·d₀ − pad₀` lies inside for every output row (else tested).
    let rows_inside = |kh: usize| {
        let first = (kh * sp.d[0]) as i64 - pad[0];
        first >= 0 && ((sp.ho - 1) * sp.s[0]) as i64 + first < hs as i64
    };
    counted_loop(b, row0, row1, 1, |b, row| {
        let (ohs, xrow) = x_row_of(b, x, row, (sp.ho, hs, sp.s[0]), x_row_bytes);
        let doff = b.ins().imul_imm_s(row, d_row_bytes);
        let drow = b.ins().iadd(dy, doff);
        // tile: channels [ci0, ci0 + r) of tap (kh, kw) × vectors [co0, co0 + v).
        // tile: reduction rows `rows[i] = (channel offset, tap)` relative to channel `ci0` ×
        // vectors [co0, co0 + v). Rows are consecutive channels at one tap, or — for inputs with
        // fewer channels than the block — consecutive taps of one channel.
        // Positions `lo..hi` only (`columns`: all of them when `x` is padded).
        let tile =
            |b: &mut FunctionBuilder, ci_bytes: Value, rows: &[(usize, usize)], co_bytes: Value, v: usize| {
                let r = rows.len();
                // Positions every row's input lies inside, run together; a row's others (rows
                // of different taps, read in place: at most a few near each edge) one by one.
                let row_columns: Vec<(usize, usize)> =
                    rows.iter().map(|&(_, tap)| columns(tap % sp.k[1])).collect();
                let (lo, hi) = row_columns.iter().fold((0, sp.wo), |(l, h), &(a, b)| (l.max(a), h.min(b)));
                let hi = hi.max(lo);
                let alone = |i: usize| {
                    let (a, z) = row_columns[i];
                    (a..z).filter(move |p| !(lo..hi).contains(p))
                };
                if hi == lo && (0..r).all(|i| alone(i).next().is_none()) {
                    return;
                }
                let ci_off = b.ins().imul_imm_s(ci_bytes, (ktaps * sp.co4) as i64);
                let wbase = b.ins().iadd(dw, ci_off);
                let wbase = b.ins().iadd(wbase, co_bytes);
                let woff =
                    |i: usize, j: usize| (((rows[i].0 * ktaps + rows[i].1) * sp.co4 + 4 * j) * 4) as i32;
                let x_off = |i: usize| {
                    let (c, tap) = rows[i];
                    let (kh, kw) = (tap / sp.k[1], tap % sp.k[1]);
                    let (ih, iw) = ((kh * sp.d[0]) as i64 - pad[0], (kw * sp.d[1]) as i64 - pad[1]);
                    ((ih * ws as i64 + iw) * sp.csx as i64 + c as i64) * 4
                };
                let accs: Vec<Variable> = (0..r * v).map(|_| b.declare_var(F32X4)).collect();
                for i in 0..r {
                    for j in 0..v {
                        let a = b.ins().load(F32X4, flags(), wbase, woff(i, j));
                        b.def_var(accs[i * v + j], a);
                    }
                }
                let xstart = b.ins().iadd(xrow, ci_bytes);
                let xstart = b.ins().iadd_imm_s(xstart, (lo * sp.s[1] * sp.csx * 4) as i64);
                let dstart = b.ins().iadd(drow, co_bytes);
                let dstart = b.ins().iadd_imm_s(dstart, (lo * sp.cso * 4) as i64);
                let xp = b.declare_var(PTR);
                let dp = b.declare_var(PTR);
                b.def_var(xp, xstart);
                b.def_var(dp, dstart);
                // Positions unrolled by UNROLL (fewer loop instructions per FMA), then the rest.
                let x_step = (sp.s[1] * sp.csx * 4) as i64;
                let d_step = (sp.cso * 4) as i64;
                let body = |b: &mut FunctionBuilder, u: usize| {
                    let xpv = b.use_var(xp);
                    let dpv = b.use_var(dp);
                    for q in 0..u {
                        let dv: Vec<Value> = (0..v)
                            .map(|j| {
                                b.ins().load(F32X4, flags(), dpv, (q as i64 * d_step + 16 * j as i64) as i32)
                            })
                            .collect();
                        for i in 0..r {
                            let xs = bcast(b, xpv, q as i64 * x_step + x_off(i));
                            for j in 0..v {
                                let a = b.use_var(accs[i * v + j]);
                                let a = fmadd(b, has_fma, xs, dv[j], a);
                                b.def_var(accs[i * v + j], a);
                            }
                        }
                    }
                    let xn = b.ins().iadd_imm_s(xpv, u as i64 * x_step);
                    let dn = b.ins().iadd_imm_s(dpv, u as i64 * d_step);
                    b.def_var(xp, xn);
                    b.def_var(dp, dn);
                };
                let full = (hi - lo) / UNROLL;
                if full > 0 {
                    let zero = b.ins().iconst(PTR, 0);
                    let end = b.ins().iconst(PTR, full as i64);
                    counted_loop(b, zero, end, 1, |b, _| body(b, UNROLL));
                }
                if !(hi - lo).is_multiple_of(UNROLL) {
                    body(b, (hi - lo) % UNROLL);
                }
                for i in 0..r {
                    for p in alone(i) {
                        // Position p of row i, at constant offsets from the row's starts.
                        let xp = b.ins().iadd(xrow, ci_bytes);
                        let xs = bcast(b, xp, (p * sp.s[1] * sp.csx * 4) as i64 + x_off(i));
                        let dp = b.ins().iadd(drow, co_bytes);
                        for j in 0..v {
                            let d = b.ins().load(F32X4, flags(), dp, ((p * sp.cso + 4 * j) * 4) as i32);
                            let a = b.use_var(accs[i * v + j]);
                            let a = fmadd(b, has_fma, xs, d, a);
                            b.def_var(accs[i * v + j], a);
                        }
                    }
                }
                for i in 0..r {
                    for j in 0..v {
                        let a = b.use_var(accs[i * v + j]);
                        b.ins().store(flags(), a, wbase, woff(i, j));
                    }
                }
            };
        let over_co = |b: &mut FunctionBuilder, ci_bytes: Value, rows: &[(usize, usize)]| {
            if co_full > 0 {
                let zero = b.ins().iconst(PTR, 0);
                let end = b.ins().iconst(PTR, (co_full * 16 * vb) as i64);
                counted_loop(b, zero, end, (16 * vb) as i64, |b, co_bytes| {
                    tile(b, ci_bytes, rows, co_bytes, vb)
                });
            }
            if co_tail > 0 {
                let co_bytes = b.ins().iconst(PTR, (co_full * 16 * vb) as i64);
                tile(b, ci_bytes, rows, co_bytes, co_tail);
            }
        };
        // Runs `f` only for rows whose input row of tap row `kh` lies inside the buffer.
        let when_row_inside = |b: &mut FunctionBuilder, kh: usize, f: &dyn Fn(&mut FunctionBuilder)| {
            if rows_inside(kh) {
                return f(b);
            }
            let ih = b.ins().iadd_imm_s(ohs, (kh * sp.d[0]) as i64 - pad[0]);
            let above = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, ih, 0);
            let below = b.ins().icmp_imm_s(IntCC::SignedLessThan, ih, hs as i64);
            let inside = b.ins().band(above, below);
            let (run, done) = (b.create_block(), b.create_block());
            b.ins().brif(inside, run, &[], done, &[]);
            b.switch_to_block(run);
            f(b);
            b.ins().jump(done, &[]);
            b.switch_to_block(done);
        };
        let per_ci = |b: &mut FunctionBuilder, ci_bytes: Value, r: usize| {
            if r < blk.r && ktaps > 1 {
                // Few channels: block over taps instead, one channel at a time — the taps of
                // one tap row together, so one test says whether their input row is inside
                // (read in place; the tile sums each tap's own columns).
                for c in 0..r {
                    for kh in 0..sp.k[0] {
                        let taps: Vec<usize> = (kh * sp.k[1]..(kh + 1) * sp.k[1]).collect();
                        for group in taps.chunks(blk.r) {
                            let rows: Vec<(usize, usize)> = group.iter().map(|&t| (c, t)).collect();
                            when_row_inside(b, kh, &|b| over_co(b, ci_bytes, &rows));
                        }
                    }
                }
            } else {
                for tap in 0..ktaps {
                    let rows: Vec<(usize, usize)> = (0..r).map(|c| (c, tap)).collect();
                    when_row_inside(b, tap / sp.k[1], &|b| over_co(b, ci_bytes, &rows));
                }
            }
        };
        if ci_full > 0 {
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, (ci_full * rb * 4) as i64);
            counted_loop(b, zero, end, (rb * 4) as i64, |b, ci_bytes| per_ci(b, ci_bytes, rb));
        }
        if ci_tail > 0 {
            let ci_bytes = b.ins().iconst(PTR, (ci_full * rb * 4) as i64);
            per_ci(b, ci_bytes, ci_tail);
        }
        if spec.bias {
            // Σ dy per channel over this row in f32x4 while the row is in cache, then added to
            // f64 sums (two f64x2 per 4 channels) in `dw[ci·taps·co4 ..]`.
            let base = b.ins().iadd_imm_s(dw, (sp.ci * ktaps * sp.co4 * 4) as i64);
            let co4 = sp.co4 / 4;
            let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
            let high_half = b.func.dfg.immediates.push(cranelift_codegen::ir::ConstantData::from(vec![
                8u8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7,
            ]));
            for j0 in (0..co4).step_by(4) {
                let v = (co4 - j0).min(4);
                let accs: Vec<Variable> = (0..v).map(|_| b.declare_var(F32X4)).collect();
                let z = b.ins().f32const(0.0);
                let z = b.ins().splat(F32X4, z);
                for a in &accs {
                    b.def_var(*a, z);
                }
                let dp = b.declare_var(PTR);
                b.def_var(dp, drow);
                let zero = b.ins().iconst(PTR, 0);
                let end = b.ins().iconst(PTR, sp.wo as i64);
                counted_loop(b, zero, end, 1, |b, _ow| {
                    let dpv = b.use_var(dp);
                    for (j, a) in accs.iter().enumerate() {
                        let d = b.ins().load(F32X4, flags(), dpv, (16 * (j0 + j)) as i32);
                        let av = b.use_var(*a);
                        let sum = b.ins().fadd(av, d);
                        b.def_var(*a, sum);
                    }
                    let dn = b.ins().iadd_imm_s(dpv, (sp.cso * 4) as i64);
                    b.def_var(dp, dn);
                });
                for (j, a) in accs.iter().enumerate() {
                    let av = b.use_var(*a);
                    let lo = b.ins().fvpromote_low(av);
                    let bytes = b.ins().bitcast(types::I8X16, le, av);
                    let swapped = b.ins().shuffle(bytes, bytes, high_half);
                    let hi4 = b.ins().bitcast(F32X4, le, swapped);
                    let hi = b.ins().fvpromote_low(hi4);
                    let off = (32 * (j0 + j)) as i32;
                    let s_lo = b.ins().load(types::F64X2, flags(), base, off);
                    let s_hi = b.ins().load(types::F64X2, flags(), base, off + 16);
                    let s_lo = b.ins().fadd(s_lo, lo);
                    let s_hi = b.ins().fadd(s_hi, hi);
                    b.ins().store(flags(), s_lo, base, off);
                    b.ins().store(flags(), s_hi, base, off + 16);
                }
            }
        }
    });
    b.ins().return_(&[]);
}

/// For output row `row = n·ho + oh`: `oh·s₀`, and the address of input row `n·hs + oh·s₀` of `x`
/// (rows of `x_row_bytes`) — where the correlation and weight-gradient kernels start a row.
fn x_row_of(
    b: &mut FunctionBuilder,
    x: Value,
    row: Value,
    (ho, hs, s0): (usize, usize, usize),
    x_row_bytes: i64,
) -> (Value, Value) {
    let n = b.ins().udiv_imm_s(row, ho as i64);
    let nho = b.ins().imul_imm_s(n, ho as i64);
    let oh = b.ins().isub(row, nho);
    let nhs = b.ins().imul_imm_s(n, hs as i64);
    let ohs = b.ins().imul_imm_s(oh, s0 as i64);
    let xr = b.ins().iadd(nhs, ohs);
    let xoff = b.ins().imul_imm_s(xr, x_row_bytes);
    (ohs, b.ins().iadd(x, xoff))
}

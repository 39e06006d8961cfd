//! The gather kernel family (`Lowering::Spatial`: maxpool, avgpool, upsample, concat):
//! Cranelift code specialised on both sides' sizes, channel strides and channel offsets, over a
//! range of destination rows `n·H_y + h`, channels in f32x4 lanes.
//!
//! Every destination pixel `(h, w)` reads a fixed number of source rows (`kh` taps from the
//! row table, entry `h`) times a fixed number of source columns (`kw` taps from the column
//! table, entry `w`); a tap is `(index, parameter)`, the parameter an f32 weight or an i32 key.
//! The ops are separable in these terms, so the tables stay `(H_y·kh + W_y·kw)` entries:
//!
//! - [`GatherKind::Copy`] — `y = x[tap₀₀]` (one tap each way): concat's copies, both ways.
//! - [`GatherKind::Weighted`] — `y = Σᵢⱼ wᵢ·wⱼ·x[i, j]`: upsample (nearest: one tap of weight 1;
//!   linear: two), avgpool (`1/k` per axis; taps on padding left out, so padded zeros count in
//!   the average), and the backward pass of both (the tables transposed: every destination pixel
//!   gathers the gradients of the outputs that read it — no scatter, no zeroing, no races).
//! - [`GatherKind::Max`] — `y = max x[i, j]` over the taps in scan order, the first maximum
//!   winning (strict `>`, as the interpreter does), with its flat source index `keyᵢ + keyⱼ`
//!   (`h·W_x + w`) stored in the i32 argmax buffer `aux`. Short windows repeat their first tap,
//!   which never wins again.
//! - [`GatherKind::ArgMatch`] — max pooling's backward as a gather: `dx[h, w] = Σ dy[o]` over
//!   the outputs `o` whose window holds `(h, w)` and whose argmax is `keyᵢ + keyⱼ = h·W + w`;
//!   table padding carries a key of `INVALID`, so it never matches.
//!
//! A side whose channel offset is not 0 or whose stride is not its own (`round4(c)`) is
//! *foreign* (a slice of a concat's buffer): the last partial vector is read and written lane
//! by lane there, so no neighbouring channel and nothing past the buffer is touched. Elsewhere
//! lanes past `c` are don't-care (see `layout`), so whole vectors are read and written.

use super::codegen::{F32X4, PTR, counted_loop, flags, fmadd};
use super::layout::round4;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::{FunctionBuilder, Variable};

/// `fn(x, y, table, aux, row0, row1)`.
pub type GatherFn = unsafe extern "C" fn(*const f32, *mut f32, *const i32, *mut i32, i64, i64);

/// The key of a table entry that must never match an argmax (two of them still sum to a
/// negative i32).
pub(crate) const INVALID: i32 = -(1 << 29);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GatherKind {
    Copy,
    Weighted,
    Max,
    ArgMatch,
}

/// One side of a gather: pixels per sample, channel stride and first channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Side {
    pub h: usize,
    pub w: usize,
    pub cs: usize,
    pub off: usize,
}

impl Side {
    fn foreign(&self, c: usize) -> bool {
        self.off != 0 || self.cs != round4(c)
    }

    fn sample_floats(&self) -> usize {
        self.h * self.w * self.cs
    }
}

/// One gather kernel, fully specialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GatherSpec {
    pub kind: GatherKind,
    /// Channels moved.
    pub c: usize,
    pub x: Side,
    pub y: Side,
    /// Taps per destination row and per destination column.
    pub kh: usize,
    pub kw: usize,
}

impl GatherSpec {
    /// i32s of the table: `(index, parameter)` per tap, rows then columns.
    pub fn table_len(&self) -> usize {
        2 * (self.y.h * self.kh + self.y.w * self.kw)
    }

    /// Floats of `x` that rows `0..rows` of `y` may read, and of `y` they write.
    pub fn x_len(&self, rows: usize) -> usize {
        rows.div_ceil(self.y.h) * self.x.sample_floats()
    }

    pub fn y_len(&self, rows: usize) -> usize {
        if self.y.foreign(self.c) {
            (rows * self.y.w).saturating_sub(1) * self.y.cs + self.y.off + self.c
        } else {
            rows * self.y.w * self.y.cs
        }
    }

    /// i32s of `aux` (the argmax, in the pool output's own layout) rows `0..rows` touch.
    pub fn aux_len(&self, rows: usize) -> usize {
        match self.kind {
            GatherKind::Max => rows * self.y.w * round4(self.c),
            GatherKind::ArgMatch => self.x_len(rows),
            _ => 0,
        }
    }
}

/// Vectors per block: a running value and an argmax each, within the 16 vector registers.
const BLOCK: usize = 4;

/// Emits the kernel of `spec` into a fresh function.
pub(crate) fn emit(b: &mut FunctionBuilder, spec: &GatherSpec, has_fma: bool) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let prm = b.block_params(entry).to_vec();
    let (x, y, tab, aux, r0, r1) = (prm[0], prm[1], prm[2], prm[3], prm[4], prm[5]);
    let (sx, sy, c) = (spec.x, spec.y, spec.c);
    let acs = round4(c) as i64;
    let x_row_bytes = (sx.w * sx.cs * 4) as i64;
    let x_pix_bytes = (sx.cs * 4) as i64;
    let col_table = (sy.h * spec.kh * 8) as i64;
    counted_loop(b, r0, r1, 1, |b, r| {
        let n = b.ins().udiv_imm_s(r, sy.h as i64);
        let nh = b.ins().imul_imm_s(n, sy.h as i64);
        let oh = b.ins().isub(r, nh);
        // Byte offset of sample n in x (also in the argmax of ArgMatch: the same layout).
        let x_sample = b.ins().imul_imm_s(n, (sx.sample_floats() * 4) as i64);
        let y_row = b.ins().imul_imm_s(r, (sy.w * sy.cs * 4) as i64);
        let y_row = b.ins().iadd_imm_s(y_row, (sy.off * 4) as i64);
        let arg_row = b.ins().imul_imm_s(r, sy.w as i64 * acs * 4);
        // The row taps of this destination row.
        let row_ent = b.ins().imul_imm_s(oh, (spec.kh * 8) as i64);
        let row_ent = b.ins().iadd(tab, row_ent);
        let rows: Vec<(Value, Value)> = (0..spec.kh)
            .map(|i| {
                let idx = b.ins().sload32(flags(), row_ent, (8 * i) as i32);
                let off = b.ins().imul_imm_s(idx, x_row_bytes);
                let off = b.ins().iadd(off, x_sample);
                (off, param(b, spec.kind, row_ent, 8 * i + 4))
            })
            .collect();
        let zero = b.ins().iconst(PTR, 0);
        let wy = b.ins().iconst(PTR, sy.w as i64);
        counted_loop(b, zero, wy, 1, |b, ow| {
            let col_ent = b.ins().imul_imm_s(ow, (spec.kw * 8) as i64);
            let col_ent = b.ins().iadd(tab, col_ent);
            let cols: Vec<(Value, Value)> = (0..spec.kw)
                .map(|j| {
                    let idx = b.ins().sload32(flags(), col_ent, (col_table + 8 * j as i64) as i32);
                    let off = b.ins().imul_imm_s(idx, x_pix_bytes);
                    (off, param(b, spec.kind, col_ent, col_table as usize + 8 * j + 4))
                })
                .collect();
            // Per tap: the byte offset of its pixel in x and its combined parameter.
            let taps: Vec<(Value, Value)> = rows
                .iter()
                .flat_map(|&(ro, rp)| cols.iter().map(move |&(co, cp)| (ro, rp, co, cp)))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(ro, rp, co, cp)| {
                    let off = b.ins().iadd(ro, co);
                    let p = match spec.kind {
                        GatherKind::Weighted => {
                            let w = b.ins().fmul(rp, cp);
                            b.ins().splat(F32X4, w)
                        }
                        GatherKind::Max | GatherKind::ArgMatch => {
                            let k = b.ins().iadd(rp, cp);
                            b.ins().splat(types::I32X4, k)
                        }
                        GatherKind::Copy => rp,
                    };
                    (off, p)
                })
                .collect();
            let y_pix = b.ins().imul_imm_s(ow, (sy.cs * 4) as i64);
            let y_pix = b.ins().iadd(y_pix, y_row);
            let y_ptr = b.ins().iadd(y, y_pix);
            let arg_pix = b.ins().imul_imm_s(ow, acs * 4);
            let arg_pix = b.ins().iadd(arg_pix, arg_row);
            let arg_ptr = b.ins().iadd(aux, arg_pix);
            let vectors = c.div_ceil(4);
            for j0 in (0..vectors).step_by(BLOCK) {
                let v = (vectors - j0).min(BLOCK);
                let out = block(b, spec, has_fma, x, aux, &taps, j0, v, arg_ptr);
                for (j, r) in out.into_iter().enumerate() {
                    store_vec(b, spec, r, y_ptr, j0 + j);
                }
            }
        });
    });
    b.ins().return_(&[]);
}

/// A table entry's parameter: an f32 weight or an i32 key (unused for copies).
fn param(b: &mut FunctionBuilder, kind: GatherKind, ent: Value, at: usize) -> Value {
    match kind {
        GatherKind::Weighted => b.ins().load(types::F32, flags(), ent, at as i32),
        GatherKind::Max | GatherKind::ArgMatch => b.ins().load(types::I32, flags(), ent, at as i32),
        GatherKind::Copy => ent,
    }
}

/// Vector `j` (lanes `4j..4j + 4`) of the source pixel at `ptr`.
fn load_vec(b: &mut FunctionBuilder, spec: &GatherSpec, ptr: Value, j: usize) -> Value {
    let lanes = spec.c - 4 * j;
    let at = ((spec.x.off + 4 * j) * 4) as i32;
    if lanes >= 4 || !spec.x.foreign(spec.c) {
        return b.ins().load(F32X4, flags(), ptr, at);
    }
    let z = b.ins().f32const(0.0);
    let mut v = b.ins().splat(F32X4, z);
    for l in 0..lanes {
        let s = b.ins().load(types::F32, flags(), ptr, at + 4 * l as i32);
        v = b.ins().insertlane(v, s, l as u8);
    }
    v
}

/// Stores vector `j` of the destination pixel at `ptr` (already at the channel offset).
fn store_vec(b: &mut FunctionBuilder, spec: &GatherSpec, v: Value, ptr: Value, j: usize) {
    let lanes = spec.c - 4 * j;
    let at = (16 * j) as i32;
    if lanes >= 4 || !spec.y.foreign(spec.c) {
        b.ins().store(flags(), v, ptr, at);
        return;
    }
    for l in 0..lanes {
        let s = b.ins().extractlane(v, l as u8);
        b.ins().store(flags(), s, ptr, at + 4 * l as i32);
    }
}

/// The results of vectors `j0..j0 + v` of one destination pixel.
#[allow(clippy::too_many_arguments)]
fn block(
    b: &mut FunctionBuilder,
    spec: &GatherSpec,
    has_fma: bool,
    x: Value,
    aux: Value,
    taps: &[(Value, Value)],
    j0: usize,
    v: usize,
    arg_ptr: Value,
) -> Vec<Value> {
    let src = |b: &mut FunctionBuilder, off: Value| b.ins().iadd(x, off);
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    match spec.kind {
        GatherKind::Copy => {
            let p = src(b, taps[0].0);
            (0..v).map(|j| load_vec(b, spec, p, j0 + j)).collect()
        }
        GatherKind::Weighted => {
            let mut acc: Vec<Option<Value>> = vec![None; v];
            for &(off, w) in taps {
                let p = src(b, off);
                for (j, a) in acc.iter_mut().enumerate() {
                    let xv = load_vec(b, spec, p, j0 + j);
                    *a = Some(match *a {
                        None => b.ins().fmul(xv, w),
                        Some(s) => fmadd(b, has_fma, xv, w, s),
                    });
                }
            }
            acc.into_iter().map(|a| a.expect("at least one tap")).collect()
        }
        GatherKind::Max => {
            let ninf = b.ins().f32const(f32::NEG_INFINITY);
            let ninf = b.ins().splat(F32X4, ninf);
            let z = b.ins().iconst(types::I32, 0);
            let z = b.ins().splat(types::I32X4, z);
            let best: Vec<Variable> = (0..v).map(|_| b.declare_var(F32X4)).collect();
            let arg: Vec<Variable> = (0..v).map(|_| b.declare_var(types::I32X4)).collect();
            for j in 0..v {
                b.def_var(best[j], ninf);
                b.def_var(arg[j], z);
            }
            for &(off, key) in taps {
                let p = src(b, off);
                for j in 0..v {
                    let xv = load_vec(b, spec, p, j0 + j);
                    let bv = b.use_var(best[j]);
                    let better = b.ins().fcmp(FloatCC::GreaterThan, xv, bv);
                    let fm = b.ins().bitcast(F32X4, le, better);
                    let nb = b.ins().bitselect(fm, xv, bv);
                    b.def_var(best[j], nb);
                    let av = b.use_var(arg[j]);
                    let na = b.ins().bitselect(better, key, av);
                    b.def_var(arg[j], na);
                }
            }
            (0..v)
                .map(|j| {
                    let a = b.use_var(arg[j]);
                    b.ins().store(flags(), a, arg_ptr, (16 * (j0 + j)) as i32);
                    b.use_var(best[j])
                })
                .collect()
        }
        GatherKind::ArgMatch => {
            let z = b.ins().f32const(0.0);
            let z = b.ins().splat(F32X4, z);
            let mut acc = vec![z; v];
            for &(off, key) in taps {
                let p = src(b, off);
                let a = b.ins().iadd(aux, off);
                for (j, s) in acc.iter_mut().enumerate() {
                    let dy = load_vec(b, spec, p, j0 + j);
                    let at = b.ins().load(types::I32X4, flags(), a, (16 * (j0 + j)) as i32);
                    let hit = b.ins().icmp(IntCC::Equal, at, key);
                    let hit = b.ins().bitcast(F32X4, le, hit);
                    let d = b.ins().bitselect(hit, dy, z);
                    *s = b.ins().fadd(*s, d);
                }
            }
            acc
        }
    }
}

//! The per-channel kernel family (`Lowering::Channel`: batchnorm): Cranelift code specialised
//! on a value's channel stride, over a range of NHWC positions, channels in f32x4 lanes.
//!
//! - [`ChannelKind::Moments`] — per-channel sums over positions `pos0..pos1`:
//!   `out[c] = Σ p'`, `out[cs + c] = Σ p'·q'`, with `p' = p − s` when the spec shifts `p` (else
//!   `p`) and `q' = q − s` (or `p − s` when the spec has no `q`). Batchnorm's statistics are the
//!   shifted sums of `x` (shift: the running mean, so `E[x'²] − E[x']²` does not cancel); its
//!   backward sums are `Σ dy` and `Σ dy·(x − mean)`.
//! - [`ChannelKind::Affine`] — `out = p'·a + q'·c + d` per channel (the `q` term only when the
//!   spec has one), then an activation: batchnorm's normalisation (training and inference) and
//!   its input gradient `dx = dy·a + (x − mean)·c + d`; relu and leaky_relu (`a = 1`), add and
//!   sub (`a = 1`, `c = ±1`, no shift).
//! - [`ChannelKind::Mask`] — `out = p` where `q > 0`, else `slope·p` (the spec's `ReluMask` /
//!   `LeakyMask` epilogue): the backward pass of a standalone relu or leaky_relu.
//!
//! Coefficients are one block of `4·cs` floats: `[s | a | c | d]`. The caller splits the
//! positions into fixed chunks (results do not depend on the thread count) and adds the
//! moments' f32 chunk sums in f64.

use super::codegen::{Epilogue, F32X4, counted_loop, flags, fmadd};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

/// `fn(p, q, coef, out, pos0, pos1)`.
pub type ChannelFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64, i64);

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ChannelKind {
    Moments,
    Affine,
    Mask,
}

/// One per-channel kernel, fully specialised.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChannelSpec {
    pub kind: ChannelKind,
    /// The channel stride of `p`, `q` and `out` (a multiple of 4).
    pub cs: usize,
    /// Subtract the shift from `p`.
    pub shift_p: bool,
    /// Read a second operand `q` (else `q'` is `p − s`).
    pub has_q: bool,
    /// Affine: `None`, `Relu` or `LeakyRelu`; mask: `ReluMask` or `LeakyMask`.
    pub epilogue: Epilogue,
}

impl ChannelSpec {
    /// Floats a moments kernel writes per call.
    pub fn moments_len(&self) -> usize {
        2 * self.cs
    }
}

/// Vectors per block: 2 accumulators each for the moments, within the 16 vector registers.
const BLOCK: usize = 4;

/// Positions per run ([`emit`]).
const RUN: i64 = 16;

fn splat0(b: &mut FunctionBuilder) -> Value {
    let z = b.ins().f32const(0.0);
    b.ins().splat(F32X4, z)
}

/// Emits the kernel of `spec` into a fresh function.
pub(crate) fn emit(b: &mut FunctionBuilder, spec: &ChannelSpec, has_fma: bool) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let prm = b.block_params(entry).to_vec();
    let (p, q, coef, out, pos0, pos1) = (prm[0], prm[1], prm[2], prm[3], prm[4], prm[5]);
    let vectors = spec.cs / 4;
    let q = if spec.has_q { q } else { p };
    if spec.kind == ChannelKind::Moments {
        // The sums live in `out` between runs.
        let z = splat0(b);
        for j in 0..2 * vectors {
            b.ins().store(flags(), z, out, (16 * j) as i32);
        }
    }
    // Positions in runs of `RUN`: a run's `RUN × cs` floats stay in L1 while each block of
    // channels passes over them (a block passing over all positions read every operand from L2
    // or further once per block).
    counted_loop(b, pos0, pos1, RUN, |b, r0| {
        let r1 = b.ins().iadd_imm_s(r0, RUN);
        let before_end = b.ins().icmp(IntCC::SignedLessThan, r1, pos1);
        let r1 = b.ins().select(before_end, r1, pos1);
        emit_run(b, spec, has_fma, [p, q, coef, out], r0, r1);
    });
    b.ins().return_(&[]);
}

/// The kernel's work on positions `pos0..pos1` (one run), block of channels after block.
fn emit_run(
    b: &mut FunctionBuilder,
    spec: &ChannelSpec,
    has_fma: bool,
    [p, q, coef, out]: [Value; 4],
    pos0: Value,
    pos1: Value,
) {
    let vectors = spec.cs / 4;
    let pos_bytes = (spec.cs * 4) as i64;
    for j0 in (0..vectors).step_by(BLOCK) {
        let v = (vectors - j0).min(BLOCK);
        let load_coef = |b: &mut FunctionBuilder, block: usize, j: usize| {
            b.ins().load(F32X4, flags(), coef, ((block * spec.cs + 4 * (j0 + j)) * 4) as i32)
        };
        let shift: Vec<Value> = (0..v).map(|j| load_coef(b, 0, j)).collect();
        match spec.kind {
            ChannelKind::Moments => {
                let acc: Vec<Variable> = (0..2 * v).map(|_| b.declare_var(F32X4)).collect();
                for j in 0..v {
                    let s1 = b.ins().load(F32X4, flags(), out, (16 * (j0 + j)) as i32);
                    let s2 = b.ins().load(F32X4, flags(), out, ((spec.cs + 4 * (j0 + j)) * 4) as i32);
                    b.def_var(acc[j], s1);
                    b.def_var(acc[v + j], s2);
                }
                counted_loop(b, pos0, pos1, 1, |b, pos| {
                    let off = b.ins().imul_imm_s(pos, pos_bytes);
                    let pp = b.ins().iadd(p, off);
                    let qp = b.ins().iadd(q, off);
                    for j in 0..v {
                        let o = (16 * (j0 + j)) as i32;
                        let pv = b.ins().load(F32X4, flags(), pp, o);
                        let pv = if spec.shift_p { b.ins().fsub(pv, shift[j]) } else { pv };
                        let qv = if spec.has_q {
                            let qv = b.ins().load(F32X4, flags(), qp, o);
                            b.ins().fsub(qv, shift[j])
                        } else if spec.shift_p {
                            pv
                        } else {
                            b.ins().fsub(pv, shift[j])
                        };
                        let s1 = b.use_var(acc[j]);
                        let s1 = b.ins().fadd(s1, pv);
                        b.def_var(acc[j], s1);
                        let s2 = b.use_var(acc[v + j]);
                        let s2 = fmadd(b, has_fma, pv, qv, s2);
                        b.def_var(acc[v + j], s2);
                    }
                });
                for j in 0..v {
                    let s1 = b.use_var(acc[j]);
                    let s2 = b.use_var(acc[v + j]);
                    b.ins().store(flags(), s1, out, (16 * (j0 + j)) as i32);
                    b.ins().store(flags(), s2, out, ((spec.cs + 4 * (j0 + j)) * 4) as i32);
                }
            }
            ChannelKind::Mask => {
                let zero = splat0(b);
                let other = match spec.epilogue {
                    Epilogue::LeakyMask(s) => {
                        let s = b.ins().f32const(s);
                        Some(b.ins().splat(F32X4, s))
                    }
                    _ => None,
                };
                counted_loop(b, pos0, pos1, 1, |b, pos| {
                    let off = b.ins().imul_imm_s(pos, pos_bytes);
                    let pp = b.ins().iadd(p, off);
                    let qp = b.ins().iadd(q, off);
                    let op = b.ins().iadd(out, off);
                    for j in 0..v {
                        let o = (16 * (j0 + j)) as i32;
                        let pv = b.ins().load(F32X4, flags(), pp, o);
                        let qv = b.ins().load(F32X4, flags(), qp, o);
                        let pos = b.ins().fcmp(FloatCC::GreaterThan, qv, zero);
                        let pos = b.ins().bitcast(
                            F32X4,
                            MemFlagsData::new().with_endianness(Endianness::Little),
                            pos,
                        );
                        let neg = match other {
                            Some(sv) => b.ins().fmul(pv, sv),
                            None => zero,
                        };
                        let r = b.ins().bitselect(pos, pv, neg);
                        b.ins().store(flags(), r, op, o);
                    }
                });
            }
            ChannelKind::Affine => {
                let a: Vec<Value> = (0..v).map(|j| load_coef(b, 1, j)).collect();
                let c: Vec<Value> = (0..v).map(|j| load_coef(b, 2, j)).collect();
                let d: Vec<Value> = (0..v).map(|j| load_coef(b, 3, j)).collect();
                let zero = splat0(b);
                let slope = match spec.epilogue {
                    Epilogue::LeakyRelu(s) => {
                        let s = b.ins().f32const(s);
                        Some(b.ins().splat(F32X4, s))
                    }
                    _ => None,
                };
                counted_loop(b, pos0, pos1, 1, |b, pos| {
                    let off = b.ins().imul_imm_s(pos, pos_bytes);
                    let pp = b.ins().iadd(p, off);
                    let qp = b.ins().iadd(q, off);
                    let op = b.ins().iadd(out, off);
                    for j in 0..v {
                        let o = (16 * (j0 + j)) as i32;
                        let pv = b.ins().load(F32X4, flags(), pp, o);
                        let pv = if spec.shift_p { b.ins().fsub(pv, shift[j]) } else { pv };
                        let mut r = fmadd(b, has_fma, pv, a[j], d[j]);
                        if spec.has_q {
                            let qv = b.ins().load(F32X4, flags(), qp, o);
                            let qv = b.ins().fsub(qv, shift[j]);
                            r = fmadd(b, has_fma, qv, c[j], r);
                        }
                        let r = match (spec.epilogue, slope) {
                            (Epilogue::Relu, _) => b.ins().fmax(r, zero),
                            // max(x, s·x) for s ≤ 1, min(x, s·x) for s > 1: x where x > 0.
                            (Epilogue::LeakyRelu(s), Some(sv)) => {
                                let sr = b.ins().fmul(r, sv);
                                if s <= 1.0 { b.ins().fmax(r, sr) } else { b.ins().fmin(r, sr) }
                            }
                            _ => r,
                        };
                        b.ins().store(flags(), r, op, o);
                    }
                });
            }
        }
    }
}

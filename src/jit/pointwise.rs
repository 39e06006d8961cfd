//! The point-wise kernel family (`Lowering::Pointwise`): Cranelift code specialised on a value's
//! channel stride, over a range of NHWC positions, on f32x4 lanes, with the transcendental
//! functions of [`super::exp`] inline.
//!
//! - [`PointwiseKind::Forward`] — `out = f(a)`: sigmoid, tanh, silu (and `exp` for its tests).
//! - [`PointwiseKind::Backward`] — `out = b·f'(a)` with `b` the output gradient and `a` the
//!   op's output (sigmoid `y(1 − y)`, tanh `1 − y²`) or its input (silu `σ(1 + x(1 − σ))`).
//! - [`PointwiseKind::Mul`] — `out = a·b`: dropout forward and backward (`b` the mask).
//! - [`PointwiseKind::Softmax`] / [`PointwiseKind::SoftmaxBackward`] — per position over the
//!   real channels: `y = e^(x − max)/Σ`, and `dx = y·(dy − Σ dy·y)` (`a = y`, `b = dy`).
//! - [`PointwiseKind::Loss`] — mse / mae (masked or not) of `a` against `b` (mask `c`): the
//!   output gradient `scale·(a − b)` (mse) or `scale·sign(a − b)` (mae) into `out` (which may be
//!   `a` itself), and the f32 sum of `(a − b)²` or `|a − b|` over the range into `aux[0..4]`.
//!
//! Pad lanes (channels past C) are never summed: `coef[0..cs]` holds the lane-valid mask (all
//! bits set on real channels), and sums select 0 elsewhere. `coef[cs..cs + 4]` is the loss
//! scale. The caller splits positions into fixed chunks, so results do not depend on the thread
//! count.

use super::codegen::{F32X4, PTR, counted_loop, flags, fmadd};
use super::exp::{exp, select, sigmoid, splat, tanh};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

/// `fn(a, b, c, coef, out, aux, pos0, pos1)`.
pub type PointwiseFn =
    unsafe extern "C" fn(*const f32, *const f32, *const f32, *const f32, *mut f32, *mut f32, i64, i64);

/// Pointers a point-wise kernel takes before its position range.
pub(crate) const POINTWISE_PTRS: usize = 6;

/// An element-wise function of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    Sigmoid,
    Tanh,
    Silu,
    /// e^x and ln x: only the accuracy tests use them.
    #[cfg(test)]
    Exp,
    #[cfg(test)]
    Ln,
}

impl Act {
    /// Whether the derivative is computed from the op's input (else from its output).
    pub fn derivative_from_input(self) -> bool {
        self == Act::Silu
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PointwiseKind {
    Forward(Act),
    Backward(Act),
    Mul,
    Softmax,
    SoftmaxBackward,
    Loss {
        mae: bool,
        masked: bool,
    },
    /// Cross-entropy of logits `a` (one position per sample) against probabilities `b`: the
    /// gradient `scale·(softmax(a)·Σb − b)` into `out` (which may be `a`), and the sum over the
    /// range of `Σb·ln Σe^(a − max) − Σ b·(a − max)` into `aux[0]`.
    CrossEntropy,
}

/// One point-wise kernel, fully specialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PointwiseSpec {
    pub kind: PointwiseKind,
    /// The channel stride of every operand (a multiple of 4).
    pub cs: usize,
}

impl PointwiseSpec {
    /// Floats of the coefficient block: the lane-valid mask and the loss scale.
    pub fn coef_len(&self) -> usize {
        self.cs + 4
    }

    /// The coefficients of a value with `c` real channels and loss scale `scale`.
    pub fn coefficients(&self, c: usize, scale: f32) -> Vec<f32> {
        let mut coef = vec![0.0f32; self.coef_len()];
        for l in coef.iter_mut().take(c) {
            *l = f32::from_bits(u32::MAX);
        }
        coef[self.cs..].fill(scale);
        coef
    }
}

/// Emits the kernel of `spec` into a fresh function.
pub(crate) fn emit(b: &mut FunctionBuilder, spec: &PointwiseSpec, fma: bool) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let prm = b.block_params(entry).to_vec();
    let (pa, pb, pc, coef, out, aux, pos0, pos1) =
        (prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7]);
    let cs = spec.cs as i64;
    match spec.kind {
        PointwiseKind::Forward(_) | PointwiseKind::Backward(_) | PointwiseKind::Mul => {
            // Every lane of every position, as one flat run of vectors (pad lanes computed too,
            // never read as real values).
            let start = b.ins().imul_imm_s(pos0, cs * 4);
            let end = b.ins().imul_imm_s(pos1, cs * 4);
            counted_loop(b, start, end, 16, |b, off| {
                let a = b.ins().iadd(pa, off);
                let av = b.ins().load(F32X4, flags(), a, 0);
                let r = match spec.kind {
                    PointwiseKind::Forward(act) => forward(b, fma, act, av),
                    PointwiseKind::Backward(act) => {
                        let bp = b.ins().iadd(pb, off);
                        let dy = b.ins().load(F32X4, flags(), bp, 0);
                        let d = derivative(b, fma, act, av);
                        b.ins().fmul(dy, d)
                    }
                    _ => {
                        let bp = b.ins().iadd(pb, off);
                        let bv = b.ins().load(F32X4, flags(), bp, 0);
                        b.ins().fmul(av, bv)
                    }
                };
                let o = b.ins().iadd(out, off);
                b.ins().store(flags(), r, o, 0);
            });
        }
        PointwiseKind::CrossEntropy => {
            let zero = splat(b, 0.0);
            let total = b.declare_var(F32X4);
            b.def_var(total, zero);
            counted_loop(b, pos0, pos1, 1, |b, pos| {
                let base = b.ins().imul_imm_s(pos, cs * 4);
                let l = cross_entropy_position(b, fma, spec, [pa, pb, out, coef], base);
                let t = b.use_var(total);
                let t = b.ins().fadd(t, l);
                b.def_var(total, t);
            });
            let t = b.use_var(total);
            b.ins().store(flags(), t, aux, 0);
        }
        PointwiseKind::Softmax | PointwiseKind::SoftmaxBackward => {
            counted_loop(b, pos0, pos1, 1, |b, pos| {
                let base = b.ins().imul_imm_s(pos, cs * 4);
                softmax_position(b, fma, spec, [pa, pb, out, coef], base);
            });
        }
        PointwiseKind::Loss { mae, masked } => {
            let zero = splat(b, 0.0);
            let acc = b.declare_var(F32X4);
            b.def_var(acc, zero);
            let scale = b.ins().load(F32X4, flags(), coef, (cs * 4) as i32);
            let neg_scale = b.ins().fneg(scale);
            let start = b.ins().imul_imm_s(pos0, cs * 4);
            let end = b.ins().imul_imm_s(pos1, cs * 4);
            counted_loop(b, start, end, 16, |b, off| {
                // The lane within a position: the byte offset modulo the position's bytes.
                let lane = b.ins().urem_imm_s(off, cs * 4);
                let cp = b.ins().iadd(coef, lane);
                let valid = b.ins().load(F32X4, flags(), cp, 0);
                let ap = b.ins().iadd(pa, off);
                let bp = b.ins().iadd(pb, off);
                let y = b.ins().load(F32X4, flags(), ap, 0);
                let t = b.ins().load(F32X4, flags(), bp, 0);
                let d = b.ins().fsub(y, t);
                let d = if masked {
                    let mp = b.ins().iadd(pc, off);
                    let m = b.ins().load(F32X4, flags(), mp, 0);
                    b.ins().fmul(d, m)
                } else {
                    d
                };
                let d = b.ins().bitselect(valid, d, zero);
                let a = b.use_var(acc);
                let (term, g) = if mae {
                    let pos = b.ins().fcmp(FloatCC::GreaterThan, d, zero);
                    let neg = b.ins().fcmp(FloatCC::LessThan, d, zero);
                    let g = select(b, neg, neg_scale, zero);
                    (b.ins().fabs(d), select(b, pos, scale, g))
                } else {
                    (b.ins().fmul(d, d), b.ins().fmul(d, scale))
                };
                let a = b.ins().fadd(a, term);
                b.def_var(acc, a);
                let op = b.ins().iadd(out, off);
                b.ins().store(flags(), g, op, 0);
            });
            let a = b.use_var(acc);
            b.ins().store(flags(), a, aux, 0);
        }
    }
    b.ins().return_(&[]);
}

/// f(x) of an activation.
fn forward(b: &mut FunctionBuilder, fma: bool, act: Act, x: Value) -> Value {
    match act {
        Act::Sigmoid => sigmoid(b, fma, x),
        Act::Tanh => tanh(b, fma, x),
        Act::Silu => {
            let s = sigmoid(b, fma, x);
            b.ins().fmul(x, s)
        }
        #[cfg(test)]
        Act::Exp => exp(b, fma, x),
        #[cfg(test)]
        Act::Ln => super::exp::ln(b, fma, x),
    }
}

/// f'(x) from the output (sigmoid, tanh) or the input (silu).
fn derivative(b: &mut FunctionBuilder, fma: bool, act: Act, v: Value) -> Value {
    let one = splat(b, 1.0);
    match act {
        Act::Sigmoid => {
            let r = b.ins().fsub(one, v);
            b.ins().fmul(v, r)
        }
        Act::Tanh => {
            let nv = b.ins().fneg(v);
            fmadd(b, fma, nv, v, one)
        }
        Act::Silu => {
            let s = sigmoid(b, fma, v);
            let r = b.ins().fsub(one, s);
            let t = fmadd(b, fma, v, r, one);
            b.ins().fmul(s, t)
        }
        #[cfg(test)]
        Act::Exp | Act::Ln => exp(b, fma, v),
    }
}

/// The four lanes of `v` combined by `op` into every lane.
fn horizontal(b: &mut FunctionBuilder, v: Value, max: bool) -> Value {
    let mut r = b.ins().extractlane(v, 0);
    for l in 1..4u8 {
        let x = b.ins().extractlane(v, l);
        r = if max { b.ins().fmax(r, x) } else { b.ins().fadd(r, x) };
    }
    b.ins().splat(F32X4, r)
}

/// A loop over the vectors of one position: `body(b, byte offset within the position)`.
fn over_channels(b: &mut FunctionBuilder, cs: i64, body: impl FnMut(&mut FunctionBuilder, Value)) {
    let zero = b.ins().iconst(PTR, 0);
    let end = b.ins().iconst(PTR, cs * 4);
    counted_loop(b, zero, end, 16, body);
}

/// Softmax (or its backward) at the position whose first byte is `base`.
fn softmax_position(b: &mut FunctionBuilder, fma: bool, spec: &PointwiseSpec, ptrs: [Value; 4], base: Value) {
    let [pa, pb, out, coef] = ptrs;
    let cs = spec.cs as i64;
    let a = b.ins().iadd(pa, base);
    let o = b.ins().iadd(out, base);
    let zero = splat(b, 0.0);
    let load = |b: &mut FunctionBuilder, p: Value, off: Value| {
        let q = b.ins().iadd(p, off);
        b.ins().load(F32X4, flags(), q, 0)
    };
    let acc: Variable = b.declare_var(F32X4);
    if spec.kind == PointwiseKind::SoftmaxBackward {
        // dot = Σ dy·y over the real channels, then dx = y·(dy − dot).
        let bb = b.ins().iadd(pb, base);
        b.def_var(acc, zero);
        over_channels(b, cs, |b, off| {
            let y = load(b, a, off);
            let dy = load(b, bb, off);
            let valid = load(b, coef, off);
            let p = b.ins().fmul(y, dy);
            let p = b.ins().bitselect(valid, p, zero);
            let s = b.use_var(acc);
            let s = b.ins().fadd(s, p);
            b.def_var(acc, s);
        });
        let s = b.use_var(acc);
        let dot = horizontal(b, s, false);
        over_channels(b, cs, |b, off| {
            let y = load(b, a, off);
            let dy = load(b, bb, off);
            let d = b.ins().fsub(dy, dot);
            let r = b.ins().fmul(y, d);
            let q = b.ins().iadd(o, off);
            b.ins().store(flags(), r, q, 0);
        });
        return;
    }
    let ninf = splat(b, f32::NEG_INFINITY);
    b.def_var(acc, ninf);
    over_channels(b, cs, |b, off| {
        let x = load(b, a, off);
        let valid = load(b, coef, off);
        let x = b.ins().bitselect(valid, x, ninf);
        let m = b.use_var(acc);
        let m = b.ins().fmax(m, x);
        b.def_var(acc, m);
    });
    let m = b.use_var(acc);
    let max = horizontal(b, m, true);
    // e^(x − max) stored, and summed over the real channels.
    b.def_var(acc, zero);
    over_channels(b, cs, |b, off| {
        let x = load(b, a, off);
        let valid = load(b, coef, off);
        let x = b.ins().fsub(x, max);
        let e = exp(b, fma, x);
        let e = b.ins().bitselect(valid, e, zero);
        let q = b.ins().iadd(o, off);
        b.ins().store(flags(), e, q, 0);
        let s = b.use_var(acc);
        let s = b.ins().fadd(s, e);
        b.def_var(acc, s);
    });
    let s = b.use_var(acc);
    let sum = horizontal(b, s, false);
    let one = splat(b, 1.0);
    let inv = b.ins().fdiv(one, sum);
    over_channels(b, cs, |b, off| {
        let q = b.ins().iadd(o, off);
        let e = b.ins().load(F32X4, flags(), q, 0);
        let r = b.ins().fmul(e, inv);
        b.ins().store(flags(), r, q, 0);
    });
}

/// Cross-entropy at the position whose first byte is `base`: writes the gradient, returns the
/// position's loss in lane 0 (other lanes 0).
fn cross_entropy_position(
    b: &mut FunctionBuilder,
    fma: bool,
    spec: &PointwiseSpec,
    ptrs: [Value; 4],
    base: Value,
) -> Value {
    let [pa, pb, out, coef] = ptrs;
    let cs = spec.cs as i64;
    let a = b.ins().iadd(pa, base);
    let t = b.ins().iadd(pb, base);
    let o = b.ins().iadd(out, base);
    let zero = splat(b, 0.0);
    let load = |b: &mut FunctionBuilder, p: Value, off: Value| {
        let q = b.ins().iadd(p, off);
        b.ins().load(F32X4, flags(), q, 0)
    };
    let ninf = splat(b, f32::NEG_INFINITY);
    let acc = b.declare_var(F32X4);
    b.def_var(acc, ninf);
    over_channels(b, cs, |b, off| {
        let z = load(b, a, off);
        let valid = load(b, coef, off);
        let z = b.ins().bitselect(valid, z, ninf);
        let m = b.use_var(acc);
        let m = b.ins().fmax(m, z);
        b.def_var(acc, m);
    });
    let m = b.use_var(acc);
    let max = horizontal(b, m, true);
    // Σ e^(z − max), Σ t, Σ t·(z − max) over the real classes; nothing stored yet (`out` may
    // be the logits).
    let (se, st, stz) = (b.declare_var(F32X4), b.declare_var(F32X4), b.declare_var(F32X4));
    for v in [se, st, stz] {
        b.def_var(v, zero);
    }
    over_channels(b, cs, |b, off| {
        let z = load(b, a, off);
        let tv = load(b, t, off);
        let valid = load(b, coef, off);
        let zs = b.ins().fsub(z, max);
        let e = exp(b, fma, zs);
        let e = b.ins().bitselect(valid, e, zero);
        let tv = b.ins().bitselect(valid, tv, zero);
        let tz = b.ins().fmul(tv, zs);
        let tz = b.ins().bitselect(valid, tz, zero);
        for (var, x) in [(se, e), (st, tv), (stz, tz)] {
            let s = b.use_var(var);
            let s = b.ins().fadd(s, x);
            b.def_var(var, s);
        }
    });
    let (s, ts, tzs) = (b.use_var(se), b.use_var(st), b.use_var(stz));
    let sum = horizontal(b, s, false);
    let tsum = horizontal(b, ts, false);
    let tz = horizontal(b, tzs, false);
    let scale = b.ins().load(F32X4, flags(), coef, (cs * 4) as i32);
    let one = splat(b, 1.0);
    let inv = b.ins().fdiv(one, sum);
    let k = b.ins().fmul(inv, tsum);
    over_channels(b, cs, |b, off| {
        let z = load(b, a, off);
        let tv = load(b, t, off);
        let valid = load(b, coef, off);
        let zs = b.ins().fsub(z, max);
        let e = exp(b, fma, zs);
        let g = b.ins().fmul(e, k);
        let g = b.ins().fsub(g, tv);
        let g = b.ins().fmul(g, scale);
        let g = b.ins().bitselect(valid, g, zero);
        let q = b.ins().iadd(o, off);
        b.ins().store(flags(), g, q, 0);
    });
    // tsum·ln Σ − Σ t·(z − max), in lane 0.
    let lnsum = super::exp::ln(b, fma, sum);
    let l = b.ins().fmul(tsum, lnsum);
    let l = b.ins().fsub(l, tz);
    let l0 = b.ins().extractlane(l, 0);
    b.ins().insertlane(zero, l0, 0)
}

#[cfg(test)]
mod tests {
    //! Accuracy of the generated `exp`, `sigmoid` and `tanh` against f64 (`std`), over the whole
    //! f32 range where they are finite and non-zero, and at the edges.
    use super::*;
    use crate::jit::codegen::{Codegen, OptLevel};
    use crate::jit::exec::run_pointwise;
    use crate::jit::unary::PointwiseCall;

    /// `f` of the generated kernel on every element of `xs` (one channel lane per position).
    fn generated(act: Act, xs: &[f32]) -> Vec<f32> {
        let mut cg = Codegen::new(OptLevel::None).unwrap();
        let spec = PointwiseSpec { kind: PointwiseKind::Forward(act), cs: 4 };
        let mut call = PointwiseCall::new(&mut cg, spec.clone()).unwrap();
        cg.finish().unwrap();
        call.link(&cg);
        let mut input = xs.to_vec();
        input.resize(xs.len().div_ceil(4) * 4, 0.0);
        let mut out = vec![0.0f32; input.len()];
        let coef = spec.coefficients(4, 0.0);
        run_pointwise(call.f.unwrap(), &spec, input.len() / 4, [&input, &input, &input], &coef, &mut out);
        out.truncate(xs.len());
        out
    }

    /// The worst relative error of `act` against `reference` on `n` evenly spaced points of
    /// `[lo, hi]`, and where it occurs.
    fn worst(act: Act, (lo, hi): (f32, f32), n: usize, reference: impl Fn(f64) -> f64) -> (f64, f32) {
        let xs: Vec<f32> = (0..n).map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32).collect();
        let ys = generated(act, &xs);
        let mut w = (0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            let r = reference(f64::from(x));
            let e = (f64::from(y) - r).abs() / r.abs().max(f64::MIN_POSITIVE);
            if e > w.0 {
                w = (e, x);
            }
        }
        eprintln!("{act:?} on [{lo}, {hi}]: worst relative error {:.3e} at {}", w.0, w.1);
        w
    }

    #[test]
    fn exp_is_within_about_one_ulp_of_f64_where_f32_is_normal() {
        // e^x is a normal f32 on [−87.3, 88.72]; f32's ulp is 1.19e−7 relative (at most).
        let (e, at) = worst(Act::Exp, (-87.3, 88.72), 2_000_003, f64::exp);
        assert!(e < 1.5e-7, "worst relative error {e:e} at x = {at}");
        let (e, at) = worst(Act::Exp, (-1.0, 1.0), 200_001, f64::exp);
        assert!(e < 1.5e-7, "worst relative error {e:e} at x = {at}");
    }

    #[test]
    fn exp_edges_overflow_underflow_and_nan() {
        let xs = [88.73f32, 100.0, f32::INFINITY, f32::NEG_INFINITY, -104.0, -200.0, f32::NAN, 0.0, -0.0];
        let ys = generated(Act::Exp, &xs);
        assert_eq!(&ys[..6], &[f32::INFINITY, f32::INFINITY, f32::INFINITY, 0.0, 0.0, 0.0]);
        assert!(ys[6].is_nan(), "exp(NaN) = {}", ys[6]);
        assert_eq!(&ys[7..], &[1.0, 1.0]);
        // Subnormal results: within one subnormal step (1.4e−45) plus 2 ulp of f64's value.
        let xs: Vec<f32> = (0..1000).map(|i| -103.0 + 15.0 * i as f32 / 999.0).collect();
        for (x, y) in xs.iter().zip(generated(Act::Exp, &xs)) {
            let r = f64::from(*x).exp();
            assert!((f64::from(y) - r).abs() <= 1.5e-45 + 2.4e-7 * r, "exp({x}) = {y}, f64 {r}");
        }
    }

    #[test]
    fn ln_is_within_about_one_ulp_of_f64() {
        let (e, at) = worst(Act::Ln, (1.0, 1000.0), 1_000_001, f64::ln);
        assert!(e < 1.5e-7, "worst relative error {e:e} at x = {at}");
        // Near 1 ln x ≈ x − 1: relative accuracy kept.
        let (e, at) = worst(Act::Ln, (1.0 + 1e-6, 1.01), 100_001, f64::ln);
        assert!(e < 1.5e-7, "near 1: worst relative error {e:e} at x = {at}");
        assert_eq!(generated(Act::Ln, &[1.0, 1e30])[0], 0.0);
        let (e, at) = worst(Act::Ln, (1e-30, 1e30), 1_000_001, f64::ln);
        assert!(e < 1.5e-7, "worst relative error {e:e} at x = {at}");
    }

    #[test]
    fn sigmoid_tanh_and_silu_are_within_two_ulp_of_f64() {
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (e, at) = worst(Act::Sigmoid, (-87.0, 30.0), 1_000_001, sigmoid);
        assert!(e < 2.5e-7, "sigmoid: worst relative error {e:e} at x = {at}");
        let (e, at) = worst(Act::Tanh, (-20.0, 20.0), 1_000_001, f64::tanh);
        assert!(e < 2.5e-7, "tanh: worst relative error {e:e} at x = {at}");
        // Near 0 tanh x ≈ x must keep its relative accuracy (no 1 − e^−2x cancellation).
        let (e, at) = worst(Act::Tanh, (-1e-3, 1e-3), 100_001, f64::tanh);
        assert!(e < 2.5e-7, "tanh near 0: worst relative error {e:e} at x = {at}");
        let silu = |x: f64| x / (1.0 + (-x).exp());
        let (e, at) = worst(Act::Silu, (-80.0, 30.0), 1_000_000, silu);
        assert!(e < 3.0e-7, "silu: worst relative error {e:e} at x = {at}");
        let edges = [f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30];
        assert_eq!(generated(Act::Tanh, &edges), [1.0, -1.0, 1.0, -1.0]);
        assert_eq!(generated(Act::Sigmoid, &edges), [1.0, 0.0, 1.0, 0.0]);
        assert!(generated(Act::Tanh, &[f32::NAN])[0].is_nan());
        assert!(generated(Act::Sigmoid, &[f32::NAN])[0].is_nan());
    }
}

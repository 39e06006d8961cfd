//! Transcendental functions as Cranelift code on f32x4: one polynomial `exp` (Cephes' `expf`),
//! and `sigmoid` and `tanh` built on it, emitted inline into the kernels that need them
//! ([`super::pointwise`]). No calls, no tables: every constant is an immediate.
//!
//! `exp(x)`: `k = round(x·log₂e)`, `r = x − k·ln2` (ln2 in two parts, so `r` is exact to f32),
//! `e^r` by Cephes' degree-6 minimax polynomial on `|r| ≤ ln2/2`, then `2^k` from exponent bits,
//! applied as two factors `2^⌊k/2⌋·2^(k−⌊k/2⌋)` so neither leaves the normal range and results
//! near f32's limits (overflow, subnormal) round as a multiplication does. Edges: `x` is clamped
//! to [−104, ln(f32::MAX)] (e^−104 is 0 in f32); above ln(f32::MAX) the result is +∞; NaN stays
//! NaN. Measured against f64 `exp` (`pointwise::tests`, 2 M points over [−87.3, 88.72]): worst
//! relative error 1.19e−7 (one ulp); sigmoid 1.8e−7, tanh 1.35e−7 (4.5e−8 near 0), silu 2.3e−7.

use super::codegen::{F32X4, fmadd};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

const I32X4: types::Type = types::I32X4;

/// ln(f32::MAX): above it e^x is +∞ in f32.
const EXP_HI: f32 = 88.722_84;
/// e^x below this is 0 in f32 (well below the smallest subnormal, 1.4e−45 = e^−103.3).
const EXP_LO: f32 = -104.0;

pub(crate) fn splat(b: &mut FunctionBuilder, v: f32) -> Value {
    let s = b.ins().f32const(v);
    b.ins().splat(F32X4, s)
}

fn splat_i32(b: &mut FunctionBuilder, v: i32) -> Value {
    let s = b.ins().iconst(types::I32, i64::from(v));
    b.ins().splat(I32X4, s)
}

/// Reinterprets the bits of a vector (lane count kept).
pub(crate) fn bits_as(b: &mut FunctionBuilder, ty: types::Type, x: Value) -> Value {
    b.ins().bitcast(ty, MemFlagsData::new().with_endianness(Endianness::Little), x)
}

/// `cond ? x : y` per lane (`cond` from `fcmp` on f32x4).
pub(crate) fn select(b: &mut FunctionBuilder, cond: Value, x: Value, y: Value) -> Value {
    let mask = bits_as(b, F32X4, cond);
    b.ins().bitselect(mask, x, y)
}

/// Horner's rule: `c[0]·x^(n−1) + … + c[n−1]`.
fn horner(b: &mut FunctionBuilder, fma: bool, x: Value, c: &[f32]) -> Value {
    let mut acc = splat(b, c[0]);
    for &k in &c[1..] {
        let kv = splat(b, k);
        acc = fmadd(b, fma, acc, x, kv);
    }
    acc
}

/// `2^k` for integer lanes `k` in [−126, 127], from exponent bits.
fn pow2(b: &mut FunctionBuilder, k: Value) -> Value {
    let bias = splat_i32(b, 127);
    let e = b.ins().iadd(k, bias);
    let e = b.ins().ishl_imm_s(e, 23);
    bits_as(b, F32X4, e)
}

/// e^x per lane (see the module comment for the method and its accuracy).
pub(crate) fn exp(b: &mut FunctionBuilder, fma: bool, x: Value) -> Value {
    let hi = splat(b, EXP_HI);
    let lo = splat(b, EXP_LO);
    let xc = b.ins().fmin(x, hi);
    let xc = b.ins().fmax(xc, lo);
    let log2e = splat(b, std::f32::consts::LOG2_E);
    let kf = b.ins().fmul(xc, log2e);
    let kf = b.ins().nearest(kf);
    // r = x − k·ln2 with ln2 = C1 + C2, C1 exact in few bits so k·C1 is exact.
    let c1 = splat(b, -0.693_359_4);
    let c2 = splat(b, 2.121_944_4e-4);
    let r = fmadd(b, fma, kf, c1, xc);
    let r = fmadd(b, fma, kf, c2, r);
    let p = horner(
        b,
        fma,
        r,
        &[1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.0e-1],
    );
    let r2 = b.ins().fmul(r, r);
    let one = splat(b, 1.0);
    let r1 = b.ins().fadd(r, one);
    let y = fmadd(b, fma, p, r2, r1);
    // 2^k as two factors, each within the normal exponent range for k in [−150, 128].
    let k = b.ins().fcvt_to_sint_sat(I32X4, kf);
    let k1 = b.ins().sshr_imm_s(k, 1);
    let k2 = b.ins().isub(k, k1);
    let s1 = pow2(b, k1);
    let s2 = pow2(b, k2);
    let y = b.ins().fmul(y, s1);
    let y = b.ins().fmul(y, s2);
    let over = b.ins().fcmp(FloatCC::GreaterThan, x, hi);
    let inf = splat(b, f32::INFINITY);
    select(b, over, inf, y)
}

/// 1/(1 + e^−x): relative error that of `exp` (plus one rounding) for every x.
pub(crate) fn sigmoid(b: &mut FunctionBuilder, fma: bool, x: Value) -> Value {
    let nx = b.ins().fneg(x);
    let e = exp(b, fma, nx);
    let one = splat(b, 1.0);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(one, d)
}

/// tanh x (Cephes' `tanhf`): `x + x³·P(x²)` for |x| < 0.625, where `1 − 2/(e^2|x| + 1)` would
/// cancel, else that with the sign of x.
pub(crate) fn tanh(b: &mut FunctionBuilder, fma: bool, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    let s = b.ins().fmul(x, x);
    let p =
        horner(b, fma, s, &[-5.704_988_7e-3, 2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1]);
    let ps = b.ins().fmul(p, s);
    let small = fmadd(b, fma, ps, x, x);
    let two = splat(b, 2.0);
    let one = splat(b, 1.0);
    let ax2 = b.ins().fmul(ax, two);
    let e = exp(b, fma, ax2);
    let e1 = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, e1);
    let big = b.ins().fsub(one, q);
    // The sign of x onto |tanh x|.
    let sign_bit = splat(b, -0.0);
    let sign = b.ins().band(x, sign_bit);
    let big = b.ins().bor(big, sign);
    let cut = splat(b, 0.625);
    let is_small = b.ins().fcmp(FloatCC::LessThan, ax, cut);
    select(b, is_small, small, big)
}

/// ln x per lane for positive normal x (Cephes' `logf`): x = m·2^e with m in [√½, √2), then
/// `ln(1 + (m − 1))` by a degree-9 polynomial and `e·ln2` in two parts. Used by the
/// cross-entropy loss on `Σ e^(z − max) ≥ 1`.
pub(crate) fn ln(b: &mut FunctionBuilder, fma: bool, x: Value) -> Value {
    let bits = bits_as(b, I32X4, x);
    let e = b.ins().sshr_imm_s(bits, 23);
    let off = splat_i32(b, 126);
    let e = b.ins().isub(e, off);
    let mant_mask = splat_i32(b, 0x807F_FFFF_u32 as i32);
    let half_exp = splat_i32(b, 0x3F00_0000);
    let m = b.ins().band(bits, mant_mask);
    let m = b.ins().bor(m, half_exp);
    let m = bits_as(b, F32X4, m);
    let ef = b.ins().fcvt_from_sint(F32X4, e);
    // m in [0.5, 1): below √½ take 2m − 1 and e − 1, so the argument stays in [√½ − 1, √2 − 1).
    let sqrthf = splat(b, std::f32::consts::FRAC_1_SQRT_2);
    let one = splat(b, 1.0);
    let zero = splat(b, 0.0);
    let low = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
    let m2 = b.ins().fadd(m, m);
    let m2 = b.ins().fsub(m2, one);
    let m1 = b.ins().fsub(m, one);
    let xr = select(b, low, m2, m1);
    let dec = select(b, low, one, zero);
    let ef = b.ins().fsub(ef, dec);
    let z = b.ins().fmul(xr, xr);
    let p = horner(
        b,
        fma,
        xr,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let p = b.ins().fmul(p, xr);
    let y = b.ins().fmul(p, z);
    let c2 = splat(b, -2.121_944_4e-4);
    let y = fmadd(b, fma, ef, c2, y);
    let mhalf = splat(b, -0.5);
    let y = fmadd(b, fma, z, mhalf, y);
    let r = b.ins().fadd(xr, y);
    let c1 = splat(b, 0.693_359_4);
    fmadd(b, fma, ef, c1, r)
}

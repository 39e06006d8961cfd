//! The optimizer's update as generated code: one kernel per update rule (sgd with or without
//! nesterov, adagrad, rmsprop, adam), f64 in f64x2 lanes then a scalar tail, over a range of
//! one parameter's elements. The step's numbers (learning rate, the clip scale, weight decay,
//! adam's bias corrections) are coefficients read from memory, so a training run compiles each
//! rule once, whatever its settings or step count.
//!
//! Each element's arithmetic is the runtime's rule (`runtime::optim`) operation for operation —
//! the same products, sums, quotients and square roots in the same order, no fused multiply-add
//! — so the generated update is bit-identical to it (tested), and so to the PyTorch fixtures
//! the rule is checked against.

use super::codegen::{Codegen, FnHandle, counted_loop, flags};
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use std::sync::{Mutex, OnceLock};

/// `fn(theta, grad, s0, s1, coef, n)`: updates elements `0..n` of `theta` and the slots `s0`
/// (every rule) and `s1` (adam's second moment; unused otherwise).
pub type UpdateFn = unsafe extern "C" fn(*mut f64, *const f64, *mut f64, *mut f64, *const f64, i64);

/// The shape of an update's code; its numbers are [`UpdateRule::coefficients`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateRule {
    /// buf ← γ·buf + g; θ ← θ − α·buf, or with nesterov θ ← θ − α·(g + γ·buf).
    Sgd { nesterov: bool },
    /// r ← r + g²; θ ← θ − α·g/(δ + √r).
    Adagrad,
    /// r ← ρ·r + (1 − ρ)·g²; θ ← θ − α·g/(δ + √r).
    RmsProp,
    /// m ← ρ₁·m + (1 − ρ₁)·g; v ← ρ₂·v + (1 − ρ₂)·g²; θ ← θ − α·(m/c₁)/(δ + √(v/c₂)).
    Adam,
}

/// Coefficient slots (f64): `g = grad·SCALE + WD·θ`, then the rule's own.
const SCALE: usize = 0;
const WD: usize = 1;
const LR: usize = 2;
/// sgd: γ. adagrad, rmsprop, adam: δ.
const C3: usize = 3;
/// rmsprop: ρ, 1 − ρ. adam: ρ₁, 1 − ρ₁, ρ₂, 1 − ρ₂, c₁, c₂.
const C4: usize = 4;
pub const COEFFICIENTS: usize = 10;

impl UpdateRule {
    /// The coefficients of one step, in the kernel's slots: `scale` the clip factor, `wd` the
    /// weight decay, then per rule (sgd: lr, momentum; adagrad: lr, eps; rmsprop: lr, eps, rho;
    /// adam: lr, eps, rho1, rho2 and the bias corrections c1 = 1 − ρ₁ᵗ, c2 = 1 − ρ₂ᵗ).
    pub fn coefficients(scale: f64, wd: f64, lr: f64, rest: &[f64]) -> [f64; COEFFICIENTS] {
        let mut c = [0.0; COEFFICIENTS];
        c[SCALE] = scale;
        c[WD] = wd;
        c[LR] = lr;
        for (d, &v) in c[C3..].iter_mut().zip(rest) {
            *d = v;
        }
        c
    }
}

fn emit(b: &mut FunctionBuilder, rule: UpdateRule) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (theta, grad, s0, s1, coef, n) = (p[0], p[1], p[2], p[3], p[4], p[5]);
    // The elements of one step of width `ty` (f64x2 or f64) at byte offset `at`.
    let body = |b: &mut FunctionBuilder, ty: Type, at: Value| {
        let k = |b: &mut FunctionBuilder, slot: usize| {
            let v = b.ins().load(types::F64, flags(), coef, (8 * slot) as i32);
            if ty == types::F64 { v } else { b.ins().splat(ty, v) }
        };
        let addr = |b: &mut FunctionBuilder, base: Value| b.ins().iadd(base, at);
        let (tp, gp, s0p) = (addr(b, theta), addr(b, grad), addr(b, s0));
        let th = b.ins().load(ty, flags(), tp, 0);
        let gr = b.ins().load(ty, flags(), gp, 0);
        // g = grad·scale + wd·θ
        let (scale, wd) = (k(b, SCALE), k(b, WD));
        let g1 = b.ins().fmul(gr, scale);
        let g2 = b.ins().fmul(wd, th);
        let g = b.ins().fadd(g1, g2);
        let lr = k(b, LR);
        let step = match rule {
            UpdateRule::Sgd { nesterov } => {
                let gamma = k(b, C3);
                let buf = b.ins().load(ty, flags(), s0p, 0);
                let buf = b.ins().fmul(gamma, buf);
                let buf = b.ins().fadd(buf, g);
                b.ins().store(flags(), buf, s0p, 0);
                let d = if nesterov {
                    let m = b.ins().fmul(gamma, buf);
                    b.ins().fadd(g, m)
                } else {
                    buf
                };
                b.ins().fmul(lr, d)
            }
            UpdateRule::Adagrad | UpdateRule::RmsProp => {
                let eps = k(b, C3);
                let r = b.ins().load(ty, flags(), s0p, 0);
                let r = if rule == UpdateRule::Adagrad {
                    let gg = b.ins().fmul(g, g);
                    b.ins().fadd(r, gg)
                } else {
                    let (rho, one_minus) = (k(b, C4), k(b, C4 + 1));
                    let a = b.ins().fmul(rho, r);
                    let c = b.ins().fmul(one_minus, g);
                    let c = b.ins().fmul(c, g);
                    b.ins().fadd(a, c)
                };
                b.ins().store(flags(), r, s0p, 0);
                let num = b.ins().fmul(lr, g);
                let root = b.ins().sqrt(r);
                let den = b.ins().fadd(eps, root);
                b.ins().fdiv(num, den)
            }
            UpdateRule::Adam => {
                let eps = k(b, C3);
                let (rho1, om1, rho2, om2) = (k(b, C4), k(b, C4 + 1), k(b, C4 + 2), k(b, C4 + 3));
                let (c1, c2) = (k(b, C4 + 4), k(b, C4 + 5));
                let s1p = addr(b, s1);
                let m = b.ins().load(ty, flags(), s0p, 0);
                let m = b.ins().fmul(rho1, m);
                let mg = b.ins().fmul(om1, g);
                let m = b.ins().fadd(m, mg);
                b.ins().store(flags(), m, s0p, 0);
                let v = b.ins().load(ty, flags(), s1p, 0);
                let v = b.ins().fmul(rho2, v);
                let vg = b.ins().fmul(om2, g);
                let vg = b.ins().fmul(vg, g);
                let v = b.ins().fadd(v, vg);
                b.ins().store(flags(), v, s1p, 0);
                let mh = b.ins().fdiv(m, c1);
                let num = b.ins().fmul(lr, mh);
                let vh = b.ins().fdiv(v, c2);
                let root = b.ins().sqrt(vh);
                let den = b.ins().fadd(eps, root);
                b.ins().fdiv(num, den)
            }
        };
        let th = b.ins().fsub(th, step);
        b.ins().store(flags(), th, tp, 0);
    };
    // Pairs of elements, then the last one when n is odd.
    let pairs = b.ins().band_imm_s(n, !1);
    let end = b.ins().ishl_imm_u(pairs, 3);
    let zero = b.ins().iconst(types::I64, 0);
    counted_loop(b, zero, end, 16, |b, at| body(b, types::F64X2, at));
    let odd = b.ins().band_imm_s(n, 1);
    let tail = b.create_block();
    let done = b.create_block();
    b.ins().brif(odd, tail, &[], done, &[]);
    b.switch_to_block(tail);
    body(b, types::F64, end);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    b.ins().return_(&[]);
}

impl Codegen {
    /// Generates the update kernel of `rule`.
    pub(crate) fn update(&mut self, rule: UpdateRule) -> Result<FnHandle, String> {
        self.cached(format!("update {rule:?}"), |cg| cg.generate(4, |b, _| emit(b, rule)))
    }
}

/// A rule and its kernel, or `None` when it could not be generated.
type Known = (UpdateRule, Option<UpdateFn>);

/// The process's update kernels, one per rule, compiled on first use. Their code lives as long
/// as the process (a handful of small functions), so a plain function pointer can be handed to
/// any thread.
pub fn kernel(rule: UpdateRule) -> Option<UpdateFn> {
    // `None` remembered too: a host Cranelift cannot generate for keeps the runtime's native
    // loop without trying to compile again every step.
    static KERNELS: OnceLock<Mutex<Vec<Known>>> = OnceLock::new();
    let kernels = KERNELS.get_or_init(|| Mutex::new(Vec::new()));
    let mut kernels = kernels.lock().ok()?;
    if let Some(&(_, f)) = kernels.iter().find(|(r, _)| *r == rule) {
        return f;
    }
    let f = generate(rule);
    kernels.push((rule, f));
    f
}

/// Compiles the kernel of `rule` into a module kept for the process's lifetime.
fn generate(rule: UpdateRule) -> Option<UpdateFn> {
    let mut cg = Codegen::new(super::codegen::OptLevel::None).ok()?;
    let h = cg.update(rule).ok()?;
    cg.finish().ok()?;
    // SAFETY: the function was generated with exactly `UpdateFn`'s signature (4 pointers, then
    // the fifth pointer and n as the two i64: all are 64-bit integers to the ABI).
    let f = unsafe { std::mem::transmute::<*const u8, UpdateFn>(cg.fn_address(h)) };
    // The module owns the code: kept for the process's lifetime.
    Box::leak(Box::new(cg));
    Some(f)
}

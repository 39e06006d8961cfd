//! sigmoid, tanh, silu, softmax and dropout on the buffers (`Lowering::Pointwise`), with the
//! kernels of [`super::pointwise`]: forward `y = f(x)` and backward `dx = dy·f'` from the output
//! (sigmoid, tanh, softmax) or the input (silu); dropout multiplies by its mask both ways.
//!
//! Dropout's mask is counter-based (`ops::dropout::kept`): the node's seed is drawn from the
//! forward pass's random stream as the interpreter draws it (only while training with p > 0),
//! then every element by its NCHW index, in parallel — so both backends drop the same elements
//! for the same seed, whatever the thread count; the kernels apply it.

use super::codegen::Codegen;
use super::exec::{BACKWARD, FORWARD, run_pointwise};
use super::layout::Layout;
use super::pointwise::{Act, POINTWISE_PTRS, PointwiseFn, PointwiseKind, PointwiseSpec};
use super::{JitModel, Step};
use crate::ir::{Node, NodeId, Value};
use crate::ops::Op;
use crate::ops::activation::Activation;
use crate::ops::dropout;
use rand::Rng;
use rayon::prelude::*;
use std::time::Instant;

/// One generated point-wise kernel and its spec.
pub(crate) struct PointwiseCall {
    pub handle: super::codegen::FnHandle,
    pub f: Option<PointwiseFn>,
    pub spec: PointwiseSpec,
}

impl PointwiseCall {
    pub(crate) fn new(cg: &mut Codegen, spec: PointwiseSpec) -> Result<PointwiseCall, String> {
        let handle = cg.generate(POINTWISE_PTRS, |b, fma| super::pointwise::emit(b, &spec, fma))?;
        Ok(PointwiseCall { handle, f: None, spec })
    }

    pub(crate) fn link(&mut self, cg: &Codegen) {
        let p = cg.fn_address(self.handle);
        // SAFETY: `emit` generated this function with exactly the `PointwiseFn` signature
        // (`POINTWISE_PTRS` pointers, then two i64).
        self.f = Some(unsafe { std::mem::transmute::<*const u8, PointwiseFn>(p) });
    }
}

/// What the op is, as the kernels see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Unary {
    Act(Act),
    Softmax,
    Dropout { p: f64 },
}

pub(crate) struct UnaryPlan {
    pub op: Unary,
    pub layout: Layout,
    pub forward: PointwiseCall,
    /// `None`: the forward kernel serves (dropout).
    pub backward: Option<PointwiseCall>,
    /// The lane-valid mask (`PointwiseSpec::coefficients`).
    coef: Vec<f32>,
    /// Dropout: the kept elements' scale 1/(1 − p), 0 where dropped (NHWC).
    mask: Vec<f32>,
    /// Dropout: whether the last forward pass applied a mask.
    masked: bool,
}

impl UnaryPlan {
    fn new(cg: &mut Codegen, op: Unary, layout: Layout) -> Result<UnaryPlan, String> {
        let spec = |kind| PointwiseSpec { kind, cs: layout.cs };
        let (fwd, bwd) = match op {
            Unary::Act(a) => (PointwiseKind::Forward(a), PointwiseKind::Backward(a)),
            Unary::Softmax => (PointwiseKind::Softmax, PointwiseKind::SoftmaxBackward),
            Unary::Dropout { .. } => (PointwiseKind::Mul, PointwiseKind::Mul),
        };
        let forward = PointwiseCall::new(cg, spec(fwd))?;
        // Dropout's backward is its forward multiplication.
        let backward = if fwd == bwd { None } else { Some(PointwiseCall::new(cg, spec(bwd))?) };
        Ok(UnaryPlan { op, layout, forward, backward, coef: vec![], mask: vec![], masked: false })
    }

    pub(crate) fn link(&mut self, cg: &Codegen) {
        self.forward.link(cg);
        if let Some(b) = self.backward.as_mut() {
            b.link(cg);
        }
    }

    /// Floats of the coefficients and of dropout's mask.
    pub(crate) fn len(&self) -> usize {
        self.forward.spec.coef_len()
            + if matches!(self.op, Unary::Dropout { .. }) { self.layout.len() } else { 0 }
    }

    pub(crate) fn allocate(&mut self) {
        self.coef = self.forward.spec.coefficients(self.layout.c, 0.0);
        if matches!(self.op, Unary::Dropout { .. }) {
            self.mask = vec![0.0; self.layout.len()];
        }
    }

    pub(crate) fn describe(&self) -> String {
        let what = match self.op {
            Unary::Act(Act::Sigmoid) => "sigmoid; backward: dy·y(1 − y)".to_string(),
            Unary::Act(Act::Tanh) => "tanh; backward: dy·(1 − y²)".to_string(),
            Unary::Act(Act::Silu) => "silu; backward: dy·σ(x)(1 + x(1 − σ(x)))".to_string(),
            #[cfg(test)]
            Unary::Act(Act::Exp | Act::Ln) => "a test function".to_string(),
            Unary::Softmax => "softmax over the channels; backward: y·(dy − Σ dy·y)".to_string(),
            Unary::Dropout { p } => {
                format!("dropout {p}: x times the drawn mask; backward: dy times the mask")
            }
        };
        format!(
            "point-wise kernel over {} positions (cs {}): {what}",
            self.layout.positions(),
            self.layout.cs
        )
    }

    /// Draws dropout's mask: the node's seed from `rng` (as the interpreter draws it), then
    /// every element by its NCHW index ([`dropout::kept`]), positions in parallel.
    fn draw_mask(&mut self, p: f64, rng: &mut dyn rand::RngCore) {
        let l = self.layout;
        let seed = rng.random::<u64>();
        let keep = (1.0 / (1.0 - p)) as f32;
        let hw = l.h * l.w;
        const POSITIONS: usize = 1024;
        self.mask.par_chunks_mut(POSITIONS * l.cs).enumerate().for_each(|(k, m)| {
            for (j, lanes) in m.chunks_exact_mut(l.cs).enumerate() {
                let q = k * POSITIONS + j;
                let (n, pos) = (q / hw, q % hw);
                for (c, v) in lanes.iter_mut().enumerate() {
                    let i = ((n * l.c + c) * hw + pos) as u64;
                    *v = if c < l.c && dropout::kept(seed, i, p) { keep } else { 0.0 };
                }
            }
        });
    }
}

impl JitModel {
    pub(crate) fn forward_unary(
        &mut self,
        id: NodeId,
        node: &Node,
        plan: &mut UnaryPlan,
        training: bool,
        rng: &mut dyn rand::RngCore,
    ) {
        let mut y = std::mem::take(&mut self.nodes[id.index()].value);
        let x = node.inputs[0];
        let positions = plan.layout.positions();
        let mut kernel_s = 0.0;
        match plan.op {
            Unary::Dropout { p } if !(training && p > 0.0) => {
                // Identity: a copy, no arithmetic.
                y.copy_from_slice(self.buf(x));
                plan.masked = false;
            }
            Unary::Dropout { p } => {
                plan.draw_mask(p, rng);
                plan.masked = true;
                let t = Instant::now();
                if let Some(f) = plan.forward.f {
                    let xb = self.buf(x);
                    run_pointwise(f, &plan.forward.spec, positions, [xb, &plan.mask, xb], &plan.coef, &mut y);
                }
                kernel_s = t.elapsed().as_secs_f64();
            }
            _ => {
                let t = Instant::now();
                if let Some(f) = plan.forward.f {
                    let xb = self.buf(x);
                    run_pointwise(f, &plan.forward.spec, positions, [xb, xb, xb], &plan.coef, &mut y);
                }
                kernel_s = t.elapsed().as_secs_f64();
            }
        }
        self.nodes[id.index()].value = y;
        self.profile_kernel(id, FORWARD, kernel_s);
    }

    pub(crate) fn backward_unary(&mut self, id: NodeId, node: &Node, plan: &mut UnaryPlan) {
        let dy = std::mem::take(self.grad_buf(id));
        let xv = node.inputs[0];
        let positions = plan.layout.positions();
        let mut kernel_s = 0.0;
        if matches!(plan.op, Unary::Dropout { .. }) && !plan.masked {
            self.accumulate(xv, &dy);
        } else {
            let call = plan.backward.as_ref().unwrap_or(&plan.forward);
            self.emit_grad(xv, |me, dx| {
                let t = Instant::now();
                if let Some(f) = call.f {
                    // The derivative's source: the mask, the input, or the op's own output.
                    let a: &[f32] = match plan.op {
                        Unary::Dropout { .. } => &plan.mask,
                        Unary::Act(a) if a.derivative_from_input() => me.buf(xv),
                        _ => me.buf(Value::Node(id)),
                    };
                    run_pointwise(f, &call.spec, positions, [a, &dy, &dy], &plan.coef, dx);
                }
                kernel_s += t.elapsed().as_secs_f64();
            });
        }
        *self.grad_buf(id) = dy;
        self.profile_kernel(id, BACKWARD, kernel_s);
    }
}

/// The step of a `Lowering::Pointwise` op.
pub(crate) fn plan(cg: &mut Codegen, node: &Node, layout: Layout) -> Result<Step, String> {
    let op = match &node.op {
        Op::Activation(Activation::Sigmoid) => Unary::Act(Act::Sigmoid),
        Op::Activation(Activation::Tanh) => Unary::Act(Act::Tanh),
        Op::Activation(Activation::Silu) => Unary::Act(Act::Silu),
        Op::Activation(Activation::Softmax) => Unary::Softmax,
        Op::Dropout(d) => Unary::Dropout { p: d.p },
        other => return Err(format!("`{}` has no point-wise kernels", other.kind())),
    };
    Ok(Step::Unary(Box::new(UnaryPlan::new(cg, op, layout)?)))
}

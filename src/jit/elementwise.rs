//! Standalone relu and leaky_relu, add and sub on the buffers (`Lowering::Channel`), with the
//! affine and mask kernels of [`super::channel`]: forward `y = x` with the activation as the
//! epilogue, or `y = a ± b`; backward the mask kernel (`dx = dy` where `x > 0`, else
//! `slope·dy`), or `dy` and `−dy`.

use super::channel::{ChannelKind, ChannelSpec};
use super::codegen::{Codegen, Epilogue};
use super::exec::{BACKWARD, FORWARD, run_affine};
use super::fusion::Fusion;
use super::layout::Layout;
use super::norm::ChannelCall;
use super::{JitModel, Step};
use crate::ir::{Node, NodeId};
use crate::ops::Op;
use crate::ops::activation::Activation;
use std::time::Instant;

/// What the op is, as the kernels see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Elementwise {
    /// relu (slope 0) or leaky_relu.
    Activation { slope: f32 },
    /// add (`sign` 1) or sub (−1).
    Merge { sign: f32 },
}

pub(crate) struct ElementPlan {
    pub op: Elementwise,
    pub layout: Layout,
    pub forward: ChannelCall,
    /// The activation's mask, or sub's negation of `dy`.
    pub backward: Option<ChannelCall>,
    /// `[shift | a | c | d]` of the forward and of the backward kernel.
    coef_fwd: Vec<f32>,
    coef_bwd: Vec<f32>,
}

impl ElementPlan {
    pub(crate) fn new(cg: &mut Codegen, op: Elementwise, layout: Layout) -> Result<ElementPlan, String> {
        let spec =
            |kind, has_q, epilogue| ChannelSpec { kind, cs: layout.cs, shift_p: false, has_q, epilogue };
        let (forward, backward) = match op {
            Elementwise::Activation { slope } => {
                let (fwd, mask) = if slope == 0.0 {
                    (Epilogue::Relu, Epilogue::ReluMask)
                } else {
                    (Epilogue::LeakyRelu(slope), Epilogue::LeakyMask(slope))
                };
                (spec(ChannelKind::Affine, false, fwd), Some(spec(ChannelKind::Mask, true, mask)))
            }
            Elementwise::Merge { sign } => (
                spec(ChannelKind::Affine, true, Epilogue::None),
                (sign < 0.0).then(|| spec(ChannelKind::Affine, false, Epilogue::None)),
            ),
        };
        Ok(ElementPlan {
            op,
            layout,
            forward: ChannelCall::new(cg, forward)?,
            backward: backward.map(|s| ChannelCall::new(cg, s)).transpose()?,
            coef_fwd: vec![],
            coef_bwd: vec![],
        })
    }

    pub(crate) fn link(&mut self, cg: &Codegen) {
        self.forward.link(cg);
        if let Some(b) = self.backward.as_mut() {
            b.link(cg);
        }
    }

    /// Floats of the coefficients.
    pub(crate) fn len(&self) -> usize {
        8 * self.layout.cs
    }

    /// Coefficients: forward `a = 1` (and `c = ±1` for a merge); backward `a = −1` (sub).
    pub(crate) fn allocate(&mut self) {
        let cs = self.layout.cs;
        self.coef_fwd = vec![0.0; 4 * cs];
        self.coef_bwd = vec![0.0; 4 * cs];
        self.coef_fwd[cs..2 * cs].fill(1.0);
        if let Elementwise::Merge { sign } = self.op {
            self.coef_fwd[2 * cs..3 * cs].fill(sign);
            self.coef_bwd[cs..2 * cs].fill(-1.0);
        }
    }

    pub(crate) fn describe(&self) -> String {
        let what = match self.op {
            Elementwise::Activation { slope: 0.0 } => "relu; backward: relu' mask".to_string(),
            Elementwise::Activation { slope } => format!("leaky_relu {slope}; backward: leaky_relu' mask"),
            Elementwise::Merge { sign } if sign > 0.0 => "a + b; backward: dy to both".to_string(),
            Elementwise::Merge { .. } => "a − b; backward: dy, and −dy by the kernel".to_string(),
        };
        format!(
            "per-channel kernel over {} positions (cs {}): {what}",
            self.layout.positions(),
            self.layout.cs
        )
    }
}

impl JitModel {
    pub(crate) fn forward_elementwise(&mut self, id: NodeId, node: &Node, plan: &mut ElementPlan) {
        let mut y = std::mem::take(&mut self.nodes[id.index()].value);
        let p = self.buf(node.inputs[0]);
        let q = node.inputs.get(1).map_or(p, |&v| self.buf(v));
        let t = Instant::now();
        if let Some(f) = plan.forward.f {
            run_affine(f, &plan.forward.spec, plan.layout.positions(), p, q, &plan.coef_fwd, &mut y);
        }
        let kernel_s = t.elapsed().as_secs_f64();
        self.nodes[id.index()].value = y;
        self.profile_kernel(id, FORWARD, kernel_s);
    }

    pub(crate) fn backward_elementwise(&mut self, id: NodeId, node: &Node, plan: &mut ElementPlan) {
        let dy = std::mem::take(self.grad_buf(id));
        let mut kernel_s = 0.0;
        let positions = plan.layout.positions();
        match plan.op {
            Elementwise::Activation { .. } => {
                let xv = node.inputs[0];
                self.emit_grad(xv, |me, dx| {
                    let t = Instant::now();
                    if let Some(call) = &plan.backward
                        && let Some(f) = call.f
                    {
                        run_affine(f, &call.spec, positions, &dy, me.buf(xv), &plan.coef_bwd, dx);
                    }
                    kernel_s += t.elapsed().as_secs_f64();
                });
            }
            Elementwise::Merge { sign } => {
                self.accumulate(node.inputs[0], &dy);
                if sign > 0.0 {
                    self.accumulate(node.inputs[1], &dy);
                } else {
                    self.emit_grad(node.inputs[1], |_, dx| {
                        let t = Instant::now();
                        if let Some(call) = &plan.backward
                            && let Some(f) = call.f
                        {
                            run_affine(f, &call.spec, positions, &dy, &dy, &plan.coef_bwd, dx);
                        }
                        kernel_s += t.elapsed().as_secs_f64();
                    });
                }
            }
        }
        *self.grad_buf(id) = dy;
        self.profile_kernel(id, BACKWARD, kernel_s);
    }
}

/// The backward step of a relu or leaky_relu fused into the linear node before it: the mask
/// kernel in place on the gradient buffer the two share, `dy · act'(y)` from the activation's
/// output (`y > 0` has the input's sign for slope ≥ 0, the only slopes fused).
pub(crate) struct FusedMask {
    pub call: ChannelCall,
    /// The mask kernel reads only the (zero) shift block.
    pub coef: Vec<f32>,
}

/// The mask kernel of a fused activation whose derivative no consumer's kernel applies (fused
/// sigmoid and tanh always have theirs applied: `fusion::decide`).
pub(crate) fn fused_mask(
    cg: &mut Codegen,
    node: &Node,
    fusion: &Fusion,
    layout: Layout,
) -> Result<Option<Box<FusedMask>>, String> {
    let epilogue = match node.op {
        _ if fusion.mask_folded => return Ok(None),
        Op::Activation(Activation::Relu) => Epilogue::ReluMask,
        Op::Activation(Activation::LeakyRelu { slope }) => Epilogue::LeakyMask(slope as f32),
        _ => return Ok(None),
    };
    let spec = ChannelSpec { kind: ChannelKind::Mask, cs: layout.cs, shift_p: false, has_q: true, epilogue };
    Ok(Some(Box::new(FusedMask { call: ChannelCall::new(cg, spec)?, coef: vec![0.0; 4 * layout.cs] })))
}

/// The step of an element-wise `Lowering::Channel` op.
pub(crate) fn plan(cg: &mut Codegen, node: &Node, layout: Layout) -> Result<Option<Step>, String> {
    let op = match &node.op {
        Op::Activation(Activation::Relu) => Elementwise::Activation { slope: 0.0 },
        Op::Activation(Activation::LeakyRelu { slope }) => Elementwise::Activation { slope: *slope as f32 },
        Op::Add => Elementwise::Merge { sign: 1.0 },
        Op::Sub => Elementwise::Merge { sign: -1.0 },
        _ => return Ok(None),
    };
    Ok(Some(Step::Elementwise(Box::new(ElementPlan::new(cg, op, layout)?))))
}

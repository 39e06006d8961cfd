//! The loss of the first output on the buffers (mse and mae, the masked mse of self-supervised
//! training, cross_entropy of flat logits): the loss value and the output gradient in one pass of
//! a generated kernel ([`super::pointwise`]'s `Loss` and `CrossEntropy`), without converting the
//! output; other cases go through the converted output and `ops::loss`.

use super::codegen::Codegen;
use super::exec::run_loss;
use super::layout::Layout;
use super::pointwise::{PointwiseKind, PointwiseSpec};
use super::profile::LOSS;
use super::unary::PointwiseCall;
use super::{JitModel, Step};
use crate::check::program::LossKind;
use crate::ir::{Graph, Params, Value};
use ndarray::ArrayD;
use rayon::prelude::*;
use std::time::Instant;

/// The loss kernels of a graph's single node output (none otherwise: the converted path).
pub(crate) struct LossKernels {
    pub mse: Option<PointwiseCall>,
    pub mae: Option<PointwiseCall>,
    pub masked_mse: Option<PointwiseCall>,
    /// For flat logits `[B, K]` only.
    pub cross_entropy: Option<PointwiseCall>,
}

impl LossKernels {
    pub(crate) fn new(
        cg: &mut Codegen,
        graph: &Graph,
        layout_of: impl Fn(Value) -> Layout,
    ) -> Result<LossKernels, String> {
        let none = LossKernels { mse: None, mae: None, masked_mse: None, cross_entropy: None };
        let [v @ Value::Node(_)] = graph.outputs() else { return Ok(none) };
        let l = layout_of(*v);
        let cs = l.cs;
        let mut call = |kind| PointwiseCall::new(cg, PointwiseSpec { kind, cs }).map(Some);
        let loss = |mae, masked| PointwiseKind::Loss { mae, masked };
        Ok(LossKernels {
            mse: call(loss(false, false))?,
            mae: call(loss(true, false))?,
            masked_mse: call(loss(false, true))?,
            cross_entropy: if graph.shape(*v).len() == 2 { call(PointwiseKind::CrossEntropy)? } else { None },
        })
    }

    pub(crate) fn link(&mut self, cg: &Codegen) {
        for k in [&mut self.mse, &mut self.mae, &mut self.masked_mse, &mut self.cross_entropy]
            .into_iter()
            .flatten()
        {
            k.link(cg);
        }
    }
}

impl JitModel {
    /// Loads the mask of the masked mse for the next [`JitModel::loss_backward`] (1 where the
    /// loss is taken, 0 elsewhere; the first output's shape), or clears it with `None`.
    pub fn load_mask(&mut self, mask: Option<&ArrayD<f64>>) {
        match mask {
            Some(m) if m.shape() == self.output_shape(0) => {
                let l = self.layout(self.executed.outputs()[0]);
                super::layout::to_nhwc(m, l, &mut self.mask);
            }
            _ => self.mask.clear(),
        }
    }

    /// Loss of the first output against the loaded target and the parameter gradients, after
    /// [`JitModel::forward_loaded`] in training mode. mse, mae and cross_entropy (of flat
    /// logits) are computed on the buffers by a generated kernel (f32 sums within fixed chunks,
    /// added in f64 in chunk order); anything else on the converted output.
    pub fn loss_backward(&mut self, params: &Params, kind: LossKind, target: &ArrayD<f64>) -> (f64, Params) {
        let started = Instant::now();
        let v = self.executed.outputs()[0];
        let single = self.executed.outputs().len() == 1;
        let loaded = self.target.len() == self.layout(v).len();
        let masked = !self.mask.is_empty() && kind == LossKind::Mse;
        let generated = match kind {
            LossKind::CrossEntropy => self.losses.cross_entropy.is_some(),
            _ => true,
        };
        let (Value::Node(o), true, true, true) = (v, single, loaded, generated) else {
            let y = self.output(0);
            let (l, dy) = if masked {
                let m = super::layout::from_nhwc(&self.mask, self.layout(v), self.output_shape(0));
                crate::ops::loss::masked_mse(&y, target, &m)
            } else {
                crate::ops::loss::loss(kind, &y, target)
            };
            self.profile_step_part(LOSS, started.elapsed().as_secs_f64(), 0.0);
            return (l, self.backward(params, &[dy]));
        };
        let l = self.layout(v);
        // The masked mse averages over the masked samples only (none masked: loss and gradient 0).
        let count = if kind == LossKind::CrossEntropy {
            // The mean over the batch.
            l.n as f64
        } else if masked {
            self.mask.par_chunks(l.cs).map(|p| p[..l.c].iter().map(|&m| m as f64).sum::<f64>()).sum::<f64>()
        } else {
            (l.n * l.h * l.w * l.c) as f64
        };
        // An unfused linear output's value is not read by the backward pass: the gradient is
        // written over it in place (one buffer streamed instead of two), and the buffers trade.
        let state = &self.nodes[o.index()];
        let in_place = matches!(state.step, Step::Linear(_)) && state.fusion.activation.is_none();
        let slot = state.grad_slot;
        let mut g = if in_place {
            std::mem::take(&mut self.nodes[o.index()].value)
        } else {
            std::mem::take(&mut self.grad_bufs[slot])
        };
        let scale = match kind {
            _ if count == 0.0 => 0.0,
            LossKind::Mse => (2.0 / count) as f32,
            LossKind::Mae | LossKind::CrossEntropy => (1.0 / count) as f32,
        };
        let call = match kind {
            LossKind::Mse if masked => &self.losses.masked_mse,
            LossKind::Mse => &self.losses.mse,
            LossKind::Mae => &self.losses.mae,
            LossKind::CrossEntropy => &self.losses.cross_entropy,
        };
        let Some(call) = call else { unreachable!("loss kernels exist for a single node output") };
        let coef = call.spec.coefficients(l.c, scale);
        let positions = l.positions();
        // About 4096 floats per chunk: f32 lane sums of ~1024 terms, added in f64 in chunk order.
        let chunk = (4096 / l.cs).max(1);
        let mut partials = vec![0.0f32; 4 * positions.div_ceil(chunk)];
        let t = &self.target;
        // Unmasked, the target stands in for the mask; the kernel does not read it.
        let mask: &[f32] = if masked { &self.mask } else { t };
        let kernel = Instant::now();
        if let Some(f) = call.f {
            let y = if in_place { None } else { Some(self.buf(v)) };
            run_loss(f, &call.spec, (positions, chunk), y, t, mask, &coef, &mut g, &mut partials);
        }
        let kernel_s = kernel.elapsed().as_secs_f64();
        let partials: Vec<f64> = partials.iter().map(|&p| f64::from(p)).collect();
        if in_place {
            let old = std::mem::replace(&mut self.grad_bufs[slot], g);
            self.nodes[o.index()].value = old;
        } else {
            self.grad_bufs[slot] = g;
        }
        self.nodes.iter_mut().for_each(|n| n.grad_written = false);
        self.nodes[o.index()].grad_written = true;
        let loss = if count > 0.0 { partials.iter().sum::<f64>() / count } else { 0.0 };
        self.profile_step_part(LOSS, started.elapsed().as_secs_f64(), kernel_s);
        (loss, self.backward_seeded(params))
    }
}

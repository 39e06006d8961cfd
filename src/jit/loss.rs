//! The loss of the first output on the buffers (mse and mae, and the masked mse of
//! self-supervised training): the loss value and the output gradient in one pass, without
//! converting the output; other losses go through the converted output and `ops::loss`.

use super::native::PIXELS;
use super::{JitModel, Step};
use crate::check::program::LossKind;
use crate::ir::{Params, Value};
use ndarray::ArrayD;
use rayon::prelude::*;

impl JitModel {
    /// Loads the mask of the masked mse for the next [`JitModel::loss_backward`] (1 where the
    /// loss is taken, 0 elsewhere; the first output's shape), or clears it with `None`.
    pub fn load_mask(&mut self, mask: Option<&ArrayD<f64>>) {
        match mask {
            Some(m) if m.shape() == self.output_shape(0) => {
                let l = self.layout(self.graph.outputs()[0]);
                super::layout::to_nhwc(m, l, &mut self.mask);
            }
            _ => self.mask.clear(),
        }
    }

    /// Loss of the first output against the loaded target and the parameter gradients, after
    /// [`JitModel::forward_loaded`] in training mode. mse and mae are computed on the buffers
    /// (sums in f64, in a fixed chunk order); cross_entropy on the converted logits.
    pub fn loss_backward(&mut self, params: &Params, kind: LossKind, target: &ArrayD<f64>) -> (f64, Params) {
        let v = self.graph.outputs()[0];
        let single = self.graph.outputs().len() == 1;
        let loaded = self.target.len() == self.layout(v).len();
        let masked = !self.mask.is_empty() && kind == LossKind::Mse;
        let (Value::Node(o), true, true, LossKind::Mse | LossKind::Mae) = (v, single, loaded, kind) else {
            let y = self.output(0);
            let (l, dy) = if masked {
                let m = super::layout::from_nhwc(&self.mask, self.layout(v), self.output_shape(0));
                crate::ops::loss::masked_mse(&y, target, &m)
            } else {
                crate::ops::loss::loss(kind, &y, target)
            };
            return (l, self.backward(params, &[dy]));
        };
        let l = self.layout(v);
        // The masked mse averages over the masked samples only (none masked: loss and gradient 0).
        let count = if masked {
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
        let y: &[f32] = if in_place { &[] } else { self.buf(v) };
        let t = &self.target;
        // Unmasked, the target stands in for the mask so that the chunks zip; it is not read.
        let mask: &[f32] = if masked { &self.mask } else { t };
        let per = l.cs * PIXELS;
        // Per-lane f32 partial sums within a fixed chunk (vectorised), f64 across chunks in order.
        let scale = match kind {
            _ if count == 0.0 => 0.0,
            LossKind::Mse => (2.0 / count) as f32,
            _ => (1.0 / count) as f32,
        };
        let mse = kind == LossKind::Mse;
        // One pixel: d = (y − t)·mask over the real channels; the gradient goes to `g` (which may
        // be `y` itself), the loss terms to `lanes`. Written without branches on the element so
        // it vectorises (`masked` is the same for every element: the loop is unswitched).
        let pixel = |g: &mut [f32], y: &[f32], t: &[f32], m: &[f32], lanes: &mut [f32]| {
            for c in 0..g.len() {
                let d = if masked { (y[c] - t[c]) * m[c] } else { y[c] - t[c] };
                if mse {
                    lanes[c] += d * d;
                    g[c] = d * scale;
                } else {
                    lanes[c] += d.abs();
                    g[c] = scale * d.signum() * f32::from(u8::from(d != 0.0));
                }
            }
        };
        let partials: Vec<f64> = if in_place {
            g.par_chunks_mut(per)
                .zip(t.par_chunks(per).zip(mask.par_chunks(per)))
                .map(|(g, (t, m))| {
                    let mut lanes = vec![0.0f32; l.c];
                    let mut y = vec![0.0f32; l.c];
                    for ((g, t), m) in
                        g.chunks_exact_mut(l.cs).zip(t.chunks_exact(l.cs)).zip(m.chunks_exact(l.cs))
                    {
                        y.copy_from_slice(&g[..l.c]);
                        pixel(&mut g[..l.c], &y, &t[..l.c], &m[..l.c], &mut lanes);
                    }
                    lanes.iter().map(|&v| v as f64).sum::<f64>()
                })
                .collect()
        } else {
            g.par_chunks_mut(per)
                .zip(y.par_chunks(per).zip(t.par_chunks(per).zip(mask.par_chunks(per))))
                .map(|(g, (y, (t, m)))| {
                    let mut lanes = vec![0.0f32; l.c];
                    for (((g, y), t), m) in g
                        .chunks_exact_mut(l.cs)
                        .zip(y.chunks_exact(l.cs))
                        .zip(t.chunks_exact(l.cs))
                        .zip(m.chunks_exact(l.cs))
                    {
                        pixel(&mut g[..l.c], &y[..l.c], &t[..l.c], &m[..l.c], &mut lanes);
                    }
                    lanes.iter().map(|&v| v as f64).sum::<f64>()
                })
                .collect()
        };
        if in_place {
            let old = std::mem::replace(&mut self.grad_bufs[slot], g);
            self.nodes[o.index()].value = old;
        } else {
            self.grad_bufs[slot] = g;
        }
        self.nodes.iter_mut().for_each(|n| n.grad_written = false);
        self.nodes[o.index()].grad_written = true;
        let loss = if count > 0.0 { partials.iter().sum::<f64>() / count } else { 0.0 };
        (loss, self.backward_seeded(params))
    }
}

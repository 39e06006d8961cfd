//! `upsample(f)`: nearest or linear (half-pixel centres, PyTorch's `align_corners=False`).

use super::attrs::Attrs;
use super::window::{AxisRule, as4, from4, lift, map_axes, spatial_output};
use super::{
    Backward, Backwarded, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, Reach, Shape,
    ShapeError, ShapeWarning, Takes, single,
};
use crate::diag::Diagnostic;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UpsampleMode {
    Nearest,
    Linear,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upsample {
    pub factor: Vec<usize>,
    pub mode: UpsampleMode,
}

impl Layers for Upsample {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        name: "upsample",
        takes: Takes::Spatial { ranked: false },
        positional: &["factor"],
        named: &["mode"],
        required: &["factor"],
        aliases: &[("upsampling2d", "upsample"), ("upsampling1d", "upsample"), ("interpolate", "upsample")],
        summary: "repeats (`nearest`) or interpolates (`linear`) by `factor`: N_y = factor·N_x",
        build: build_upsample,
    }];
}

/// `upsample`, for expansions that build it (the built-in `unet`).
pub const UPSAMPLE: &LayerDef = &<Upsample as Layers>::LAYERS[0];

fn build_upsample(attrs: &Attrs, spatial: usize) -> Result<Op, Diagnostic> {
    let mode = match attrs.word_or("mode", "nearest", &["nearest", "linear"])? {
        "linear" => UpsampleMode::Linear,
        _ => UpsampleMode::Nearest,
    };
    Ok(Op::Upsample(Upsample { factor: attrs.per_axis("factor", 1, spatial, 1)?, mode }))
}

impl OpRules for Upsample {
    fn kind(&self) -> &'static str {
        "upsample"
    }

    /// Per axis `N_y = factor · N_x` ([`AxisRule::Scaled`]).
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        spatial_output(single(inputs)?, None, |a, n| self.axis_rule(a, n))
    }

    fn axis_rule(&self, axis: usize, n: usize) -> Option<AxisRule> {
        Some(AxisRule::Scaled { n, factor: *self.factor.get(axis)? })
    }

    /// Keeps `r` (nearest) or adds one step `j` (linear); divides `j` by the factor.
    fn reach(&self, inputs: &[Reach]) -> Reach {
        map_axes(inputs, |a, r, j| {
            let f = self.factor.get(a).copied().unwrap_or(1).max(1) as f64;
            let extra = if self.mode == UpsampleMode::Linear { j } else { 0.0 };
            (r + extra, j / f)
        })
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let x = step.xs[0];
        Forwarded::plain(from4(self.forward4(&as4(x)), x.ndim() == 3))
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let x = step.xs[0];
        Backwarded::inputs(vec![from4(self.backward4(as4(x).dim(), &as4(&step.dy)), x.ndim() == 3)])
    }

    /// The JIT's gather kernels, on these taps.
    fn lowering(&self) -> Lowering {
        Lowering::Spatial
    }
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::Array4;

/// For one axis: for each output index, the two source indices and the weight of the second.
/// Nearest: `floor(dst / f)`; linear: half-pixel centres `src = (dst + ½)/f − ½`, clamped at 0
/// (PyTorch's `align_corners=False`). The JIT's gather kernels read the same taps.
pub fn taps(n_in: usize, f: usize, mode: UpsampleMode) -> Vec<(usize, usize, f64)> {
    (0..n_in * f)
        .map(|dst| match mode {
            UpsampleMode::Nearest => (dst / f, dst / f, 0.0),
            UpsampleMode::Linear => {
                let src = ((dst as f64 + 0.5) / f as f64 - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, src - i0 as f64)
            }
        })
        .collect()
}

impl Upsample {
    fn factors(&self) -> [usize; 2] {
        lift(&self.factor, 1)
    }

    pub fn forward4(&self, x: &Array4<f64>) -> Array4<f64> {
        let [fh, fw] = self.factors();
        let (b, c, h, w) = x.dim();
        let (th, tw) = (taps(h, fh, self.mode), taps(w, fw, self.mode));
        Array4::from_shape_fn((b, c, h * fh, w * fw), |(n, ch, oy, ox)| {
            let (y0, y1, ly) = th[oy];
            let (x0, x1, lx) = tw[ox];
            let at = |yy: usize, xx: usize| x[[n, ch, yy, xx]];
            (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1))
                + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1))
        })
    }

    pub fn backward4(&self, x_dim: (usize, usize, usize, usize), dy: &Array4<f64>) -> Array4<f64> {
        let [fh, fw] = self.factors();
        let (b, c, h, w) = x_dim;
        let (th, tw) = (taps(h, fh, self.mode), taps(w, fw, self.mode));
        let mut dx = Array4::zeros(x_dim);
        for n in 0..b {
            for ch in 0..c {
                for (oy, &(y0, y1, ly)) in th.iter().enumerate() {
                    for (ox, &(x0, x1, lx)) in tw.iter().enumerate() {
                        let d = dy[[n, ch, oy, ox]];
                        dx[[n, ch, y0, x0]] += (1.0 - ly) * (1.0 - lx) * d;
                        dx[[n, ch, y0, x1]] += (1.0 - ly) * lx * d;
                        dx[[n, ch, y1, x0]] += ly * (1.0 - lx) * d;
                        dx[[n, ch, y1, x1]] += ly * lx * d;
                    }
                }
            }
        }
        dx
    }
}

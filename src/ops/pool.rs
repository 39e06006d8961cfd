//! `maxpool` and `avgpool` (1-D and 2-D).

use super::attrs::Attrs;
use super::window::{AxisRule, Window, as4, from4, out_hw, spatial_output, window_reach};
use super::{
    Backward, Backwarded, Cache, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, Reach, Shape,
    ShapeError, ShapeWarning, Takes, single,
};
use crate::diag::{Diagnostic, codes};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PoolKind {
    /// Never picks a padded position.
    Max,
    /// Counts padded zeros in the average (PyTorch's `count_include_pad=True`).
    Avg,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "maxpool",
            PoolKind::Avg => "avgpool",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: Vec<usize>,
    /// Defaults to the kernel.
    pub stride: Vec<usize>,
    pub pad: Vec<usize>,
}

impl Layers for Pool {
    const LAYERS: &'static [LayerDef] = &[
        LayerDef {
            name: "maxpool",
            takes: Takes::Spatial { ranked: true },
            positional: &["kernel"],
            named: &["stride", "pad"],
            required: &["kernel"],
            aliases: &[
                ("maxpooling2d", "maxpool2d"),
                ("max_pool", "maxpool2d"),
                ("max_pool2d", "maxpool2d"),
                ("maxpool2d", "maxpool2d"),
                ("maxpooling1d", "maxpool1d"),
                ("max_pool1d", "maxpool1d"),
            ],
            summary: "the largest value of each window (stride defaults to the kernel)",
            build: |attrs, spatial| build(PoolKind::Max, attrs, spatial),
        },
        LayerDef {
            name: "avgpool",
            takes: Takes::Spatial { ranked: true },
            positional: &["kernel"],
            named: &["stride", "pad"],
            required: &["kernel"],
            aliases: &[
                ("averagepooling2d", "avgpool2d"),
                ("avg_pool", "avgpool2d"),
                ("avg_pool2d", "avgpool2d"),
                ("avgpool2d", "avgpool2d"),
            ],
            summary: "the mean of each window, padded zeros included (stride defaults to the kernel)",
            build: |attrs, spatial| build(PoolKind::Avg, attrs, spatial),
        },
    ];
}

/// `maxpool`, for expansions that build it (the built-in `unet`).
pub const MAXPOOL: &LayerDef = &<Pool as Layers>::LAYERS[0];
/// `avgpool`.
pub const AVGPOOL: &LayerDef = &<Pool as Layers>::LAYERS[1];

fn build(kind: PoolKind, attrs: &Attrs, spatial: usize) -> Result<Op, Diagnostic> {
    let kernel = attrs.per_axis("kernel", 1, spatial, 1)?;
    let pad = attrs.pad(&kernel, &vec![1; spatial], spatial)?;
    let stride =
        if attrs.get("stride").is_some() { attrs.per_axis("stride", 1, spatial, 1)? } else { kernel.clone() };
    if kind == PoolKind::Max {
        // PyTorch's rule: padding at most half the kernel, so no window is all padding.
        if let Some(axis) = (0..spatial).find(|&a| 2 * pad[a] > kernel[a]) {
            return Err(Diagnostic::error(
                codes::BAD_VALUE,
                format!("maxpool padding {} is more than half its kernel {}", pad[axis], kernel[axis]),
                attrs.span_of("pad"),
                "too much padding",
            )
            .with_help("a window could then hold only padding; use pad ≤ kernel/2"));
        }
    }
    Ok(Op::Pool(Pool { kind, kernel, stride, pad }))
}

/// Max pooling's choice per output: the flat index `h·W + w` of the input it picked.
struct Argmax(Vec<usize>);

impl OpRules for Pool {
    fn kind(&self) -> &'static str {
        self.kind.name()
    }

    /// Per axis `N_y = ⌊(N_x + 2·pad − N_h)/stride⌋ + 1` ([`AxisRule::Window`], dilation 1).
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        spatial_output(single(inputs)?, None, |a, n| self.axis_rule(a, n))
    }

    fn axis_rule(&self, axis: usize, n: usize) -> Option<AxisRule> {
        Some(AxisRule::Window {
            n,
            kernel: *self.kernel.get(axis)?,
            stride: *self.stride.get(axis)?,
            pad: *self.pad.get(axis)?,
            dilation: 1,
        })
    }

    fn kernel(&self) -> Option<&[usize]> {
        Some(&self.kernel)
    }

    fn reach(&self, inputs: &[Reach]) -> Reach {
        window_reach(inputs, &self.kernel, &self.stride, None)
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let x = step.xs[0];
        let (y, arg) = self.forward4(&as4(x), out_hw(step.shape));
        let cache = arg.map_or(Cache::None, |a| Cache::keep(Argmax(a)));
        Forwarded { y: from4(y, x.ndim() == 3), cache, state: vec![] }
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let x = step.xs[0];
        let arg = step.cache.get::<Argmax>().map(|a| a.0.as_slice());
        Backwarded::inputs(vec![from4(self.backward4(as4(x).dim(), &as4(&step.dy), arg), x.ndim() == 3)])
    }

    /// Both run on the JIT's gather kernels (max pooling keeps its argmax).
    fn lowering(&self) -> Lowering {
        Lowering::Spatial
    }
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::Array4;

impl Pool {
    pub fn window(&self) -> Window {
        Window::new(&self.kernel, &self.stride, &self.pad, &vec![1; self.kernel.len()])
    }

    /// Forward on `[B, C, H, W]` (height 1 for 1-D) to an output of `ho × wo`. Max pooling also
    /// returns, per output, the flat index `h·W + w` of the input it picked (never a padded
    /// position).
    pub fn forward4(&self, x: &Array4<f64>, (ho, wo): (usize, usize)) -> (Array4<f64>, Option<Vec<usize>>) {
        let g = self.window();
        let (b, c, h, w) = x.dim();
        let mut y = Array4::zeros((b, c, ho, wo));
        let mut arg = (self.kind == PoolKind::Max).then(|| vec![0usize; b * c * ho * wo]);
        let area = (g.k[0] * g.k[1]) as f64;
        for n in 0..b {
            for ch in 0..c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let (mut best, mut best_at, mut sum) = (f64::NEG_INFINITY, 0, 0.0);
                        for i in 0..g.k[0] {
                            let yy = (oy * g.s[0] + i) as isize - g.p[0] as isize;
                            if yy < 0 || yy >= h as isize {
                                continue;
                            }
                            for j in 0..g.k[1] {
                                let xx = (ox * g.s[1] + j) as isize - g.p[1] as isize;
                                if xx < 0 || xx >= w as isize {
                                    continue;
                                }
                                let v = x[[n, ch, yy as usize, xx as usize]];
                                sum += v;
                                if v > best {
                                    best = v;
                                    best_at = yy as usize * w + xx as usize;
                                }
                            }
                        }
                        let out = ((n * c + ch) * ho + oy) * wo + ox;
                        y[[n, ch, oy, ox]] = match self.kind {
                            PoolKind::Max => {
                                if let Some(a) = arg.as_mut() {
                                    a[out] = best_at;
                                }
                                best
                            }
                            // Padded zeros count in the average (count_include_pad).
                            PoolKind::Avg => sum / area,
                        };
                    }
                }
            }
        }
        (y, arg)
    }

    pub fn backward4(
        &self,
        x_dim: (usize, usize, usize, usize),
        dy: &Array4<f64>,
        arg: Option<&[usize]>,
    ) -> Array4<f64> {
        let g = self.window();
        let (b, c, h, w) = x_dim;
        let (_, _, ho, wo) = dy.dim();
        let mut dx = Array4::zeros(x_dim);
        let area = (g.k[0] * g.k[1]) as f64;
        for n in 0..b {
            for ch in 0..c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let d = dy[[n, ch, oy, ox]];
                        match (self.kind, arg) {
                            (PoolKind::Max, Some(arg)) => {
                                let at = arg[((n * c + ch) * ho + oy) * wo + ox];
                                dx[[n, ch, at / w, at % w]] += d;
                            }
                            _ => {
                                for i in 0..g.k[0] {
                                    let yy = (oy * g.s[0] + i) as isize - g.p[0] as isize;
                                    if yy < 0 || yy >= h as isize {
                                        continue;
                                    }
                                    for j in 0..g.k[1] {
                                        let xx = (ox * g.s[1] + j) as isize - g.p[1] as isize;
                                        if xx >= 0 && xx < w as isize {
                                            dx[[n, ch, yy as usize, xx as usize]] += d / area;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        dx
    }
}

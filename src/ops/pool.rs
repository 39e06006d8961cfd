//! `maxpool` and `avgpool` (1-D and 2-D).

use super::conv::{check_arity, check_positive, window_axis};
use super::{Shape, ShapeError, ShapeWarning, checked_product};
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

impl Pool {
    pub fn output_shape(&self, input: &[usize]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        let (c, spatial) = match input {
            [c, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => (*c, rest),
            _ => return Err(ShapeError::Rank { expected: "[C, N] or [C, H, W]", found: input.to_vec() }),
        };
        check_arity(
            spatial.len(),
            &[("kernel", &self.kernel), ("stride", &self.stride), ("pad", &self.pad)],
        )?;
        check_positive(&[("kernel", &self.kernel), ("stride", &self.stride)])?;
        let mut shape = vec![c];
        let mut warnings = vec![];
        for (axis, &n) in spatial.iter().enumerate() {
            let (y, dropped) = window_axis(axis, n, self.kernel[axis], self.stride[axis], self.pad[axis], 1)?;
            if dropped > 0 {
                warnings.push(ShapeWarning::StrideDropsSamples { axis, input: n, dropped });
            }
            shape.push(y);
        }
        checked_product(&shape)?;
        Ok((shape, warnings))
    }
}

// ---- reference math ----------------------------------------------------------------------

use super::conv::Window;
use ndarray::Array4;

impl Pool {
    pub fn window(&self) -> Window {
        Window::new(&self.kernel, &self.stride, &self.pad, &vec![1; self.kernel.len()])
    }

    /// Forward on `[B, C, H, W]` (height 1 for 1-D). Max pooling also returns, per output, the
    /// flat index `h·W + w` of the input it picked (never a padded position).
    pub fn forward(&self, x: &Array4<f64>) -> (Array4<f64>, Option<Vec<usize>>) {
        let g = self.window();
        let (b, c, h, w) = x.dim();
        let (ho, wo) = g.out(h, w);
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

    pub fn backward(
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

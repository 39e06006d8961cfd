//! `upsample(f)`: nearest or linear (half-pixel centres, PyTorch's `align_corners=False`).

use super::conv::{check_arity, check_positive};
use super::{Shape, ShapeError, checked_product};
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

impl Upsample {
    /// `N_y = factor · N_x` per axis.
    pub fn output_shape(&self, input: &[usize]) -> Result<Shape, ShapeError> {
        let (c, spatial) = match input {
            [c, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => (*c, rest),
            _ => return Err(ShapeError::Rank { expected: "[C, N] or [C, H, W]", found: input.to_vec() }),
        };
        check_arity(spatial.len(), &[("factor", &self.factor)])?;
        check_positive(&[("factor", &self.factor)])?;
        let mut shape = vec![c];
        for (axis, &n) in spatial.iter().enumerate() {
            shape.push(n.checked_mul(self.factor[axis]).ok_or(ShapeError::Overflow)?);
        }
        checked_product(&shape)?;
        Ok(shape)
    }
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::Array4;

/// For one axis: for each output index, the two source indices and the weight of the second.
/// Nearest: `floor(dst / f)`; linear: half-pixel centres `src = (dst + ½)/f − ½`, clamped at 0
/// (PyTorch's `align_corners=False`).
fn taps(n_in: usize, f: usize, mode: UpsampleMode) -> Vec<(usize, usize, f64)> {
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
        if self.factor.len() == 1 { [1, self.factor[0]] } else { [self.factor[0], self.factor[1]] }
    }

    pub fn forward(&self, x: &Array4<f64>) -> Array4<f64> {
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

    pub fn backward(&self, x_dim: (usize, usize, usize, usize), dy: &Array4<f64>) -> Array4<f64> {
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

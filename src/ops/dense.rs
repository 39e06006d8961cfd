//! `flatten` and `dense(out)` (fully connected).

use super::{ParamRole, ParamSpec, Shape, ShapeError, checked_product};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dense {
    pub out: usize,
    pub bias: bool,
}

/// `[C, H, W]` → `[C·H·W]`, keeping row-major order (C, then H, then W).
pub fn flatten_shape(input: &[usize]) -> Result<Shape, ShapeError> {
    Ok(vec![checked_product(input)?])
}

impl Dense {
    pub fn output_shape(&self, input: &[usize]) -> Result<Shape, ShapeError> {
        if input.len() != 1 {
            return Err(ShapeError::NotFlat { found: input.to_vec() });
        }
        if self.out == 0 {
            return Err(ShapeError::NotPositive { attr: "out" });
        }
        Ok(vec![self.out])
    }

    /// Weight `[out, in]`, bias `[out]`.
    pub fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let mut p = vec![ParamSpec { role: ParamRole::Weight, shape: vec![self.out, input[0]] }];
        if self.bias {
            p.push(ParamSpec { role: ParamRole::Bias, shape: vec![self.out] });
        }
        p
    }
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::{Array2, ArrayD, Axis, Ix2};

fn flat(x: &ArrayD<f64>) -> Array2<f64> {
    x.view().into_dimensionality::<Ix2>().expect("dense input is [B, F]").to_owned()
}

impl Dense {
    /// `y = x Wᵀ + b` with `W` `[out, in]`.
    pub fn forward(&self, x: &ArrayD<f64>, w: &ArrayD<f64>, b: Option<&ArrayD<f64>>) -> ArrayD<f64> {
        let w = flat(w);
        let mut y = flat(x).dot(&w.t());
        if let Some(b) = b {
            y += &b.view().into_dimensionality::<ndarray::Ix1>().expect("bias [out]");
        }
        y.into_dyn()
    }

    /// (dx, dw, db).
    pub fn backward(
        &self,
        x: &ArrayD<f64>,
        w: &ArrayD<f64>,
        dy: &ArrayD<f64>,
    ) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
        let (x, w, dy) = (flat(x), flat(w), flat(dy));
        (dy.dot(&w).into_dyn(), dy.t().dot(&x).into_dyn(), dy.sum_axis(Axis(0)).into_dyn())
    }
}

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

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

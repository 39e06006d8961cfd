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

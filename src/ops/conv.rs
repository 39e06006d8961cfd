//! `conv` (cross-correlation, 1-D and 2-D) and `upconv` (transposed convolution).

use super::{ParamRole, ParamSpec, Shape, ShapeError, ShapeWarning, checked_product};
use serde::Serialize;

/// A convolution with every per-axis attribute resolved to one entry per spatial axis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conv {
    pub out: usize,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub pad: Vec<usize>,
    pub dilation: Vec<usize>,
    pub bias: bool,
}

/// A transposed convolution. Weights are stored `[out, in, k...]` (geonet's convention for
/// every layer; PyTorch stores `[in, out, k...]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpConv {
    pub out: usize,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub pad: Vec<usize>,
    pub bias: bool,
}

/// Output size of a sliding window along one axis:
/// `N_y = floor((N_x + 2·pad − dilation·(N_h − 1) − 1) / stride) + 1`.
/// Returns the size and the number of trailing input samples the stride skips, or an error
/// with the arithmetic written out and the smallest input size that would work.
pub fn window_axis(
    axis: usize,
    n_x: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Result<(usize, usize), ShapeError> {
    let (n_x, k, s, p, d) = (n_x as i128, kernel as i128, stride as i128, pad as i128, dilation as i128);
    let span = d * (k - 1) + 1; // receptive extent of the dilated kernel
    let numer = n_x + 2 * p - span;
    if numer < 0 {
        // floor division for the message; the smallest working input makes numer = 0.
        let value = numer.div_euclid(s) + 1;
        let kernel_text = if d == 1 { format!("{k}") } else { format!("{d}·({k} − 1) − 1") };
        let formula = format!("({n_x} + 2·{p} − {kernel_text})/{s} + 1 = {}", fmt_signed(value));
        let min_input = (span - 2 * p).max(1) as u64;
        return Err(ShapeError::AxisTooSmall { axis, formula, value: value as i64, min_input });
    }
    let out = numer / s + 1;
    let dropped = numer % s;
    let out = usize::try_from(out).map_err(|_| ShapeError::Overflow)?;
    Ok((out, dropped as usize))
}

/// Writes a signed integer with a real minus sign, as the diagnostics do.
pub fn fmt_signed(v: i128) -> String {
    if v < 0 { format!("−{}", -v) } else { v.to_string() }
}

fn spatial_input(input: &[usize]) -> Result<(usize, &[usize]), ShapeError> {
    match input {
        [c, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => Ok((*c, rest)),
        _ => Err(ShapeError::Rank { expected: "[C, N] or [C, H, W]", found: input.to_vec() }),
    }
}

impl Conv {
    pub fn output_shape(&self, input: &[usize]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        let (_, spatial) = spatial_input(input)?;
        check_arity(
            spatial.len(),
            &[
                ("kernel", &self.kernel),
                ("stride", &self.stride),
                ("pad", &self.pad),
                ("dilation", &self.dilation),
            ],
        )?;
        check_positive(&[("kernel", &self.kernel), ("stride", &self.stride), ("dilation", &self.dilation)])?;
        if self.out == 0 {
            return Err(ShapeError::NotPositive { attr: "out" });
        }
        let mut shape = vec![self.out];
        let mut warnings = vec![];
        for (axis, &n) in spatial.iter().enumerate() {
            let (y, dropped) = window_axis(
                axis,
                n,
                self.kernel[axis],
                self.stride[axis],
                self.pad[axis],
                self.dilation[axis],
            )?;
            if dropped > 0 {
                warnings.push(ShapeWarning::StrideDropsSamples { axis, input: n, dropped });
            }
            shape.push(y);
        }
        checked_product(&shape)?;
        Ok((shape, warnings))
    }

    pub fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let mut w = vec![self.out, input[0]];
        w.extend_from_slice(&self.kernel);
        let mut p = vec![ParamSpec { role: ParamRole::Weight, shape: w }];
        if self.bias {
            p.push(ParamSpec { role: ParamRole::Bias, shape: vec![self.out] });
        }
        p
    }
}

impl UpConv {
    /// `N_y = (N_x − 1)·stride − 2·pad + N_h`.
    pub fn output_shape(&self, input: &[usize]) -> Result<Shape, ShapeError> {
        let (_, spatial) = spatial_input(input)?;
        check_arity(
            spatial.len(),
            &[("kernel", &self.kernel), ("stride", &self.stride), ("pad", &self.pad)],
        )?;
        check_positive(&[("kernel", &self.kernel), ("stride", &self.stride)])?;
        if self.out == 0 {
            return Err(ShapeError::NotPositive { attr: "out" });
        }
        let mut shape = vec![self.out];
        for (axis, &n) in spatial.iter().enumerate() {
            let (n_x, s, p, k) =
                (n as i128, self.stride[axis] as i128, self.pad[axis] as i128, self.kernel[axis] as i128);
            let y = (n_x - 1) * s - 2 * p + k;
            if y < 1 {
                let formula = format!("({n_x} − 1)·{s} − 2·{p} + {k} = {}", fmt_signed(y));
                // smallest n with (n − 1)·s − 2p + k ≥ 1
                let need = 1 + 2 * p - k; // (n − 1)·s ≥ need
                let min_input = if need <= 0 { 1 } else { 1 + (need + s - 1) / s };
                return Err(ShapeError::AxisTooSmall {
                    axis,
                    formula,
                    value: y as i64,
                    min_input: min_input as u64,
                });
            }
            shape.push(usize::try_from(y).map_err(|_| ShapeError::Overflow)?);
        }
        checked_product(&shape)?;
        Ok(shape)
    }

    pub fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let mut w = vec![self.out, input[0]];
        w.extend_from_slice(&self.kernel);
        let mut p = vec![ParamSpec { role: ParamRole::Weight, shape: w }];
        if self.bias {
            p.push(ParamSpec { role: ParamRole::Bias, shape: vec![self.out] });
        }
        p
    }
}

pub(crate) fn check_arity(rank: usize, attrs: &[(&'static str, &Vec<usize>)]) -> Result<(), ShapeError> {
    for (attr, v) in attrs {
        if v.len() != rank {
            return Err(ShapeError::AttrArity { attr, expected: rank, found: v.len() });
        }
    }
    Ok(())
}

pub(crate) fn check_positive(attrs: &[(&'static str, &Vec<usize>)]) -> Result<(), ShapeError> {
    for (attr, v) in attrs {
        if v.contains(&0) {
            return Err(ShapeError::NotPositive { attr });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(k: usize, s: usize, p: usize) -> Conv {
        Conv {
            out: 1,
            kernel: vec![k, k],
            stride: vec![s, s],
            pad: vec![p, p],
            dilation: vec![1, 1],
            bias: true,
        }
    }

    // The slides: a 6×6 image and a 3×3 filter give 4×4; pad 1 keeps 6×6; stride 2 gives 2×2 (valid).
    #[test]
    fn slide_sizes() {
        assert_eq!(conv(3, 1, 0).output_shape(&[1, 6, 6]).unwrap().0, vec![1, 4, 4]);
        assert_eq!(conv(3, 1, 1).output_shape(&[1, 6, 6]).unwrap().0, vec![1, 6, 6]);
        assert_eq!(conv(3, 2, 0).output_shape(&[1, 6, 6]).unwrap().0, vec![1, 2, 2]);
    }

    #[test]
    fn kernel_too_big_shows_arithmetic() {
        let err = conv(7, 1, 0).output_shape(&[1, 5, 5]).unwrap_err();
        match err {
            ShapeError::AxisTooSmall { formula, value, min_input, .. } => {
                assert_eq!(formula, "(5 + 2·0 − 7)/1 + 1 = −1");
                assert_eq!(value, -1);
                assert_eq!(min_input, 7);
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn stride_that_drops_samples_warns() {
        let (shape, w) = conv(2, 2, 0).output_shape(&[1, 5, 5]).unwrap();
        assert_eq!(shape, vec![1, 2, 2]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn dilation() {
        let c =
            Conv { out: 2, kernel: vec![3], stride: vec![1], pad: vec![0], dilation: vec![2], bias: true };
        // span 5: 10 − 5 + 1 = 6
        assert_eq!(c.output_shape(&[1, 10]).unwrap().0, vec![2, 6]);
    }

    #[test]
    fn upconv_doubles() {
        let u = UpConv { out: 32, kernel: vec![2, 2], stride: vec![2, 2], pad: vec![0, 0], bias: true };
        assert_eq!(u.output_shape(&[64, 32, 32]).unwrap(), vec![32, 64, 64]);
    }
}

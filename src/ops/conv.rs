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

// ---- reference math (the interpreter's oracle) ------------------------------------------------
//
// 1-D values are computed as 2-D ones with height 1, so one im2col serves both ranks.
// Arrays carry the batch axis: x is [B, C, N] or [B, C, H, W].

use ndarray::{Array2, Array4, ArrayD, Axis, IxDyn};

/// Window geometry of one sliding-window layer, as 2-D (height 1 for 1-D values).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub k: [usize; 2],
    pub s: [usize; 2],
    pub p: [usize; 2],
    pub d: [usize; 2],
}

impl Window {
    pub fn new(kernel: &[usize], stride: &[usize], pad: &[usize], dilation: &[usize]) -> Window {
        let two = |v: &[usize], fill: usize| if v.len() == 1 { [fill, v[0]] } else { [v[0], v[1]] };
        Window { k: two(kernel, 1), s: two(stride, 1), p: two(pad, 0), d: two(dilation, 1) }
    }
    /// Output size for an input of `h × w` (the shape rule already validated it).
    pub fn out(&self, h: usize, w: usize) -> (usize, usize) {
        let o = |n: usize, a: usize| (n + 2 * self.p[a] - self.d[a] * (self.k[a] - 1) - 1) / self.s[a] + 1;
        (o(h, 0), o(w, 1))
    }
}

/// Views `[B, C, N]` as `[B, C, 1, N]`; `[B, C, H, W]` stays.
pub fn as4(x: &ArrayD<f64>) -> Array4<f64> {
    let s = x.shape();
    let shape = if s.len() == 3 { (s[0], s[1], 1, s[2]) } else { (s[0], s[1], s[2], s[3]) };
    x.as_standard_layout().into_owned().into_shape_with_order(shape).expect("rank checked by the shape rule")
}

/// Back to the caller's rank.
pub fn from4(y: Array4<f64>, rank3: bool) -> ArrayD<f64> {
    let (b, c, h, w) = y.dim();
    let shape: Vec<usize> = if rank3 { vec![b, c, w] } else { vec![b, c, h, w] };
    y.into_shape_with_order(IxDyn(&shape)).expect("same element count")
}

/// Visits every (im2col row, output position, input pixel) triple of a window that reads a real
/// (unpadded) input pixel: the one index walk behind [`im2col`] and its adjoint [`col2im`].
fn for_each_tap(
    g: &Window,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    mut f: impl FnMut(usize, usize, [usize; 3]),
) {
    for ci in 0..c {
        for i in 0..g.k[0] {
            for j in 0..g.k[1] {
                let row = (ci * g.k[0] + i) * g.k[1] + j;
                for oy in 0..ho {
                    let y = (oy * g.s[0] + i * g.d[0]) as isize - g.p[0] as isize;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    for ox in 0..wo {
                        let xx = (ox * g.s[1] + j * g.d[1]) as isize - g.p[1] as isize;
                        if xx >= 0 && xx < w as isize {
                            f(row, oy * wo + ox, [ci, y as usize, xx as usize]);
                        }
                    }
                }
            }
        }
    }
}

/// im2col of one sample: `[C·kh·kw, Ho·Wo]`.
fn im2col(x: &ndarray::ArrayView3<f64>, g: &Window, ho: usize, wo: usize) -> Array2<f64> {
    let (c, h, w) = x.dim();
    let mut cols = Array2::zeros((c * g.k[0] * g.k[1], ho * wo));
    for_each_tap(g, c, h, w, ho, wo, |row, col, at| cols[[row, col]] = x[at]);
    cols
}

/// Adds columns back into an image: the adjoint of [`im2col`].
fn col2im(
    cols: &Array2<f64>,
    g: &Window,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
) -> ndarray::Array3<f64> {
    let mut x = ndarray::Array3::zeros((c, h, w));
    for_each_tap(g, c, h, w, ho, wo, |row, col, at| x[at] += cols[[row, col]]);
    x
}

/// Cross-correlation: `y = W ⋆ x + b`. `w` is `[O, C, k...]`.
pub fn conv_forward(x4: &Array4<f64>, w: &ArrayD<f64>, b: Option<&ArrayD<f64>>, g: &Window) -> Array4<f64> {
    let (bn, c, h, wd) = x4.dim();
    let o = w.shape()[0];
    let (ho, wo) = g.out(h, wd);
    let w2 = w
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((o, c * g.k[0] * g.k[1]))
        .expect("weight shape");
    let mut y = Array4::zeros((bn, o, ho, wo));
    let outs: Vec<Array2<f64>> = {
        use rayon::prelude::*;
        (0..bn).into_par_iter().map(|n| w2.dot(&im2col(&x4.index_axis(Axis(0), n), g, ho, wo))).collect()
    };
    for (n, yn) in outs.into_iter().enumerate() {
        let mut dst = y.index_axis_mut(Axis(0), n);
        dst.assign(&yn.into_shape_with_order((o, ho, wo)).expect("out shape"));
        if let Some(b) = b {
            for (oc, mut plane) in dst.axis_iter_mut(Axis(0)).enumerate() {
                plane += b[[oc]];
            }
        }
    }
    y
}

/// Gradients of [`conv_forward`]: (dx, dw, db). Weight gradients are summed over the batch in
/// sample order, so results do not depend on the thread count.
pub fn conv_backward(
    x4: &Array4<f64>,
    w: &ArrayD<f64>,
    dy: &Array4<f64>,
    g: &Window,
    need_dx: bool,
) -> (Option<Array4<f64>>, ArrayD<f64>, ndarray::Array1<f64>) {
    use rayon::prelude::*;
    let (bn, c, h, wd) = x4.dim();
    let (_, o, ho, wo) = dy.dim();
    let w2 = w
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((o, c * g.k[0] * g.k[1]))
        .expect("weight shape");
    let per: Vec<(Array2<f64>, Option<ndarray::Array3<f64>>)> = (0..bn)
        .into_par_iter()
        .map(|n| {
            let cols = im2col(&x4.index_axis(Axis(0), n), g, ho, wo);
            let dyn2 = dy
                .index_axis(Axis(0), n)
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((o, ho * wo))
                .expect("dy");
            let dw = dyn2.dot(&cols.t());
            let dx = need_dx.then(|| col2im(&w2.t().dot(&dyn2), g, c, h, wd, ho, wo));
            (dw, dx)
        })
        .collect();
    let mut dw = Array2::zeros((o, c * g.k[0] * g.k[1]));
    let mut dx = need_dx.then(|| Array4::zeros((bn, c, h, wd)));
    for (n, (dwn, dxn)) in per.into_iter().enumerate() {
        dw += &dwn;
        if let (Some(dx), Some(dxn)) = (dx.as_mut(), dxn) {
            dx.index_axis_mut(Axis(0), n).assign(&dxn);
        }
    }
    let db = dy.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(0));
    (dx, dw.into_shape_with_order(IxDyn(w.shape())).expect("dw"), db)
}

/// The transposed convolution's weight `[out, in, k...]` seen as the weight of the convolution
/// it transposes: `[in, out, k...]`.
fn transposed_weight(w: &ArrayD<f64>) -> ArrayD<f64> {
    let mut axes: Vec<usize> = (0..w.ndim()).collect();
    axes.swap(0, 1);
    w.view().permuted_axes(axes).as_standard_layout().to_owned()
}

/// `upconv`: the input-gradient of the convolution whose weight is `w` transposed.
pub fn upconv_forward(
    x4: &Array4<f64>,
    w: &ArrayD<f64>,
    b: Option<&ArrayD<f64>>,
    g: &Window,
    out_hw: (usize, usize),
) -> Array4<f64> {
    let wc = transposed_weight(w);
    let (bn, _, _, _) = x4.dim();
    let o = w.shape()[0];
    // The transposed conv's input is the forward conv's output; its output is that conv's input.
    let mut y = conv_input_grad((bn, o, out_hw.0, out_hw.1), &wc, x4, g);
    if let Some(b) = b {
        for mut sample in y.axis_iter_mut(Axis(0)) {
            for (oc, mut plane) in sample.axis_iter_mut(Axis(0)).enumerate() {
                plane += b[[oc]];
            }
        }
    }
    y
}

/// The input-gradient of a convolution whose input has dimensions `x_dim`.
fn conv_input_grad(
    x_dim: (usize, usize, usize, usize),
    w: &ArrayD<f64>,
    dy: &Array4<f64>,
    g: &Window,
) -> Array4<f64> {
    use rayon::prelude::*;
    let (bn, c, h, wd) = x_dim;
    let (_, o, ho, wo) = dy.dim();
    let w2 = w
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((o, c * g.k[0] * g.k[1]))
        .expect("weight shape");
    let per: Vec<ndarray::Array3<f64>> = (0..bn)
        .into_par_iter()
        .map(|n| {
            let dyn2 = dy
                .index_axis(Axis(0), n)
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((o, ho * wo))
                .expect("dy");
            col2im(&w2.t().dot(&dyn2), g, c, h, wd, ho, wo)
        })
        .collect();
    let mut dx = Array4::zeros((bn, c, h, wd));
    for (n, dxn) in per.into_iter().enumerate() {
        dx.index_axis_mut(Axis(0), n).assign(&dxn);
    }
    dx
}

/// Gradients of [`upconv_forward`]: (dx, dw in `[out, in, k...]`, db).
pub fn upconv_backward(
    x4: &Array4<f64>,
    w: &ArrayD<f64>,
    dy: &Array4<f64>,
    g: &Window,
) -> (Array4<f64>, ArrayD<f64>, ndarray::Array1<f64>) {
    let wc = transposed_weight(w);
    // y = convᵀ(x): dx = conv(dy) with the same weight; dWc = weight-grad of conv(input=dy, dout=x).
    let dx = conv_forward(dy, &wc, None, g);
    let (_, dwc, _) = conv_backward(dy, &wc, x4, g, false);
    let db = dy.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(0));
    (dx, transposed_weight(&dwc), db)
}

//! `conv` (cross-correlation, 1-D and 2-D) and `upconv` (transposed convolution).

use super::attrs::Attrs;
/// The window geometry, also read by the JIT from here.
pub use super::window::Window;
use super::window::{AxisRule, as4, from4, map_axes, out_hw, spatial_output, window_reach};
use super::{
    Backward, Backwarded, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, ParamSpec, Reach,
    Shape, ShapeError, ShapeWarning, Takes, linear_params, mac_flops, single,
};
use crate::diag::Diagnostic;
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

impl Layers for Conv {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        name: "conv",
        takes: Takes::Spatial { ranked: true },
        positional: &["out"],
        named: &["kernel", "stride", "pad", "dilation", "bias", "init"],
        required: &["out", "kernel"],
        aliases: &[
            ("convolution", "conv2d"),
            ("convolution2d", "conv2d"),
            ("conv2d", "conv2d"),
            ("conv1d", "conv1d"),
            ("convolution1d", "conv1d"),
        ],
        summary: "cross-correlation with `out` filters: N_y = ⌊(N_x + 2·pad − dilation·(kernel − 1) − 1)/stride⌋ + 1",
        build: build_conv,
    }];
}

impl Layers for UpConv {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        name: "upconv",
        takes: Takes::Spatial { ranked: true },
        positional: &["out"],
        named: &["kernel", "stride", "pad", "bias", "init"],
        required: &["out", "kernel"],
        aliases: &[
            ("conv2dtranspose", "upconv"),
            ("convtranspose2d", "upconv"),
            ("conv_transpose", "upconv"),
            ("convtranspose", "upconv"),
            ("deconv", "upconv"),
            ("transposed_conv", "upconv"),
        ],
        summary: "transposed convolution with `out` filters: N_y = (N_x − 1)·stride − 2·pad + kernel",
        build: build_upconv,
    }];
}

/// `conv`, for expansions that build it (the built-in `unet`).
pub const CONV: &LayerDef = &<Conv as Layers>::LAYERS[0];
/// `upconv`.
pub const UPCONV: &LayerDef = &<UpConv as Layers>::LAYERS[0];

fn build_conv(attrs: &Attrs, spatial: usize) -> Result<Op, Diagnostic> {
    let kernel = attrs.per_axis("kernel", 1, spatial, 1)?;
    let dilation = attrs.per_axis("dilation", 1, spatial, 1)?;
    let pad = attrs.pad(&kernel, &dilation, spatial)?;
    Ok(Op::Conv(Conv {
        out: attrs.positive("out")?,
        stride: attrs.per_axis("stride", 1, spatial, 1)?,
        kernel,
        pad,
        dilation,
        bias: attrs.boolean_or("bias", true)?,
    }))
}

fn build_upconv(attrs: &Attrs, spatial: usize) -> Result<Op, Diagnostic> {
    let kernel = attrs.per_axis("kernel", 1, spatial, 1)?;
    let pad = attrs.pad(&kernel, &vec![1; spatial], spatial)?;
    Ok(Op::UpConv(UpConv {
        out: attrs.positive("out")?,
        stride: attrs.per_axis("stride", 1, spatial, 1)?,
        kernel,
        pad,
        bias: attrs.boolean_or("bias", true)?,
    }))
}

fn taps(kernel: &[usize]) -> Option<u64> {
    kernel.iter().try_fold(1u64, |acc, &k| acc.checked_mul(k as u64))
}

fn elems(s: &[usize]) -> Option<u64> {
    s.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

impl OpRules for Conv {
    fn kind(&self) -> &'static str {
        "conv"
    }

    /// Per axis `N_y = ⌊(N_x + 2·pad − dilation·(N_h − 1) − 1)/stride⌋ + 1` ([`AxisRule::Window`]).
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        spatial_output(single(inputs)?, Some(self.out), |a, n| self.axis_rule(a, n))
    }

    fn axis_rule(&self, axis: usize, n: usize) -> Option<AxisRule> {
        Some(AxisRule::Window {
            n,
            kernel: *self.kernel.get(axis)?,
            stride: *self.stride.get(axis)?,
            pad: *self.pad.get(axis)?,
            dilation: *self.dilation.get(axis)?,
        })
    }

    fn kernel(&self) -> Option<&[usize]> {
        Some(&self.kernel)
    }

    fn reach(&self, inputs: &[Reach]) -> Reach {
        window_reach(inputs, &self.kernel, &self.stride, Some(&self.dilation))
    }

    fn params(&self, inputs: &[&[usize]]) -> Vec<ParamSpec> {
        linear_params(self.out, inputs[0][0], &self.kernel, self.bias)
    }

    fn flops(&self, inputs: &[&[usize]], output: &[usize]) -> Option<u64> {
        mac_flops(&[elems(output)?, inputs[0][0] as u64, taps(&self.kernel)?])
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let g = Window::new(&self.kernel, &self.stride, &self.pad, &self.dilation);
        let b = self.bias.then(|| step.params[1]);
        let x = step.xs[0];
        Forwarded::plain(from4(
            conv_forward(&as4(x), step.params[0], b, &g, out_hw(step.shape)),
            x.ndim() == 3,
        ))
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let g = Window::new(&self.kernel, &self.stride, &self.pad, &self.dilation);
        let x = step.xs[0];
        let (dx, dw, db) = conv_backward(&as4(x), step.params[0], &as4(&step.dy), &g, true);
        let mut grads = vec![(0, dw)];
        if self.bias {
            grads.push((1, db.into_dyn()));
        }
        Backwarded { dxs: vec![from4(dx.expect("asked for dx"), x.ndim() == 3)], grads }
    }

    /// Every attribute (stride, pad, dilation, bias) is honoured by the kernel families.
    fn lowering(&self) -> Lowering {
        Lowering::Linear
    }
}

impl OpRules for UpConv {
    fn kind(&self) -> &'static str {
        "upconv"
    }

    /// Per axis `N_y = (N_x − 1)·stride − 2·pad + N_h` ([`AxisRule::Transposed`]).
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        spatial_output(single(inputs)?, Some(self.out), |a, n| self.axis_rule(a, n))
    }

    fn axis_rule(&self, axis: usize, n: usize) -> Option<AxisRule> {
        Some(AxisRule::Transposed {
            n,
            kernel: *self.kernel.get(axis)?,
            stride: *self.stride.get(axis)?,
            pad: *self.pad.get(axis)?,
        })
    }

    fn kernel(&self) -> Option<&[usize]> {
        Some(&self.kernel)
    }

    /// `r ← r + (⌈kernel/stride⌉ − 1)·j`, `j ← j/stride`: the largest over output positions.
    fn reach(&self, inputs: &[Reach]) -> Reach {
        map_axes(inputs, |a, r, j| {
            let k = self.kernel.get(a).copied().unwrap_or(1).max(1);
            let s = self.stride.get(a).copied().unwrap_or(1).max(1);
            let taps = k.div_ceil(s) as f64;
            (r + (taps - 1.0) * j, j / s as f64)
        })
    }

    fn params(&self, inputs: &[&[usize]]) -> Vec<ParamSpec> {
        linear_params(self.out, inputs[0][0], &self.kernel, self.bias)
    }

    fn flops(&self, inputs: &[&[usize]], _output: &[usize]) -> Option<u64> {
        mac_flops(&[elems(inputs[0])?, self.out as u64, taps(&self.kernel)?])
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let g = Window::new(&self.kernel, &self.stride, &self.pad, &[]);
        let b = self.bias.then(|| step.params[1]);
        let x = step.xs[0];
        Forwarded::plain(from4(
            upconv_forward(&as4(x), step.params[0], b, &g, out_hw(step.shape)),
            x.ndim() == 3,
        ))
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let g = Window::new(&self.kernel, &self.stride, &self.pad, &[]);
        let x = step.xs[0];
        let (dx, dw, db) = upconv_backward(&as4(x), step.params[0], &as4(&step.dy), &g);
        let mut grads = vec![(0, dw)];
        if self.bias {
            grads.push((1, db.into_dyn()));
        }
        Backwarded { dxs: vec![from4(dx, x.ndim() == 3)], grads }
    }

    /// Stride and pad through interleaving; kernel = stride, pad = 0 as a pixel shuffle.
    fn lowering(&self) -> Lowering {
        Lowering::Linear
    }
}

// ---- reference math (the interpreter's oracle) ------------------------------------------------
//
// 1-D values are computed as 2-D ones with height 1, so one im2col serves both ranks.
// Arrays carry the batch axis: x is [B, C, N] or [B, C, H, W].

use ndarray::{Array2, Array4, ArrayD, Axis, IxDyn};

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
/// `(ho, wo)` is the output size the shape rule computed.
pub fn conv_forward(
    x4: &Array4<f64>,
    w: &ArrayD<f64>,
    b: Option<&ArrayD<f64>>,
    g: &Window,
    (ho, wo): (usize, usize),
) -> Array4<f64> {
    let (bn, c, _, _) = x4.dim();
    let o = w.shape()[0];
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
    let (_, _, h, wd) = x4.dim();
    let dx = conv_forward(dy, &wc, None, g, (h, wd));
    let (_, dwc, _) = conv_backward(dy, &wc, x4, g, false);
    let db = dy.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(0));
    (dx, transposed_weight(&dwc), db)
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

    fn shape(op: &dyn OpRules, input: &[usize]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        op.output_shape(&[input])
    }

    // The slides: a 6×6 image and a 3×3 filter give 4×4; pad 1 keeps 6×6; stride 2 gives 2×2 (valid).
    #[test]
    fn slide_sizes() {
        assert_eq!(shape(&conv(3, 1, 0), &[1, 6, 6]).unwrap().0, vec![1, 4, 4]);
        assert_eq!(shape(&conv(3, 1, 1), &[1, 6, 6]).unwrap().0, vec![1, 6, 6]);
        assert_eq!(shape(&conv(3, 2, 0), &[1, 6, 6]).unwrap().0, vec![1, 2, 2]);
    }

    #[test]
    fn kernel_too_big_shows_arithmetic() {
        let err = shape(&conv(7, 1, 0), &[1, 5, 5]).unwrap_err();
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
        let (s, w) = shape(&conv(2, 2, 0), &[1, 5, 5]).unwrap();
        assert_eq!(s, vec![1, 2, 2]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn dilation() {
        let c =
            Conv { out: 2, kernel: vec![3], stride: vec![1], pad: vec![0], dilation: vec![2], bias: true };
        // span 5: 10 − 5 + 1 = 6
        assert_eq!(shape(&c, &[1, 10]).unwrap().0, vec![2, 6]);
    }

    #[test]
    fn upconv_doubles() {
        let u = UpConv { out: 32, kernel: vec![2, 2], stride: vec![2, 2], pad: vec![0, 0], bias: true };
        assert_eq!(shape(&u, &[64, 32, 32]).unwrap().0, vec![32, 64, 64]);
    }

    #[test]
    fn flops_that_overflow_u64_are_none() {
        let c = Conv {
            out: 1 << 20,
            kernel: vec![1 << 16],
            stride: vec![1],
            pad: vec![0],
            dilation: vec![1],
            bias: true,
        };
        assert_eq!(c.flops(&[&[1 << 20, 1 << 20]], &[1 << 20, 1 << 20]), None);
        assert_eq!(conv(3, 1, 1).flops(&[&[2, 4, 4]], &[1, 4, 4]), Some(2 * 16 * 2 * 9));
    }
}

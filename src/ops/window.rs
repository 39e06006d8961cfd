//! What the sliding-window and resampling layers (conv, upconv, pooling, upsample) share: the
//! per-axis size rule — one formula per family, evaluated with checked arithmetic, written out
//! for diagnostics and the language server from the same numbers —, the receptive-field step,
//! and the lift of 1-D values to 2-D (height 1) that lets one reference kernel serve both ranks.

use super::{Reach, Shape, ShapeError, ShapeWarning, checked_product};
use ndarray::{Array4, ArrayD, IxDyn};

/// The size rule of one spatial axis at one input size, kept as numbers: the value, the
/// arithmetic written out, and the smallest input that works all derive from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisRule {
    /// `N_y = ⌊(N_x + 2·pad − dilation·(N_h − 1) − 1)/stride⌋ + 1` (conv, pooling).
    Window { n: usize, kernel: usize, stride: usize, pad: usize, dilation: usize },
    /// `N_y = (N_x − 1)·stride − 2·pad + N_h` (upconv).
    Transposed { n: usize, kernel: usize, stride: usize, pad: usize },
    /// `N_y = factor·N_x` (upsample).
    Scaled { n: usize, factor: usize },
}

impl AxisRule {
    fn ints(v: [usize; 5]) -> [i128; 5] {
        v.map(|x| x as i128)
    }

    /// The output size (negative or zero when the input is too small). Exact in i128 for any
    /// `usize` attributes.
    pub fn value(&self) -> i128 {
        match *self {
            AxisRule::Window { n, kernel, stride, pad, dilation } => {
                let [n, k, s, p, d] = Self::ints([n, kernel, stride, pad, dilation]);
                (n + 2 * p - (d * (k - 1) + 1)).div_euclid(s.max(1)) + 1
            }
            AxisRule::Transposed { n, kernel, stride, pad } => {
                let [n, k, s, p, _] = Self::ints([n, kernel, stride, pad, 0]);
                (n - 1) * s - 2 * p + k
            }
            AxisRule::Scaled { n, factor } => n as i128 * factor as i128,
        }
    }

    /// Trailing input samples a stride never reads.
    pub fn dropped(&self) -> usize {
        match *self {
            AxisRule::Window { n, kernel, stride, pad, dilation } => {
                let [n, k, s, p, d] = Self::ints([n, kernel, stride, pad, dilation]);
                let numer = n + 2 * p - (d * (k - 1) + 1);
                if numer < 0 { 0 } else { (numer % s.max(1)) as usize }
            }
            _ => 0,
        }
    }

    /// The arithmetic written out, without the result: `(5 + 2·0 − 7)/1 + 1`.
    pub fn formula(&self) -> String {
        match *self {
            AxisRule::Window { n, kernel, stride, pad, dilation } => {
                let kernel_text = if dilation == 1 {
                    format!("{kernel}")
                } else {
                    format!("{dilation}·({kernel} − 1) − 1")
                };
                format!("({n} + 2·{pad} − {kernel_text})/{stride} + 1")
            }
            AxisRule::Transposed { n, kernel, stride, pad } => {
                format!("({n} − 1)·{stride} − 2·{pad} + {kernel}")
            }
            AxisRule::Scaled { n, factor } => format!("{factor}·{n}"),
        }
    }

    /// The smallest input size along this axis that gives at least one output sample.
    pub fn min_input(&self) -> u64 {
        match *self {
            AxisRule::Window { kernel, pad, dilation, .. } => {
                let [k, p, d, _, _] = Self::ints([kernel, pad, dilation, 0, 0]);
                (d * (k - 1) + 1 - 2 * p).max(1) as u64
            }
            AxisRule::Transposed { kernel, stride, pad, .. } => {
                // smallest n with (n − 1)·s − 2p + k ≥ 1
                let [k, s, p, _, _] = Self::ints([kernel, stride, pad, 0, 0]);
                let need = 1 + 2 * p - k;
                (if need <= 0 { 1 } else { 1 + (need + s - 1) / s.max(1) }) as u64
            }
            AxisRule::Scaled { .. } => 1,
        }
    }

    /// The stride this axis steps its input by (1 for the up-sampling rules).
    pub fn stride(&self) -> usize {
        match *self {
            AxisRule::Window { stride, .. } => stride,
            _ => 1,
        }
    }

    /// The output size, or the error that shows the arithmetic.
    pub fn resolve(&self, axis: usize) -> Result<usize, ShapeError> {
        let value = self.value();
        if value < 1 {
            let formula = format!("{} = {}", self.formula(), fmt_signed(value));
            let value = i64::try_from(value).unwrap_or(i64::MIN);
            return Err(ShapeError::AxisTooSmall { axis, formula, value, min_input: self.min_input() });
        }
        usize::try_from(value).map_err(|_| ShapeError::Overflow)
    }
}

/// Writes a signed integer with a real minus sign, as the diagnostics do.
pub fn fmt_signed(v: i128) -> String {
    if v < 0 { format!("−{}", -v) } else { v.to_string() }
}

/// The shape rule of every spatial op: `[C, spatial...]` → `[channels, rule(axis)...]`, with a
/// warning per axis whose stride drops trailing samples.
pub fn spatial_output(
    input: &[usize],
    channels: Option<usize>,
    rule: impl Fn(usize, usize) -> Option<AxisRule>,
) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
    let (c, spatial) = match input {
        [c, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => (*c, rest),
        _ => return Err(ShapeError::Rank { expected: "[C, N] or [C, H, W]", found: input.to_vec() }),
    };
    let mut shape = vec![channels.unwrap_or(c)];
    let mut warnings = vec![];
    for (axis, &n) in spatial.iter().enumerate() {
        // Attributes have one entry per axis of the rank they were built for (the builder
        // checks it); a value of another rank is a rank error, not an index panic.
        let r = rule(axis, n)
            .ok_or(ShapeError::Rank { expected: "the rank it was built for", found: input.to_vec() })?;
        let y = r.resolve(axis)?;
        let dropped = r.dropped();
        if dropped > 0 {
            warnings.push(ShapeWarning::StrideDropsSamples { axis, input: n, dropped });
        }
        shape.push(y);
    }
    checked_product(&shape)?;
    Ok((shape, warnings))
}

/// Receptive-field step of a sliding window on each axis: `r ← r + dilation·(kernel − 1)·j`,
/// `j ← j·stride`.
pub fn window_reach(
    inputs: &[Reach],
    kernel: &[usize],
    stride: &[usize],
    dilation: Option<&[usize]>,
) -> Reach {
    map_axes(inputs, |a, r, j| {
        let k = kernel.get(a).copied().unwrap_or(1) as f64;
        let d = dilation.and_then(|d| d.get(a)).copied().unwrap_or(1) as f64;
        let s = stride.get(a).copied().unwrap_or(1) as f64;
        (r + d * (k - 1.0) * j, j * s)
    })
}

/// Applies a per-axis (extent, jump) step to the first input's reach.
pub fn map_axes(inputs: &[Reach], step: impl Fn(usize, f64, f64) -> (f64, f64)) -> Reach {
    match inputs.first() {
        Some(Reach::Axes(axes)) => {
            Reach::Axes(axes.iter().enumerate().map(|(a, &(r, j))| step(a, r, j)).collect())
        }
        _ => Reach::Whole,
    }
}

/// A per-axis attribute of a 1-D or 2-D op as 2-D: a 1-D value is a 2-D one of height 1, and
/// its height axis gets `fill` (kernel 1, stride 1, pad 0, ...). The one place the lift is made.
pub fn lift(v: &[usize], fill: usize) -> [usize; 2] {
    match v {
        [w] => [fill, *w],
        [h, w, ..] => [*h, *w],
        [] => [fill, fill],
    }
}

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
        Window { k: lift(kernel, 1), s: lift(stride, 1), p: lift(pad, 0), d: lift(dilation, 1) }
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

/// The output's spatial size as 2-D, from the output shape with the batch axis.
pub fn out_hw(shape: &[usize]) -> (usize, usize) {
    match shape {
        [_, _, w] => (1, *w),
        [_, _, h, w, ..] => (*h, *w),
        _ => (1, 1),
    }
}

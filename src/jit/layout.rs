//! Value layouts. Every value is f32 `[N, H, W, C]` with the channel stride rounded up to 4
//! (1-D values have H = 1, flat values are `[N, 1, 1, F]`); lanes past C are don't-care. The
//! batched NCHW f64 arrays of the rest of the compiler are converted only at the graph's edges.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

pub(crate) fn round4(c: usize) -> usize {
    c.div_ceil(4) * 4
}

/// Shape of a value in NHWC with channel stride `cs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub cs: usize,
}

impl Layout {
    /// From a batched shape `[B, C, H, W]`, `[B, C, N]` or `[B, F]`.
    pub(crate) fn of(shape: &[usize]) -> Layout {
        let (n, c, h, w) = match shape.len() {
            4 => (shape[0], shape[1], shape[2], shape[3]),
            3 => (shape[0], shape[1], 1, shape[2]),
            2 => (shape[0], shape[1], 1, 1),
            _ => (shape[0], 1, 1, 1),
        };
        Layout { n, h, w, c, cs: round4(c) }
    }

    /// Floats of the buffer.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.cs
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `n·H + h`: the unit the kernels are called on.
    pub(crate) fn rows(&self) -> usize {
        self.n * self.h
    }

    /// Pixels of the whole batch: what per-channel and point-wise kernels run over.
    pub(crate) fn positions(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// A per-axis attribute (one entry per spatial axis) as height and width; 1-D values have
/// height 1, so their single entry is the width and the height gets `fill`.
pub(crate) fn window2(v: &[usize], fill: usize) -> [usize; 2] {
    if v.len() == 1 { [fill, v[0]] } else { [v[0], v[1]] }
}

/// A batched NCHW (or NCN, NF) array into NHWC with channel stride `l.cs`.
pub fn to_nhwc(x: &ArrayD<f64>, l: Layout, out: &mut Vec<f32>) {
    out.resize(l.len(), 0.0);
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let hw = l.h * l.w;
    out.par_chunks_mut(hw * l.cs).zip(xs.par_chunks(l.c * hw)).for_each(|(o, xs)| {
        for c in 0..l.c {
            for p in 0..hw {
                o[p * l.cs + c] = xs[c * hw + p] as f32;
            }
        }
    });
}

/// NHWC back to a batched array of `shape`.
pub fn from_nhwc(buf: &[f32], l: Layout, shape: &[usize]) -> ArrayD<f64> {
    let hw = l.h * l.w;
    let mut out = vec![0.0f64; l.n * l.c * hw];
    out.par_chunks_mut(l.c * hw).zip(buf.par_chunks(hw * l.cs)).for_each(|(o, b)| {
        for c in 0..l.c {
            for p in 0..hw {
                o[c * hw + p] = b[p * l.cs + c] as f64;
            }
        }
    });
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("layout matches shape")
}

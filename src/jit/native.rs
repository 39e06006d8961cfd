//! The native loops on NHWC buffers: the ops with `Lowering::Native` (flatten), and the data movement around the generated kernels
//! (zero padding and interleaving, pixel shuffles). Parallel over samples or fixed chunks, so
//! results do not depend on the thread count.

use super::layout::Layout;
use rayon::prelude::*;

/// Elements per task of element-wise parallel loops.
pub(crate) const CHUNK: usize = 1 << 14;

pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
        for (d, s) in d.iter_mut().zip(s) {
            *d += s;
        }
    });
}

/// Copies `src` into a zeroed `dst`, sample `o` along each spatial axis landing at `o·s + off`
/// (positions outside `dst` dropped). Zero padding (s = 1, off = pad) and the zero-interleaving
/// of transposed convolutions are both this.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scatter {
    pub src: Layout,
    pub dst: Layout,
    pub s: [usize; 2],
    pub off: [i64; 2],
}

impl Scatter {
    /// Also zeroes every destination element it does not write, so `dst` may hold anything
    /// (transient buffers are lent dirty).
    pub fn run(&self, src: &[f32], dst: &mut [f32]) {
        let (sl, dl) = (self.src, self.dst);
        let dst_sample = dl.h * dl.w * dl.cs;
        let rows_only = self.s == [1, 1] && sl.cs == dl.cs;
        dst.par_chunks_mut(dst_sample).enumerate().for_each(|(n, d)| {
            if rows_only {
                // Each destination row: the source row that lands there (if any), zeros around.
                let lo = (-self.off[1]).max(0) as usize;
                let hi = (sl.w as i64).min(dl.w as i64 - self.off[1]).max(lo as i64) as usize;
                for jh in 0..dl.h {
                    let row = &mut d[jh * dl.w * dl.cs..(jh + 1) * dl.w * dl.cs];
                    let oh = jh as i64 - self.off[0];
                    if oh < 0 || oh >= sl.h as i64 || hi <= lo {
                        row.fill(0.0);
                        continue;
                    }
                    let (jl, jr) = ((lo as i64 + self.off[1]) as usize, (hi as i64 + self.off[1]) as usize);
                    let si = ((n * sl.h + oh as usize) * sl.w + lo) * sl.cs;
                    row[..jl * dl.cs].fill(0.0);
                    row[jl * dl.cs..jr * dl.cs].copy_from_slice(&src[si..si + (hi - lo) * sl.cs]);
                    row[jr * dl.cs..].fill(0.0);
                }
                return;
            }
            d.fill(0.0);
            for oh in 0..sl.h {
                let jh = oh as i64 * self.s[0] as i64 + self.off[0];
                if jh < 0 || jh >= dl.h as i64 {
                    continue;
                }
                for ow in 0..sl.w {
                    let jw = ow as i64 * self.s[1] as i64 + self.off[1];
                    if jw < 0 || jw >= dl.w as i64 {
                        continue;
                    }
                    let si = ((n * sl.h + oh) * sl.w + ow) * sl.cs;
                    let di = (jh as usize * dl.w + jw as usize) * dl.cs;
                    d[di..di + sl.c].copy_from_slice(&src[si..si + sl.c]);
                }
            }
        });
    }
}

/// An upconv whose kernel equals its stride and has no padding writes each input pixel's
/// `k₀×k₁` output block independently: a 1×1 correlation to taps × channels lanes, each tap's
/// lanes stored at their output position by the kernel (`codegen::Shuffle`); backward, a
/// space-to-depth copy of dy, then 1×1 correlations. No multiply touches an interleaved zero.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pixel {
    pub x: Layout,
    pub y: Layout,
    pub k: [usize; 2],
    /// The linear plan's scratch buffer of the backward space-to-depth dy.
    pub t_bwd: usize,
    /// Channel stride of the space-to-depth dy: round4(out · taps).
    pub cs_bwd: usize,
}

impl Pixel {
    /// `dy[n, h·k₀+kh, w·k₁+kw, co]` → `t[n,h,w, co·taps + tap]` (lanes past out·taps zero).
    pub fn space_to_depth(&self, dy: &[f32], t: &mut [f32]) {
        let (x, yl, k, cs) = (self.x, self.y, self.k, self.cs_bwd);
        let taps = k[0] * k[1];
        t.par_chunks_mut(x.h * x.w * cs).zip(dy.par_chunks(yl.h * yl.w * yl.cs)).for_each(|(t, dy)| {
            for h in 0..x.h {
                for w in 0..x.w {
                    let o = (h * x.w + w) * cs;
                    for kh in 0..k[0] {
                        for kw in 0..k[1] {
                            let src = ((h * k[0] + kh) * yl.w + w * k[1] + kw) * yl.cs;
                            for co in 0..yl.c {
                                t[o + co * taps + kh * k[1] + kw] = dy[src + co];
                            }
                        }
                    }
                    t[o + yl.c * taps..o + cs].fill(0.0);
                }
            }
        });
    }
}

/// NHWC → PyTorch's flat order `c·H·W + h·W + w`.
pub(crate) fn flatten(x: &[f32], xl: Layout, y: &mut [f32], yl: Layout) {
    for n in 0..xl.n {
        for c in 0..xl.c {
            for p in 0..xl.h * xl.w {
                y[n * yl.cs + c * xl.h * xl.w + p] = x[(n * xl.h * xl.w + p) * xl.cs + c];
            }
        }
    }
}

pub(crate) fn unflatten(dy: &[f32], yl: Layout, dx: &mut [f32], xl: Layout) {
    dx.fill(0.0);
    for n in 0..xl.n {
        for c in 0..xl.c {
            for p in 0..xl.h * xl.w {
                dx[(n * xl.h * xl.w + p) * xl.cs + c] = dy[n * yl.cs + c * xl.h * xl.w + p];
            }
        }
    }
}

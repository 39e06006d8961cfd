//! The weights' way in: every step (and every inference call) a linear layer's f64 weight
//! `[a][b][taps]` becomes the f32 layout each of its two correlations reads — the direct
//! kernel's `[reduced][tap][lanes]` (taps flipped where the correlation runs the other way,
//! lanes beyond the channel count zero), or, for a Winograd direction, straight the transformed
//! filter `U[point][reduced][lanes] = G g Gᵀ` with no packed taps in between.
//!
//! A generated kernel per (direction, sizes, packing, tile), `fn(w, out, r0, r1)` over a range
//! of reduced channels, run in parallel over fixed ranges into the plan's kept buffers (no
//! allocation per step). Per reduced channel and group of 4 lanes it loads the taps' f64 values
//! at constant strides, rounds them to f32 into one f32x4 per tap, and stores them (direct) or
//! transforms the 9 vectors with the tile's constant `G` in f32x4 and stores the α² results.
//! The f32 transform's error against the f64 one is a few f32 roundings of the terms (the unit
//! test bounds it at 1e-6 of their magnitude; the kernels then sum these in f32 anyway).

use super::codegen::{Codegen, F32X4, FnHandle, PTR, counted_loop, flags};
use super::linear::{CorrCall, Packing};
use super::winograd::filter_point_stride;
use super::winograd_combos::{Consts, lin_comb};
use super::winograd_tile::Tile;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;
use rayon::prelude::*;

/// `fn(w, out, r0, r1)`: reduced channels `r0..r1` of the f64 weight `w` into their places of
/// `out` (the whole packed layout, not an offset into it).
pub type PackFn = unsafe extern "C" fn(*const f64, *mut f32, i64, i64);

/// Floats one parallel task writes at least (whole reduced channels): enough work per task to
/// amortise the dispatch, fixed by the shapes (the results do not depend on the split anyway:
/// every float is computed by the same instructions wherever the range starts).
const TASK_FLOATS: usize = 16 * 1024;

/// One weight packing, fully specialised.
#[derive(Clone, Debug)]
pub(crate) struct PackSpec {
    /// The weight `[a][b][taps]`.
    pub a: usize,
    pub b: usize,
    pub taps: usize,
    pub pack: Packing,
    /// Lanes per (reduced channel, tap or point) row: a multiple of 4, at least the other
    /// channel count.
    pub lanes: usize,
    /// The Winograd filter transform of this tile (3×3 taps), or the taps as they are.
    pub tile: Option<Tile>,
}

impl PackSpec {
    /// The packing of `call`'s weights (`[a][b][taps]`), transformed for `tile` if any.
    pub(crate) fn new((a, b, taps): (usize, usize, usize), call: &CorrCall, tile: Option<Tile>) -> PackSpec {
        PackSpec { a, b, taps, pack: call.pack, lanes: call.pack_lanes, tile }
    }

    /// The channel the correlation sums over, and the one in its lanes.
    pub fn reduced(&self) -> usize {
        if self.pack.reduce_axis0 { self.a } else { self.b }
    }

    pub fn other(&self) -> usize {
        if self.pack.reduce_axis0 { self.b } else { self.a }
    }

    /// Rows of `lanes` floats per reduced channel: the taps, or the transform's α² points.
    fn rows(&self) -> usize {
        self.tile.map_or(self.taps, |t| t.alpha() * t.alpha())
    }

    /// Floats of the packed layout.
    pub fn out_len(&self) -> usize {
        match self.tile {
            Some(_) => self.rows() * self.point_stride(),
            None => self.reduced() * self.rows() * self.lanes,
        }
    }

    /// Floats between the transform points of a Winograd layout.
    fn point_stride(&self) -> usize {
        filter_point_stride(self.reduced(), self.lanes)
    }

    /// Bytes between consecutive reduced channels and between consecutive lanes in `w`.
    fn in_strides(&self) -> (i64, i64) {
        let (tap, row) = ((self.taps * 8) as i64, (self.b * self.taps * 8) as i64);
        if self.pack.reduce_axis0 { (row, tap) } else { (tap, row) }
    }

    /// Reduced channels per parallel task.
    fn task_channels(&self) -> usize {
        (TASK_FLOATS / (self.rows() * self.lanes).max(1)).clamp(1, self.reduced().max(1))
    }
}

/// A weight packing's generated kernel, callable after the module is finished.
pub(crate) struct WeightPack {
    pub spec: PackSpec,
    handle: FnHandle,
    f: Option<PackFn>,
}

impl WeightPack {
    /// Generates (or reuses: layers of the same sizes and packing share one) the kernel of
    /// `spec`; nothing when `cg` is dry.
    pub(crate) fn generate(cg: &mut Codegen, spec: PackSpec) -> Result<WeightPack, String> {
        if spec.tile.is_some() && spec.taps != 9 {
            return Err(format!("winograd filter transform of {} taps (3x3 only)", spec.taps));
        }
        if !spec.lanes.is_multiple_of(4) || spec.other() > spec.lanes {
            return Err(format!("packing {} channels into {} lanes", spec.other(), spec.lanes));
        }
        let handle =
            cg.cached(format!("pack {spec:?}"), |cg| cg.custom(2, |b, p, fma| emit(b, p, &spec, fma)))?;
        Ok(WeightPack { spec, handle, f: None })
    }

    /// Takes the generated function's address once the module is finished.
    pub(crate) fn link(&mut self, cg: &Codegen) {
        // SAFETY: the function was generated by `generate` with exactly this signature.
        self.f = Some(unsafe { std::mem::transmute::<*const u8, PackFn>(cg.fn_address(self.handle)) });
    }

    /// Packs `w` (`[a][b][taps]`, standard layout) into `out`, sized to the layout the first
    /// time and reused after; fixed ranges of reduced channels in parallel.
    pub(crate) fn run(&self, w: &[f64], out: &mut Vec<f32>) {
        let Some(f) = self.f else { return };
        let s = &self.spec;
        // A hard check: the kernel reads `a·b·taps` values whatever `w` holds.
        assert_eq!(w.len(), s.a * s.b * s.taps, "weight of another shape than the packing's");
        let len = s.out_len();
        if out.len() != len {
            out.clear();
            out.resize(len, 0.0);
        }
        let (red, per) = (s.reduced(), s.task_channels());
        let (wp, op) = (w.as_ptr() as usize, out.as_mut_ptr() as usize);
        (0..red.div_ceil(per)).into_par_iter().for_each(|task| {
            let (r0, r1) = (task * per, ((task + 1) * per).min(red));
            // SAFETY: the kernel was generated for `s`: it reads `w` at offsets below
            // `a·b·taps` values (asserted above) and writes, for each reduced channel in
            // `r0..r1`, only that channel's rows of `out` (`out_len` floats, sized above); the
            // tasks' ranges are disjoint, so no two write the same float.
            unsafe { f(wp as *const f64, op as *mut f32, r0 as i64, r1 as i64) }
        });
    }
}

/// `base + off` as a pointer and a 32-bit displacement (folded into the pointer when too large).
fn at(b: &mut FunctionBuilder, base: Value, off: i64) -> (Value, i32) {
    match i32::try_from(off) {
        Ok(d) => (base, d),
        Err(_) => (b.ins().iadd_imm_s(base, off), 0),
    }
}

/// The kernel body ([`PackFn`]): per reduced channel, its groups of 4 lanes — the whole ones in
/// a loop, then the partial one (the lanes past the channel count zero), then any all-zero ones.
fn emit(b: &mut FunctionBuilder, p: &[Value], spec: &PackSpec, has_fma: bool) {
    let (w, out, r0, r1) = (p[0], p[1], p[2], p[3]);
    let (r_stride, l_stride) = spec.in_strides();
    let out_r_stride = (spec.lanes * 4) as i64 * if spec.tile.is_some() { 1 } else { spec.taps as i64 };
    let other = spec.other();
    let (whole, rem, groups) = (other / 4, other % 4, spec.lanes / 4);
    let zero_from = whole + usize::from(rem > 0);
    counted_loop(b, r0, r1, 1, |b, r| {
        let w_off = b.ins().imul_imm_s(r, r_stride);
        let wr = b.ins().iadd(w, w_off);
        let o_off = b.ins().imul_imm_s(r, out_r_stride);
        let or = b.ins().iadd(out, o_off);
        let group_loop = |b: &mut FunctionBuilder, from: usize, to: usize, valid: usize| {
            if from >= to {
                return;
            }
            let (start, end) = (b.ins().iconst(PTR, from as i64), b.ins().iconst(PTR, to as i64));
            counted_loop(b, start, end, 1, |b, g| {
                let wg_off = b.ins().imul_imm_s(g, 4 * l_stride);
                let wg = b.ins().iadd(wr, wg_off);
                let og_off = b.ins().imul_imm_s(g, 16);
                let og = b.ins().iadd(or, og_off);
                emit_group(b, spec, wg, og, valid, has_fma);
            });
        };
        group_loop(b, 0, whole, 4);
        group_loop(b, whole, zero_from, rem);
        group_loop(b, zero_from, groups, 0);
    });
}

/// One group of 4 lanes of one reduced channel: `wg` its first lane's first tap in `w`, `og`
/// its first float in `out`, `valid` lanes read (the others zero).
fn emit_group(b: &mut FunctionBuilder, spec: &PackSpec, wg: Value, og: Value, valid: usize, has_fma: bool) {
    let (_, l_stride) = spec.in_strides();
    // The `valid` lanes of tap `t` (its offset in bytes from `wg`) as one f32x4.
    let lanes_of = |b: &mut FunctionBuilder, base: Value, tap_off: i64| -> Value {
        let z = b.ins().f32const(0.0);
        let mut v = b.ins().splat(F32X4, z);
        for l in 0..valid {
            let (p, d) = at(b, base, l as i64 * l_stride + tap_off);
            let x = b.ins().load(types::F64, flags(), p, d);
            let x = b.ins().fdemote(types::F32, x);
            v = b.ins().insertlane(v, x, l as u8);
        }
        v
    };
    let lanes_bytes = (spec.lanes * 4) as i64;
    match spec.tile {
        None => {
            // Taps in a loop (their count varies; the body is small): tap t to row t, or to
            // row taps − 1 − t when flipped.
            let taps = spec.taps as i64;
            let (first, step) =
                if spec.pack.flip { ((taps - 1) * lanes_bytes, -lanes_bytes) } else { (0, lanes_bytes) };
            let (start, end) = (b.ins().iconst(PTR, 0), b.ins().iconst(PTR, taps));
            counted_loop(b, start, end, 1, |b, t| {
                let src_off = b.ins().imul_imm_s(t, 8);
                let src = b.ins().iadd(wg, src_off);
                let v = lanes_of(b, src, 0);
                let dst_off = b.ins().imul_imm_s(t, step);
                let dst = b.ins().iadd(og, dst_off);
                let (dst, d) = at(b, dst, first);
                b.ins().store(flags(), v, dst, d);
            });
        }
        Some(tile) => {
            // g[kh][kw] of the correlation's (possibly flipped) kernel; U = G g Gᵀ, point
            // i·α + j at `point · reduced · lanes` floats from the channel's first row.
            let g: Vec<Option<Value>> = (0..9)
                .map(|tp| {
                    let t = if spec.pack.flip { 8 - tp } else { tp };
                    (valid > 0).then(|| lanes_of(b, wg, t as i64 * 8))
                })
                .collect();
            // Row by row of U (t = row i of G·g, then its α points), each point stored as soon
            // as it is made: few values live at once, so a short register allocation (compile
            // time) and no spills.
            let (a, gm) = (tile.alpha(), tile.g());
            let mut k = Consts::default();
            let point_bytes = (spec.point_stride() * 4) as i64;
            let z = b.ins().f32const(0.0);
            let zero = b.ins().splat(F32X4, z);
            for i in 0..a {
                let t: Vec<Option<Value>> = (0..3)
                    .map(|j| {
                        let column: Vec<Option<Value>> = (0..3).map(|q| g[q * 3 + j]).collect();
                        lin_comb(b, &mut k, has_fma, &gm[i * 3..i * 3 + 3], &column)
                    })
                    .collect();
                for l in 0..a {
                    let v = lin_comb(b, &mut k, has_fma, &gm[l * 3..l * 3 + 3], &t);
                    let (dst, d) = at(b, og, (i * a + l) as i64 * point_bytes);
                    b.ins().store(flags(), v.unwrap_or(zero), dst, d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::codegen::OptLevel;
    use crate::jit::layout::round4;
    use crate::jit::linear::pack_weight;
    use crate::jit::winograd_tile::transform_filter;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The generated packing of a random `[a][b][taps]` weight into a buffer of garbage.
    fn generated(spec: &PackSpec, w: &[f64]) -> Vec<f32> {
        let mut cg = Codegen::new(OptLevel::None).expect("host");
        let mut pack = WeightPack::generate(&mut cg, spec.clone()).expect("generates");
        cg.finish().expect("finishes");
        pack.link(&cg);
        // Every float must be written: stale values of the last step are no zeros.
        let mut out = vec![f32::NAN; spec.out_len()];
        pack.run(w, &mut out);
        out
    }

    /// The layers' packings (as `lower.rs` makes them) against the native packing and, for
    /// Winograd, the f64 filter transform of its result: the taps bit for bit; the transformed
    /// filter within 1e-6 of the magnitude of its terms (`Σ |G g Gᵀ|` per element), which f32
    /// arithmetic with coefficients like 1/6 and 1/24 cannot match exactly.
    #[test]
    fn generated_packing_matches_the_native_packing_and_filter_transform() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        // A packing of `[a][b][taps]`, reducing over axis 0 or not, taps flipped or not.
        let spec = |(a, b, taps): (usize, usize, usize), (reduce_axis0, flip), lanes, tile| PackSpec {
            a,
            b,
            taps,
            pack: Packing { reduce_axis0, flip },
            lanes,
            tile,
        };
        // Lanes as lower.rs gives them, plus layouts with more lanes than channels.
        let mut cases: Vec<(&str, PackSpec)> = vec![];
        for (a, b) in [(8, 4), (6, 3), (1, 5), (16, 13)] {
            let (fwd, bwd) = ((false, false), (true, true));
            // conv (`[out, in, 3·3]`) forward and input gradient, and a 1-D conv of 5 taps
            cases.push(("conv forward", spec((a, b, 9), fwd, round4(a), None)));
            cases.push(("conv input gradient", spec((a, b, 9), bwd, round4(b), None)));
            cases.push(("conv1d input gradient", spec((a, b, 5), bwd, round4(b), None)));
            // transposed upconv: forward with flipped taps, input gradient not
            cases.push(("upconv forward", spec((a, b, 9), (false, true), round4(a), None)));
            cases.push(("upconv input gradient", spec((a, b, 16), (true, false), round4(b), None)));
            // pixel-shuffle upconv 2×2: the taps × channels lanes are the rows' lanes
            cases.push(("pixel-shuffle forward", spec((a, b, 4), fwd, round4(a), None)));
            cases.push(("pixel-shuffle input gradient", spec((a, b, 4), (true, false), round4(b), None)));
            // dense
            cases.push(("dense forward", spec((a, b, 1), fwd, round4(a), None)));
            cases.push(("dense input gradient", spec((a, b, 1), (true, false), round4(b), None)));
            for tile in [Tile::F4, Tile::F2, Tile::F6] {
                cases.push(("winograd forward", spec((a, b, 9), fwd, round4(a), Some(tile))));
                cases.push(("winograd input gradient", spec((a, b, 9), bwd, round4(b), Some(tile))));
            }
        }
        // Several tasks (more reduced channels than one task packs), and spare lanes.
        cases
            .push(("winograd forward, many channels", spec((64, 70, 9), (false, false), 64, Some(Tile::F4))));
        cases.push(("conv forward, many channels", spec((64, 400, 9), (false, false), 64, None)));
        cases.push(("conv forward, spare lanes", spec((5, 3, 9), (false, false), 12, None)));
        cases
            .push(("winograd input gradient, spare lanes", spec((5, 3, 9), (true, true), 8, Some(Tile::F4))));
        let mut worst = 0.0f64;
        for (what, spec) in cases {
            let PackSpec { a, b, taps, pack: p, lanes, tile } = spec;
            let w: Vec<f64> = (0..a * b * taps).map(|_| rng.random_range(-1.0..1.0)).collect();
            let got = generated(&spec, &w);
            let mut packed = vec![];
            pack_weight(&w, a, b, taps, p, lanes, &mut packed);
            let case = format!("{what} {a}x{b}x{taps} into {lanes} lanes {tile:?}");
            let Some(tile) = tile else {
                let differ = got.iter().zip(&packed).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!((got.len(), differ), (packed.len(), 0), "{case}");
                continue;
            };
            let mut u = vec![];
            let red = spec.reduced();
            transform_filter(tile, &packed, red, lanes, &mut u);
            // The points without the rows that pad their stride (never read, never written).
            assert_eq!(got.len(), tile.alpha() * tile.alpha() * spec.point_stride(), "{case}");
            let got: Vec<f32> =
                got.chunks(spec.point_stride()).flat_map(|p| p[..red * lanes].iter().copied()).collect();
            assert_eq!(got.len(), u.len(), "{case}");
            // Σ |G[i][q]|·|g[q][s]|·|G[j][s]| per element: the scale of its rounding errors.
            let (al, gm) = (tile.alpha(), tile.g());
            for (e, (&x, &y)) in got.iter().zip(&u).enumerate() {
                let (point, c, l) = (e / (red * lanes), e / lanes % red, e % lanes);
                let (i, j) = (point / al, point % al);
                let mut scale = 0.0f64;
                for q in 0..3 {
                    for s in 0..3 {
                        let g = f64::from(packed[(c * 9 + q * 3 + s) * lanes + l]);
                        scale += (gm[i * 3 + q] * g * gm[j * 3 + s]).abs();
                    }
                }
                let err = (f64::from(x) - f64::from(y)).abs();
                assert!(err <= 1e-6 * scale, "{case}: element {e}: {x} vs {y} (scale {scale})");
                if scale > 0.0 {
                    worst = worst.max(err / scale);
                }
            }
        }
        eprintln!("largest error of the f32 filter transform: {worst:.2e} of its terms' magnitude");
    }
}

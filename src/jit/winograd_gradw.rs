//! The weight gradient of a 3×3 stride-1 conv by Winograd F(m×m, 3×3): the adjoint of the
//! forward ([`super::winograd`]).
//!
//! The forward computes `M[ξ][tile][co] = Σ_ci V[ξ][tile][ci] · U[ξ][ci][co]` with `V = Bᵀ d B`
//! (the layer input's tiles) and `U = G g Gᵀ`, then `y = Aᵀ M A`. So, per transform point ξ,
//!
//! - `Ŷ = A dY Aᵀ` — the output gradient of each m×m tile (zeros beyond the layer's output)
//!   transformed by the adjoint of the output transform ([`emit_dy_transform`]);
//! - `dU[ξ][ci][co] = Σ_tiles V[ξ][tile][ci] · Ŷ[ξ][tile][co]` — a GEMM over the tiles, which *is*
//!   the direct weight-gradient kernel generated for a 1×1 geometry over a chunk's tiles (as
//!   the forward's per-point product is the 1×1 correlation kernel);
//! - `dg = Gᵀ dU G` per (ci, co), once per step, in f64, by the layer's generated finish
//!   ([`super::gradw_finish`]), which also sums the chunks' partial `dU`.
//!
//! That is α²/m² multiply-adds per output position and channel pair (2.25 for F(4×4)) instead
//! of the direct kernel's 9, plus the two transforms.
//!
//! The work is cut into chunks of tile rows *within one sample* (fixed by the shapes), each with
//! its own partial `dU`, summed in chunk order in f64: results do not depend on the thread
//! count, and a data-parallel shard of the batch has exactly the chunks one process has for its
//! samples. Inside a chunk, sub-chunks of [`WinoSpec::chunk_rows`] tile rows are transformed
//! into the task's scratch slot and multiplied while still in cache.

use super::codegen::{Blocking, Codegen, FnHandle, Geometry, GradWFn, GradWSpec};
use super::layout::Layout;
use super::winograd::{SlotPool, WinoSpec, input_transform, task_slots};
use super::winograd_emit::{DyFn, InputFn, Normalise, emit_dy_transform};
use super::winograd_tile::Tile;
use rayon::prelude::*;
use std::time::Instant;

/// Tiles per Winograd weight-gradient chunk (`winograd_gradw`): about the direct kernel's
/// 512 positions per chunk in partial-sum memory (α² points per tile instead of 9 taps).
pub(crate) const GRADW_CHUNK_TILES: usize = 128;

/// The linked kernels: input transform, dy transform, and the products by
/// sub-chunk size in tiles.
type Linked = (InputFn, DyFn, Vec<(usize, GradWFn)>);

/// A conv's Winograd weight gradient, fully specialised; its kernels linked after the module
/// is finished.
pub(crate) struct WinoGradW {
    /// The forward correlation's Winograd form (its input, tiles and sub-chunk rows).
    pub spec: WinoSpec,
    /// Tile rows per chunk (each chunk inside one sample).
    pub chunk_rows: usize,
    input: FnHandle,
    /// Whether the input transform normalises (a batchnorm's input) as it loads.
    pub norm: bool,
    dy: FnHandle,
    /// The per-point product for each sub-chunk size (in tiles) that occurs.
    gemm: Vec<(usize, FnHandle)>,
    fns: Option<Linked>,
    /// The plan's (transient) scratch holding the task slots' `V` and `Ŷ`.
    pub scratch: usize,
}

impl WinoGradW {
    /// Generates the kernels of the weight gradient of the correlation `geo` (the forward's, on
    /// its padded input) on `n` samples; with `bias`, the bias gradient too. With `src` (the
    /// unpadded input's layout and its padding), x is read in place, not a padded copy; with
    /// `norm`, x is the batchnorm's input before the layer, normalised as it is loaded (as the
    /// forward's input transform did). Its scratch index is the planner's to set.
    pub(crate) fn generate(
        cg: &mut Codegen,
        tile: Tile,
        geo: &Geometry,
        (src, norm): (Option<(Layout, [i64; 2])>, Option<Normalise>),
        n: usize,
        bias: bool,
        blocking: Blocking,
    ) -> Result<WinoGradW, String> {
        let spec = WinoSpec::new(tile, geo, n, bias, super::codegen::Epilogue::None);
        let mut spec = match src {
            Some((l, off)) => spec.reading(l, off),
            None => spec,
        };
        let chunk_rows = (GRADW_CHUNK_TILES / spec.tw()).clamp(1, spec.th());
        // A product never spans more than a chunk.
        spec.chunk_rows = spec.chunk_rows.min(chunk_rows);
        // `V` of tile rows `r0..r1` of the forward's input, read as the forward's input
        // transform reads it. Cached by spec, as the transforms below: a DnCNN's repeated layers
        // share one set.
        let input = input_transform(cg, "winograd gradw input", &spec, norm)?;
        let dy = cg.cached(format!("winograd gradw dy {spec:?}"), |cg| {
            cg.custom(3, |b, p, fma| emit_dy_transform(b, p, &spec, fma))
        })?;
        let mut w = WinoGradW {
            spec,
            chunk_rows,
            input,
            norm: norm.is_some(),
            dy,
            gemm: vec![],
            fns: None,
            scratch: 0,
        };
        // Every sample has the same chunks; the last sub-chunk of a chunk may be shorter.
        let mut sizes: Vec<usize> = (0..w.chunks_per_sample())
            .flat_map(|c| w.sub_chunks(c))
            .map(|(r0, r1)| (r1 - r0) * w.spec.tw())
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        for tiles in sizes {
            let h = cg.gradw(&w.gemm_spec(tiles), blocking)?;
            w.gemm.push((tiles, h));
        }
        Ok(w)
    }

    /// Takes the generated functions' addresses once the module is finished.
    pub(crate) fn link(&mut self, cg: &Codegen) {
        // SAFETY: the transforms were generated by `generate` with exactly this signature.
        let (input, dy) = unsafe {
            (
                std::mem::transmute::<*const u8, InputFn>(cg.fn_address(self.input)),
                std::mem::transmute::<*const u8, DyFn>(cg.fn_address(self.dy)),
            )
        };
        let gemm = self.gemm.iter().map(|&(t, h)| (t, cg.gradw_fn(h))).collect();
        self.fns = Some((input, dy, gemm));
    }

    /// The per-point product over `tiles` tiles as a 1×1 weight gradient: `x` is `V[ξ]`
    /// (`tiles × ci4`), `dy` is `Ŷ[ξ]` (`tiles × co4`), the sums `dU[ξ]` are `ci × co4`.
    fn gemm_spec(&self, tiles: usize) -> GradWSpec {
        let s = &self.spec;
        let geo = Geometry::gemm(tiles, s.ci, s.ci4(), s.co4);
        GradWSpec { geo, bias: false, pad: [0, 0] }
    }

    fn chunks_per_sample(&self) -> usize {
        self.spec.th().div_ceil(self.chunk_rows)
    }

    /// Chunks of the whole batch.
    pub fn chunks(&self) -> usize {
        self.spec.n * self.chunks_per_sample()
    }

    /// Floats of one chunk's partial `dU[point][ci][co4]`, then `co4` bias sums.
    pub fn partial_len(&self) -> usize {
        self.spec.filter_len() + self.spec.co4
    }

    /// Floats of every chunk's partial sums.
    pub fn partials_len(&self) -> usize {
        self.chunks() * self.partial_len()
    }

    /// Floats of one task's `V` and `Ŷ` of a sub-chunk.
    fn slot_len(&self) -> usize {
        let s = &self.spec;
        s.points() * (s.point_stride(s.ci4()) + s.point_stride(s.co4))
    }

    /// Floats of the scratch: one slot per task.
    pub fn scratch_len(&self) -> usize {
        task_slots(self.chunks()) * self.slot_len()
    }

    /// The tile rows (`n·th + tile row`) of chunk `c`, as sub-chunks `(r0, r1)`.
    fn sub_chunks(&self, c: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let th = self.spec.th();
        let cps = self.chunks_per_sample();
        let start = (c / cps) * th + (c % cps) * self.chunk_rows;
        let end = ((c / cps) * th + (c % cps + 1) * self.chunk_rows).min((c / cps + 1) * th);
        let step = self.spec.chunk_rows;
        (start..end).step_by(step).map(move |r0| (r0, (r0 + step).min(end)))
    }

    /// In words, for the plan.
    pub(crate) fn describe(&self) -> String {
        let s = &self.spec;
        format!(
            "winograd {}, {}x{} tiles per sample, {} chunk(s) of {} tile row(s) ({} per product), ci {} -> co4 {}, input {}x{} read at offset {}x{}",
            s.tile.name(),
            s.th(),
            s.tw(),
            self.chunks(),
            self.chunk_rows,
            s.chunk_rows,
            s.ci,
            s.co4,
            s.hp,
            s.wp,
            s.off[0],
            s.off[1]
        )
    }

    /// The chunks' partial sums of the weight gradient `Σ x ⋆ dy` (each chunk's `dU[ξ][ci][co4]`,
    /// then `co4` f32 bias sums) from the forward's input `x` (unpadded when read in place) and
    /// the output gradient `dy`, into `partials` (at least [`Self::partials_len`] floats;
    /// `scratch` at least [`Self::scratch_len`]); returns the seconds it took. The layer's
    /// generated finish ([`super::gradw_finish`]) sums them and transforms `dU` back. `norm`:
    /// the batchnorm's coefficients, when generated normalising (`x` is then its input).
    pub(crate) fn run(
        &self,
        (x, norm): (&[f32], Option<&[f32]>),
        dy: &[f32],
        partials: &mut [f32],
        scratch: &mut [f32],
    ) -> f64 {
        let s = &self.spec;
        let Some((input, dyt, gemm)) = &self.fns else { return 0.0 };
        assert_eq!(norm.is_some(), self.norm, "coefficients exactly when generated normalising");
        assert!(norm.is_none_or(|c| c.len() >= 4 * s.csx), "coefficients too short");
        let coef = norm.map_or(0, |c| c.as_ptr() as usize);
        debug_assert!(x.len() >= s.n * s.hp * s.wp * s.csx, "x too short");
        debug_assert!(dy.len() >= s.n * s.ho * s.wo * s.cso, "dy too short");
        debug_assert!(partials.len() >= self.partials_len(), "partials too short");
        debug_assert!(scratch.len() >= self.scratch_len(), "scratch too short");
        let t = Instant::now();
        let (xp, dp) = (x.as_ptr() as usize, dy.as_ptr() as usize);
        let (co4, plen) = (s.co4, self.partial_len());
        let point_u = s.filter_point_stride();
        let (v_stride, h_stride) = (s.point_stride(s.ci4()), s.point_stride(co4));
        let v_len = s.points() * v_stride;
        let slots = SlotPool::new(&mut scratch[..self.scratch_len()], self.slot_len());
        partials[..self.partials_len()].par_chunks_mut(plen).enumerate().for_each_init(
            || slots.take(),
            |slot, (c, part)| {
                part.fill(0.0);
                let (v, yhat) = slot.split_at_mut(v_len);
                let (vp, hp, pp) = (v.as_mut_ptr(), yhat.as_mut_ptr(), part.as_mut_ptr());
                // SAFETY: the bias sums are the last `co4` floats of this chunk's partial.
                let bp = unsafe { pp.add(s.filter_len()) };
                for (r0, r1) in self.sub_chunks(c) {
                    let n_tiles = (r1 - r0) * s.tw();
                    let Some(&(_, f)) = gemm.iter().find(|(t, _)| *t == n_tiles) else { continue };
                    // SAFETY: the kernels were generated for `s` (and the products for
                    // `n_tiles` tiles), whose sizes are constants in them. The input transform
                    // reads the input rows of tile rows r0..r1, only positions inside the
                    // `n × hp × wp` input (asserted above; the others are zeros it never
                    // loads) — and, normalising, the `4·csx` coefficients (asserted) — and
                    // writes this slot's `V`; the dy
                    // transform reads the output rows of those tile rows (inside `dy`) and
                    // writes this slot's `Ŷ` (and adds into the chunk's `co4` bias sums); each product reads point ξ's `n_tiles` tiles of
                    // `V` and `Ŷ` (point strides of at least `n_tiles` tiles) and adds into
                    // point ξ's `ci × co4` floats of this chunk's partial. The slot and the
                    // partial are this task's alone.
                    unsafe {
                        input(xp as *const f32, vp, coef as *const f32, r0 as i64, r1 as i64);
                        dyt(dp as *const f32, hp, bp, r0 as i64, r1 as i64);
                        for p in 0..s.points() {
                            f(
                                vp.add(p * v_stride) as *const f32,
                                hp.add(p * h_stride) as *const f32,
                                pp.add(p * point_u),
                                0,
                                1,
                            );
                        }
                    }
                }
            },
        );
        t.elapsed().as_secs_f64()
    }

    /// The native finish the generated one replaced, as the tests' oracle: the weight gradient
    /// as the direct kernel's sums `[ci][3·3][co4]` (f64; then the `co4` bias sums when the spec
    /// has a bias) from the chunks' partial sums, added in chunk order.
    #[cfg(test)]
    pub(crate) fn finish_oracle(&self, partials: &[f32]) -> Vec<f64> {
        let (s, plen) = (&self.spec, self.partial_len());
        let mut du = vec![0.0f64; plen];
        let parts = &partials[..self.partials_len()];
        du.par_chunks_mut(256).enumerate().for_each(|(blk, d)| {
            for part in parts.chunks(plen) {
                for (dv, &p) in d.iter_mut().zip(&part[blk * 256..]) {
                    *dv += f64::from(p);
                }
            }
        });
        // The points of `dU` without the rows that pad their stride.
        let dense: Vec<f64> = du[..s.filter_len()]
            .chunks(s.filter_point_stride())
            .flat_map(|point| point[..s.ci * s.co4].iter().copied())
            .collect();
        let mut sum = inverse_filter_transform(s.tile, &dense, s.ci, s.co4);
        if s.bias {
            sum.extend_from_slice(&du[s.filter_len()..]);
        }
        sum
    }
}

/// `dg[ci][kh·3 + kw][co4] = Σ_{i,j} G[i][kh] · dU[i·α + j][ci][co4] · G[j][kw]` (the adjoint of
/// [`super::winograd::transform_filter`]), in f64, output lanes innermost. The generated finish
/// ([`super::gradw_finish`]) computes it now; this is the tests' oracle.
#[cfg(test)]
pub(crate) fn inverse_filter_transform(tile: Tile, du: &[f64], ci: usize, co4: usize) -> Vec<f64> {
    let a = tile.alpha();
    let g = tile.g();
    let mut dg = vec![0.0f64; ci * 9 * co4];
    // Input channels in parallel: each writes its own `[9][co4]` block, in the same order of
    // operations on any thread count.
    dg.par_chunks_mut((9 * co4).max(1)).enumerate().for_each(|(c, dgc)| {
        // t[kh][j] = Σ_i G[i][kh] · dU[i][j], one row of co4 lanes each
        let mut t = vec![0.0f64; 3 * a * co4];
        for i in 0..a {
            for kh in 0..3 {
                let gi = g[i * 3 + kh];
                if gi == 0.0 {
                    continue;
                }
                for j in 0..a {
                    let src = &du[((i * a + j) * ci + c) * co4..((i * a + j) * ci + c + 1) * co4];
                    let dst = &mut t[(kh * a + j) * co4..(kh * a + j + 1) * co4];
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += gi * s);
                }
            }
        }
        for kh in 0..3 {
            for kw in 0..3 {
                let dst = &mut dgc[(kh * 3 + kw) * co4..(kh * 3 + kw + 1) * co4];
                for j in 0..a {
                    let gj = g[j * 3 + kw];
                    if gj != 0.0 {
                        let src = &t[(kh * a + j) * co4..(kh * a + j + 1) * co4];
                        dst.iter_mut().zip(src).for_each(|(d, &s)| *d += gj * s);
                    }
                }
            }
        }
    });
    dg
}

#[cfg(test)]
mod tests {
    use super::super::winograd_tile::transform_filter;
    use super::*;

    /// The inverse filter transform is the adjoint of the filter transform:
    /// `⟨G g Gᵀ, dU⟩ = ⟨g, Gᵀ dU G⟩` for random `g` and `dU`.
    #[test]
    fn inverse_filter_transform_is_the_adjoint_of_the_filter_transform() {
        for tile in [Tile::F2, Tile::F4, Tile::F6] {
            let (ci, co4) = (3, 8);
            let a = tile.alpha();
            let mut seed = 7u64;
            let mut next = || {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f64 / (1u64 << 24) as f64) - 0.5
            };
            let g: Vec<f32> = (0..ci * 9 * co4).map(|_| next() as f32).collect();
            let du: Vec<f64> = (0..a * a * ci * co4).map(|_| next()).collect();
            let mut u = Vec::new();
            transform_filter(tile, &g, ci, co4, &mut u);
            let lhs: f64 = u.iter().zip(&du).map(|(&u, &d)| f64::from(u) * d).sum();
            let dg = inverse_filter_transform(tile, &du, ci, co4);
            let rhs: f64 = g.iter().zip(&dg).map(|(&g, &d)| f64::from(g) * d).sum();
            assert!((lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0), "{tile:?}: {lhs} vs {rhs}");
        }
    }
}

//! Winograd convolution F(m×m, 3×3) for 3×3 stride-1 2-D correlations (the forward pass of a
//! conv and its input gradient, which is a correlation with the flipped, transposed kernel).
//!
//! A layer's output is cut into m×m tiles, each computed from an (m+2)×(m+2) input tile:
//! `y = Aᵀ [ Σ_ci (G g Gᵀ)[ci,co] ⊙ (Bᵀ d B)[ci] ] A`. Per transform point (α² = (m+2)² of them)
//! the sum over input channels is a GEMM `M[tile][co] = V[tile][ci] · U[ci][co]`, which needs
//! α²/m² multiplies per output and channel pair instead of the direct kernel's 9 (2.25 for
//! F(4×4), 4 for F(2×2)) — that is where the speed comes from on 128-bit vectors.
//!
//! The work is done in chunks of tile rows fixed by the shapes (so results do not depend on the
//! thread count): per chunk, the input transform ([`super::winograd_emit`]) writes the chunk's
//! `V`, the direct correlation kernel — generated as a 1×1 correlation over the chunk's tiles —
//! multiplies each point's `V` by that point's `U`, and the output transform writes the chunk's
//! output rows with bias and the fused epilogue. A chunk's `V` and `M` are written and read back
//! while still in cache. The filter transform `U = G g Gᵀ` is done once per step (the weights
//! change every step) by a generated kernel straight from the f64 weights ([`super::pack`]).
//!
//! The tiles and their matrices are in [`super::winograd_tile`]; which layers run Winograd, and
//! with which tile, is [`super::winograd_choice`]'s cost model. This file holds a layer's
//! specialised form ([`WinoSpec`]: sizes, chunks, the strides of `V`, `M` and `U`), its
//! kernels and chunked run ([`WinoCall`]), and the per-task scratch ([`SlotPool`]).

use super::codegen::{Codegen, CorrFn, CorrSpec, Epilogue, FnHandle, Geometry};
use super::layout::{Layout, round4};
use super::winograd_emit::{InputFn, Normalise, OutputFn, TileSums, emit_input, emit_output};
use super::winograd_tile::Tile;
use rayon::prelude::*;

/// Floats from one point of a transformed filter `U[point][reduced][lanes]` (or of its gradient
/// `dU`) to the next: an odd number of rows of `lanes`. With `reduced` a power of two, the α²
/// points of one (channel, lanes) group — written together by the filter transform, read
/// together by the weight-gradient finish — lay 2^k rows apart and fell into the same few L1
/// sets (16 KB apart for 64→64 channels); rows stay whole, so every row of `lanes` is still one
/// output channel group (a folded batchnorm scales the rows as they are).
pub(crate) fn filter_point_stride(reduced: usize, lanes: usize) -> usize {
    (reduced | 1) * lanes
}

/// One Winograd correlation, fully specialised.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WinoSpec {
    pub tile: Tile,
    /// Samples, outputs per sample, the input's height and width.
    pub n: usize,
    pub ho: usize,
    pub wo: usize,
    pub hp: usize,
    pub wp: usize,
    /// Zero rows above and columns left of the input that the correlation slides over (its
    /// padding): tile `(t_h, t)` reads input rows from `t_h·m − off₀` and columns from
    /// `t·m − off₁`. Inputs outside `hp × wp` read as zeros inside the generated kernel, so the
    /// input is read in place, not copied into a padded buffer first.
    pub off: [i64; 2],
    /// Input channels and the input's channel stride; output lanes and the output's stride.
    pub ci: usize,
    pub csx: usize,
    pub co4: usize,
    pub cso: usize,
    /// Tile rows per chunk.
    pub chunk_rows: usize,
    pub bias: bool,
    pub epilogue: Epilogue,
}

/// Tiles per chunk the chunk size aims at, at most: the chunk's `V` and `M` (α² × tiles ×
/// channels) stay in L2.
const CHUNK_TILES: usize = 32;

/// Bytes of a chunk's `V` and `M` the chunk size aims at, at most: a quarter of a 1 MB L2, the
/// rest for the transformed filter streaming through (and the input rows and outputs the
/// transforms touch). 512 KB measured 1.7 % slower on DnCNN-17's step, 1.4 % on UNet-S's and
/// 0.8 % on U-Net-BN's (alternated runs; 1 MB slower again).
const CHUNK_BYTES: usize = 256 << 10;

impl WinoSpec {
    /// The Winograd form of the direct correlation `geo` on `n` samples, reading its (already
    /// padded) input as `geo` does; [`WinoSpec::reading`] makes it read an unpadded one.
    pub(crate) fn new(tile: Tile, geo: &Geometry, n: usize, bias: bool, epilogue: Epilogue) -> WinoSpec {
        let tw = geo.wo.div_ceil(tile.m());
        // Wide layers take fewer tiles per chunk: 32 tiles of a 64-channel F(6×6) layer are
        // 1 MB of `V` and `M` (DnCNN-17: 1.7 % faster with 14 tiles than with 28, and again
        // with 7 than with 14). Whole tile rows, the nearest count.
        let tile_bytes = tile.alpha() * tile.alpha() * (round4(geo.ci) + geo.co4) * 4;
        let chunk_tiles = (CHUNK_BYTES / tile_bytes).clamp(8, CHUNK_TILES);
        WinoSpec {
            tile,
            n,
            ho: geo.ho,
            wo: geo.wo,
            hp: geo.hp,
            wp: geo.wp,
            off: [0, 0],
            ci: geo.ci,
            csx: geo.csx,
            co4: geo.co4,
            cso: geo.cso,
            chunk_rows: ((chunk_tiles + tw / 2) / tw).min(CHUNK_TILES / tw).max(1),
            bias,
            epilogue,
        }
    }

    /// The same correlation reading `src` (its height, width and channel stride) with `off`
    /// rows and columns of zeros before it instead of a padded copy.
    pub(crate) fn reading(self, src: Layout, off: [i64; 2]) -> WinoSpec {
        WinoSpec { hp: src.h, wp: src.w, csx: src.cs, off, ..self }
    }

    /// Tile rows and columns per sample.
    pub fn th(&self) -> usize {
        self.ho.div_ceil(self.tile.m())
    }

    pub fn tw(&self) -> usize {
        self.wo.div_ceil(self.tile.m())
    }

    pub fn ci4(&self) -> usize {
        round4(self.ci)
    }

    pub fn points(&self) -> usize {
        self.tile.alpha() * self.tile.alpha()
    }

    pub fn chunk_tiles(&self) -> usize {
        self.chunk_rows * self.tw()
    }

    /// Floats from one transform point to the next in a chunk's `V` (`lanes` = `ci4`) or `M`
    /// (`co4`): the chunk's tiles × lanes, rounded up to an odd number of cache lines. A stride
    /// of an even number of lines — a power of two in the usual case, image widths and F(4×4)'s
    /// tiles per row being powers of two — puts the α² points of one tile into a few L1 sets,
    /// and their conflict misses made F(4×4) twice as slow on 128-wide 16-channel layers.
    pub fn point_stride(&self, lanes: usize) -> usize {
        let lines = (self.chunk_tiles() * lanes).div_ceil(16);
        16 * (lines | 1)
    }

    /// Tile rows of the whole batch, and chunks of them.
    pub fn tile_rows(&self) -> usize {
        self.n * self.th()
    }

    pub fn chunks(&self) -> usize {
        self.tile_rows().div_ceil(self.chunk_rows)
    }

    /// Floats of one chunk's `V` and `M`.
    fn chunk_len(&self) -> usize {
        self.points() * (self.point_stride(self.ci4()) + self.point_stride(self.co4))
    }

    /// Floats of the scratch: one chunk's `V` and `M` per task slot ([`SlotPool`]).
    pub fn scratch_len(&self) -> usize {
        task_slots(self.chunks()) * self.chunk_len()
    }

    /// Floats of the transformed filter `U[point][ci][co4]` (and of the weight gradient's
    /// partial `dU`), points [`filter_point_stride`] apart.
    pub fn filter_len(&self) -> usize {
        self.points() * self.filter_point_stride()
    }

    pub fn filter_point_stride(&self) -> usize {
        filter_point_stride(self.ci, self.co4)
    }

    /// The per-point product as a direct 1×1 correlation over one chunk's tiles.
    fn gemm_geometry(&self) -> Geometry {
        Geometry::gemm(self.chunk_tiles(), self.ci, self.ci4(), self.co4)
    }

    /// In words, for the plan and the profile.
    pub(crate) fn describe(&self) -> String {
        format!(
            "winograd {}, {}x{} tiles per sample, {} tile row(s) per chunk, ci {} -> co4 {}, input {}x{} read at offset {}x{}",
            self.tile.name(),
            self.th(),
            self.tw(),
            self.chunk_rows,
            self.ci,
            self.co4,
            self.hp,
            self.wp,
            self.off[0],
            self.off[1]
        )
    }
}

/// Where an output transform's variant with [`TileSums`] writes its sums, and what it reads
/// for them: the shift (`co4` lanes) and, for [`TileSums::WithOperand`], `q` (laid out as `y`).
pub(crate) struct SumsOut<'a> {
    pub sums: &'a mut [f32],
    pub shift: &'a [f32],
    pub q: Option<&'a [f32]>,
}

/// Which output transform a run stores with.
pub(crate) enum Output<'a> {
    /// The layer's own (its bias and epilogue).
    Plain,
    /// The variant summing per tile ([`TileSums`]).
    Sums(SumsOut<'a>),
    /// The variant with the folded batchnorm's activation as its epilogue.
    Folded,
}

/// The variants of a [`WinoCall`]'s kernels generated beside its own.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Variants {
    /// An output transform summing per tile ([`Output::Sums`]).
    pub sums: Option<TileSums>,
    /// An output transform with this epilogue, a folded batchnorm's activation
    /// ([`Output::Folded`]; `None` for no variant).
    pub folded: Epilogue,
    /// An input transform normalising each input as it loads it (training, the batchnorm before
    /// the layer: [`WinoCall::run`]'s `norm`).
    pub norm_input: Option<Normalise>,
}

/// The generated functions of a [`WinoCall`].
#[derive(Clone, Copy)]
struct Linked {
    input: InputFn,
    input_norm: Option<InputFn>,
    gemm: CorrFn,
    plain: OutputFn,
    sums: Option<OutputFn>,
    folded: Option<OutputFn>,
}

/// A Winograd correlation's three kernels, linked after the module is finished.
pub(crate) struct WinoCall {
    pub spec: WinoSpec,
    input: FnHandle,
    /// The input transform normalising as it loads ([`Variants::norm_input`]).
    input_norm: Option<FnHandle>,
    gemm: FnHandle,
    output: FnHandle,
    /// The output transform that also sums its values per tile (a batchnorm's statistics in
    /// training, [`super::norm::FusedStats`]), when the layer feeds a batchnorm or produces its
    /// output gradient.
    output_stats: Option<FnHandle>,
    sums_kind: Option<TileSums>,
    /// The output transform applying the epilogue of the activation after a batchnorm folded
    /// into the layer at inference ([`Output::Folded`]).
    output_folded: Option<FnHandle>,
    fns: Option<Linked>,
    /// The plan's (transient) scratch holding every chunk's `V` and `M`.
    pub scratch: usize,
}

impl WinoCall {
    /// Generates the kernels of `spec` and the `variants`.
    pub(crate) fn generate(
        cg: &mut Codegen,
        spec: WinoSpec,
        gemm_blocking: super::Blocking,
        scratch: usize,
        variants: Variants,
    ) -> Result<WinoCall, String> {
        let Variants { sums: stats, folded, norm_input } = variants;
        let input = input_transform(cg, "winograd input", &spec, None)?;
        let input_norm =
            norm_input.map(|nm| input_transform(cg, "winograd input", &spec, Some(nm))).transpose()?;
        let gemm_spec = CorrSpec {
            geo: spec.gemm_geometry(),
            bias: false,
            epilogue: Epilogue::None,
            pad: [0, 0],
            shuffle: None,
        };
        let gemm = cg.corr(&gemm_spec, gemm_blocking)?;
        let output = cg.cached(format!("winograd output {spec:?}"), |cg| {
            cg.custom(7, |b, p, fma| emit_output(b, p, &spec, fma, None))
        })?;
        let output_stats = stats
            .map(|kind| {
                cg.cached(format!("winograd output with sums {kind:?} {spec:?}"), |cg| {
                    cg.custom(7, |b, p, fma| emit_output(b, p, &spec, fma, Some(kind)))
                })
            })
            .transpose()?;
        let output_folded = (folded != Epilogue::None)
            .then(|| {
                let spec = WinoSpec { epilogue: folded, ..spec.clone() };
                cg.cached(format!("winograd output {spec:?}"), |cg| {
                    cg.custom(7, |b, p, fma| emit_output(b, p, &spec, fma, None))
                })
            })
            .transpose()?;
        Ok(WinoCall {
            spec,
            input,
            input_norm,
            gemm,
            output,
            output_stats,
            sums_kind: stats,
            output_folded,
            fns: None,
            scratch,
        })
    }

    /// Floats of the per-tile sums the statistics variant writes: `[Σ | Σ²]` per tile.
    pub fn sums_len(&self) -> usize {
        self.spec.tile_rows() * self.spec.tw() * 2 * self.spec.co4
    }

    /// Whether the statistics variant was generated.
    pub fn gathers_stats(&self) -> bool {
        self.output_stats.is_some()
    }

    /// Takes the generated functions' addresses once the module is finished.
    pub(crate) fn link(&mut self, cg: &Codegen) {
        // SAFETY: each function was generated by `generate` with exactly these signatures.
        let output = |h: FnHandle| unsafe { std::mem::transmute::<*const u8, OutputFn>(cg.fn_address(h)) };
        let input = |h: FnHandle| unsafe { std::mem::transmute::<*const u8, InputFn>(cg.fn_address(h)) };
        self.fns = Some(Linked {
            input: input(self.input),
            input_norm: self.input_norm.map(input),
            gemm: cg.corr_fn(self.gemm),
            plain: output(self.output),
            sums: self.output_stats.map(output),
            folded: self.output_folded.map(output),
        });
    }

    /// `y = act(x ⋆ w + b)` with `u` the transformed filter ([`super::pack`]); `mask` as for
    /// the direct kernel's mask epilogues; `scratch` at least `spec.scratch_len()` floats;
    /// `output` which output transform stores (a variant must have been generated). With
    /// `norm` (the batchnorm's coefficients), `x` is the batchnorm's input, normalised as it is
    /// loaded ([`Variants::norm_input`], which must have been generated).
    pub(crate) fn run(
        &self,
        (x, norm): (&[f32], Option<&[f32]>),
        u: &[f32],
        bias: &[f32],
        (y, mask): (&mut [f32], &[f32]),
        scratch: &mut [f32],
        output: Output,
    ) {
        let Some(Linked { input, input_norm, gemm, plain, sums, folded }) = self.fns else { return };
        let s = &self.spec;
        let (input, coef) = match norm {
            Some(coef) => {
                let f = input_norm.expect("the normalising input transform is generated");
                assert!(coef.len() >= 4 * s.csx, "coefficients too short");
                (f, coef.as_ptr() as usize)
            }
            None => (input, 0),
        };
        let (output, sums, shift, q) = match output {
            Output::Plain => (plain, 0, 0, 0),
            Output::Folded => (folded.expect("the folded variant is generated"), 0, 0, 0),
            Output::Sums(out) => {
                let f = sums.expect("the sums variant is generated");
                assert!(out.sums.len() >= self.sums_len() && out.shift.len() >= s.co4, "sums too short");
                let q = match (self.sums_kind, out.q) {
                    (Some(TileSums::WithOperand { mask }), Some(q)) => {
                        assert!(q.len() >= s.n * s.ho * s.wo * s.cso, "q too short");
                        // The mask's coefficients: four blocks of lanes from the shift on.
                        assert!(mask.is_none_or(|nm| out.shift.len() >= 4 * nm.cs), "coefficients too short");
                        q.as_ptr() as usize
                    }
                    (Some(TileSums::WithOperand { .. }), None) => panic!("the sums with an operand need q"),
                    _ => 0,
                };
                (f, out.sums.as_mut_ptr() as usize, out.shift.as_ptr() as usize, q)
            }
        };
        let mask_from_q =
            matches!(self.sums_kind, Some(TileSums::WithOperand { mask: Some(_) })) && sums != 0;
        let masked = matches!(s.epilogue, Epilogue::ReluMask | Epilogue::LeakyMask(_)) && !mask_from_q;
        debug_assert!(x.len() >= s.n * s.hp * s.wp * s.csx, "x too short");
        debug_assert!(u.len() >= s.filter_len(), "transformed filter too short");
        debug_assert!(!s.bias || bias.len() >= s.co4, "bias too short");
        debug_assert!(y.len() >= s.n * s.ho * s.wo * s.cso, "y too short");
        debug_assert!(!masked || mask.len() >= s.n * s.ho * s.wo * s.cso, "mask too short");
        debug_assert!(scratch.len() >= s.scratch_len(), "scratch too short");
        let (xp, up, bp, mp, yp) = (
            x.as_ptr() as usize,
            u.as_ptr() as usize,
            bias.as_ptr() as usize,
            mask.as_ptr() as usize,
            y.as_mut_ptr() as usize,
        );
        let (co4, u_stride) = (s.co4, s.filter_point_stride());
        let (v_stride, m_stride) = (s.point_stride(s.ci4()), s.point_stride(co4));
        let v_len = s.points() * v_stride;
        let slots = SlotPool::new(&mut scratch[..s.scratch_len()], s.chunk_len());
        (0..s.chunks()).into_par_iter().for_each_init(
            || slots.take(),
            |chunk, c| {
                let r0 = c * s.chunk_rows;
                let r1 = ((c + 1) * s.chunk_rows).min(s.tile_rows());
                let (v, m) = chunk.split_at_mut(v_len);
                let (vp, mmp) = (v.as_mut_ptr(), m.as_mut_ptr());
                // SAFETY: the kernels were generated for `s`, whose sizes are constants in them.
                // The input transform reads the input rows of tile rows r0..r1, only positions
                // inside the `n × hp × wp` input (asserted above; the others are zeros it never
                // loads) — and, normalising, the `4·csx` coefficients (asserted) — and writes
                // this chunk's `V`; the products read `V` and point p's
                // `ci × co4` floats of `u` and write this chunk's `M`; the output transform reads
                // `M`, the bias and the mask (and the shift) and writes only the output rows (and
                // the tiles' sums, in bounds: asserted) of tile rows r0..r1, which no other chunk
                // writes. `V` and `M` are this task's own slot of `scratch` (or its own
                // allocation).
                unsafe {
                    input(xp as *const f32, vp, coef as *const f32, r0 as i64, r1 as i64);
                    for p in 0..s.points() {
                        gemm(
                            vp.add(p * v_stride) as *const f32,
                            (up as *const f32).add(p * u_stride),
                            std::ptr::null(),
                            mmp.add(p * m_stride),
                            std::ptr::null(),
                            0,
                            1,
                        );
                    }
                    output(
                        mmp as *const f32,
                        bp as *const f32,
                        yp as *mut f32,
                        mp as *const f32,
                        sums as *mut f32,
                        shift as *const f32,
                        q as *const f32,
                        r0 as i64,
                        r1 as i64,
                    );
                }
            },
        );
    }
}

/// The input transform of `spec` (normalising with `norm`), shared by every layer and direction
/// that reads inputs of one shape (it depends on neither the output channels nor the epilogue).
pub(crate) fn input_transform(
    cg: &mut Codegen,
    name: &str,
    spec: &WinoSpec,
    norm: Option<Normalise>,
) -> Result<FnHandle, String> {
    let key = WinoSpec { co4: 0, cso: 0, bias: false, epilogue: Epilogue::None, ..spec.clone() };
    cg.cached(format!("{name} {key:?} {norm:?}"), |cg| {
        cg.custom(3, |b, p, fma| emit_input(b, p, spec, fma, norm))
    })
}

/// At most this many tasks hold a Winograd layer's per-task scratch at once without
/// allocating (more threads than this allocate their scratch per task: correct, slower).
/// Fixed, so that the memory plan does not depend on the machine.
const TASK_SLOTS: usize = 8;

/// Scratch slots for `work` units of parallel work: one per task, at most [`TASK_SLOTS`].
pub(crate) fn task_slots(work: usize) -> usize {
    work.clamp(1, TASK_SLOTS)
}

/// A stack of per-task scratch slots cut from one buffer: a parallel loop takes one per task
/// (`for_each_init(|| pool.take(), …)`) and gives it back when the task ends, so the scratch is
/// as large as the tasks running at once, not the work. Which slot a chunk gets does not
/// matter: each chunk writes its part of the slot before reading it.
pub(crate) struct SlotPool<'a> {
    free: std::sync::Mutex<Vec<&'a mut [f32]>>,
    len: usize,
}

impl<'a> SlotPool<'a> {
    pub(crate) fn new(scratch: &'a mut [f32], len: usize) -> SlotPool<'a> {
        SlotPool { free: std::sync::Mutex::new(scratch.chunks_exact_mut(len.max(1)).collect()), len }
    }

    /// A free slot, or a new allocation when every slot is taken.
    pub(crate) fn take(&self) -> Slot<'_, 'a> {
        let buf = self.free.lock().ok().and_then(|mut f| f.pop());
        let owned = if buf.is_none() { vec![0.0; self.len] } else { Vec::new() };
        Slot { pool: self, buf, owned }
    }
}

/// One task's scratch; back to its pool on drop.
pub(crate) struct Slot<'p, 'a> {
    pool: &'p SlotPool<'a>,
    buf: Option<&'a mut [f32]>,
    owned: Vec<f32>,
}

impl std::ops::Deref for Slot<'_, '_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.buf.as_deref().unwrap_or(&self.owned)
    }
}

impl std::ops::DerefMut for Slot<'_, '_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self.buf.as_deref_mut() {
            Some(b) => b,
            None => &mut self.owned,
        }
    }
}

impl Drop for Slot<'_, '_> {
    fn drop(&mut self) {
        if let (Some(b), Ok(mut free)) = (self.buf.take(), self.pool.free.lock()) {
            free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::codegen::{CORR_BLOCKING, OptLevel};
    use crate::jit::winograd_tile::transform_filter;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A 3×3 layer: `n` samples of `h × w × ci` (channel stride `csx`) to `ho × wo × co4`, the
    /// input shifted by `off` (its zero padding; negative crops).
    struct Layer {
        n: usize,
        h: usize,
        w: usize,
        ci: usize,
        csx: usize,
        co4: usize,
        ho: usize,
        wo: usize,
        off: [i64; 2],
    }

    impl Layer {
        fn geometry(&self, hp: usize, wp: usize, csx: usize) -> Geometry {
            let (ho, wo, ci, co4) = (self.ho, self.wo, self.ci, self.co4);
            Geometry { ho, wo, hp, wp, k: [3, 3], s: [1, 1], d: [1, 1], ci, csx, co4, cso: co4 }
        }

        /// Runs `spec` on `x` with the packed weights and bias; the output.
        fn run(&self, spec: WinoSpec, x: &[f32], packed: &[f32], bias: &[f32]) -> Vec<f32> {
            self.run_with(spec, (x, None), packed, bias, None)
        }

        /// [`Self::run`], with `sums` (and the shift) when the statistics variant runs, and
        /// the normalising input transform with its coefficients when `norm` is given.
        fn run_with(
            &self,
            spec: WinoSpec,
            (x, norm): (&[f32], Option<(Normalise, &[f32])>),
            packed: &[f32],
            bias: &[f32],
            sums: Option<(&mut [f32], &[f32])>,
        ) -> Vec<f32> {
            let mut cg = Codegen::new(OptLevel::None).expect("host");
            let variants = Variants {
                sums: sums.is_some().then_some(TileSums::Moments),
                norm_input: norm.map(|(nm, _)| nm),
                ..Variants::default()
            };
            let mut call =
                WinoCall::generate(&mut cg, spec.clone(), CORR_BLOCKING, 0, variants).expect("generates");
            cg.finish().expect("finishes");
            call.link(&cg);
            let mut dense = vec![];
            transform_filter(spec.tile, packed, self.ci, self.co4, &mut dense);
            // Its points at the layout's stride (the padding rows are never read: NaN).
            let (len, stride) = (self.ci * self.co4, spec.filter_point_stride());
            let mut u = vec![f32::NAN; spec.filter_len()];
            for (dst, src) in u.chunks_mut(stride).zip(dense.chunks(len)) {
                dst[..len].copy_from_slice(src);
            }
            let mut y = vec![f32::NAN; self.n * self.ho * self.wo * self.co4];
            let mut scratch = vec![f32::NAN; spec.scratch_len()];
            let output = match sums {
                Some((sums, shift)) => Output::Sums(SumsOut { sums, shift, q: None }),
                None => Output::Plain,
            };
            call.run((x, norm.map(|(_, coef)| coef)), &u, bias, (&mut y, &[]), &mut scratch, output);
            y
        }

        /// The correlation in f64, straight from its definition (zeros outside the input).
        fn reference(&self, x: &[f32], packed: &[f32], bias: &[f32]) -> Vec<f64> {
            let mut y = vec![0.0; self.n * self.ho * self.wo * self.co4];
            for n in 0..self.n {
                for oh in 0..self.ho {
                    for ow in 0..self.wo {
                        for co in 0..self.co4 {
                            let mut s = f64::from(bias[co]);
                            for ci in 0..self.ci {
                                for tap in 0..9 {
                                    let ih = (oh + tap / 3) as i64 - self.off[0];
                                    let iw = (ow + tap % 3) as i64 - self.off[1];
                                    if ih < 0 || iw < 0 || ih >= self.h as i64 || iw >= self.w as i64 {
                                        continue;
                                    }
                                    let xi =
                                        ((n * self.h + ih as usize) * self.w + iw as usize) * self.csx + ci;
                                    let wi = (ci * 9 + tap) * self.co4 + co;
                                    s += f64::from(x[xi]) * f64::from(packed[wi]);
                                }
                            }
                            y[((n * self.ho + oh) * self.wo + ow) * self.co4 + co] = s;
                        }
                    }
                }
            }
            y
        }
    }

    /// The input transform reading the unpadded input in place gives the same bits as reading a
    /// zero-padded copy (the zeros it skips add nothing), and both match the correlation's
    /// definition within the stated error (1e-4 of the output's scale): odd sizes, channels not
    /// a multiple of 4 (the pad lanes hold garbage), padding 0, 1 and 2 and a crop, outputs
    /// past the last whole tile, several samples.
    #[test]
    fn reading_the_input_in_place_matches_a_padded_copy_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let cases = [
            (2, 5, 7, 3, 1),
            (1, 9, 4, 5, 0),
            (3, 6, 11, 8, 2),
            (2, 3, 3, 1, 2),
            (1, 13, 10, 6, 1),
            (2, 8, 9, 4, -1),
        ];
        for tile in [Tile::F4, Tile::F2, Tile::F6] {
            for &(n, h, w, ci, pad) in &cases {
                let csx = round4(ci);
                let (ho, wo) = ((h as i64 + 2 * pad - 2) as usize, (w as i64 + 2 * pad - 2) as usize);
                let layer = Layer { n, h, w, ci, csx, co4: 8, ho, wo, off: [pad, pad] };
                // Pad lanes hold garbage: they must never be read into a sum.
                let x: Vec<f32> = (0..n * h * w * csx)
                    .map(|i| if i % csx < ci { rng.random_range(-1.0..1.0) } else { f32::NAN })
                    .collect();
                let packed: Vec<f32> = (0..ci * 9 * 8).map(|_| rng.random_range(-1.0..1.0)).collect();
                let bias: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0..1.0)).collect();
                let src = Layout { n, h, w, c: ci, cs: csx };
                let geo = layer.geometry(h, w, csx);
                let in_place = layer.run(
                    WinoSpec::new(tile, &geo, n, true, Epilogue::None).reading(src, layer.off),
                    &x,
                    &packed,
                    &bias,
                );
                let reference = layer.reference(&x, &packed, &bias);
                let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let err = in_place
                    .iter()
                    .zip(&reference)
                    .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
                assert!(
                    err <= 1e-4 * scale,
                    "{tile:?} {n}x{h}x{w}x{ci} pad {pad}: error {:.2e} of scale",
                    err / scale
                );
                if pad < 0 {
                    continue;
                }
                // The same layer on a zero-padded copy (zeros in the pad lanes too), read from 0.
                let p = pad as usize;
                let (hp, wp) = (h + 2 * p, w + 2 * p);
                let mut padded = vec![0.0f32; n * hp * wp * csx];
                for s in 0..n {
                    for r in 0..h {
                        for c in 0..w {
                            for k in 0..ci {
                                padded[((s * hp + r + p) * wp + c + p) * csx + k] =
                                    x[((s * h + r) * w + c) * csx + k];
                            }
                        }
                    }
                }
                let copy = layer.run(
                    WinoSpec::new(tile, &layer.geometry(hp, wp, csx), n, true, Epilogue::None),
                    &padded,
                    &packed,
                    &bias,
                );
                let differ = in_place.iter().zip(&copy).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                assert_eq!(differ, 0, "{tile:?} {n}x{h}x{w}x{ci} pad {pad}: {differ} outputs differ");
            }
        }
    }

    /// The output transform's statistics variant stores the same bits as the plain one, and
    /// each tile's sums of `y − s` and `(y − s)²` are those of the outputs it stored (summed
    /// in f64 here; f32 sums of at most 36 values agree within 1e-5 relative), for every tile
    /// size, partial tiles at the right and bottom edges, several samples and channels past
    /// the layer's (pad lanes: their sums are never read, so not checked).
    #[test]
    fn the_statistics_variant_sums_each_tile_of_what_it_stores() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for tile in [Tile::F2, Tile::F4, Tile::F6] {
            for &(n, h, w) in &[(2, 9, 11), (1, 12, 12), (3, 5, 7)] {
                let (ci, co4) = (3, 8);
                let layer = Layer { n, h, w, ci, csx: 4, co4, ho: h, wo: w, off: [1, 1] };
                let x: Vec<f32> = (0..n * h * w * 4).map(|_| rng.random_range(-1.0..1.0)).collect();
                let packed: Vec<f32> = (0..ci * 9 * co4).map(|_| rng.random_range(-1.0..1.0)).collect();
                let bias: Vec<f32> = (0..co4).map(|_| rng.random_range(2.0..3.0)).collect();
                let shift: Vec<f32> = (0..co4).map(|k| 2.0 + 0.1 * k as f32).collect();
                let src = Layout { n, h, w, c: ci, cs: 4 };
                let spec = WinoSpec::new(tile, &layer.geometry(h, w, 4), n, true, Epilogue::None)
                    .reading(src, [1, 1]);
                let (th, tw, m) = (spec.th(), spec.tw(), tile.m());
                let mut sums = vec![f32::NAN; spec.tile_rows() * tw * 2 * co4];
                let y = layer.run_with(spec.clone(), (&x, None), &packed, &bias, Some((&mut sums, &shift)));
                let plain = layer.run(spec, &x, &packed, &bias);
                assert!(
                    y.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{tile:?}: outputs differ"
                );
                for (t, got) in sums.chunks(2 * co4).enumerate() {
                    let (r, col) = (t / tw, t % tw);
                    let (sample, tr) = (r / th, r % th);
                    for k in 0..co4 {
                        let (mut s1, mut s2, mut scale) = (0.0f64, 0.0f64, 0.0f64);
                        for oh in tr * m..((tr + 1) * m).min(h) {
                            for ow in col * m..((col + 1) * m).min(w) {
                                let d = f64::from(y[((sample * h + oh) * w + ow) * co4 + k])
                                    - f64::from(shift[k]);
                                (s1, s2, scale) = (s1 + d, s2 + d * d, scale + d.abs());
                            }
                        }
                        let (g1, g2) = (f64::from(got[k]), f64::from(got[co4 + k]));
                        assert!(
                            (g1 - s1).abs() <= 1e-5 * scale,
                            "{tile:?} tile {t} lane {k}: Σ {g1} vs {s1}"
                        );
                        assert!((g2 - s2).abs() <= 1e-5 * s2, "{tile:?} tile {t} lane {k}: Σ² {g2} vs {s2}");
                    }
                }
            }
        }
    }

    /// The normalising input transform on a batchnorm's input gives the plain transform's
    /// outputs on the normalised, activated input `act((x − shift)·scale + d)` (computed here
    /// in f64): the zeros around the input stay zeros (with `d` ≠ 0, normalising them would be
    /// far off), for every tile, relu, leaky relu and none, padding 1 and 2, edge tiles.
    #[test]
    fn the_normalising_input_transform_reads_the_normalised_input() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for tile in [Tile::F2, Tile::F4, Tile::F6] {
            for (act, pad) in [(Epilogue::Relu, 1), (Epilogue::LeakyRelu(0.2), 2), (Epilogue::None, 1)] {
                let (n, h, w, ci, cs) = (2, 9, 7, 6, 8);
                let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
                let layer = Layer { n, h, w, ci, csx: cs, co4: 8, ho, wo, off: [pad as i64; 2] };
                let x: Vec<f32> = (0..n * h * w * cs).map(|_| rng.random_range(-2.0..4.0)).collect();
                // `[shift | scale | c | d]` lanes, zeros past the channels. A normalised zero,
                // `−shift·scale + d`, is positive: normalising the padding would show.
                let mut coef = vec![0.0f32; 4 * cs];
                for k in 0..ci {
                    coef[k] = rng.random_range(-1.5..-0.5);
                    coef[cs + k] = rng.random_range(0.5..2.0);
                    coef[3 * cs + k] = rng.random_range(0.1..1.0);
                }
                let normalised: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let k = i % cs;
                        let r = (f64::from(v) - f64::from(coef[k])) * f64::from(coef[cs + k])
                            + f64::from(coef[3 * cs + k]);
                        (match act {
                            Epilogue::Relu => r.max(0.0),
                            Epilogue::LeakyRelu(s) => r.max(f64::from(s) * r),
                            _ => r,
                        }) as f32
                    })
                    .collect();
                let packed: Vec<f32> = (0..ci * 9 * 8).map(|_| rng.random_range(-1.0..1.0)).collect();
                let bias: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0..1.0)).collect();
                let src = Layout { n, h, w, c: ci, cs };
                let spec = WinoSpec::new(tile, &layer.geometry(h, w, cs), n, true, Epilogue::None)
                    .reading(src, layer.off);
                let nm = Normalise { cs, act };
                let fused = layer.run_with(spec.clone(), (&x, Some((nm, &coef))), &packed, &bias, None);
                let plain = layer.run(spec, &normalised, &packed, &bias);
                let scale = plain.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = fused.iter().zip(&plain).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    err <= 1e-5 * scale,
                    "{tile:?} {act:?} pad {pad}: error {:.2e} of scale",
                    err / scale
                );
            }
        }
    }
}

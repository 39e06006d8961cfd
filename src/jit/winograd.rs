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
//! The matrices are Lavin & Gray's (interpolation points 0, ±1, ±2, ∞ for F(4×4));
//! `scripts/winograd_matrices.py` checks them against the correlation in numpy.

use super::codegen::{Codegen, CorrFn, CorrSpec, Epilogue, FnHandle, Geometry};
use super::layout::{Layout, round4};
use super::winograd_emit::{InputFn, OutputFn, emit_input, emit_output};
use rayon::prelude::*;

/// Which algorithm 3×3 stride-1 2-D correlations use (`JitOptions::conv`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// The direct correlation kernel everywhere.
    Direct,
    /// Winograd F(4×4, 3×3) on every eligible correlation.
    Winograd,
    /// Winograd F(2×2, 3×3) on every eligible correlation.
    Winograd2,
    /// Winograd F(6×6, 3×3) on every eligible correlation.
    Winograd6,
    /// Per correlation, whichever the cost model ([`choose`]) predicts faster.
    #[default]
    Auto,
}

impl ConvAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Direct => "direct",
            ConvAlgorithm::Winograd => "winograd",
            ConvAlgorithm::Winograd2 => "winograd2",
            ConvAlgorithm::Winograd6 => "winograd6",
            ConvAlgorithm::Auto => "auto",
        }
    }

    pub fn parse(text: &str) -> Result<ConvAlgorithm, String> {
        [
            ConvAlgorithm::Direct,
            ConvAlgorithm::Winograd,
            ConvAlgorithm::Winograd2,
            ConvAlgorithm::Winograd6,
            ConvAlgorithm::Auto,
        ]
        .into_iter()
        .find(|a| a.name() == text)
        .ok_or_else(|| {
            format!("convolution algorithm `{text}`: expected direct, winograd, winograd2, winograd6 or auto")
        })
    }
}

/// The output tile size m of F(m×m, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
    F6,
}

// F(6×6, 3×3) at the points 0, ±1, ±2, ±1/2 and ∞ (Lavin & Gray's construction; checked
// against direct correlation in f64 to 4e-14 by the test below).
#[rustfmt::skip]
const F6_BT: [f64; 64] = [
    1.0, 0.0, -21.0 / 4.0, 0.0, 21.0 / 4.0, 0.0, -1.0, 0.0,
    0.0, 1.0, 1.0, -17.0 / 4.0, -17.0 / 4.0, 1.0, 1.0, 0.0,
    0.0, -1.0, 1.0, 17.0 / 4.0, -17.0 / 4.0, -1.0, 1.0, 0.0,
    0.0, 0.5, 0.25, -2.5, -1.25, 2.0, 1.0, 0.0,
    0.0, -0.5, 0.25, 2.5, -1.25, -2.0, 1.0, 0.0,
    0.0, 2.0, 4.0, -2.5, -5.0, 0.5, 1.0, 0.0,
    0.0, -2.0, 4.0, 2.5, -5.0, -0.5, 1.0, 0.0,
    0.0, -1.0, 0.0, 21.0 / 4.0, 0.0, -21.0 / 4.0, 0.0, 1.0,
];
#[rustfmt::skip]
const F6_G: [f64; 24] = [
    1.0, 0.0, 0.0,
    -2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0,
    -2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0,
    1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0,
    1.0 / 90.0, -1.0 / 45.0, 2.0 / 45.0,
    32.0 / 45.0, 16.0 / 45.0, 8.0 / 45.0,
    32.0 / 45.0, -16.0 / 45.0, 8.0 / 45.0,
    0.0, 0.0, 1.0,
];
#[rustfmt::skip]
const F6_AT: [f64; 48] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
    0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0,
    0.0, 1.0, 1.0, 4.0, 4.0, 0.25, 0.25, 0.0,
    0.0, 1.0, -1.0, 8.0, -8.0, 0.125, -0.125, 0.0,
    0.0, 1.0, 1.0, 16.0, 16.0, 1.0 / 16.0, 1.0 / 16.0, 0.0,
    0.0, 1.0, -1.0, 32.0, -32.0, 1.0 / 32.0, -1.0 / 32.0, 1.0,
];

#[rustfmt::skip]
const F2_BT: [f64; 16] = [
    1.0, 0.0, -1.0, 0.0,
    0.0, 1.0, 1.0, 0.0,
    0.0, -1.0, 1.0, 0.0,
    0.0, 1.0, 0.0, -1.0,
];
#[rustfmt::skip]
const F2_G: [f64; 12] = [
    1.0, 0.0, 0.0,
    0.5, 0.5, 0.5,
    0.5, -0.5, 0.5,
    0.0, 0.0, 1.0,
];
#[rustfmt::skip]
const F2_AT: [f64; 8] = [
    1.0, 1.0, 1.0, 0.0,
    0.0, 1.0, -1.0, -1.0,
];
#[rustfmt::skip]
const F4_BT: [f64; 36] = [
    4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
    0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
    0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
    0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
    0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
    0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
];
#[rustfmt::skip]
const F4_G: [f64; 18] = [
    1.0 / 4.0, 0.0, 0.0,
    -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
    -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
    1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
    1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
    0.0, 0.0, 1.0,
];
#[rustfmt::skip]
const F4_AT: [f64; 24] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
    0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
    0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
    0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
];

impl Tile {
    /// Outputs per tile side.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
            Tile::F6 => 6,
        }
    }

    /// Inputs per tile side, m + 2; the transform has α² points.
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    pub fn name(self) -> &'static str {
        match self {
            Tile::F2 => "F(2x2, 3x3)",
            Tile::F4 => "F(4x4, 3x3)",
            Tile::F6 => "F(6x6, 3x3)",
        }
    }

    /// Bᵀ (α × α, row-major).
    pub(crate) fn bt(self) -> &'static [f64] {
        match self {
            Tile::F2 => &F2_BT,
            Tile::F4 => &F4_BT,
            Tile::F6 => &F6_BT,
        }
    }

    /// G (α × 3).
    pub(crate) fn g(self) -> &'static [f64] {
        match self {
            Tile::F2 => &F2_G,
            Tile::F4 => &F4_G,
            Tile::F6 => &F6_G,
        }
    }

    /// Aᵀ (m × α).
    pub(crate) fn at(self) -> &'static [f64] {
        match self {
            Tile::F2 => &F2_AT,
            Tile::F4 => &F4_AT,
            Tile::F6 => &F6_AT,
        }
    }

    /// Vector operations of the input transform per tile and 4 channels, and of the output
    /// transform (loads and stores included, and those of the stage between the two passes of
    /// `winograd_emit`): the cost model's transform terms.
    fn transform_ops(self) -> (usize, usize) {
        let a = self.alpha();
        let m = self.m();
        // Each pass forms one line's combinations per line: α lines of Bᵀ's α rows twice; α
        // lines of Aᵀ's m rows, then m lines of them.
        let bt = super::winograd_emit::combos_ops(self.bt(), a, a);
        let at = super::winograd_emit::combos_ops(self.at(), a, m);
        let input = 2 * a * bt + 4 * a * a;
        let output = (a + m) * at + a * a + 2 * a * m + 3 * m * m;
        (input, output)
    }
}

/// The relative cost of a transform's vector operation against one multiply-add of the GEMM
/// (the transforms stream `V` and `M` through memory, the GEMM works from registers).
/// Calibrated on `bench --profile` per-layer times of every 3×3 layer of UNet-S, DnCNN-17,
/// U-Net-BN and conv16 under each forced algorithm (release, 2 threads, min of 2×4 steps;
/// `scripts/calibrate_winograd.py`, docs/jit.md): from 1.5 to 2.5 the model's picks lose 1.0 ms
/// forward and 1.9 ms backward against each layer's fastest algorithm, summed over all of them;
/// 1.0 loses 0.9 and 2.7 (it moves one-output-channel layers to Winograd, slower backward).
/// Layers with one input channel stay direct.
const TRANSFORM_COST: f64 = 2.0;
/// A Winograd layer must be predicted this much cheaper than the direct kernel to be chosen
/// (the model ignores the chunk loop and the edge tiles).
const MARGIN: f64 = 1.15;

/// Floats from one point of a transformed filter `U[point][reduced][lanes]` (or of its gradient
/// `dU`) to the next: an odd number of rows of `lanes`. With `reduced` a power of two, the α²
/// points of one (channel, lanes) group — written together by the filter transform, read
/// together by the weight-gradient finish — lay 2^k rows apart and fell into the same few L1
/// sets (16 KB apart for 64→64 channels); rows stay whole, so every row of `lanes` is still one
/// output channel group (a folded batchnorm scales the rows as they are).
pub(crate) fn filter_point_stride(reduced: usize, lanes: usize) -> usize {
    (reduced | 1) * lanes
}

/// Whether a correlation can run as Winograd: 3×3 taps, stride 1, no dilation, a 2-D layer.
pub(crate) fn eligible(geo: &Geometry) -> bool {
    geo.k == [3, 3] && geo.s == [1, 1] && geo.d == [1, 1] && geo.ho > 1
}

/// Predicted cost per output position of the direct kernel and of `tile`, in GEMM
/// multiply-adds of 4 lanes: the direct kernel does 9·ci·co4/4 of them, Winograd α²/m² as many
/// per tap-free product plus its transforms.
pub(crate) fn cost(geo: &Geometry, tile: Option<Tile>) -> f64 {
    let (ci, co4) = (geo.ci as f64, geo.co4 as f64);
    let Some(t) = tile else { return 9.0 * ci * co4 / 4.0 };
    let (m, a) = (t.m() as f64, t.alpha() as f64);
    let (input, output) = t.transform_ops();
    // Edge tiles compute whole tiles for partial outputs.
    let waste = (geo.ho.div_ceil(t.m()) * geo.wo.div_ceil(t.m())) as f64 * m * m / (geo.ho * geo.wo) as f64;
    let per_tile = a * a * ci * co4 / 4.0
        + TRANSFORM_COST * (input as f64 * round4(geo.ci) as f64 / 4.0 + output as f64 * co4 / 4.0);
    waste * per_tile / (m * m)
}

/// The algorithm of one correlation under `algo`: `None` is the direct kernel.
pub(crate) fn choose(algo: ConvAlgorithm, geo: &Geometry) -> Option<Tile> {
    if !eligible(geo) {
        return None;
    }
    match algo {
        ConvAlgorithm::Direct => None,
        ConvAlgorithm::Winograd => Some(Tile::F4),
        ConvAlgorithm::Winograd2 => Some(Tile::F2),
        ConvAlgorithm::Winograd6 => Some(Tile::F6),
        ConvAlgorithm::Auto => {
            let direct = cost(geo, None);
            [Tile::F4, Tile::F2, Tile::F6]
                .into_iter()
                .map(|t| (t, cost(geo, Some(t))))
                .filter(|&(_, c)| c * MARGIN < direct)
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(t, _)| t)
        }
    }
}

/// A Winograd weight gradient must be predicted this much cheaper than the direct
/// weight-gradient kernel to be chosen.
const GRADW_MARGIN: f64 = 1.15;

/// The cost of adding one partial-sum element (a scalar f32 → f64 addition) relative to a GEMM
/// multiply-add of 4 lanes: an estimate, not calibrated (it matters only for small images,
/// where a chunk holds few positions).
const PARTIAL_SUM_COST: f64 = 1.0;

/// Tiles per Winograd weight-gradient chunk (`winograd_gradw`): about the direct kernel's
/// 512 positions per chunk in partial-sum memory (α² points per tile instead of 9 taps).
pub(crate) const GRADW_CHUNK_TILES: usize = 128;

/// The algorithm of the weight gradient of a conv whose forward correlation is `geo`, under
/// `algo`: `None` is the direct kernel, whose chunks hold `direct_chunk` output positions.
/// The cost per output position is the forward's ([`cost`]: the same GEMM, over tiles instead
/// of channels, the same input transform, and the output-gradient transform — the adjoint of
/// the output transform, counted as it), plus the f64 sum of each chunk's partial sums (`9·ci·co4`
/// per chunk for the direct kernel, `α²·ci·co4` for Winograd) spread over the chunk's positions.
pub(crate) fn choose_gradw(algo: ConvAlgorithm, geo: &Geometry, direct_chunk: usize) -> Option<Tile> {
    if !eligible(geo) {
        return None;
    }
    let partials = |points: usize, positions: usize| {
        PARTIAL_SUM_COST * (points * geo.ci * geo.co4) as f64 / positions.max(1) as f64
    };
    match algo {
        ConvAlgorithm::Direct => None,
        ConvAlgorithm::Winograd => Some(Tile::F4),
        ConvAlgorithm::Winograd2 => Some(Tile::F2),
        ConvAlgorithm::Winograd6 => Some(Tile::F6),
        ConvAlgorithm::Auto => {
            let direct = cost(geo, None) + partials(9, direct_chunk);
            [Tile::F4, Tile::F2, Tile::F6]
                .into_iter()
                .map(|t| {
                    let (th, tw) = (geo.ho.div_ceil(t.m()), geo.wo.div_ceil(t.m()));
                    let rows = (GRADW_CHUNK_TILES / tw).clamp(1, th);
                    let positions = (rows * t.m()).min(geo.ho) * geo.wo;
                    (t, cost(geo, Some(t)) + partials(t.alpha() * t.alpha(), positions))
                })
                .filter(|&(_, c)| c * GRADW_MARGIN < direct)
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(t, _)| t)
        }
    }
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

/// Tiles per chunk the chunk size aims at: the chunk's `V` and `M` (α² × tiles × channels)
/// stay in L2.
const CHUNK_TILES: usize = 32;

impl WinoSpec {
    /// The Winograd form of the direct correlation `geo` on `n` samples, reading its (already
    /// padded) input as `geo` does; [`WinoSpec::reading`] makes it read an unpadded one.
    pub(crate) fn new(tile: Tile, geo: &Geometry, n: usize, bias: bool, epilogue: Epilogue) -> WinoSpec {
        let tw = geo.wo.div_ceil(tile.m());
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
            chunk_rows: (CHUNK_TILES / tw).max(1),
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

/// A Winograd correlation's three kernels, linked after the module is finished.
pub(crate) struct WinoCall {
    pub spec: WinoSpec,
    input: FnHandle,
    gemm: FnHandle,
    output: FnHandle,
    fns: Option<(InputFn, CorrFn, OutputFn)>,
    /// The plan's (transient) scratch holding every chunk's `V` and `M`.
    pub scratch: usize,
}

impl WinoCall {
    /// Generates the kernels of `spec`.
    pub(crate) fn generate(
        cg: &mut Codegen,
        spec: WinoSpec,
        gemm_blocking: super::Blocking,
        scratch: usize,
    ) -> Result<WinoCall, String> {
        // The input transform depends on neither the output channels nor the epilogue: layers
        // (and directions) that read inputs of one shape share it, as they share the products.
        let input_key = WinoSpec { co4: 0, cso: 0, bias: false, epilogue: Epilogue::None, ..spec.clone() };
        let input = cg.cached(format!("winograd input {input_key:?}"), |cg| {
            cg.custom(2, |b, p, fma| emit_input(b, p, &spec, fma))
        })?;
        let gemm_spec = CorrSpec {
            geo: spec.gemm_geometry(),
            bias: false,
            epilogue: Epilogue::None,
            pad: [0, 0],
            shuffle: None,
        };
        let gemm = cg.corr(&gemm_spec, gemm_blocking)?;
        let output = cg.cached(format!("winograd output {spec:?}"), |cg| {
            cg.custom(4, |b, p, fma| emit_output(b, p, &spec, fma))
        })?;
        Ok(WinoCall { spec, input, gemm, output, fns: None, scratch })
    }

    /// Takes the generated functions' addresses once the module is finished.
    pub(crate) fn link(&mut self, cg: &Codegen) {
        // SAFETY: each function was generated by `generate` with exactly these signatures.
        self.fns = Some(unsafe {
            (
                std::mem::transmute::<*const u8, InputFn>(cg.fn_address(self.input)),
                cg.corr_fn(self.gemm),
                std::mem::transmute::<*const u8, OutputFn>(cg.fn_address(self.output)),
            )
        });
    }

    /// `y = act(x ⋆ w + b)` with `u` the transformed filter ([`super::pack`]); `mask` as for
    /// the direct kernel's mask epilogues; `scratch` at least `spec.scratch_len()` floats.
    pub(crate) fn run(
        &self,
        x: &[f32],
        u: &[f32],
        bias: &[f32],
        y: &mut [f32],
        mask: &[f32],
        scratch: &mut [f32],
    ) {
        let Some((input, gemm, output)) = self.fns else { return };
        let s = &self.spec;
        let masked = matches!(s.epilogue, Epilogue::ReluMask | Epilogue::LeakyMask(_));
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
                // loads), and writes this chunk's `V`; the
                // products read `V` and point p's `ci × co4` floats of `u` and write this chunk's `M`;
                // the output transform reads `M`, the bias and the mask and writes only the output
                // rows of tile rows r0..r1, which no other chunk writes. `V` and `M` are this task's
                // own slot of `scratch` (or its own allocation).
                unsafe {
                    input(xp as *const f32, vp, r0 as i64, r1 as i64);
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
                        r0 as i64,
                        r1 as i64,
                    );
                }
            },
        );
    }
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

/// `U[point][ci][co4] = G g Gᵀ` from weights packed for the direct kernel (`[ci][3·3][co4]`), in
/// f64, into `u`: the native filter transform the generated packing ([`super::pack`]) replaced,
/// kept as the tests' oracle. Loops run over the output lanes innermost; input channels in
/// parallel.
#[cfg(test)]
pub(crate) fn transform_filter(tile: Tile, packed: &[f32], ci: usize, co4: usize, u: &mut Vec<f32>) {
    use rayon::prelude::*;
    let a = tile.alpha();
    let g = tile.g();
    u.clear();
    u.resize(a * a * ci * co4, 0.0);
    // Per input channel: its `[point][co4]` block.
    let per_channel: Vec<Vec<f32>> = (0..ci)
        .into_par_iter()
        .map(|c| {
            let w = &packed[c * 9 * co4..(c + 1) * 9 * co4];
            // t[i][j] = Σ_q G[i][q] · w[q][j], one row of co4 lanes each
            let mut t = vec![0.0f64; a * 3 * co4];
            for i in 0..a {
                for j in 0..3 {
                    let ti = &mut t[(i * 3 + j) * co4..(i * 3 + j + 1) * co4];
                    for q in 0..3 {
                        let gq = g[i * 3 + q];
                        if gq != 0.0 {
                            let wq = &w[(q * 3 + j) * co4..(q * 3 + j + 1) * co4];
                            ti.iter_mut().zip(wq).for_each(|(t, &w)| *t += gq * f64::from(w));
                        }
                    }
                }
            }
            // U[i][l] = Σ_q t[i][q] · G[l][q]
            let mut block = vec![0.0f32; a * a * co4];
            let mut row = vec![0.0f64; co4];
            for i in 0..a {
                for l in 0..a {
                    row.fill(0.0);
                    for q in 0..3 {
                        let gq = g[l * 3 + q];
                        if gq != 0.0 {
                            let tq = &t[(i * 3 + q) * co4..(i * 3 + q + 1) * co4];
                            row.iter_mut().zip(tq).for_each(|(r, &t)| *r += gq * t);
                        }
                    }
                    let dst = &mut block[(i * a + l) * co4..(i * a + l + 1) * co4];
                    dst.iter_mut().zip(&row).for_each(|(d, &r)| *d = r as f32);
                }
            }
            block
        })
        .collect();
    u.par_chunks_mut((ci * co4).max(1)).enumerate().for_each(|(point, dst)| {
        for (c, block) in per_channel.iter().enumerate() {
            dst[c * co4..(c + 1) * co4].copy_from_slice(&block[point * co4..(point + 1) * co4]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::codegen::{CORR_BLOCKING, OptLevel};
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
            let mut cg = Codegen::new(OptLevel::None).expect("host");
            let mut call = WinoCall::generate(&mut cg, spec.clone(), CORR_BLOCKING, 0).expect("generates");
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
            call.run(x, &u, bias, &mut y, &[], &mut scratch);
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
}

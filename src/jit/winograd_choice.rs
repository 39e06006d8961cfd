//! Which algorithm each 3×3 stride-1 correlation runs (`JitOptions::conv`): direct, or a
//! Winograd tile, forced or chosen per layer by a cost model calibrated with
//! `scripts/calibrate_winograd.py` (docs/jit.md, "Choosing").

use super::codegen::Geometry;
use super::layout::round4;
use super::winograd_gradw::GRADW_CHUNK_TILES;
use super::winograd_tile::Tile;

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
    /// The algorithm it forces (`None` inside: direct), or `None` for `auto`.
    fn forced(self) -> Option<Option<Tile>> {
        match self {
            ConvAlgorithm::Direct => Some(None),
            ConvAlgorithm::Winograd => Some(Some(Tile::F4)),
            ConvAlgorithm::Winograd2 => Some(Some(Tile::F2)),
            ConvAlgorithm::Winograd6 => Some(Some(Tile::F6)),
            ConvAlgorithm::Auto => None,
        }
    }

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

/// The tile with the lowest predicted cost, if it is predicted at least `margin` times cheaper
/// than the direct kernel's `direct`; `None` (direct) otherwise.
fn cheapest(direct: f64, margin: f64, cost_of: impl Fn(Tile) -> f64) -> Option<Tile> {
    [Tile::F4, Tile::F2, Tile::F6]
        .into_iter()
        .map(|t| (t, cost_of(t)))
        .filter(|&(_, c)| c * margin < direct)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(t, _)| t)
}

/// The algorithm of one correlation under `algo`: `None` is the direct kernel.
pub(crate) fn choose(algo: ConvAlgorithm, geo: &Geometry) -> Option<Tile> {
    if !eligible(geo) {
        return None;
    }
    algo.forced().unwrap_or_else(|| cheapest(cost(geo, None), MARGIN, |t| cost(geo, Some(t))))
}

/// A Winograd weight gradient must be predicted this much cheaper than the direct
/// weight-gradient kernel to be chosen.
const GRADW_MARGIN: f64 = 1.15;

/// The cost of adding one partial-sum element (a scalar f32 → f64 addition) relative to a GEMM
/// multiply-add of 4 lanes: an estimate, not calibrated (it matters only for small images,
/// where a chunk holds few positions).
const PARTIAL_SUM_COST: f64 = 1.0;

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
    algo.forced().unwrap_or_else(|| {
        cheapest(cost(geo, None) + partials(9, direct_chunk), GRADW_MARGIN, |t| {
            let (th, tw) = (geo.ho.div_ceil(t.m()), geo.wo.div_ceil(t.m()));
            let rows = (GRADW_CHUNK_TILES / tw).clamp(1, th);
            let positions = (rows * t.m()).min(geo.ho) * geo.wo;
            cost(geo, Some(t)) + partials(t.alpha() * t.alpha(), positions)
        })
    })
}

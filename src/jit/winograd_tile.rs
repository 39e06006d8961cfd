//! The Winograd tiles F(m×m, 3×3): their matrices `Bᵀ`, `G`, `Aᵀ` (Lavin & Gray's
//! construction; `scripts/winograd_matrices.py` checks them against the correlation in numpy)
//! and what the cost model counts of their transforms. The kernels that apply them are
//! generated in [`super::winograd_emit`] (input, output, output-gradient transforms) and
//! [`super::pack`] (filter transform).

/// The output tile size m of F(m×m, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
    F6,
}

// F(6×6, 3×3) at the points 0, ±1, ±2, ±1/2 and ∞ (Lavin & Gray's construction; checked
// against direct correlation in f64 to 4e-14 by `scripts/winograd_matrices.py`).
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
    pub(crate) fn transform_ops(self) -> (usize, usize) {
        let a = self.alpha();
        let m = self.m();
        // Each pass forms one line's combinations per line: α lines of Bᵀ's α rows twice; α
        // lines of Aᵀ's m rows, then m lines of them.
        let bt = super::winograd_combos::combos_ops(self.bt(), a, a);
        let at = super::winograd_combos::combos_ops(self.at(), a, m);
        let input = 2 * a * bt + 4 * a * a;
        let output = (a + m) * at + a * a + 2 * a * m + 3 * m * m;
        (input, output)
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

//! `dropout(p)`: zeroes each element with probability p while training and scales the rest by
//! 1/(1 − p) (inverted dropout, as PyTorch); identity at inference.
//!
//! The mask is counter-based: one `u64` seed per node and step from the forward pass's random
//! stream, then element `i` (NCHW order) is dropped when `uniform(seed, i) < p` — so any backend
//! can draw any element in any order (the JIT in parallel) and drop the same ones.

use super::attrs::Attrs;
use super::{
    Backward, Backwarded, Cache, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, Takes,
};
use crate::diag::Diagnostic;
use ndarray::ArrayD;
use rand::Rng;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Dropout {
    pub p: f64,
}

impl Layers for Dropout {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        name: "dropout",
        takes: Takes::One,
        positional: &["p"],
        named: &[],
        required: &["p"],
        aliases: &[],
        summary: "zeroes each value with probability `p` while training (scaling the rest by 1/(1 − p))",
        build: build_dropout,
    }];
}

fn build_dropout(attrs: &Attrs, _spatial: usize) -> Result<Op, Diagnostic> {
    let p = attrs.number_or("p", 0.5)?;
    if !(0.0..1.0).contains(&p) {
        return Err(attrs.bad("p", "a probability in [0, 1)"));
    }
    Ok(Op::Dropout(Dropout { p }))
}

/// The kept elements' scale (0 where dropped).
struct Mask(ArrayD<f64>);

/// Element `index`'s uniform number in [0, 1) for a node seeded `seed`: SplitMix64's output
/// `index` of the stream started at `seed` (its finaliser of `seed + (index + 1)·γ`), top 53 bits.
pub fn uniform(seed: u64, index: u64) -> f64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Whether element `index` of a node seeded `seed` is kept by dropout with probability `p`.
pub fn kept(seed: u64, index: u64, p: f64) -> bool {
    uniform(seed, index) >= p
}

impl OpRules for Dropout {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let x = step.xs[0];
        if !(step.training && self.p > 0.0) {
            return Forwarded::plain(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let seed = step.rng.random::<u64>();
        let mut mask = ArrayD::zeros(x.raw_dim());
        // Standard layout: the flat index is the NCHW index.
        for (i, m) in mask.iter_mut().enumerate() {
            *m = if kept(seed, i as u64, self.p) { keep } else { 0.0 };
        }
        Forwarded { y: x * &mask, cache: Cache::keep(Mask(mask)), state: vec![] }
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        match step.cache.get::<Mask>() {
            Some(Mask(m)) => Backwarded::inputs(vec![&step.dy * m]),
            None => Backwarded::inputs(vec![step.dy]),
        }
    }

    fn lowering(&self) -> Lowering {
        Lowering::Pointwise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64's reference outputs (Vigna's `splitmix64.c`) of the streams seeded 0 and
    /// 1234567: element `i` is the stream's output `i`.
    #[test]
    fn uniform_is_splitmix64s_stream() {
        let streams: [(u64, [u64; 3]); 2] = [
            (0, [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f]),
            (1234567, [0x599ed017fb08fc85, 0x2c73f08458540fa5, 0x883ebce5a3f27c77]),
        ];
        for (seed, outputs) in streams {
            for (i, o) in outputs.iter().enumerate() {
                assert_eq!(
                    uniform(seed, i as u64),
                    (o >> 11) as f64 / (1u64 << 53) as f64,
                    "seed {seed}, {i}"
                );
            }
        }
    }

    #[test]
    fn the_kept_share_is_one_minus_p() {
        for p in [0.1, 0.5, 0.9] {
            let n = 200_000;
            let share = (0..n).filter(|&i| kept(42, i, p)).count() as f64 / n as f64;
            // 5 standard deviations of a binomial share: at most 0.0056 here.
            assert!((share - (1.0 - p)).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt(), "p {p}: {share}");
        }
    }
}

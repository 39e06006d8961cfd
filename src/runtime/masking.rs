//! Self-supervised masking (docs/selfsup.md): data preparation for `target = blindspot(...)`
//! and `blindtrace(...)`, drawn per batch from a seed (fresh each epoch).
//!
//! Blind-spot (Noise2Void, Krull et al. 2019; on seismic, Birnie et al. 2021): in every channel
//! of every sample, `ratio` of the positions (at least one) are chosen at random and each is
//! replaced by the value of another position drawn uniformly from the window of ±`radius`
//! along every spatial axis (clipped to the patch). Blind-trace (Liu, Birnie & Alkhalifah
//! 2022): `ratio` of the traces (the last axis; at least one) are replaced whole, in every
//! channel, by another trace within ±`radius` traces. The loss is then taken on the masked
//! positions only, so the network cannot learn the identity: it must predict a sample from its
//! neighbours, which carry the signal (coherent) but not the sample's own noise (independent).

use crate::check::program::SelfSupervised;
use ndarray::ArrayD;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The masked inputs and the mask (1 where the loss is taken), both shaped as `x`
/// (`[B, C, N]` traces or `[B, C, H, W]` sections).
pub fn mask_batch(x: &ArrayD<f64>, scheme: SelfSupervised, seed: u64) -> (ArrayD<f64>, ArrayD<f64>) {
    let x = x.as_standard_layout().into_owned();
    let shape = x.shape().to_vec();
    let (b, c) = (shape.first().copied().unwrap_or(1), shape.get(1).copied().unwrap_or(1));
    let (h, w) = match shape.get(2..).unwrap_or(&[]) {
        [n] => (1, *n),
        [h, w] => (*h, *w),
        other => (1, other.iter().product()),
    };
    let plane = h * w;
    let src = x.as_slice().unwrap_or(&[]);
    let mut out = src.to_vec();
    let mut mask = vec![0.0; src.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A position within ±radius of `at` along an axis of length `n`, other than `at` when
    // `other` (so the window must hold two positions).
    let near = |rng: &mut ChaCha8Rng, at: usize, n: usize, radius: usize| {
        rng.random_range(at.saturating_sub(radius)..(at + radius + 1).min(n))
    };
    match scheme {
        SelfSupervised::BlindSpot { ratio, radius } if plane >= 2 => {
            let count = ((ratio * plane as f64).round() as usize).clamp(1, plane);
            for p in 0..b * c {
                let base = p * plane;
                for at in rand::seq::index::sample(&mut rng, plane, count) {
                    let (r, col) = (at / w, at % w);
                    let from = loop {
                        let (rr, cc) = (near(&mut rng, r, h, radius), near(&mut rng, col, w, radius));
                        if (rr, cc) != (r, col) {
                            break rr * w + cc;
                        }
                    };
                    out[base + at] = src[base + from];
                    mask[base + at] = 1.0;
                }
            }
        }
        SelfSupervised::BlindTrace { ratio, radius } if w >= 2 => {
            let count = ((ratio * w as f64).round() as usize).clamp(1, w);
            for s in 0..b {
                for col in rand::seq::index::sample(&mut rng, w, count) {
                    let from = loop {
                        let cc = near(&mut rng, col, w, radius);
                        if cc != col {
                            break cc;
                        }
                    };
                    for ch in 0..c {
                        let base = (s * c + ch) * plane;
                        for r in 0..h {
                            out[base + r * w + col] = src[base + r * w + from];
                            mask[base + r * w + col] = 1.0;
                        }
                    }
                }
            }
        }
        // One position (or one trace) per plane: nothing to replace it by; the checker
        // refuses such models, so this only guards the arithmetic.
        _ => {}
    }
    let dim = x.raw_dim();
    (
        ArrayD::from_shape_vec(dim.clone(), out).unwrap_or_else(|_| x.clone()),
        ArrayD::from_shape_vec(dim, mask).unwrap_or_else(|_| ArrayD::zeros(x.raw_dim())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn ramp(shape: &[usize]) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|v| v as f64 * 1.5 + 1.0).collect()).unwrap()
    }

    #[test]
    fn blindspot_replaces_the_ratio_by_neighbours_within_the_radius() {
        let x = ramp(&[3, 2, 40, 50]);
        let scheme = SelfSupervised::BlindSpot { ratio: 0.01, radius: 2 };
        let (m, mask) = mask_batch(&x, scheme, 7);
        // round(0.01 · 2000) = 20 masked positions in each of the 6 planes.
        assert_eq!(mask.sum(), 120.0);
        for ((idx, &v), &k) in m.indexed_iter().zip(mask.iter()) {
            let orig = x[&idx];
            if k == 0.0 {
                assert_eq!(v, orig, "an unmasked sample changed at {idx:?}");
                continue;
            }
            assert_ne!(v, orig, "masked sample kept its own value at {idx:?}");
            // The ramp's value says where it came from: same sample and channel, within ±2.
            let flat = ((v - 1.0) / 1.5).round() as usize;
            let (plane, at) = (flat / 2000, flat % 2000);
            assert_eq!(plane, idx[0] * 2 + idx[1]);
            let (r, c) = (at / 50, at % 50);
            assert!(r.abs_diff(idx[2]) <= 2 && c.abs_diff(idx[3]) <= 2, "{idx:?} took ({r}, {c})");
        }
        // Seeded: the same seed masks the same positions, another seed others.
        assert_eq!(mask_batch(&x, scheme, 7).1, mask);
        assert_ne!(mask_batch(&x, scheme, 8).1, mask);
    }

    #[test]
    fn blindspot_on_traces_and_blindtrace_on_whole_traces() {
        let x = ramp(&[2, 1, 100]);
        let (_, mask) = mask_batch(&x, SelfSupervised::BlindSpot { ratio: 0.002, radius: 5 }, 1);
        assert_eq!(mask.sum(), 2.0, "at least one position per trace");
        let x = ramp(&[2, 2, 16, 40]);
        let (m, mask) = mask_batch(&x, SelfSupervised::BlindTrace { ratio: 0.1, radius: 3 }, 3);
        assert_eq!(mask.sum(), (2 * 2 * 16 * 4) as f64, "4 traces of 40, all rows, both channels");
        for s in 0..2 {
            for col in 0..40 {
                let masked = mask[[s, 0, 0, col]] == 1.0;
                for ch in 0..2 {
                    for r in 0..16 {
                        assert_eq!(mask[[s, ch, r, col]] == 1.0, masked, "a trace is masked whole");
                    }
                }
                if masked {
                    // The whole trace comes from one other trace within ±3.
                    let from = ((m[[s, 0, 0, col]] - 1.0) / 1.5).round() as usize % 40;
                    assert!(from != col && from.abs_diff(col) <= 3);
                    for r in 0..16 {
                        assert_eq!(m[[s, 1, r, col]], x[[s, 1, r, from]]);
                    }
                }
            }
        }
    }
}

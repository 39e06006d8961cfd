//! The validation split (docs/selfsup.md, "Honest validation").
//!
//! Patches cut from one section overlap (the default step is half a patch), so holding out
//! random patches would validate on samples the model trained on. Instead the section is cut
//! along one axis (the traces) into blocks at least a patch wide; blocks chosen by the seed are
//! held out; a patch lying wholly inside the held-out blocks validates, a patch touching none of
//! them trains, and a patch straddling a block edge is dropped. So no validation sample is ever
//! a training sample. Independent samples (synthetic sections, `.npy` arrays) are split by a
//! seeded choice of samples.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

/// Where a patch was cut from its section: `start` and `size` per axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPos {
    pub start: Vec<usize>,
    pub size: Vec<usize>,
}

/// Sample indices for training and validation, and what was held out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    /// Patches straddling a held-out block's edge: in neither set.
    pub dropped: usize,
    /// The held-out ranges along the split axis (merged, in order); empty for independent samples.
    pub held_out: Vec<Range<usize>>,
}

/// At most this many blocks along the axis: a held-out block is then a sizeable, contiguous
/// part of the section, not a scatter of thin slices between training patches.
const MAX_BLOCKS: usize = 16;

/// The number of validation samples wanted of `n`: `fraction` of them, at least one and leaving
/// at least one for training (none when `fraction` is 0 or there is one sample).
pub fn wanted(n: usize, fraction: f64) -> usize {
    if fraction > 0.0 && n > 1 { ((fraction * n as f64).floor() as usize).clamp(1, n - 1) } else { 0 }
}

/// Seeded split of `n` independent samples (nothing is shared between samples).
pub fn split_samples(n: usize, fraction: f64, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_5EED_5EED_5EED));
    let (val, train) = order.split_at(wanted(n, fraction));
    let (mut val, mut train) = (val.to_vec(), train.to_vec());
    val.sort_unstable();
    train.sort_unstable();
    Split { train, val, ..Split::default() }
}

/// Spatial split of `patches` cut from a section `extent` long along `axis`: blocks along that
/// axis, at least as wide as the widest patch, held out in a seeded order until `fraction` of
/// the patches validate (never all of them: some must train). See the module comment.
pub fn split_patches(patches: &[PatchPos], axis: usize, extent: usize, fraction: f64, seed: u64) -> Split {
    let widest = patches.iter().filter_map(|p| p.size.get(axis)).copied().max().unwrap_or(1);
    let span = |i: usize| {
        let p = &patches[i];
        let s = p.start.get(axis).copied().unwrap_or(0);
        s..s + p.size.get(axis).copied().unwrap_or(1)
    };
    split_spans(patches.len(), &span, widest, extent, fraction, seed)
}

/// [`split_patches`] for `n` patches given by their extent along the split axis (`span(i)`),
/// the widest `widest` long: what a patch index too large to list (`runtime::patches`) uses.
pub fn split_spans(
    n: usize,
    span: &dyn Fn(usize) -> Range<usize>,
    widest: usize,
    extent: usize,
    fraction: f64,
    seed: u64,
) -> Split {
    let all_train = || Split { train: (0..n).collect(), ..Split::default() };
    let want = wanted(n, fraction);
    let width = widest.max(extent.div_ceil(MAX_BLOCKS)).max(1);
    let blocks = extent / width;
    if want == 0 || blocks < 2 {
        return all_train();
    }
    // Block k covers k·width .. (k+1)·width; the last one reaches the end of the section.
    let block = |k: usize| k * width..if k + 1 == blocks { extent } else { (k + 1) * width };
    let span = |i: usize| {
        let r = span(i);
        r.start.min(extent)..r.end.min(extent)
    };
    // Held-out positions before each position (a prefix sum): a patch's held-out count in O(1).
    let prefix = |held: &[bool]| -> Vec<usize> {
        std::iter::once(0)
            .chain(held.iter().scan(0usize, |acc, &h| {
                *acc += usize::from(h);
                Some(*acc)
            }))
            .collect()
    };
    let class = |sums: &[usize], i: usize| -> Class {
        let r = span(i);
        let n_held = sums[r.end] - sums[r.start];
        if n_held == r.len() && !r.is_empty() {
            Class::Val
        } else if n_held == 0 {
            Class::Train
        } else {
            Class::Dropped
        }
    };
    // Per patch: inside the held-out set (val), touching it (dropped) or clear of it (train).
    let classify = |held: &[bool]| {
        let sums = prefix(held);
        let (mut val, mut train) = (0, 0);
        for i in 0..n {
            match class(&sums, i) {
                Class::Val => val += 1,
                Class::Train => train += 1,
                Class::Dropped => {}
            }
        }
        (val, train)
    };
    let mut order: Vec<usize> = (0..blocks).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xB10C_B10C_B10C_B10C));
    let mut held = vec![false; extent];
    for k in order {
        held[block(k)].iter_mut().for_each(|h| *h = true);
        let (val, train) = classify(&held);
        if train == 0 {
            held[block(k)].iter_mut().for_each(|h| *h = false);
            continue;
        }
        if val >= want {
            break;
        }
    }
    let sums = prefix(&held);
    let mut out = Split::default();
    for i in 0..n {
        match class(&sums, i) {
            Class::Val => out.val.push(i),
            Class::Train => out.train.push(i),
            Class::Dropped => out.dropped += 1,
        }
    }
    if out.val.is_empty() {
        return all_train();
    }
    let mut i = 0;
    while i < extent {
        if held[i] {
            let s = i;
            while i < extent && held[i] {
                i += 1;
            }
            out.held_out.push(s..i);
        }
        i += 1;
    }
    out
}

/// Where a patch falls against the held-out positions.
enum Class {
    Val,
    Train,
    Dropped,
}

/// The split the user chose (`holdout = ...`): patches wholly inside `held` validate, patches
/// clear of it train, patches straddling its edges are dropped.
pub fn holdout_spans(n: usize, span: &dyn Fn(usize) -> Range<usize>, held: Range<usize>) -> Split {
    let mut out = Split { held_out: vec![held.clone()], ..Split::default() };
    for i in 0..n {
        let r = span(i);
        if held.start <= r.start && r.end <= held.end && !r.is_empty() {
            out.val.push(i);
        } else if r.end <= held.start || held.end <= r.start {
            out.train.push(i);
        } else {
            out.dropped += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grid(rows: usize, cols: usize, h: usize, w: usize, sh: usize, sw: usize) -> Vec<PatchPos> {
        let starts = crate::seismic::tile_starts;
        let mut out = vec![];
        for r in starts(rows, h, sh) {
            for c in starts(cols, w, sw) {
                out.push(PatchPos { start: vec![r, c], size: vec![h, w] });
            }
        }
        out
    }

    fn overlaps(a: &PatchPos, b: &PatchPos) -> bool {
        (0..a.start.len()).all(|k| a.start[k] < b.start[k] + b.size[k] && b.start[k] < a.start[k] + a.size[k])
    }

    proptest! {
        /// No validation patch shares a sample with a training patch, for any section, patch,
        /// step, fraction and seed; every patch is in exactly one of train, val, dropped.
        #[test]
        fn held_out_blocks_never_overlap_training_patches(
            rows in 8usize..80, cols in 8usize..400, h in 1usize..8, w in 1usize..40,
            sh in 1usize..8, sw in 1usize..40, fraction in 0.0f64..0.9, seed in any::<u64>(),
        ) {
            let (h, w) = (h.min(rows), w.min(cols));
            let patches = grid(rows, cols, h, w, sh, sw);
            let s = split_patches(&patches, 1, cols, fraction, seed);
            for &v in &s.val {
                for &t in &s.train {
                    prop_assert!(!overlaps(&patches[v], &patches[t]), "val {:?} overlaps train {:?}", patches[v], patches[t]);
                }
            }
            prop_assert_eq!(s.train.len() + s.val.len() + s.dropped, patches.len());
            prop_assert!(!s.train.is_empty());
            for &v in &s.val {
                let c = patches[v].start[1];
                prop_assert!(s.held_out.iter().any(|r| r.start <= c && c + patches[v].size[1] <= r.end));
            }
        }
    }

    proptest! {
        /// A held-out range the user names (`holdout = traces(a, b)`): validation patches lie
        /// inside it, no training patch shares a position with it, every patch is counted once.
        #[test]
        fn a_named_holdout_never_overlaps_training_patches(
            rows in 8usize..80, cols in 8usize..400, h in 1usize..8, w in 1usize..40,
            sh in 1usize..8, sw in 1usize..40, a in 0usize..400, len in 0usize..200,
        ) {
            let (h, w) = (h.min(rows), w.min(cols));
            let patches = grid(rows, cols, h, w, sh, sw);
            let held = a.min(cols)..(a + len).min(cols);
            let span = |i: usize| patches[i].start[1]..patches[i].start[1] + patches[i].size[1];
            let s = holdout_spans(patches.len(), &span, held.clone());
            for &t in &s.train {
                let r = span(t);
                prop_assert!(r.end <= held.start || held.end <= r.start, "train {:?} touches {:?}", r, held);
            }
            for &v in &s.val {
                let r = span(v);
                prop_assert!(held.start <= r.start && r.end <= held.end);
                for &t in &s.train {
                    prop_assert!(!overlaps(&patches[v], &patches[t]));
                }
            }
            prop_assert_eq!(s.train.len() + s.val.len() + s.dropped, patches.len());
        }
    }

    #[test]
    fn the_seed_chooses_the_blocks_and_the_fraction_is_reached() {
        // Penobscot-like: 601 traces, 64-trace patches every 32 traces.
        let patches = grid(256, 601, 64, 64, 32, 32);
        let a = split_patches(&patches, 1, 601, 0.1, 1);
        let b = split_patches(&patches, 1, 601, 0.1, 1);
        assert_eq!(a, b);
        assert!(a.val.len() * 10 >= patches.len(), "{} of {}", a.val.len(), patches.len());
        let others: Vec<_> = (2..10).map(|s| split_patches(&patches, 1, 601, 0.1, s).held_out).collect();
        assert!(others.iter().any(|h| *h != a.held_out), "every seed held out {:?}", a.held_out);
    }

    #[test]
    fn independent_samples_are_chosen_by_seed() {
        let a = split_samples(100, 0.1, 3);
        assert_eq!((a.val.len(), a.train.len()), (10, 90));
        assert_ne!(a.val, split_samples(100, 0.1, 4).val);
        assert_eq!(a, split_samples(100, 0.1, 3));
        assert_eq!(split_samples(5, 0.0, 3).val.len(), 0);
    }
}

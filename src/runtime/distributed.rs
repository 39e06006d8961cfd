//! Data-parallel training: the communication a training step needs, behind one small trait.
//!
//! The training loop talks to a [`Collective`]; [`SingleProcess`] is the default (every
//! operation is the identity), and `runtime/distributed_mpi.rs` (cargo feature `mpi`) runs the
//! same calls over MPI. Which one a run uses is the CLI's decision.
//!
//! Semantics, as PyTorch's DistributedDataParallel with SyncBatchNorm: every rank takes a
//! contiguous shard of each global batch (the train block's `batch`); rank 0 owns the
//! optimizer, the checkpoint and every output file; the other ranks send their gradients and
//! receive the new parameters each step. Sums across ranks are deterministic: gathered to rank
//! 0 and added there in rank order, so a run is reproducible for a given rank count.

use crate::ir::Params;
use crate::ops::batchnorm::{StatsSync, sum_rows};
use std::rc::Rc;

/// The collective operations of data-parallel training. All ranks must make the same calls in
/// the same order with buffers of the same length.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Rank 0's `buf` into every rank's `buf`.
    fn broadcast(&self, buf: &mut [f64]);
    /// The element-wise sum over ranks into rank 0's `buf`, added in rank order (the other
    /// ranks' `buf` is left unspecified).
    fn reduce_sum_to_root(&self, buf: &mut [f64]);
    /// The element-wise sum over ranks, in rank order, into every rank's `buf` (so every rank
    /// holds the same bits).
    fn allreduce_sum(&self, buf: &mut [f64]) {
        self.reduce_sum_to_root(buf);
        self.broadcast(buf);
    }
    fn barrier(&self);
}

/// One process: every collective is the identity.
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn broadcast(&self, _buf: &mut [f64]) {}
    fn reduce_sum_to_root(&self, _buf: &mut [f64]) {}
    fn barrier(&self) {}
}

/// The contiguous slice of a global batch of `len` samples that `rank` of `size` takes: the
/// first `len % size` ranks take one sample more than the others.
pub fn shard(len: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let (base, extra) = (len / size, len % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// The number of samples in the smallest global batch of an epoch of `n_train` samples.
pub fn smallest_batch(n_train: usize, batch: usize) -> usize {
    match n_train % batch {
        0 => batch.min(n_train),
        last => last,
    }
}

/// Every value of `params`, in order, in one buffer.
pub fn flatten(params: &Params, out: &mut Vec<f64>) {
    for p in params {
        out.extend(p.iter().copied());
    }
}

/// Fills `params` (in place, shapes kept) from a buffer written by [`flatten`].
pub fn unflatten(buf: &[f64], params: &mut Params) {
    let mut at = 0;
    for p in params.iter_mut() {
        for (v, &b) in p.iter_mut().zip(&buf[at..]) {
            *v = b;
        }
        at += p.len();
    }
}

/// Adds every rank's loss and gradients on rank 0, each weighted by its share of the global
/// batch (`shard / batch`; 1/2 or 1/4 exactly with even shards on 2 or 4 ranks), so rank 0 gets
/// the global batch's mean loss and its gradients, as one process on the whole batch would.
/// Returns the loss; on the other ranks the result is unspecified.
pub fn reduce_gradients(
    collective: &dyn Collective,
    loss: f64,
    grads: &mut Params,
    shard: usize,
    batch: usize,
) -> f64 {
    let weight = shard as f64 / batch as f64;
    let mut buf = vec![loss * weight];
    for g in grads.iter() {
        buf.extend(g.iter().map(|v| v * weight));
    }
    collective.reduce_sum_to_root(&mut buf);
    unflatten(&buf[1..], grads);
    buf[0]
}

/// Batchnorm's statistics over the global batch: the rank's partial sums added across ranks.
///
/// Backward sums are weighted: each rank's loss is a mean over its own shard, so its output
/// gradient is `global batch / shard` times the global loss's. With even shards that factor is
/// the same on every rank and cancels in batchnorm's formulas; with uneven shards every rank
/// scales its partial sums to the global loss before adding and back after.
pub struct ShardStats {
    pub collective: Rc<dyn Collective>,
    /// `shard / global batch` of this rank, when the shards of this batch are uneven.
    pub uneven_weight: Option<f64>,
    /// This rank's samples within the global batch, and the global batch's size.
    pub shard: std::ops::Range<usize>,
    pub batch: usize,
}

impl ShardStats {
    /// Every rank's per-sample rows, in global sample order, on every rank: each rank fills its
    /// own rows of a zero buffer and the buffers are added, which is exact (every value meets
    /// only zeros), so the rows keep their bits.
    fn all_rows(&self, rows: &[f64], k: usize) -> Vec<f64> {
        let mut all = vec![0.0; self.batch * k];
        all[self.shard.start * k..self.shard.end * k].copy_from_slice(rows);
        self.collective.allreduce_sum(&mut all);
        all
    }
}

impl StatsSync for ShardStats {
    fn sum_forward(&self, partial: &mut [f64]) {
        self.collective.allreduce_sum(partial);
    }

    fn sum_backward(&self, partial: &mut [f64]) {
        match self.uneven_weight {
            None => self.collective.allreduce_sum(partial),
            Some(w) => {
                partial.iter_mut().for_each(|v| *v *= w);
                self.collective.allreduce_sum(partial);
                partial.iter_mut().for_each(|v| *v /= w);
            }
        }
    }

    fn sum_samples_forward(&self, rows: &[f64], k: usize) -> Vec<f64> {
        sum_rows(&self.all_rows(rows, k), k)
    }

    fn sum_samples_backward(&self, rows: &[f64], k: usize) -> Vec<f64> {
        match self.uneven_weight {
            None => self.sum_samples_forward(rows, k),
            Some(w) => {
                let scaled: Vec<f64> = rows.iter().map(|v| v * w).collect();
                sum_rows(&self.all_rows(&scaled, k), k).into_iter().map(|v| v / w).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn the_single_process_collective_is_the_identity() {
        let c = SingleProcess;
        assert_eq!((c.rank(), c.size()), (0, 1));
        let mut buf = vec![1.5, -2.0, 0.1];
        c.broadcast(&mut buf);
        c.allreduce_sum(&mut buf);
        c.reduce_sum_to_root(&mut buf);
        c.barrier();
        assert_eq!(buf, vec![1.5, -2.0, 0.1]);
    }

    #[test]
    fn shards_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for len in 1..20 {
            for size in 1..=len {
                let shards: Vec<_> = (0..size).map(|r| shard(len, r, size)).collect();
                assert_eq!(shards[0].start, 0);
                assert_eq!(shards[size - 1].end, len);
                for w in shards.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let sizes: Vec<usize> = shards.iter().map(|s| s.len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{len} {size}");
            }
        }
        assert_eq!(shard(10, 0, 4), 0..3);
        assert_eq!(shard(10, 1, 4), 3..6);
        assert_eq!(shard(10, 2, 4), 6..8);
        assert_eq!(shard(10, 3, 4), 8..10);
    }

    #[test]
    fn the_smallest_batch_is_the_last_partial_one() {
        assert_eq!(smallest_batch(10, 4), 2);
        assert_eq!(smallest_batch(12, 4), 4);
        assert_eq!(smallest_batch(3, 8), 3);
    }

    #[test]
    fn flatten_then_unflatten_gives_back_the_parameters() {
        let params: Params = vec![
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
            ArrayD::from_shape_vec(IxDyn(&[3]), vec![5.0, 6.0, 7.0]).unwrap(),
        ];
        let mut buf = vec![];
        flatten(&params, &mut buf);
        assert_eq!(buf, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        let mut back: Params = params.iter().map(|p| ArrayD::zeros(p.raw_dim())).collect();
        unflatten(&buf, &mut back);
        assert_eq!(back, params);
    }
}

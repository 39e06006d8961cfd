//! The [`Collective`] over MPI (cargo feature `mpi`, rsmpi over the system's MPI library).
//!
//! Sums are gathered to rank 0 and added there in rank order, then broadcast: the same bits on
//! every run with the same rank count, unlike `MPI_Allreduce`, whose order the library picks.
//! MPI's default error handler aborts the whole job on a communication failure (a rank that
//! died), so no rank waits forever.

use super::distributed::Collective;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

pub struct MpiCollective {
    world: SimpleCommunicator,
}

impl MpiCollective {
    /// Takes the world communicator of an initialised MPI universe (which the caller keeps
    /// alive: dropping it finalises MPI).
    pub fn new(world: SimpleCommunicator) -> MpiCollective {
        MpiCollective { world }
    }

    /// Ends every rank of the job with `code` (after a rank's error, so the others do not
    /// wait for it in a collective).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn broadcast(&self, buf: &mut [f64]) {
        self.world.process_at_rank(0).broadcast_into(buf);
    }

    fn reduce_sum_to_root(&self, buf: &mut [f64]) {
        let root = self.world.process_at_rank(0);
        if buf.is_empty() {
            return;
        }
        if self.rank() != 0 {
            root.gather_into(&*buf);
            return;
        }
        let n = buf.len();
        let mut all = vec![0.0; n * self.size()];
        root.gather_into_root(&*buf, &mut all[..]);
        // Rank 0's own values are all[..n]; add the others in rank order.
        for part in all.chunks_exact(n).skip(1) {
            for (acc, v) in buf.iter_mut().zip(part) {
                *acc += v;
            }
        }
    }

    fn barrier(&self) {
        self.world.barrier();
    }
}

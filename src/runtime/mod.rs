//! Training and inference around a backend: data sources, optimizers, the training loop,
//! checkpoints and metrics.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod distributed;
#[cfg(feature = "mpi")]
pub mod distributed_mpi;
pub mod engine;
pub mod infer;
pub mod masking;
pub mod noise;
pub mod optim;
pub mod patches;
pub mod split;
pub mod stream;
pub mod stream_eval;
pub mod train;
pub mod validation;

/// Every output file goes through the one atomic writer (symlinks, modes, hard links, temp files:
/// see [`crate::output`]).
pub use crate::output::write_atomically;

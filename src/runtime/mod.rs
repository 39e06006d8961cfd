//! Training and inference around a backend: data sources, optimizers, the training loop,
//! checkpoints and metrics.

pub mod optim;

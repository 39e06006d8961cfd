//! `batchnorm`: per-channel normalisation over batch and spatial axes.
//! Training uses the biased batch variance; running estimates (unbiased variance, `momentum`)
//! serve inference. Scale starts at 1, shift at 0.

use super::{ParamRole, ParamSpec};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BatchNorm {
    pub momentum: f64,
    pub eps: f64,
}

/// Scale (`weight`) and shift (`bias`) are trainable; running mean and variance are state.
pub fn params(input: &[usize]) -> Vec<ParamSpec> {
    let c = input[0];
    [ParamRole::Weight, ParamRole::Bias, ParamRole::RunningMean, ParamRole::RunningVar]
        .into_iter()
        .map(|role| ParamSpec { role, shape: vec![c] })
        .collect()
}

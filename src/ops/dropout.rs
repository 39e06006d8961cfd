//! `dropout(p)`: zeroes each element with probability p while training and scales the rest by
//! 1/(1 − p) (inverted dropout, as PyTorch); identity at inference.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Dropout {
    pub p: f64,
}

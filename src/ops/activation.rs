//! Element-wise activations and `softmax` (over the channel axis).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    /// Over the channel axis (the only axis of a flat value).
    Softmax,
    LeakyRelu {
        slope: f64,
    },
}

impl Activation {
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::LeakyRelu { .. } => "leaky_relu",
        }
    }
}

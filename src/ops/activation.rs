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

// ---- reference math ----------------------------------------------------------------------

use ndarray::{ArrayD, Axis};

impl Activation {
    /// Forward on a batched value; softmax runs over axis 1 (channels).
    pub fn forward(&self, x: &ArrayD<f64>) -> ArrayD<f64> {
        match *self {
            Activation::Relu => x.mapv(|v| v.max(0.0)),
            Activation::LeakyRelu { slope } => x.mapv(|v| if v > 0.0 { v } else { slope * v }),
            Activation::Sigmoid => x.mapv(|v| 1.0 / (1.0 + (-v).exp())),
            Activation::Tanh => x.mapv(f64::tanh),
            Activation::Softmax => {
                let max = x.fold_axis(Axis(1), f64::NEG_INFINITY, |a, &b| a.max(b)).insert_axis(Axis(1));
                let e = (x - &max).mapv(f64::exp);
                let sum = e.sum_axis(Axis(1)).insert_axis(Axis(1));
                e / sum
            }
        }
    }

    /// Input gradient from the input `x`, the output `y` and the output gradient `dy`.
    pub fn backward(&self, x: &ArrayD<f64>, y: &ArrayD<f64>, dy: &ArrayD<f64>) -> ArrayD<f64> {
        match *self {
            Activation::Relu => {
                let mut d = dy.clone();
                d.zip_mut_with(x, |g, &v| {
                    if v <= 0.0 {
                        *g = 0.0
                    }
                });
                d
            }
            Activation::LeakyRelu { slope } => {
                let mut d = dy.clone();
                d.zip_mut_with(x, |g, &v| {
                    if v <= 0.0 {
                        *g *= slope
                    }
                });
                d
            }
            Activation::Sigmoid => dy * &y.mapv(|s| s * (1.0 - s)),
            Activation::Tanh => dy * &y.mapv(|t| 1.0 - t * t),
            Activation::Softmax => {
                let dot = (dy * y).sum_axis(Axis(1)).insert_axis(Axis(1));
                y * &(dy - &dot)
            }
        }
    }
}

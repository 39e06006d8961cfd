//! Element-wise activations and `softmax` (over the channel axis).

use super::attrs::Attrs;
use super::{Backward, Backwarded, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, Takes};
use crate::diag::Diagnostic;
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
    /// `x·sigmoid(x)` (PyTorch's `SiLU`, also called swish).
    Silu,
}

/// An activation without attributes.
const fn plain(
    name: &'static str,
    summary: &'static str,
    build: fn(&Attrs, usize) -> Result<Op, Diagnostic>,
) -> LayerDef {
    LayerDef {
        name,
        takes: Takes::One,
        positional: &[],
        named: &[],
        required: &[],
        aliases: &[],
        summary,
        build,
    }
}

impl Layers for Activation {
    const LAYERS: &'static [LayerDef] = &[
        LayerDef {
            aliases: &[("relu", "relu")],
            ..plain("relu", "max(x, 0)", |_, _| Ok(Op::Activation(Activation::Relu)))
        },
        plain("sigmoid", "1/(1 + e^−x)", |_, _| Ok(Op::Activation(Activation::Sigmoid))),
        plain("tanh", "tanh(x)", |_, _| Ok(Op::Activation(Activation::Tanh))),
        plain("softmax", "e^x / Σ e^x over the channel axis", |_, _| {
            Ok(Op::Activation(Activation::Softmax))
        }),
        LayerDef {
            positional: &["slope"],
            aliases: &[("leakyrelu", "leaky_relu"), ("lrelu", "leaky_relu")],
            ..plain("leaky_relu", "x for x > 0, slope·x otherwise (slope 0.01 by default)", |attrs, _| {
                Ok(Op::Activation(Activation::LeakyRelu { slope: attrs.number_or("slope", 0.01)? }))
            })
        },
        LayerDef {
            aliases: &[("swish", "silu")],
            ..plain("silu", "x·sigmoid(x)", |_, _| Ok(Op::Activation(Activation::Silu)))
        },
    ];
}

/// `relu`, for expansions that build it (the built-in `unet`).
pub const RELU: &LayerDef = &<Activation as Layers>::LAYERS[0];

impl OpRules for Activation {
    fn kind(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Silu => "silu",
        }
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        Forwarded::plain(self.forward_ref(step.xs[0]))
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        Backwarded::inputs(vec![self.backward_ref(step.xs[0], step.y, &step.dy)])
    }

    fn lowering(&self) -> Lowering {
        match self {
            Activation::Relu => Lowering::Channel,
            Activation::LeakyRelu { .. } => Lowering::Channel,
            Activation::Sigmoid | Activation::Tanh | Activation::Silu | Activation::Softmax => {
                Lowering::Pointwise
            }
        }
    }
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::{ArrayD, Axis};

impl Activation {
    /// Forward on a batched value; softmax runs over axis 1 (channels).
    pub fn forward_ref(&self, x: &ArrayD<f64>) -> ArrayD<f64> {
        match *self {
            Activation::Relu => x.mapv(|v| v.max(0.0)),
            Activation::LeakyRelu { slope } => x.mapv(|v| if v > 0.0 { v } else { slope * v }),
            Activation::Sigmoid => x.mapv(|v| 1.0 / (1.0 + (-v).exp())),
            Activation::Tanh => x.mapv(f64::tanh),
            Activation::Silu => x.mapv(|v| v / (1.0 + (-v).exp())),
            Activation::Softmax => {
                let max = x.fold_axis(Axis(1), f64::NEG_INFINITY, |a, &b| a.max(b)).insert_axis(Axis(1));
                let e = (x - &max).mapv(f64::exp);
                let sum = e.sum_axis(Axis(1)).insert_axis(Axis(1));
                e / sum
            }
        }
    }

    /// Input gradient from the input `x`, the output `y` and the output gradient `dy`.
    pub fn backward_ref(&self, x: &ArrayD<f64>, y: &ArrayD<f64>, dy: &ArrayD<f64>) -> ArrayD<f64> {
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
            // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
            Activation::Silu => {
                dy * &x.mapv(|v| {
                    let s = 1.0 / (1.0 + (-v).exp());
                    s * (1.0 + v * (1.0 - s))
                })
            }
            Activation::Softmax => {
                let dot = (dy * y).sum_axis(Axis(1)).insert_axis(Axis(1));
                y * &(dy - &dot)
            }
        }
    }
}

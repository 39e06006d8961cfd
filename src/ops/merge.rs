//! Merges: `concat` (channels add up, spatial sizes agree), `add` and `sub` (equal shapes).

use super::{
    Backward, Backwarded, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, Reach, Shape,
    ShapeError, ShapeWarning, Takes,
};
use serde::Serialize;

/// `concat(a, b, ...)`: joins values along the channel axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Concat;
/// `add(a, b)`: element-wise sum of equal shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Add;
/// `sub(a, b)`: element-wise difference of equal shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sub;

const fn merge(
    name: &'static str,
    summary: &'static str,
    build: fn(&super::attrs::Attrs, usize) -> Result<Op, crate::diag::Diagnostic>,
) -> LayerDef {
    LayerDef {
        name,
        takes: Takes::Values,
        positional: &[],
        named: &[],
        required: &[],
        aliases: &[],
        summary,
        build,
    }
}

impl Layers for Concat {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        aliases: &[("cat", "concat"), ("concatenate", "concat")],
        ..merge("concat", "joins values along the channel axis; spatial sizes must agree", |_, _| {
            Ok(Op::Concat)
        })
    }];
}

impl Layers for Add {
    const LAYERS: &'static [LayerDef] =
        &[merge("add", "element-wise sum of two values of equal shape", |_, _| Ok(Op::Add))];
}

impl Layers for Sub {
    const LAYERS: &'static [LayerDef] =
        &[merge("sub", "element-wise difference of two values of equal shape", |_, _| Ok(Op::Sub))];
}

/// `concat`, for expansions that build it (the built-in `unet`) and help texts.
pub const CONCAT: &LayerDef = &<Concat as Layers>::LAYERS[0];
/// `add` and `sub`, for help texts.
pub const ADD: &LayerDef = &<Add as Layers>::LAYERS[0];
pub const SUB: &LayerDef = &<Sub as Layers>::LAYERS[0];

/// Merges see what any of their inputs sees.
fn merged_reach(inputs: &[Reach]) -> Reach {
    let mut acc: Option<Vec<(f64, f64)>> = None;
    for f in inputs {
        match (f, &mut acc) {
            (Reach::Whole, _) => return Reach::Whole,
            (Reach::Axes(v), None) => acc = Some(v.clone()),
            (Reach::Axes(v), Some(a)) => {
                for (x, y) in a.iter_mut().zip(v) {
                    *x = (x.0.max(y.0), x.1.max(y.1));
                }
            }
        }
    }
    acc.map_or(Reach::Whole, Reach::Axes)
}

impl OpRules for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        Ok((concat_shape(inputs)?, vec![]))
    }

    fn reach(&self, inputs: &[Reach]) -> Reach {
        merged_reach(inputs)
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        Forwarded::plain(concat(step.xs))
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let channels: Vec<usize> = step.xs.iter().map(|x| x.shape()[1]).collect();
        Backwarded::inputs(concat_backward(&step.dy, &channels))
    }

    fn lowering(&self) -> Lowering {
        Lowering::Spatial
    }
}

impl OpRules for Add {
    fn kind(&self) -> &'static str {
        "add"
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        Ok((elementwise_shape(inputs)?, vec![]))
    }

    fn reach(&self, inputs: &[Reach]) -> Reach {
        merged_reach(inputs)
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        Forwarded::plain(step.xs[0] + step.xs[1])
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        Backwarded::inputs(vec![step.dy.clone(), step.dy])
    }

    fn lowering(&self) -> Lowering {
        Lowering::Channel
    }
}

impl OpRules for Sub {
    fn kind(&self) -> &'static str {
        "sub"
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        Ok((elementwise_shape(inputs)?, vec![]))
    }

    fn reach(&self, inputs: &[Reach]) -> Reach {
        merged_reach(inputs)
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        Forwarded::plain(step.xs[0] - step.xs[1])
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        Backwarded::inputs(vec![step.dy.clone(), -step.dy])
    }

    fn lowering(&self) -> Lowering {
        Lowering::Channel
    }
}

pub fn concat_shape(inputs: &[&[usize]]) -> Result<Shape, ShapeError> {
    let Some((first, rest)) = inputs.split_first() else {
        return Err(ShapeError::Arity { expected: "at least two values", found: 0 });
    };
    if rest.is_empty() {
        return Err(ShapeError::Arity { expected: "at least two values", found: 1 });
    }
    let mut channels = first[0];
    for (i, other) in rest.iter().enumerate() {
        if other.len() != first.len() || other[1..] != first[1..] {
            return Err(ShapeError::Mismatch {
                what: "spatial size",
                first: first.to_vec(),
                other: other.to_vec(),
                other_index: i + 1,
            });
        }
        channels = channels.checked_add(other[0]).ok_or(ShapeError::Overflow)?;
    }
    let mut shape = first.to_vec();
    shape[0] = channels;
    Ok(shape)
}

pub fn elementwise_shape(inputs: &[&[usize]]) -> Result<Shape, ShapeError> {
    match inputs {
        [a, b] => {
            if a != b {
                return Err(ShapeError::Mismatch {
                    what: "shape",
                    first: a.to_vec(),
                    other: b.to_vec(),
                    other_index: 1,
                });
            }
            Ok(a.to_vec())
        }
        _ => Err(ShapeError::Arity { expected: "exactly two values", found: inputs.len() }),
    }
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::{ArrayD, Axis};

/// Joins batched values along the channel axis (1).
pub fn concat(xs: &[&ArrayD<f64>]) -> ArrayD<f64> {
    let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
    ndarray::concatenate(Axis(1), &views).expect("shapes checked")
}

/// Splits a concat's output gradient back into its inputs' channel counts.
pub fn concat_backward(dy: &ArrayD<f64>, channels: &[usize]) -> Vec<ArrayD<f64>> {
    let mut start = 0;
    channels
        .iter()
        .map(|&c| {
            let part = dy.slice_axis(Axis(1), ndarray::Slice::from(start..start + c)).to_owned();
            start += c;
            part
        })
        .collect()
}

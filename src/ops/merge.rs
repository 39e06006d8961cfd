//! Merges: `concat` (channels add up, spatial sizes agree), `add` and `sub` (equal shapes).

use super::{Shape, ShapeError};

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

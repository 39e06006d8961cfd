//! `flatten` and `dense(out)` (fully connected).

use super::attrs::Attrs;
use super::{
    Backward, Backwarded, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, ParamSpec, Reach,
    Shape, ShapeError, ShapeWarning, Takes, checked_product, linear_params, mac_flops, single,
};
use crate::diag::Diagnostic;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dense {
    pub out: usize,
    pub bias: bool,
}

/// `flatten`: `[C, H, W]` → `[C·H·W]`, keeping row-major order (C, then H, then W).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Flatten;

// `flatten` is listed with `dense` (its op type lists none) so that the table keeps the
// language's order of layers, which completion and did-you-mean follow.
impl Layers for Dense {
    const LAYERS: &'static [LayerDef] = &[
        FLATTEN_DEF,
        LayerDef {
            name: "dense",
            takes: Takes::One,
            positional: &["out"],
            named: &["bias", "init"],
            required: &["out"],
            aliases: &[
                ("linear", "dense"),
                ("fully_connected", "dense"),
                ("fc", "dense"),
                ("dense", "dense"),
            ],
            summary: "fully connected, `[F]` → `[out]`: y = W·x + b",
            build: build_dense,
        },
    ];
}

impl Layers for Flatten {
    const LAYERS: &'static [LayerDef] = &[];
}

/// `flatten` and `dense`, for help texts that show how to end a classifier.
pub const FLATTEN: &LayerDef = &FLATTEN_DEF;
pub const DENSE: &LayerDef = &<Dense as Layers>::LAYERS[1];

const FLATTEN_DEF: LayerDef = LayerDef {
    name: "flatten",
    takes: Takes::One,
    positional: &[],
    named: &[],
    required: &[],
    aliases: &[("flatten", "flatten")],
    summary: "`[C, H, W]` → `[C·H·W]` in row-major order",
    build: |_, _| Ok(Op::Flatten),
};

fn build_dense(attrs: &Attrs, _spatial: usize) -> Result<Op, Diagnostic> {
    Ok(Op::Dense(Dense { out: attrs.positive("out")?, bias: attrs.boolean_or("bias", true)? }))
}

/// After `flatten`/`dense` every output sees the whole input — unless the input was flat
/// all along (no spatial extent at all).
fn flat_reach(inputs: &[Reach]) -> Reach {
    match inputs.first() {
        Some(Reach::Axes(axes)) if axes.is_empty() => Reach::Axes(vec![]),
        _ => Reach::Whole,
    }
}

impl OpRules for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        Ok((vec![checked_product(single(inputs)?)?], vec![]))
    }

    fn reach(&self, inputs: &[Reach]) -> Reach {
        flat_reach(inputs)
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let x = step.xs[0].as_standard_layout().into_owned();
        Forwarded::plain(x.into_shape_with_order(ndarray::IxDyn(step.shape)).expect("flatten"))
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let dy = step.dy.as_standard_layout().into_owned();
        Backwarded::inputs(vec![dy.into_shape_with_order(step.xs[0].raw_dim()).expect("unflatten")])
    }

    fn lowering(&self) -> Lowering {
        Lowering::Native
    }
}

impl OpRules for Dense {
    fn kind(&self) -> &'static str {
        "dense"
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<(Shape, Vec<ShapeWarning>), ShapeError> {
        let input = single(inputs)?;
        if input.len() != 1 {
            return Err(ShapeError::NotFlat { found: input.to_vec() });
        }
        Ok((vec![self.out], vec![]))
    }

    fn reach(&self, inputs: &[Reach]) -> Reach {
        flat_reach(inputs)
    }

    /// Weight `[out, in]`, bias `[out]`.
    fn params(&self, inputs: &[&[usize]]) -> Vec<ParamSpec> {
        linear_params(self.out, inputs[0][0], &[], self.bias)
    }

    fn flops(&self, inputs: &[&[usize]], _output: &[usize]) -> Option<u64> {
        mac_flops(&[inputs[0].iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64))?, self.out as u64])
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        Forwarded::plain(self.forward_ref(step.xs[0], step.params[0], self.bias.then(|| step.params[1])))
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        let (dx, dw, db) = self.backward_ref(step.xs[0], step.params[0], &step.dy);
        let mut grads = vec![(0, dw)];
        if self.bias {
            grads.push((1, db));
        }
        Backwarded { dxs: vec![dx], grads }
    }

    fn lowering(&self) -> Lowering {
        Lowering::Linear
    }
}

// ---- reference math ----------------------------------------------------------------------

use ndarray::{Array2, ArrayD, Axis, Ix2};

fn flat(x: &ArrayD<f64>) -> Array2<f64> {
    x.view().into_dimensionality::<Ix2>().expect("dense input is [B, F]").to_owned()
}

impl Dense {
    /// `y = x Wᵀ + b` with `W` `[out, in]`.
    pub fn forward_ref(&self, x: &ArrayD<f64>, w: &ArrayD<f64>, b: Option<&ArrayD<f64>>) -> ArrayD<f64> {
        let w = flat(w);
        let mut y = flat(x).dot(&w.t());
        if let Some(b) = b {
            y += &b.view().into_dimensionality::<ndarray::Ix1>().expect("bias [out]");
        }
        y.into_dyn()
    }

    /// (dx, dw, db).
    pub fn backward_ref(
        &self,
        x: &ArrayD<f64>,
        w: &ArrayD<f64>,
        dy: &ArrayD<f64>,
    ) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
        let (x, w, dy) = (flat(x), flat(w), flat(dy));
        (dy.dot(&w).into_dyn(), dy.t().dot(&x).into_dyn(), dy.sum_axis(Axis(0)).into_dyn())
    }
}

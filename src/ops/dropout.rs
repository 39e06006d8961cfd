//! `dropout(p)`: zeroes each element with probability p while training and scales the rest by
//! 1/(1 − p) (inverted dropout, as PyTorch); identity at inference.

use super::attrs::Attrs;
use super::{
    Backward, Backwarded, Cache, Forward, Forwarded, LayerDef, Layers, Lowering, Op, OpRules, Takes,
};
use crate::diag::Diagnostic;
use ndarray::ArrayD;
use rand::Rng;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Dropout {
    pub p: f64,
}

impl Layers for Dropout {
    const LAYERS: &'static [LayerDef] = &[LayerDef {
        name: "dropout",
        takes: Takes::One,
        positional: &["p"],
        named: &[],
        required: &["p"],
        aliases: &[],
        summary: "zeroes each value with probability `p` while training (scaling the rest by 1/(1 − p))",
        build: build_dropout,
    }];
}

fn build_dropout(attrs: &Attrs, _spatial: usize) -> Result<Op, Diagnostic> {
    let p = attrs.number_or("p", 0.5)?;
    if !(0.0..1.0).contains(&p) {
        return Err(attrs.bad("p", "a probability in [0, 1)"));
    }
    Ok(Op::Dropout(Dropout { p }))
}

/// The kept elements' scale (0 where dropped).
struct Mask(ArrayD<f64>);

impl OpRules for Dropout {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn forward(&self, step: Forward<'_>) -> Forwarded {
        let x = step.xs[0];
        if !(step.training && self.p > 0.0) {
            return Forwarded::plain(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let rng = step.rng;
        let mask = x.mapv(|_| if rng.random::<f64>() < self.p { 0.0 } else { keep });
        Forwarded { y: x * &mask, cache: Cache::keep(Mask(mask)), state: vec![] }
    }

    fn backward(&self, step: Backward<'_>) -> Backwarded {
        match step.cache.get::<Mask>() {
            Some(Mask(m)) => Backwarded::inputs(vec![&step.dy * m]),
            None => Backwarded::inputs(vec![step.dy]),
        }
    }

    fn lowering(&self) -> Lowering {
        Lowering::Pointwise
    }
}

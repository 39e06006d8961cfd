//! Layer calls: which name a call refers to — a layer of the op table ([`crate::ops::LAYERS`])
//! or the built-in `unet` —, its attribute signature, and the weight `init` attribute.
//!
//! Everything about a particular layer kind lives in its module under `src/ops/`; this module
//! only looks names up there.

use super::unet;
use super::values::Value;
use crate::diag::{Diagnostic, codes};
use crate::ops::{self, LayerDef, Op, ParamRole, Takes};
use crate::syntax::ast::Span;

pub use crate::ops::attrs::{Attrs, arity_error, attribute_alias};
pub use crate::ops::layer_alias;

/// What a call's name refers to.
#[derive(Clone, Copy)]
pub enum Callee {
    /// A layer of the op table; `Some(rank)` for the explicit-rank forms (`conv2d`).
    Layer(&'static LayerDef, Option<usize>),
    /// The built-in U-Net, expanded by the checker into layers of the table.
    Unet,
}

/// The attributes a layer takes: positional ones first (in order), then named-only ones.
pub struct Signature {
    pub positional: &'static [&'static str],
    pub named: &'static [&'static str],
    pub required: &'static [&'static str],
}

impl Callee {
    pub fn find(name: &str) -> Option<Callee> {
        if name == unet::NAME {
            return Some(Callee::Unet);
        }
        ops::find_layer(name).map(|(d, rank)| Callee::Layer(d, rank))
    }

    pub fn signature(&self) -> Signature {
        match self {
            Callee::Layer(d, _) => {
                Signature { positional: d.positional, named: d.named, required: d.required }
            }
            Callee::Unet => unet::SIGNATURE,
        }
    }

    /// Whether its arguments are values (merges) rather than attributes.
    pub fn takes_values(&self) -> bool {
        matches!(self, Callee::Layer(d, _) if d.takes == Takes::Values)
    }

    pub fn summary(&self) -> &'static str {
        match self {
            Callee::Layer(d, _) => d.summary,
            Callee::Unet => unet::SUMMARY,
        }
    }
}

/// Every built-in layer name (the op table's, their explicit-rank forms, and `unet`), for
/// completion and did-you-mean.
pub fn layer_names() -> Vec<String> {
    let mut names = ops::layer_names();
    // After the plain names, before the explicit-rank forms: the order the language lists them.
    let plain = ops::layers().count();
    names.insert(plain, unet::NAME.to_string());
    names
}

/// Reads `init = [[...]]` into (shape, row-major values).
pub fn init_values(value: &Value, span: &Span) -> Result<(Vec<usize>, Vec<f64>), Diagnostic> {
    fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f64>) -> Result<(), String> {
        match v {
            Value::List(items) | Value::Tuple(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                } else if shape.get(depth) != Some(&items.len()) {
                    return Err("rows of different lengths".into());
                }
                if items.is_empty() {
                    return Err("an empty list".into());
                }
                for item in items {
                    walk(item, depth + 1, shape, out)?;
                }
                Ok(())
            }
            Value::Int(_) | Value::Float(_) => {
                if shape.len() != depth {
                    return Err("numbers and lists mixed at one level".into());
                }
                out.push(v.as_f64().unwrap_or(0.0));
                Ok(())
            }
            other => Err(format!("{} where a number was expected", other.describe())),
        }
    }
    let mut shape = vec![];
    let mut values = vec![];
    walk(value, 0, &mut shape, &mut values).map_err(|why| {
        Diagnostic::error(
            codes::INIT_SHAPE,
            format!("`init` is not a rectangular array of numbers: {why}"),
            span.clone(),
            "here",
        )
    })?;
    if values.len() != shape.iter().product::<usize>() {
        return Err(Diagnostic::error(
            codes::INIT_SHAPE,
            "`init` rows have different lengths",
            span.clone(),
            "here",
        ));
    }
    Ok((shape, values))
}

/// Checks `init` against the weight shape `[out, in, k...]`, allowing leading axes of size 1 to
/// be left out.
pub fn fit_init(given: &[usize], weight: &[usize]) -> bool {
    given.len() <= weight.len() && {
        let lead = weight.len() - given.len();
        weight[..lead].iter().all(|&d| d == 1) && weight[lead..] == *given
    }
}

/// The weight shape `init` must fit.
pub fn weight_shape(op: &Op, input: &[usize]) -> Option<Vec<usize>> {
    op.params(&[input]).into_iter().find(|p| p.role == ParamRole::Weight).map(|p| p.shape)
}

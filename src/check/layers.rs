//! Layer calls: which attributes each layer takes, and how evaluated attribute values become a
//! resolved [`Op`] for a given input rank.

use super::values::Value;
use crate::diag::{Diagnostic, closest, codes};
use crate::ops::activation::Activation;
use crate::ops::batchnorm::BatchNorm;
use crate::ops::conv::{Conv, UpConv};
use crate::ops::dense::Dense;
use crate::ops::dropout::Dropout;
use crate::ops::pool::{Pool, PoolKind};
use crate::ops::upsample::{Upsample, UpsampleMode};
use crate::ops::{Op, ParamRole};
use crate::syntax::ast::Span;
use std::collections::HashMap;

/// The attributes a layer takes: positional ones first (in order), then named-only ones.
pub struct Signature {
    pub positional: &'static [&'static str],
    pub named: &'static [&'static str],
    pub required: &'static [&'static str],
}

/// Every built-in layer name (without the explicit-rank forms), for did-you-mean.
pub const LAYERS: &[&str] = &[
    "conv",
    "upconv",
    "maxpool",
    "avgpool",
    "upsample",
    "flatten",
    "dense",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "leaky_relu",
    "batchnorm",
    "dropout",
    "concat",
    "add",
    "sub",
    "unet",
    "conv1d",
    "conv2d",
    "upconv1d",
    "upconv2d",
    "maxpool1d",
    "maxpool2d",
    "avgpool1d",
    "avgpool2d",
];

/// Names other frameworks use for our layers (lower-cased), for help lines.
pub fn layer_alias(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "convolution" | "convolution2d" | "conv2d" => "conv2d",
        "conv1d" | "convolution1d" => "conv1d",
        "conv2dtranspose" | "convtranspose2d" | "conv_transpose" | "convtranspose" | "deconv"
        | "transposed_conv" => "upconv",
        "maxpooling2d" | "max_pool" | "max_pool2d" | "maxpool2d" => "maxpool2d",
        "maxpooling1d" | "max_pool1d" => "maxpool1d",
        "averagepooling2d" | "avg_pool" | "avg_pool2d" | "avgpool2d" => "avgpool2d",
        "linear" | "fully_connected" | "fc" | "dense" => "dense",
        "batchnormalization" | "batch_norm" | "batchnorm2d" | "batchnorm1d" | "bn" => "batchnorm",
        "upsampling2d" | "upsampling1d" | "interpolate" => "upsample",
        "cat" | "concatenate" => "concat",
        "leakyrelu" | "lrelu" => "leaky_relu",
        "flatten" => "flatten",
        "relu" => "relu",
        _ => return None,
    })
}

/// Attribute names from other frameworks → ours.
pub fn attribute_alias(name: &str) -> Option<&'static str> {
    Some(match name {
        "padding" => "pad",
        "kernel_size" | "pool_size" | "ksize" => "kernel",
        "filters" | "out_channels" | "units" | "out_features" | "channels" => "out",
        "strides" => "stride",
        "use_bias" => "bias",
        "dilation_rate" => "dilation",
        "scale_factor" | "size" => "factor",
        "rate" => "p",
        "negative_slope" | "alpha" => "slope",
        "kernel_initializer" | "weights" => "init",
        _ => return None,
    })
}

/// Splits `conv2d` into (`conv`, Some(2)).
pub fn split_rank(name: &str) -> (&str, Option<usize>) {
    for (suffix, rank) in [("1d", 1), ("2d", 2)] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(base, "conv" | "upconv" | "maxpool" | "avgpool")
        {
            return (base, Some(rank));
        }
    }
    (name, None)
}

pub fn signature(base: &str) -> Option<Signature> {
    const NONE: &[&str] = &[];
    Some(match base {
        "conv" => Signature {
            positional: &["out"],
            named: &["kernel", "stride", "pad", "dilation", "bias", "init"],
            required: &["out", "kernel"],
        },
        "upconv" => Signature {
            positional: &["out"],
            named: &["kernel", "stride", "pad", "bias", "init"],
            required: &["out", "kernel"],
        },
        "maxpool" | "avgpool" => {
            Signature { positional: &["kernel"], named: &["stride", "pad"], required: &["kernel"] }
        }
        "upsample" => Signature { positional: &["factor"], named: &["mode"], required: &["factor"] },
        "dense" => Signature { positional: &["out"], named: &["bias", "init"], required: &["out"] },
        "leaky_relu" => Signature { positional: &["slope"], named: NONE, required: NONE },
        "batchnorm" => Signature { positional: NONE, named: &["momentum", "eps"], required: NONE },
        "dropout" => Signature { positional: &["p"], named: NONE, required: &["p"] },
        "flatten" | "relu" | "sigmoid" | "tanh" | "softmax" => {
            Signature { positional: NONE, named: NONE, required: NONE }
        }
        "unet" => Signature {
            positional: &["out"],
            named: &["depth", "base", "kernel", "pool", "up", "norm"],
            required: &["out"],
        },
        _ => return None,
    })
}

/// Evaluated attributes of one call, with the span of each (key and value) for labels.
pub struct Attrs {
    pub values: HashMap<&'static str, (Value, Span)>,
    pub call: Span,
}

impl Attrs {
    pub fn get(&self, name: &str) -> Option<&(Value, Span)> {
        self.values.get(name)
    }

    pub fn span_of(&self, name: &str) -> Span {
        self.values.get(name).map_or_else(|| self.call.clone(), |(_, s)| s.clone())
    }

    fn bad(&self, name: &str, expected: &str) -> Diagnostic {
        let (found, span) = match self.values.get(name) {
            Some((v, s)) => (v.describe(), s.clone()),
            None => ("nothing".into(), self.call.clone()),
        };
        let d = Diagnostic::error(
            codes::BAD_VALUE,
            format!("`{name}` must be {expected}, found {found}"),
            span,
            format!("expected {expected}"),
        );
        // `pad="same"`, `kernel="3"`: words and numbers are written without quotes, and a
        // user coming from Python writes them with.
        match self.values.get(name) {
            Some((Value::Str(s), _)) if is_bare_word_or_number(s) => {
                d.with_help(format!("drop the quotes: `{name}={s}`"))
            }
            _ => d,
        }
    }

    /// A positive integer (sizes, channel counts).
    pub fn positive(&self, name: &str) -> Result<usize, Diagnostic> {
        match self.get(name) {
            Some((Value::Int(v), _)) if *v > 0 => {
                usize::try_from(*v).map_err(|_| self.bad(name, "a positive integer"))
            }
            _ => Err(self.bad(name, "a positive integer")),
        }
    }

    pub fn positive_or(&self, name: &str, default: usize) -> Result<usize, Diagnostic> {
        if self.get(name).is_none() { Ok(default) } else { self.positive(name) }
    }

    pub fn boolean_or(&self, name: &str, default: bool) -> Result<bool, Diagnostic> {
        match self.get(name) {
            None => Ok(default),
            Some((Value::Bool(b), _)) => Ok(*b),
            Some(_) => Err(self.bad(name, "`true` or `false`")),
        }
    }

    pub fn number_or(&self, name: &str, default: f64) -> Result<f64, Diagnostic> {
        match self.get(name) {
            None => Ok(default),
            Some((v, _)) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| self.bad(name, "a number")),
        }
    }

    pub fn word_or<'a>(
        &'a self,
        name: &str,
        default: &'a str,
        allowed: &[&str],
    ) -> Result<&'a str, Diagnostic> {
        let expected = allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(" or ");
        match self.get(name) {
            None => Ok(default),
            Some((Value::Word(w), span)) => {
                if allowed.contains(&w.as_str()) {
                    Ok(w)
                } else {
                    let mut d = self.bad(name, &expected);
                    if let Some(s) = closest(w, allowed.iter().copied()) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    d.primary.span = span.clone();
                    Err(d)
                }
            }
            Some(_) => Err(self.bad(name, &expected)),
        }
    }

    /// A per-axis attribute: one integer for all axes or a tuple with one per spatial axis.
    /// `min` is 1 for sizes, 0 for padding.
    pub fn per_axis(
        &self,
        name: &str,
        default: usize,
        rank: usize,
        min: i64,
    ) -> Result<Vec<usize>, Diagnostic> {
        let what = if min == 0 {
            "a non-negative integer or a tuple of them"
        } else {
            "a positive integer or a tuple of them"
        };
        let one = |v: &Value| match v {
            Value::Int(i) if *i >= min => usize::try_from(*i).ok(),
            _ => None,
        };
        match self.get(name) {
            None => Ok(vec![default; rank]),
            Some((v @ Value::Int(_), _)) => one(v).map(|n| vec![n; rank]).ok_or_else(|| self.bad(name, what)),
            Some((Value::Tuple(items) | Value::List(items), span)) => {
                let axes: Option<Vec<usize>> = items.iter().map(one).collect();
                let axes = axes.ok_or_else(|| self.bad(name, what))?;
                if axes.len() != rank {
                    return Err(arity_error(name, rank, axes.len(), span.clone()));
                }
                Ok(axes)
            }
            Some(_) => Err(self.bad(name, what)),
        }
    }
}

pub fn arity_error(name: &str, rank: usize, found: usize, span: Span) -> Diagnostic {
    let axes = if rank == 1 {
        "1 spatial axis (a [C, N] value)".to_string()
    } else {
        format!("{rank} spatial axes")
    };
    Diagnostic::error(
        codes::ATTR_ARITY,
        format!("`{name}` has {found} entries but the input has {axes}"),
        span,
        format!("expected one integer or {rank} entries"),
    )
    .with_help(format!("give one integer for all axes, or a tuple with {rank} entries"))
}

/// Builds the op of a sliding-window or element-wise layer for an input of `spatial` axes.
pub fn build_op(base: &str, attrs: &Attrs, spatial: usize) -> Result<Op, Diagnostic> {
    Ok(match base {
        "conv" => {
            let kernel = attrs.per_axis("kernel", 1, spatial, 1)?;
            let dilation = attrs.per_axis("dilation", 1, spatial, 1)?;
            let pad = pad(attrs, &kernel, &dilation, spatial)?;
            Op::Conv(Conv {
                out: attrs.positive("out")?,
                stride: attrs.per_axis("stride", 1, spatial, 1)?,
                kernel,
                pad,
                dilation,
                bias: attrs.boolean_or("bias", true)?,
            })
        }
        "upconv" => {
            let kernel = attrs.per_axis("kernel", 1, spatial, 1)?;
            let pad = pad(attrs, &kernel, &vec![1; spatial], spatial)?;
            Op::UpConv(UpConv {
                out: attrs.positive("out")?,
                stride: attrs.per_axis("stride", 1, spatial, 1)?,
                kernel,
                pad,
                bias: attrs.boolean_or("bias", true)?,
            })
        }
        "maxpool" | "avgpool" => {
            let kernel = attrs.per_axis("kernel", 1, spatial, 1)?;
            let pad = pad(attrs, &kernel, &vec![1; spatial], spatial)?;
            let stride = if attrs.get("stride").is_some() {
                attrs.per_axis("stride", 1, spatial, 1)?
            } else {
                kernel.clone()
            };
            let kind = if base == "maxpool" { PoolKind::Max } else { PoolKind::Avg };
            if kind == PoolKind::Max {
                // PyTorch's rule: padding at most half the kernel, so no window is all padding.
                if let Some(axis) = (0..spatial).find(|&a| 2 * pad[a] > kernel[a]) {
                    return Err(Diagnostic::error(
                        codes::BAD_VALUE,
                        format!(
                            "maxpool padding {} is more than half its kernel {}",
                            pad[axis], kernel[axis]
                        ),
                        attrs.span_of("pad"),
                        "too much padding",
                    )
                    .with_help("a window could then hold only padding; use pad ≤ kernel/2"));
                }
            }
            Op::Pool(Pool { kind, kernel, stride, pad })
        }
        "upsample" => {
            let mode = match attrs.word_or("mode", "nearest", &["nearest", "linear"])? {
                "linear" => UpsampleMode::Linear,
                _ => UpsampleMode::Nearest,
            };
            Op::Upsample(Upsample { factor: attrs.per_axis("factor", 1, spatial, 1)?, mode })
        }
        "dense" => Op::Dense(Dense { out: attrs.positive("out")?, bias: attrs.boolean_or("bias", true)? }),
        "flatten" => Op::Flatten,
        "relu" => Op::Activation(Activation::Relu),
        "sigmoid" => Op::Activation(Activation::Sigmoid),
        "tanh" => Op::Activation(Activation::Tanh),
        "softmax" => Op::Activation(Activation::Softmax),
        "leaky_relu" => Op::Activation(Activation::LeakyRelu { slope: attrs.number_or("slope", 0.01)? }),
        "batchnorm" => {
            let momentum = attrs.number_or("momentum", 0.1)?;
            if !(0.0..=1.0).contains(&momentum) {
                return Err(attrs.bad("momentum", "a number in [0, 1]"));
            }
            let eps = attrs.number_or("eps", 1e-5)?;
            if eps <= 0.0 {
                return Err(attrs.bad("eps", "a positive number"));
            }
            Op::BatchNorm(BatchNorm { momentum, eps })
        }
        "dropout" => {
            let p = attrs.number_or("p", 0.5)?;
            if !(0.0..1.0).contains(&p) {
                return Err(attrs.bad("p", "a probability in [0, 1)"));
            }
            Op::Dropout(Dropout { p })
        }
        _ => {
            return Err(Diagnostic::error(
                codes::UNKNOWN_LAYER,
                format!("unknown layer `{base}`"),
                attrs.call.clone(),
                "",
            ));
        }
    })
}

/// `pad`: an integer, a tuple, `valid` (0) or `same` (dilation·(kernel − 1)/2, when whole).
fn pad(
    attrs: &Attrs,
    kernel: &[usize],
    dilation: &[usize],
    spatial: usize,
) -> Result<Vec<usize>, Diagnostic> {
    match attrs.get("pad") {
        Some((Value::Word(w), span)) if w == "same" => (0..spatial)
            .map(|a| {
                let total = dilation[a].checked_mul(kernel[a] - 1).ok_or_else(|| {
                    Diagnostic::error(codes::OVERFLOW, "size too large", span.clone(), "overflows")
                })?;
                if total % 2 == 1 {
                    return Err(Diagnostic::error(
                        codes::PAD_SAME,
                        format!(
                            "`pad = same` needs dilation·(kernel − 1) to be even, but {}·({} − 1) = {total}",
                            dilation[a], kernel[a]
                        ),
                        span.clone(),
                        "not possible with this kernel",
                    )
                    .with_label(attrs.span_of("kernel"), format!("kernel {} is even", kernel[a]))
                    .with_help(format!(
                        "use an odd kernel ({} or {}) or give `pad` explicitly",
                        kernel[a] - 1,
                        kernel[a] + 1
                    )));
                }
                Ok(total / 2)
            })
            .collect(),
        Some((Value::Word(w), _)) if w == "valid" => Ok(vec![0; spatial]),
        Some((Value::Word(w), span)) => Err(Diagnostic::error(
            codes::BAD_VALUE,
            format!("`pad` must be an integer, a tuple, `same` or `valid`, found `{w}`"),
            span.clone(),
            "unknown padding",
        )
        .with_help(
            closest(w, ["same", "valid"])
                .map_or("use `same` or `valid`".into(), |s| format!("did you mean `{s}`?")),
        )),
        Some((Value::Str(_), _)) => Err(attrs.bad("pad", "an integer, a tuple, `same` or `valid`")),
        _ => attrs.per_axis("pad", 0, spatial, 0),
    }
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

pub fn weight_shape(op: &Op, input: &[usize]) -> Option<Vec<usize>> {
    op.params(&[input]).into_iter().find(|p| p.role == ParamRole::Weight).map(|p| p.shape)
}

/// Whether `s` would be read as a word or a number if written without quotes.
fn is_bare_word_or_number(s: &str) -> bool {
    let word = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let digits = s.strip_prefix('-').unwrap_or(s);
    let number = digits.chars().next().is_some_and(|c| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() <= 1;
    word || number
}

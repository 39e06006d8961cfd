//! Attribute values of a layer call and their validation, shared by every op's builder.
//!
//! The checker evaluates the written arguments into [`Attrs`] (each value with its span); an
//! op's builder reads them with the typed getters here, so "a positive integer", "one entry per
//! spatial axis" and `pad = same` mean the same thing — and give the same diagnostics — for
//! every layer kind.

use crate::diag::{Diagnostic, Span, closest, codes};
use std::cell::RefCell;
use std::collections::HashMap;

/// An evaluated attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A bare identifier that is not a block parameter: `same`, `nearest`, `mse`, ...
    Word(String),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
}

impl Value {
    pub fn describe(&self) -> String {
        match self {
            Value::Int(v) => format!("the integer {v}"),
            Value::Float(v) => format!("the number {v}"),
            Value::Bool(v) => format!("`{v}`"),
            Value::Word(w) => format!("`{w}`"),
            Value::Str(s) => format!("the string \"{s}\""),
            Value::List(_) => "a list".into(),
            Value::Tuple(_) => "a tuple".into(),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }
}

/// Attribute names other frameworks use → ours, for did-you-mean on any layer.
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
        "num_groups" => "groups",
        _ => return None,
    })
}

/// Evaluated attributes of one call, with the span of each (key and value) for labels.
pub struct Attrs {
    pub values: HashMap<&'static str, (Value, Span)>,
    pub call: Span,
    /// Bad values the getters replaced by a harmless fallback so the builder could go on: a
    /// call with two bad attributes gets both reported at once ([`Attrs::take_deferred`]).
    deferred: RefCell<Vec<Diagnostic>>,
}

impl Attrs {
    /// No attributes written: every getter returns its default.
    pub fn empty(call: Span) -> Attrs {
        Attrs::new(HashMap::new(), call)
    }

    /// Attributes given by the compiler itself (the built-in `unet` calls the same builders as
    /// user layers); every value points at the call that caused them.
    pub fn given(call: Span, values: impl IntoIterator<Item = (&'static str, Value)>) -> Attrs {
        let values = values.into_iter().map(|(k, v)| (k, (v, call.clone()))).collect();
        Attrs::new(values, call)
    }

    pub fn new(values: HashMap<&'static str, (Value, Span)>, call: Span) -> Attrs {
        Attrs { values, call, deferred: RefCell::new(vec![]) }
    }

    /// The bad values found while building, in the order the builder read them. A builder that
    /// returned `Ok` with deferred diagnostics built from fallbacks: its op must not be used.
    pub fn take_deferred(&self) -> Vec<Diagnostic> {
        std::mem::take(&mut *self.deferred.borrow_mut())
    }

    /// Keeps a bad value's diagnostic for later and lets the builder go on with `fallback`, a
    /// value that causes no further errors.
    fn defer<T>(&self, checked: Result<T, Diagnostic>, fallback: T) -> Result<T, Diagnostic> {
        checked.or_else(|d| {
            self.deferred.borrow_mut().push(d);
            Ok(fallback)
        })
    }

    pub fn get(&self, name: &str) -> Option<&(Value, Span)> {
        self.values.get(name)
    }

    pub fn span_of(&self, name: &str) -> Span {
        self.values.get(name).map_or_else(|| self.call.clone(), |(_, s)| s.clone())
    }

    pub fn bad(&self, name: &str, expected: &str) -> Diagnostic {
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
        let checked = match self.get(name) {
            Some((Value::Int(v), _)) if *v > 0 => {
                usize::try_from(*v).map_err(|_| self.bad(name, "a positive integer"))
            }
            _ => Err(self.bad(name, "a positive integer")),
        };
        self.defer(checked, 1)
    }

    pub fn positive_or(&self, name: &str, default: usize) -> Result<usize, Diagnostic> {
        if self.get(name).is_none() { Ok(default) } else { self.positive(name) }
    }

    pub fn boolean_or(&self, name: &str, default: bool) -> Result<bool, Diagnostic> {
        let checked = match self.get(name) {
            None => Ok(default),
            Some((Value::Bool(b), _)) => Ok(*b),
            Some(_) => Err(self.bad(name, "`true` or `false`")),
        };
        self.defer(checked, default)
    }

    pub fn number_or(&self, name: &str, default: f64) -> Result<f64, Diagnostic> {
        let checked = match self.get(name) {
            None => Ok(default),
            Some((v, _)) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| self.bad(name, "a number")),
        };
        self.defer(checked, default)
    }

    pub fn word_or<'a>(
        &'a self,
        name: &str,
        default: &'a str,
        allowed: &[&str],
    ) -> Result<&'a str, Diagnostic> {
        let expected = allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(" or ");
        let checked = match self.get(name) {
            None => Ok(default),
            Some((Value::Word(w), span)) => {
                if allowed.contains(&w.as_str()) {
                    Ok(w.as_str())
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
        };
        self.defer(checked, default)
    }

    /// A per-axis attribute: one integer for all axes or a tuple with one per spatial axis.
    /// `min` is 1 for sizes, 0 for padding. This is the only place arity and positivity of a
    /// per-axis attribute are checked: the ops' shape rules rely on it.
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
        let checked = (|| match self.get(name) {
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
        })();
        self.defer(checked, vec![default; rank])
    }

    /// `pad`: an integer, a tuple, `valid` (0) or `same` (dilation·(kernel − 1)/2, when whole).
    /// The one place `pad = same` is computed.
    pub fn pad(
        &self,
        kernel: &[usize],
        dilation: &[usize],
        spatial: usize,
    ) -> Result<Vec<usize>, Diagnostic> {
        let checked = match self.get("pad") {
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
                        .with_label(self.span_of("kernel"), format!("kernel {} is even", kernel[a]))
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
            Some((Value::Str(_), _)) => Err(self.bad("pad", "an integer, a tuple, `same` or `valid`")),
            _ => self.per_axis("pad", 0, spatial, 0),
        };
        self.defer(checked, vec![0; spatial])
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

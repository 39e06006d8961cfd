//! Noise expressions of the train block: `noise = gaussian(0.3) + spikes(rate = 0.001)`.
//!
//! A noise expression is a sum of noise kinds (or a bare number, meaning `gaussian(number)`).
//! The checker turns it into a [`NoiseSpec`]; the runtime draws it (`runtime::noise`).
//! Amplitudes are relative to the clean data's RMS; frequencies are in Hz and times in ms, so
//! they need the data's sample interval (4 ms for `synthetic`, the headers' for `segy`, `dt_ms`
//! for `npy`). Every parameter is checked here with a located message; only the Nyquist limit,
//! which depends on a file's sample interval, is checked again when the data is read.

use super::values::{self, BlockArgs, Value};
use crate::diag::{Diagnostic, Span, closest, codes};
use crate::syntax::ast::{Arg, BinOp, Expr, ExprKind};
use std::collections::HashMap;

/// One kind of noise and its parameters (amplitudes relative to the clean RMS).
#[derive(Clone, Debug, PartialEq)]
pub enum NoiseKind {
    /// Gaussian noise of standard deviation `std`; white, or limited to `band` Hz (coloured).
    Gaussian { std: f64, band: Option<[f64; 2]> },
    /// Single-sample spikes: each sample is hit with probability `rate`, by ±`amplitude`.
    Spikes { rate: f64, amplitude: f64 },
    /// Short bursts of Gaussian noise (std `amplitude`, Hann-tapered over `length` ms), each
    /// sample starting one with probability `rate`.
    Bursts { rate: f64, amplitude: f64, length: f64 },
    /// Each trace is zeroed with probability `fraction`.
    DeadTraces { fraction: f64 },
    /// Each trace has its polarity reversed with probability `fraction`.
    ReversedTraces { fraction: f64 },
    /// `count` straight dipping events (ground-roll-like): a Gaussian-windowed cosine of `freq`
    /// Hz and peak `amplitude`, moving `dip` ms per trace.
    Linear { amplitude: f64, dip: f64, freq: f64, count: usize },
    /// Swell: band-limited (`band` Hz) bursts of std `amplitude` over groups of `width`
    /// adjacent traces, covering about `fraction` of the traces.
    Swell { amplitude: f64, fraction: f64, width: usize, band: [f64; 2] },
}

/// A sum of noise kinds. Additive kinds are drawn in the written order; trace-wise kinds
/// (reversed, then dead traces) act on the result, so a dead trace is dead, noise and all.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSpec {
    pub parts: Vec<NoiseKind>,
}

/// The noise kinds, their parameters (the first may be given positionally) and defaults.
pub const KINDS: &[(&str, &[&str])] = &[
    ("gaussian", &["std", "band"]),
    ("spikes", &["rate", "amplitude"]),
    ("bursts", &["rate", "amplitude", "length"]),
    ("dead_traces", &["fraction"]),
    ("reversed_traces", &["fraction"]),
    ("linear", &["amplitude", "dip", "freq", "count"]),
    ("swell", &["amplitude", "fraction", "width", "band"]),
];

impl NoiseSpec {
    /// `noise = x` with a number: white Gaussian noise of std x·RMS (the language's v1 meaning).
    pub fn gaussian(std: f64) -> NoiseSpec {
        NoiseSpec { parts: vec![NoiseKind::Gaussian { std, band: None }] }
    }

    /// No noise at all (`noise = 0`, the default for recorded data).
    pub fn is_none(&self) -> bool {
        self.parts.is_empty() || self.as_white() == Some(0.0)
    }

    /// The plain white Gaussian std when that is all this noise is.
    pub fn as_white(&self) -> Option<f64> {
        match self.parts.as_slice() {
            [NoiseKind::Gaussian { std, band: None }] => Some(*std),
            _ => None,
        }
    }

    /// The highest frequency (Hz) any part asks for, to check against a data's Nyquist.
    pub fn max_freq(&self) -> Option<f64> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                NoiseKind::Gaussian { band: Some(b), .. } | NoiseKind::Swell { band: b, .. } => Some(b[1]),
                NoiseKind::Linear { freq, .. } => Some(*freq),
                _ => None,
            })
            .reduce(f64::max)
    }
}

fn band_text(b: &[f64; 2]) -> String {
    format!("[{}, {}]", b[0], b[1])
}

impl std::fmt::Display for NoiseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoiseKind::Gaussian { std, band: None } => write!(f, "gaussian({std})"),
            NoiseKind::Gaussian { std, band: Some(b) } => {
                write!(f, "gaussian({std}, band = {})", band_text(b))
            }
            NoiseKind::Spikes { rate, amplitude } => {
                write!(f, "spikes(rate = {rate}, amplitude = {amplitude})")
            }
            NoiseKind::Bursts { rate, amplitude, length } => {
                write!(f, "bursts(rate = {rate}, amplitude = {amplitude}, length = {length})")
            }
            NoiseKind::DeadTraces { fraction } => write!(f, "dead_traces({fraction})"),
            NoiseKind::ReversedTraces { fraction } => write!(f, "reversed_traces({fraction})"),
            NoiseKind::Linear { amplitude, dip, freq, count } => {
                write!(f, "linear(amplitude = {amplitude}, dip = {dip}, freq = {freq}, count = {count})")
            }
            NoiseKind::Swell { amplitude, fraction, width, band } => write!(
                f,
                "swell(amplitude = {amplitude}, fraction = {fraction}, width = {width}, band = {})",
                band_text(band)
            ),
        }
    }
}

impl std::fmt::Display for NoiseSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Serialised as before noise expressions existed when it is plain white Gaussian noise (a
/// number, so older checkpoints' fingerprints still match), else as its canonical text.
impl serde::Serialize for NoiseSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_white() {
            Some(std) => s.serialize_f64(std),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

/// Checks a `noise = ...` value; every problem is pushed to `diags` (then `None`).
pub fn check_noise(expr: &Expr, diags: &mut Vec<Diagnostic>) -> Option<NoiseSpec> {
    let before = diags.len();
    let mut parts = vec![];
    terms(expr, &mut parts, diags);
    (diags.len() == before && !parts.is_empty()).then_some(NoiseSpec { parts })
}

fn terms(expr: &Expr, parts: &mut Vec<NoiseKind>, diags: &mut Vec<Diagnostic>) {
    match &expr.kind {
        ExprKind::Binary { op: BinOp::Add, lhs, rhs } if has_call(lhs) || has_call(rhs) => {
            terms(lhs, parts, diags);
            terms(rhs, parts, diags);
        }
        ExprKind::Group(inner) => terms(inner, parts, diags),
        ExprKind::Call { name, args } => {
            if let Some(kind) = kind(&name.name, &name.span, args, &expr.span, diags) {
                parts.push(kind);
            }
        }
        _ if has_call(expr) => diags.push(
            Diagnostic::error(
                codes::BAD_DATA,
                "noise kinds can only be added together",
                expr.span.clone(),
                "not a sum of noise kinds",
            )
            .with_help(
                "write e.g. `noise = gaussian(0.3) + spikes(rate = 0.001)`; scale a kind with its amplitude",
            ),
        ),
        _ => match values::eval(expr, &BlockArgs::new()) {
            Ok(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 => {
                    parts.push(NoiseKind::Gaussian { std: x, band: None })
                }
                _ => diags.push(
                    Diagnostic::error(
                        codes::BAD_VALUE,
                        format!("`noise` must be a number ≥ 0 or noise kinds, found {}", v.describe()),
                        expr.span.clone(),
                        "expected a noise level or noise kinds",
                    )
                    .with_help(format!("noise kinds: {}", kind_names().join(", "))),
                ),
            },
            Err(d) => diags.push(d),
        },
    }
}

fn has_call(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Call { .. } => true,
        ExprKind::Binary { lhs, rhs, .. } => has_call(lhs) || has_call(rhs),
        ExprKind::Group(inner) | ExprKind::Neg(inner) => has_call(inner),
        _ => false,
    }
}

fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|(k, _)| *k).collect()
}

/// Names other tools use for a noise kind → ours.
fn kind_alias(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "normal" | "white" | "awgn" | "random" | "coloured" | "colored" | "bandlimited" => "gaussian",
        "spike" | "impulse" | "impulsive" | "outliers" => "spikes",
        "burst" => "bursts",
        "dead" | "dead_trace" | "zero_traces" | "bad_traces" => "dead_traces",
        "reversed" | "polarity" | "flipped_traces" | "reversed_trace" => "reversed_traces",
        "ground_roll" | "groundroll" | "coherent" | "dipping" => "linear",
        "swell_noise" => "swell",
        _ => return None,
    })
}

/// The arguments of one call, by parameter name, with their spans.
type Bound = HashMap<&'static str, (Value, Span)>;

fn bind(
    kind: &str,
    params: &'static [&'static str],
    args: &[Arg],
    diags: &mut Vec<Diagnostic>,
) -> Option<Bound> {
    let mut out: Bound = HashMap::new();
    let mut ok = true;
    for (i, arg) in args.iter().enumerate() {
        let key: &'static str = match &arg.name {
            None if i == 0 => params[0],
            None => {
                diags.push(
                    Diagnostic::error(
                        codes::CALL_ARGS,
                        format!("`{kind}` takes only its first setting (`{}`) without a name", params[0]),
                        arg.span.clone(),
                        "name this setting",
                    )
                    .with_help(format!("`{kind}` takes: {}", params.join(", "))),
                );
                ok = false;
                continue;
            }
            Some(k) => match params.iter().find(|p| **p == k.name) {
                Some(p) => p,
                None => {
                    let d = Diagnostic::error(
                        codes::UNKNOWN_ATTRIBUTE,
                        format!("unknown setting `{}` for {kind} noise", k.name),
                        k.span.clone(),
                        "unknown setting",
                    );
                    diags.push(match closest(&k.name, params.iter().copied()) {
                        Some(s) => d.with_help(format!("did you mean `{s}`?")),
                        None => d.with_help(format!("`{kind}` takes: {}", params.join(", "))),
                    });
                    ok = false;
                    continue;
                }
            },
        };
        if out.contains_key(key) {
            diags.push(Diagnostic::error(
                codes::DUPLICATE_ATTRIBUTE,
                format!("`{key}` is given twice"),
                arg.span.clone(),
                "given again here",
            ));
            ok = false;
            continue;
        }
        match values::eval(&arg.value, &BlockArgs::new()) {
            Ok(v) => {
                out.insert(key, (v, arg.value.span.clone()));
            }
            Err(d) => {
                diags.push(d);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Typed reads of bound arguments: each bad value is one located diagnostic.
struct Reader<'a> {
    kind: &'a str,
    call: &'a Span,
    args: &'a Bound,
    diags: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    fn missing(&mut self, key: &str, example: &str) {
        self.diags.push(
            Diagnostic::error(
                codes::MISSING_ATTRIBUTE,
                format!("`{}` noise needs `{key}`", self.kind),
                self.call.clone(),
                format!("`{key}` missing"),
            )
            .with_help(format!("give it, e.g. `{example}`")),
        );
    }

    /// A number satisfying `ok` (described by `range`), or the default (`None`: required).
    fn number(
        &mut self,
        key: &str,
        default: Option<f64>,
        ok: fn(f64) -> bool,
        range: &str,
        example: &str,
    ) -> f64 {
        let Some((v, span)) = self.args.get(key) else {
            if default.is_none() {
                self.missing(key, example);
            }
            return default.unwrap_or(0.0);
        };
        match v.as_f64().filter(|x| x.is_finite()) {
            Some(x) if ok(x) => x,
            Some(x) => {
                self.diags.push(
                    Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        format!("`{key}` of {} noise must be {range}, found {x}", self.kind),
                        span.clone(),
                        format!("out of range: must be {range}"),
                    )
                    .with_help(format!("e.g. `{example}`")),
                );
                0.0
            }
            None => {
                self.diags.push(Diagnostic::error(
                    codes::BAD_VALUE,
                    format!("`{key}` of {} noise must be a number, found {}", self.kind, v.describe()),
                    span.clone(),
                    "expected a number",
                ));
                0.0
            }
        }
    }

    fn count(&mut self, key: &str, default: usize, max: i64) -> usize {
        match self.args.get(key) {
            None => default,
            Some((Value::Int(n), _)) if (1..=max).contains(n) => *n as usize,
            Some((v, span)) => {
                self.diags.push(Diagnostic::error(
                    codes::BAD_VALUE,
                    format!(
                        "`{key}` of {} noise must be an integer from 1 to {max}, found {}",
                        self.kind,
                        v.describe()
                    ),
                    span.clone(),
                    format!("expected an integer 1 to {max}"),
                ));
                default
            }
        }
    }

    /// A frequency band `[low, high]` in Hz with 0 ≤ low < high.
    fn band(&mut self, default: Option<[f64; 2]>) -> Option<[f64; 2]> {
        let (v, span) = self.args.get("band")?;
        let pair = match v {
            Value::List(items) | Value::Tuple(items) if items.len() == 2 => {
                items[0].as_f64().zip(items[1].as_f64()).filter(|(a, b)| a.is_finite() && b.is_finite())
            }
            _ => None,
        };
        match pair {
            Some((lo, hi)) if lo >= 0.0 && lo < hi => Some([lo, hi]),
            Some((lo, hi)) => {
                self.diags.push(
                    Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        format!("`band` must go from a low to a higher frequency ≥ 0 Hz, found [{lo}, {hi}]"),
                        span.clone(),
                        "needs 0 ≤ low < high",
                    )
                    .with_help("e.g. `band = [5, 60]` (Hz)"),
                );
                default
            }
            None => {
                self.diags.push(
                    Diagnostic::error(
                        codes::BAD_VALUE,
                        format!("`band` must be two frequencies in Hz, found {}", v.describe()),
                        span.clone(),
                        "expected [low, high]",
                    )
                    .with_help("e.g. `band = [5, 60]` (Hz)"),
                );
                default
            }
        }
    }
}

fn kind(
    name: &str,
    name_span: &Span,
    args: &[Arg],
    call: &Span,
    diags: &mut Vec<Diagnostic>,
) -> Option<NoiseKind> {
    let Some((kind, params)) = KINDS.iter().find(|(k, _)| *k == name) else {
        let d = Diagnostic::error(
            codes::BAD_DATA,
            format!("unknown noise kind `{name}`"),
            name_span.clone(),
            "unknown noise kind",
        );
        diags.push(match kind_alias(name).or_else(|| closest(name, kind_names())) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(format!("the noise kinds are {}", kind_names().join(", "))),
        });
        return None;
    };
    let bound = bind(kind, params, args, diags)?;
    let before = diags.len();
    let mut r = Reader { kind, call, args: &bound, diags };
    let positive = |x: f64| x > 0.0;
    let non_negative = |x: f64| x >= 0.0;
    let probability = |x: f64| x > 0.0 && x <= 1.0;
    let out = match *kind {
        "gaussian" => NoiseKind::Gaussian {
            std: r.number("std", None, non_negative, "≥ 0", "gaussian(0.3)"),
            band: r.band(None),
        },
        "spikes" => NoiseKind::Spikes {
            rate: r.number("rate", None, probability, "in (0, 1]", "spikes(rate = 0.001)"),
            amplitude: r.number("amplitude", Some(10.0), positive, "> 0", "amplitude = 10"),
        },
        "bursts" => NoiseKind::Bursts {
            rate: r.number("rate", None, probability, "in (0, 1]", "bursts(rate = 0.0005)"),
            amplitude: r.number("amplitude", Some(5.0), positive, "> 0", "amplitude = 5"),
            length: r.number("length", Some(40.0), positive, "> 0 ms", "length = 40"),
        },
        "dead_traces" => NoiseKind::DeadTraces {
            fraction: r.number("fraction", None, probability, "in (0, 1]", "dead_traces(0.02)"),
        },
        "reversed_traces" => NoiseKind::ReversedTraces {
            fraction: r.number("fraction", None, probability, "in (0, 1]", "reversed_traces(0.02)"),
        },
        "linear" => NoiseKind::Linear {
            amplitude: r.number("amplitude", None, positive, "> 0", "linear(2, dip = 20, freq = 8)"),
            dip: r.number("dip", Some(20.0), |_| true, "a number", "dip = 20"),
            freq: r.number("freq", Some(8.0), positive, "> 0 Hz", "freq = 8"),
            count: r.count("count", 1, 1000),
        },
        _ => NoiseKind::Swell {
            amplitude: r.number("amplitude", None, positive, "> 0", "swell(5, fraction = 0.1)"),
            fraction: r.number("fraction", Some(0.1), probability, "in (0, 1]", "fraction = 0.1"),
            width: r.count("width", 4, 1 << 20),
            band: r.band(Some([1.0, 10.0])).unwrap_or([1.0, 10.0]),
        },
    };
    (diags.len() == before).then_some(out)
}

//! The train block's `target = blindspot(...)` / `blindtrace(...)`: self-supervised training
//! on noisy data alone (docs/selfsup.md). Parameters, and what they combine with: mse only (the
//! masked loss), a denoiser (output shaped as its input), blind-trace on sections only.

use super::program::{LossKind, SelfSupervised};
use super::shape_errors::fmt_shape;
use super::values::{self, BlockArgs, Value};
use crate::diag::{Diagnostic, closest, codes};
use crate::syntax::ast::{ExprKind, KeyValue};

pub const TARGETS: &[&str] = &["blindspot", "blindtrace"];

/// The settings each target takes (for the checker and editor completion).
pub fn target_keys(target: &str) -> Option<&'static [&'static str]> {
    match target {
        "blindspot" | "blindtrace" => Some(&["ratio", "radius"]),
        _ => None,
    }
}

/// Defaults: Noise2Void's 0.2 % of the samples in a window of ±5 samples (the value Birnie et
/// al. 2021 use for seismic); blind-trace masks 5 % of the traces, each replaced by one of its
/// 3 nearest traces on either side.
const BLINDSPOT_DEFAULT: (f64, usize) = (0.002, 5);
const BLINDTRACE_DEFAULT: (f64, usize) = (0.05, 3);
/// A window wider than this is no longer a neighbourhood (and patches are rarely wider).
const MAX_RADIUS: usize = 256;

/// Checks `target = ...` against the loss and the model's input and output shapes.
pub fn check_target(
    kv: &KeyValue,
    loss: LossKind,
    loss_kv: Option<&KeyValue>,
    model_io: Option<(&[usize], &[usize])>,
    diags: &mut Vec<Diagnostic>,
) -> Option<SelfSupervised> {
    let before = diags.len();
    let (name, args) = match &kv.value.kind {
        ExprKind::Call { name, args } => (name, args),
        ExprKind::Ident(w) => {
            let mut d = Diagnostic::error(
                codes::BAD_DATA,
                format!("`target` must be blindspot(...) or blindtrace(...), found `{w}`"),
                kv.value.span.clone(),
                "expected a masking scheme",
            );
            d = match closest(w, TARGETS.iter().copied()) {
                Some(s) => d.with_help(format!("did you mean `{s}()`?")),
                None => d.with_help(
                    "self-supervised training: `target = blindspot(ratio = 0.002, radius = 5)` or `target = blindtrace(ratio = 0.05)`; clean targets of supervised training come from the data source",
                ),
            };
            diags.push(d);
            return None;
        }
        _ => {
            diags.push(
                Diagnostic::error(
                    codes::BAD_DATA,
                    "`target` must be blindspot(...) or blindtrace(...)",
                    kv.value.span.clone(),
                    "expected a masking scheme",
                )
                .with_help("e.g. `target = blindspot(ratio = 0.002, radius = 5)`"),
            );
            return None;
        }
    };
    let Some(allowed) = target_keys(&name.name) else {
        let mut d = Diagnostic::error(
            codes::BAD_DATA,
            format!("unknown target `{}`", name.name),
            name.span.clone(),
            "unknown masking scheme",
        );
        d = match closest(&name.name, TARGETS.iter().copied()) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(
                "the self-supervised targets are blindspot(ratio, radius) and blindtrace(ratio, radius)",
            ),
        };
        diags.push(d);
        return None;
    };
    let (mut ratio, mut radius) =
        if name.name == "blindspot" { BLINDSPOT_DEFAULT } else { BLINDTRACE_DEFAULT };
    let mut seen: Vec<&str> = vec![];
    for a in args {
        let Some(key) = &a.name else {
            diags.push(Diagnostic::error(
                codes::CALL_ARGS,
                format!("`{}` takes named settings only", name.name),
                a.span.clone(),
                "name this setting (ratio = ..., radius = ...)",
            ));
            continue;
        };
        let Some(k) = allowed.iter().find(|k| **k == key.name) else {
            let mut d = Diagnostic::error(
                codes::UNKNOWN_ATTRIBUTE,
                format!("unknown setting `{}` for {}", key.name, name.name),
                key.span.clone(),
                "unknown setting",
            );
            d = match closest(&key.name, allowed.iter().copied()) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help(format!("{} takes: {}", name.name, allowed.join(", "))),
            };
            diags.push(d);
            continue;
        };
        if seen.contains(k) {
            diags.push(Diagnostic::error(
                codes::DUPLICATE_ATTRIBUTE,
                format!("`{k}` is given twice"),
                a.span.clone(),
                "given again",
            ));
            continue;
        }
        seen.push(k);
        let value = match values::eval(&a.value, &BlockArgs::new()) {
            Ok(v) => v,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        match *k {
            "ratio" => match value.as_f64() {
                Some(x) if x > 0.0 && x < 1.0 => ratio = x,
                _ => diags.push(
                    Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        format!("`ratio` must be a fraction in (0, 1), found {}", value.describe()),
                        a.value.span.clone(),
                        "out of range: must be in (0, 1)",
                    )
                    .with_help("the fraction of samples (blindspot) or traces (blindtrace) masked per patch, e.g. 0.002"),
                ),
            },
            _ => match value {
                Value::Int(r) if r >= 1 && r as usize <= MAX_RADIUS => radius = r as usize,
                other => diags.push(
                    Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        format!("`radius` must be an integer from 1 to {MAX_RADIUS}, found {}", other.describe()),
                        a.value.span.clone(),
                        format!("out of range: must be 1 to {MAX_RADIUS}"),
                    )
                    .with_help("how far (in samples or traces) a masked value's replacement is taken from, e.g. 5"),
                ),
            },
        }
    }
    if loss != LossKind::Mse {
        let span = loss_kv.map_or(kv.value.span.clone(), |l| l.value.span.clone());
        diags.push(
            Diagnostic::error(
                codes::BAD_DATA,
                format!("`{}` trains with the masked mse: the loss must be mse", name.name),
                span,
                "not mse",
            )
            .with_label(name.span.clone(), "self-supervised target")
            .with_help("remove `loss` (mse is the default) or set `loss = mse`"),
        );
    }
    if let Some((input, output)) = model_io {
        if input != output {
            diags.push(
                Diagnostic::error(
                    codes::DATA_SHAPE,
                    format!(
                        "`{}` trains a denoiser, but the model maps {} to {}",
                        name.name,
                        fmt_shape(input),
                        fmt_shape(output)
                    ),
                    name.span.clone(),
                    "the output must have the input's shape",
                )
                .with_help("a self-supervised denoiser predicts its own input's samples"),
            );
        } else if name.name == "blindtrace" && input.len() != 3 {
            diags.push(
                Diagnostic::error(
                    codes::DATA_SHAPE,
                    format!(
                        "blindtrace masks whole traces of a section, but the model input is {}",
                        fmt_shape(input)
                    ),
                    name.span.clone(),
                    "needs sections [C, H, W]",
                )
                .with_help("use blindspot for models of single traces [C, N]"),
            );
        } else if name.name == "blindtrace" && input.last().is_some_and(|w| *w < 2) {
            diags.push(Diagnostic::error(
                codes::DATA_SHAPE,
                "blindtrace needs at least 2 traces per section to replace one by another",
                name.span.clone(),
                "one trace per section",
            ));
        }
    }
    if diags.len() != before {
        return None;
    }
    Some(if name.name == "blindspot" {
        SelfSupervised::BlindSpot { ratio, radius }
    } else {
        SelfSupervised::BlindTrace { ratio, radius }
    })
}

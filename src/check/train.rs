//! The `optimizer` and `train` items: known names and keys, ranges, data sources and losses,
//! and whether the data fits the model.

use super::holdout::check_holdout;
use super::model::CheckedModel;
use super::noise::{NoiseSpec, check_noise};
use super::program::{DataSpec, LossKind, OptimizerKind, OptimizerSpec, TrainSpec};
use super::shape_errors::fmt_shape;
use super::values::{self, BlockArgs, Value};
use crate::diag::{Diagnostic, closest, codes};
use crate::syntax::ast::{self, ExprKind, KeyValue, Span};
use std::collections::HashMap;
use std::path::Path;

pub const OPTIMIZERS: &[&str] = &["sgd", "adagrad", "rmsprop", "adam"];
pub const TRAIN_KEYS: &[&str] = &["data", "loss", "batch", "epochs", "validate", "seed", "save", "target"];
pub const LOSSES: &[&str] = &["mse", "mae", "cross_entropy"];
pub const SOURCES: &[&str] = &["synthetic", "segy", "npy"];

/// The default when a file has no `optimizer`: Adam with lr 1e-3, Keras's and most tutorials'.
pub fn default_optimizer() -> OptimizerSpec {
    OptimizerSpec {
        kind: OptimizerKind::Adam { lr: 1e-3, rho1: 0.9, rho2: 0.999, eps: 1e-6 },
        weight_decay: 0.0,
        clip: None,
    }
}

/// The keys an optimizer takes (used by the checker and by editor completion).
pub fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "sgd" => &["lr", "momentum", "nesterov", "weight_decay", "clip"],
        "adagrad" => &["lr", "eps", "weight_decay", "clip"],
        "rmsprop" => &["lr", "rho", "eps", "weight_decay", "clip"],
        _ => &["lr", "rho1", "rho2", "eps", "weight_decay", "clip"],
    }
}

/// Evaluated entries by key, reporting unknown and duplicate keys.
fn entries<'e>(
    entries: &'e [KeyValue],
    known: &[&'static str],
    alias: impl Fn(&str) -> Option<&'static str>,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<&'static str, &'e KeyValue> {
    let mut out: HashMap<&'static str, &KeyValue> = HashMap::new();
    for kv in entries {
        let key = known.iter().find(|k| **k == kv.key.name).copied().or_else(|| alias(&kv.key.name));
        let Some(key) = key else {
            let mut d = Diagnostic::error(
                codes::UNKNOWN_KEY,
                format!("unknown setting `{}` for {what}", kv.key.name),
                kv.key.span.clone(),
                "unknown setting",
            );
            d = match closest(&kv.key.name, known.iter().copied()) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help(format!("{what} takes: {}", known.join(", "))),
            };
            diags.push(d);
            continue;
        };
        if let Some(prev) = out.get(key) {
            diags.push(
                Diagnostic::error(
                    codes::DUPLICATE_ATTRIBUTE,
                    format!("`{key}` is set twice"),
                    kv.key.span.clone(),
                    "set again here",
                )
                .with_label(prev.key.span.clone(), "first set here"),
            );
            continue;
        }
        out.insert(key, kv);
    }
    out
}

fn number(kv: &KeyValue, diags: &mut Vec<Diagnostic>) -> Option<f64> {
    match values::eval(&kv.value, &BlockArgs::new()) {
        Ok(v) => match v.as_f64().filter(|x| x.is_finite()) {
            Some(x) => Some(x),
            None => {
                diags.push(Diagnostic::error(
                    codes::BAD_VALUE,
                    format!("`{}` must be a number, found {}", kv.key.name, v.describe()),
                    kv.value.span.clone(),
                    "expected a number",
                ));
                None
            }
        },
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// A number in a range; `range` is written as in the spec, e.g. "[0, 1)".
fn ranged(kv: &KeyValue, ok: impl Fn(f64) -> bool, range: &str, diags: &mut Vec<Diagnostic>) -> Option<f64> {
    let x = number(kv, diags)?;
    if !ok(x) {
        diags.push(
            Diagnostic::error(
                codes::OUT_OF_RANGE,
                format!("`{}` must be {range}, found {x}", kv.key.name),
                kv.value.span.clone(),
                format!("out of range: must be {range}"),
            )
            .with_help(range_help(&kv.key.name)),
        );
        return None;
    }
    Some(x)
}

fn range_help(key: &str) -> String {
    match key {
        "rho1" | "beta1" => "a typical value is 0.9".into(),
        "rho2" | "beta2" => "a typical value is 0.999".into(),
        "rho" => "a typical value is 0.9".into(),
        "momentum" => "a typical value is 0.9".into(),
        "lr" => "a typical value is 1e-3 for adam, 0.01 for sgd".into(),
        "eps" => "the default is 1e-6".into(),
        _ => format!("see `geonetc explain {}`", codes::OUT_OF_RANGE),
    }
}

pub fn check_optimizer(opt: &ast::Optimizer, diags: &mut Vec<Diagnostic>) -> Option<OptimizerSpec> {
    let kind = opt.kind.name.as_str();
    if !OPTIMIZERS.contains(&kind) {
        let mut d = Diagnostic::error(
            codes::UNKNOWN_OPTIMIZER,
            format!("unknown optimizer `{kind}`"),
            opt.kind.span.clone(),
            "unknown optimizer",
        );
        let lower = kind.to_ascii_lowercase();
        let suggestion =
            if lower == "adamw" { Some("adam") } else { closest(kind, OPTIMIZERS.iter().copied()) };
        d = match suggestion {
            Some(s) if lower == "adamw" => {
                d.with_help(format!("did you mean `{s}`? (use `weight_decay` for L2 regularisation)"))
            }
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help("the optimizers are sgd, adagrad, rmsprop and adam"),
        };
        diags.push(d);
        return None;
    }
    let before = diags.len();
    let alias = |k: &str| match (kind, k) {
        ("adam", "beta1") => Some("rho1"),
        ("adam", "beta2") => Some("rho2"),
        (_, "learning_rate") => None,
        _ => None,
    };
    let e = entries(&opt.entries, keys_of(kind), alias, &format!("optimizer {kind}"), diags);
    let get =
        |key: &str, ok: &dyn Fn(f64) -> bool, range: &str, default: f64, diags: &mut Vec<Diagnostic>| match e
            .get(key)
        {
            Some(kv) => ranged(kv, ok, range, diags).unwrap_or(default),
            None => default,
        };
    let pos = |x: f64| x > 0.0;
    let unit = |x: f64| (0.0..1.0).contains(&x);
    let lr_default = match kind {
        "sgd" | "adagrad" => 0.01,
        _ => 0.001,
    };
    let lr = get("lr", &pos, "> 0", lr_default, diags);
    let eps = get("eps", &pos, "> 0", 1e-6, diags);
    let kind_spec = match kind {
        "sgd" => {
            let momentum = get("momentum", &unit, "in [0, 1)", 0.9, diags);
            let nesterov = match e.get("nesterov") {
                None => false,
                Some(kv) => match values::eval(&kv.value, &BlockArgs::new()) {
                    Ok(Value::Bool(b)) => b,
                    _ => {
                        diags.push(Diagnostic::error(
                            codes::BAD_VALUE,
                            "`nesterov` must be true or false",
                            kv.value.span.clone(),
                            "expected true or false",
                        ));
                        false
                    }
                },
            };
            OptimizerKind::Sgd { lr, momentum, nesterov }
        }
        "adagrad" => OptimizerKind::Adagrad { lr, eps },
        "rmsprop" => OptimizerKind::RmsProp { lr, rho: get("rho", &unit, "in [0, 1)", 0.9, diags), eps },
        _ => OptimizerKind::Adam {
            lr,
            rho1: get("rho1", &unit, "in [0, 1)", 0.9, diags),
            rho2: get("rho2", &unit, "in [0, 1)", 0.999, diags),
            eps,
        },
    };
    let weight_decay = get("weight_decay", &|x| x >= 0.0, "≥ 0", 0.0, diags);
    let clip = e.get("clip").and_then(|kv| ranged(kv, pos, "> 0", diags));
    (diags.len() == before).then_some(OptimizerSpec { kind: kind_spec, weight_decay, clip })
}

fn positive_int(kv: &KeyValue, diags: &mut Vec<Diagnostic>) -> Option<usize> {
    match values::eval(&kv.value, &BlockArgs::new()) {
        Ok(Value::Int(v)) if v > 0 => usize::try_from(v).ok(),
        Ok(Value::Int(v)) => {
            diags.push(Diagnostic::error(
                codes::OUT_OF_RANGE,
                format!("`{}` must be at least 1, found {v}", kv.key.name),
                kv.value.span.clone(),
                "must be ≥ 1",
            ));
            None
        }
        Ok(other) => {
            diags.push(Diagnostic::error(
                codes::BAD_VALUE,
                format!("`{}` must be a positive integer, found {}", kv.key.name, other.describe()),
                kv.value.span.clone(),
                "expected an integer",
            ));
            None
        }
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

pub fn check_train(
    train: &ast::Train,
    model: Option<&CheckedModel>,
    model_name: &str,
    base_dir: Option<&Path>,
    diags: &mut Vec<Diagnostic>,
) -> Option<TrainSpec> {
    let before = diags.len();
    let e = entries(&train.entries, TRAIN_KEYS, |_| None, "train", diags);
    let loss = match e.get("loss") {
        None => LossKind::Mse,
        Some(kv) => match &kv.value.kind {
            ExprKind::Ident(w) if LOSSES.contains(&w.as_str()) => match w.as_str() {
                "mse" => LossKind::Mse,
                "mae" => LossKind::Mae,
                _ => LossKind::CrossEntropy,
            },
            _ => {
                let mut d = Diagnostic::error(
                    codes::BAD_DATA,
                    "unknown loss",
                    kv.value.span.clone(),
                    "expected mse, mae or cross_entropy",
                );
                if let ExprKind::Ident(w) = &kv.value.kind {
                    let lower = w.to_ascii_lowercase();
                    let s = match lower.as_str() {
                        "l2" | "mean_squared_error" => Some("mse"),
                        "l1" | "mean_absolute_error" => Some("mae"),
                        "crossentropy" | "categorical_crossentropy" | "ce" => Some("cross_entropy"),
                        _ => closest(w, LOSSES.iter().copied()),
                    };
                    if let Some(s) = s {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                }
                diags.push(d);
                LossKind::Mse
            }
        },
    };
    let batch = e.get("batch").map_or(Some(16), |kv| positive_int(kv, diags)).unwrap_or(16);
    let epochs = e.get("epochs").map_or(Some(10), |kv| positive_int(kv, diags)).unwrap_or(10);
    let validate = e
        .get("validate")
        .map_or(Some(0.1), |kv| ranged(kv, |x| (0.0..1.0).contains(&x), "in [0, 1)", diags))
        .unwrap_or(0.1);
    let seed = match e.get("seed") {
        None => 0,
        Some(kv) => match values::eval(&kv.value, &BlockArgs::new()) {
            Ok(Value::Int(v)) if v >= 0 => v as u64,
            _ => {
                diags.push(Diagnostic::error(
                    codes::BAD_VALUE,
                    "`seed` must be a non-negative integer",
                    kv.value.span.clone(),
                    "expected an integer ≥ 0",
                ));
                0
            }
        },
    };
    let save = match e.get("save") {
        None => format!("{model_name}.safetensors"),
        Some(kv) => match &kv.value.kind {
            ExprKind::Str(s) if !s.is_empty() => s.clone(),
            _ => {
                diags.push(Diagnostic::error(
                    codes::BAD_VALUE,
                    "`save` must be a file name in quotes",
                    kv.value.span.clone(),
                    "expected a string",
                ));
                String::new()
            }
        },
    };
    let data = match e.get("data") {
        None => {
            diags.push(
                Diagnostic::error(
                    codes::BAD_DATA,
                    "the train block has no `data`",
                    train.keyword.clone(),
                    "no training data",
                )
                .with_help("add e.g. `data = synthetic(count = 256, noise = 0.5)`"),
            );
            None
        }
        Some(kv) => check_data(kv, model, loss, base_dir, e.contains_key("target"), diags),
    };
    let model_io =
        model.and_then(|m| Some((m.inputs.first()?.shape.as_slice(), m.outputs.first()?.shape.as_slice())));
    let target = e
        .get("target")
        .map(|kv| super::selfsup::check_target(kv, loss, e.get("loss").copied(), model_io, diags));
    // Class scores come from a flat output; a section-shaped output has no class axis to
    // normalise over, and the runtime would otherwise have to guess one. (Denoising sources
    // already say that cross_entropy cannot use them.)
    let npy_data = e
        .get("data")
        .is_some_and(|kv| matches!(&kv.value.kind, ExprKind::Call { name, .. } if name.name == "npy"));
    if let (LossKind::CrossEntropy, true, Some(kv), Some(out)) =
        (loss, npy_data, e.get("loss"), model.and_then(|m| m.outputs.first()))
        && out.shape.len() != 1
    {
        diags.push(
            Diagnostic::error(
                codes::BAD_DATA,
                format!(
                    "cross_entropy needs a flat output of class scores, but the model outputs {}",
                    fmt_shape(&out.shape)
                ),
                kv.value.span.clone(),
                "needs a flat output [K]",
            )
            .with_help(format!(
                "end the model with `{} -> {}(K)` for K classes, or use loss = mse or mae",
                crate::ops::dense::FLATTEN.name,
                crate::ops::dense::DENSE.name
            )),
        );
    }
    if diags.len() != before {
        return None;
    }
    Some(TrainSpec { data: data?, loss, batch, epochs, validate, seed, save, target: target.flatten() })
}

/// The keys a data source takes, or `None` for an unknown source.
pub fn source_keys(source: &str) -> Option<&'static [&'static str]> {
    Some(match source {
        "synthetic" => &["shape", "count", "noise", "seed"],
        "segy" => &["file", "patch", "step", "noise", "seed", "holdout"],
        "npy" => &["input", "target", "noise", "dt_ms", "seed"],
        _ => return None,
    })
}

fn check_data(
    kv: &KeyValue,
    model: Option<&CheckedModel>,
    loss: LossKind,
    base_dir: Option<&Path>,
    self_supervised: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<DataSpec> {
    let ExprKind::Call { name, args } = &kv.value.kind else {
        diags.push(
            Diagnostic::error(
                codes::BAD_DATA,
                "`data` must be a data source",
                kv.value.span.clone(),
                "expected synthetic(...), segy(...) or npy(...)",
            )
            .with_help("e.g. `data = synthetic(count = 256, noise = 0.5)`"),
        );
        return None;
    };
    let source = name.name.as_str();
    let allowed: &[&str] = match source_keys(source) {
        Some(keys) => keys,
        None => {
            let mut d = Diagnostic::error(
                codes::BAD_DATA,
                format!("unknown data source `{source}`"),
                name.span.clone(),
                "unknown source",
            );
            if let Some(s) = closest(source, SOURCES.iter().copied()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            } else {
                d = d.with_help(
                    "the sources are synthetic(...), segy(\"file\", ...) and npy(input = ..., target = ...)",
                );
            }
            diags.push(d);
            return None;
        }
    };
    let before = diags.len();
    let mut got: HashMap<&'static str, (Value, Span)> = HashMap::new();
    // `noise` is an expression of noise kinds, checked by `noise::check_noise`, not a value.
    let mut noise_expr: Option<&ast::Expr> = None;
    // `holdout = inlines(a, b)` / `traces(a, b)` is a call, checked by `check_holdout`.
    let mut holdout_expr: Option<&ast::Expr> = None;
    let positional: &[&'static str] = if source == "segy" { &["file"] } else { &[] };
    let mut pos = positional.iter();
    for a in args {
        let key = match &a.name {
            None => match pos.next() {
                Some(k) => *k,
                None => {
                    diags.push(Diagnostic::error(
                        codes::CALL_ARGS,
                        format!("`{source}` takes named settings only"),
                        a.span.clone(),
                        "name this setting",
                    ));
                    continue;
                }
            },
            Some(k) => match allowed.iter().find(|x| **x == k.name) {
                Some(x) => x,
                None => {
                    let mut d = Diagnostic::error(
                        codes::UNKNOWN_ATTRIBUTE,
                        format!("unknown setting `{}` for {source}", k.name),
                        k.span.clone(),
                        "unknown setting",
                    );
                    d = match closest(&k.name, allowed.iter().copied()) {
                        Some(s) => d.with_help(format!("did you mean `{s}`?")),
                        None => d.with_help(format!("{source} takes: {}", allowed.join(", "))),
                    };
                    diags.push(d);
                    continue;
                }
            },
        };
        if key == "noise" {
            if noise_expr.replace(&a.value).is_some() {
                diags.push(Diagnostic::error(
                    codes::DUPLICATE_ATTRIBUTE,
                    "`noise` is given twice",
                    a.span.clone(),
                    "given again",
                ));
            }
            continue;
        }
        if key == "holdout" {
            if holdout_expr.replace(&a.value).is_some() {
                diags.push(Diagnostic::error(
                    codes::DUPLICATE_ATTRIBUTE,
                    "`holdout` is given twice",
                    a.span.clone(),
                    "given again",
                ));
            }
            continue;
        }
        match values::eval(&a.value, &BlockArgs::new()) {
            Ok(v) => {
                if got.insert(key, (v, a.value.span.clone())).is_some() {
                    diags.push(Diagnostic::error(
                        codes::DUPLICATE_ATTRIBUTE,
                        format!("`{key}` is given twice"),
                        a.span.clone(),
                        "given again",
                    ));
                }
            }
            Err(d) => diags.push(d),
        }
    }
    let bad = |key: &str, want: &str, span: &Span| {
        Diagnostic::error(
            codes::BAD_VALUE,
            format!("`{key}` must be {want}"),
            span.clone(),
            format!("expected {want}"),
        )
    };
    let string = |key: &str, diags: &mut Vec<Diagnostic>| -> Option<String> {
        match got.get(key) {
            Some((Value::Str(s), span)) if !s.is_empty() => {
                if let Some(d) = base_dir.and_then(|dir| missing_file(dir, s, span)) {
                    diags.push(d);
                }
                Some(s.clone())
            }
            Some((_, span)) => {
                diags.push(bad(key, "a file name in quotes", span));
                None
            }
            None => {
                diags.push(Diagnostic::error(
                    codes::BAD_DATA,
                    format!("`{source}` needs `{key}`"),
                    kv.value.span.clone(),
                    format!("`{key}` missing"),
                ));
                None
            }
        }
    };
    let noise = |diags: &mut Vec<Diagnostic>| -> Option<NoiseSpec> {
        noise_expr.map(|e| check_noise(e, diags).unwrap_or_else(|| NoiseSpec::gaussian(0.0)))
    };
    let int_list = |key: &str, diags: &mut Vec<Diagnostic>| -> Option<Vec<usize>> {
        let (v, span) = got.get(key)?;
        let items = match v {
            Value::List(items) | Value::Tuple(items) => items.clone(),
            Value::Int(_) => vec![v.clone()],
            _ => {
                diags.push(bad(key, "a list of positive integers", span));
                return None;
            }
        };
        let out: Option<Vec<usize>> = items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n > 0 && *n <= (1 << 30) => Some(*n as usize),
                _ => None,
            })
            .collect();
        if out.is_none() {
            diags.push(bad(key, "a list of positive integers", span));
        }
        out
    };
    let seed = |diags: &mut Vec<Diagnostic>| match got.get("seed") {
        None => 0,
        Some((Value::Int(v), _)) if *v >= 0 => *v as u64,
        Some((_, span)) => {
            diags.push(bad("seed", "a non-negative integer", span));
            0
        }
    };
    let model_in = model.and_then(|m| m.inputs.first().map(|t| t.shape.clone()));
    if let Some(m) = model
        && (m.inputs.len() != 1 || m.outputs.len() != 1)
    {
        diags.push(Diagnostic::error(
            codes::DATA_SHAPE,
            format!(
                "training needs a model with one input and one output; this one has {} and {}",
                m.inputs.len(),
                m.outputs.len()
            ),
            kv.value.span.clone(),
            "cannot feed this model",
        ));
    }
    let model_out = model.and_then(|m| m.outputs.first().map(|t| t.shape.clone()));
    let denoising_fits = |diags: &mut Vec<Diagnostic>, sample: &[usize]| {
        if loss == LossKind::CrossEntropy {
            diags.push(
                Diagnostic::error(
                    codes::BAD_DATA,
                    format!("`{source}` data has clean sections as targets, which cross_entropy cannot use"),
                    kv.value.span.clone(),
                    "denoising data",
                )
                .with_help("use loss = mse or mae, or npy(...) data with class targets"),
            );
        }
        if let Some(out) = &model_out
            && out.as_slice() != sample
        {
            diags.push(
                Diagnostic::error(
                    codes::DATA_SHAPE,
                    format!(
                        "the model outputs {} but `{source}` targets are {}",
                        fmt_shape(out),
                        fmt_shape(sample)
                    ),
                    kv.value.span.clone(),
                    "targets are the clean input",
                )
                .with_help("a denoiser's output must have its input's shape"),
            );
        }
    };
    let spec = match source {
        "synthetic" => {
            let shape = match (int_list("shape", diags), got.get("shape")) {
                (Some(s), Some((_, span))) => {
                    if let Some(m) = &model_in
                        && *m != s
                    {
                        diags.push(
                            Diagnostic::error(
                                codes::DATA_SHAPE,
                                format!(
                                    "synthetic samples are {} but the model input is {}",
                                    fmt_shape(&s),
                                    fmt_shape(m)
                                ),
                                span.clone(),
                                "does not match the model input",
                            )
                            .with_help(format!("use shape = {}", fmt_shape(m))),
                        );
                    }
                    if !(2..=3).contains(&s.len()) {
                        diags.push(bad("shape", "[C, N] (traces) or [C, H, W] (sections)", span));
                    }
                    s
                }
                _ => model_in.clone().unwrap_or_default(),
            };
            if model_in.as_ref().is_some_and(|m| !(2..=3).contains(&m.len())) && !got.contains_key("shape") {
                diags.push(Diagnostic::error(
                    codes::DATA_SHAPE,
                    "synthetic data makes traces [C, N] or sections [C, H, W]; this model takes a flat input",
                    kv.value.span.clone(),
                    "cannot feed this model",
                ));
            }
            denoising_fits(diags, model_in.as_deref().unwrap_or(&shape));
            let count = match got.get("count") {
                None => 1024,
                Some((Value::Int(v), _)) if *v > 0 && *v <= (1 << 24) => *v as usize,
                Some((_, span)) => {
                    diags.push(bad("count", "a positive integer (at most 2^24)", span));
                    1
                }
            };
            let noise = noise(diags).unwrap_or_else(|| NoiseSpec::gaussian(0.5));
            // The synthetic sections are sampled at 4 ms: their Nyquist frequency is 125 Hz.
            if let (Some(f), Some(e)) = (noise.max_freq(), noise_expr)
                && f >= 125.0
            {
                diags.push(
                    Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        format!(
                            "noise at {f} Hz is above the synthetic data's Nyquist frequency (125 Hz at 4 ms)"
                        ),
                        e.span.clone(),
                        "frequency too high",
                    )
                    .with_help("synthetic sections are sampled every 4 ms: use frequencies below 125 Hz"),
                );
            }
            DataSpec::Synthetic { shape, count, noise, seed: seed(diags) }
        }
        "segy" => {
            let path = string("file", diags);
            let patch = int_list("patch", diags);
            let step = int_list("step", diags);
            if let (Some(p), Some(m)) = (&patch, &model_in)
                && p.as_slice() != &m[1.min(m.len())..]
            {
                diags.push(Diagnostic::error(
                    codes::DATA_SHAPE,
                    format!("patches of {} do not fit the model input {}", fmt_shape(p), fmt_shape(m)),
                    got.get("patch").map_or(kv.value.span.clone(), |(_, s)| s.clone()),
                    "patch size must be the model input's spatial size",
                ));
            }
            if let Some(m) = &model_in {
                denoising_fits(diags, m);
            }
            DataSpec::Segy {
                path: path.unwrap_or_default(),
                patch,
                step,
                noise: noise(diags).unwrap_or_else(|| NoiseSpec::gaussian(0.5)),
                seed: seed(diags),
                holdout: holdout_expr.and_then(|e| check_holdout(e, diags)),
            }
        }
        _ => {
            let noise = noise(diags);
            let input = string("input", diags).unwrap_or_default();
            // With noise the input file is the clean data, so it is the target unless one is
            // named; self-supervised training needs no clean target (given, it is for scoring).
            let target = if got.contains_key("target") {
                Some(string("target", diags).unwrap_or_default())
            } else if noise.is_some() {
                Some(input.clone())
            } else if self_supervised {
                None
            } else {
                Some(string("target", diags).unwrap_or_default())
            };
            let dt_ms = match got.get("dt_ms") {
                None => 4.0,
                Some((v, span)) => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 => x,
                    _ => {
                        diags.push(bad("dt_ms", "a sample interval in ms > 0", span));
                        4.0
                    }
                },
            };
            DataSpec::Npy { input, target, noise, dt_ms, seed: seed(diags) }
        }
    };
    (diags.len() == before).then_some(spec)
}

/// A data file named in the train block that cannot be read as a file, relative to the
/// program's folder: a located error (a directory or a dangling name is the usual typo).
fn missing_file(base_dir: &Path, name: &str, span: &Span) -> Option<Diagnostic> {
    let path = base_dir.join(name);
    let problem = match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => "is a directory, not a data file",
        Ok(_) => return None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Err(_) => "cannot be read",
    };
    Some(
        Diagnostic::error(
            codes::BAD_DATA,
            format!("data file `{name}` {problem}"),
            span.clone(),
            format!("looked for {}", path.display()),
        )
        .with_help("paths in the train block are relative to the .geonet file"),
    )
}

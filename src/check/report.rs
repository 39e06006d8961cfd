//! What `check` prints: the per-layer table for people, the JSON object for tools.

use super::CheckOutput;
use super::shape_errors::fmt_shape;
use super::sizes::{AxisSizes, Field, Sizes, analyze};
use crate::diag::JsonDiagnostic;
use serde::Serialize;

/// The human summary: one row per layer, then totals.
pub fn summary_table(out: &CheckOutput) -> String {
    let Some(p) = &out.program else { return String::new() };
    let m = &p.model;
    let sizes = analyze(m);
    let mut rows: Vec<[String; 6]> =
        vec![["layer".into(), "kind".into(), "output".into(), "params".into(), "FLOPs".into(), "RF".into()]];
    for (l, rf) in m.layers.iter().zip(&sizes.layers) {
        rows.push([
            l.name.clone(),
            l.op.kind().into(),
            fmt_shape(&l.shape),
            group(l.params as u64),
            group(l.flops),
            rf.describe(),
        ]);
    }
    let widths: Vec<usize> =
        (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    let inputs: Vec<String> =
        m.inputs.iter().map(|t| format!("{} {}", t.name, fmt_shape(&t.shape))).collect();
    s.push_str(&format!("model {}  (input {})\n\n", m.name, inputs.join(", ")));
    for (i, r) in rows.iter().enumerate() {
        // Padded by hand: `{:<w$}` panics on widths past 65,535 (a long layer or value name).
        use crate::diag::{pad_end, pad_start};
        let line = [
            pad_end(&r[0], widths[0]),
            pad_end(&r[1], widths[1]),
            pad_end(&r[2], widths[2]),
            pad_start(&r[3], widths[3]),
            pad_start(&r[4], widths[4]),
            pad_start(&r[5], widths[5]),
        ]
        .join("  ");
        s.push_str(line.trim_end());
        s.push('\n');
        if i == 0 {
            s.push_str(&"-".repeat(widths.iter().sum::<usize>() + 10));
            s.push('\n');
        }
    }
    s.push('\n');
    let outputs: Vec<String> =
        m.outputs.iter().map(|o| format!("{} {}", o.name, fmt_shape(&o.shape))).collect();
    s.push_str(&format!("output     {}\n", outputs.join(", ")));
    s.push_str(&format!("parameters {}\n", group(p.total_params())));
    s.push_str(&format!("FLOPs      {} per sample (forward, multiply-add = 2)\n", group(p.total_flops())));
    for line in size_lines(&sizes) {
        s.push_str(&line);
        s.push('\n');
    }
    let fields: Vec<String> =
        m.outputs.iter().zip(&sizes.outputs).map(|(o, f)| format!("{} {}", o.name, f.describe())).collect();
    s.push_str(&format!("receptive  {} (input samples per axis)\n", fields.join(", ")));
    let warnings = out.diagnostics.len();
    s.push_str(&format!("warnings   {warnings}\n"));
    s
}

/// `sizes      x height: multiples of 4` lines, one per input axis.
fn size_lines(sizes: &Sizes) -> Vec<String> {
    sizes
        .inputs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let head = if i == 0 { "sizes" } else { "" };
            format!("{head:<10} {} {}: {}", a.input, a.axis, describe_axis(a))
        })
        .collect()
}

/// `multiples of 4` or `any size ≥ 1; without dropped samples N = 4k + 1 (N ≥ 1)`.
pub fn describe_axis(a: &AxisSizes) -> String {
    if a.exact == a.accepted {
        a.accepted.describe()
    } else {
        format!("{}; without dropped samples {}", a.accepted.describe(), a.exact.describe())
    }
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Serialize)]
struct Json<'a> {
    file: &'a str,
    ok: bool,
    model: Option<&'a str>,
    params: u64,
    flops: u64,
    inputs: Vec<Shaped<'a>>,
    outputs: Vec<Shaped<'a>>,
    values: Vec<Shaped<'a>>,
    layers: Vec<JsonLayer<'a>>,
    accepted_sizes: Vec<JsonAxis<'a>>,
    receptive_field: Vec<JsonField<'a>>,
    diagnostics: Vec<JsonDiagnostic<'a>>,
    /// Diagnostics past the first `diag::SHOWN`, counted but not listed (absent when none).
    #[serde(skip_serializing_if = "is_zero")]
    diagnostics_not_shown: usize,
}

#[derive(Serialize)]
struct Shaped<'a> {
    name: &'a str,
    shape: &'a [usize],
}

#[derive(Serialize)]
struct JsonLayer<'a> {
    name: &'a str,
    kind: &'a str,
    value: &'a str,
    shape: &'a [usize],
    params: usize,
    flops: u64,
    receptive_field: serde_json::Value,
}

/// One spatial axis of one input: the sizes `check` accepts.
#[derive(Serialize)]
struct JsonAxis<'a> {
    input: &'a str,
    axis: &'a str,
    declared: usize,
    /// Smallest accepted size (null: none).
    min: Option<usize>,
    /// Accepted sizes step by this much (1 for a finite set).
    multiple: usize,
    /// Human rule, e.g. `multiples of 16`.
    rule: String,
    /// The same without sizes where a stride drops samples.
    exact_min: Option<usize>,
    exact_multiple: usize,
    exact_rule: String,
}

#[derive(Serialize)]
struct JsonField<'a> {
    output: &'a str,
    receptive_field: serde_json::Value,
}

/// `[5, 5]` per spatial axis, or `"whole"` after flatten/dense.
fn field_json(f: &Field) -> serde_json::Value {
    match f {
        Field::Axes(a) => serde_json::json!(a),
        Field::Whole => serde_json::json!("whole"),
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The `--format json` object (cli.md), also when there are errors.
pub fn to_json(out: &CheckOutput, file: &str) -> serde_json::Value {
    let p = out.program.as_ref();
    let sizes = p.map(|p| analyze(&p.model));
    let j = Json {
        file,
        ok: !out.has_errors(),
        model: p.map(|p| p.model.name.as_str()).or(out.model_name.as_deref()),
        params: p.map_or(0, |p| p.total_params()),
        flops: p.map_or(0, |p| p.total_flops()),
        inputs: p.map_or(vec![], |p| {
            p.model.inputs.iter().map(|t| Shaped { name: &t.name, shape: &t.shape }).collect()
        }),
        outputs: p.map_or(vec![], |p| {
            p.model.outputs.iter().map(|t| Shaped { name: &t.name, shape: &t.shape }).collect()
        }),
        values: p.map_or(vec![], |p| {
            p.model.values.iter().map(|t| Shaped { name: &t.name, shape: &t.shape }).collect()
        }),
        layers: p.map_or(vec![], |p| {
            p.model
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| JsonLayer {
                    name: &l.name,
                    kind: l.op.kind(),
                    value: &l.value,
                    shape: &l.shape,
                    params: l.params,
                    flops: l.flops,
                    receptive_field: sizes
                        .as_ref()
                        .and_then(|s| s.layers.get(i))
                        .map_or(serde_json::Value::Null, field_json),
                })
                .collect()
        }),
        accepted_sizes: sizes.as_ref().map_or(vec![], |s| {
            s.inputs
                .iter()
                .map(|a| JsonAxis {
                    input: &a.input,
                    axis: a.axis,
                    declared: a.declared,
                    min: a.accepted.min(),
                    multiple: a.accepted.modulus(),
                    rule: a.accepted.describe(),
                    exact_min: a.exact.min(),
                    exact_multiple: a.exact.modulus(),
                    exact_rule: a.exact.describe(),
                })
                .collect()
        }),
        receptive_field: match (p, sizes.as_ref()) {
            (Some(p), Some(s)) => p
                .model
                .outputs
                .iter()
                .zip(&s.outputs)
                .map(|(o, f)| JsonField { output: &o.name, receptive_field: field_json(f) })
                .collect(),
            _ => vec![],
        },
        diagnostics: {
            let lines = crate::diag::LineIndex::new(&out.source);
            crate::diag::shown(&out.diagnostics).into_iter().map(|d| d.to_json(&lines)).collect()
        },
        diagnostics_not_shown: out.diagnostics.len().saturating_sub(crate::diag::SHOWN),
    };
    serde_json::to_value(j).unwrap_or(serde_json::Value::Null)
}

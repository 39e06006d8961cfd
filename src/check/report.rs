//! What `check` prints: the per-layer table for people, the JSON object for tools.

use super::CheckOutput;
use super::model::fmt_shape;
use crate::diag::JsonDiagnostic;
use serde::Serialize;

/// The human summary: one row per layer, then totals.
pub fn summary_table(out: &CheckOutput) -> String {
    let Some(p) = &out.program else { return String::new() };
    let m = &p.model;
    let mut rows: Vec<[String; 5]> =
        vec![["layer".into(), "kind".into(), "output".into(), "params".into(), "FLOPs".into()]];
    for l in &m.layers {
        rows.push([
            l.name.clone(),
            l.op.kind().into(),
            fmt_shape(&l.shape),
            group(l.params as u64),
            group(l.flops),
        ]);
    }
    let widths: Vec<usize> =
        (0..5).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    let inputs: Vec<String> =
        m.inputs.iter().map(|t| format!("{} {}", t.name, fmt_shape(&t.shape))).collect();
    s.push_str(&format!("model {}  (input {})\n\n", m.name, inputs.join(", ")));
    for (i, r) in rows.iter().enumerate() {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        s.push_str(line.trim_end());
        s.push('\n');
        if i == 0 {
            s.push_str(&"-".repeat(widths.iter().sum::<usize>() + 8));
            s.push('\n');
        }
    }
    s.push('\n');
    let outputs: Vec<String> =
        m.outputs.iter().map(|o| format!("{} {}", o.name, fmt_shape(&o.shape))).collect();
    s.push_str(&format!("output     {}\n", outputs.join(", ")));
    s.push_str(&format!("parameters {}\n", group(p.total_params())));
    s.push_str(&format!("FLOPs      {} per sample (forward, multiply-add = 2)\n", group(p.total_flops())));
    let warnings = out.diagnostics.len();
    s.push_str(&format!("warnings   {warnings}\n"));
    s
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
    diagnostics: Vec<JsonDiagnostic<'a>>,
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
}

/// The `--format json` object (cli.md), also when there are errors.
pub fn to_json(out: &CheckOutput, file: &str) -> serde_json::Value {
    let p = out.program.as_ref();
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
                .map(|l| JsonLayer {
                    name: &l.name,
                    kind: l.op.kind(),
                    value: &l.value,
                    shape: &l.shape,
                    params: l.params,
                    flops: l.flops,
                })
                .collect()
        }),
        diagnostics: out.diagnostics.iter().map(|d| d.to_json(&out.source)).collect(),
    };
    serde_json::to_value(j).unwrap_or(serde_json::Value::Null)
}

//! The diff for people (a table in the style of `check`'s) and for tools (JSON).

use super::{Change, FieldChange, LayerDiff, ModelDiff, shape_text};
use serde_json::Value;

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

/// A value as the table writes it: numbers grouped, shapes as `[1, 2]`, strings bare.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_u64().map_or_else(|| n.to_string(), group),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            shape_text(&items.iter().filter_map(Value::as_u64).map(|x| x as usize).collect::<Vec<_>>())
        }
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `a` when both sides agree, else `a → b`; `a` or `b` alone for a removed or added layer.
fn cell<T: PartialEq>(a: Option<T>, b: Option<T>, show: impl Fn(&T) -> String) -> String {
    match (a, b) {
        (Some(x), Some(y)) if x == y => show(&x),
        (Some(x), Some(y)) => format!("{} → {}", show(&x), show(&y)),
        (Some(x), None) | (None, Some(x)) => show(&x),
        (None, None) => String::new(),
    }
}

fn row(d: &LayerDiff) -> [String; 7] {
    let (a, b) = (d.a.as_ref(), d.b.as_ref());
    let mark = match d.change {
        Change::Added => "+",
        Change::Removed => "-",
        Change::Changed => "~",
    };
    let name = match (a, b) {
        (Some(x), Some(y)) if x.name != y.name => format!("{} (was {})", y.name, x.name),
        _ => b.or(a).map_or(String::new(), |s| s.name.clone()),
    };
    [
        mark.into(),
        name,
        cell(a.map(|s| &s.kind), b.map(|s| &s.kind), |k| k.to_string()),
        cell(a.map(|s| &s.shape), b.map(|s| &s.shape), |s| shape_text(s)),
        cell(a.map(|s| s.params), b.map(|s| s.params), |&p| group(p as u64)),
        cell(a.map(|s| s.flops), b.map(|s| s.flops), |&f| group(f)),
        cell(a.map(|s| &s.receptive_field), b.map(|s| &s.receptive_field), |r| r.to_string()),
    ]
}

fn field_line(f: &FieldChange) -> String {
    format!("{}: {} → {}", f.field, text(&f.a), text(&f.b))
}

/// The human form: a summary line, the changed layers as a table (each with its changed
/// attributes below it), then model, optimizer and train changes and the totals.
pub fn to_table(d: &ModelDiff, file_a: &str, file_b: &str) -> String {
    let mut s = String::new();
    let count = |c: Change| d.layers.iter().filter(|l| l.change == c).count();
    if d.is_equal() {
        s.push_str(&format!(
            "{file_a} and {file_b} are the same model: {} layers, {} parameters\n",
            d.a.layers,
            group(d.a.params)
        ));
    } else {
        s.push_str(&format!(
            "{file_a} → {file_b}: {} layers added, {} removed, {} changed\n",
            count(Change::Added),
            count(Change::Removed),
            count(Change::Changed)
        ));
    }
    for (a, b) in &d.renamed {
        s.push_str(&format!("(binding `{a}` is `{b}` in {file_b}: renamed, not a change)\n"));
    }
    if !d.layers.is_empty() {
        s.push('\n');
        let mut rows: Vec<[String; 7]> = vec![[
            String::new(),
            "layer".into(),
            "kind".into(),
            "output".into(),
            "params".into(),
            "FLOPs".into(),
            "RF".into(),
        ]];
        rows.extend(d.layers.iter().map(row));
        let widths: Vec<usize> =
            (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for (i, r) in rows.iter().enumerate() {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}  {:>w5$}  {:>w6$}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
                w5 = widths[5],
                w6 = widths[6]
            );
            s.push_str(line.trim_end());
            s.push('\n');
            if i == 0 {
                s.push_str(&"-".repeat(widths.iter().sum::<usize>() + 12));
                s.push('\n');
            } else {
                // Attributes and connections that changed, under the row.
                let shown = ["kind", "shape", "params", "flops", "receptive_field"];
                for f in d.layers[i - 1].fields.iter().filter(|f| !shown.contains(&f.field.as_str())) {
                    s.push_str(&format!("{:w$}  {}\n", "", field_line(f), w = widths[0] + 2));
                }
            }
        }
    }
    let sections = [("model", &d.model), ("optimizer", &d.optimizer), ("train", &d.train)];
    if sections.iter().any(|(_, f)| !f.is_empty()) {
        s.push('\n');
    }
    for (title, fields) in sections {
        for (k, f) in fields.iter().enumerate() {
            let head = if k == 0 { title } else { "" };
            s.push_str(&format!("{head:<10} {}\n", field_line(f)));
        }
    }
    if !d.is_equal() {
        s.push('\n');
        s.push_str(&format!("parameters {}\n", cell(Some(d.a.params), Some(d.b.params), |&p| group(p))));
        s.push_str(&format!(
            "FLOPs      {} per sample\n",
            cell(Some(d.a.flops), Some(d.b.flops), |&f| group(f))
        ));
    }
    s
}

/// The `--format json` object.
pub fn to_json(d: &ModelDiff, file_a: &str, file_b: &str) -> Value {
    serde_json::json!({
        "a": { "file": file_a, "model": d.a.model, "layers": d.a.layers, "params": d.a.params, "flops": d.a.flops },
        "b": { "file": file_b, "model": d.b.model, "layers": d.b.layers, "params": d.b.params, "flops": d.b.flops },
        "equal": d.is_equal(),
        "renamed": d.renamed.iter().map(|(a, b)| serde_json::json!({"a": a, "b": b})).collect::<Vec<_>>(),
        "layers": d.layers,
        "model": d.model,
        "optimizer": d.optimizer,
        "train": d.train,
    })
}

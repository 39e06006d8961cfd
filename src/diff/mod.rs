//! `geonetc diff`: a semantic diff of two checked programs — layers added, removed or changed
//! (kind, attributes, inputs, output shape, parameter and FLOP counts, receptive field), model
//! inputs and outputs, accepted sizes, optimizer and train settings.
//!
//! **Matching.** Layers are matched by their stable names (`e1.conv0`). Layer names start with
//! the name of the binding they belong to, so renaming a binding would rename every layer in
//! it; bindings are therefore paired first:
//!
//! 1. a binding of the same name in both programs is the same binding;
//! 2. the remaining bindings are paired in source order when they hold the same layers (the
//!    same names after the binding prefix, the same kinds) — a renamed binding;
//! 3. inputs are paired by position (renaming an input is not a change either).
//!
//! A layer of B is then named in A's terms (its binding replaced by the paired one) and matched
//! by name. What is left over is added (in B only) or removed (in A only). A binding renamed
//! *and* given other layers (names or kinds) is therefore shown as removed and added. Reformatting changes
//! nothing the checker produces, so it is never a change.
//!
//! Depends on `check` only.

mod render;

pub use render::{to_json, to_table};

use crate::check::program::{Layer, Model, Program, ValueRef};
use crate::check::sizes::{Field, analyze};
use crate::check::{describe_axis, fmt_shape};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// One setting or attribute that differs; `null` where one side lacks it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub a: Value,
    pub b: Value,
}

/// What the table shows of a layer on one side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerSide {
    pub name: String,
    pub kind: String,
    pub shape: Vec<usize>,
    pub params: usize,
    pub flops: u64,
    pub receptive_field: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerDiff {
    pub change: Change,
    pub a: Option<LayerSide>,
    pub b: Option<LayerSide>,
    /// For a changed layer: what differs (attributes by name, `kind`, `inputs`, `shape`,
    /// `params`, `flops`, `receptive_field`, `init`).
    pub fields: Vec<FieldChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    pub model: String,
    pub layers: usize,
    pub params: u64,
    pub flops: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelDiff {
    pub a: Totals,
    pub b: Totals,
    /// Input shapes, accepted sizes, outputs and their receptive fields.
    pub model: Vec<FieldChange>,
    pub layers: Vec<LayerDiff>,
    pub optimizer: Vec<FieldChange>,
    pub train: Vec<FieldChange>,
    /// Bindings paired under another name (A's name, B's name): not a change.
    pub renamed: Vec<(String, String)>,
}

impl ModelDiff {
    /// Whether the two programs mean the same (names of bindings aside).
    pub fn is_equal(&self) -> bool {
        self.model.is_empty()
            && self.layers.is_empty()
            && self.optimizer.is_empty()
            && self.train.is_empty()
            && self.a.params == self.b.params
            && self.a.flops == self.b.flops
    }
}

fn change(field: impl Into<String>, a: impl Serialize, b: impl Serialize) -> FieldChange {
    FieldChange {
        field: field.into(),
        a: serde_json::to_value(a).unwrap_or(Value::Null),
        b: serde_json::to_value(b).unwrap_or(Value::Null),
    }
}

/// Flattens serialised settings to `path → leaf`; an externally tagged enum
/// (`{"Adam": {...}}`) becomes `kind = "adam"` plus its fields.
fn flatten(v: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match v {
        Value::Object(m) if m.len() == 1 && m.keys().all(|k| k.starts_with(char::is_uppercase)) => {
            for (k, inner) in m {
                let key = if path.is_empty() { "kind".to_string() } else { path.to_string() };
                out.insert(key, Value::String(k.to_lowercase()));
                // An optimizer's `kind` holds its settings: they read as `lr`, not `kind.lr`.
                let children = match path.rsplit_once('.') {
                    _ if path == "kind" => "",
                    Some((parent, "kind")) => parent,
                    _ => path,
                };
                flatten(inner, children, out);
            }
        }
        Value::Object(m) => {
            for (k, inner) in m {
                flatten(inner, &join(k), out);
            }
        }
        Value::String(s) if path.is_empty() => {
            out.insert("kind".into(), Value::String(s.to_lowercase()));
        }
        leaf => {
            out.insert(path.to_string(), leaf.clone());
        }
    }
}

/// Field-by-field differences of two serialisable settings.
fn settings_diff(a: &impl Serialize, b: &impl Serialize) -> Vec<FieldChange> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten(&serde_json::to_value(a).unwrap_or(Value::Null), "", &mut fa);
    flatten(&serde_json::to_value(b).unwrap_or(Value::Null), "", &mut fb);
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            a: fa.get(k).cloned().unwrap_or(Value::Null),
            b: fb.get(k).cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// The layer names of a binding with the binding prefix removed, with their kinds.
fn binding_signature<'a>(m: &'a Model, binding: &str) -> Vec<(&'a str, &'static str)> {
    m.layers.iter().filter(|l| l.value == binding).map(|l| (suffix(&l.name, binding), l.op.kind())).collect()
}

fn suffix<'a>(name: &'a str, binding: &str) -> &'a str {
    name.strip_prefix(binding).and_then(|s| s.strip_prefix('.')).unwrap_or(name)
}

/// Every binding a layer belongs to, in source order (model values, then `output0`, ...).
fn bindings(m: &Model) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for l in &m.layers {
        if !out.contains(&l.value) {
            out.push(l.value.clone());
        }
    }
    out
}

/// B's binding names → A's (only where they differ).
fn pair_bindings(a: &Model, b: &Model) -> HashMap<String, String> {
    let (ba, bb) = (bindings(a), bindings(b));
    let free_a: Vec<&String> = ba.iter().filter(|n| !bb.contains(n)).collect();
    let free_b: Vec<&String> = bb.iter().filter(|n| !ba.contains(n)).collect();
    let mut map = HashMap::new();
    let mut next_a = 0;
    for nb in free_b {
        let sig = binding_signature(b, nb);
        if let Some(k) = (next_a..free_a.len()).find(|&k| binding_signature(a, free_a[k]) == sig) {
            map.insert(nb.clone(), free_a[k].clone());
            next_a = k + 1;
        }
    }
    map
}

/// A layer of B named in A's terms.
fn canonical(l: &Layer, renames: &HashMap<String, String>) -> String {
    match renames.get(&l.value) {
        Some(a) if l.name.starts_with(&format!("{}.", l.value)) => {
            format!("{a}.{}", suffix(&l.name, &l.value))
        }
        _ => l.name.clone(),
    }
}

fn side(l: &Layer, rf: Option<&Field>) -> LayerSide {
    LayerSide {
        name: l.name.clone(),
        kind: l.op.kind().into(),
        shape: l.shape.clone(),
        params: l.params,
        flops: l.flops,
        receptive_field: rf.map_or("—".into(), Field::describe),
    }
}

/// The value a layer input is, in A's terms: an input by position, a layer by canonical name.
fn input_names(inputs: &[ValueRef], layer_names: &[String]) -> Vec<String> {
    inputs
        .iter()
        .map(|v| match *v {
            ValueRef::Input(i) => format!("input {i}"),
            ValueRef::Layer(i) => layer_names.get(i).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Compares two checked programs.
pub fn diff(pa: &Program, pb: &Program) -> ModelDiff {
    let (a, b) = (&pa.model, &pb.model);
    let renames = pair_bindings(a, b);
    let (sa, sb) = (analyze(a), analyze(b));
    let names_a: Vec<String> = a.layers.iter().map(|l| l.name.clone()).collect();
    let names_b: Vec<String> = b.layers.iter().map(|l| canonical(l, &renames)).collect();
    let index_a: HashMap<&str, usize> = names_a.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();

    let mut layers = vec![];
    let mut matched_a = vec![false; a.layers.len()];
    let mut next_removed = 0;
    let flush_removed = |upto: usize, next: &mut usize, matched: &[bool], out: &mut Vec<LayerDiff>| {
        while *next < upto {
            if !matched[*next] {
                out.push(LayerDiff {
                    change: Change::Removed,
                    a: Some(side(&a.layers[*next], sa.layers.get(*next))),
                    b: None,
                    fields: vec![],
                });
            }
            *next += 1;
        }
    };
    // Which A layers are matched, before walking B in order.
    let pairs: Vec<Option<usize>> = names_b.iter().map(|n| index_a.get(n.as_str()).copied()).collect();
    for i in pairs.iter().flatten() {
        matched_a[*i] = true;
    }
    for (j, lb) in b.layers.iter().enumerate() {
        let side_b = side(lb, sb.layers.get(j));
        match pairs[j] {
            None => {
                layers.push(LayerDiff { change: Change::Added, a: None, b: Some(side_b), fields: vec![] })
            }
            Some(i) => {
                flush_removed(i, &mut next_removed, &matched_a, &mut layers);
                let la = &a.layers[i];
                let side_a = side(la, sa.layers.get(i));
                let mut fields = vec![];
                if la.op.kind() != lb.op.kind() {
                    fields.push(change("kind", la.op.kind(), lb.op.kind()));
                }
                fields.extend(settings_diff(&la.op, &lb.op).into_iter().filter(|f| f.field != "kind"));
                let (ia, ib) = (input_names(&la.inputs, &names_a), input_names(&lb.inputs, &names_b));
                if ia != ib {
                    fields.push(change("inputs", ia, ib));
                }
                if la.shape != lb.shape {
                    fields.push(change("shape", &la.shape, &lb.shape));
                }
                if la.params != lb.params {
                    fields.push(change("params", la.params, lb.params));
                }
                if la.flops != lb.flops {
                    fields.push(change("flops", la.flops, lb.flops));
                }
                if side_a.receptive_field != side_b.receptive_field {
                    fields.push(change("receptive_field", &side_a.receptive_field, &side_b.receptive_field));
                }
                if la.init != lb.init {
                    let describe = |l: &Layer| l.init.as_ref().map(|i| format!("{} values", i.values.len()));
                    fields.push(change("init", describe(la), describe(lb)));
                }
                if !fields.is_empty() {
                    layers.push(LayerDiff {
                        change: Change::Changed,
                        a: Some(side_a),
                        b: Some(side_b),
                        fields,
                    });
                }
            }
        }
    }
    flush_removed(a.layers.len(), &mut next_removed, &matched_a, &mut layers);

    let mut model = vec![];
    for k in 0..a.inputs.len().max(b.inputs.len()) {
        let (ta, tb) = (a.inputs.get(k), b.inputs.get(k));
        let name = tb.or(ta).map_or(String::new(), |t| t.name.clone());
        if ta.map(|t| &t.shape) != tb.map(|t| &t.shape) {
            model.push(change(format!("input {name}"), ta.map(|t| &t.shape), tb.map(|t| &t.shape)));
        }
    }
    let axes = |s: &crate::check::sizes::Sizes, m: &Model| -> BTreeMap<String, String> {
        s.inputs
            .iter()
            .map(|x| {
                let pos = m.inputs.iter().position(|t| t.name == x.input).unwrap_or(0);
                (format!("sizes input {pos} {}", x.axis), describe_axis(x))
            })
            .collect()
    };
    let (xa, xb) = (axes(&sa, a), axes(&sb, b));
    for k in xa.keys().chain(xb.keys().filter(|k| !xa.contains_key(*k))) {
        if xa.get(k) != xb.get(k) {
            model.push(change(k.clone(), xa.get(k), xb.get(k)));
        }
    }
    for k in 0..a.outputs.len().max(b.outputs.len()) {
        let value_a = a.outputs.get(k).map(|o| match o.value {
            ValueRef::Input(i) => format!("input {i}"),
            ValueRef::Layer(i) => names_a[i].clone(),
        });
        let value_b = b.outputs.get(k).map(|o| match o.value {
            ValueRef::Input(i) => format!("input {i}"),
            ValueRef::Layer(i) => names_b[i].clone(),
        });
        let label = b.outputs.get(k).or(a.outputs.get(k)).map_or(String::new(), |o| o.name.clone());
        if value_a != value_b {
            model.push(change(format!("output {label}"), value_a, value_b));
        }
        let (oa, ob) = (a.outputs.get(k).map(|o| &o.shape), b.outputs.get(k).map(|o| &o.shape));
        if oa != ob {
            model.push(change(format!("output {label} shape"), oa, ob));
        }
        let (fa, fb) = (sa.outputs.get(k).map(Field::describe), sb.outputs.get(k).map(Field::describe));
        if fa != fb {
            model.push(change(format!("output {label} receptive field"), fa, fb));
        }
    }
    let mut renamed: Vec<(String, String)> = renames.iter().map(|(b, a)| (a.clone(), b.clone())).collect();
    renamed.sort();
    let totals = |p: &Program| Totals {
        model: p.model.name.clone(),
        layers: p.model.layers.len(),
        params: p.total_params(),
        flops: p.total_flops(),
    };
    ModelDiff {
        a: totals(pa),
        b: totals(pb),
        model,
        layers,
        optimizer: settings_diff(&pa.optimizer, &pb.optimizer),
        train: match (&pa.train, &pb.train) {
            (None, None) => vec![],
            (ta, tb) if ta.is_none() || tb.is_none() => {
                vec![change("train", ta.as_ref().map(|_| "present"), tb.as_ref().map(|_| "present"))]
            }
            (ta, tb) => settings_diff(ta, tb),
        },
        renamed,
    }
}

/// `[16, 128, 128]`, for the table.
pub(crate) fn shape_text(s: &[usize]) -> String {
    fmt_shape(s)
}

#[cfg(test)]
mod tests;

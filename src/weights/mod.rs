//! The weights check: a safetensors weights file (or a training checkpoint) against a checked
//! program, reported as diagnostics on the program's source — which tensors are missing, extra,
//! of the wrong shape or type (with the layer's source line, and a guess at why: a transposed
//! kernel, another channel count), and whether the weights were trained at another input size
//! or on data of another RMS (the metadata `geonetc run` stores beside them).
//!
//! It sits beside `check` (it reads the program and the syntax tree for spans, nothing of the
//! backends), so `check --weights`, `infer`, `eval`, `export` and `run --resume` share it.

use crate::check::program::{Program, ValueRef};
use crate::diag::{Diagnostic, Span, codes};
use crate::ops::{Op, ParamRole, Shape};
use crate::syntax::{self, ast};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};

/// What kind of file is checked: its tensor names differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsKind {
    /// A weights file: `{layer}.{suffix}`, F32 (or F64).
    Weights,
    /// A training checkpoint: `param/{layer}.{suffix}` plus `opt/...` optimizer state.
    Checkpoint,
}

/// Metadata keys written by `geonetc run` beside the weights.
pub const META_INPUT_SHAPES: &str = "input_shapes";
pub const META_DATA_RMS: &str = "data_rms";

/// One tensor the program needs.
struct Needed {
    name: String,
    shape: Shape,
    layer: usize,
    role: ParamRole,
}

fn needed_tensors(program: &Program) -> Vec<Needed> {
    let m = &program.model;
    let shape_of = |v: &ValueRef| -> Shape {
        match *v {
            ValueRef::Input(i) => m.inputs[i].shape.clone(),
            ValueRef::Layer(i) => m.layers[i].shape.clone(),
        }
    };
    let mut out = vec![];
    for (i, l) in m.layers.iter().enumerate() {
        let ins: Vec<Shape> = l.inputs.iter().map(shape_of).collect();
        let refs: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
        for spec in l.op.params(&refs) {
            out.push(Needed {
                name: format!("{}.{}", l.name, spec.role.suffix()),
                shape: spec.shape,
                layer: i,
                role: spec.role,
            });
        }
    }
    out
}

/// Spans the diagnostics point at when no layer is at fault.
struct Anchors {
    model: Span,
    inputs: HashMap<String, Span>,
    train: Option<Span>,
}

fn anchors(source: &str) -> Anchors {
    let (file, _) = syntax::parse(source);
    let mut a = Anchors { model: 0..0, inputs: HashMap::new(), train: None };
    for item in &file.items {
        match item {
            ast::Item::Model(m) if a.model == (0..0) => {
                a.model = m.name.span.clone();
                for s in &m.stmts {
                    if let ast::Stmt::Input { name, span, .. } = s {
                        a.inputs.insert(name.name.clone(), span.clone());
                    }
                }
            }
            ast::Item::Train(t) => {
                let data = t.entries.iter().find(|e| e.key.name == "data");
                a.train = Some(data.map_or(t.keyword.clone(), |e| e.span.clone()));
            }
            _ => {}
        }
    }
    a
}

fn fmt_shape(s: &[usize]) -> String {
    crate::check::fmt_shape(s)
}

/// Checks a weights file's bytes against `program` (checked from `source`). `file` names the
/// weights file in messages. `data_rms` is the RMS of the data the weights will meet, when
/// known (the train block's data for `check --weights`), compared with the one they were
/// trained on. Errors mean the weights cannot be used with this program.
pub fn check_weights(
    program: &Program,
    source: &str,
    bytes: &[u8],
    file: &str,
    kind: WeightsKind,
    data_rms: Option<f64>,
) -> Vec<Diagnostic> {
    let anchors = anchors(source);
    let st = match SafeTensors::deserialize(bytes) {
        Ok(st) => st,
        Err(e) => {
            return vec![
                Diagnostic::error(
                    codes::WEIGHTS_NOT_SAFETENSORS,
                    format!("{file} is not a safetensors file ({e})"),
                    anchors.model.clone(),
                    "the weights given for this model",
                )
                .with_help(
                    "give the weights file `geonetc run` wrote (`save` in the train block; safetensors: \
                     an 8-byte header length, a JSON header, the raw tensors)",
                ),
            ];
        }
    };
    let prefix = match kind {
        WeightsKind::Weights => "",
        WeightsKind::Checkpoint => "param/",
    };
    let m = &program.model;
    let needed = needed_tensors(program);
    let mut present: BTreeMap<String, (Shape, Dtype)> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if kind == WeightsKind::Checkpoint && !name.starts_with(prefix) {
            continue; // optimizer state, checked by the checkpoint loader
        }
        present.insert(name[prefix.len()..].to_string(), (view.shape().to_vec(), view.dtype()));
    }
    let known: HashMap<&str, &Needed> = needed.iter().map(|n| (n.name.as_str(), n)).collect();
    let extra: Vec<(&String, &(Shape, Dtype))> =
        present.iter().filter(|(n, _)| !known.contains_key(n.as_str())).collect();
    let mut diags = vec![];
    for n in &needed {
        let layer = &m.layers[n.layer];
        match present.get(&n.name) {
            None => {
                let mut d = Diagnostic::error(
                    codes::WEIGHTS_MISSING,
                    format!("{file} has no tensor `{}{}`", prefix, n.name),
                    program.span_of(layer),
                    format!("`{}` needs a {} {}", layer.name, n.role.suffix(), fmt_shape(&n.shape)),
                );
                let similar = extra
                    .iter()
                    .filter(|(e, (s, _))| *s == n.shape || strsim::jaro_winkler(e, &n.name) > 0.85)
                    .max_by(|a, b| {
                        strsim::jaro_winkler(a.0, &n.name).total_cmp(&strsim::jaro_winkler(b.0, &n.name))
                    });
                d = match similar {
                    Some((e, (s, _))) => d.with_help(format!(
                        "the file has `{e}` {}: was the layer renamed? Layer names follow the bindings \
                         (`{}`); train again or rename the tensor",
                        fmt_shape(s),
                        layer.name
                    )),
                    None => d.with_help(
                        "these weights were trained for another model; train this one with `geonetc run`",
                    ),
                };
                diags.push(d);
            }
            Some((shape, dtype)) if shape != &n.shape || !matches!(dtype, Dtype::F32 | Dtype::F64) => {
                let (message, label) = if shape != &n.shape {
                    (
                        format!(
                            "`{}` in {file} is {}, the layer needs {}",
                            n.name,
                            fmt_shape(shape),
                            fmt_shape(&n.shape)
                        ),
                        format!("this layer's {} is {}", n.role.suffix(), fmt_shape(&n.shape)),
                    )
                } else {
                    (
                        format!("`{}` in {file} holds {dtype:?} numbers; weights are F32 or F64", n.name),
                        format!("this layer's {}", n.role.suffix()),
                    )
                };
                let mut d = Diagnostic::error(codes::WEIGHTS_SHAPE, message, program.span_of(layer), label);
                if let Some(h) = shape_help(&layer.op, n, shape) {
                    d = d.with_help(h);
                }
                diags.push(d);
            }
            Some(_) => {}
        }
    }
    for (name, (shape, _)) in &extra {
        // `e1.conv0.bias` on a layer without bias points at that layer.
        let owner = name.rsplit_once('.').and_then(|(l, _)| m.layers.iter().find(|x| x.name == l));
        let d = match owner {
            Some(layer) => Diagnostic::error(
                codes::WEIGHTS_EXTRA,
                format!(
                    "{file} has `{prefix}{name}` {}, which `{}` does not have",
                    fmt_shape(shape),
                    layer.name
                ),
                program.span_of(layer),
                format!("`{}` has no such tensor", layer.name),
            )
            .with_help(
                "a bias the layer does not have (`bias=false`)? Remove the tensor or give the layer one",
            ),
            None => {
                let closest = needed
                    .iter()
                    .map(|n| (strsim::jaro_winkler(name, &n.name), &n.name))
                    .filter(|(s, _)| *s > 0.85)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                Diagnostic::error(
                    codes::WEIGHTS_EXTRA,
                    format!(
                        "{file} has `{prefix}{name}` {}, which this model does not have",
                        fmt_shape(shape)
                    ),
                    anchors.model.clone(),
                    "this model",
                )
                .with_help(match closest {
                    Some((_, c)) => format!("did you mean `{c}`? Layer names follow the bindings"),
                    None => "weights of another model? `geonetc check FILE` lists this model's layers".into(),
                })
            }
        };
        diags.push(d);
    }
    diags.extend(metadata_warnings(program, &st_metadata(bytes), &anchors, file, data_rms));
    diags
}

fn st_metadata(bytes: &[u8]) -> HashMap<String, String> {
    SafeTensors::read_metadata(bytes).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default()
}

/// Why a tensor's shape differs, when the shapes tell.
fn shape_help(op: &Op, n: &Needed, found: &[usize]) -> Option<String> {
    let need = &n.shape;
    if n.role != ParamRole::Weight || found.len() != need.len() {
        return (found.len() != need.len()).then(|| {
            format!(
                "a tensor of rank {} where the layer needs rank {}: weights of another model?",
                found.len(),
                need.len()
            )
        });
    }
    let linear = matches!(op, Op::Conv(_) | Op::UpConv(_) | Op::Dense(_));
    if linear && need.len() >= 2 {
        let mut swapped = found.to_vec();
        swapped.swap(0, 1);
        if swapped == *need && found[0] != found[1] {
            return Some(
                "the kernel looks transposed: [in, out, ...] is PyTorch's ConvTranspose layout; geonet \
                 stores every weight as [out, in, kernel...]"
                    .into(),
            );
        }
        if found[2..] != need[2..] {
            return Some(format!(
                "the weights have a {} kernel, this layer a {} one",
                dims(&found[2..]),
                dims(&need[2..])
            ));
        }
        if found[0] != need[0] {
            return Some(format!(
                "the weights were trained with {} output channels, this layer has {}: another channel count",
                found[0], need[0]
            ));
        }
        if found[1] != need[1] {
            return Some(format!(
                "the weights were trained on {} input channels, this layer gets {}: another channel count \
                 upstream",
                found[1], need[1]
            ));
        }
    }
    Some("weights of another model? `geonetc check FILE` lists this model's tensors".into())
}

fn dims(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
}

/// Warnings from the metadata: another training input size, data of another RMS.
fn metadata_warnings(
    program: &Program,
    meta: &HashMap<String, String>,
    anchors: &Anchors,
    file: &str,
    data_rms: Option<f64>,
) -> Vec<Diagnostic> {
    let mut out = vec![];
    let trained: Option<Vec<Shape>> = meta.get(META_INPUT_SHAPES).and_then(|s| serde_json::from_str(s).ok());
    if let Some(trained) = trained {
        for (t, shape) in program.model.inputs.iter().zip(&trained) {
            if &t.shape != shape {
                let span = anchors.inputs.get(&t.name).cloned().unwrap_or_else(|| anchors.model.clone());
                out.push(
                    Diagnostic::warning(
                        codes::WEIGHTS_INPUT_SIZE,
                        format!(
                            "the weights in {file} were trained on `{}` of shape {}; this model declares {}",
                            t.name,
                            fmt_shape(shape),
                            fmt_shape(&t.shape)
                        ),
                        span,
                        format!("trained at {}", fmt_shape(shape)),
                    )
                    .with_help(
                        "filters learn the scale of their training data; declare the training size, or \
                         train again at this one",
                    ),
                );
            }
        }
    }
    let trained_rms: Option<f64> = meta.get(META_DATA_RMS).and_then(|s| s.parse().ok());
    if let (Some(a), Some(b)) = (trained_rms, data_rms)
        && a.is_finite()
        && b.is_finite()
        && (a - b).abs() > 0.1 * a.abs().max(b.abs())
    {
        out.push(
            Diagnostic::warning(
                codes::WEIGHTS_DATA_RMS,
                format!("the weights in {file} were trained on data of RMS {a:.4}; this data has RMS {b:.4}"),
                anchors.train.clone().unwrap_or_else(|| anchors.model.clone()),
                format!("RMS {b:.4}"),
            )
            .with_help(
                "the network learned amplitudes near its training data's; scale the data, or train on it",
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests;

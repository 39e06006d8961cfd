//! ONNX export: a checked program and its parameters as an ONNX model (opset 17).
//!
//! Every op of the language maps to standard ONNX operators (see [`nodes`]); 1-D models use
//! 1-D ONNX ops on `[N, C, L]` tensors. Names:
//!
//! - one ONNX node per layer, named like the layer (`e1.conv0`), whose output tensor has the
//!   layer's name too; inputs keep their names, each model output is an `Identity` node from
//!   the layer to the output's name;
//! - initializers are the checkpoint tensor names (`e1.conv0.weight`, ...). One exception of
//!   layout: ONNX's `ConvTranspose` wants `[in, out, k...]`, so an `upconv`'s weight is written
//!   transposed from geonet's `[out, in, k...]` (as PyTorch stores it);
//! - the batch axis is the symbol `batch`; a spatial input axis on which the model accepts
//!   several sizes (`check`'s accepted sizes) is a symbol too (`x_height`), and the checker's
//!   shape of every layer is written as `value_info` — with the dimensions that follow such an
//!   axis written as expressions of it (`x_height/2`, `(x_width-1)/2`), found by re-running
//!   the layers' shape rules at a second accepted size.

pub mod nodes;

use crate::check::program::{Program, ValueRef};
use crate::check::sizes::{SizeRule, analyze};
use crate::ir::{self, Params};
use crate::ops::Shape;

/// The message types generated from `proto/onnx.proto` by `build.rs`.
#[allow(clippy::all, missing_docs)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// The operator set the export targets.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 is the one that goes with opset 17.
const IR_VERSION: i64 = 8;

/// One axis of a tensor type: a number, a symbol or an expression of a symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbol(String),
    /// Unknown (the checker cannot state it as one expression).
    Unknown,
}

/// Converts a program and its parameters (in `ir::lower` order, as read from a weights file)
/// to an ONNX model. Fails only on parameters that do not fit the program.
pub fn to_onnx(program: &Program, params: &Params) -> Result<onnx::ModelProto, String> {
    let graph = ir::lower(program, 1);
    if params.len() != graph.params().len() {
        return Err(format!(
            "{} parameter tensors given, the model has {}",
            params.len(),
            graph.params().len()
        ));
    }
    for (p, a) in graph.params().iter().zip(params) {
        if a.shape() != p.shape.as_slice() {
            return Err(format!("`{}` is {:?}, the model needs {:?}", p.name, a.shape(), p.shape));
        }
    }
    let m = &program.model;
    let dims = symbolic_dims(program);
    let value_name = |v: &ValueRef| match *v {
        ValueRef::Input(i) => m.inputs[i].name.clone(),
        ValueRef::Layer(i) => m.layers[i].name.clone(),
    };
    let mut builder = nodes::GraphBuilder::default();
    for (i, (layer, node)) in m.layers.iter().zip(graph.nodes()).enumerate() {
        let inputs: Vec<String> = layer.inputs.iter().map(value_name).collect();
        let input_rank = match layer.inputs.first() {
            Some(ValueRef::Input(j)) => m.inputs[*j].shape.len(),
            Some(ValueRef::Layer(j)) => m.layers[*j].shape.len(),
            None => 0,
        };
        let tensors: Vec<(&ir::ParamInfo, &ndarray::ArrayD<f64>)> =
            node.params.iter().map(|&k| (graph.param(k), &params[k])).collect();
        builder.layer(&layer.name, &layer.op, &inputs, input_rank, &tensors);
        builder.value_info(&layer.name, &dims.layers[i]);
    }
    let mut outputs = vec![];
    let input_names: Vec<&str> = m.inputs.iter().map(|t| t.name.as_str()).collect();
    for (k, o) in m.outputs.iter().enumerate() {
        // An output that is an input (or repeats another output) needs a name of its own.
        let taken = input_names.contains(&o.name.as_str()) || m.outputs[..k].iter().any(|p| p.name == o.name);
        let name = if taken { format!("{}_output{k}", o.name) } else { o.name.clone() };
        builder.identity(&format!("output.{name}"), &value_name(&o.value), &name);
        let shape = match o.value {
            ValueRef::Input(i) => dims.inputs[i].clone(),
            ValueRef::Layer(i) => dims.layers[i].clone(),
        };
        outputs.push(nodes::value_info_proto(&name, &shape));
    }
    let inputs =
        m.inputs.iter().zip(&dims.inputs).map(|(t, d)| nodes::value_info_proto(&t.name, d)).collect();
    let graph_proto = builder.finish(&m.name, inputs, outputs);
    Ok(onnx::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![onnx::OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("geonetc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!("geonet model `{}`, exported by geonetc", m.name)),
        graph: Some(graph_proto),
        ..Default::default()
    })
}

/// Serialised protobuf bytes.
pub fn encode(model: &onnx::ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}

/// The tensor types of the inputs and of every layer's output, with the batch axis.
pub struct Dims {
    pub inputs: Vec<Vec<Dim>>,
    pub layers: Vec<Vec<Dim>>,
}

/// Which input axes are symbolic, and how every layer's dimensions follow them.
pub fn symbolic_dims(program: &Program) -> Dims {
    let m = &program.model;
    let sizes = analyze(m);
    let declared_inputs: Vec<Shape> = m.inputs.iter().map(|t| t.shape.clone()).collect();
    let declared_layers: Vec<Shape> = m.layers.iter().map(|l| l.shape.clone()).collect();
    let with_batch = |s: &[usize]| -> Vec<Dim> {
        std::iter::once(Dim::Symbol("batch".into())).chain(s.iter().map(|&d| Dim::Fixed(d))).collect()
    };
    let mut inputs: Vec<Vec<Dim>> = declared_inputs.iter().map(|s| with_batch(s)).collect();
    let mut layers: Vec<Vec<Dim>> = declared_layers.iter().map(|s| with_batch(s)).collect();
    // Per layer dimension: which symbol moved it (None: none yet).
    let mut moved_by: Vec<Vec<Option<String>>> =
        declared_layers.iter().map(|s| vec![None; s.len()]).collect();
    for axis in &sizes.inputs {
        let Some(t) = m.inputs.iter().position(|t| t.name == axis.input) else { continue };
        let Some(other) = another_size(&axis.accepted, axis.declared) else { continue };
        let symbol = format!("{}_{}", axis.input, axis.axis);
        inputs[t][axis.axis_index + 2] = Dim::Symbol(symbol.clone());
        let mut probe = declared_inputs.clone();
        probe[t][axis.axis_index + 1] = other;
        let Some(shapes) = layer_shapes(program, &probe) else { continue };
        for (l, (at_declared, at_other)) in declared_layers.iter().zip(&shapes).enumerate() {
            for (d, (&n1, &n2)) in at_declared.iter().zip(at_other).enumerate() {
                if n1 == n2 {
                    continue;
                }
                layers[l][d + 1] = if moved_by[l][d].is_some() {
                    Dim::Unknown
                } else {
                    moved_by[l][d] = Some(symbol.clone());
                    affine(&symbol, (axis.declared, n1), (other, n2))
                };
            }
        }
    }
    Dims { inputs, layers }
}

/// An accepted size other than the declared one, if the axis accepts several.
fn another_size(rule: &SizeRule, declared: usize) -> Option<usize> {
    match rule {
        SizeRule::Periodic { modulus, .. } => Some(declared + modulus),
        SizeRule::Ranges(_) => {
            (declared + 1..declared + 64).chain((1..declared).rev()).find(|&n| rule.contains(n))
        }
    }
}

/// Every layer's output shape for other input shapes, by the ops' own shape rules.
fn layer_shapes(program: &Program, inputs: &[Shape]) -> Option<Vec<Shape>> {
    let mut out: Vec<Shape> = Vec::with_capacity(program.model.layers.len());
    for l in &program.model.layers {
        let ins: Vec<&[usize]> = l
            .inputs
            .iter()
            .map(|v| match *v {
                ValueRef::Input(i) => inputs.get(i).map(Vec::as_slice),
                ValueRef::Layer(i) => out.get(i).map(Vec::as_slice),
            })
            .collect::<Option<_>>()?;
        let (shape, _) = l.op.output_shape(&ins).ok()?;
        out.push(shape);
    }
    Some(out)
}

/// The line through (n1, o1) and (n2, o2) as an expression of `symbol`: `o = (p·N + c)/q`.
fn affine(symbol: &str, (n1, o1): (usize, usize), (n2, o2): (usize, usize)) -> Dim {
    let (n1, o1, n2, o2) = (n1 as i64, o1 as i64, n2 as i64, o2 as i64);
    let (num, den) = (o2 - o1, n2 - n1);
    if den == 0 || num <= 0 {
        return Dim::Unknown;
    }
    let g = gcd(num, den);
    let (p, q) = (num / g, den / g);
    let c = o1 * q - n1 * p;
    let term = if p == 1 { symbol.to_string() } else { format!("{p}*{symbol}") };
    let text = match (q, c) {
        (1, 0) => term,
        (1, c) if c > 0 => format!("{term}+{c}"),
        (1, c) => format!("{term}-{}", -c),
        (q, 0) => format!("{term}/{q}"),
        (q, c) if c > 0 => format!("({term}+{c})/{q}"),
        (q, c) => format!("({term}-{})/{q}", -c),
    };
    Dim::Symbol(text)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_expressions() {
        assert_eq!(affine("h", (128, 64), (144, 72)), Dim::Symbol("h/2".into()));
        assert_eq!(affine("h", (10, 8), (11, 9)), Dim::Symbol("h-2".into()));
        assert_eq!(affine("h", (9, 4), (11, 5)), Dim::Symbol("(h-1)/2".into()));
        assert_eq!(affine("h", (8, 16), (9, 18)), Dim::Symbol("2*h".into()));
        assert_eq!(affine("h", (8, 10), (9, 11)), Dim::Symbol("h+2".into()));
    }
}

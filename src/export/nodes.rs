//! Each geonet op as ONNX nodes (opset 17), and the protobuf plumbing to write them.
//!
//! | geonet | ONNX |
//! |---|---|
//! | `conv` | `Conv` (pads begin = end = `pad`, `dilations`) |
//! | `upconv` | `ConvTranspose` (weight transposed to `[in, out, k...]`) |
//! | `maxpool` / `avgpool` | `MaxPool` / `AveragePool` with `count_include_pad = 1` |
//! | `upsample` nearest | `Resize`, `nearest`, `asymmetric` coordinates, `floor` (src = ⌊dst/f⌋) |
//! | `upsample` linear | `Resize`, `linear`, `half_pixel` (src = (dst + ½)/f − ½, clamped) |
//! | `flatten` / `dense` | `Flatten(axis = 1)` / `Gemm(transB = 1)` |
//! | `batchnorm` | `BatchNormalization` (inference: running statistics) |
//! | `dropout` | `Identity` (inference) |
//! | activations | `Relu`, `LeakyRelu(alpha)`, `Sigmoid`, `Tanh`, `Softmax(axis = 1)`; `silu` = `Mul(x, Sigmoid(x))` |
//! | `groupnorm` | `Reshape` to `[N, groups, −1]`, `InstanceNormalization` (unit scale), `Reshape` back, `Mul`/`Add` by weight/bias (`[C]`, reshaped to `[C, 1, …]`) |
//! | `concat` / `add` / `sub` | `Concat(axis = 1)` / `Add` / `Sub` |

use super::Dim;
use super::onnx::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use crate::ir::ParamInfo;
use crate::ops::activation::Activation;
use crate::ops::pool::PoolKind;
use crate::ops::upsample::UpsampleMode;
use crate::ops::{Op, ParamRole};
use ndarray::ArrayD;

/// Collects nodes, initializers and value infos in order.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    value_info: Vec<ValueInfoProto>,
}

fn node(
    op_type: &str,
    name: &str,
    inputs: Vec<String>,
    output: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.into()),
        name: Some(name.into()),
        input: inputs,
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn ints(name: &str, values: impl IntoIterator<Item = usize>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.into_iter().map(|v| v as i64).collect(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn float(name: &str, value: f64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value as f32),
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// `pads` as ONNX spells them: every axis' begin, then every axis' end.
fn pads(pad: &[usize]) -> AttributeProto {
    ints("pads", pad.iter().chain(pad).copied())
}

/// An f32 initializer from row-major values.
fn tensor(name: &str, dims: &[usize], values: impl Iterator<Item = f64>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.flat_map(|v| (v as f32).to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// An int64 initializer (shapes for `Reshape`).
fn tensor_i64(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// A tensor type with symbolic or fixed dimensions.
pub fn value_info_proto(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: match d {
                Dim::Fixed(n) => Some(tensor_shape_proto::dimension::Value::DimValue(*n as i64)),
                Dim::Symbol(s) => Some(tensor_shape_proto::dimension::Value::DimParam(s.clone())),
                Dim::Unknown => None,
            },
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    fn initializer(&mut self, info: &ParamInfo, values: &ArrayD<f64>) -> String {
        self.initializers.push(tensor(&info.name, &info.shape, values.iter().copied()));
        info.name.clone()
    }

    /// The nodes of one layer; its output tensor is named like the layer.
    /// `params` are the layer's tensors in `Op::params` order.
    pub fn layer(
        &mut self,
        name: &str,
        op: &Op,
        inputs: &[String],
        input_rank: usize,
        params: &[(&ParamInfo, &ArrayD<f64>)],
    ) {
        let mut ins = inputs.to_vec();
        let node = match op {
            Op::Conv(c) => {
                for (info, values) in params {
                    ins.push(self.initializer(info, values));
                }
                node(
                    "Conv",
                    name,
                    ins,
                    name,
                    vec![
                        ints("kernel_shape", c.kernel.iter().copied()),
                        ints("strides", c.stride.iter().copied()),
                        pads(&c.pad),
                        ints("dilations", c.dilation.iter().copied()),
                        int("group", 1),
                    ],
                )
            }
            Op::UpConv(c) => {
                for (info, values) in params {
                    if info.role == ParamRole::Weight {
                        // geonet `[out, in, k...]` → ONNX `[in, out, k...]`.
                        let mut axes: Vec<usize> = (0..values.ndim()).collect();
                        axes.swap(0, 1);
                        let t = values.view().permuted_axes(axes);
                        let mut dims = info.shape.clone();
                        dims.swap(0, 1);
                        self.initializers.push(tensor(&info.name, &dims, t.iter().copied()));
                        ins.push(info.name.clone());
                    } else {
                        ins.push(self.initializer(info, values));
                    }
                }
                node(
                    "ConvTranspose",
                    name,
                    ins,
                    name,
                    vec![
                        ints("kernel_shape", c.kernel.iter().copied()),
                        ints("strides", c.stride.iter().copied()),
                        pads(&c.pad),
                        int("group", 1),
                    ],
                )
            }
            Op::Pool(p) => {
                let mut attrs = vec![
                    ints("kernel_shape", p.kernel.iter().copied()),
                    ints("strides", p.stride.iter().copied()),
                    pads(&p.pad),
                ];
                let op_type = match p.kind {
                    PoolKind::Max => "MaxPool",
                    PoolKind::Avg => {
                        attrs.push(int("count_include_pad", 1));
                        "AveragePool"
                    }
                };
                node(op_type, name, ins, name, attrs)
            }
            Op::Upsample(u) => {
                let scales_name = format!("{name}.scales");
                let scales: Vec<f64> =
                    [1.0, 1.0].into_iter().chain(u.factor.iter().map(|&f| f as f64)).collect();
                debug_assert_eq!(scales.len(), input_rank + 1);
                self.initializers.push(tensor(&scales_name, &[scales.len()], scales.into_iter()));
                ins.push(String::new()); // no region of interest
                ins.push(scales_name);
                let attrs = match u.mode {
                    UpsampleMode::Nearest => vec![
                        string("mode", "nearest"),
                        string("coordinate_transformation_mode", "asymmetric"),
                        string("nearest_mode", "floor"),
                    ],
                    UpsampleMode::Linear => {
                        vec![string("mode", "linear"), string("coordinate_transformation_mode", "half_pixel")]
                    }
                };
                node("Resize", name, ins, name, attrs)
            }
            Op::Flatten => node("Flatten", name, ins, name, vec![int("axis", 1)]),
            Op::Dense(_) => {
                for (info, values) in params {
                    ins.push(self.initializer(info, values));
                }
                node("Gemm", name, ins, name, vec![int("transB", 1)])
            }
            Op::Activation(a) => match *a {
                Activation::Relu => node("Relu", name, ins, name, vec![]),
                Activation::Sigmoid => node("Sigmoid", name, ins, name, vec![]),
                Activation::Tanh => node("Tanh", name, ins, name, vec![]),
                Activation::Softmax => node("Softmax", name, ins, name, vec![int("axis", 1)]),
                Activation::LeakyRelu { slope } => {
                    node("LeakyRelu", name, ins, name, vec![float("alpha", slope)])
                }
                Activation::Silu => {
                    let sigmoid = format!("{name}.gate");
                    self.nodes.push(node("Sigmoid", &sigmoid, ins.clone(), &sigmoid, vec![]));
                    ins.push(sigmoid);
                    node("Mul", name, ins, name, vec![])
                }
            },
            Op::GroupNorm(g) => self.group_norm(name, g, &ins, input_rank, params),
            Op::BatchNorm(bn) => {
                // Op::params order: weight (scale), bias, running mean, running var — ONNX's.
                for (info, values) in params {
                    ins.push(self.initializer(info, values));
                }
                node(
                    "BatchNormalization",
                    name,
                    ins,
                    name,
                    vec![float("epsilon", bn.eps), float("momentum", 1.0 - bn.momentum)],
                )
            }
            Op::Dropout(_) => node("Identity", name, ins, name, vec![]),
            Op::Concat => node("Concat", name, ins, name, vec![int("axis", 1)]),
            Op::Add => node("Add", name, ins, name, vec![]),
            Op::Sub => node("Sub", name, ins, name, vec![]),
        };
        self.nodes.push(node);
    }

    /// `groupnorm` in opset-17 operators: the input reshaped to `[N, groups, rest]`, normalised
    /// per (sample, group) by `InstanceNormalization` with unit scale, reshaped back, then the
    /// per-channel affine.
    fn group_norm(
        &mut self,
        name: &str,
        g: &crate::ops::groupnorm::GroupNorm,
        ins: &[String],
        input_rank: usize,
        params: &[(&ParamInfo, &ArrayD<f64>)],
    ) -> NodeProto {
        let x = ins[0].clone();
        let grouped_shape = format!("{name}.grouped_shape");
        self.initializers.push(tensor_i64(&grouped_shape, &[0, g.groups as i64, -1]));
        let grouped = format!("{name}.grouped");
        self.nodes.push(node("Reshape", &grouped, vec![x.clone(), grouped_shape], &grouped, vec![]));
        let (ones, zeros) = (format!("{name}.unit_scale"), format!("{name}.zero_shift"));
        self.initializers.push(tensor(&ones, &[g.groups], std::iter::repeat_n(1.0, g.groups)));
        self.initializers.push(tensor(&zeros, &[g.groups], std::iter::repeat_n(0.0, g.groups)));
        let normed = format!("{name}.normalised");
        self.nodes.push(node(
            "InstanceNormalization",
            &normed,
            vec![grouped, ones, zeros],
            &normed,
            vec![float("epsilon", g.eps)],
        ));
        let shape = format!("{name}.input_shape");
        self.nodes.push(node("Shape", &shape, vec![x], &shape, vec![]));
        let restored = format!("{name}.restored");
        self.nodes.push(node("Reshape", &restored, vec![normed, shape], &restored, vec![]));
        // weight and bias keep geonet's `[C]` (so a weights file round-trips) and are reshaped
        // to `[C, 1, ...]` to broadcast over the spatial axes.
        let affine_shape = format!("{name}.affine_shape");
        let mut dims = vec![-1i64];
        dims.extend(std::iter::repeat_n(1, input_rank.saturating_sub(1)));
        self.initializers.push(tensor_i64(&affine_shape, &dims));
        let mut affine = vec![restored];
        for (info, values) in params {
            let stored = self.initializer(info, values);
            let broadcast = format!("{}.broadcast", info.name);
            self.nodes.push(node(
                "Reshape",
                &broadcast,
                vec![stored, affine_shape.clone()],
                &broadcast,
                vec![],
            ));
            affine.push(broadcast);
        }
        let scaled = format!("{name}.scaled");
        self.nodes.push(node("Mul", &scaled, vec![affine[0].clone(), affine[1].clone()], &scaled, vec![]));
        node("Add", name, vec![scaled, affine[2].clone()], name, vec![])
    }

    pub fn identity(&mut self, name: &str, input: &str, output: &str) {
        self.nodes.push(node("Identity", name, vec![input.into()], output, vec![]));
    }

    pub fn value_info(&mut self, name: &str, dims: &[Dim]) {
        self.value_info.push(value_info_proto(name, dims));
    }

    pub fn finish(self, name: &str, input: Vec<ValueInfoProto>, output: Vec<ValueInfoProto>) -> GraphProto {
        GraphProto {
            name: Some(name.into()),
            node: self.nodes,
            initializer: self.initializers,
            input,
            output,
            value_info: self.value_info,
            ..Default::default()
        }
    }
}

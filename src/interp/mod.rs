//! The reference backend: runs an [`ir::Graph`] on ndarray in f64, forward and backward, with
//! the math of each op from `ops`. It is the oracle every other backend is tested against, so it
//! is plain: one array per value, one pass per op, nothing fused.

use crate::ir::{Graph, Node, Params, Value};
use crate::ops::batchnorm::BatchNormCache;
use crate::ops::conv::{Window, as4, conv_backward, conv_forward, from4, upconv_backward, upconv_forward};
use crate::ops::{Op, merge};
use ndarray::{Array1, ArrayD, Ix1, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Values of one forward pass, kept for the backward pass.
pub struct Tape {
    pub values: Vec<ArrayD<f64>>,
    caches: Vec<Cache>,
}

pub enum Cache {
    None,
    PoolArgmax(Vec<usize>),
    BatchNorm(BatchNormCache),
    DropoutMask(ArrayD<f64>),
}

fn vec1(a: &ArrayD<f64>) -> Array1<f64> {
    a.view().into_dimensionality::<Ix1>().expect("[C]").to_owned()
}

fn value<'a>(inputs: &'a [ArrayD<f64>], values: &'a [ArrayD<f64>], v: Value) -> &'a ArrayD<f64> {
    match v {
        Value::Input(i) => &inputs[i],
        Value::Node(n) => &values[n.index()],
    }
}

/// Runs the graph. In training mode batchnorm uses batch statistics and updates its running
/// estimates in `params`, and dropout draws its masks from `seed`.
pub fn forward(
    graph: &Graph,
    params: &mut Params,
    inputs: &[ArrayD<f64>],
    training: bool,
    seed: u64,
) -> Tape {
    let mut values: Vec<ArrayD<f64>> = Vec::with_capacity(graph.nodes().len());
    let mut caches = Vec::with_capacity(graph.nodes().len());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for node in graph.nodes() {
        let xs: Vec<&ArrayD<f64>> = node.inputs.iter().map(|&v| value(inputs, &values, v)).collect();
        let (y, cache) = forward_node(node, params, &xs, training, &mut rng);
        values.push(y);
        caches.push(cache);
    }
    Tape { values, caches }
}

/// One node's forward step (also the JIT backend's path for ops it does not generate code for).
pub fn forward_node(
    node: &Node,
    params: &mut Params,
    xs: &[&ArrayD<f64>],
    training: bool,
    rng: &mut ChaCha8Rng,
) -> (ArrayD<f64>, Cache) {
    {
        let p = |i: usize| &params[node.params[i]];
        let mut cache = Cache::None;
        let y = match &node.op {
            Op::Conv(c) => {
                let g = Window::new(&c.kernel, &c.stride, &c.pad, &c.dilation);
                let b = c.bias.then(|| p(1));
                from4(conv_forward(&as4(xs[0]), p(0), b, &g), xs[0].ndim() == 3)
            }
            Op::UpConv(c) => {
                let g = Window::new(&c.kernel, &c.stride, &c.pad, &vec![1; c.kernel.len()]);
                let s = &node.shape;
                let out_hw = if s.len() == 3 { (1, s[2]) } else { (s[2], s[3]) };
                let b = c.bias.then(|| p(1));
                from4(upconv_forward(&as4(xs[0]), p(0), b, &g, out_hw), xs[0].ndim() == 3)
            }
            Op::Pool(pool) => {
                let (y, arg) = pool.forward(&as4(xs[0]));
                if let Some(arg) = arg {
                    cache = Cache::PoolArgmax(arg);
                }
                from4(y, xs[0].ndim() == 3)
            }
            Op::Upsample(u) => from4(u.forward(&as4(xs[0])), xs[0].ndim() == 3),
            Op::Flatten => xs[0]
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&node.shape))
                .expect("flatten"),
            Op::Dense(d) => d.forward(xs[0], p(0), d.bias.then(|| p(1))),
            Op::Activation(a) => a.forward(xs[0]),
            Op::BatchNorm(bn) => {
                let (gamma, beta) = (vec1(p(0)), vec1(p(1)));
                if training {
                    let (mut rm, mut rv) = (vec1(p(2)), vec1(p(3)));
                    let (y, c) = bn.forward_train(xs[0], &gamma, &beta, &mut rm, &mut rv);
                    params[node.params[2]] = rm.into_dyn();
                    params[node.params[3]] = rv.into_dyn();
                    cache = Cache::BatchNorm(c);
                    y
                } else {
                    bn.forward_eval(xs[0], &gamma, &beta, &vec1(p(2)), &vec1(p(3)))
                }
            }
            Op::Dropout(d) => {
                if training && d.p > 0.0 {
                    let keep = 1.0 / (1.0 - d.p);
                    let mask = xs[0].mapv(|_| if rng.random::<f64>() < d.p { 0.0 } else { keep });
                    let y = xs[0] * &mask;
                    cache = Cache::DropoutMask(mask);
                    y
                } else {
                    xs[0].clone()
                }
            }
            Op::Concat => merge::concat(xs),
            Op::Add => xs[0] + xs[1],
            Op::Sub => xs[0] - xs[1],
        };
        (y, cache)
    }
}

/// The graph's outputs from a tape.
pub fn outputs(graph: &Graph, inputs: &[ArrayD<f64>], tape: &Tape) -> Vec<ArrayD<f64>> {
    graph.outputs().iter().map(|&v| value(inputs, &tape.values, v).clone()).collect()
}

/// Gradients of a scalar with respect to every parameter (zeros for state tensors), given the
/// gradients with respect to the graph's outputs.
pub fn backward(
    graph: &Graph,
    params: &Params,
    inputs: &[ArrayD<f64>],
    tape: &Tape,
    d_outputs: &[ArrayD<f64>],
) -> Params {
    let mut grads: Vec<Option<ArrayD<f64>>> = vec![None; graph.nodes().len()];
    let add = |grads: &mut Vec<Option<ArrayD<f64>>>, v: Value, g: ArrayD<f64>| {
        if let Value::Node(n) = v {
            match &mut grads[n.index()] {
                Some(acc) => *acc += &g,
                slot => *slot = Some(g),
            }
        }
    };
    for (&v, d) in graph.outputs().iter().zip(d_outputs) {
        add(&mut grads, v, d.clone());
    }
    let mut pgrads: Params = graph.params().iter().map(|p| ArrayD::zeros(IxDyn(&p.shape))).collect();
    for (i, node) in graph.nodes().iter().enumerate().rev() {
        let Some(dy) = grads[i].take() else { continue };
        let xs: Vec<&ArrayD<f64>> = node.inputs.iter().map(|&v| value(inputs, &tape.values, v)).collect();
        let dxs = backward_node(node, params, &xs, &tape.values[i], &tape.caches[i], dy, &mut pgrads);
        for (&v, dx) in node.inputs.iter().zip(dxs) {
            add(&mut grads, v, dx);
        }
    }
    pgrads
}

/// One node's backward step: writes its parameter gradients into `pgrads`, returns the
/// gradients of its inputs.
pub fn backward_node(
    node: &Node,
    params: &Params,
    xs: &[&ArrayD<f64>],
    y: &ArrayD<f64>,
    cache: &Cache,
    dy: ArrayD<f64>,
    pgrads: &mut Params,
) -> Vec<ArrayD<f64>> {
    {
        let p = |k: usize| &params[node.params[k]];
        let rank3 = xs[0].ndim() == 3;
        let dxs: Vec<ArrayD<f64>> = match &node.op {
            Op::Conv(c) => {
                let g = Window::new(&c.kernel, &c.stride, &c.pad, &c.dilation);
                let (dx, dw, db) = conv_backward(&as4(xs[0]), p(0), &as4(&dy), &g, true);
                pgrads[node.params[0]] = dw;
                if c.bias {
                    pgrads[node.params[1]] = db.into_dyn();
                }
                vec![from4(dx.expect("asked for dx"), rank3)]
            }
            Op::UpConv(c) => {
                let g = Window::new(&c.kernel, &c.stride, &c.pad, &vec![1; c.kernel.len()]);
                let (dx, dw, db) = upconv_backward(&as4(xs[0]), p(0), &as4(&dy), &g);
                pgrads[node.params[0]] = dw;
                if c.bias {
                    pgrads[node.params[1]] = db.into_dyn();
                }
                vec![from4(dx, rank3)]
            }
            Op::Pool(pool) => {
                let arg = match &cache {
                    Cache::PoolArgmax(a) => Some(a.as_slice()),
                    _ => None,
                };
                vec![from4(pool.backward(as4(xs[0]).dim(), &as4(&dy), arg), rank3)]
            }
            Op::Upsample(u) => vec![from4(u.backward(as4(xs[0]).dim(), &as4(&dy)), rank3)],
            Op::Flatten => vec![
                dy.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(xs[0].raw_dim())
                    .expect("unflatten"),
            ],
            Op::Dense(d) => {
                let (dx, dw, db) = d.backward(xs[0], p(0), &dy);
                pgrads[node.params[0]] = dw;
                if d.bias {
                    pgrads[node.params[1]] = db;
                }
                vec![dx]
            }
            Op::Activation(a) => vec![a.backward(xs[0], y, &dy)],
            Op::BatchNorm(bn) => match &cache {
                Cache::BatchNorm(cache) => {
                    let (dx, dg, db) = bn.backward(cache, &vec1(p(0)), &dy);
                    pgrads[node.params[0]] = dg.into_dyn();
                    pgrads[node.params[1]] = db.into_dyn();
                    vec![dx]
                }
                // Inference-mode batchnorm is an affine map per channel: y = γ·x̂ + β with
                // x̂ = (x − running mean)·inv_std.
                _ => {
                    let inv = vec1(p(3)).mapv(|v| 1.0 / (v + bn.eps).sqrt());
                    let mut shape = vec![1; dy.ndim()];
                    shape[1] = inv.len();
                    let bcast = |v: Array1<f64>| v.into_shape_with_order(IxDyn(&shape)).expect("broadcast");
                    let x_hat = (xs[0] - &bcast(vec1(p(2)))) * &bcast(inv.clone());
                    let per_channel = |a: ArrayD<f64>| {
                        let mut s = a;
                        while s.ndim() > 2 {
                            s = s.sum_axis(ndarray::Axis(2));
                        }
                        s.sum_axis(ndarray::Axis(0))
                    };
                    pgrads[node.params[0]] = per_channel(&dy * &x_hat);
                    pgrads[node.params[1]] = per_channel(dy.clone());
                    vec![&dy * &bcast(&vec1(p(0)) * &inv)]
                }
            },
            Op::Dropout(_) => match &cache {
                Cache::DropoutMask(m) => vec![&dy * m],
                _ => vec![dy],
            },
            Op::Concat => merge::concat_backward(&dy, &xs.iter().map(|x| x.shape()[1]).collect::<Vec<_>>()),
            Op::Add => vec![dy.clone(), dy],
            Op::Sub => vec![dy.clone(), -dy],
        };
        dxs
    }
}

//! The JIT's generated point-wise ops (sigmoid, tanh, silu, softmax, dropout, leaky_relu of any
//! slope, groupnorm, the losses) against the f64 interpreter, on 1-D and 2-D values with channel
//! counts that are not multiples of 4: forward values, every parameter gradient, and three
//! optimizer steps; and each new backward against central differences of the interpreter's
//! forward pass (which does not use any backward code).

use geonetc::check::check_source;
use geonetc::check::program::{LossKind, Program};
use geonetc::interp;
use geonetc::ir;
use geonetc::jit::JitModel;
use geonetc::ops::Lowering;
use geonetc::ops::loss::loss;
use geonetc::runtime::optim::{self, OptState};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

fn max_abs(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

fn close(what: &str, jit: &ArrayD<f64>, reference: &ArrayD<f64>, tol: f64, floor: f64) -> Result<(), String> {
    if jit.shape() != reference.shape() {
        return Err(format!("{what}: shape {:?} vs {:?}", jit.shape(), reference.shape()));
    }
    let scale = max_abs(reference).max(floor).max(1e-6);
    for (i, (a, b)) in jit.iter().zip(reference).enumerate() {
        if (a - b).abs() > tol * scale || a.is_nan() != b.is_nan() {
            return Err(format!("{what}[{i}]: jit {a}, interp {b} (scale {scale})"));
        }
    }
    Ok(())
}

fn program(src: &str) -> Program {
    let out = check_source(src);
    out.program.unwrap_or_else(|| panic!("{src}\n{:#?}", out.diagnostics))
}

fn model(input: &str, body: &str) -> Program {
    program(&format!("model m {{\n    input x: {input}\n    {body}\n    output y\n}}\n"))
}

/// Random parameters (weights near their initialisation, scales and shifts away from 1 and 0).
fn params(g: &ir::Graph, rng: &mut ChaCha8Rng) -> ir::Params {
    let mut p = ir::init_params(g, 1);
    for (p, info) in p.iter_mut().zip(g.params()) {
        *p += &(random(&info.shape, rng) * 0.3);
    }
    p
}

/// Forward values of every node and every parameter gradient, JIT against interpreter.
fn compare(program: &Program, batch: usize, training: bool, seed: u64) -> Result<(), String> {
    let g = ir::lower(program, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p0 = params(&g, &mut rng);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng) * 2.0).collect();
    let mut p_ref = p0.clone();
    let tape = interp::forward(&g, &mut p_ref, &inputs, training, seed);
    let mut jit = JitModel::compile(&g)?;
    let mut p_jit = p0.clone();
    jit.forward(&mut p_jit, &inputs, training, seed);
    // A linear node's value may be the activation fused into it: values of the other nodes.
    for node in g.nodes().iter().filter(|n| n.op.lowering() != Lowering::Linear) {
        let v = ir::Value::Node(node.id);
        close(&format!("value of {}", node.name), &jit.value(v), &tape.values[node.id.index()], 1e-5, 0.0)?;
    }
    if training {
        let outs = interp::outputs(&g, &inputs, &tape);
        let r: Vec<ArrayD<f64>> = outs.iter().map(|o| random(o.shape(), &mut rng)).collect();
        let gref = interp::backward(&g, &p_ref, &inputs, &tape, &r);
        let gjit = jit.backward(&p_jit, &r);
        if gjit.len() != gref.len() {
            return Err(format!("{} gradients vs {}", gjit.len(), gref.len()));
        }
        // A gradient that is zero in exact arithmetic (a conv bias right before a groupnorm with
        // one channel per group) is f32 round-off: compared against 1e-2 of the largest gradient.
        let global = gref.iter().map(max_abs).fold(0.0, f64::max);
        for (k, info) in g.params().iter().enumerate() {
            if info.trainable() {
                close(&format!("grad {}", info.name), &gjit[k], &gref[k], 1e-4, 1e-2 * global)?;
            }
        }
    }
    Ok(())
}

/// The point-wise ops after a 1×1 conv (so every input gradient reaches a parameter), on
/// channel counts 3, 5, 6 and 7, 1-D and 2-D.
const BODIES: &[&str] = &[
    "y = x -> conv(C, kernel=1) -> sigmoid -> conv(2, kernel=1)",
    "y = x -> conv(C, kernel=1) -> tanh -> conv(2, kernel=1)",
    "y = x -> conv(C, kernel=1) -> silu -> conv(2, kernel=1)",
    "y = x -> conv(C, kernel=1) -> softmax -> conv(2, kernel=1)",
    "y = x -> conv(C, kernel=1) -> sigmoid",
    "y = x -> conv(C, kernel=1) -> softmax",
    "y = x -> conv(C, kernel=1) -> dropout(0.3) -> conv(2, kernel=1)",
    "y = x -> conv(C, kernel=1) -> leaky_relu(1.7) -> conv(2, kernel=1)",
    "y = x -> conv(C, kernel=1) -> leaky_relu(-0.4) -> conv(2, kernel=1)",
    "a = x -> conv(C, kernel=1)\n    y = add(a, a) -> leaky_relu(2.5) -> conv(2, kernel=1)",
    "y = x -> conv(C, kernel=3, pad=1) -> tanh -> dropout(0.5) -> silu -> conv(3, kernel=1) -> softmax",
];

const SHAPES: &[&str] = &["[3, 11]", "[5, 6, 7]", "[2, 5, 3]"];

#[test]
fn every_pointwise_op_matches_the_interpreter_forward_and_gradients() {
    for (k, body) in BODIES.iter().enumerate() {
        for (s, shape) in SHAPES.iter().enumerate() {
            let c = [3, 5, 6, 7][(k + s) % 4];
            let p = model(shape, &body.replace('C', &c.to_string()));
            for training in [false, true] {
                for batch in [1, 3] {
                    compare(&p, batch, training, 11 + k as u64).unwrap_or_else(|e| {
                        panic!("{body} on {shape}, C {c}, batch {batch}, training {training}: {e}")
                    });
                }
            }
        }
    }
}

#[test]
fn dropout_drops_the_same_elements_on_both_backends_and_is_the_identity_at_inference() {
    let p = model("[4, 9, 8]", "y = x -> dropout(0.5)");
    let g = ir::lower(&p, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = random(g.inputs()[0].as_slice(), &mut rng);
    let mut jit = JitModel::compile(&g).unwrap();
    let mut params = ir::init_params(&g, 1);
    for (seed, training) in [(5, true), (6, true), (5, false)] {
        let y = jit.forward(&mut params, std::slice::from_ref(&x), training, seed).remove(0);
        let tape = interp::forward(&g, &mut params.clone(), std::slice::from_ref(&x), training, seed);
        let r = interp::outputs(&g, std::slice::from_ref(&x), &tape).remove(0);
        close(&format!("seed {seed}, training {training}"), &y, &r, 1e-6, 0.0).unwrap();
        let zeros = y.iter().filter(|v| **v == 0.0).count();
        if training {
            // p = 0.5 of 576 elements: far from none and from all.
            assert!((200..376).contains(&zeros), "{zeros} of {} dropped", y.len());
        } else {
            close("inference", &y, &x, 1e-7, 0.0).unwrap();
        }
    }
}

/// ∂(Σ r·y)/∂w of every trainable parameter by the JIT against central differences of the
/// interpreter's f64 forward pass.
fn finite_differences(program: &Program, batch: usize) -> Result<(), String> {
    let g = ir::lower(program, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let p0 = params(&g, &mut rng);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng) * 2.0).collect();
    let out_shape = g.shape(g.outputs()[0]).to_vec();
    let r = random(&out_shape, &mut rng);
    let objective = |p: &ir::Params| {
        let mut p = p.clone();
        let tape = interp::forward(&g, &mut p, &inputs, true, 0);
        let y = interp::outputs(&g, &inputs, &tape).remove(0);
        (&y * &r).sum()
    };
    let mut jit = JitModel::compile(&g)?;
    let mut pj = p0.clone();
    jit.forward(&mut pj, &inputs, true, 0);
    let grads = jit.backward(&pj, std::slice::from_ref(&r));
    let h = 1e-5;
    for (k, info) in g.params().iter().enumerate().filter(|(_, i)| i.trainable()) {
        let mut fd = ArrayD::zeros(IxDyn(&info.shape));
        for i in 0..fd.len() {
            let mut plus = p0.clone();
            plus[k].as_slice_mut().expect("standard layout")[i] += h;
            let mut minus = p0.clone();
            minus[k].as_slice_mut().expect("standard layout")[i] -= h;
            fd.as_slice_mut().expect("standard layout")[i] =
                (objective(&plus) - objective(&minus)) / (2.0 * h);
        }
        close(&format!("grad {} vs finite differences", info.name), &grads[k], &fd, 1e-3, 0.0)?;
    }
    Ok(())
}

#[test]
fn every_new_backward_matches_finite_differences() {
    let cases = [
        ("[3, 4, 5]", "y = x -> conv(5, kernel=1) -> sigmoid -> conv(2, kernel=1)"),
        ("[3, 9]", "y = x -> conv(5, kernel=1) -> tanh -> conv(2, kernel=1)"),
        ("[3, 4, 5]", "y = x -> conv(6, kernel=1) -> silu -> conv(2, kernel=1)"),
        ("[3, 9]", "y = x -> conv(5, kernel=1) -> softmax -> conv(2, kernel=1)"),
        ("[3, 4, 5]", "y = x -> conv(5, kernel=1) -> leaky_relu(1.6) -> conv(2, kernel=1)"),
        ("[3, 9]", "y = x -> conv(5, kernel=1) -> leaky_relu(-0.3) -> conv(2, kernel=1)"),
    ];
    for (shape, body) in cases {
        finite_differences(&model(shape, body), 2).unwrap_or_else(|e| panic!("{body} on {shape}: {e}"));
    }
}

/// Three Adam steps of a small network with every point-wise op, JIT against interpreter.
#[test]
fn a_network_with_every_pointwise_op_trains_three_steps_like_the_interpreter() {
    let src = "model m {\n    input x: [3, 8, 10]\n    y = x -> conv(5, kernel=3, pad=1) -> silu -> conv(6, kernel=3, pad=1) -> tanh -> dropout(0.2) -> conv(5, kernel=1) -> leaky_relu(1.5) -> conv(7, kernel=1) -> sigmoid -> conv(3, kernel=1) -> softmax\n    output y\n}\noptimizer adam { lr = 1e-2 }\n";
    let p = program(src);
    let g = ir::lower(&p, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = random(&g.inputs()[0], &mut rng);
    let target = random(g.shape(g.outputs()[0]), &mut rng);
    let trainable: Vec<bool> = g.params().iter().map(|p| p.trainable()).collect();
    let sizes: Vec<usize> = g.params().iter().map(|p| p.shape.iter().product()).collect();
    let (mut pj, mut pr) = (ir::init_params(&g, 2), ir::init_params(&g, 2));
    let (mut oj, mut or) = (OptState::new(&p.optimizer, &sizes), OptState::new(&p.optimizer, &sizes));
    let mut jit = JitModel::compile(&g).unwrap();
    for step in 0..3 {
        let y = jit.forward(&mut pj, std::slice::from_ref(&x), true, step).remove(0);
        let gj = jit.backward(&pj, &[loss(LossKind::Mse, &y, &target).1]);
        let tape = interp::forward(&g, &mut pr, std::slice::from_ref(&x), true, step);
        let y = interp::outputs(&g, std::slice::from_ref(&x), &tape).remove(0);
        let gr =
            interp::backward(&g, &pr, std::slice::from_ref(&x), &tape, &[loss(LossKind::Mse, &y, &target).1]);
        optim::step(&p.optimizer, &mut oj, &mut pj, &gj, &trainable);
        optim::step(&p.optimizer, &mut or, &mut pr, &gr, &trainable);
    }
    let global = pr.iter().map(max_abs).fold(0.0, f64::max);
    for (k, info) in g.params().iter().enumerate() {
        close(&format!("after 3 steps {}", info.name), &pj[k], &pr[k], 1e-4, global).unwrap();
    }
}

#[test]
fn groupnorm_matches_the_interpreter_and_finite_differences() {
    // (channels, groups): one group, one channel per group, and groups of 2 and 3.
    let cases = [(6, 3), (6, 2), (5, 1), (5, 5), (7, 7), (8, 4)];
    for (k, &(c, groups)) in cases.iter().enumerate() {
        for shape in SHAPES {
            let body =
                format!("y = x -> conv({c}, kernel=1) -> groupnorm({groups}) -> silu -> conv(2, kernel=1)");
            let p = model(shape, &body);
            for training in [false, true] {
                for batch in [1, 3] {
                    compare(&p, batch, training, 40 + k as u64).unwrap_or_else(|e| {
                        panic!("{body} on {shape}, batch {batch}, training {training}: {e}")
                    });
                }
            }
        }
    }
    // A value far from 0 (the shifted sums must not cancel), and the first node a groupnorm.
    let p = model(
        "[6, 5, 4]",
        "a = x -> conv(6, kernel=1)\n    y = add(a, a) -> groupnorm(2) -> conv(2, kernel=1)",
    );
    compare(&p, 2, true, 3).unwrap();
    for (shape, body) in [
        ("[3, 4, 5]", "y = x -> conv(6, kernel=1) -> groupnorm(3) -> conv(2, kernel=1)"),
        ("[3, 9]", "y = x -> conv(5, kernel=1) -> groupnorm(1) -> conv(2, kernel=1)"),
    ] {
        finite_differences(&model(shape, body), 2).unwrap_or_else(|e| panic!("{body} on {shape}: {e}"));
    }
}

/// mse, mae and the masked mse on the JIT's buffers (generated kernel, in place over a linear
/// output or into the gradient buffer) against `ops::loss` and the interpreter's backward.
#[test]
fn the_generated_losses_match_the_interpreter() {
    let bodies = [
        ("[3, 6, 7]", "y = x -> conv(5, kernel=3, pad=1)"),
        ("[3, 13]", "y = x -> conv(7, kernel=3, pad=1) -> sigmoid"),
        ("[3, 5, 6]", "y = x -> conv(6, kernel=1) -> relu"),
    ];
    for (shape, body) in bodies {
        let p = model(shape, body);
        let g = ir::lower(&p, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let x = random(&g.inputs()[0], &mut rng);
        let out_shape = g.shape(g.outputs()[0]).to_vec();
        let t = random(&out_shape, &mut rng);
        let mask = ArrayD::from_shape_fn(IxDyn(&out_shape), |_| f64::from(u8::from(rng.random_bool(0.3))));
        for (kind, masked) in [(LossKind::Mse, false), (LossKind::Mae, false), (LossKind::Mse, true)] {
            let what = format!("{body} on {shape}, {kind:?}, masked {masked}");
            let params = ir::init_params(&g, 3);
            let mut pr = params.clone();
            let tape = interp::forward(&g, &mut pr, std::slice::from_ref(&x), true, 0);
            let y = interp::outputs(&g, std::slice::from_ref(&x), &tape).remove(0);
            let (lr, dy) =
                if masked { geonetc::ops::loss::masked_mse(&y, &t, &mask) } else { loss(kind, &y, &t) };
            let gr = interp::backward(&g, &pr, std::slice::from_ref(&x), &tape, &[dy]);
            let mut jit = JitModel::compile(&g).unwrap();
            let mut pj = params.clone();
            jit.load_inputs(std::slice::from_ref(&x));
            jit.forward_loaded(&mut pj, true, 0);
            jit.load_target(&t);
            jit.load_mask(masked.then_some(&mask));
            let (lj, gj) = jit.loss_backward(&pj, kind, &t);
            assert!((lj - lr).abs() <= 1e-5 * lr.abs(), "{what}: loss {lj} vs {lr}");
            for (k, info) in g.params().iter().enumerate() {
                close(&format!("{what}: {}", info.name), &gj[k], &gr[k], 1e-4, 0.0).unwrap();
            }
        }
    }
}

/// In the plan (what `bench --profile` labels each step with), none of these ops runs on the
/// reference code: each is `kernels` with its point-wise or per-channel description, or fused.
#[test]
fn the_plan_runs_every_pointwise_op_on_generated_kernels() {
    let p = model(
        "[6, 8, 8]",
        "y = x -> conv(6, kernel=3, pad=1) -> groupnorm(3) -> silu -> dropout(0.1) -> conv(5, kernel=1) -> tanh -> leaky_relu(-0.5) -> conv(4, kernel=1) -> sigmoid -> conv(3, kernel=1) -> softmax",
    );
    let plan = JitModel::describe_plan(&ir::lower(&p, 2)).unwrap();
    for (op, kernel) in [
        ("groupnorm", "per-channel kernels per sample"),
        ("silu", "point-wise kernel"),
        ("dropout", "point-wise kernel"),
        ("tanh", "point-wise kernel"),
        ("leaky_relu", "per-channel kernel"),
        ("softmax", "point-wise kernel"),
    ] {
        let mut lines = plan.lines().skip_while(|l| !l.contains(&format!("({op}): kernels")));
        assert!(lines.next().is_some(), "{op} is not on kernels in\n{plan}");
        let detail = lines.next().unwrap_or_default();
        assert!(detail.contains(kernel), "{op}: {detail}\n{plan}");
    }
    assert!(!plan.contains("reference"), "{plan}");
    // conv → sigmoid → conv: sigmoid is the first conv's epilogue, its derivative the second
    // conv's input-gradient epilogue.
    assert!(plan.contains("(sigmoid): fused"), "{plan}");
    assert!(plan.contains(", bias, then sigmoid;"), "{plan}");
    assert!(plan.contains(", times sigmoid' of the mask;"), "{plan}");
}

/// cross_entropy on the JIT's buffers (generated kernel: softmax, log-sum-exp, gradient) against
/// `ops::loss` and the interpreter's backward, with probability and class-index targets.
#[test]
fn the_generated_cross_entropy_matches_the_interpreter() {
    for (classes, body) in [
        (5, "y = x -> flatten -> dense(5)"),
        (7, "y = x -> flatten -> dense(7) -> relu"),
        (4, "y = x -> flatten -> dense(9) -> tanh -> dense(4)"),
    ] {
        let p = model("[3, 4, 5]", body);
        let batch = 3;
        let g = ir::lower(&p, batch);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let x = random(&g.inputs()[0], &mut rng) * 3.0;
        let indices = ArrayD::from_shape_fn(IxDyn(&[batch]), |_| rng.random_range(0..classes) as f64);
        let probs = random(&[batch, classes], &mut rng).mapv(|v| v.abs());
        for (what, t) in [("indices", indices), ("probabilities", probs)] {
            let params = ir::init_params(&g, 5);
            let mut pr = params.clone();
            let tape = interp::forward(&g, &mut pr, std::slice::from_ref(&x), true, 0);
            let y = interp::outputs(&g, std::slice::from_ref(&x), &tape).remove(0);
            let (lr, dy) = loss(LossKind::CrossEntropy, &y, &t);
            let gr = interp::backward(&g, &pr, std::slice::from_ref(&x), &tape, &[dy]);
            let mut jit = JitModel::compile(&g).unwrap();
            let mut pj = params.clone();
            jit.load_inputs(std::slice::from_ref(&x));
            jit.forward_loaded(&mut pj, true, 0);
            jit.load_target(&t);
            jit.load_mask(None);
            let (lj, gj) = jit.loss_backward(&pj, LossKind::CrossEntropy, &t);
            assert!((lj - lr).abs() <= 1e-5 * lr.abs(), "{body}, {what}: loss {lj} vs {lr}");
            for (k, info) in g.params().iter().enumerate() {
                close(&format!("{body}, {what}: {}", info.name), &gj[k], &gr[k], 1e-4, 0.0).unwrap();
            }
        }
    }
}

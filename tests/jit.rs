//! Differential tests: the Cranelift backend against the f64 interpreter (the oracle) on every
//! example model and on property-generated layers — forward outputs, parameter gradients, and
//! parameters after three optimizer steps. Tolerance: 1e-4 relative to the largest magnitude of
//! the reference tensor (the JIT computes in f32).

use geonetc::check::check_source;
use geonetc::check::program::{LossKind, Program};
use geonetc::interp;
use geonetc::ir;
use geonetc::jit::JitModel;
use geonetc::ops::ParamRole;
use geonetc::ops::loss::loss;
use geonetc::runtime::optim::{self, OptState};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

fn max_abs(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// `floor`: a magnitude below which a tensor counts as zero — a gradient that is zero in exact
/// arithmetic (a conv bias before batchnorm) is f32 round-off in the JIT, ~1e-7 of the model's
/// gradients, and must not be compared relative to its own ~1e-14 size.
fn close(what: &str, jit: &ArrayD<f64>, reference: &ArrayD<f64>, tol: f64, floor: f64) -> Result<(), String> {
    if jit.shape() != reference.shape() {
        return Err(format!("{what}: shape {:?} vs {:?}", jit.shape(), reference.shape()));
    }
    let scale = max_abs(reference).max(floor).max(1e-6);
    for (i, (a, b)) in jit.iter().zip(reference).enumerate() {
        if (a - b).abs() > tol * scale {
            return Err(format!("{what}[{i}]: jit {a}, interp {b} (scale {scale})"));
        }
    }
    Ok(())
}

/// Fails when the backends returned different numbers of tensors, so a backend that drops an
/// output, a gradient or a parameter cannot pass a comparison that zips the two lists.
fn same_count<A, B>(what: &str, jit: &[A], reference: &[B]) -> Result<(), String> {
    if jit.len() != reference.len() {
        return Err(format!("{what}: jit returned {}, interp {}", jit.len(), reference.len()));
    }
    Ok(())
}

fn program(src: &str) -> Program {
    let out = check_source(src);
    out.program.unwrap_or_else(|| panic!("{src}\n{:#?}", out.diagnostics))
}

/// Forward and gradients of `program` at `batch` on both backends.
fn compare(program: &Program, batch: usize, training: bool) -> Result<(), String> {
    let g = ir::lower(program, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut params = ir::init_params(&g, 1);
    for (p, info) in params.iter_mut().zip(g.params()) {
        match info.role {
            // Running statistics away from 0 and 1, so inference-mode batchnorm (folded into
            // the conv before it by the JIT) is tested with real numbers.
            ParamRole::RunningMean => *p = random(&info.shape, &mut rng) * 0.5,
            ParamRole::RunningVar => *p = random(&info.shape, &mut rng).mapv(|v| 1.0 + 0.5 * v),
            _ => *p += &(random(&info.shape, &mut rng) * 0.1),
        }
    }
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let mut p_ref = params.clone();
    let tape = interp::forward(&g, &mut p_ref, &inputs, training, 9);
    let outs = interp::outputs(&g, &inputs, &tape);
    let mut jit = JitModel::compile(&g)?;
    let mut p_jit = params.clone();
    let jouts = jit.forward(&mut p_jit, &inputs, training, 9);
    same_count("outputs", &jouts, &outs)?;
    same_count("parameters and state", &p_jit, &p_ref)?;
    for (k, (a, b)) in jouts.iter().zip(&outs).enumerate() {
        close(&format!("output {k}"), a, b, 1e-4, 0.0)?;
    }
    for (k, (a, b)) in p_jit.iter().zip(&p_ref).enumerate() {
        close(&format!("state {}", g.params()[k].name), a, b, 1e-4, 0.0)?;
    }
    if training {
        let upstream_of = relu_kink_crossed(&g, &jit, &tape, KINK_NEAR)?;
        let r: Vec<ArrayD<f64>> = outs.iter().map(|o| random(o.shape(), &mut rng)).collect();
        let gref = interp::backward(&g, &p_ref, &inputs, &tape, &r);
        let gjit = jit.backward(&p_jit, &r);
        same_count("gradients", &gjit, &gref)?;
        same_count("gradients per parameter of the graph", &gjit, g.params())?;
        let global = gref.iter().map(max_abs).fold(0.0, f64::max);
        for (k, info) in g.params().iter().enumerate() {
            // Before a ReLU whose input the two backends put on either side of 0 the gradients
            // differ by a jump (see `relu_kink_crossed`); after it they must agree.
            if info.trainable() && upstream_of.is_none_or(|r| info.node >= r) {
                close(&format!("grad {}", info.name), &gjit[k], &gref[k], 1e-4, 1e-2 * global)?;
            }
        }
    }
    Ok(())
}

/// How near 0 (of the node's scale) both backends' values must be where a ReLU input lies on
/// either side: the tolerance of the value comparisons themselves (1e-4, the Winograd accuracy
/// budget of a layer's output). A deep stack of Winograd layers puts a pre-activation ~1.4e-5 of
/// its scale from the f64 value (DnCNN-17's 15th layer, measured), so a tighter bound here
/// would call round-off that every value comparison accepts a wrong kernel.
const KINK_NEAR: f64 = 1e-4;

/// The deepest ReLU (or leaky ReLU) at which the JIT's f32 forward pass put some input on the
/// other side of 0 than the interpreter, if any. A ReLU's derivative jumps at 0, so the
/// gradients of every layer before it jump too (by ~1/√positions of their size: 0.5–4 % on
/// DnCNN-17 at 40×40, see tests/jit_precision.rs); that is f32 round-off, not a wrong kernel, as
/// long as both values are within round-off of 0 — which is checked here (`near` of the node's
/// scale), so a wrong value cannot hide as a "crossed kink".
fn relu_kink_crossed(
    g: &ir::Graph,
    jit: &JitModel,
    tape: &interp::Tape,
    near: f64,
) -> Result<Option<ir::NodeId>, String> {
    use geonetc::ops::Op;
    use geonetc::ops::activation::Activation;
    let mut deepest = None;
    for node in g.nodes() {
        if !matches!(node.op, Op::Activation(Activation::Relu | Activation::LeakyRelu { .. })) {
            continue;
        }
        let (j, r) = (jit.value(ir::Value::Node(node.id)), &tape.values[node.id.index()]);
        let scale = max_abs(r).max(1e-6);
        for (a, b) in j.iter().zip(r) {
            if (*a > 0.0) != (*b > 0.0) {
                if a.abs().max(b.abs()) > near * scale {
                    return Err(format!(
                        "{}: jit {a}, interp {b} on either side of 0 (scale {scale})",
                        node.name
                    ));
                }
                deepest = Some(node.id);
            }
        }
    }
    Ok(deepest)
}

/// Three optimizer steps of the program's own optimizer and loss on both backends.
fn three_steps(program: &Program, batch: usize) -> Result<(), String> {
    let g = ir::lower(program, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let target_shape = g.shape(g.outputs()[0]).to_vec();
    let kind = program.train.as_ref().map(|t| t.loss).unwrap_or(LossKind::Mse);
    let target = match kind {
        LossKind::CrossEntropy => {
            let mut t = ArrayD::zeros(IxDyn(&target_shape));
            for n in 0..batch {
                let c = rng.random_range(0..target_shape[1]);
                t[[n, c]] = 1.0;
            }
            t
        }
        _ => random(&target_shape, &mut rng),
    };
    let trainable: Vec<bool> = g.params().iter().map(|p| p.trainable()).collect();
    let sizes: Vec<usize> = g.params().iter().map(|p| p.shape.iter().product()).collect();
    // Each step starts both backends from the interpreter's parameters and optimizer state, so
    // what is compared after it is that step's round-off alone. Carried over, a ReLU kink crossed
    // in one step (an input within round-off of 0 put on either side by f32 and f64) moves the
    // layers before it apart — Adagrad and Adam turn a gradient jump into a different step —
    // and in the next step every value after them, so no layer could be compared. The JIT's
    // own state still carries across the steps: its recycled gradient arrays, its buffers, its
    // packed weights (repacked from the new parameters each step).
    let (mut pj, mut pr) = (ir::init_params(&g, 2), ir::init_params(&g, 2));
    let mut opt_r = OptState::new(&program.optimizer, &sizes);
    let mut jit = JitModel::compile(&g)?;
    for step in 0..3 {
        pj.clone_from(&pr);
        let mut opt_j = opt_r.clone();
        let y = jit.forward(&mut pj, &inputs, true, step).remove(0);
        let gj = jit.backward(&pj, &[loss(kind, &y, &target).1]);
        let tape = interp::forward(&g, &mut pr, &inputs, true, step);
        let y = interp::outputs(&g, &inputs, &tape).remove(0);
        let gr = interp::backward(&g, &pr, &inputs, &tape, &[loss(kind, &y, &target).1]);
        let upstream_of = relu_kink_crossed(&g, &jit, &tape, KINK_NEAR)?;
        optim::step(&program.optimizer, &mut opt_j, &mut pj, &gj, &trainable);
        // The JIT reuses its gradient arrays from the second step on, as in training.
        jit.recycle_grads(gj);
        optim::step(&program.optimizer, &mut opt_r, &mut pr, &gr, &trainable);
        same_count("parameters after a step", &pj, &pr)?;
        // A parameter whose exact gradient is zero (a conv bias right before batchnorm: ~1e-13
        // in f64) has no effect on the loss, and Adam turns round-off of either sign into
        // full-size steps, so it is left out (as in tests/reference.rs); so are the parameters
        // before a crossed ReLU kink. The rest is compared at 1e-4 of the model's largest
        // parameter.
        let gmax = gr.iter().map(max_abs).fold(0.0, f64::max);
        let global = pr.iter().map(max_abs).fold(0.0, f64::max);
        for (k, info) in g.params().iter().enumerate() {
            if info.trainable() && max_abs(&gr[k]) < 1e-9 * gmax {
                continue;
            }
            if upstream_of.is_some_and(|r| info.node < r) {
                continue;
            }
            close(&format!("after step {step} {}", info.name), &pj[k], &pr[k], 1e-4, global)?;
        }
    }
    Ok(())
}

fn examples() -> Vec<(String, Program)> {
    let mut out = vec![];
    for entry in std::fs::read_dir("examples").expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "geonet") {
            let src = std::fs::read_to_string(&path).expect("read");
            out.push((path.display().to_string(), program(&src)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_example_forward_and_gradients_match_the_interpreter() {
    for (name, p) in examples() {
        for training in [false, true] {
            compare(&p, 2, training).unwrap_or_else(|e| panic!("{name} (training {training}): {e}"));
        }
    }
}

/// Gradient arrays handed back for reuse (here poisoned with NaN) are zeroed and refilled: a
/// second backward pass gives exactly the first one's gradients.
#[test]
fn recycled_gradient_arrays_give_the_same_gradients() {
    for (name, p) in examples() {
        let g = ir::lower(&p, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
        let mut params = ir::init_params(&g, 1);
        let mut jit = JitModel::compile(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let outs = jit.forward(&mut params, &inputs, true, 0);
        let dy: Vec<ArrayD<f64>> = outs.iter().map(|o| random(o.shape(), &mut rng)).collect();
        let first = jit.backward(&params, &dy);
        jit.recycle_grads(first.iter().map(|a| a.mapv(|_| f64::NAN)).collect());
        let second = jit.backward(&params, &dy);
        assert_eq!(first, second, "{name}");
    }
}

#[test]
fn every_example_after_three_optimizer_steps_matches_the_interpreter() {
    for (name, p) in examples() {
        three_steps(&p, 2).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn every_op_matches_the_interpreter() {
    let bodies = [
        "y = x -> maxpool(2)",
        "y = x -> maxpool(3, stride=2, pad=1)",
        "y = x -> avgpool(2)",
        "y = x -> upsample(2)",
        "y = x -> upsample(2, mode=linear)",
        "y = x -> conv(4, kernel=3, pad=1) -> batchnorm",
        "y = x -> conv(4, kernel=3, pad=1) -> sigmoid",
        "y = x -> conv(4, kernel=3, pad=1) -> tanh",
        "y = x -> conv(4, kernel=3, pad=1) -> leaky_relu(0.1)",
        "y = x -> relu -> conv(5, kernel=3)",
        "y = x -> leaky_relu(0.2) -> conv(5, kernel=3)",
        "a = x -> conv(3, kernel=1)\n    y = sub(x, a) -> relu",
        "a = x -> conv(3, kernel=1)\n    b = add(a, a) -> leaky_relu(0.3)\n    y = add(b, a) -> conv(2, kernel=1)",
        "y = x -> conv(4, kernel=1) -> batchnorm -> leaky_relu(0.1) -> conv(3, kernel=3) -> batchnorm",
        // batchnorm → relu fused: consumed by a pooling or a concat (its mask applied in place),
        // as the output, and by a conv (the conv's input-gradient kernel applies it).
        "y = x -> conv(4, kernel=3, pad=1) -> batchnorm -> relu -> maxpool(2)",
        "a = x -> conv(4, kernel=1) -> batchnorm -> relu\n    y = concat(a, x) -> conv(2, kernel=3, pad=1) -> batchnorm -> relu",
        "y = x -> batchnorm -> leaky_relu(0.2) -> conv(3, kernel=3, pad=1)",
        "a = x -> conv(3, kernel=1)\n    y = concat(a, x) -> conv(2, kernel=3, pad=1)",
        "a = x -> conv(3, kernel=1)\n    y = add(a, x) -> conv(2, kernel=1)",
        "a = x -> conv(3, kernel=1)\n    y = sub(a, x) -> conv(2, kernel=1)",
        "y = x -> flatten -> dense(7) -> relu -> dense(3) -> softmax",
        "y = x -> upconv(5, kernel=3, stride=2, pad=1)",
        "y = x -> upconv(2, kernel=2, stride=2) -> relu",
        // A fused activation whose derivative no consumer kernel applies: the mask kernel.
        "y = x -> conv(4, kernel=3, pad=1) -> relu -> maxpool(2)",
        "a = x -> conv(5, kernel=3, pad=1) -> leaky_relu(0.2)\n    b = a -> maxpool(3, stride=1, pad=1)\n    y = concat(b, a)",
    ];
    for body in bodies {
        let src = format!("model m {{\n    input x: [3, 9, 10]\n    {body}\n    output y\n}}\n");
        let p = program(&src);
        for training in [false, true] {
            compare(&p, 3, training).unwrap_or_else(|e| panic!("{body} (training {training}): {e}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// conv and upconv of random geometry: kernel 1–7, stride 1–3, pad, dilation, odd sizes,
    /// 1-D and 2-D, channel counts 1–33 (every remainder of the 4-lane and register blocks).
    #[test]
    fn random_conv_layers_match_the_interpreter(
        two_d in any::<bool>(),
        cin in 1usize..34, cout in 1usize..34,
        k in 1usize..8, s in 1usize..4, dil in 1usize..3,
        extra_h in 0usize..6, extra_w in 0usize..9,
        pad_frac in 0usize..3, up in any::<bool>(), act in 0usize..3,
    ) {
        let span = dil * (k - 1) + 1;
        let pad = (pad_frac * (k - 1)) / 2;
        let (h, w) = (span + extra_h, span + extra_w);
        let act = ["", " -> relu", " -> leaky_relu(0.2)"][act];
        let (shape, layer) = if up {
            let upad = pad.min(k - 1);
            (
                if two_d { format!("[{cin}, {}, {}]", 1 + extra_h, 1 + extra_w) } else { format!("[{cin}, {}]", 1 + extra_w) },
                format!("upconv({cout}, kernel={k}, stride={s}, pad={upad})"),
            )
        } else {
            (
                if two_d { format!("[{cin}, {h}, {w}]") } else { format!("[{cin}, {w}]") },
                format!("conv({cout}, kernel={k}, stride={s}, pad={pad}, dilation={dil})"),
            )
        };
        // A 1×1 conv in front makes the tested layer's input gradient visible.
        let src = format!(
            "model m {{\n    input x: {shape}\n    y = x -> conv({cin}, kernel=1) -> {layer}{act}\n    output y\n}}\n"
        );
        let out = check_source(&src);
        prop_assume!(out.program.is_some());
        let p = out.program.unwrap();
        let batch = 1 + (cin + k) % 3;
        prop_assert!(compare(&p, batch, true).is_ok(), "{}: {:?}", src, compare(&p, batch, true));
    }
}

/// The JIT's loss on its own buffers (mse and mae; written over an unfused linear output in
/// place, or into the gradient buffer) against the interpreter's f64 loss and backward.
#[test]
fn training_steps_with_the_loss_on_buffers_match_the_interpreter() {
    use geonetc::runtime::engine::{Backend, Engine};
    let bodies = [
        "y = x -> conv(4, kernel=3, pad=1) -> relu -> conv(3, kernel=3, pad=1)",
        "y = x -> conv(3, kernel=3, pad=1) -> relu",
        "y = x -> conv(3, kernel=3, pad=1) -> sigmoid",
    ];
    for body in bodies {
        for loss_name in ["mse", "mae"] {
            let src = format!(
                "model m {{\n    input x: [3, 8, 10]\n    {body}\n    output y\n}}\ntrain {{\n    data = synthetic(count = 8)\n    loss = {loss_name}\n}}\n"
            );
            let p = program(&src);
            let g = ir::lower(&p, 2);
            let mut rng = ChaCha8Rng::seed_from_u64(8);
            let x = random(&g.inputs()[0], &mut rng);
            let shape = g.shape(g.outputs()[0]).to_vec();
            let t = random(&shape, &mut rng);
            let kind = p.train.as_ref().unwrap().loss;
            let mut results = vec![];
            for backend in [Backend::Interp, Backend::Jit] {
                let mut params = ir::init_params(&g, 3);
                let mut e = Engine::new(&g, backend).unwrap();
                results.push(e.train_step(&mut params, std::slice::from_ref(&x), &t, kind, 0));
            }
            let ((li, gi), (lj, gj)) = (&results[0], &results[1]);
            same_count("gradients", gj, gi).unwrap();
            assert!((li - lj).abs() <= 1e-5 * li.abs(), "{body} {loss_name}: loss {lj} vs {li}");
            let global = gi.iter().map(max_abs).fold(0.0, f64::max);
            for (k, info) in g.params().iter().enumerate() {
                close(&format!("{body} {loss_name}: {}", info.name), &gj[k], &gi[k], 1e-4, 1e-2 * global)
                    .unwrap();
            }
        }
    }
}

/// An inference pass packs only the forward weights; a backward pass after it packs the input
/// gradient's from the parameters it is given — not the stale ones of an earlier training pass.
#[test]
fn a_backward_pass_after_an_inference_pass_packs_its_own_weights() {
    let p = program(
        "model m {\n    input x: [4, 12, 12]\n    y = x -> conv(8, kernel=3, pad=same) -> relu -> conv(8, kernel=3, pad=same) -> relu -> conv(4, kernel=3, pad=same)\n    output y\n}\n",
    );
    let g = ir::lower(&p, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let p1 = ir::init_params(&g, 1);
    let p2 = ir::init_params(&g, 2);
    let dy = vec![random(g.shape(g.outputs()[0]), &mut rng)];
    let mut a = JitModel::compile(&g).expect("compiles");
    a.forward(&mut p1.clone(), &x, true, 0);
    a.forward(&mut p2.clone(), &x, false, 0);
    let after_training = a.backward(&p2, &dy);
    let mut b = JitModel::compile(&g).expect("compiles");
    b.forward(&mut p2.clone(), &x, false, 0);
    let fresh = b.backward(&p2, &dy);
    assert_eq!(after_training, fresh);
    // And they are p2's gradients: the input gradient reaches the first layer's weights.
    let tape = interp::forward(&g, &mut p2.clone(), &x, false, 0);
    let reference = interp::backward(&g, &p2, &x, &tape, &dy);
    for (k, info) in g.params().iter().enumerate() {
        close(&format!("grad {}", info.name), &fresh[k], &reference[k], 1e-4, 0.0)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

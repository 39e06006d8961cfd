//! Why the JIT's gradients on DnCNN-17 (batchnorm in training mode, 40×40, batch 2) differed
//! from the interpreter's by ~0.5–4 % of scale in some runs and by ~1e-5 in others, and what is
//! compared instead.
//!
//! The gradient of a ReLU network is discontinuous in its inputs: where a ReLU's input crosses 0
//! the derivative jumps, and the gradient of every layer before that ReLU jumps with it (one term
//! of a random-sign sum over the positions: ~1/√3200 ≈ 2 % of the weight gradient next to it,
//! less further up). The JIT computes in f32, so a deep layer's pre-activation differs from the
//! interpreter's by ~1e-6 of its scale; batchnorm puts the pre-activations at unit scale around
//! 0, and with ~3 M ReLU inputs per step about one lies that close to its kink and takes the
//! other branch. Measured (`the_dncnn17_gap_is_a_relu_kink`, `#[ignore]`, ~1 min): with ReLU,
//! two of four seeded runs jumped (1.6 % and 4.1 %, the jump confined to the layers before one
//! ReLU, the layers after it at 1e-5); the same network with SiLU (smooth, everything else equal)
//! agreed at 1.1–1.3e-5 in all four; central differences at h = 1e-8 confirm the interpreter,
//! while at h = 1e-6 they already straddle a kink.
//!
//! So it is neither a bug nor an f32 accumulation error a tolerance could absorb: the tests
//! below compare the smooth network at the size at 1e-4, and the ReLU network at a size
//! where a kink within f32 round-off is improbable (checked for the seeds used).

use geonetc::check::check_source;
use geonetc::check::program::{LossKind, Program};
use geonetc::interp;
use geonetc::ir::{self, Graph, Params};
use geonetc::jit::{ConvAlgorithm, JitModel, JitOptions};
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

fn max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter().zip(b).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
}

fn f32_rounded(a: &ArrayD<f64>) -> ArrayD<f64> {
    a.mapv(|v| v as f32 as f64)
}

/// DnCNN-17 as in `../shared/peers/dncnn17.geonet` (15 conv → batchnorm → relu blocks) on
/// `size`×`size` patches with `ch` channels, and its program (Adam, lr 1e-3).
fn dncnn17(size: usize, ch: usize) -> Program {
    dncnn17_with(size, ch, "relu", "adam { lr = 1e-3 }")
}

/// DnCNN-17 with activation `act` in place of relu and optimizer `opt`.
fn dncnn17_with(size: usize, ch: usize, act: &str, opt: &str) -> Program {
    let src = format!(
        "block cbr(c) = conv(c, kernel=3, pad=same) -> batchnorm -> {act}\nmodel dncnn17 {{\n    input x: [1, {size}, {size}]\n    noise = x -> conv({ch}, kernel=3, pad=same) -> {act} -> cbr({ch}) * 15\n        -> conv(1, kernel=3, pad=same)\n    output sub(x, noise)\n}}\noptimizer {opt}\n"
    );
    let out = check_source(&src);
    out.program.unwrap_or_else(|| panic!("{:#?}", out.diagnostics))
}

/// Initial weights moved off their init values (so batchnorm's scale and shift matter).
fn weights(g: &Graph, rng: &mut ChaCha8Rng) -> Params {
    let mut params = ir::init_params(g, 1);
    for (p, info) in params.iter_mut().zip(g.params()) {
        if info.trainable() {
            *p += &(random(&info.shape, rng) * 0.1);
        }
    }
    params
}

fn interp_grads(g: &Graph, params: &Params, x: &ArrayD<f64>, dy: &ArrayD<f64>) -> Params {
    let mut p = params.clone();
    let xs = [x.clone()];
    let tape = interp::forward(g, &mut p, &xs, true, 1);
    interp::backward(g, &p, &xs, &tape, std::slice::from_ref(dy))
}

fn jit_grads(g: &Graph, params: &Params, x: &ArrayD<f64>, dy: &ArrayD<f64>) -> Params {
    jit_grads_with(g, params, x, dy, &JitOptions::default())
}

fn jit_grads_with(g: &Graph, params: &Params, x: &ArrayD<f64>, dy: &ArrayD<f64>, o: &JitOptions) -> Params {
    let mut jit = JitModel::compile_with(g, o).expect("compile");
    let mut p = params.clone();
    jit.forward(&mut p, std::slice::from_ref(x), true, 1);
    jit.backward(&p, std::slice::from_ref(dy))
}

/// `Σ dy·y`, whose gradient is what `interp_grads(…, dy)` returns.
fn dot_loss(g: &Graph, params: &Params, x: &ArrayD<f64>, dy: &ArrayD<f64>) -> f64 {
    let mut p = params.clone();
    let xs = [x.clone()];
    let tape = interp::forward(g, &mut p, &xs, true, 1);
    (&interp::outputs(g, &xs, &tape)[0] * dy).sum()
}

/// The largest gradient difference relative to each parameter's largest gradient, over the
/// trainable parameters whose exact gradient is not zero (a conv bias before batchnorm has
/// none: its ~1e-14 is round-off of either sign).
fn worst_relative(g: &Graph, a: &Params, b: &Params) -> (f64, String) {
    let global = b.iter().map(max_abs).fold(0.0, f64::max);
    let mut worst = (0.0, String::new());
    for (k, info) in g.params().iter().enumerate() {
        if !info.trainable() || max_abs(&b[k]) < 1e-9 * global {
            continue;
        }
        let e = max_diff(&a[k], &b[k]) / max_abs(&b[k]);
        if e > worst.0 {
            worst = (e, info.name.clone());
        }
    }
    worst
}

/// DnCNN-17 (ReLU) at 16×16 with 64 channels, batch 2 — 6× fewer ReLU inputs than at 40×40, and
/// none within round-off of its kink for this seed with the direct convolution kernels: the
/// JIT's gradients (batchnorm statistics and backward included) are the interpreter's to 1e-4
/// of each parameter's scale. "For this seed" depends on the f32 rounding of every layer: with
/// Winograd layers (other round-off, tests/winograd.rs) one ReLU input of this seed takes the
/// other branch (6.6 % on `noise.cbr11.batchnorm0.bias`), so the direct kernels are pinned here.
#[test]
fn relu_dncnn17_at_16x16_matches_the_interpreter() {
    let g = ir::lower(&dncnn17(16, 64), 2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let params = weights(&g, &mut rng);
    let x = random(&g.inputs()[0], &mut rng);
    let dy = random(g.shape(g.outputs()[0]), &mut rng);
    let direct = JitOptions { conv: ConvAlgorithm::Direct, ..JitOptions::default() };
    let gj = jit_grads_with(&g, &params, &x, &dy, &direct);
    let gr = interp_grads(&g, &params, &x, &dy);
    assert_eq!(gj.len(), gr.len());
    let (e, name) = worst_relative(&g, &gj, &gr);
    assert!(e < 1e-4, "{name}: {e:e} of its scale");
}

/// Three optimizer steps (SGD with momentum) of DnCNN-17 with SiLU (no kinks to cross over three
/// steps; 16×16, 16 channels, batch 2, mse) on both backends, the interpreter computing with the
/// f32-rounded weights as the JIT does (f64 master weights, updated by the same optimizer).
/// Not Adam: its first step is `lr·sign(g)`, so for the weights whose gradient is within
/// round-off of 0 (a few of 2304 per layer) round-off decides a full step (measured: 1.5e-4 of
/// scale after three steps, the "fails narrowly at 1.3e-4").
#[test]
fn smooth_dncnn17_three_sgd_steps_match_the_interpreter() {
    let program = dncnn17_with(16, 16, "silu", "sgd { lr = 1e-2, momentum = 0.9 }");
    let g = ir::lower(&program, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = f32_rounded(&random(&g.inputs()[0], &mut rng));
    let target = f32_rounded(&random(g.shape(g.outputs()[0]), &mut rng));
    let trainable: Vec<bool> = g.params().iter().map(|p| p.trainable()).collect();
    let sizes: Vec<usize> = g.params().iter().map(|p| p.shape.iter().product()).collect();
    let start = weights(&g, &mut rng);
    let run = |use_jit: bool| -> Params {
        let mut params = start.clone();
        let mut opt = OptState::new(&program.optimizer, &sizes);
        let mut jit = use_jit.then(|| JitModel::compile(&g).expect("compile"));
        let xs = std::slice::from_ref(&x);
        for step in 0..3 {
            let grads = match jit.as_mut() {
                Some(j) => {
                    let y = j.forward(&mut params, xs, true, step).remove(0);
                    j.backward(&params, &[loss(LossKind::Mse, &y, &target).1])
                }
                None => {
                    // The weights as the JIT computes with them; the running statistics the
                    // forward updates are kept (in f64, as the JIT keeps them).
                    let mut p32: Params = params
                        .iter()
                        .zip(&trainable)
                        .map(|(p, &t)| if t { f32_rounded(p) } else { p.clone() })
                        .collect();
                    let tape = interp::forward(&g, &mut p32, xs, true, step);
                    let y = interp::outputs(&g, xs, &tape).remove(0);
                    let grads = interp::backward(&g, &p32, xs, &tape, &[loss(LossKind::Mse, &y, &target).1]);
                    for (k, &t) in trainable.iter().enumerate() {
                        if !t {
                            params[k] = p32[k].clone();
                        }
                    }
                    grads
                }
            };
            optim::step(&program.optimizer, &mut opt, &mut params, &grads, &trainable);
        }
        params
    };
    let (pj, pr) = (run(true), run(false));
    let global = pr.iter().map(max_abs).fold(0.0, f64::max);
    let g0 = interp_grads(&g, &start, &x, &target);
    let gmax = g0.iter().map(max_abs).fold(0.0, f64::max);
    for (k, info) in g.params().iter().enumerate() {
        // A conv bias before batchnorm has no exact gradient, and Adam turns its round-off of
        // either sign into full steps (as in tests/jit.rs).
        if info.trainable() && max_abs(&g0[k]) < 1e-9 * gmax {
            continue;
        }
        let d = max_diff(&pj[k], &pr[k]);
        assert!(d <= 1e-4 * global, "{}: {d:e} (scale {global})", info.name);
    }
}

/// DnCNN-17 with SiLU at the size (40×40, batch 2; 32 channels to keep the interpreter
/// quick): no kinks, so the JIT's f32 gradients are the interpreter's to 1e-4 of scale.
#[test]
fn smooth_dncnn17_at_40x40_matches_the_interpreter() {
    let g = ir::lower(&dncnn17_with(40, 32, "silu", "adam { lr = 1e-3 }"), 2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let params = weights(&g, &mut rng);
    let x = random(&g.inputs()[0], &mut rng);
    let dy = random(g.shape(g.outputs()[0]), &mut rng);
    let (gj, gr) = (jit_grads(&g, &params, &x, &dy), interp_grads(&g, &params, &x, &dy));
    assert_eq!(gj.len(), gr.len());
    let (e, name) = worst_relative(&g, &gj, &gr);
    assert!(e < 1e-4, "{name}: {e:e} of its scale");
}

/// The 40×40 ReLU case of the issue, measured: with seed 3 the JIT's gradient jumps by more
/// than 1e-3 of scale, only in the layers before one ReLU (the last layers agree at 1e-4); the
/// interpreter's gradient is the f64 central difference at h = 1e-8; with SiLU the same run
/// agrees at 1e-4. ~1 min (the interpreter at 40×40×64).
#[test]
#[ignore]
fn the_dncnn17_gap_is_a_relu_kink() {
    for (act, jumps) in [("relu", true), ("silu", false)] {
        let g = ir::lower(&dncnn17_with(40, 64, act, "adam { lr = 1e-3 }"), 2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut params = ir::init_params(&g, 1);
        let x = random(&g.inputs()[0], &mut rng);
        let dy = f32_rounded(&random(g.shape(g.outputs()[0]), &mut rng));
        for t in params.iter_mut() {
            t.mapv_inplace(|v| v + 0.1 * rng.random_range(-1.0..1.0));
        }
        let gr = interp_grads(&g, &params, &x, &dy);
        let gj = jit_grads(&g, &params, &x, &dy);
        let (e, name) = worst_relative(&g, &gj, &gr);
        println!("{act}: jit vs interpreter {e:e} of scale ({name})");
        assert_eq!(e > 1e-3, jumps, "{act}: {name} {e:e}");
        let k = |name: &str| g.params().iter().position(|p| p.name == name).expect("param");
        for last in ["noise.cbr14.conv0.weight", "noise.conv1.weight"] {
            let e = max_diff(&gj[k(last)], &gr[k(last)]) / max_abs(&gr[k(last)]);
            assert!(e < 1e-4, "{act}: {last} {e:e}");
        }
        let k0 = k("noise.conv0.weight");
        let h = 1e-8;
        let (mut a, mut b) = (params.clone(), params.clone());
        a[k0].as_slice_mut().expect("contiguous")[0] += h;
        b[k0].as_slice_mut().expect("contiguous")[0] -= h;
        let fd = (dot_loss(&g, &a, &x, &dy) - dot_loss(&g, &b, &x, &dy)) / (2.0 * h);
        let an = gr[k0].as_slice().expect("contiguous")[0];
        println!("{act}: conv0.weight[0]: finite difference {fd:.8e}, interpreter {an:.8e}");
        assert!((fd - an).abs() <= 1e-5 * max_abs(&gr[k0]), "fd {fd} vs {an}");
    }
}

/// The JIT's gradients of the per-channel kernels' ops (batchnorm in training mode with 3
/// channels — a padding lane —, standalone leaky_relu and relu, add, sub) against f64 central
/// differences of the loss, at every weight of the first conv and batchnorm.
#[test]
fn per_channel_ops_gradients_match_finite_differences() {
    let src = "model m {\n    input x: [2, 6, 7]\n    a = x -> conv(3, kernel=3, pad=1) -> batchnorm -> leaky_relu(0.2)\n    b = add(a, a) -> conv(3, kernel=1) -> relu\n    y = sub(b, a) -> batchnorm\n    output y\n}\n";
    let out = check_source(src);
    let g = ir::lower(&out.program.unwrap_or_else(|| panic!("{:#?}", out.diagnostics)), 3);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let params = weights(&g, &mut rng);
    let x = random(&g.inputs()[0], &mut rng);
    let dy = random(g.shape(g.outputs()[0]), &mut rng);
    let gj = jit_grads(&g, &params, &x, &dy);
    let scale = gj.iter().map(max_abs).fold(0.0, f64::max);
    let mut checked = 0;
    for (k, info) in g.params().iter().enumerate() {
        if !info.trainable() || !info.name.starts_with("a.") {
            continue;
        }
        for i in 0..params[k].len() {
            let h = 1e-6;
            let (mut p, mut m) = (params.clone(), params.clone());
            p[k].as_slice_mut().expect("contiguous")[i] += h;
            m[k].as_slice_mut().expect("contiguous")[i] -= h;
            let fd = (dot_loss(&g, &p, &x, &dy) - dot_loss(&g, &m, &x, &dy)) / (2.0 * h);
            let an = gj[k].as_slice().expect("contiguous")[i];
            assert!((fd - an).abs() <= 1e-4 * scale, "{}[{i}]: jit {an}, finite difference {fd}", info.name);
            checked += 1;
        }
    }
    // conv 3×2×3×3 weights and 3 biases, batchnorm 3 scales and 3 shifts.
    assert_eq!(checked, 54 + 3 + 6);
}

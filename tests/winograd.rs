//! Winograd convolution (F(4×4, 3×3) and F(2×2, 3×3), `src/jit/winograd.rs`) against the f64
//! interpreter and against the JIT's direct kernels: random 3×3 layers (odd sizes, channels not
//! a multiple of 4, pad 0 and 1, batch > 1, fused activations and their masks), every example
//! program, and a few training steps; the weight gradient by Winograd also against finite
//! differences and across thread counts.
//!
//! Accepted error (docs/jit.md): a layer's output and every gradient within 1e-4 of that
//! tensor's largest magnitude. The transforms add round-off the direct kernel does not have
//! (F(4×4)'s Bᵀ and Aᵀ hold entries up to 8, G down to 1/24); `scripts/winograd_matrices.py`
//! measures ~1.2e-5 of the output's scale for 64 channels in f32.

use geonetc::check::check_source;
use geonetc::check::program::{LossKind, Program};
use geonetc::interp;
use geonetc::ir;
use geonetc::jit::{ConvAlgorithm, JitModel, JitOptions};
use geonetc::ops::ParamRole;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The accepted error, relative to the largest magnitude of the reference tensor.
const TOL: f64 = 1e-4;

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

fn max_abs(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Largest |a − b| relative to the largest |b| (at least `floor`).
fn rel_err(a: &ArrayD<f64>, b: &ArrayD<f64>, floor: f64) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = max_abs(b).max(floor).max(1e-12);
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn program(src: &str) -> Program {
    let out = check_source(src);
    out.program.unwrap_or_else(|| panic!("{src}\n{:#?}", out.diagnostics))
}

fn options(conv: ConvAlgorithm) -> JitOptions {
    JitOptions { conv, profile: true, ..JitOptions::default() }
}

/// The forward / input-gradient algorithm of every linear node, as the profile reports them.
fn algorithms(jit: &JitModel) -> Vec<String> {
    jit.profile().expect("compiled with profile").nodes.iter().map(|n| n.conv.clone()).collect()
}

/// Parameters with running statistics away from 0 and 1 and weights perturbed, seeded.
fn params(g: &ir::Graph, rng: &mut ChaCha8Rng) -> ir::Params {
    let mut params = ir::init_params(g, 1);
    for (p, info) in params.iter_mut().zip(g.params()) {
        match info.role {
            ParamRole::RunningMean => *p = random(&info.shape, rng) * 0.5,
            ParamRole::RunningVar => *p = random(&info.shape, rng).mapv(|v| 1.0 + 0.5 * v),
            _ => *p += &(random(&info.shape, rng) * 0.1),
        }
    }
    params
}

/// Worst relative errors of `conv`'s outputs and (when `grads`) parameter gradients against the
/// interpreter, on seeded inputs; also the algorithms the JIT chose.
fn against_interpreter(
    p: &Program,
    batch: usize,
    training: bool,
    grads: bool,
    conv: ConvAlgorithm,
) -> (f64, f64, Vec<String>) {
    let g = ir::lower(p, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let params = params(&g, &mut rng);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let mut p_ref = params.clone();
    let tape = interp::forward(&g, &mut p_ref, &inputs, training, 9);
    let outs = interp::outputs(&g, &inputs, &tape);
    let mut jit = JitModel::compile_with(&g, &options(conv)).expect("compiles");
    let mut p_jit = params.clone();
    let jouts = jit.forward(&mut p_jit, &inputs, training, 9);
    assert_eq!(jouts.len(), outs.len());
    let out_err = jouts.iter().zip(&outs).map(|(a, b)| rel_err(a, b, 0.0)).fold(0.0, f64::max);
    let mut grad_err = 0.0f64;
    if grads {
        let r: Vec<ArrayD<f64>> = outs.iter().map(|o| random(o.shape(), &mut rng)).collect();
        let gref = interp::backward(&g, &p_ref, &inputs, &tape, &r);
        let gjit = jit.backward(&p_jit, &r);
        assert_eq!(gjit.len(), gref.len());
        let global = gref.iter().map(max_abs).fold(0.0, f64::max);
        for (k, info) in g.params().iter().enumerate() {
            if info.trainable() {
                grad_err = grad_err.max(rel_err(&gjit[k], &gref[k], 1e-2 * global));
            }
        }
    }
    (out_err, grad_err, algorithms(&jit))
}

/// Random 3×3 stride-1 layers: odd sizes, channel counts with every remainder mod 4, pad 0 and
/// 1, batch 1–3, each tile size forced. Two convs in a row (the second's input gradient feeds
/// the first's weight gradient), without an activation so the gradients are smooth, then with a
/// leaky_relu fused into the first conv and its derivative into the second's input gradient.
#[test]
fn random_layers_match_the_interpreter_within_the_stated_error() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut worst = [(0.0f64, 0.0f64); 3];
    for case in 0..12 {
        let cin = rng.random_range(1..14usize);
        let cmid = rng.random_range(1..19usize);
        let cout = rng.random_range(1..11usize);
        let (h, w) = (rng.random_range(3..15usize), rng.random_range(3..17usize));
        let pad = case % 2;
        let batch = 1 + case % 3;
        let act = if case % 4 >= 2 { " -> leaky_relu(0.25)" } else { "" };
        let src = format!(
            "model m {{\n    input x: [{cin}, {h}, {w}]\n    y = x -> conv({cmid}, kernel=3, pad={pad}){act} -> conv({cout}, kernel=3, pad={pad})\n    output y\n}}\n"
        );
        let out = check_source(&src);
        let Some(p) = out.program else { continue };
        for (t, conv) in [ConvAlgorithm::Winograd, ConvAlgorithm::Winograd2, ConvAlgorithm::Winograd6]
            .into_iter()
            .enumerate()
        {
            let (o, g, algos) = against_interpreter(&p, batch, true, true, conv);
            // The first conv's forward and the second's input gradient at least are Winograd.
            let wino = algos.iter().filter(|a| a.contains("F(")).count();
            assert!(wino >= 2, "{src}: {algos:?}");
            assert!(o <= TOL && g <= TOL, "{src} {conv:?}: output {o:.2e}, gradients {g:.2e}");
            worst[t] = (worst[t].0.max(o), worst[t].1.max(g));
        }
    }
    eprintln!(
        "worst relative error: F(4x4) output {:.2e}, gradients {:.2e}; F(2x2) output {:.2e}, gradients {:.2e}; F(6x6) output {:.2e}, gradients {:.2e}",
        worst[0].0, worst[0].1, worst[1].0, worst[1].1, worst[2].0, worst[2].1
    );
}

/// Wide layers, where the sum over channels is long and F(4×4)'s round-off largest.
#[test]
fn wide_layers_match_the_direct_kernels_within_the_stated_error() {
    for (cin, cout, h, w) in [(64, 64, 20, 21), (33, 70, 9, 40)] {
        let src = format!(
            "model m {{\n    input x: [{cin}, {h}, {w}]\n    y = x -> conv({cout}, kernel=3, pad=1) -> conv({cin}, kernel=3)\n    output y\n}}\n"
        );
        let p = program(&src);
        let (o, g, algos) = against_interpreter(&p, 2, true, true, ConvAlgorithm::Winograd);
        assert!(algos.iter().any(|a| a.starts_with("F(4x4")), "{algos:?}");
        let (od, gd, _) = against_interpreter(&p, 2, true, true, ConvAlgorithm::Direct);
        eprintln!("{cin}->{cout} {h}x{w}: winograd output {o:.2e} grads {g:.2e}; direct {od:.2e} {gd:.2e}");
        assert!(o <= TOL && g <= TOL, "{src}: output {o:.2e}, gradients {g:.2e}");
    }
}

/// Every example, forward in inference mode (batchnorm folded into a Winograd layer's
/// transformed filter) and in training mode, with Winograd forced on every eligible layer and
/// with the cost model's choice: outputs within the stated error of the interpreter.
#[test]
fn every_example_with_winograd_layers_matches_the_interpreter() {
    let mut any = false;
    let mut entries: Vec<_> =
        std::fs::read_dir("examples").expect("examples/").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.extension().is_none_or(|e| e != "geonet") {
            continue;
        }
        let p = program(&std::fs::read_to_string(&path).expect("read"));
        for conv in [ConvAlgorithm::Winograd, ConvAlgorithm::Winograd2, ConvAlgorithm::Auto] {
            for training in [false, true] {
                let (o, _, algos) = against_interpreter(&p, 2, training, false, conv);
                any |= algos.iter().any(|a| a.contains("F("));
                assert!(o <= TOL, "{} {conv:?} training {training}: output {o:.2e}", path.display());
            }
        }
    }
    assert!(any, "no example has a Winograd layer");
}

/// A few training steps of the DnCNN example (3×3 convs with batchnorm and ReLU, its own
/// optimizer) with Winograd F(4×4), with F(6×6) and with the direct kernels: the losses agree
/// within 1e-3 relative each step (f32 round-off on either path, ReLU kinks crossed differently,
/// amplified by the optimizer; a wrong kernel is off by far more from the first step).
#[test]
fn training_curves_with_winograd_match_direct_convolution() {
    use geonetc::runtime::engine::{Backend, Engine};
    let src = std::fs::read_to_string("examples/dncnn.geonet").expect("read");
    let p = program(&src);
    let g = ir::lower(&p, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let clean = random(&g.inputs()[0], &mut rng).mapv(|v| v * 0.5);
    let noisy = &clean + &random(&g.inputs()[0], &mut rng).mapv(|v| v * 0.2);
    let curve = |conv: ConvAlgorithm| -> (Vec<f64>, Vec<String>) {
        let mut e = Engine::with_options(&g, Backend::Jit, &options(conv)).expect("compiles");
        let mut params = ir::init_params(&g, 7);
        let sizes: Vec<usize> = g.params().iter().map(|p| p.shape.iter().product()).collect();
        let trainable: Vec<bool> = g.params().iter().map(|p| p.trainable()).collect();
        let mut opt = geonetc::runtime::optim::OptState::new(&p.optimizer, &sizes);
        let mut losses = vec![];
        for step in 0..8 {
            let (loss, grads) =
                e.train_step(&mut params, std::slice::from_ref(&noisy), &clean, LossKind::Mse, step);
            losses.push(loss);
            geonetc::runtime::optim::step(&p.optimizer, &mut opt, &mut params, &grads, &trainable);
        }
        let algos =
            e.profile().map(|pr| pr.nodes.iter().map(|n| n.conv.clone()).collect()).unwrap_or_default();
        (losses, algos)
    };
    let (direct, _) = curve(ConvAlgorithm::Direct);
    for (conv, tile) in [(ConvAlgorithm::Winograd, "F(4x4"), (ConvAlgorithm::Winograd6, "F(6x6")] {
        let (wino, algos) = curve(conv);
        assert!(algos.iter().any(|a| a.contains(tile)), "{algos:?}");
        // The weight gradients run Winograd too.
        assert!(gradw_algorithms(&algos).iter().any(|a| a.starts_with(tile)), "{algos:?}");
        eprintln!("losses {tile}) {wino:?}\n       direct   {direct:?}");
        assert!(wino.last() < wino.first(), "training does not go down: {wino:?}");
        for (s, (a, b)) in wino.iter().zip(&direct).enumerate() {
            assert!((a - b).abs() <= 1e-3 * b.abs(), "{tile}) step {s}: winograd {a}, direct {b}");
        }
    }
}

/// The weight-gradient algorithm of every linear node (the third of the profile's
/// `forward / input gradient / weight gradient`).
fn gradw_algorithms(algos: &[String]) -> Vec<&str> {
    algos.iter().filter_map(|a| a.split(" / ").nth(2)).collect()
}

/// The Winograd weight gradient on single random 3×3 layers (odd sizes, channels with every
/// remainder mod 4, pad 0, 1 and 2 — x read in place — batch 2–3, each tile size forced): dW and db against the f64
/// interpreter and against the JIT's direct weight-gradient kernel, each within 1e-4 of the
/// reference's largest magnitude.
#[test]
fn winograd_weight_gradient_matches_the_interpreter_and_the_direct_kernel() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let mut worst = [0.0f64; 3];
    for case in 0..10 {
        let cin = rng.random_range(1..14usize);
        let cout = rng.random_range(1..19usize);
        let (h, w) = (rng.random_range(3..23usize), rng.random_range(3..19usize));
        let (pad, batch) = (case % 3, 2 + case % 2);
        let src = format!(
            "model m {{\n    input x: [{cin}, {h}, {w}]\n    y = x -> conv({cout}, kernel=3, pad={pad})\n    output y\n}}\n"
        );
        let p = program(&src);
        let g = ir::lower(&p, batch);
        let mut rng_case = ChaCha8Rng::seed_from_u64(case as u64);
        let params = params(&g, &mut rng_case);
        let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng_case)).collect();
        let mut p_ref = params.clone();
        let tape = interp::forward(&g, &mut p_ref, &inputs, true, 9);
        let outs = interp::outputs(&g, &inputs, &tape);
        let r: Vec<ArrayD<f64>> = outs.iter().map(|o| random(o.shape(), &mut rng_case)).collect();
        let gref = interp::backward(&g, &p_ref, &inputs, &tape, &r);
        let jit_grads = |conv: ConvAlgorithm| {
            let mut jit = JitModel::compile_with(&g, &options(conv)).expect("compiles");
            let mut pj = params.clone();
            jit.forward(&mut pj, &inputs, true, 9);
            (jit.backward(&pj, &r), algorithms(&jit))
        };
        let (gdir, dir_algos) = jit_grads(ConvAlgorithm::Direct);
        // `--conv direct` keeps all three passes direct.
        assert!(dir_algos.iter().all(|a| a == "direct / direct / direct"), "{dir_algos:?}");
        for (t, conv) in [ConvAlgorithm::Winograd, ConvAlgorithm::Winograd2, ConvAlgorithm::Winograd6]
            .into_iter()
            .enumerate()
        {
            let (gw, algos) = jit_grads(conv);
            let tile = ["F(4x4", "F(2x2", "F(6x6"][t];
            assert!(gradw_algorithms(&algos).iter().all(|a| a.starts_with(tile)), "{src}: {algos:?}");
            for k in 0..gref.len() {
                let (e_ref, e_dir) = (rel_err(&gw[k], &gref[k], 0.0), rel_err(&gw[k], &gdir[k], 0.0));
                assert!(e_ref <= TOL && e_dir <= TOL, "{src} {conv:?} param {k}: {e_ref:.2e} / {e_dir:.2e}");
                worst[t] = worst[t].max(e_ref);
            }
        }
    }
    eprintln!(
        "worst dW/db error against the interpreter: F(4x4) {:.2e}, F(2x2) {:.2e}, F(6x6) {:.2e}",
        worst[0], worst[1], worst[2]
    );
}

/// Central finite differences of the f64 interpreter's `Σ r·y` against the JIT's Winograd
/// weight gradient, on a few weights of a 5→6-channel layer (an independent check of the
/// gradient's definition, not only of agreement with the interpreter's backward pass).
#[test]
fn winograd_weight_gradient_matches_finite_differences() {
    let src = "model m {\n    input x: [5, 9, 11]\n    y = x -> conv(6, kernel=3, pad=1)\n    output y\n}\n";
    let p = program(src);
    let g = ir::lower(&p, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let params = params(&g, &mut rng);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let r = {
        let mut p0 = params.clone();
        let tape = interp::forward(&g, &mut p0, &inputs, true, 9);
        let outs = interp::outputs(&g, &inputs, &tape);
        vec![random(outs[0].shape(), &mut rng)]
    };
    let objective = |ps: &ir::Params| -> f64 {
        let mut ps = ps.clone();
        let tape = interp::forward(&g, &mut ps, &inputs, true, 9);
        let outs = interp::outputs(&g, &inputs, &tape);
        outs[0].iter().zip(r[0].iter()).map(|(y, r)| y * r).sum()
    };
    let mut jit = JitModel::compile_with(&g, &options(ConvAlgorithm::Winograd)).expect("compiles");
    let mut pj = params.clone();
    jit.forward(&mut pj, &inputs, true, 9);
    let grads = jit.backward(&pj, &r);
    assert!(gradw_algorithms(&algorithms(&jit)).iter().all(|a| a.starts_with("F(4x4")));
    let wk = g.params().iter().position(|i| i.trainable() && i.shape.len() == 4).expect("a weight");
    let scale = max_abs(&grads[wk]);
    let h = 1e-4;
    for flat in [0, 7, 44, 101, 269] {
        let mut plus = params.clone();
        let mut minus = params.clone();
        plus[wk].as_slice_mut().expect("standard")[flat] += h;
        minus[wk].as_slice_mut().expect("standard")[flat] -= h;
        let fd = (objective(&plus) - objective(&minus)) / (2.0 * h);
        let got = grads[wk].as_slice().expect("standard")[flat];
        assert!((got - fd).abs() <= 1e-4 * scale, "weight {flat}: jit {got}, finite difference {fd}");
    }
}

/// The Winograd weight gradient does not depend on the thread count: fixed chunks within one
/// sample, partials summed in chunk order (the MPI tests rely on the same property across ranks).
#[test]
fn winograd_weight_gradient_is_the_same_on_any_thread_count() {
    let src = "model m {\n    input x: [12, 21, 17]\n    y = x -> conv(9, kernel=3, pad=1) -> relu -> conv(7, kernel=3, pad=1)\n    output y\n}\n";
    let p = program(src);
    let g = ir::lower(&p, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let params = params(&g, &mut rng);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let r = vec![random(&[3, 7, 21, 17], &mut rng)];
    let grads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            let mut jit = JitModel::compile_with(&g, &options(ConvAlgorithm::Winograd)).expect("compiles");
            let mut pj = params.clone();
            jit.forward(&mut pj, &inputs, true, 9);
            let algos = algorithms(&jit);
            assert!(gradw_algorithms(&algos).iter().all(|a| a.starts_with("F(4x4")), "{algos:?}");
            jit.backward(&pj, &r)
        })
    };
    let (one, three) = (grads(1), grads(3));
    for (a, b) in one.iter().zip(&three) {
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "gradients differ across thread counts"
        );
    }
}

/// `--conv` is parsed strictly and named in the error.
#[test]
fn the_algorithm_knob_parses_its_names_only() {
    for name in ["direct", "winograd", "winograd2", "winograd6", "auto"] {
        assert_eq!(ConvAlgorithm::parse(name).map(|a| a.name()), Ok(name));
    }
    let err = ConvAlgorithm::parse("fft").unwrap_err();
    assert!(err.contains("`fft`") && err.contains("winograd"), "{err}");
}

/// Layers whose Winograd input transform reads its input in place with other shifts than pad 1:
/// pad 2 (two zero rows and columns), pad 3 (the input gradient crops dy: a negative shift), a
/// stride-2 conv (its input gradient runs Winograd on the interleaved dy, a scattered copy), on
/// odd sizes and channel counts, batch 2, with a fused relu: outputs and gradients within the
/// stated error of the interpreter.
#[test]
fn in_place_inputs_with_any_padding_match_the_interpreter() {
    for (layer, h, w) in [
        ("conv(6, kernel=3, pad=2)", 7, 9),
        ("conv(5, kernel=3, pad=3)", 6, 5),
        ("conv(7, kernel=3, stride=2, pad=1)", 9, 8),
        ("conv(3, kernel=3, pad=2) -> relu", 5, 11),
    ] {
        let src = format!(
            "model m {{\n    input x: [3, {h}, {w}]\n    y = x -> conv(5, kernel=3, pad=1) -> {layer} -> conv(2, kernel=3, pad=1)\n    output y\n}}\n"
        );
        let p = program(&src);
        for conv in [ConvAlgorithm::Winograd, ConvAlgorithm::Winograd2, ConvAlgorithm::Winograd6] {
            let (o, g, algos) = against_interpreter(&p, 2, true, true, conv);
            assert!(algos.iter().filter(|a| a.contains("F(")).count() >= 2, "{src}: {algos:?}");
            assert!(o <= TOL && g <= TOL, "{src} {conv:?}: output {o:.2e}, gradients {g:.2e}");
        }
    }
}

/// A conv whose forward stays direct (it writes into a concat's slice: 8 channels) while its
/// weight gradient runs Winograd reading x in place, next to layers whose three passes are
/// Winograd (pad 1 and 2, x read in place):
/// outputs and gradients within the stated error of the interpreter, each tile size forced.
#[test]
fn winograd_weight_gradient_after_a_direct_forward_reads_x_in_place() {
    let src = "model m {\n    input x: [3, 10, 7]\n    b = x -> conv(6, kernel=3, pad=1) -> relu\n    c = b -> conv(8, kernel=3, pad=1)\n    y = concat(c, b) -> conv(2, kernel=3, pad=2)\n    output y\n}\n";
    let p = program(src);
    for (conv, tile) in [
        (ConvAlgorithm::Winograd, "F(4x4"),
        (ConvAlgorithm::Winograd2, "F(2x2"),
        (ConvAlgorithm::Winograd6, "F(6x6"),
    ] {
        let (o, g, algos) = against_interpreter(&p, 2, true, true, conv);
        assert!(
            algos
                .iter()
                .any(|a| a.starts_with("direct / ")
                    && a.split(" / ").nth(2).is_some_and(|w| w.starts_with(tile))),
            "no direct forward with a Winograd weight gradient: {algos:?}"
        );
        assert!(algos.iter().filter(|a| !a.contains("direct")).count() >= 1, "{algos:?}");
        assert!(o <= TOL && g <= TOL, "{conv:?}: output {o:.2e}, gradients {g:.2e}");
    }
}

/// The direct correlation kernels reading their input in place (the padding known to the kernel:
/// a zero row on the stack for tap rows outside, the taps outside skipped at the left and right
/// edges): forward with pad 0–3 (a pad larger than the kernel's reach leaves border outputs
/// with no tap inside), stride 2, dilation 2, tuple pads, 5×5 and 1×7 kernels, odd sizes,
/// channel counts not a multiple of 4 (and below the weight gradient's register block), batch
/// 2, with and without a fused relu; and their input gradients (dy read in place, shifted by
/// d·(k − 1) − p, for stride 1): outputs and gradients within 1e-4 of the interpreter's scale.
#[test]
fn direct_kernels_reading_their_input_in_place_match_the_interpreter() {
    for (layer, h, w) in [
        ("conv(6, kernel=3, pad=1)", 7, 9),
        ("conv(5, kernel=3, pad=2) -> relu", 6, 5),
        ("conv(3, kernel=3, pad=3)", 5, 6),
        ("conv(7, kernel=3, stride=2, pad=1)", 9, 8),
        ("conv(4, kernel=3, dilation=2, pad=2)", 9, 7),
        ("conv(5, kernel=5, pad=(1, 2))", 8, 9),
        ("conv(6, kernel=(1, 7), pad=(0, 3)) -> relu", 3, 13),
        ("conv(2, kernel=3, stride=2, pad=2)", 7, 7),
    ] {
        for cin in [2, 5] {
            let src = format!(
                "model m {{\n    input x: [{cin}, {h}, {w}]\n    y = x -> conv(5, kernel=3, pad=1) -> {layer} -> conv(3, kernel=3, pad=1)\n    output y\n}}\n"
            );
            let p = program(&src);
            let (o, g, algos) = against_interpreter(&p, 2, true, true, ConvAlgorithm::Direct);
            assert!(algos.iter().all(|a| !a.contains("F(")), "{src}: {algos:?}");
            assert!(o <= TOL && g <= TOL, "{src}: output {o:.2e}, gradients {g:.2e}");
        }
    }
}

/// Batchnorm between convs, training passes one after another: the normalised output (so the
/// batch statistics), the running statistics and every parameter gradient match the
/// interpreter's after every pass — whether a conv's Winograd output transforms sum the
/// batchnorm's statistics as they store (its output around the running mean forward; its output
/// gradient and that times its centred input backward) or the batchnorm's own kernels do
/// (direct) — also on the first pass with the channels' means far from 0 (a large bias), and
/// when the mean jumps (the input offset by 40, then back), where sums around the running mean
/// would cancel. With and without a relu between the batchnorm and the next conv.
#[test]
fn batchnorm_statistics_follow_the_interpreter_pass_after_pass() {
    for between in ["-> relu ", ""] {
        let src = format!(
            "model m {{\n    input x: [5, 13, 11]\n    y = x -> conv(8, kernel=3, pad=1) -> batchnorm {between}-> conv(3, kernel=3, pad=1) -> batchnorm\n    output y\n}}\n"
        );
        let p = program(&src);
        let g = ir::lower(&p, 3);
        for conv in [
            ConvAlgorithm::Direct,
            ConvAlgorithm::Winograd,
            ConvAlgorithm::Winograd2,
            ConvAlgorithm::Winograd6,
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(12);
            let mut start = params(&g, &mut rng);
            let first_bias = g.params().iter().position(|i| i.role == ParamRole::Bias).expect("a conv bias");
            start[first_bias].mapv_inplace(|b| b + 25.0);
            let (mut p_ref, mut p_jit) = (start.clone(), start);
            let mut jit = JitModel::compile_with(&g, &options(conv)).expect("compiles");
            for (pass, offset) in [0.0, 0.0, 40.0, 40.0, 0.0, 0.0].into_iter().enumerate() {
                let at = format!("{between}{conv:?} pass {pass}");
                let x = random(&g.inputs()[0], &mut rng).mapv(|v| v + offset);
                let inputs = [x];
                let tape = interp::forward(&g, &mut p_ref, &inputs, true, 3);
                let want = interp::outputs(&g, &inputs, &tape);
                let got = jit.forward(&mut p_jit, &inputs, true, 3);
                let err = rel_err(&got[0], &want[0], 0.0);
                assert!(err <= TOL, "{at}: output off by {err:.2e} of its scale");
                for (k, info) in g.params().iter().enumerate() {
                    if matches!(info.role, ParamRole::RunningMean | ParamRole::RunningVar) {
                        let err = rel_err(&p_jit[k], &p_ref[k], 0.0);
                        assert!(err <= TOL, "{at}: {:?} {k} off by {err:.2e}", info.role);
                    }
                }
                let r = [random(want[0].shape(), &mut rng)];
                let gref = interp::backward(&g, &p_ref, &inputs, &tape, &r);
                let gjit = jit.backward(&p_jit, &r);
                // Both convs' biases come right before a batchnorm: their exact gradient is 0,
                // round-off on either side (f32 here, from x − mean with x near 65), so they are
                // held to the largest gradient's scale; the others to 1/100 of it.
                let global = gref.iter().map(max_abs).fold(0.0, f64::max);
                for (k, info) in g.params().iter().enumerate().filter(|(_, i)| i.trainable()) {
                    let conv_bias = info.role == ParamRole::Bias
                        && matches!(g.node(info.node).op, geonetc::ops::Op::Conv(_));
                    let floor = if conv_bias { global } else { 1e-2 * global };
                    let err = rel_err(&gjit[k], &gref[k], floor);
                    assert!(err <= TOL, "{at}: gradient of {:?} {k} off by {err:.2e}", info.role);
                }
            }
            if conv != ConvAlgorithm::Direct {
                assert!(algorithms(&jit)[0].starts_with("F("), "{conv:?}: {:?}", algorithms(&jit));
            }
        }
    }
}

/// A batchnorm whose normalisation (and relu or leaky relu) the Winograd conv after it applies
/// as its input transforms load the batchnorm's input — no normalised copy stored — gives the
/// bits of the batchnorm's own normalisation pass: outputs, running statistics, every
/// parameter gradient and the activations read back, over training passes with a jump in the
/// input (the two-pass statistics), then an inference pass. Every tile; two such batchnorms in
/// a row; the mask of the relu recomputed from the batchnorm's input. (Against the
/// interpreter: `batchnorm_statistics_follow_the_interpreter_pass_after_pass`, which runs this
/// path with its relu.)
#[test]
fn a_batchnorm_normalised_as_the_conv_after_loads_gives_the_bits_of_its_own_pass() {
    for act in ["-> relu ", "-> leaky_relu(0.1) ", ""] {
        let src = format!(
            "model m {{\n    input x: [3, 14, 10]\n    y = x -> conv(8, kernel=3, pad=1) -> batchnorm {act}-> conv(8, kernel=3, pad=1) -> batchnorm {act}-> conv(6, kernel=3, pad=1) -> batchnorm\n    output y\n}}\n"
        );
        let p = program(&src);
        let g = ir::lower(&p, 2);
        for conv in [ConvAlgorithm::Winograd, ConvAlgorithm::Winograd2, ConvAlgorithm::Winograd6] {
            let fused_options = options(conv);
            let own_pass = JitOptions { norm_on_load: false, ..options(conv) };
            let mut fused = JitModel::compile_with(&g, &fused_options).expect("compiles");
            let mut plain = JitModel::compile_with(&g, &own_pass).expect("compiles");
            let plan = fused.describe();
            assert_eq!(
                plan.matches("as it loads it").count(),
                2,
                "{act}{conv:?}: the two convs after a batchnorm\n{plan}"
            );
            assert!(!plain.describe().contains("as it loads it"), "{act}{conv:?}: the option turns it off");
            let mut rng = ChaCha8Rng::seed_from_u64(21);
            let start = params(&g, &mut rng);
            let (mut pf, mut pp) = (start.clone(), start);
            // How many elements differ in their bits.
            let differ = |a: &ArrayD<f64>, b: &ArrayD<f64>| {
                a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count()
            };
            for (pass, offset) in [0.0, 30.0, 0.0, 0.0].into_iter().enumerate() {
                let at = format!("{act}{conv:?} pass {pass}");
                let inputs = [random(&g.inputs()[0], &mut rng).mapv(|v| v + offset)];
                let (yf, yp) =
                    (fused.forward(&mut pf, &inputs, true, 3), plain.forward(&mut pp, &inputs, true, 3));
                assert_eq!(differ(&yf[0], &yp[0]), 0, "{at}: outputs");
                let values = |fused: &JitModel, plain: &JitModel, when: &str| {
                    for node in g.nodes() {
                        let v = ir::Value::Node(node.id);
                        let n = differ(&fused.value(v), &plain.value(v));
                        assert_eq!(n, 0, "{at}: value of {} {when}", node.name);
                    }
                };
                values(&fused, &plain, "after the forward pass");
                for (k, (a, b)) in pf.iter().zip(&pp).enumerate() {
                    assert_eq!(differ(a, b), 0, "{at}: parameter {k} (running statistics)");
                }
                let r = [random(yf[0].shape(), &mut rng)];
                let (gf, gp) = (fused.backward(&pf, &r), plain.backward(&pp, &r));
                for (k, (a, b)) in gf.iter().zip(&gp).enumerate() {
                    assert_eq!(differ(a, b), 0, "{at}: gradient {k}");
                }
                values(&fused, &plain, "after the backward pass");
            }
            let inputs = [random(&g.inputs()[0], &mut rng)];
            let (yf, yp) =
                (fused.forward(&mut pf, &inputs, false, 0), plain.forward(&mut pp, &inputs, false, 0));
            assert_eq!(differ(&yf[0], &yp[0]), 0, "{act}{conv:?}: inference outputs");
        }
    }
}

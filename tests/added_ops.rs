//! Layer kinds added through the op table, end to end beyond the PyTorch fixtures
//! (tests/reference.rs) and finite differences (tests/gradients.rs): the checker's diagnostics,
//! the language server's hover, the JIT against the interpreter (forward and parameter
//! gradients in training mode), and a short training run whose loss must fall.

use geonetc::check::check_source;
use geonetc::check::program::{LossKind, OptimizerKind, OptimizerSpec};
use geonetc::diag::codes;
use geonetc::ir::{self, Params};
use geonetc::lsp::analysis::{Analysis, hover};
use geonetc::ops::loss::loss;
use geonetc::runtime::engine::{Backend, Engine};
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

fn graph(src: &str, batch: usize) -> ir::Graph {
    let out = check_source(src);
    let program = out.program.unwrap_or_else(|| panic!("{src}\n{:#?}", out.diagnostics));
    ir::lower(&program, batch)
}

/// Parameters away from their (often symmetric) starting values, so every path matters.
fn params(g: &ir::Graph, rng: &mut ChaCha8Rng) -> Params {
    let mut p = ir::init_params(g, 1);
    for (v, info) in p.iter_mut().zip(g.params()) {
        if info.trainable() {
            *v += &(random(&info.shape, rng) * 0.3);
        }
    }
    p
}

/// Forward outputs and parameter gradients of the JIT equal the interpreter's to 1e-4 of each
/// tensor's largest magnitude (the JIT computes in f32).
fn jit_matches_interpreter(src: &str, batch: usize) {
    let g = graph(src, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let p0 = params(&g, &mut rng);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let mut results = vec![];
    for backend in [Backend::Interp, Backend::Jit] {
        let mut engine = Engine::new(&g, backend).unwrap();
        let mut p = p0.clone();
        let y = engine.forward(&mut p, &inputs, true, 3);
        let dy: Vec<ArrayD<f64>> =
            y.iter().map(|o| random(o.shape(), &mut ChaCha8Rng::seed_from_u64(9))).collect();
        let grads = engine.backward(&p0, &dy);
        results.push((y, grads));
    }
    let (interp, jit) = (&results[0], &results[1]);
    assert_eq!(interp.0.len(), jit.0.len(), "number of outputs");
    let pairs = interp.0.iter().zip(&jit.0).chain(interp.1.iter().zip(&jit.1));
    let names = std::iter::repeat_n("output".to_string(), interp.0.len())
        .chain(g.params().iter().map(|p| p.name.clone()));
    let mut compared = 0;
    for ((a, b), name) in pairs.zip(names) {
        assert_eq!(a.shape(), b.shape(), "{name}");
        let scale = max_abs(a).max(1e-6);
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * scale, "{name}: interpreter {x}, JIT {y}\n{src}");
        }
        compared += 1;
    }
    assert_eq!(compared, interp.0.len() + g.params().len());
}

/// 40 Adam steps on one fixed batch bring the MSE to under half its starting value.
fn training_reduces_the_loss(src: &str, batch: usize) {
    let g = graph(src, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut p = ir::init_params(&g, 2);
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let out_shape = g.nodes().last().unwrap().shape.clone();
    let target = random(&out_shape, &mut rng) * 0.5;
    let spec = OptimizerSpec {
        kind: OptimizerKind::Adam { lr: 1e-2, rho1: 0.9, rho2: 0.999, eps: 1e-8 },
        weight_decay: 0.0,
        clip: None,
    };
    let trainable: Vec<bool> = g.params().iter().map(|q| q.trainable()).collect();
    let mut state = OptState::new(&spec, &p.iter().map(|a| a.len()).collect::<Vec<_>>());
    let mut engine = Engine::new(&g, Backend::Jit).unwrap();
    let mut losses = vec![];
    for step in 0..40 {
        let (l, grads) = engine.train_step(&mut p, &inputs, &target, LossKind::Mse, step);
        losses.push(l);
        optim::step(&spec, &mut state, &mut p, &grads, &trainable);
    }
    let y = engine.forward(&mut p, &inputs, false, 0).remove(0);
    let last = loss(LossKind::Mse, &y, &target).0;
    assert!(last.is_finite() && last < 0.5 * losses[0], "loss {} → {last}: {losses:?}", losses[0]);
}

/// The hover text on the first occurrence of `needle` in `src`.
fn hover_on(src: &str, needle: &str) -> String {
    let a = Analysis::new(src);
    let at = src.find(needle).unwrap_or_else(|| panic!("{needle} not in {src}")) + 1;
    hover(&a, at).unwrap_or_else(|| panic!("no hover on {needle}")).0
}

const GROUPNORM: &str = "model m {
    input x: [3, 8, 8]
    a = x -> conv(6, kernel=3, pad=1) -> groupnorm(3) -> relu
    y = a -> conv(4, kernel=1) -> groupnorm(2, eps=0.001) -> conv(3, kernel=1)
    output y
}
";

#[test]
fn groupnorm_jit_matches_the_interpreter() {
    jit_matches_interpreter(GROUPNORM, 3);
    // A flat value: one group of all features, and one feature per group.
    jit_matches_interpreter(
        "model m {\n input x: [6]\n y = x -> dense(4) -> groupnorm(1) -> dense(4) -> groupnorm(4)\n output y\n}\n",
        5,
    );
}

#[test]
fn groupnorm_trains() {
    training_reduces_the_loss(GROUPNORM, 4);
}

#[test]
fn groupnorm_checks_that_groups_divide_the_channels() {
    let src = "model m {\n input x: [3, 8, 8]\n y = x -> conv(6, kernel=3) -> groupnorm(4)\n output y\n}\n";
    let out = check_source(src);
    assert!(out.program.is_none());
    let errors: Vec<_> = out.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let d = errors[0];
    assert_eq!(d.code, codes::BAD_VALUE);
    assert_eq!(&src[d.primary.span.clone()], "4", "the label is on `groups`");
    assert!(d.message.contains("4 does not divide 6"), "{}", d.message);
    assert!(d.help.as_deref().is_some_and(|h| h.contains("1, 2, 3, 6")), "{:?}", d.help);
    // Other frameworks' attribute name is suggested.
    let out = check_source(&src.replace("groupnorm(4)", "groupnorm(num_groups=2)"));
    let d = &out.diagnostics[0];
    assert_eq!(d.code, codes::UNKNOWN_ATTRIBUTE);
    assert_eq!(d.help.as_deref(), Some("did you mean `groups`?"));
    // Parameters: a weight and a bias per channel.
    let p = check_source(&src.replace("groupnorm(4)", "groupnorm(3)")).program.unwrap();
    let gn = p.model.layers.last().unwrap();
    assert_eq!((gn.name.as_str(), gn.params, gn.shape.as_slice()), ("y.groupnorm0", 12, &[6, 6, 6][..]));
}

#[test]
fn groupnorm_hover() {
    let h = hover_on(GROUPNORM, "groupnorm(3)");
    assert!(h.contains("**a.groupnorm0** (groupnorm): `[6, 8, 8]` → `[6, 8, 8]`"), "{h}");
    assert!(h.contains("parameters 12"), "{h}");
}

const SILU: &str = "model m {
    input x: [2, 16]
    y = x -> conv(4, kernel=3, pad=1) -> silu -> conv(2, kernel=3, pad=1) -> silu -> conv(2, kernel=1)
    output y
}
";

#[test]
fn silu_jit_matches_the_interpreter() {
    jit_matches_interpreter(SILU, 3);
    jit_matches_interpreter(
        "model m {\n input x: [2, 5, 6]\n y = x -> silu -> conv(3, kernel=3) -> silu\n output y\n}\n",
        2,
    );
}

#[test]
fn silu_trains() {
    training_reduces_the_loss(SILU, 4);
}

#[test]
fn silu_values_and_names() {
    // x·σ(x) at a few points, σ computed independently: 0 → 0, 1 → 0.7310585786, −2 → −0.2384058440.
    let g = graph("model m {\n input x: [3]\n y = x -> silu\n output y\n}\n", 1);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0.0, 1.0, -2.0]).unwrap();
    let mut engine = Engine::new(&g, Backend::Interp).unwrap();
    let y = engine.forward(&mut vec![], &[x], false, 0).remove(0);
    for (got, want) in y.iter().zip([0.0, 0.7310585786300049, -0.23840584404423515]) {
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    let out = check_source("model m {\n input x: [3]\n y = x -> swish\n output y\n}\n");
    assert_eq!(out.diagnostics[0].help.as_deref(), Some("did you mean `silu`?"));
}

#[test]
fn silu_hover() {
    let h = hover_on(SILU, "silu");
    assert!(h.contains("**y.silu0** (silu): `[4, 16]` → `[4, 16]`"), "{h}");
    assert!(h.contains("parameters 0"), "{h}");
}

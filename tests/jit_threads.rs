//! Thread-count independence of the JIT's training step: the loss, every parameter gradient and
//! the parameters after the optimizer's update are bit-identical on 1, 2 and 3 threads (the
//! parallel reductions use chunks fixed by the shapes, never by the thread count). Covers the
//! fused relu / leaky_relu derivative before a max pooling and a concat (the mask kernel),
//! weight-gradient chunk sums of convs with bias, a pixel-shuffle and a strided upconv, and the
//! parallel optimizer updates (adam with a clipping norm, sgd with momentum and weight decay)
//! over parameters larger than one update chunk, and dropout's mask drawn in parallel.

use geonetc::check::check_source;
use geonetc::check::program::{LossKind, Program};
use geonetc::ir;
use geonetc::jit::JitModel;
use geonetc::runtime::optim::{self, OptState};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn program(src: &str) -> Program {
    let out = check_source(src);
    out.program.unwrap_or_else(|| panic!("{src}\n{:#?}", out.diagnostics))
}

/// Losses, then gradients and parameters after each of two training steps, on `threads` threads.
fn train(program: &Program, batch: usize, threads: usize) -> (Vec<f64>, Vec<Vec<ArrayD<f64>>>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    pool.install(|| {
        let g = ir::lower(program, batch);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut random = |s: &[usize]| ArrayD::from_shape_fn(IxDyn(s), |_| rng.random_range(-1.0..1.0));
        let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s)).collect();
        let target = random(g.shape(g.outputs()[0]));
        let mut params = ir::init_params(&g, 3);
        let trainable: Vec<bool> = g.params().iter().map(|p| p.trainable()).collect();
        let sizes: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let mut opt = OptState::new(&program.optimizer, &sizes);
        let mut jit = JitModel::compile(&g).expect("compiles");
        jit.load_inputs(&inputs);
        jit.load_target(&target);
        let (mut losses, mut states) = (vec![], vec![]);
        for step in 0..2 {
            jit.forward_loaded(&mut params, true, step);
            let (loss, grads) = jit.loss_backward(&params, LossKind::Mse, &target);
            optim::step(&program.optimizer, &mut opt, &mut params, &grads, &trainable);
            losses.push(loss);
            states.push(grads);
            states.push(params.clone());
        }
        (losses, states)
    })
}

fn assert_thread_independent(src: &str, batch: usize) {
    let p = program(src);
    let (loss1, state1) = train(&p, batch, 1);
    assert!(loss1.iter().all(|l| l.is_finite() && *l > 0.0), "{loss1:?}");
    for threads in [2, 3] {
        let (loss, state) = train(&p, batch, threads);
        assert_eq!(loss, loss1, "loss on {threads} threads");
        assert_eq!(state.len(), state1.len());
        for (k, (a, b)) in state.iter().zip(&state1).enumerate() {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                // Bitwise: `==` would accept 0.0 against −0.0.
                let same = x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits());
                assert!(
                    same,
                    "step {} {} {i} differs on {threads} threads",
                    k / 2,
                    ["grads", "params"][k % 2]
                );
            }
        }
    }
}

#[test]
fn unet_like_training_steps_are_bit_identical_on_1_2_and_3_threads() {
    // e: relu (fused, its derivative by the mask kernel: the maxpool and the concat consume
    // it); 9·8·72 = 5184 weights in one conv (> one optimizer chunk of 4096).
    let src = "model m {
    input x: [3, 20, 18]
    e = x -> conv(8, kernel=3, pad=1) -> relu -> conv(72, kernel=3, pad=1) -> leaky_relu(0.1)
    b = e -> maxpool(2) -> conv(16, kernel=3, pad=1) -> relu -> upconv(8, kernel=2, stride=2)
    s = b -> upconv(4, kernel=4, stride=2, pad=1) -> relu -> maxpool(2)
    y = concat(s, e) -> conv(2, kernel=1)
    output y
}
optimizer adam { lr = 1e-3, rho1 = 0.9, rho2 = 0.999, eps = 1e-6, clip = 0.5 }
";
    assert_thread_independent(src, 3);
}

#[test]
fn dense_and_sgd_steps_are_bit_identical_on_1_2_and_3_threads() {
    let src = "model m {
    input x: [2, 12, 12]
    y = x -> conv(64, kernel=3, pad=1) -> relu -> conv(64, kernel=3, pad=1) -> relu -> dropout(0.3) -> flatten -> dense(5) -> relu -> dense(3)
    output y
}
optimizer sgd { lr = 1e-2, momentum = 0.9, weight_decay = 1e-4 }
";
    assert_thread_independent(src, 4);
}

//! Finite-difference checks (f64, central differences) of the interpreter's gradients: every op,
//! both ranks, strides, padding, dilation, odd sizes, and whole small models. The scalar is
//! Σ output ⊙ R for a random R, so every output element's gradient path is exercised; a 1×1
//! conv in front of each op makes its input gradient show up in that conv's weight gradient.

use geonetc::check::check_source;
use geonetc::check::program::LossKind;
use geonetc::interp;
use geonetc::ir::{self, Params};
use geonetc::ops::loss::loss;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

fn grad_check(src: &str, batch: usize, training: bool) {
    let out = check_source(src);
    let program = out.program.unwrap_or_else(|| panic!("{src}\n{:#?}", out.diagnostics));
    let g = ir::lower(&program, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut params = ir::init_params(&g, 1);
    for (p, info) in params.iter_mut().zip(g.params()) {
        if info.trainable() {
            *p += &(random(&info.shape, &mut rng) * 0.3);
        }
    }
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let mut p0 = params.clone();
    let tape = interp::forward(&g, &mut p0, &inputs, training, 5);
    let outs = interp::outputs(&g, &inputs, &tape);
    let r: Vec<ArrayD<f64>> = outs.iter().map(|o| random(o.shape(), &mut rng)).collect();
    let analytic = interp::backward(&g, &params, &inputs, &tape, &r);
    let f = |params: &Params| -> f64 {
        let mut p = params.clone();
        let tape = interp::forward(&g, &mut p, &inputs, training, 5);
        interp::outputs(&g, &inputs, &tape).iter().zip(&r).map(|(o, r)| (o * r).sum()).sum()
    };
    let eps = 1e-6;
    let mut checked = 0;
    for (k, info) in g.params().iter().enumerate() {
        if !info.trainable() {
            continue;
        }
        let n = params[k].len();
        let picks: Vec<usize> =
            if n <= 12 { (0..n).collect() } else { (0..12).map(|_| rng.random_range(0..n)).collect() };
        for i in picks {
            let mut plus = params.clone();
            plus[k].as_slice_mut().unwrap()[i] += eps;
            let mut minus = params.clone();
            minus[k].as_slice_mut().unwrap()[i] -= eps;
            let fd = (f(&plus) - f(&minus)) / (2.0 * eps);
            let an = analytic[k].as_slice().unwrap()[i];
            assert!(
                (fd - an).abs() <= 1e-5 + 1e-4 * fd.abs(),
                "{}[{i}]: finite difference {fd}, backward {an}\n{src}",
                info.name
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

fn model(input: &str, body: &str) -> String {
    format!("model m {{\n  input x: {input}\n  y = x -> conv(3, kernel=1) -> {body}\n  output y\n}}\n")
}

#[test]
fn conv_2d_stride_pad_dilation() {
    grad_check(&model("[2, 7, 9]", "conv(4, kernel=3, stride=2, pad=1, dilation=2)"), 2, false);
    grad_check(&model("[2, 6, 5]", "conv(2, kernel=(2, 3), stride=(1, 2), pad=(0, 1))"), 3, false);
}

#[test]
fn conv_1d() {
    grad_check(&model("[2, 11]", "conv(3, kernel=4, stride=3, pad=2)"), 2, false);
    grad_check(&model("[1, 13]", "conv(2, kernel=3, dilation=3, pad=same)"), 1, false);
}

#[test]
fn upconv_both_ranks() {
    grad_check(&model("[2, 5, 4]", "upconv(2, kernel=3, stride=2, pad=1)"), 2, false);
    grad_check(&model("[2, 6]", "upconv(3, kernel=2, stride=2)"), 2, false);
    grad_check(&model("[1, 3, 3]", "upconv(2, kernel=(3, 2), stride=(3, 1))"), 1, false);
}

#[test]
fn pooling() {
    grad_check(&model("[2, 7, 7]", "maxpool(3, stride=2, pad=1)"), 2, false);
    grad_check(&model("[2, 7, 6]", "avgpool(3, stride=2, pad=1)"), 2, false);
    grad_check(&model("[2, 9]", "maxpool(2)"), 2, false);
    grad_check(&model("[2, 9]", "avgpool(3, stride=2)"), 2, false);
}

#[test]
fn upsampling() {
    grad_check(&model("[2, 3, 4]", "upsample(2)"), 2, false);
    grad_check(&model("[2, 3, 4]", "upsample((2, 3), mode=linear)"), 2, false);
    grad_check(&model("[2, 5]", "upsample(3, mode=linear)"), 2, false);
}

#[test]
fn dense_and_activations() {
    for act in ["relu", "sigmoid", "tanh", "softmax", "leaky_relu(0.2)"] {
        grad_check(&model("[2, 3, 3]", &format!("flatten -> dense(5) -> {act} -> dense(3)")), 3, false);
    }
    grad_check(&model("[4, 3, 3]", "softmax"), 2, false);
}

#[test]
fn batchnorm_training_and_inference() {
    grad_check(&model("[2, 4, 5]", "batchnorm -> relu"), 3, true);
    grad_check(&model("[2, 4, 5]", "batchnorm"), 3, false);
    grad_check(
        "model m {\n input x: [6]\n y = x -> dense(3) -> batchnorm(momentum=0.2, eps=1e-3)\n output y\n}\n",
        4,
        true,
    );
}

#[test]
fn dropout_uses_its_mask() {
    grad_check(&model("[2, 8]", "dropout(0.5)"), 3, true);
}

#[test]
fn merges() {
    let src = "model m {\n input x: [2, 5, 5]\n a = x -> conv(3, kernel=1)\n b = x -> conv(2, kernel=3, pad=1)\n c = concat(a, b, a)\n d = add(a, a -> tanh)\n e = sub(d, a)\n output c, e\n}\n";
    grad_check(src, 2, false);
}

#[test]
fn whole_models() {
    let unet =
        "model m {\n input x: [1, 8, 8]\n y = x -> unet(1, depth=2, base=2, norm=batch)\n output y\n}\n";
    grad_check(unet, 2, true);
    let unet1d = "model m {\n input x: [1, 16]\n y = x -> unet(2, depth=1, base=3, pool=avg, up=upsample)\n output y\n}\n";
    grad_check(unet1d, 2, false);
    let ex = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/blocks.geonet")).unwrap();
    grad_check(&ex.replace("[1, 32, 32]", "[1, 8, 8]").replace("[1, 256]", "[1, 12]"), 1, false);
}

#[test]
fn losses() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let pred = random(&[3, 4], &mut rng);
    let probs = random(&[3, 4], &mut rng).mapv(f64::abs);
    let classes = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.0, 3.0, 1.0]).unwrap();
    for (kind, target) in [
        (LossKind::Mse, random(&[3, 4], &mut rng)),
        (LossKind::Mae, random(&[3, 4], &mut rng)),
        (LossKind::CrossEntropy, probs),
        (LossKind::CrossEntropy, classes),
    ] {
        let (_, grad) = loss(kind, &pred, &target);
        for i in 0..pred.len() {
            let mut p = pred.clone();
            p.as_slice_mut().unwrap()[i] += 1e-6;
            let mut m = pred.clone();
            m.as_slice_mut().unwrap()[i] -= 1e-6;
            let fd = (loss(kind, &p, &target).0 - loss(kind, &m, &target).0) / 2e-6;
            let an = grad.as_slice().unwrap()[i];
            assert!((fd - an).abs() < 1e-6, "{kind:?}[{i}]: {fd} vs {an}");
        }
    }
}

/// Every example with a `train`-able shape, at a small input size so finite differences stay
/// quick: the same layers, blocks and merges as the real programs.
#[test]
fn every_example_model() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    for (file, small) in [
        ("dncnn.geonet", vec![("[1, 64, 64]", "[1, 8, 8]")]),
        ("trace_denoiser.geonet", vec![("[1, 1024]", "[1, 24]"), ("shape = [1, 1024]", "shape = [1, 24]")]),
        ("unet_s.geonet", vec![("[1, 128, 128]", "[1, 8, 8]")]),
        ("unet_builtin.geonet", vec![("[1, 128, 128]", "[1, 8, 8]")]),
        ("classifier.geonet", vec![("[3, 64, 64]", "[3, 12, 12]")]),
        ("seed_pad_stride.geonet", vec![]),
    ] {
        let mut src = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        for (from, to) in small {
            src = src.replace(from, to);
        }
        grad_check(&src, 2, true);
    }
}

#[test]
fn groupnorm_both_ranks_and_flat() {
    grad_check(&model("[2, 4, 5]", "groupnorm(3)"), 2, true);
    grad_check(&model("[2, 7]", "groupnorm(1)"), 3, false);
    grad_check(
        "model m {\n input x: [5]\n y = x -> dense(6) -> groupnorm(2, eps=0.01)\n output y\n}\n",
        2,
        true,
    );
}

#[test]
fn silu_both_ranks() {
    grad_check(&model("[2, 4, 5]", "silu"), 2, false);
    grad_check(&model("[2, 9]", "silu -> conv(2, kernel=3) -> silu"), 2, false);
}

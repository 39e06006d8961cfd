//! The JIT's gather kernels (maxpool, avgpool, upsample, concat; `src/jit/gather.rs`) against
//! the f64 interpreter (the oracle) on random shapes — odd sizes, channel counts that are not a
//! multiple of 4, kernel/stride/padding variants, 1-D and 2-D — forward and every gradient (a
//! 1×1 conv in front makes the op's input gradient visible in that conv's weight gradient),
//! the in-place writes into a concat's channel slice (poolings, upsamples, convs), a U-Net with batchnorm and bilinear
//! upsampling end to end, and a finite-difference check of each backward kernel on the JIT
//! alone. Tolerance: 1e-4 of the reference tensor's largest magnitude (the JIT computes in f32).

use geonetc::check::check_source;
use geonetc::check::program::Program;
use geonetc::interp;
use geonetc::ir;
use geonetc::jit::JitModel;
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

/// `floor`: a magnitude below which a tensor counts as zero (a conv bias before batchnorm has a
/// gradient of 0 in exact arithmetic, f32 round-off in the JIT).
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

fn program(src: &str) -> Program {
    let out = check_source(src);
    out.program.unwrap_or_else(|| panic!("{src}\n{:#?}", out.diagnostics))
}

fn model(shape: &str, body: &str) -> String {
    format!("model m {{\n    input x: {shape}\n    {body}\n    output y\n}}\n")
}

/// Forward outputs, every node's value and every parameter gradient on both backends.
fn compare(program: &Program, batch: usize) -> Result<(), String> {
    let g = ir::lower(program, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut params = ir::init_params(&g, 1);
    for p in params.iter_mut() {
        *p += &(random(p.shape(), &mut rng) * 0.1);
    }
    let inputs: Vec<ArrayD<f64>> = g.inputs().iter().map(|s| random(s, &mut rng)).collect();
    let mut p_ref = params.clone();
    let tape = interp::forward(&g, &mut p_ref, &inputs, true, 9);
    let outs = interp::outputs(&g, &inputs, &tape);
    let mut jit = JitModel::compile(&g)?;
    let mut p_jit = params.clone();
    let jouts = jit.forward(&mut p_jit, &inputs, true, 9);
    for (k, (a, b)) in jouts.iter().zip(&outs).enumerate() {
        close(&format!("output {k}"), a, b, 1e-4, 0.0)?;
    }
    // Every node's value, including those written into a concat's slice (a layer whose fused
    // activation stores only its own output has none: that output is compared as the
    // activation's).
    for node in g.nodes().iter().filter(|n| jit.has_own_value(ir::Value::Node(n.id))) {
        close(&node.name, &jit.value(ir::Value::Node(node.id)), &tape.values[node.id.index()], 1e-4, 0.0)?;
    }
    let r: Vec<ArrayD<f64>> = outs.iter().map(|o| random(o.shape(), &mut rng)).collect();
    let gref = interp::backward(&g, &p_ref, &inputs, &tape, &r);
    let gjit = jit.backward(&p_jit, &r);
    if gjit.len() != gref.len() {
        return Err(format!("{} gradients vs {}", gjit.len(), gref.len()));
    }
    let global = gref.iter().map(max_abs).fold(0.0, f64::max);
    for (k, info) in g.params().iter().enumerate() {
        if info.trainable() {
            close(&format!("grad {}", info.name), &gjit[k], &gref[k], 1e-4, 1e-2 * global)?;
        }
    }
    Ok(())
}

/// The plan line of the node named `name`.
fn plan_line(program: &Program, batch: usize, name: &str) -> String {
    let plan = JitModel::describe_plan(&ir::lower(program, batch)).expect("plan");
    let mut lines = plan.lines();
    let head = lines.find(|l| l.contains(&format!(" {name} "))).unwrap_or_else(|| panic!("{name}\n{plan}"));
    format!("{head}\n{}", lines.next().unwrap_or(""))
}

#[test]
fn every_spatial_op_runs_on_generated_kernels() {
    let bodies = [
        ("maxpool0", "y = x -> maxpool(2)"),
        ("avgpool0", "y = x -> avgpool(3, stride=2, pad=1)"),
        ("upsample0", "y = x -> upsample(2, mode=linear)"),
        ("concat0", "a = x -> conv(3, kernel=1)\n    y = concat(a, x)"),
    ];
    for (name, body) in bodies {
        let p = program(&model("[3, 9, 10]", body));
        let line = plan_line(&p, 2, &format!("y.{name}"));
        assert!(line.contains(": kernels;") && line.contains("gather kernels"), "{body}:\n{line}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    /// Pooling and upsampling of random geometry: kernel 1–4, stride 1–3, padding up to half
    /// the kernel, factors 1–3 per axis, odd sizes, 1–11 channels, 1-D and 2-D.
    #[test]
    fn random_spatial_layers_match_the_interpreter(
        two_d in any::<bool>(), c in 1usize..12, op in 0usize..4,
        k in 1usize..5, s in 1usize..4, pad_frac in 0usize..2,
        fh in 1usize..4, fw in 1usize..4, extra_h in 0usize..5, extra_w in 0usize..7,
    ) {
        let (h, w) = (k + extra_h, k + extra_w);
        let pad = pad_frac * (k / 2);
        let layer = match op {
            0 => format!("maxpool({k}, stride={s}, pad={pad})"),
            1 => format!("avgpool({k}, stride={s}, pad={pad})"),
            2 if two_d => format!("upsample(({fh}, {fw}))"),
            3 if two_d => format!("upsample(({fh}, {fw}), mode=linear)"),
            2 => format!("upsample({fw})"),
            _ => format!("upsample({fw}, mode=linear)"),
        };
        let shape = if two_d { format!("[{c}, {h}, {w}]") } else { format!("[{c}, {w}]") };
        let src = model(&shape, &format!("y = x -> conv({c}, kernel=1) -> {layer} -> conv(3, kernel=1)"));
        let out = check_source(&src);
        prop_assume!(out.program.is_some());
        let p = out.program.unwrap();
        let batch = 1 + (c + k) % 3;
        let r = compare(&p, batch);
        prop_assert!(r.is_ok(), "{}: {:?}", src, r);
    }
}

/// Concats of inputs with odd channel counts at odd offsets: copied (a graph input, a value
/// with two consumers) and written in place by a pooling or an upsample; 1-D and 2-D.
#[test]
fn concats_in_place_and_copied_match_the_interpreter() {
    let two_outputs = "model m {\n    input x: [3, 8, 10]\n    a = x -> conv(5, kernel=1)\n    p = a -> maxpool(2)\n    q = x -> avgpool(2) -> conv(3, kernel=1)\n    u = q -> upsample(2, mode=linear)\n    v = a -> upsample(1)\n    y = concat(a, u, v) -> conv(2, kernel=3, pad=1)\n    z = concat(p, q) -> conv(2, kernel=1)\n    output y, z\n}\n";
    let sources = [
        two_outputs.to_string(),
        model(
            "[3, 8, 10]",
            "a = x -> conv(6, kernel=1)\n    p = a -> maxpool(2) -> upsample(2)\n    y = concat(x, p, a) -> conv(3, kernel=1)",
        ),
        // Convs with whole 4-lane vectors of channels write into the slice, at odd offsets.
        model(
            "[3, 7, 9]",
            "a = x -> conv(4, kernel=3, pad=1)\n    b = x -> conv(8, kernel=1, stride=1)\n    y = concat(x, a, b) -> conv(2, kernel=1)",
        ),
        model(
            "[5, 14]",
            "a = x -> conv(7, kernel=1)\n    p = a -> avgpool(3, stride=1, pad=1)\n    u = a -> maxpool(2) -> upsample(2, mode=linear)\n    y = concat(p, x, u) -> conv(2, kernel=3)",
        ),
    ];
    for src in sources {
        let p = program(&src);
        compare(&p, 3).unwrap_or_else(|e| panic!("{src}\n{e}"));
    }
    // The producers really write into the slice: a linear upsample and a maxpool.
    let p = program(&model(
        "[3, 8, 10]",
        "a = x -> conv(5, kernel=1)\n    u = a -> maxpool(2) -> upsample(2, mode=linear)\n    y = concat(a, u)",
    ));
    let line = plan_line(&p, 2, "u.upsample0");
    assert!(
        line.contains("writes into") && line.contains("at channel 5") && line.contains("value 0 floats"),
        "{line}"
    );
}

/// A U-Net with batchnorm and bilinear upsampling (the peer workload's structure, small).
#[test]
fn unet_with_batchnorm_and_bilinear_upsampling_matches_the_interpreter() {
    let p = program(&model("[1, 16, 20]", "y = x -> unet(1, depth=2, base=4, norm=batch, up=upsample)"));
    for name in ["y.unet0.enc0.maxpool0", "y.unet0.dec1.upsample0", "y.unet0.dec0.concat0"] {
        let line = plan_line(&p, 2, name);
        assert!(line.contains(": kernels;"), "{line}");
    }
    compare(&p, 2).unwrap();
}

/// Σ r·y of the JIT's forward pass, in f64.
fn weighted_output(jit: &mut JitModel, params: &mut ir::Params, x: &ArrayD<f64>, r: &ArrayD<f64>) -> f64 {
    let y = jit.forward(params, std::slice::from_ref(x), true, 0).remove(0);
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Each backward kernel against central differences of the JIT's own forward pass: the
/// gradient of Σ r·y with respect to the weights of a 1×1 conv in front of the op (the op's
/// input gradient, contracted with the conv's input). The loss is linear in these weights
/// (piecewise for maxpool: the step is small enough that no window's maximum moves on these
/// seeded inputs), so the differences are exact up to f32 round-off.
#[test]
fn spatial_backward_kernels_match_finite_differences() {
    let layers = [
        "maxpool(3, stride=2, pad=1)",
        "maxpool(2)",
        "avgpool(3, stride=2, pad=1)",
        "upsample((2, 3))",
        "upsample((3, 2), mode=linear)",
    ];
    for layer in layers {
        let g =
            ir::lower(&program(&model("[2, 7, 9]", &format!("y = x -> conv(5, kernel=1) -> {layer}"))), 2);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut params = ir::init_params(&g, 3);
        let x = random(&g.inputs()[0], &mut rng);
        let mut jit = JitModel::compile(&g).unwrap();
        let y = jit.forward(&mut params, std::slice::from_ref(&x), true, 0).remove(0);
        let r = random(y.shape(), &mut rng);
        let grads = jit.backward(&params, std::slice::from_ref(&r));
        let w = g.params().iter().position(|p| p.name.ends_with("conv0.weight")).expect("conv weight");
        let scale = max_abs(&grads[w]);
        assert!(scale > 0.1, "{layer}: gradient {scale}");
        let h = 1e-3;
        for i in 0..params[w].len() {
            let at = |p: &mut ir::Params, d: f64| p[w].as_slice_mut().expect("contiguous")[i] += d;
            at(&mut params, h);
            let up = weighted_output(&mut jit, &mut params, &x, &r);
            at(&mut params, -2.0 * h);
            let down = weighted_output(&mut jit, &mut params, &x, &r);
            at(&mut params, h);
            let fd = (up - down) / (2.0 * h);
            let got = grads[w].as_slice().expect("contiguous")[i];
            assert!((fd - got).abs() < 2e-3 * scale, "{layer}: weight {i}: backward {got}, differences {fd}");
        }
    }
}

/// `upsample → 1×1 conv` runs as `1×1 conv → upsample` on the JIT (`src/ir/commute.rs`: both
/// linear, the upsample's taps summing to 1, so the bias commutes too): outputs, every node's
/// own value and every gradient match the interpreter, which runs the graph as written — linear
/// and nearest, 1-D and 2-D, with an activation after the conv (applied after the upsample),
/// into a concat (the upsample then writes the concat's slice). Not commuted: a conv that widens
/// the upsampled values, or an upsample read twice.
#[test]
fn an_upsample_before_a_pointwise_conv_runs_after_it_and_matches_the_interpreter() {
    let cases = [
        ("[6, 5, 7]", "y = x -> upsample(2, mode=linear) -> conv(3, kernel=1)", true),
        ("[6, 5, 7]", "y = x -> upsample(3) -> conv(4, kernel=1, bias=false) -> relu", true),
        (
            "[5, 9]",
            "y = x -> upsample(3, mode=linear) -> conv(2, kernel=1) -> conv(3, kernel=3, pad=1)",
            true,
        ),
        (
            "[8, 6, 5]",
            "a = x -> upsample(2, mode=linear) -> conv(4, kernel=1)\n    s = x -> upsample(2)\n    y = concat(a, s) -> conv(2, kernel=3, pad=1)",
            true,
        ),
        ("[1, 5, 6]", "y = x -> upsample(2) -> conv(8, kernel=1)", false),
        ("[4, 5, 6]", "u = x -> upsample(2)\n    c = u -> conv(2, kernel=1)\n    y = concat(c, u)", false),
    ];
    for (shape, body, commuted) in cases {
        let p = program(&model(shape, body));
        compare(&p, 2).unwrap_or_else(|e| panic!("{body}: {e}"));
        let plan = JitModel::describe_plan(&ir::lower(&p, 2)).expect("plan");
        let at = |name: &str| plan.find(&format!(".{name} ")).unwrap_or_else(|| panic!("{name}\n{plan}"));
        assert_eq!(at("conv0") < at("upsample0"), commuted, "{body}:\n{plan}");
        if body.contains("concat(a, s)") {
            let line = plan_line(&p, 2, "a.upsample0");
            assert!(line.contains("writes into"), "{line}");
        }
    }
}

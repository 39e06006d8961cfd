//! The JIT's conv kernels alone, one thread, on the UNet-S hot shape (3×3, 16 → 16 channels,
//! 128×128, batch 8): forward, input-gradient and weight-gradient, at both Cranelift opt levels;
//! and a whole UNet-S batch-8 training step (forward, loss, backward; two threads at most as
//! rayon decides). Throughput is reported in FLOP/s (a multiply-add counts 2).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use geonetc::jit::codegen::{Codegen, CorrSpec, Epilogue, Geometry, GradWSpec, OptLevel};

const N: usize = 8;
const H: usize = 128;
const C: usize = 16;

fn kernels(c: &mut Criterion) {
    let flops = (2 * N * H * H * C * C * 9) as u64;
    let mut g = c.benchmark_group("conv3x3_16to16_128x128_b8_1thread");
    g.throughput(Throughput::Elements(flops));
    g.sample_size(10);
    for opt in [OptLevel::None, OptLevel::Speed] {
        let mut cg = Codegen::new(opt).expect("host ISA");
        let opt = opt.name();
        let geo = Geometry {
            ho: H,
            wo: H,
            hp: H + 2,
            wp: H + 2,
            k: [3, 3],
            s: [1, 1],
            d: [1, 1],
            ci: C,
            csx: C,
            co4: C,
            cso: C,
        };
        let spec = |epilogue| CorrSpec { geo: geo.clone(), bias: true, epilogue, pad: [0, 0], shuffle: None };
        let fwd = cg.corr(&spec(Epilogue::Relu), geonetc::jit::codegen::CORR_BLOCKING).expect("codegen");
        // The input gradient is the same correlation (flipped weights, no bias), masked by relu.
        let bwd = cg
            .corr(&CorrSpec { bias: false, ..spec(Epilogue::ReluMask) }, geonetc::jit::codegen::CORR_BLOCKING)
            .expect("codegen");
        let gw_spec = GradWSpec { geo: geo.clone(), bias: true, pad: [0, 0] };
        let gw = cg.gradw(&gw_spec, geonetc::jit::codegen::GRADW_BLOCKING).expect("codegen");
        cg.finish().expect("finalize");
        let (fwd, bwd, gw) = (cg.corr_fn(fwd), cg.corr_fn(bwd), cg.gradw_fn(gw));
        let x: Vec<f32> = (0..N * (H + 2) * (H + 2) * C).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
        let w: Vec<f32> = (0..C * 9 * C).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        let b = [0.1f32; C];
        let mut y = vec![0.0f32; N * H * H * C];
        let m = vec![1.0f32; N * H * H * C];
        let dy: Vec<f32> = (0..N * H * H * C).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
        let mut dw = vec![0.0f32; C * 9 * C + 2 * C];
        let rows = (N * H) as i64;
        g.bench_function(format!("forward_opt_{opt}"), |bch| {
            // SAFETY: buffers sized for the spec.
            bch.iter(|| unsafe {
                fwd(x.as_ptr(), w.as_ptr(), b.as_ptr(), y.as_mut_ptr(), m.as_ptr(), 0, rows)
            })
        });
        g.bench_function(format!("input_gradient_opt_{opt}"), |bch| {
            // SAFETY: buffers sized for the spec.
            bch.iter(|| unsafe {
                bwd(x.as_ptr(), w.as_ptr(), b.as_ptr(), y.as_mut_ptr(), m.as_ptr(), 0, rows)
            })
        });
        g.bench_function(format!("weight_gradient_opt_{opt}"), |bch| {
            // SAFETY: buffers sized for the spec.
            // In row chunks of 512 positions, as the JIT calls it.
            bch.iter(|| {
                for r0 in (0..rows).step_by(4) {
                    unsafe { gw(x.as_ptr(), dy.as_ptr(), dw.as_mut_ptr(), r0, r0 + 4) }
                }
            })
        });
        std::hint::black_box((&y, &dw));
    }
    g.finish();
}

fn unet_step(c: &mut Criterion) {
    let src = std::fs::read_to_string(format!("{}/examples/unet_s.geonet", env!("CARGO_MANIFEST_DIR")))
        .expect("example");
    let program = geonetc::check::check_source(&src).program.expect("checks");
    let graph = geonetc::ir::lower(&program, 8);
    let mut jit = geonetc::jit::JitModel::compile(&graph).expect("compiles");
    let mut params = geonetc::ir::init_params(&graph, 0);
    let x = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&graph.inputs()[0]), |i| {
        ((i[2] * 7 + i[3]) % 11) as f64 * 0.1
    });
    jit.load_inputs(std::slice::from_ref(&x));
    jit.load_target(&x);
    let mut g = c.benchmark_group("unet_s");
    g.sample_size(10);
    g.throughput(Throughput::Elements(3 * 8 * program.total_flops()));
    g.bench_function("training_step_b8", |b| {
        b.iter(|| {
            jit.forward_loaded(&mut params, true, 0);
            jit.loss_backward(&params, geonetc::check::program::LossKind::Mse, &x)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = kernels, unet_step
}
criterion_main!(benches);

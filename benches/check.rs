//! How long the front end takes on the benchmark network: parse + check of UNet-S, hand-written
//! and built-in. (Kernel and training-step benches come with the JIT.)

use criterion::{Criterion, criterion_group, criterion_main};

fn check(c: &mut Criterion) {
    for name in ["unet_s", "unet_builtin", "classifier"] {
        let src = std::fs::read_to_string(format!("{}/examples/{name}.geonet", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        c.bench_function(&format!("check {name}"), |b| {
            b.iter(|| geonetc::check::check_source(std::hint::black_box(&src)))
        });
    }
}

criterion_group!(benches, check);
criterion_main!(benches);

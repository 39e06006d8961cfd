//! Snapshots of what the back half of the compiler builds, so that a change in the IR, in the
//! JIT's kernels, fusions or buffer sizes, or in the generated code shows up as a reviewed diff:
//!
//! - for every example under `examples/` (each its own snapshot; programs with errors have no
//!   graph and are skipped), the IR at batch 2 (`Graph`'s display: nodes, ops, shapes, params)
//!   and the JIT plan (`JitModel::describe_plan`: per node the step and kernel family, fusions
//!   and folds, kernel geometries, buffer sizes, then `memory_bytes`);
//! - the Cranelift IR of one small correlation kernel.

use geonetc::check::check_source;
use geonetc::ir;
use geonetc::jit::JitModel;
use geonetc::jit::codegen::{CORR_BLOCKING, Codegen, CorrSpec, Epilogue, Geometry, OptLevel};

#[test]
fn ir_and_jit_plan_of_every_example() {
    insta::glob!("../examples", "**/*.geonet", |path| {
        let src = std::fs::read_to_string(path).expect("readable example");
        let Some(program) = check_source(&src).program else { return };
        let graph = ir::lower(&program, 2);
        insta::assert_snapshot!("ir", graph.to_string());
        insta::assert_snapshot!("jit_plan", JitModel::describe_plan(&graph).expect("plans"));
    });
}

/// A 3×3 correlation over a 4×5 padded input with 2 channels to 4 output lanes, bias and a fused
/// relu: three output positions (one partial register block of 5) and one 4-lane vector, every
/// tap unrolled with constant offsets.
#[test]
fn clif_of_a_small_correlation_kernel() {
    let spec = CorrSpec {
        geo: Geometry {
            ho: 2,
            wo: 3,
            hp: 4,
            wp: 5,
            k: [3, 3],
            s: [1, 1],
            d: [1, 1],
            ci: 2,
            csx: 4,
            co4: 4,
            cso: 4,
        },
        bias: true,
        epilogue: Epilogue::Relu,
        pad: [0, 0],
        shuffle: None,
    };
    let mut cg = Codegen::new(OptLevel::None).expect("host ISA");
    insta::assert_snapshot!("corr_3x3_2to4_relu", cg.corr_clif(&spec, CORR_BLOCKING));
}

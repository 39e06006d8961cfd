//! `geonetc bench`: times a model on random data of its input shape — forward (inference) per
//! batch and a full training step (forward, backward, the file's optimizer) per batch, median
//! and minimum over N steps after warm-up. FLOPs follow the peers' `flops.py`: multiply-adds of
//! conv/upconv/dense count 2, a training step counts 3× the forward.

use super::engine::{Backend, Engine};
use super::optim::{self, OptState};
use crate::check::program::LossKind;
use crate::check::program::Program;
use crate::ir;
use crate::jit::JitOptions;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    pub batch: usize,
    pub steps: usize,
    pub threads: usize,
    pub compile_ms: f64,
    pub forward_ms_median: f64,
    pub forward_ms_min: f64,
    pub train_step_ms_median: f64,
    pub train_step_ms_min: f64,
    pub samples_per_s_forward: f64,
    pub samples_per_s_train: f64,
    pub gflops_forward: f64,
    pub gflops_train: f64,
    pub flops_per_sample: u64,
    /// Bytes of the JIT's planned buffers (activations, gradients, scratch, packed weights).
    pub memory_bytes: Option<usize>,
    /// Per-node times over every pass of the run (warm-up included), with `JitOptions::profile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::jit::Profile>,
}

fn median_min(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    let n = t.len();
    let median = if n % 2 == 1 { t[n / 2] } else { 0.5 * (t[n / 2 - 1] + t[n / 2]) };
    (median, t[0])
}

/// Times `program` at `batch` over `steps` steps; the JIT is compiled with `jit`'s options.
pub fn bench(
    program: &Program,
    batch: usize,
    steps: usize,
    backend: Backend,
    jit: &JitOptions,
) -> Result<BenchReport, String> {
    let steps = steps.max(1);
    let started = Instant::now();
    let g = ir::lower(program, batch);
    let mut engine = Engine::with_options(&g, backend, jit)?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let inputs: Vec<ArrayD<f64>> =
        g.inputs().iter().map(|s| ArrayD::from_shape_fn(IxDyn(s), |_| rng.random_range(-1.0..1.0))).collect();
    let out_shape: Vec<usize> = match g.outputs().first() {
        Some(&v) => g.shape(v).to_vec(),
        None => vec![batch],
    };
    let target = ArrayD::from_shape_fn(IxDyn(&out_shape), |_| rng.random_range(-1.0..1.0));
    let mut params = ir::init_params(&g, 0);
    let trainable: Vec<bool> = g.params().iter().map(|p| p.trainable()).collect();
    let sizes: Vec<usize> = params.iter().map(|p| p.len()).collect();
    let mut opt = OptState::new(&program.optimizer, &sizes);
    let warmup = 2.min(steps);
    // The batch is resident in the backend's own layout, as a framework's tensors are: the JIT
    // converts it once here, not in the timed loops.
    if let Engine::Jit(j) = &mut engine {
        j.load_inputs(&inputs);
        j.load_target(&target);
    }
    let mut fwd = vec![];
    for i in 0..warmup + steps {
        let t = Instant::now();
        match &mut engine {
            Engine::Jit(j) => j.forward_loaded(&mut params, false, 0),
            e => {
                std::hint::black_box(e.forward(&mut params, &inputs, false, 0));
            }
        }
        if i >= warmup {
            fwd.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut train = vec![];
    for i in 0..warmup + steps {
        let t = Instant::now();
        let grads = match &mut engine {
            Engine::Jit(j) => {
                j.forward_loaded(&mut params, true, i as u64);
                j.loss_backward(&params, LossKind::Mse, &target).1
            }
            e => e.train_step(&mut params, &inputs, &target, LossKind::Mse, i as u64).1,
        };
        let update = Instant::now();
        let kernel_s = optim::step(&program.optimizer, &mut opt, &mut params, &grads, &trainable);
        // The update is part of the step the profile accounts for (generated code, `jit::update`).
        if let Engine::Jit(j) = &mut engine {
            j.profile_step_part(crate::jit::OPTIMIZER, update.elapsed().as_secs_f64(), kernel_s);
        }
        engine.recycle_grads(grads);
        if i >= warmup {
            train.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (forward_ms_median, forward_ms_min) = median_min(fwd);
    let (train_step_ms_median, train_step_ms_min) = median_min(train);
    let flops = program.total_flops();
    let per_batch = flops as f64 * batch as f64;
    Ok(BenchReport {
        model: program.model.name.clone(),
        backend: backend.name().into(),
        memory_bytes: engine.memory_bytes(),
        profile: engine.profile().cloned(),
        batch,
        steps,
        threads: rayon::current_num_threads(),
        compile_ms,
        forward_ms_median,
        forward_ms_min,
        train_step_ms_median,
        train_step_ms_min,
        samples_per_s_forward: batch as f64 / forward_ms_median * 1e3,
        samples_per_s_train: batch as f64 / train_step_ms_median * 1e3,
        gflops_forward: per_batch / forward_ms_median / 1e6,
        gflops_train: 3.0 * per_batch / train_step_ms_median / 1e6,
        flops_per_sample: flops,
    })
}

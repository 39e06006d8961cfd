//! The training loop: data, seeded shuffling, mini-batches, optimizer steps, validation,
//! metrics, checkpoints, resume, Ctrl-C and divergence handling.
//!
//! Determinism: the shuffle of epoch `e` is drawn from `seed` and `e` alone, and dropout masks
//! from `seed`, `e` and the batch index, so a resumed run takes exactly the steps an
//! uninterrupted one would.

use super::checkpoint::{self, Position};
use super::data::{self, Dataset};
use super::engine::{Backend, Engine};
use super::optim::{self, OptState};
use crate::check::program::{DataSpec, LossKind, Program};
use crate::ir::{self, Params};
use crate::ops::loss::loss;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub struct TrainOptions {
    pub epochs: Option<usize>,
    /// Directory for weights, checkpoint and metrics (default: beside the .geonet file).
    pub out_dir: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    /// Set (e.g. by Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Draw an indicatif progress bar (on a terminal).
    pub progress_bar: bool,
    pub backend: Backend,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_snr_db: Option<f64>,
    pub seconds: f64,
}

#[derive(Debug)]
pub struct TrainReport {
    pub epochs: Vec<EpochMetrics>,
    pub weights: PathBuf,
    pub checkpoint: PathBuf,
    pub metrics: PathBuf,
    /// SNR of the noisy validation inputs, for denoising data.
    pub input_snr_db: Option<f64>,
    /// Set when training stopped before the last epoch (Ctrl-C).
    pub interrupted: bool,
}

#[derive(Debug)]
pub enum TrainError {
    /// Bad data files, unwritable output: exit 2.
    Io(String),
    /// The loss became NaN or infinite: exit 1.
    Diverged(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Io(m) | TrainError::Diverged(m) => f.write_str(m),
        }
    }
}

/// Loads the train block's data, paths relative to `base_dir`.
pub fn load_data(program: &Program, base_dir: &Path) -> Result<Dataset, TrainError> {
    let train = program.train.as_ref().ok_or_else(|| TrainError::Io("no train block".into()))?;
    let in_shape = &program.model.inputs[0].shape;
    let out_shape = &program.model.outputs[0].shape;
    match &train.data {
        DataSpec::Synthetic { shape, count, noise, seed } => {
            Ok(data::synthetic(shape, *count, *noise, *seed))
        }
        DataSpec::Npy { input, target } => {
            data::npy(&base_dir.join(input), &base_dir.join(target), in_shape, out_shape)
                .map_err(TrainError::Io)
        }
        DataSpec::Segy { path, patch, step, noise, seed } => {
            data::segy(&base_dir.join(path), in_shape, patch.as_deref(), step.as_deref(), *noise, *seed)
                .map_err(TrainError::Io)
        }
    }
}

/// The compiled model per batch size (the last batch of an epoch may be smaller).
struct Engines<'a> {
    program: &'a Program,
    backend: Backend,
    by_batch: HashMap<usize, Engine>,
}

impl Engines<'_> {
    fn get(&mut self, batch: usize) -> Result<&mut Engine, TrainError> {
        if !self.by_batch.contains_key(&batch) {
            let e = Engine::new(&ir::lower(self.program, batch), self.backend)
                .map_err(|e| TrainError::Io(format!("cannot compile the model: {e}")))?;
            self.by_batch.insert(batch, e);
        }
        self.by_batch.get_mut(&batch).ok_or_else(|| TrainError::Io("engine".into()))
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
}

/// Trains `program` as its `train` block says. `log` receives one line per epoch and notes.
pub fn train(
    program: &Program,
    base_dir: &Path,
    opts: &TrainOptions,
    log: &mut dyn FnMut(&str),
) -> Result<TrainReport, TrainError> {
    let spec = program.train.clone().ok_or_else(|| TrainError::Io("no train block".into()))?;
    let dataset = load_data(program, base_dir)?;
    let epochs = opts.epochs.unwrap_or(spec.epochs);
    let n = dataset.len();
    let n_val = if spec.validate > 0.0 && n > 1 {
        ((spec.validate * n as f64).floor() as usize).clamp(1, n - 1)
    } else {
        0
    };
    let n_train = n - n_val;
    let denoising = spec.loss != LossKind::CrossEntropy && dataset.inputs.shape() == dataset.targets.shape();

    let out_dir = opts.out_dir.clone().unwrap_or_else(|| base_dir.to_path_buf());
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| TrainError::Io(format!("cannot create {}: {e}", out_dir.display())))?;
    let save_name =
        Path::new(&spec.save).file_name().map(|s| s.to_owned()).unwrap_or_else(|| "model.safetensors".into());
    let weights_path = match &opts.out_dir {
        Some(d) => d.join(&save_name),
        None => base_dir.join(&spec.save),
    };
    let stem =
        weights_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let dir = weights_path.parent().map(Path::to_path_buf).unwrap_or(out_dir);
    let ckpt_path = dir.join(format!("{stem}.ckpt.safetensors"));
    let metrics_path = dir.join(format!("{stem}.metrics.jsonl"));

    let mut graphs = Engines { program, backend: opts.backend, by_batch: HashMap::new() };
    let first_batch = spec.batch.min(n_train.max(1));
    let first = graphs.get(first_batch)?;
    if opts.backend == Backend::Jit {
        log(&format!("compiled for batch {first_batch} in {:.0} ms", first.compile_ms()));
    }
    let template = first.graph().clone();
    let trainable: Vec<bool> = template.params.iter().map(|p| p.trainable()).collect();
    let sizes: Vec<usize> = template.params.iter().map(|p| p.shape.iter().product()).collect();
    let fresh_opt = OptState::new(&program.optimizer, &sizes);
    let (mut params, mut opt, mut pos) = match &opts.resume {
        Some(path) => {
            let (p, o, pos) =
                checkpoint::load_checkpoint(path, &template, &fresh_opt).map_err(TrainError::Io)?;
            log(&format!("resuming from {} at epoch {}, batch {}", path.display(), pos.epoch + 1, pos.batch));
            (p, o, pos)
        }
        None => (ir::init_params(&template, spec.seed), fresh_opt, Position { epoch: 0, batch: 0 }),
    };
    let mut history: Vec<EpochMetrics> = std::fs::read_to_string(&metrics_path)
        .ok()
        .filter(|_| opts.resume.is_some())
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .filter(|m: &EpochMetrics| m.epoch <= pos.epoch)
                .collect()
        })
        .unwrap_or_default();

    let val_idx: Vec<usize> = (n_train..n).collect();
    let input_snr_db = (denoising && n_val > 0).then(|| {
        let (x, t) = dataset.batch(&val_idx);
        data::snr_db(&t, &x)
    });
    // The training data's RMS travels with the weights: inference scales SEG-Y sections to it.
    let data_rms = data::rms(if denoising { &dataset.targets } else { &dataset.inputs });
    let meta = |epoch: usize| {
        let mut m = HashMap::new();
        m.insert("model".to_string(), program.model.name.clone());
        m.insert("epochs".to_string(), epoch.to_string());
        m.insert("data_rms".to_string(), data_rms.to_string());
        // The weights check (`check --weights`) warns when a model declares another input size.
        let shapes: Vec<&Vec<usize>> = program.model.inputs.iter().map(|t| &t.shape).collect();
        m.insert("input_shapes".to_string(), serde_json::to_string(&shapes).unwrap_or_default());
        m
    };
    let batches_per_epoch = n_train.div_ceil(spec.batch);
    let bar = opts.progress_bar.then(|| {
        let b = indicatif::ProgressBar::new(((epochs.saturating_sub(pos.epoch)) * batches_per_epoch) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut interrupted = false;
    while pos.epoch < epochs {
        let started = Instant::now();
        let epoch = pos.epoch;
        let mut order: Vec<usize> = (0..n_train).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(spec.seed, epoch as u64 + 1, 0)));
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for (b, idx) in order.chunks(spec.batch).enumerate().skip(pos.batch) {
            let (x, t) = dataset.batch(idx);
            let engine = graphs.get(idx.len())?;
            let seed = mix(spec.seed, epoch as u64 + 1, b as u64 + 1);
            let (l, grads) = engine.train_step(&mut params, &[x], &t, spec.loss, seed);
            if !l.is_finite() {
                return Err(TrainError::Diverged(format!(
                    "the loss became {l} at epoch {}, batch {}; stopped. The last good weights are in {} (lower the learning rate, or add `clip`)",
                    epoch + 1,
                    b + 1,
                    weights_path.display()
                )));
            }
            optim::step(&program.optimizer, &mut opt, &mut params, &grads, &trainable);
            loss_sum += l * idx.len() as f64;
            seen += idx.len();
            if let Some(bar) = &bar {
                bar.inc(1);
                bar.set_message(format!("epoch {}  loss {:.5}", epoch + 1, loss_sum / seen as f64));
            }
            if opts.stop.load(Ordering::SeqCst) {
                let at = Position { epoch, batch: b + 1 };
                checkpoint::save_checkpoint(&ckpt_path, &template, &params, &opt, &at)
                    .map_err(TrainError::Io)?;
                checkpoint::save_weights(&weights_path, &template, &params, meta(epoch))
                    .map_err(TrainError::Io)?;
                interrupted = true;
                break;
            }
        }
        if interrupted {
            break;
        }
        let (val_loss, val_snr_db) =
            validate(&mut graphs, &mut params, &dataset, &val_idx, spec.batch, spec.loss, denoising)?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: if seen > 0 { loss_sum / seen as f64 } else { f64::NAN },
            val_loss,
            val_snr_db,
            seconds: started.elapsed().as_secs_f64(),
        };
        let line = format!(
            "epoch {}/{}  train loss {:.6}{}{}  ({:.1} s)",
            m.epoch,
            epochs,
            m.train_loss,
            m.val_loss.map_or(String::new(), |v| format!("  val loss {v:.6}")),
            m.val_snr_db.map_or(String::new(), |v| format!("  val SNR {v:.2} dB")),
            m.seconds
        );
        match &bar {
            Some(bar) => bar.println(line),
            None => log(&line),
        }
        history.push(m);
        pos = Position { epoch: epoch + 1, batch: 0 };
        checkpoint::save_weights(&weights_path, &template, &params, meta(epoch + 1))
            .map_err(TrainError::Io)?;
        checkpoint::save_checkpoint(&ckpt_path, &template, &params, &opt, &pos).map_err(TrainError::Io)?;
        let lines: String =
            history.iter().filter_map(|m| serde_json::to_string(m).ok()).map(|l| l + "\n").collect();
        super::write_atomically(&metrics_path, lines.as_bytes()).map_err(TrainError::Io)?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(TrainReport {
        epochs: history,
        weights: weights_path,
        checkpoint: ckpt_path,
        metrics: metrics_path,
        input_snr_db,
        interrupted,
    })
}

/// Validation loss and, for denoising, SNR over the held-out samples, in inference mode.
fn validate(
    graphs: &mut Engines,
    params: &mut Params,
    dataset: &Dataset,
    idx: &[usize],
    batch: usize,
    kind: LossKind,
    denoising: bool,
) -> Result<(Option<f64>, Option<f64>), TrainError> {
    if idx.is_empty() {
        return Ok((None, None));
    }
    let (mut loss_sum, mut s2, mut e2) = (0.0, 0.0, 0.0);
    for chunk in idx.chunks(batch) {
        let (x, t) = dataset.batch(chunk);
        let y = graphs.get(chunk.len())?.forward(params, &[x], false, 0).remove(0);
        loss_sum += loss(kind, &y, &t).0 * chunk.len() as f64;
        if denoising {
            s2 += t.iter().map(|v| v * v).sum::<f64>();
            e2 += t.iter().zip(y.iter()).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        }
    }
    Ok((Some(loss_sum / idx.len() as f64), denoising.then(|| 10.0 * (s2 / e2.max(1e-300)).log10())))
}

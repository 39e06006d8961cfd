//! The training loop: data, seeded shuffling, mini-batches, optimizer steps, validation,
//! metrics, checkpoints, resume, Ctrl-C and divergence handling.
//!
//! Determinism: the shuffle of epoch `e` is drawn from `seed` and `e` alone, and dropout masks
//! from `seed`, `e` and the batch index, so a resumed run takes exactly the steps an
//! uninterrupted one would.

use super::checkpoint::{self, Position};
use super::data::{self, Dataset};
use super::distributed::{self, Collective, ShardStats, SingleProcess};
use super::engine::{Backend, Engine};
use super::optim::{self, OptState};
use super::{masking, validation};
use crate::check::program::{DataSpec, LossKind, Program, TrainSpec};
use crate::ir::{self, Params};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
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
    /// Every epoch's metrics (on resume, also the earlier run's).
    pub epochs: Vec<EpochMetrics>,
    /// Epochs trained by this call (0 with `--epochs 0` or when resuming past the last epoch).
    pub trained_epochs: usize,
    pub weights: PathBuf,
    pub checkpoint: PathBuf,
    pub metrics: PathBuf,
    /// The files this call wrote, in the order first written (empty when nothing was trained).
    pub written: Vec<PathBuf>,
    /// SNR of the noisy validation inputs, for denoising data.
    pub input_snr_db: Option<f64>,
    /// Set when training stopped before the last epoch (Ctrl-C, SIGTERM).
    pub interrupted: bool,
}

/// Where a run writes: the weights (`save =`), the checkpoint and metrics beside them.
#[derive(Clone, Debug)]
pub struct OutputPaths {
    /// The folder holding all three (locked while training).
    pub dir: PathBuf,
    pub weights: PathBuf,
    pub checkpoint: PathBuf,
    pub metrics: PathBuf,
}

/// The output paths of a run: `save =` relative to `base_dir`, or its file name inside
/// `out_dir`.
pub fn output_paths(
    program: &Program,
    base_dir: &Path,
    out_dir: Option<&Path>,
) -> Result<OutputPaths, TrainError> {
    let spec = program.train.as_ref().ok_or_else(|| TrainError::Io("no train block".into()))?;
    let save_name =
        Path::new(&spec.save).file_name().map(|s| s.to_owned()).unwrap_or_else(|| "model.safetensors".into());
    let weights = match out_dir {
        Some(d) => d.join(&save_name),
        None => base_dir.join(&spec.save),
    };
    let stem =
        weights.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let dir = weights
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(OutputPaths {
        checkpoint: weights.with_file_name(format!("{stem}.ckpt.safetensors")),
        metrics: weights.with_file_name(format!("{stem}.metrics.jsonl")),
        weights,
        dir,
    })
}

/// The data files the train block reads (none for synthetic data), relative to `base_dir`.
pub fn data_files(program: &Program, base_dir: &Path) -> Vec<(&'static str, PathBuf)> {
    match program.train.as_ref().map(|t| &t.data) {
        Some(DataSpec::Npy { input, target, .. }) => {
            let mut files = vec![("the training input", base_dir.join(input))];
            files.extend(target.as_ref().map(|t| ("the training target", base_dir.join(t))));
            files
        }
        Some(DataSpec::Segy { path, .. }) => vec![("the training data", base_dir.join(path))],
        _ => vec![],
    }
}

/// Losses as humans read them: fixed point in the usual range, scientific notation for
/// diverging or vanishing values (`5.0e21`, not 22 digits).
pub fn fmt_loss(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e4).contains(&v.abs()) {
        format!("{v:.3e}")
    } else {
        format!("{v:.6}")
    }
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

/// Loads the train block's data, paths relative to `base_dir`, and checks it: at least one
/// sample, every value finite, targets that fit the loss (class indices below the class
/// count for cross_entropy, the output's shape otherwise).
pub fn load_data(program: &Program, base_dir: &Path) -> Result<Dataset, TrainError> {
    load_data_until(program, base_dir, &|| false)
}

/// [`load_data`], polling `stop` during the passes over a SEG-Y/SU file (minutes on a large one).
pub fn load_data_until(
    program: &Program,
    base_dir: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<Dataset, TrainError> {
    let train = program.train.as_ref().ok_or_else(|| TrainError::Io("no train block".into()))?;
    if program.model.inputs.len() != 1 {
        return Err(TrainError::Io(format!(
            "the model has {} inputs; training data feeds models with one input",
            program.model.inputs.len()
        )));
    }
    let in_shape = &program.model.inputs[0].shape;
    let out_shape = &program.model.outputs[0].shape;
    let (dataset, what) = match &train.data {
        DataSpec::Synthetic { shape, count, noise, seed } => (
            data::synthetic(shape, *count, noise, *seed).map_err(TrainError::Io)?,
            "the synthetic data".to_string(),
        ),
        DataSpec::Npy { input, target: None, .. } => {
            // Self-supervised on noisy arrays alone: the inputs are their own (masked) targets,
            // and there is no clean reference to score against.
            // A 2-D array is one section `[time, traces]` (as `infer` reads it), cut into patches.
            let x = base_dir.join(input);
            let array = data::read_npy(&x).map_err(TrainError::Io)?;
            data::check_values(&array, &x).map_err(TrainError::Io)?;
            let ds = match array.into_dimensionality::<ndarray::Ix2>() {
                Ok(section) if in_shape.len() == 3 => {
                    let none = data::AddedNoise {
                        spec: crate::check::program::NoiseSpec::gaussian(0.0),
                        reference_rms: Some(1.0),
                        dt: 1.0,
                        seed: 0,
                    };
                    data::section_patches(section, &x, in_shape, None, None, none).map_err(TrainError::Io)?
                }
                _ => data::npy(&x, &x, in_shape, out_shape).map_err(TrainError::Io)?,
            };
            (Dataset { clean_targets: false, ..ds }, x.display().to_string())
        }
        DataSpec::Npy { input, target: Some(target), noise, dt_ms, seed } => {
            let (x, t) = (base_dir.join(input), base_dir.join(target));
            let mut ds = data::npy(&x, &t, in_shape, out_shape).map_err(TrainError::Io)?;
            data::check_values(&ds.inputs, &x).map_err(TrainError::Io)?;
            if let Some(noise) = noise {
                // Amplitudes relative to each sample's RMS, as for synthetic data.
                let dt = dt_ms / 1000.0;
                noise.check_interval(dt, &x.display().to_string()).map_err(TrainError::Io)?;
                let added = data::AddedNoise { spec: noise.clone(), reference_rms: None, dt, seed: *seed };
                if x == t {
                    // The file is the clean data: its noise can be drawn afresh each epoch.
                    ds.inputs = added.add_all(&ds.targets, data::NOISE_FIXED);
                    ds.noise = Some(added);
                } else {
                    for (i, sample) in ds.inputs.outer_iter_mut().enumerate() {
                        added.add_to(sample, i, data::NOISE_FIXED);
                    }
                }
            }
            data::check_targets(&ds.targets, train.loss, out_shape, &t).map_err(TrainError::Io)?;
            (ds, t.display().to_string())
        }
        DataSpec::Segy { path, patch, step, noise, seed, holdout } => {
            // Read a batch at a time; the scan that sets the scale refuses non-finite samples.
            let p = base_dir.join(path);
            let plan = data::SegyPlan {
                holdout: *holdout,
                stop,
                ..data::SegyPlan::new(patch.as_deref(), step.as_deref())
            };
            let ds = data::segy(&p, in_shape, &plan, noise, *seed).map_err(TrainError::Io)?;
            (ds, p.display().to_string())
        }
    };
    if dataset.is_empty() {
        return Err(TrainError::Io(format!("{what} holds no samples: nothing to train on")));
    }
    // Every source's targets must fit the loss and the model's output (a recorded section's
    // patches for a classifier would not), or the loss would index out of its arrays.
    data::check_targets(&dataset.targets, train.loss, out_shape, Path::new(&what)).map_err(TrainError::Io)?;
    Ok(dataset)
}

/// What a checkpoint must agree on with the run resuming from it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub optimizer: String,
    pub loss: String,
    pub seed: u64,
    pub batch: usize,
    pub data: String,
    /// FNV-1a of the checked model (layers, attributes, shapes, `init` values).
    pub model: String,
    /// The self-supervised target (absent for supervised runs and older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Fingerprint {
    pub fn of(program: &Program) -> Option<Fingerprint> {
        let t = program.train.as_ref()?;
        Some(Fingerprint {
            optimizer: json(&program.optimizer),
            loss: json(&t.loss),
            seed: t.seed,
            batch: t.batch,
            data: json(&t.data),
            model: format!("{:016x}", fnv1a(json(&program.model).as_bytes())),
            target: t.target.as_ref().map(json),
        })
    }

    /// The fields that differ, each with its two values: empty when they agree.
    pub fn differences(&self, now: &Fingerprint) -> Vec<String> {
        let mut out = vec![];
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name} (checkpoint {a}, now {b})"));
            }
        };
        cmp("optimizer", self.optimizer.clone(), now.optimizer.clone());
        cmp("loss", self.loss.clone(), now.loss.clone());
        cmp("seed", self.seed.to_string(), now.seed.to_string());
        cmp("batch", self.batch.to_string(), now.batch.to_string());
        cmp("data", self.data.clone(), now.data.clone());
        let target = |t: &Option<String>| t.clone().unwrap_or_else(|| "supervised".into());
        cmp("target", target(&self.target), target(&now.target));
        if self.model != now.model {
            out.push("the model's layers".into());
        }
        out
    }
}

/// Compact JSON of a checked item, for fingerprints and provenance.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
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
///
/// Before the first step: the output folder is created and locked (one run per folder), every
/// output path is checked writable and none may be a data file, the data is loaded and
/// checked, and a resumed checkpoint must match this run's fingerprint. Nothing is written when
/// no epoch is left to train.
pub fn train(
    program: &Program,
    base_dir: &Path,
    opts: &TrainOptions,
    log: &mut dyn FnMut(&str),
) -> Result<TrainReport, TrainError> {
    train_with(program, base_dir, opts, Rc::new(SingleProcess), log)
}

/// [`train`] as one rank of a data-parallel run (see `runtime/distributed.rs`): every rank
/// computes the gradients of its shard of each global batch; rank 0 adds them, steps the
/// optimizer, sends the parameters back and alone validates and writes files (and logs).
pub fn train_with(
    program: &Program,
    base_dir: &Path,
    opts: &TrainOptions,
    collective: Rc<dyn Collective>,
    log: &mut dyn FnMut(&str),
) -> Result<TrainReport, TrainError> {
    let (rank, ranks) = (collective.rank(), collective.size());
    let root = rank == 0;
    let mut quiet = |_: &str| {};
    let log: &mut dyn FnMut(&str) = if root { log } else { &mut quiet };
    let spec = program.train.clone().ok_or_else(|| TrainError::Io("no train block".into()))?;
    let paths = output_paths(program, base_dir, opts.out_dir.as_deref())?;
    let inputs = data_files(program, base_dir);
    let outputs = [
        ("the weights file", &paths.weights),
        ("the checkpoint", &paths.checkpoint),
        ("the metrics file", &paths.metrics),
    ];
    let ins: Vec<(&str, &Path)> = inputs.iter().map(|(w, p)| (*w, p.as_path())).collect();
    let outs: Vec<(&str, &Path)> = outputs.iter().map(|(w, p)| (*w, p.as_path())).collect();
    crate::output::refuse_overwriting(&outs, &ins).map_err(TrainError::Io)?;
    let epochs = opts.epochs.unwrap_or(spec.epochs);
    let nothing_to_do = || TrainReport {
        epochs: vec![],
        trained_epochs: 0,
        weights: paths.weights.clone(),
        checkpoint: paths.checkpoint.clone(),
        metrics: paths.metrics.clone(),
        written: vec![],
        input_snr_db: None,
        interrupted: false,
    };
    if epochs == 0 && opts.resume.is_none() {
        return Ok(nothing_to_do());
    }
    // Only rank 0 writes, so only it creates, locks and checks the output folder.
    let _lock = if root {
        std::fs::create_dir_all(&paths.dir)
            .map_err(|e| TrainError::Io(format!("cannot create {}: {e}", paths.dir.display())))?;
        let lock = crate::output::DirLock::acquire(&paths.dir).map_err(TrainError::Io)?;
        for (_, p) in &outputs {
            crate::output::check_target(p).map_err(TrainError::Io)?;
        }
        Some(lock)
    } else {
        None
    };
    // Ctrl-C while the data loads (a pass over a large file takes minutes) ends the run with
    // nothing written. Ranks of a data-parallel run load alike and stop together at a step.
    let stop_loading = || ranks == 1 && opts.stop.load(Ordering::SeqCst);
    let dataset = match load_data_until(program, base_dir, &stop_loading) {
        Err(_) if stop_loading() => return Ok(TrainReport { interrupted: true, ..nothing_to_do() }),
        loaded => loaded?,
    };
    let data_name =
        data_files(program, base_dir).first().map(|(_, p)| p.display().to_string()).unwrap_or_default();
    let split = dataset.split(spec.validate, spec.seed, &data_name).map_err(TrainError::Io)?;
    if let (Some(file), Some(index)) = (&dataset.file, &dataset.patches) {
        log(&format!(
            "data: {} {}, read from the file a batch at a time; scale: clipped RMS {:.6e} of the live samples",
            index.len(),
            index.describe_kind(),
            file.scale
        ));
    }
    let n_train = split.train.len();
    let smallest = distributed::smallest_batch(n_train, spec.batch);
    if smallest < ranks {
        return Err(TrainError::Io(format!(
            "the smallest global batch holds {smallest} samples ({n_train} training samples in batches of {}), fewer than the {ranks} ranks: every rank needs at least one sample; run fewer ranks or change `batch`",
            spec.batch
        )));
    }
    let denoising = spec.loss != LossKind::CrossEntropy && dataset.inputs.shape() == dataset.targets.shape();
    let score = denoising && dataset.clean_targets;
    let (weights_path, ckpt_path, metrics_path) =
        (paths.weights.clone(), paths.checkpoint.clone(), paths.metrics.clone());

    let mut graphs = Engines { program, backend: opts.backend, by_batch: HashMap::new() };
    let first_batch = distributed::shard(spec.batch.min(n_train.max(1)), rank, ranks).len();
    let first = graphs.get(first_batch)?;
    if opts.backend == Backend::Jit {
        log(&format!("compiled for batch {first_batch} in {:.0} ms", first.compile_ms()));
    }
    let template = first.graph().clone();
    let trainable: Vec<bool> = template.params().iter().map(|p| p.trainable()).collect();
    let sizes: Vec<usize> = template.params().iter().map(|p| p.shape.iter().product()).collect();
    let fresh_opt = OptState::new(&program.optimizer, &sizes);
    let fingerprint = Fingerprint::of(program).ok_or_else(|| TrainError::Io("no train block".into()))?;
    let (mut params, mut opt, mut pos) = match &opts.resume {
        // Rank 0 alone reads the checkpoint; the others receive its parameters and position.
        Some(path) if root => {
            let (p, o, pos, checked) = checkpoint::load_checkpoint(path, &template, &fresh_opt, &fingerprint)
                .map_err(TrainError::Io)?;
            if !checked {
                log(&format!(
                    "note: {} has no run fingerprint (an older geonetc); its optimizer, seed, batch and data cannot be checked",
                    path.display()
                ));
            }
            log(&format!("resuming from {} at epoch {}, batch {}", path.display(), pos.epoch + 1, pos.batch));
            (p, o, pos)
        }
        _ => (ir::init_params(&template, spec.seed), fresh_opt, Position { epoch: 0, batch: 0 }),
    };
    if ranks > 1 {
        let mut at = [pos.epoch as f64, pos.batch as f64];
        collective.broadcast(&mut at);
        pos = Position { epoch: at[0] as usize, batch: at[1] as usize };
        broadcast_params(&*collective, &mut params, 0.0);
    }
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

    let val_idx = validation::bounded(&split.val);
    let input_snr_db = match score && !val_idx.is_empty() {
        true => Some(validation::input_snr(&dataset, &val_idx).map_err(TrainError::Io)?),
        false => None,
    };
    log(&validation::describe(&split, dataset.patches.as_ref(), spec.validate, input_snr_db));
    let mut report = TrainReport { input_snr_db, ..nothing_to_do() };
    if pos.epoch >= epochs {
        report.epochs = history;
        return Ok(report);
    }
    // The training data's clipped RMS of live samples travels with the weights: inference
    // measures a file's the same way and scales it to this. A self-supervised model learned
    // from the noisy inputs: their level is what it expects.
    let supervised_denoiser = denoising && spec.target.is_none();
    let levels = dataset.levels(!supervised_denoiser).map_err(TrainError::Io)?;
    let data_rms = levels.clipped_rms;
    // What the model saw, so `infer` can say when a file is far from it: the sample interval
    // and the ratio of the largest amplitude to the RMS.
    let seen = data::Seen::of(&spec.data, base_dir, &levels);
    let meta = |epoch: usize| {
        let mut m = provenance(program, &spec, epoch, data_rms);
        m.extend(seen.metadata());
        m
    };
    fn note_written(report: &mut TrainReport, p: &Path) {
        if !report.written.iter().any(|w| w == p) {
            report.written.push(p.to_path_buf());
        }
    }
    // The last weights this call saved: (epoch, its train loss).
    let mut saved: Option<(usize, f64)> = None;
    let batches_per_epoch = n_train.div_ceil(spec.batch);
    let bar = (opts.progress_bar && root).then(|| {
        let steps = epochs.saturating_sub(pos.epoch).saturating_mul(batches_per_epoch);
        let b = indicatif::ProgressBar::new(steps as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    while pos.epoch < epochs {
        let started = Instant::now();
        let epoch = pos.epoch;
        let mut order: Vec<usize> = split.train.clone();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(spec.seed, epoch as u64 + 1, 0)));
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for (b, global) in order.chunks(spec.batch).enumerate().skip(pos.batch) {
            let idx = &global[distributed::shard(global.len(), rank, ranks)];
            // Supervised: a fresh noise draw every epoch. Self-supervised: the one noisy
            // recording the user has (a fresh draw would be a second, independent recording).
            let draw = if spec.target.is_some() { data::NOISE_FIXED } else { epoch as u64 + 1 };
            let (x, t) = dataset.batch_with_noise(idx, draw).map_err(TrainError::Io)?;
            let engine = graphs.get(idx.len())?;
            // Dropout masks: rank 0's seed is the single-process one; other shards draw their own.
            let seed = mix(spec.seed, epoch as u64 + 1, b as u64 + 1)
                ^ (rank as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
            let mut step = |params: &mut Params| match spec.target {
                // Masking is data preparation, fresh every batch; the target is the unmasked
                // noisy input, and the loss is taken on the masked samples only.
                Some(scheme) => {
                    let (masked, mask) = masking::mask_batch(&x, scheme, seed ^ 0x0A5C_0A5C);
                    engine.train_step_masked(params, &[masked], &x, Some(&mask), spec.loss, seed)
                }
                None => engine.train_step(params, std::slice::from_ref(&x), &t, spec.loss, seed),
            };
            let (l, mut grads) = if ranks > 1 {
                let sync = ShardStats {
                    collective: collective.clone(),
                    uneven_weight: (global.len() % ranks != 0)
                        .then(|| idx.len() as f64 / global.len() as f64),
                    shard: distributed::shard(global.len(), rank, ranks),
                    batch: global.len(),
                };
                crate::ops::batchnorm::with_stats_sync(Rc::new(sync), || step(&mut params))
            } else {
                step(&mut params)
            };
            let l = if ranks > 1 {
                distributed::reduce_gradients(&*collective, l, &mut grads, idx.len(), global.len())
            } else {
                l
            };
            if !root {
                match receive_params(&*collective, &mut params) {
                    Control::Continue => continue,
                    Control::Stop | Control::Diverged => return Ok(nothing_to_do()),
                }
            }
            if !l.is_finite() {
                if ranks > 1 {
                    broadcast_params(&*collective, &mut params, Control::Diverged.code());
                }
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Err(TrainError::Diverged(divergence_message(
                    l,
                    epoch,
                    b,
                    &x,
                    &t,
                    saved,
                    &weights_path,
                )));
            }
            optim::step(&program.optimizer, &mut opt, &mut params, &grads, &trainable);
            engine.recycle_grads(grads);
            loss_sum += l * global.len() as f64;
            seen += global.len();
            let stop = opts.stop.load(Ordering::SeqCst);
            if ranks > 1 {
                let control = if stop { Control::Stop } else { Control::Continue };
                broadcast_params(&*collective, &mut params, control.code());
            }
            if let Some(bar) = &bar {
                bar.inc(1);
                bar.set_message(format!("epoch {}  loss {}", epoch + 1, fmt_loss(loss_sum / seen as f64)));
            }
            if stop {
                let at = Position { epoch, batch: b + 1 };
                checkpoint::save_checkpoint(&ckpt_path, &template, &params, &opt, &at, &fingerprint)
                    .map_err(TrainError::Io)?;
                note_written(&mut report, &ckpt_path);
                checkpoint::save_weights(&weights_path, &template, &params, meta(epoch))
                    .map_err(TrainError::Io)?;
                note_written(&mut report, &weights_path);
                report.interrupted = true;
                break;
            }
        }
        if report.interrupted {
            break;
        }
        if !root {
            pos = Position { epoch: epoch + 1, batch: 0 };
            continue;
        }
        let plan = validation::Validation {
            dataset: &dataset,
            idx: &val_idx,
            batch: spec.batch,
            kind: spec.loss,
            score,
            target: spec.target,
            seed: spec.seed,
        };
        let mut forward =
            |params: &mut Params, x: ndarray::ArrayD<f64>| -> Result<ndarray::ArrayD<f64>, String> {
                let n = x.shape()[0];
                let engine = graphs.get(n).map_err(|e| e.to_string())?;
                Ok(engine.forward(params, &[x], false, 0).remove(0))
            };
        let (val_loss, val_snr_db) =
            validation::validate(&plan, &mut forward, &mut params).map_err(TrainError::Io)?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: if seen > 0 { loss_sum / seen as f64 } else { f64::NAN },
            val_loss,
            val_snr_db,
            seconds: started.elapsed().as_secs_f64(),
        };
        let line = format!(
            "epoch {}/{}  train loss {}{}{}  ({:.1} s)",
            m.epoch,
            epochs,
            fmt_loss(m.train_loss),
            m.val_loss.map_or(String::new(), |v| format!("  val loss {}", fmt_loss(v))),
            m.val_snr_db.map_or(String::new(), |v| format!("  val SNR {}", fmt_snr(v))),
            m.seconds
        );
        let worse = (epoch + 1 == epochs)
            .then(|| validation::worse_than_input(epoch + 1, m.val_snr_db, input_snr_db))
            .flatten();
        for line in std::iter::once(line).chain(worse) {
            match &bar {
                Some(bar) => bar.println(line),
                None => log(&line),
            }
        }
        let train_loss = m.train_loss;
        history.push(m);
        pos = Position { epoch: epoch + 1, batch: 0 };
        checkpoint::save_weights(&weights_path, &template, &params, meta(epoch + 1))
            .map_err(TrainError::Io)?;
        note_written(&mut report, &weights_path);
        saved = Some((epoch + 1, train_loss));
        report.trained_epochs += 1;
        checkpoint::save_checkpoint(&ckpt_path, &template, &params, &opt, &pos, &fingerprint)
            .map_err(TrainError::Io)?;
        note_written(&mut report, &ckpt_path);
        let lines: String =
            history.iter().filter_map(|m| serde_json::to_string(m).ok()).map(|l| l + "\n").collect();
        super::write_atomically(&metrics_path, lines.as_bytes()).map_err(TrainError::Io)?;
        note_written(&mut report, &metrics_path);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report.epochs = history;
    Ok(report)
}

/// What rank 0 tells the other ranks with each step's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Control {
    Continue,
    /// Ctrl-C or SIGTERM: rank 0 saves a checkpoint; the others end.
    Stop,
    /// The loss became NaN or infinite: rank 0 reports it; the others end.
    Diverged,
}

impl Control {
    fn code(self) -> f64 {
        match self {
            Control::Continue => 0.0,
            Control::Stop => 1.0,
            Control::Diverged => 2.0,
        }
    }
}

/// Rank 0's parameters to every rank, behind a control word.
fn broadcast_params(collective: &dyn Collective, params: &mut Params, control: f64) {
    let mut buf = vec![control];
    distributed::flatten(params, &mut buf);
    collective.broadcast(&mut buf);
    distributed::unflatten(&buf[1..], params);
}

/// The other ranks' side of [`broadcast_params`] after a step.
fn receive_params(collective: &dyn Collective, params: &mut Params) -> Control {
    let mut buf = vec![0.0];
    distributed::flatten(params, &mut buf);
    collective.broadcast(&mut buf);
    distributed::unflatten(&buf[1..], params);
    match buf[0] {
        0.0 => Control::Continue,
        1.0 => Control::Stop,
        _ => Control::Diverged,
    }
}

/// SNR in dB as printed: `inf` for a perfect estimate, `NaN` when the output holds NaN.
pub fn fmt_snr(db: f64) -> String {
    if db.is_nan() { "NaN dB (the output holds NaN or Inf)".into() } else { format!("{db:.2} dB") }
}

/// The weights file's metadata: what inference needs (`data_rms`) and where the weights come
/// from. Keys are written sorted, so identical runs give identical files.
fn provenance(program: &Program, spec: &TrainSpec, epochs: usize, data_rms: f64) -> Vec<(String, String)> {
    let mut m = vec![
        ("model".to_string(), program.model.name.clone()),
        ("epochs".to_string(), epochs.to_string()),
        ("data_rms".to_string(), data_rms.to_string()),
        ("data_scale".to_string(), data::SCALE_METHOD.to_string()),
        ("geonetc_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("seed".to_string(), spec.seed.to_string()),
        ("data".to_string(), json(&spec.data)),
        // The weights check (`check --weights`) warns when a model declares another input size.
        (
            "input_shapes".to_string(),
            json(&program.model.inputs.iter().map(|t| &t.shape).collect::<Vec<_>>()),
        ),
    ];
    if let Some(t) = &spec.target {
        m.push(("target".into(), json(t)));
    }
    match &spec.data {
        DataSpec::Synthetic { noise, shape, .. } => {
            m.push(("noise".into(), noise_text(noise)));
            m.push(("patch".into(), json(shape)));
        }
        DataSpec::Segy { noise, patch, .. } => {
            m.push(("noise".into(), noise_text(noise)));
            let patch = patch.clone().unwrap_or_else(|| program.model.inputs[0].shape[1..].to_vec());
            m.push(("patch".into(), json(&patch)));
        }
        DataSpec::Npy { noise: Some(noise), .. } => m.push(("noise".into(), noise_text(noise))),
        DataSpec::Npy { .. } => {}
    }
    m
}

/// The `noise` metadata: the number for plain white Gaussian noise (as before noise
/// expressions), else the expression's canonical text.
fn noise_text(noise: &crate::check::program::NoiseSpec) -> String {
    noise.as_white().map_or_else(|| noise.to_string(), |std| std.to_string())
}

/// What to tell a user whose loss became NaN or infinite: where it happened, what this run
/// really saved (never weights of an earlier run), and whether the batch itself held NaN/Inf.
fn divergence_message(
    loss: f64,
    epoch: usize,
    batch: usize,
    x: &ndarray::ArrayD<f64>,
    t: &ndarray::ArrayD<f64>,
    saved: Option<(usize, f64)>,
    weights: &Path,
) -> String {
    let bad = |a: &ndarray::ArrayD<f64>| a.iter().filter(|v| !v.is_finite()).count();
    let (bx, bt) = (bad(x), bad(t));
    let data = if bx + bt > 0 {
        format!("The batch itself holds NaN/Inf ({bx} input and {bt} target values): fix the data")
    } else {
        "The batch's inputs and targets are all finite, so the model diverged (lower the learning rate, or add `clip`)".into()
    };
    let kept = match saved {
        Some((e, l)) => format!(
            "This run saved the weights of epoch {e} (train loss {}) in {}",
            fmt_loss(l),
            weights.display()
        ),
        None => {
            format!("This run saved no weights (no epoch finished); {} was not written", weights.display())
        }
    };
    format!("the loss became {loss:e} at epoch {}, batch {}; stopped. {data}. {kept}", epoch + 1, batch + 1)
}

use super::common::{backend, load_program, set_threads};
use super::*;
use geonetc::runtime::train::{self, TrainError, TrainOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct RunArgs {
    pub file: PathBuf,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
    pub epochs: Option<usize>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> ExitCode {
    let (program, source) = match load_program(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(ckpt) = &args.resume {
        let kind = geonetc::weights::WeightsKind::Checkpoint;
        if let Err(code) = super::weights::check_file(&program, &source, &args.file, ckpt, kind, None) {
            return code;
        }
    }
    if program.train.is_none() {
        eprintln!("error: {} has no `train` block, so there is nothing to train on", args.file.display());
        eprintln!("  help: add e.g. `train {{ data = synthetic(count = 256, noise = 0.5)  epochs = 10 }}`");
        return ExitCode::from(1);
    }
    if let Err(code) = set_threads(args.threads) {
        return code;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // A second Ctrl-C while saving is ignored; the checkpoint write is atomic anyway.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let base = args.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let opts = TrainOptions {
        epochs: args.epochs,
        out_dir: args.out,
        resume: args.resume,
        stop,
        progress_bar: std::io::stderr().is_terminal(),
        backend: backend(args.backend),
    };
    let mut log = |line: &str| eprintln!("{line}");
    match train::train(&program, &base, &opts, &mut log) {
        Ok(report) => {
            if let Some(snr) = report.input_snr_db {
                eprintln!("validation input SNR {snr:.2} dB");
            }
            if report.interrupted {
                eprintln!(
                    "interrupted: checkpoint saved to {} (continue with --resume)",
                    report.checkpoint.display()
                );
            }
            eprintln!("weights: {}  metrics: {}", report.weights.display(), report.metrics.display());
            ExitCode::SUCCESS
        }
        Err(TrainError::Diverged(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
        Err(TrainError::Io(m)) => fail(m),
    }
}

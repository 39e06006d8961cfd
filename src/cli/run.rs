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
    pub plot: Option<PathBuf>,
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
        eprintln!(
            "  help: add a train block, e.g.\n\n    train {{\n        data   = synthetic(count = 256, noise = 0.5)\n        epochs = 10\n    }}"
        );
        return ExitCode::from(1);
    }
    if let Err(code) = set_threads(args.threads) {
        return code;
    }
    let base = args.file.parent().map(Path::to_path_buf).unwrap_or_default();
    // The program is an input too: `save =` must not name it.
    match train::output_paths(&program, &base, args.out.as_deref()) {
        Ok(paths) => {
            let outputs = [
                ("the weights file (`save =`)", paths.weights.as_path()),
                ("the checkpoint", paths.checkpoint.as_path()),
                ("the metrics file", paths.metrics.as_path()),
            ];
            let mut outputs = outputs.to_vec();
            outputs.extend(args.plot.as_deref().map(|p| ("--plot", p)));
            let inputs = [("the program", args.file.as_path())];
            if let Some(png) = &args.plot
                && let Err(e) = geonetc::seismic::plot::image_format(png)
            {
                return fail(e);
            }
            // `--resume` usually names the checkpoint this run rewrites: it is read whole first.
            if let Err(e) = geonetc::output::refuse_overwriting(&outputs, &inputs) {
                return fail(e);
            }
        }
        Err(e) => return fail(e),
    }
    // Under mpirun or srun: one rank of a data-parallel job (rank 0 prints and writes).
    let cluster = match super::cluster::Cluster::join() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C and SIGTERM (what batch schedulers send) stop after the current step with a
    // checkpoint; a second signal while saving is ignored, the writes are atomic anyway.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let opts = TrainOptions {
        epochs: args.epochs,
        out_dir: args.out,
        resume: args.resume,
        stop,
        progress_bar: std::io::stderr().is_terminal(),
        backend: backend(args.backend),
    };
    // Progress on stderr; the summary (what was written, final numbers) on stdout.
    let mut log = |line: &str| eprintln!("{line}");
    match train::train_with(&program, &base, &opts, cluster.collective.clone(), &mut log) {
        Ok(_) if !cluster.is_root() => ExitCode::SUCCESS,
        Ok(report) => {
            if report.trained_epochs == 0 && !report.interrupted {
                let asked = opts.epochs.or(program.train.as_ref().map(|t| t.epochs)).unwrap_or(0);
                let done = if opts.resume.is_some() { report.epochs.len().max(asked) } else { 0 };
                println!("nothing trained: {asked} epochs asked, {done} already done; no file written");
                return ExitCode::SUCCESS;
            }
            if let Some(snr) = report.input_snr_db {
                println!("validation input SNR {}", train::fmt_snr(snr));
            }
            if let Some(last) = report.epochs.last() {
                let mut line =
                    format!("final epoch {}: train loss {}", last.epoch, train::fmt_loss(last.train_loss));
                if let Some(v) = last.val_loss {
                    line += &format!(", val loss {}", train::fmt_loss(v));
                }
                if let Some(snr) = last.val_snr_db {
                    line += &format!(", val SNR {}", train::fmt_snr(snr));
                }
                println!("{line}");
            }
            for p in &report.written {
                println!("wrote {}", p.display());
            }
            if let Some(png) = &args.plot {
                let points: Vec<geonetc::seismic::plot::EpochPoint> =
                    report.epochs.iter().map(|e| (e.epoch, e.train_loss, e.val_loss, e.val_snr_db)).collect();
                match geonetc::seismic::plot::training_curve(png, &points) {
                    Ok((w, h)) => println!("wrote {} ({w} × {h} px, training curves)", png.display()),
                    Err(e) => return fail(e),
                }
            }
            if report.interrupted && report.written.is_empty() {
                eprintln!("interrupted before the first step: nothing written");
                return ExitCode::from(130);
            }
            if report.interrupted {
                eprintln!(
                    "interrupted: checkpoint saved to {} (continue with --resume)",
                    report.checkpoint.display()
                );
                // Like other tools stopped by SIGINT, so `geonetc run … && geonetc infer …`
                // does not go on with half-trained weights.
                return ExitCode::from(130);
            }
            ExitCode::SUCCESS
        }
        // Rank 0 alone reports a divergence, after telling the other ranks to stop.
        Err(TrainError::Diverged(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
        Err(TrainError::Io(m)) => cluster.fail(&m, 2),
    }
}

//! Subcommands: argument parsing and dispatch only; each `cli/<command>.rs` calls the library.
//! Exit status everywhere: 0 success (warnings allowed), 1 the input has errors (diagnostics
//! printed), 2 usage or I/O failure (one clear line, no panic, no backtrace).

mod bench;
mod check;
mod cluster;
mod common;
mod diff;
mod eval;
mod explain;
mod export;
mod fit;
mod fmt;
mod infer;
mod inspect;
mod lsp;
mod run;
mod weights;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "geonetc", version, about = "Check, compile, train and run geonet neural-network programs")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// `--nonfinite`: what infer and eval do with NaN or infinite samples.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum NonFiniteChoice {
    /// Stop with one line naming the first such sample (exit 2).
    Refuse,
    /// Treat them as zero for the model; write them back unchanged.
    Mask,
}

/// Hygiene and picture options shared by infer and eval (docs/qc.md).
#[derive(clap::Args, Debug, Clone)]
pub struct QcArgs {
    /// NaN or infinite samples: refuse (default) or mask.
    #[arg(long, value_enum, default_value = "refuse")]
    pub nonfinite: NonFiniteChoice,
    /// Denoise dead and muted samples too (by default they pass through unchanged).
    #[arg(long)]
    pub no_pass_through: bool,
    /// With --plot: add the average amplitude spectra of the first three panels.
    #[arg(long)]
    pub spectrum: bool,
    /// With --plot: clip every panel at this percentile of the first panel's |amplitude|.
    #[arg(long, default_value_t = 99.0, value_parser = clip_percentile)]
    pub clip: f64,
}

fn clip_percentile(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (50.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentile between 50 and 100")),
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlongChoice {
    Inline,
    Crossline,
    Both,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Jit,
    Interp,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and shape-check a .geonet file.
    Check {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Also check a weights file (safetensors) against the model.
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Write the model and its weights as an ONNX model (opset 17).
    Export {
        file: PathBuf,
        /// Trained weights (not needed when every layer has an `init`).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Without --weights: the untrained starting weights `run` would draw with this seed
        /// (to look at the graph, or to test a runtime).
        #[arg(long, conflicts_with = "weights")]
        init_seed: Option<u64>,
        #[arg(long)]
        output: PathBuf,
    },
    /// Semantic diff of two models: exit 0 when the same, 1 when different, 2 on errors.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Train the model as its `train` block says.
    Run {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "jit")]
        backend: BackendChoice,
        /// Worker threads, 1 to 1024 (default: all cores).
        #[arg(long, value_parser = threads_parser())]
        threads: Option<usize>,
        /// Override the `epochs` of the train block (0 to 1,000,000).
        #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1_000_000))]
        epochs: Option<usize>,
        /// Directory for weights and metrics (default: beside the .geonet file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from a checkpoint written by an earlier run.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Also draw the training curves (losses, validation SNR) into this picture.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Apply a model to .npy or SEG-Y input of any size.
    Infer {
        file: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Also write the removed noise (input − output) with the input's headers.
        #[arg(long)]
        residual: Option<PathBuf>,
        #[arg(long)]
        plot: Option<PathBuf>,
        #[command(flatten)]
        qc: QcArgs,
        #[arg(long, value_enum, default_value = "jit")]
        backend: BackendChoice,
        #[arg(long, value_parser = threads_parser())]
        threads: Option<usize>,
        /// 3-D volumes and 2-D models: run on inline sections, crossline sections, or both averaged.
        #[arg(long, value_enum, default_value = "inline")]
        along: AlongChoice,
        /// Pre-stack data: process gathers of consecutive traces sharing this header field
        /// (field-record = byte 9, cdp = byte 21, or BYTE[:WIDTH]); no tile crosses a gather.
        #[arg(long, value_parser = header_field_parser)]
        gather_key: Option<geonetc::seismic::geometry::HeaderField>,
        /// Trace-header field of the inline number: BYTE or BYTE:WIDTH (width 2 or 4).
        #[arg(long, default_value = "189", value_parser = header_field_parser)]
        iline: geonetc::seismic::geometry::HeaderField,
        /// Trace-header field of the crossline number: BYTE or BYTE:WIDTH (width 2 or 4).
        #[arg(long, default_value = "193", value_parser = header_field_parser)]
        xline: geonetc::seismic::geometry::HeaderField,
        /// Traces read at a time by 1-D models and the RMS pass (bounds memory).
        #[arg(long, default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        window_traces: usize,
    },
    /// Time compile, forward and training step on random data.
    Bench {
        file: PathBuf,
        #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
        batch: usize,
        #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        steps: usize,
        #[arg(long, value_enum, default_value = "jit")]
        backend: BackendChoice,
        #[arg(long, value_parser = threads_parser())]
        threads: Option<usize>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Also print the time of every layer's forward and backward step (JIT), which layers
        /// run on the reference code, and the share of time outside generated kernels.
        #[arg(long)]
        profile: bool,
        /// JIT tuning: Cranelift opt level (none, speed, speed_and_size).
        #[arg(long, value_name = "LEVEL", default_value = "none", hide = true)]
        jit_opt: String,
        /// JIT tuning: register blocking RxV of the correlation kernels.
        #[arg(long, value_name = "RxV", hide = true)]
        corr_block: Option<String>,
        /// JIT tuning: register blocking RxV of the weight-gradient kernels.
        #[arg(long, value_name = "RxV", hide = true)]
        gradw_block: Option<String>,
        /// JIT: the algorithm of 3×3 stride-1 2-D convolutions (forward, input and weight gradient):
        /// direct, winograd (F(4x4, 3x3)), winograd2 (F(2x2, 3x3)), winograd6 (F(6x6, 3x3)) or
        /// auto (a cost model picks per layer among direct, F(4x4), F(2x2) and F(6x6); see
        /// docs/jit.md).
        #[arg(long, value_name = "ALGORITHM", default_value = "auto")]
        conv: String,
    },
    /// Describe a SEG-Y, Seismic Unix or .npy data file.
    Inspect {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Trace-header field of the inline number: BYTE or BYTE:WIDTH (width 2 or 4).
        #[arg(long, default_value = "189", value_parser = header_field_parser)]
        iline: geonetc::seismic::geometry::HeaderField,
        /// Trace-header field of the crossline number: BYTE or BYTE:WIDTH (width 2 or 4).
        #[arg(long, default_value = "193", value_parser = header_field_parser)]
        xline: geonetc::seismic::geometry::HeaderField,
    },
    /// SNR of a noisy file and of the model's output against clean data.
    Eval {
        file: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long)]
        clean: PathBuf,
        #[arg(long)]
        noisy: PathBuf,
        #[arg(long)]
        plot: Option<PathBuf>,
        #[command(flatten)]
        qc: QcArgs,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        #[arg(long, value_enum, default_value = "jit")]
        backend: BackendChoice,
        #[arg(long, value_parser = threads_parser())]
        threads: Option<usize>,
    },
    /// Rewrite files in the canonical layout.
    Fmt {
        files: Vec<PathBuf>,
        /// Only report files that would change (exit 1).
        #[arg(long)]
        check: bool,
    },
    /// The long explanation of a diagnostic code.
    Explain { code: String },
    /// Run the language server on stdin/stdout.
    Lsp,
}

pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { file, format, weights } => check::run(&file, format, weights.as_deref()),
        Command::Export { file, weights, init_seed, output } => {
            export::run(export::ExportArgs { file, weights, init_seed, output })
        }
        Command::Diff { a, b, format } => diff::run(&a, &b, format),
        Command::Run { file, backend, threads, epochs, out, resume, plot } => {
            run::run(run::RunArgs { file, backend, threads, epochs, out, resume, plot })
        }
        Command::Infer {
            file,
            weights,
            input,
            output,
            residual,
            plot,
            qc,
            backend,
            threads,
            along,
            gather_key,
            iline,
            xline,
            window_traces,
        } => {
            let stream = infer::StreamArgs { along, gather_key, iline, xline, window_traces };
            infer::run(infer::InferArgs {
                file,
                weights,
                input,
                output,
                residual,
                plot,
                qc,
                backend,
                threads,
                stream,
            })
        }
        Command::Bench {
            file,
            batch,
            steps,
            backend,
            threads,
            format,
            profile,
            jit_opt,
            corr_block,
            gradw_block,
            conv,
        } => {
            let tuning = bench::Tuning { profile, jit_opt, corr_block, gradw_block, conv };
            bench::run(bench::BenchArgs { file, batch, steps, backend, threads, format, tuning })
        }
        Command::Inspect { file, format, iline, xline } => {
            let options = geonetc::seismic::geometry::GeometryOptions { inline: iline, crossline: xline };
            inspect::run(&file, format, options)
        }
        Command::Eval { file, weights, clean, noisy, plot, qc, format, backend, threads } => {
            eval::run(eval::EvalArgs { file, weights, clean, noisy, plot, qc, format, backend, threads })
        }
        Command::Fmt { files, check } => fmt::run(&files, check),
        Command::Explain { code } => explain::run(&code),
        Command::Lsp => lsp::run(),
    }
}

/// `--threads`: 1 to 1024 worker threads.
fn threads_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
}

/// A trace-header field option (`--iline`, `--xline`, `--gather-key`).
fn header_field_parser(text: &str) -> Result<geonetc::seismic::geometry::HeaderField, String> {
    geonetc::seismic::geometry::HeaderField::parse(text)
}

/// The one-line failure of exit status 2.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// The folder a program's relative paths start from (its own folder; `.` for a bare name).
pub fn program_dir(file: &std::path::Path) -> &std::path::Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    }
}

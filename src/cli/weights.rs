//! The weights check before a command uses a weights file or checkpoint: diagnostics on the
//! program's source, exit 1 on errors, exit 2 when the file cannot be read.

use geonetc::check::program::Program;
use geonetc::diag;
use geonetc::weights::{WeightsKind, check_weights};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// Prints the weights check's diagnostics; `Err` carries the exit status when the weights
/// cannot be used. Returns whether anything (a warning) was printed.
/// `--weights` of `infer` and `eval`: the weights file against the model, before anything else
/// (nothing to do without one).
pub fn check_weights_arg(
    program: &Program,
    source: &str,
    program_file: &Path,
    weights: Option<&Path>,
) -> Result<(), ExitCode> {
    match weights {
        Some(w) => check_file(program, source, program_file, w, WeightsKind::Weights, None).map(|_| ()),
        None => Ok(()),
    }
}

pub fn check_file(
    program: &Program,
    source: &str,
    program_file: &Path,
    weights: &Path,
    kind: WeightsKind,
    data_rms: Option<f64>,
) -> Result<bool, ExitCode> {
    let bytes = std::fs::read(weights)
        .map_err(|e| super::fail(format_args!("cannot read {}: {e}", weights.display())))?;
    let diags = check_weights(program, source, &bytes, &weights.display().to_string(), kind, data_rms);
    if !diags.is_empty() {
        let color = std::io::stderr().is_terminal();
        eprint!("{}", diag::render(&diags, &program_file.display().to_string(), source, color));
    }
    if diags.iter().any(diag::Diagnostic::is_error) {
        let n = diags.iter().filter(|d| d.is_error()).count();
        eprintln!(
            "{}: {n} error{} against {}",
            weights.display(),
            if n == 1 { "" } else { "s" },
            program_file.display()
        );
        return Err(ExitCode::from(1));
    }
    Ok(!diags.is_empty())
}

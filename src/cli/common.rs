//! Shared by the commands that load a program: read, check, print diagnostics.

use geonetc::check::{self, program::Program};
use geonetc::diag;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// Reads and checks a .geonet file. Warnings are printed; errors are printed and give exit 1;
/// an unreadable file gives exit 2.
pub fn load_program(file: &Path) -> Result<(Program, String), ExitCode> {
    load(file, true)
}

/// Like [`load_program`] for inference: the model alone is checked, not the `optimizer` and
/// `train` items (their data need not exist where the model is applied).
pub fn load_model(file: &Path) -> Result<(Program, String), ExitCode> {
    load(file, false)
}

fn load(file: &Path, with_training: bool) -> Result<(Program, String), ExitCode> {
    if file.is_dir() {
        return Err(super::fail(format_args!("cannot read {}: is a directory", file.display())));
    }
    let bytes =
        std::fs::read(file).map_err(|e| super::fail(format_args!("cannot read {}: {e}", file.display())))?;
    let out = match std::str::from_utf8(&bytes) {
        Ok(source) if !with_training => check::check_model(source, None),
        _ => check::check_bytes_in(&bytes, Some(super::program_dir(file))),
    };
    if !out.diagnostics.is_empty() {
        let color = std::io::stderr().is_terminal();
        eprint!("{}", diag::render(&out.diagnostics, &file.display().to_string(), &out.source, color));
    }
    match out.program {
        Some(p) => Ok((p, out.source)),
        None => Err(ExitCode::from(1)),
    }
}

/// `--backend jit|interp`.
pub fn backend(choice: super::BackendChoice) -> geonetc::runtime::engine::Backend {
    match choice {
        super::BackendChoice::Jit => geonetc::runtime::engine::Backend::Jit,
        super::BackendChoice::Interp => geonetc::runtime::engine::Backend::Interp,
    }
}

/// `--threads N`: the size of the worker pool (1 to 1024, checked by the argument parser).
pub fn set_threads(threads: Option<usize>) -> Result<(), ExitCode> {
    if let Some(n) = threads {
        if !(1..=1024).contains(&n) {
            return Err(super::fail("--threads must be between 1 and 1024"));
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(super::fail)?;
    }
    Ok(())
}

/// The data format an output path names by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    Npy,
    Seismic(geonetc::seismic::segy::Kind),
}

pub fn data_format(path: &Path) -> Result<DataFormat, String> {
    use geonetc::seismic::segy::Kind;
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("npy") => Ok(DataFormat::Npy),
        Some("sgy" | "segy") => Ok(DataFormat::Seismic(Kind::Segy)),
        Some("su") => Ok(DataFormat::Seismic(Kind::Su)),
        _ => Err(format!(
            "{}: the extension names the output format: .npy, .sgy/.segy (SEG-Y) or .su (Seismic Unix)",
            path.display()
        )),
    }
}

/// Refuses, before any work, outputs that would replace an input or cannot be written.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<(), ExitCode> {
    geonetc::output::refuse_overwriting(outputs, inputs).map_err(super::fail)?;
    for (_, p) in outputs {
        geonetc::output::check_target(p).map_err(super::fail)?;
    }
    Ok(())
}

/// A weights file's parameters and metadata.
pub type Weights = (geonetc::ir::Params, std::collections::HashMap<String, String>);

/// `--weights` for inference: the parameters (read once; their shapes do not depend on the input
/// size) and the training data's RMS from the metadata, which sections are scaled to (checked,
/// see `checkpoint::data_rms`).
pub fn load_weights(
    program: &Program,
    weights: Option<&Path>,
) -> Result<(Option<Weights>, Option<f64>), ExitCode> {
    let Some(w) = weights else { return Ok((None, None)) };
    let graph = geonetc::ir::lower(program, 1);
    let (params, meta) = geonetc::runtime::checkpoint::load_weights(w, &graph).map_err(super::fail)?;
    let rms = geonetc::runtime::checkpoint::data_rms(&meta, w).map_err(super::fail)?;
    Ok((Some((params, meta)), rms))
}

/// After the scale line: how the weights' training RMS was measured, when they predate
/// `data_scale` (their `data_rms` is then the plain RMS of every training sample).
pub fn scale_note(weights: &Option<Weights>) -> String {
    match weights {
        Some((_, meta)) if meta.contains_key("data_rms") && !meta.contains_key("data_scale") => {
            "note: these weights state the plain RMS of their training data (written before training measured the clipped RMS of live samples, as the input is measured here)\n".into()
        }
        _ => String::new(),
    }
}

/// Notes int32 SEG-Y samples that 32-bit floats cannot hold exactly (beyond ±2^24) when the
/// JIT (f32) runs the model: they come back rounded to 24 significant bits. The interpreter
/// computes in f64 and keeps them.
pub fn note_inexact_integers(
    file: &geonetc::seismic::segy::SeismicFile,
    section: &ndarray::Array2<f64>,
    backend: geonetc::runtime::engine::Backend,
) {
    note_inexact_int32(file, section.iter().fold(0f64, |m, v| m.max(v.abs())), backend);
}

/// [`note_inexact_integers`] from the largest |sample| (streamed inference tracks it).
pub fn note_inexact_int32(
    file: &geonetc::seismic::segy::SeismicFile,
    max: f64,
    backend: geonetc::runtime::engine::Backend,
) {
    use geonetc::seismic::segy::SampleFormat;
    if file.format != SampleFormat::Int32 || backend != geonetc::runtime::engine::Backend::Jit {
        return;
    }
    if max > 16_777_216.0 {
        eprintln!(
            "note: {} holds int32 samples up to {max:.0}, beyond ±2^24 = 16777216: the JIT computes in 32-bit floats, so they are rounded to 24 significant bits (relative error < 6e-8); --backend interp keeps them exact",
            file.path.display()
        );
    }
}

/// The hygiene options `--nonfinite` and `--no-pass-through` choose.
pub fn hygiene_options(qc: &super::QcArgs) -> geonetc::seismic::hygiene::Options {
    use geonetc::seismic::hygiene::{NonFinite, Options};
    Options {
        nonfinite: match qc.nonfinite {
            super::NonFiniteChoice::Refuse => NonFinite::Refuse,
            super::NonFiniteChoice::Mask => NonFinite::Mask,
        },
        pass_through: !qc.no_pass_through,
        ..Options::default()
    }
}

/// The picture options `--spectrum` and `--clip` choose.
pub fn plot_options(qc: &super::QcArgs) -> geonetc::seismic::plot::Options {
    geonetc::seismic::plot::Options { spectrum: qc.spectrum, clip_percentile: qc.clip, ..Default::default() }
}

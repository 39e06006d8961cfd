//! Shared by the commands that load a program: read, check, print diagnostics.

use geonetc::check::{self, program::Program};
use geonetc::diag;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// Reads and checks a .geonet file. Warnings are printed; errors are printed and give exit 1;
/// an unreadable file gives exit 2.
pub fn load_program(file: &Path) -> Result<(Program, String), ExitCode> {
    let bytes =
        std::fs::read(file).map_err(|e| super::fail(format_args!("cannot read {}: {e}", file.display())))?;
    let out = check::check_bytes_in(&bytes, Some(super::program_dir(file)));
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

/// `--threads N`: the size of the worker pool.
pub fn set_threads(threads: Option<usize>) -> Result<(), ExitCode> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(super::fail("--threads must be at least 1"));
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(super::fail)?;
    }
    Ok(())
}

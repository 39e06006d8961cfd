//! `geonetc diff A.geonet B.geonet [--format human|json]`: exit 0 when the models are the same,
//! 1 when they differ, 2 on errors (either file unreadable or not checking), as diff(1).

use super::Format;
use geonetc::check::{self, program::Program};
use geonetc::diag;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// Reads and checks one side; its diagnostics are printed when it has errors.
fn load(file: &Path) -> Result<Program, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let out = check::check_bytes(&bytes);
    match out.program {
        Some(p) => Ok(p),
        None => {
            let color = std::io::stderr().is_terminal();
            eprint!("{}", diag::render(&out.diagnostics, &file.display().to_string(), &out.source, color));
            Err(format!("{} has errors; `geonetc check` it first", file.display()))
        }
    }
}

pub fn run(a: &Path, b: &Path, format: Format) -> ExitCode {
    let (pa, pb) = match (load(a), load(b)) {
        (Ok(pa), Ok(pb)) => (pa, pb),
        (Err(e), _) | (_, Err(e)) => return super::fail(e),
    };
    let d = geonetc::diff::diff(&pa, &pb);
    let (na, nb) = (a.display().to_string(), b.display().to_string());
    match format {
        Format::Human => print!("{}", geonetc::diff::to_table(&d, &na, &nb)),
        Format::Json => {
            let json = geonetc::diff::to_json(&d, &na, &nb);
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".into()));
        }
    }
    if d.is_equal() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

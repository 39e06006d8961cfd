use geonetc::diag;
use geonetc::fmt::{FmtError, format_source};
use geonetc::runtime::write_atomically;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Formats each file in place (atomically), or with `--check` only lists the files that would
/// change. Exit 0 all fine, 1 a file would change or does not parse (nothing written for it),
/// 2 a file cannot be read or written.
pub fn run(files: &[PathBuf], check: bool) -> ExitCode {
    if files.is_empty() {
        return super::fail("fmt needs at least one FILE");
    }
    let mut status = 0u8;
    for file in files {
        let name = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                status = 2;
                continue;
            }
        };
        let Ok(source) = String::from_utf8(bytes) else {
            eprintln!("error: {name} is not valid UTF-8; left unchanged");
            status = status.max(1);
            continue;
        };
        match format_source(&source) {
            Err(FmtError::Syntax(diags)) => {
                let color = std::io::stderr().is_terminal();
                eprint!("{}", diag::render(&diags, &name, &source, color));
                eprintln!("{name}: not formatted (it does not parse)");
                status = status.max(1);
            }
            Err(FmtError::Internal(why)) => {
                eprintln!("error: {name}: {why}; left unchanged (a formatter bug, please report it)");
                status = status.max(1);
            }
            Ok(formatted) if formatted == source => {}
            Ok(formatted) => {
                if check {
                    println!("{name} would be reformatted");
                    status = status.max(1);
                } else if let Err(e) = write_atomically(file, formatted.as_bytes()) {
                    eprintln!("error: {e}");
                    status = 2;
                } else {
                    println!("{name} reformatted");
                }
            }
        }
    }
    ExitCode::from(status)
}

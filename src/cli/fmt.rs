use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(files: &[PathBuf], check: bool) -> ExitCode {
    let _ = (files, check);
    super::fail("`fmt` is not built yet")
}

use super::Format;
use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path, format: Format) -> ExitCode {
    let _ = (file, format);
    super::fail("`inspect` is not built yet")
}

use std::process::ExitCode;

pub use super::*;

#[derive(Debug)]
#[allow(dead_code)] // filled in by the issue that builds `bench`
pub struct BenchArgs {
    pub file: PathBuf,
    pub batch: usize,
    pub steps: usize,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
    pub format: Format,
}

pub fn run(args: BenchArgs) -> ExitCode {
    let _ = args;
    fail("`bench` is not built yet")
}

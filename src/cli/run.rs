use std::process::ExitCode;

pub use super::*;

#[derive(Debug)]
#[allow(dead_code)] // filled in by the issue that builds `run`
pub struct RunArgs {
    pub file: PathBuf,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
    pub epochs: Option<usize>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> ExitCode {
    let _ = args;
    fail("`run` is not built yet")
}

use std::process::ExitCode;

pub use super::*;

#[derive(Debug)]
#[allow(dead_code)] // filled in by the issue that builds `eval`
pub struct EvalArgs {
    pub file: PathBuf,
    pub weights: Option<PathBuf>,
    pub clean: PathBuf,
    pub noisy: PathBuf,
    pub plot: Option<PathBuf>,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
}

pub fn run(args: EvalArgs) -> ExitCode {
    let _ = args;
    fail("`eval` is not built yet")
}

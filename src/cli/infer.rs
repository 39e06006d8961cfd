use std::process::ExitCode;

pub use super::*;

#[derive(Debug)]
#[allow(dead_code)] // filled in by the issue that builds `infer`
pub struct InferArgs {
    pub file: PathBuf,
    pub weights: Option<PathBuf>,
    pub input: PathBuf,
    pub output: PathBuf,
    pub plot: Option<PathBuf>,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
}

pub fn run(args: InferArgs) -> ExitCode {
    let _ = args;
    fail("`infer` is not built yet")
}

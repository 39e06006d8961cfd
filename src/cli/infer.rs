use super::common::{load_program, note_backend, set_threads};
use super::*;
use geonetc::runtime::{checkpoint, data, infer};
use std::path::Path;

#[derive(Debug)]
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
    let (program, source) = match load_program(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(code) = set_threads(args.threads) {
        return code;
    }
    note_backend(args.backend);
    if args.plot.is_some() {
        eprintln!("note: --plot is not built yet; no picture written");
    }
    let is_npy = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy(&args.input) || !is_npy(&args.output) {
        return fail("only .npy input and output are supported so far (SEG-Y is coming)");
    }
    let input = match data::read_npy(&args.input) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let declared = program.model.inputs[0].shape.clone();
    let weights = args.weights.clone();
    let load = move |g: &geonetc::ir::Graph| match &weights {
        Some(w) => checkpoint::load_weights(w, g).map(|(p, _)| p),
        None => Err(String::new()),
    };
    let loader: Option<infer::ParamLoader> = if args.weights.is_some() { Some(&load) } else { None };
    match infer::run(&source, loader, &input, &declared) {
        Ok(y) => match data::write_npy(&args.output, &y) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Err(e) => fail(e),
    }
}

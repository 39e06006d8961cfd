//! `geonetc export FILE [--weights W] --output model.onnx`.

use super::common::load_program;
use super::fail;
use geonetc::export;
use geonetc::ir;
use geonetc::runtime::{checkpoint, write_atomically};
use geonetc::weights::WeightsKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug)]
pub struct ExportArgs {
    pub file: PathBuf,
    pub weights: Option<PathBuf>,
    pub init_seed: Option<u64>,
    pub output: PathBuf,
}

/// The same file, whether or not `b` exists yet.
fn same_file(a: &Path, b: &Path) -> bool {
    let full = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((full(a), full(b)), (Some(x), Some(y)) if x == y)
}

pub fn run(args: ExportArgs) -> ExitCode {
    let (program, source) = match load_program(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for input in std::iter::once(&args.file).chain(args.weights.as_ref()) {
        if same_file(input, &args.output) {
            return fail(format_args!(
                "--output {} would overwrite an input; name another file",
                args.output.display()
            ));
        }
    }
    let graph = ir::lower(&program, 1);
    let params = match (&args.weights, args.init_seed) {
        (Some(w), _) => {
            if let Err(code) =
                super::weights::check_file(&program, &source, &args.file, w, WeightsKind::Weights, None)
            {
                return code;
            }
            match checkpoint::load_weights(w, &graph) {
                Ok((p, _)) => p,
                Err(e) => return fail(e),
            }
        }
        (None, Some(seed)) => ir::init_params(&graph, seed),
        (None, None) if ir::fully_initialised(&graph) => ir::init_params(&graph, 0),
        (None, None) => {
            return fail(format_args!(
                "{} has layers without `init`: give their trained values with --weights W.safetensors \
                 (or untrained ones with --init-seed N)",
                args.file.display()
            ));
        }
    };
    let model = match export::to_onnx(&program, &params) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    if let Err(e) = write_atomically(&args.output, &export::encode(&model)) {
        return fail(e);
    }
    let g = model.graph.as_ref();
    let symbols: Vec<String> = export::symbolic_dims(&program)
        .inputs
        .iter()
        .flatten()
        .filter_map(|d| match d {
            export::Dim::Symbol(s) if s != "batch" => Some(s.clone()),
            _ => None,
        })
        .collect();
    eprintln!(
        "wrote {}: ONNX opset {}, {} nodes, {} initializers; symbolic axes: batch{}",
        args.output.display(),
        export::OPSET,
        g.map_or(0, |g| g.node.len()),
        g.map_or(0, |g| g.initializer.len()),
        symbols.iter().map(|s| format!(", {s}")).collect::<String>()
    );
    ExitCode::SUCCESS
}

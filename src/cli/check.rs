use super::Format;
use geonetc::check::{self, program::Program};
use geonetc::diag;
use geonetc::weights::{WeightsKind, check_weights};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// The RMS of the train block's data as `run` computes it (targets when denoising), for the
/// weights check's comparison with the RMS the weights were trained at. None when the data
/// cannot be loaded (the weights check then says nothing about it).
fn training_data_rms(program: &Program, file: &Path) -> Option<f64> {
    use geonetc::runtime::train;
    let spec = program.train.as_ref()?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let set = train::load_data(program, &base).ok()?;
    let denoising =
        spec.loss != check::program::LossKind::CrossEntropy && set.inputs.shape() == set.targets.shape();
    set.levels(!(denoising && spec.target.is_none())).ok().map(|l| l.clipped_rms)
}

pub fn run(file: &Path, format: Format, weights: Option<&Path>) -> ExitCode {
    let read = if file.is_dir() {
        Err("is a directory".to_string())
    } else {
        std::fs::read(file).map_err(|e| e.to_string())
    };
    let bytes = match read {
        Ok(b) => b,
        // Tools reading `--format json` get JSON on every path: an error object, exit 2.
        Err(e) if format == Format::Json => {
            let json = serde_json::json!({
                "file": file.display().to_string(),
                "error": { "kind": "io", "message": format!("cannot read {}: {e}", file.display()) },
            });
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".into()));
            return ExitCode::from(2);
        }
        Err(e) => return super::fail(format_args!("cannot read {}: {e}", file.display())),
    };
    let out = check::check_bytes_in(&bytes, Some(super::program_dir(file)));
    let name = file.display().to_string();
    // `--weights`: the weights file against the checked program (only when it checks).
    let weight_diags = match (weights, &out.program) {
        (Some(w), Some(p)) => {
            let wbytes = match std::fs::read(w) {
                Ok(b) => b,
                Err(e) => return super::fail(format_args!("cannot read {}: {e}", w.display())),
            };
            let rms = training_data_rms(p, file);
            check_weights(p, &out.source, &wbytes, &w.display().to_string(), WeightsKind::Weights, rms)
        }
        _ => vec![],
    };
    let weight_errors = weight_diags.iter().any(diag::Diagnostic::is_error);
    match format {
        Format::Json => {
            let mut json = check::to_json(&out, &name);
            // The JIT's planned buffers for one training step at the train block's batch size
            // (1 without one): what `bench` reports as `memory_bytes`.
            if let (Some(p), Some(obj)) = (&out.program, json.as_object_mut()) {
                let batch = p.train.as_ref().map_or(1, |t| t.batch);
                let bytes = geonetc::jit::JitModel::plan_bytes(&geonetc::ir::lower(p, batch)).ok();
                obj.insert("memory_bytes".into(), serde_json::json!(bytes));
                obj.insert("memory_batch".into(), serde_json::json!(batch));
                if weights.is_some() {
                    let lines = diag::LineIndex::new(&out.source);
                    let list: Vec<_> = weight_diags.iter().map(|d| d.to_json(&lines)).collect();
                    obj.insert("weights_diagnostics".into(), serde_json::json!(list));
                    if weight_errors {
                        obj.insert("ok".into(), serde_json::json!(false));
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".into()));
        }
        Format::Human => {
            let color = std::io::stderr().is_terminal();
            if !out.diagnostics.is_empty() {
                eprint!("{}", diag::render(&out.diagnostics, &name, &out.source, color));
            }
            if !weight_diags.is_empty() {
                eprint!("{}", diag::render(&weight_diags, &name, &out.source, color));
            }
            if out.program.is_some() {
                print!("{}", check::summary_table(&out));
                if let Some(w) = weights {
                    let n = weight_diags.iter().filter(|d| d.is_error()).count();
                    println!(
                        "weights    {}: {}",
                        w.display(),
                        if n == 0 { "fit".to_string() } else { format!("{n} errors") }
                    );
                }
            } else {
                let n = out.diagnostics.iter().filter(|d| d.is_error()).count();
                eprintln!("{name}: {n} error{}", if n == 1 { "" } else { "s" });
            }
        }
    }
    if out.has_errors() || weight_errors { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

use super::Format;
use geonetc::check;
use geonetc::diag;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path, format: Format) -> ExitCode {
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
            }
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".into()));
        }
        Format::Human => {
            if !out.diagnostics.is_empty() {
                let color = std::io::stderr().is_terminal();
                eprint!("{}", diag::render(&out.diagnostics, &name, &out.source, color));
            }
            if out.program.is_some() {
                print!("{}", check::summary_table(&out));
            } else {
                let n = out.diagnostics.iter().filter(|d| d.is_error()).count();
                eprintln!("{name}: {n} error{}", if n == 1 { "" } else { "s" });
            }
        }
    }
    if out.has_errors() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

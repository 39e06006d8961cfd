use std::process::ExitCode;

pub fn run() -> ExitCode {
    match geonetc::lsp::run_stdio() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(format_args!("language server: {e}")),
    }
}

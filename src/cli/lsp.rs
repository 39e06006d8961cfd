use std::process::ExitCode;

pub fn run() -> ExitCode {
    super::fail("`lsp` is not built yet")
}

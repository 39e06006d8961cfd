use geonetc::diag::codes;
use std::process::ExitCode;

pub fn run(code: &str) -> ExitCode {
    match codes::lookup(code) {
        Some(info) => {
            println!("{}: {}\n\n{}", info.code, info.title, info.explanation);
            ExitCode::SUCCESS
        }
        None => super::fail(format_args!(
            "no diagnostic code `{code}`; the codes are {}",
            codes::ALL.iter().map(|c| c.code).collect::<Vec<_>>().join(", ")
        )),
    }
}

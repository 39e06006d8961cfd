//! The `geonetc` command line. Only argument parsing and dispatch live here and in `cli/`;
//! the work is done by the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::dispatch(args)
}

//! `edgefn`: the operator CLI of an edgefn cloud.

use std::process::ExitCode;

use clap::Parser;
use edgefn_cloud::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

//! The command line: one file per command.

mod exec;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code when a function fails (error, trap, limit).
pub const EXIT_FUNCTION: u8 = 1;
/// Exit code for usage errors and modules that cannot load.
pub const EXIT_USAGE: u8 = 2;

/// edgefn-agent: run WebAssembly functions on an edge gateway.
#[derive(Debug, Parser)]
#[command(name = "edgefn-agent", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a function module locally on one event (or N on one warm instance) and exit.
    Exec(exec::ExecArgs),
}

/// Runs the parsed command; `Err` means a usage-level failure (exit 2).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Exec(args) => exec::run(args),
    }
}

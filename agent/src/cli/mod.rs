//! The command line: one file per command.
//!
//! - `exec`: runs a module locally, no agent needed.
//! - `function`, `alias`, `invoke`, `logs`, `stats`, `mapping`, `dead-letters`, `status`, `job`,
//!   `flow`: clients of a running agent's admin API (docs/agent-api.md), sharing [`client`] and
//!   [`output`].
//!
//! Exit codes, the same for every command ([`exit_code`] maps errors to them):
//! - 0: done.
//! - 1 ([`EXIT_FUNCTION`]): the request was refused or the function failed: the invoked function
//!   failed (`exec`, `invoke`), or the agent answered with an error (unknown function, conflict,
//!   invalid spec or weight, disabled, throttled, bad token, ...). Its message is printed as
//!   `error: MESSAGE`, verbatim.
//! - 2 ([`EXIT_USAGE`]): usage and connection problems: bad arguments, unreadable local files,
//!   no admin token, the agent unreachable (the message names the URL) or not answering as the
//!   admin API does, a module `exec` cannot load.

mod alias;
mod client;
mod dead_letters;
mod enroll;
mod exec;
mod flow;
mod function;
mod invoke;
mod job;
mod logs;
mod mapping;
mod output;
mod run;
mod stats;
mod status;

use clap::{Parser, Subcommand};
use client::ClientError;
use std::process::ExitCode;

/// Exit code when a function fails (error, trap, limit) or the agent refuses a request.
pub const EXIT_FUNCTION: u8 = 1;
/// Exit code for usage errors, connection problems and modules that cannot load.
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
    /// Run the agent: store, admin API and invocation workers, until SIGTERM or Ctrl-C.
    Run(run::RunArgs),
    /// Print the commented default configuration file.
    Config,
    /// Manage functions on a running agent: create, update, publish, get, list, delete, enable,
    /// disable.
    Function(function::FunctionArgs),
    /// Manage a function's aliases (names for versions, with an optional weighted canary).
    Alias(alias::AliasArgs),
    /// Invoke a function on a running agent.
    Invoke(invoke::InvokeArgs),
    /// Show (or follow) the agent's log records.
    Logs(logs::LogsArgs),
    /// Show invocation statistics: totals over a window and a per-bucket series.
    Stats(stats::StatsArgs),
    /// Manage event-source mappings: MQTT topics, schedules and HTTP paths that invoke functions.
    Mapping(mapping::MappingArgs),
    /// List events whose delivery failed for good.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Show the agent at a glance: functions, mappings, enrollment, and what waits to leave it
    /// (outbox, queued events, telemetry not yet uploaded, records dropped before upload).
    Status(status::StatusArgs),
    /// Batch jobs: run a function over every line of a JSON lines or CSV file (submit, status,
    /// list, cancel, results, delete).
    Job(job::JobArgs),
    /// Workflows: create, start and follow flows of function steps (docs/flows.md).
    Flow(flow::FlowArgs),
    /// Enroll this device with the cloud (stores its credential and the root key in the data
    /// directory); `run` then syncs its desired state.
    Enroll(enroll::EnrollArgs),
}

/// Runs the parsed command; `Err` means a usage-level failure (exit 2).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Exec(args) => exec::run(args),
        Command::Run(args) => run::run(args),
        Command::Config => run::print_config(),
        Command::Function(args) => finish(function::run(args)),
        Command::Alias(args) => finish(alias::run(args)),
        Command::Invoke(args) => finish(invoke::run(args)),
        Command::Logs(args) => finish(logs::run(args)),
        Command::Stats(args) => finish(stats::run(args)),
        Command::Mapping(args) => finish(mapping::run(args)),
        Command::DeadLetters(args) => finish(dead_letters::run(args)),
        Command::Status(args) => finish(status::run(args)),
        Command::Job(args) => finish(job::run(args)),
        Command::Flow(args) => finish(flow::run(args)),
        Command::Enroll(args) => enroll::run(args),
    }
}

/// Ends a client verb: an error is reported here and becomes its exit code.
fn finish(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    let e = match result {
        Ok(code) => return Ok(code),
        Err(e) => e,
    };
    // `edgefn-agent logs | head`: the reader left; that is not an error.
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("error: {e:#}");
    if let Some(ClientError::Api {
        hint: Some(hint), ..
    }) = e.downcast_ref::<ClientError>()
    {
        eprintln!("hint: {hint}");
    }
    Ok(ExitCode::from(exit_code(&e)))
}

/// The exit code of a failed command: 1 when the agent refused the request, else 2.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api { .. }) => EXIT_FUNCTION,
        Some(
            ClientError::Unreachable { .. }
            | ClientError::Timeout { .. }
            | ClientError::Protocol { .. }
            | ClientError::NoToken { .. }
            | ClientError::BadUrl { .. },
        ) => EXIT_USAGE,
        None => EXIT_USAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn api_refusals_exit_1_and_everything_else_2() {
        let api = anyhow::Error::from(ClientError::Api {
            status: 404,
            code: "not_found".into(),
            message: "no function `x`".into(),
            hint: None,
        });
        assert_eq!(exit_code(&api), EXIT_FUNCTION);
        let down = anyhow::Error::from(ClientError::Unreachable {
            url: "http://127.0.0.1:7878".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(exit_code(&down), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("cannot read x")), EXIT_USAGE);
        // Context added on the way up does not hide the kind.
        let wrapped = anyhow::Error::from(ClientError::Api {
            status: 409,
            code: "conflict".into(),
            message: "m".into(),
            hint: None,
        })
        .context("while publishing");
        assert_eq!(exit_code(&wrapped), EXIT_FUNCTION);
    }

    #[test]
    fn global_options_follow_sub_verbs() {
        let cli = Cli::try_parse_from([
            "edgefn-agent",
            "function",
            "get",
            "echo",
            "--json",
            "--agent",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Function(_)));
    }
}

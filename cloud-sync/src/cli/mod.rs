//! The `edgefn` operator CLI: the registry lifecycle under the agent CLI's verb names, devices,
//! groups, deployments and keys, remote invoke and batch jobs on a device, fleet logs and
//! stats, as a client of the cloud
//! API. One file per command family;
//! errors are [`CliError`], which the binary turns into exit codes: 0 done, 1 the cloud refused
//! (its message is printed), a waited-for rollout did not succeed, an invoked function or a
//! waited-for job failed,
//! 2 usage or connection.

pub mod build;
pub mod client;
pub mod deploy;
pub mod device;
pub mod flow;
pub mod function;
pub mod invoke;
pub mod job;
pub mod key;
pub mod logs;
pub mod mapping;
pub mod new;
pub mod output;
pub mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{message} (HTTP {status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Usage(String),
    /// A rollout that `--wait`/`--follow` watched ended other than `succeeded`.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api { .. } | CliError::Failed(_) => 1,
            CliError::Transport(_) | CliError::Usage(_) => 2,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "edgefn",
    version,
    about = "Operate an edgefn cloud: functions, devices, rollouts"
)]
pub struct Cli {
    /// The cloud's URL.
    #[arg(
        long,
        global = true,
        env = "EDGEFN_CLOUD",
        default_value = "http://127.0.0.1:8443"
    )]
    pub cloud: String,
    /// The operator token (`DIR/operator.token` of `edgefn-cloud init`).
    #[arg(long, global = true, env = "EDGEFN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust for https:// (default: the system's roots).
    #[arg(long, global = true, env = "EDGEFN_CA")]
    pub ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Functions in the registry.
    #[command(subcommand)]
    Function(function::FunctionCmd),
    /// Aliases of a function.
    #[command(subcommand)]
    Alias(function::AliasCmd),
    /// Event-source mappings (deployed with `deploy create --mapping`).
    #[command(subcommand)]
    Mapping(Box<mapping::MappingCmd>),
    /// Flows (deployed with `deploy create --flow`).
    #[command(subcommand)]
    Flow(flow::FlowCmd),
    /// Devices and enrollment tokens.
    #[command(subcommand)]
    Device(device::DeviceCmd),
    /// Device groups.
    #[command(subcommand)]
    Group(device::GroupCmd),
    /// Deployments and rollouts.
    #[command(subcommand)]
    Deploy(deploy::DeployCmd),
    /// Signing keys.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Invoke a function on one device, relayed by the cloud over its MQTT broker.
    Invoke(invoke::InvokeArgs),
    /// Batch jobs on one device (`--device D`), relayed by the cloud over its MQTT broker.
    Job(job::JobArgs),
    /// Log records devices uploaded, across the fleet.
    Logs(logs::LogsArgs),
    /// Invocation statistics across the fleet (percentiles from merged histograms).
    Stats(stats::StatsArgs),
    /// Create a function project from a template (Rust or C, with its own copy of the SDK).
    New {
        /// The function's name (also the project's directory unless --dir).
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
        /// Where to create the project (default: ./NAME; must not exist or be empty).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a function project to wasm32 and check it against ABI v1 (or check a .wasm).
    Build {
        /// A project directory (Cargo.toml or *.c) or a .wasm file.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    // The local verbs need no cloud.
    match &cli.command {
        Command::New { name, lang, dir } => {
            let (dir, files) = new::create(name, *lang, dir.as_deref())?;
            if cli.json {
                output::json(
                    &serde_json::json!({"dir": dir.display().to_string(), "files": files}),
                );
            } else {
                output::out(&format!(
                    "created {} ({} files); next: cd {0} && edgefn build\n",
                    dir.display(),
                    files.len()
                ));
            }
            return Ok(());
        }
        Command::Build { path } => {
            let built = build::build(path)?;
            if cli.json {
                output::json(&built.to_json());
            } else {
                output::out(&build::describe(&built));
            }
            return Ok(());
        }
        _ => {}
    }
    let c = client::Client::new(&cli.cloud, cli.token.as_deref(), cli.ca.as_deref())?;
    let json = cli.json;
    match cli.command {
        Command::Function(cmd) => function::run_function(&c, json, cmd),
        Command::Alias(cmd) => function::run_alias(&c, json, cmd),
        Command::Mapping(cmd) => mapping::run(&c, json, *cmd),
        Command::Flow(cmd) => flow::run(&c, json, cmd),
        Command::Device(cmd) => device::run_device(&c, json, cmd),
        Command::Group(cmd) => device::run_group(&c, json, cmd),
        Command::Deploy(cmd) => deploy::run(&c, json, cmd),
        Command::Key(cmd) => key::run(&c, json, cmd),
        Command::Invoke(a) => invoke::run(&c, json, a),
        Command::Job(a) => job::run(&c, json, a),
        Command::Logs(a) => logs::run(&c, json, a),
        Command::Stats(a) => stats::run(&c, json, a),
        Command::New { .. } | Command::Build { .. } => unreachable!("handled above"),
    }
}

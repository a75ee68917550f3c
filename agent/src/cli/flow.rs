//! `edgefn-agent flow`: flows (workflows) on the agent (docs/flows.md): create and change
//! definitions from TOML or JSON files, start runs, list runs and show one with its steps.
//! The agent validates definitions, so the CLI and the API give the same errors.

use super::client::{api_path, AgentOpts, Body, Client, Method};
use super::output::{self, time_ms, Table};
use anyhow::Context;
use clap::Subcommand;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct FlowArgs {
    #[command(subcommand)]
    cmd: FlowCmd,
    #[command(flatten)]
    opts: AgentOpts,
}

#[derive(Debug, Subcommand)]
enum FlowCmd {
    /// Create a flow from a definition file (TOML, or JSON when it ends in .json).
    Create {
        /// The flow's name [default: `name` in the file].
        #[arg(long)]
        name: Option<String>,
        /// The definition file.
        file: PathBuf,
    },
    /// Replace a flow's definition (running runs keep the one they started with).
    Update {
        name: String,
        /// The definition file.
        file: PathBuf,
    },
    /// Show a flow and its definition.
    Get { name: String },
    /// List the flows.
    List,
    /// Delete a flow (its runs stay listed; running ones finish).
    Delete { name: String },
    /// Let a flow start runs again.
    Enable { name: String },
    /// Stop a flow from starting runs (running ones go on).
    Disable { name: String },
    /// Start a run; prints its id (or, with --wait, waits for its end and prints its result).
    Start {
        name: String,
        /// The run's input (JSON; other text becomes a JSON string).
        #[arg(long, value_name = "JSON", conflicts_with = "data_file")]
        data: Option<String>,
        /// Read the input from a file (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        data_file: Option<PathBuf>,
        /// Wait for the run to end (up to this long, e.g. 30s) and print its output; exits 1
        /// if it failed.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "60s")]
        wait: Option<String>,
    },
    /// List a flow's runs, newest first.
    Runs {
        name: String,
        /// Only runs in this state.
        #[arg(long, value_parser = ["running", "succeeded", "failed"])]
        status: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Show one run with its steps.
    Run { id: String },
}

/// FlowInfo, as docs/agent-api.md defines it.
#[derive(Debug, Deserialize)]
struct Flow {
    name: String,
    definition: Value,
    enabled: bool,
    revision: u32,
    updated_ms: i64,
    running: u64,
    /// Partial AND matches of its trigger waiting for more sources.
    #[serde(default)]
    partials: u64,
    /// Partial matches dropped at the end of their window.
    #[serde(default)]
    partials_expired: u64,
}

/// FlowRun, as docs/agent-api.md defines it.
#[derive(Debug, Deserialize)]
struct Run {
    id: String,
    flow: String,
    revision: u32,
    status: String,
    trigger: String,
    created_ms: i64,
    updated_ms: i64,
    state: State,
}

#[derive(Debug, Deserialize)]
struct State {
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    steps: BTreeMap<String, Step>,
    /// Wait steps waiting for their event.
    #[serde(default)]
    waits: BTreeMap<String, Wait>,
}

#[derive(Debug, Deserialize)]
struct Wait {
    #[serde(default)]
    key: Option<String>,
    deadline_ms: i64,
}

#[derive(Debug, Deserialize)]
struct Step {
    status: String,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    chose: Option<String>,
    #[serde(default)]
    invocations: Vec<String>,
    started_ms: i64,
    #[serde(default)]
    ended_ms: Option<i64>,
}

/// A definition file as JSON: TOML unless it ends in `.json` (or starts with `{`).
fn read_definition(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if json {
        serde_json::from_str(&text).with_context(|| format!("{}: bad JSON", path.display()))
    } else {
        let v: toml::Value =
            toml::from_str(&text).with_context(|| format!("{}: bad TOML", path.display()))?;
        Ok(serde_json::to_value(v)?)
    }
}

fn read_input(data: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    match (data, file) {
        (Some(d), _) => Ok(d.into_bytes()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Ok(buf)
        }
        (None, Some(f)) => {
            std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))
        }
        (None, None) => Ok(Vec::new()),
    }
}

pub fn run(args: FlowArgs) -> anyhow::Result<ExitCode> {
    let opts = &args.opts;
    let show_flow = |client: &Client, v: Value| -> anyhow::Result<ExitCode> {
        if opts.json {
            output::json_document(&v)?;
        } else {
            let f: Flow = client.decode(&v)?;
            output::out(&render_flow(&f))?;
        }
        Ok(ExitCode::SUCCESS)
    };
    match args.cmd {
        FlowCmd::Create { name, file } => {
            let definition = read_definition(&file)?;
            let client = Client::new(opts)?;
            let mut body = json!({ "definition": definition });
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let v = client.send(Method::Post, &api_path(&["flows"]), Body::Json(&body))?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let f: Flow = client.decode(&v)?;
                output::out(&format!("{}\n", f.name))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        FlowCmd::Update { name, file } => {
            let definition = read_definition(&file)?;
            let client = Client::new(opts)?;
            let body = json!({ "definition": definition });
            let v = client.send(Method::Put, &api_path(&["flows", &name]), Body::Json(&body))?;
            show_flow(&client, v)
        }
        FlowCmd::Get { name } => {
            let client = Client::new(opts)?;
            let v = client.get(&api_path(&["flows", &name]), &[])?;
            show_flow(&client, v)
        }
        FlowCmd::List => {
            let client = Client::new(opts)?;
            let v = client.get(&api_path(&["flows"]), &[])?;
            if opts.json {
                output::json_document(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let list: Vec<Flow> = client.decode(&v)?;
            if list.is_empty() {
                eprintln!("no flows");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(&["NAME", "ENABLED", "REVISION", "STEPS", "RUNNING", "UPDATED"])
                .right(&[2, 3, 4]);
            for f in &list {
                t.row(&[
                    f.name.clone(),
                    output::yes_no(f.enabled).to_string(),
                    f.revision.to_string(),
                    f.definition["steps"]
                        .as_array()
                        .map_or(0, Vec::len)
                        .to_string(),
                    f.running.to_string(),
                    time_ms(f.updated_ms.max(0) as u64),
                ]);
            }
            output::out(&t.render())?;
            Ok(ExitCode::SUCCESS)
        }
        FlowCmd::Delete { name } => {
            let client = Client::new(opts)?;
            let v = client.send(Method::Delete, &api_path(&["flows", &name]), Body::Empty)?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                eprintln!("deleted flow {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        FlowCmd::Enable { name } => toggle(opts, &name, "enable"),
        FlowCmd::Disable { name } => toggle(opts, &name, "disable"),
        FlowCmd::Start {
            name,
            data,
            data_file,
            wait,
        } => {
            let input = read_input(data, data_file)?;
            let wait_ms = wait
                .map(|w| {
                    humantime::parse_duration(&w)
                        .map(|d| d.as_millis() as u64)
                        .map_err(|e| anyhow::anyhow!("--wait {w:?}: {e}"))
                })
                .transpose()?;
            let client = Client::new(opts)?;
            let query: Vec<(&str, String)> = wait_ms
                .iter()
                .map(|ms| ("wait_ms", ms.to_string()))
                .collect();
            let (_, v) = client.call(
                Method::Post,
                &api_path(&["flows", &name, "start"]),
                &query,
                Body::Raw(&input),
            )?;
            let r: Run = client.decode(&v)?;
            if opts.json {
                output::json_document(&v)?;
            } else if wait_ms.is_none() {
                // stdout is the id alone, for scripts: `RUN=$(edgefn-agent flow start f)`.
                output::out(&format!("{}\n", r.id))?;
            } else {
                match r.status.as_str() {
                    "succeeded" => output::out(&format!(
                        "{}\n",
                        r.state.output.clone().unwrap_or(Value::Null)
                    ))?,
                    "running" => eprintln!("run {} still running after the wait", r.id),
                    _ => eprintln!(
                        "run {} failed: {}",
                        r.id,
                        r.state.error.as_deref().unwrap_or("")
                    ),
                }
            }
            Ok(match r.status.as_str() {
                "failed" => ExitCode::from(super::EXIT_FUNCTION),
                _ => ExitCode::SUCCESS,
            })
        }
        FlowCmd::Runs {
            name,
            status,
            limit,
        } => {
            let client = Client::new(opts)?;
            let mut query = vec![("limit", limit.to_string())];
            if let Some(s) = status {
                query.push(("status", s));
            }
            let v = client.get(&api_path(&["flows", &name, "runs"]), &query)?;
            if opts.json {
                output::json_document(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let list: Vec<Run> = client.decode(&v)?;
            if list.is_empty() {
                eprintln!("no runs of flow {name}");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(&[
                "RUN",
                "STATUS",
                "STARTED",
                "UPDATED",
                "TRIGGER",
                "STEPS",
                "AT / ERROR",
            ])
            .right(&[5]);
            for r in &list {
                let done = r
                    .state
                    .steps
                    .values()
                    .filter(|s| s.status == "succeeded")
                    .count();
                let at = if r.status == "running" {
                    r.state
                        .steps
                        .iter()
                        .filter(|(_, s)| s.status == "running")
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    r.state.error.clone().unwrap_or_default()
                };
                t.row(&[
                    r.id.clone(),
                    r.status.clone(),
                    time_ms(r.created_ms.max(0) as u64),
                    time_ms(r.updated_ms.max(0) as u64),
                    r.trigger.clone(),
                    format!("{done}/{}", r.state.steps.len()),
                    at,
                ]);
            }
            output::out(&t.render())?;
            Ok(ExitCode::SUCCESS)
        }
        FlowCmd::Run { id } => {
            let client = Client::new(opts)?;
            let v = client.get(&api_path(&["flow-runs", &id]), &[])?;
            if opts.json {
                output::json_document(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let r: Run = client.decode(&v)?;
            output::out(&render_run(&r))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn toggle(opts: &AgentOpts, name: &str, verb: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(opts)?;
    let v = client.send(Method::Post, &api_path(&["flows", name, verb]), Body::Empty)?;
    if opts.json {
        output::json_document(&v)?;
    } else {
        eprintln!("flow {name} {verb}d");
    }
    Ok(ExitCode::SUCCESS)
}

fn render_flow(f: &Flow) -> String {
    let mut pairs = vec![
        ("name", f.name.clone()),
        ("enabled", output::yes_no(f.enabled).to_string()),
        ("revision", f.revision.to_string()),
        ("running", f.running.to_string()),
        ("updated", time_ms(f.updated_ms.max(0) as u64)),
    ];
    if !f.definition["trigger"].is_null() {
        pairs.push(("partial matches", f.partials.to_string()));
        pairs.push(("expired matches", f.partials_expired.to_string()));
    }
    let mut out = output::fields(&pairs);
    out.push_str("\ndefinition (JSON):\n");
    out.push_str(&serde_json::to_string_pretty(&f.definition).unwrap_or_default());
    out.push('\n');
    out
}

fn render_run(r: &Run) -> String {
    let mut out = output::fields(&[
        ("run", r.id.clone()),
        ("flow", format!("{} (revision {})", r.flow, r.revision)),
        ("status", r.status.clone()),
        ("trigger", r.trigger.clone()),
        ("started", time_ms(r.created_ms.max(0) as u64)),
        ("updated", time_ms(r.updated_ms.max(0) as u64)),
    ]);
    if let Some(e) = &r.state.error {
        out.push_str(&format!("error: {e}\n"));
    }
    if let Some(o) = &r.state.output {
        out.push_str(&format!("output: {o}\n"));
    }
    out.push('\n');
    let mut steps: Vec<(&String, &Step)> = r.state.steps.iter().collect();
    steps.sort_by_key(|(n, s)| (s.started_ms, s.ended_ms.unwrap_or(i64::MAX), n.as_str()));
    let mut t = Table::new(&[
        "STEP",
        "STATUS",
        "ATTEMPTS",
        "STARTED",
        "ENDED",
        "RESULT / ERROR",
        "INVOCATIONS",
    ])
    .right(&[2]);
    for (name, s) in steps {
        let waiting = r.state.waits.get(name.as_str());
        let what = match (&s.error, &s.result, &s.chose) {
            _ if waiting.is_some() && s.status == "running" => {
                let w = waiting.expect("checked");
                let key = w
                    .key
                    .as_deref()
                    .map(|k| format!(" with key {k}"))
                    .unwrap_or_default();
                format!(
                    "waiting for an event{key} until {}",
                    time_ms(w.deadline_ms.max(0) as u64)
                )
            }
            (_, _, Some(c)) => format!("chose {c}"),
            (Some(e), _, _) if s.status != "succeeded" => e.clone(),
            (_, Some(v), _) => cut(&v.to_string(), 60),
            _ => String::new(),
        };
        t.row(&[
            name.clone(),
            s.status.clone(),
            s.attempts.to_string(),
            time_ms(s.started_ms.max(0) as u64),
            s.ended_ms.map_or("-".into(), |e| time_ms(e.max(0) as u64)),
            what,
            s.invocations.join(" "),
        ]);
    }
    out.push_str(&t.render());
    out
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

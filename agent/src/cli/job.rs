//! `edgefn-agent job`: batch jobs on a running agent (docs/agent-api.md, "Jobs").
//!
//! `job submit NAME[:QUALIFIER] --input FILE` sends the file to the agent, which parses it (JSON
//! lines or CSV; errors name the line) and stores one task per item; the agent's runner does the
//! work, so the job goes on if this command is interrupted. `submit` waits with a progress bar on
//! stderr (`--detach` prints the job id at once), writes the results to `--output` (JSON lines,
//! one per task in input order) and exits 0 when every task succeeded, 1 when the job failed or
//! was cancelled (the failed tasks are listed).

use super::client::{api_path, AgentOpts, Body, Client, ClientError, Method};
use super::invoke::{parse_target, Target};
use super::output::{self, escape_text, time_ms, Table};
use anyhow::Context;
// The Job document, progress bar and input format rules are shared with the cloud's
// `edgefn job ... --device` (`protocol::jobs`).
use edgefn_cloud::protocol::jobs::{self, format_of, parse_format, JobDoc as Job, Progress};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    opts: AgentOpts,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// Submit a job: one task per JSON line or CSV row of FILE, run by the agent.
    Submit(SubmitArgs),
    /// Show a job's state, progress and failed tasks.
    Status {
        id: String,
        /// Wait (with a progress bar) until the job has finished.
        #[arg(long)]
        wait: bool,
    },
    /// List jobs (the newest LIMIT, oldest first).
    List {
        /// Only jobs in this state: running, cancelling, succeeded, failed, cancelled.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Cancel a job: no new task starts, the running ones finish, then the job is cancelled.
    Cancel { id: String },
    /// Print a job's results (JSON lines, one per task in input order), or write them to a file.
    Results {
        id: String,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete a finished job with its tasks and results.
    Delete { id: String },
}

#[derive(Debug, clap::Args)]
struct SubmitArgs {
    /// The function, optionally with a qualifier: `latest` (default), a version or an alias.
    #[arg(value_name = "NAME[:QUALIFIER]", value_parser = parse_target)]
    target: Target,
    /// The tasks: a JSON lines file (one JSON value per line) or a CSV file with a header row;
    /// `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// `jsonl` or `csv` [default: from the file name: `.csv` is CSV, anything else JSON lines].
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// Tasks run at once (also bounded by the function's max_concurrency).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    parallelism: u32,
    /// Retries of a failed task (with backoff) before it counts as failed.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100))]
    retries: u32,
    /// Write the results here when the job has finished (JSON lines, in input order).
    #[arg(long, value_name = "FILE", conflicts_with = "detach")]
    output: Option<PathBuf>,
    /// Do not wait: print the job id and return (`job status ID --wait`, `job results ID`).
    #[arg(long, alias = "no-wait")]
    detach: bool,
}

/// How often `submit` and `status --wait` ask the agent.
const POLL: Duration = Duration::from_millis(250);

pub fn run(args: JobArgs) -> anyhow::Result<ExitCode> {
    let opts = &args.opts;
    let client = Client::new(opts)?;
    match args.command {
        JobCommand::Submit(s) => submit(&client, opts, s),
        JobCommand::Status { id, wait } => {
            let (v, job) = if wait {
                wait_for(&client, &id, opts.json)?
            } else {
                get(&client, &id)?
            };
            if opts.json {
                output::json_document(&v)?;
            } else {
                output::out(&render(&job))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List { state, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(s) = state {
                query.push(("state", s));
            }
            let v = client.get(&api_path(&["jobs"]), &query)?;
            if opts.json {
                output::json_document(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let jobs: Vec<Job> = client.decode(&v)?;
            if jobs.is_empty() {
                eprintln!("no jobs");
            } else {
                output::out(&render_list(&jobs))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Cancel { id } => {
            let v = client.send(
                Method::Post,
                &api_path(&["jobs", &id, "cancel"]),
                Body::Empty,
            )?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let job: Job = client.decode(&v)?;
                output::out(&format!(
                    "job {} {}: no new task starts; running tasks finish ({} of {} done)\n",
                    job.id,
                    job.state,
                    job.succeeded + job.failed,
                    job.tasks
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Results { id, output: file } => {
            match file {
                Some(path) => {
                    let n = write_results(&client, &id, &path)?;
                    eprintln!("wrote {n} results to {}", path.display());
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    fetch_results(&client, &id, |page| stdout.write_all(page.as_bytes()))?;
                    stdout.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Delete { id } => {
            client.send(Method::Delete, &api_path(&["jobs", &id]), Body::Empty)?;
            if !opts.json {
                output::out(&format!("deleted job {id}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn submit(client: &Client, opts: &AgentOpts, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let format = match &args.format {
        Some(f) => parse_format(f).map_err(anyhow::Error::msg)?,
        None => format_of(&args.input),
    };
    let bytes = read_input(&args.input)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        anyhow::anyhow!("{}: line {line}: not UTF-8 text", args.input.display())
    })?;
    let body = json!({
        "function": args.target.name,
        "qualifier": args.target.qualifier.as_query(),
        "format": format,
        "input": text,
        "parallelism": args.parallelism,
        "retries": args.retries,
    });
    let (_, v) = client
        .call(Method::Post, &api_path(&["jobs"]), &[], Body::Json(&body))
        .map_err(|e| match e {
            // The agent's message names the line; say which file it is about.
            ClientError::Api {
                status,
                code,
                message,
                hint,
            } if status == 422 && message.contains(" input: ") => ClientError::Api {
                status,
                code,
                message: format!("{}: {message}", args.input.display()),
                hint,
            },
            e => e,
        })?;
    let job: Job = client.decode(&v)?;
    for w in &job.warnings {
        eprintln!("warning: {w}");
    }
    if args.detach {
        if opts.json {
            output::json_document(&v)?;
        } else {
            output::out(&format!("{}\n", job.id))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "job {}: {} tasks for {}:{} (parallelism {}, retries {}); Ctrl-C stops waiting, not the job",
        job.id, job.tasks, job.function, job.qualifier, job.parallelism, job.retries
    );
    let (v, job) = wait_for(client, &job.id, opts.json)?;
    if let Some(path) = &args.output {
        let n = write_results(client, &job.id, path)?;
        eprintln!("wrote {n} results to {}", path.display());
    }
    if opts.json {
        output::json_document(&v)?;
    } else {
        output::out(&render(&job))?;
    }
    Ok(if job.state == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FUNCTION)
    })
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("cannot read the input from stdin")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read the input file {}", path.display()))
}

fn get(client: &Client, id: &str) -> anyhow::Result<(Value, Job)> {
    let v = client.get(&api_path(&["jobs", id]), &[])?;
    let job = client.decode(&v)?;
    Ok((v, job))
}

/// Polls the job until it has finished, drawing progress on stderr (not with `--json`).
fn wait_for(client: &Client, id: &str, quiet: bool) -> anyhow::Result<(Value, Job)> {
    let mut bar = Progress::new(quiet);
    loop {
        let (v, job) = get(client, id)?;
        bar.show(&job);
        if job.finished() {
            bar.done();
            return Ok((v, job));
        }
        std::thread::sleep(POLL);
    }
}

/// Fetches every page of results, handing each to `sink`; returns the number of lines.
fn fetch_results(
    client: &Client,
    id: &str,
    mut sink: impl FnMut(&str) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let path = api_path(&["jobs", id, "results"]);
    let mut from = 0u64;
    let mut lines = 0u64;
    loop {
        let (page, next) =
            client.get_text(&path, &[("from", from.to_string())], "x-edgefn-next-index")?;
        lines += page.lines().count() as u64;
        sink(&page)?;
        match next.and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if n > from => from = n,
            _ => return Ok(lines),
        }
    }
}

/// Writes the results to `path` (through a temporary file, renamed when complete).
fn write_results(client: &Client, id: &str, path: &Path) -> anyhow::Result<u64> {
    let tmp = path.with_extension(format!(
        "{}.part",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let n = fetch_results(client, id, |page| file.write_all(page.as_bytes()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(n)
}

fn render(job: &Job) -> String {
    let time = |ms: i64| time_ms(ms.max(0) as u64);
    let mut text = output::fields(&jobs::summary(job, time));
    if let Some((heading, rows)) = jobs::failures(job) {
        text.push_str(&heading);
        let mut t = Table::new(&jobs::FAILURE_COLUMNS).right(&[0, 1]);
        for mut row in rows {
            row[2] = escape_text(&row[2]).into_owned();
            t.row(&row);
        }
        text.push_str(&t.render());
    }
    text
}

fn render_list(jobs: &[Job]) -> String {
    let mut t = Table::new(&jobs::LIST_COLUMNS).right(&[3, 4, 5]);
    for j in jobs {
        t.row(&jobs::list_row(j, |ms| time_ms(ms.max(0) as u64)));
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefn_cloud::protocol::jobs::FailureDoc as Failure;

    fn job(succeeded: u64, failed: u64, tasks: u64) -> Job {
        Job {
            id: "J".into(),
            function: "f".into(),
            qualifier: "latest".into(),
            state: "running".into(),
            parallelism: 2,
            retries: 1,
            input: "csv".into(),
            tasks,
            succeeded,
            failed,
            pending: tasks - succeeded - failed,
            created_ms: 0,
            finished_ms: None,
            failures: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn failures_are_listed_under_the_summary() {
        let mut j = job(1, 1, 2);
        j.state = "failed".into();
        j.failures = Some(vec![Failure {
            index: 1,
            attempts: 3,
            error: "error: bad\nthing".into(),
            invocation_id: None,
        }]);
        let text = render(&j);
        assert!(text.contains("state:     failed"), "{text}");
        assert!(text.contains("failed tasks:"), "{text}");
        assert!(text.contains("error: bad\\nthing"), "{text}");
    }
}

//! `edgefn job ... --device D`: batch jobs on one device, relayed by the cloud over its MQTT
//! broker (`/v1/devices/{device}/jobs...`, docs/cloud-api.md "Batch jobs on a device").
//!
//! The same verbs, flags and output as the agent's local `edgefn-agent job` (docs/agent-api.md,
//! "Jobs"): `submit` sends the input file (JSON lines or CSV, at most 1 MiB through the cloud)
//! and waits with a progress bar on stderr (`--detach` prints the job id at once), writes the
//! results to `--output` and exits 0 when every task succeeded, 1 when the job failed or was
//! cancelled. The job runs on the device, which keeps it (and resumes it after a restart): a
//! device that does not answer (offline) fails the command with the cloud's message naming when
//! it was last seen (exit 1), and the job goes on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{seg, Client, Method};
use super::output::{self, fields, out, time, Table};
use super::CliError;
use crate::protocol::jobs::{self, format_of, parse_format, JobDoc, Progress, MAX_INPUT_BYTES};
use crate::protocol::names::parse_target;

#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCmd,
    /// The device whose jobs these are (id or name).
    #[arg(long, value_name = "D", global = true)]
    pub device: Option<String>,
    /// How long to wait for each answer of the device (at most 5m).
    #[arg(long, value_name = "DURATION", default_value = "10s", global = true,
          value_parser = super::invoke::parse_timeout)]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Submit a job: one task per JSON line or CSV row of FILE, run by the device.
    Submit(SubmitArgs),
    /// Show a job's state, progress and failed tasks.
    Status {
        id: String,
        /// Wait (with a progress bar) until the job has finished.
        #[arg(long)]
        wait: bool,
    },
    /// List the device's jobs (the newest LIMIT, oldest first).
    List {
        /// Only jobs in this state: running, cancelling, succeeded, failed, cancelled.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
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
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The function, optionally with a qualifier: `latest` (default), a version or an alias.
    #[arg(value_name = "NAME[:QUALIFIER]")]
    target: String,
    /// The tasks: a JSON lines file (one JSON value per line) or a CSV file with a header row;
    /// `-` reads stdin. At most 1 MiB through the cloud.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// `jsonl` or `csv` [default: from the file name: `.csv` is CSV, anything else JSON lines].
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// Tasks run at once (also bounded by the function's max_concurrency on the device).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    parallelism: u32,
    /// Retries of a failed task (with backoff) before it counts as failed.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    retries: u32,
    /// Write the results here when the job has finished (JSON lines, in input order).
    #[arg(long, value_name = "FILE", conflicts_with = "detach")]
    output: Option<PathBuf>,
    /// Do not wait: print the job id and return (`job status ID --wait`, `job results ID`).
    #[arg(long, alias = "no-wait")]
    detach: bool,
    /// Wait with a progress bar until the job has finished (the default; for symmetry with
    /// `status --wait`).
    #[arg(long, conflicts_with = "detach")]
    wait: bool,
}

/// How often `submit` and `status --wait` ask the device (each a round trip through the cloud).
const POLL: Duration = Duration::from_millis(500);

/// What the commands share: the client, the device's jobs path and the wait per answer.
struct Device<'a> {
    c: &'a Client,
    /// `/v1/devices/{device}/jobs`.
    base: String,
    timeout_ms: u64,
}

impl Device<'_> {
    fn path(&self, rest: &str) -> String {
        let sep = if rest.contains('?') { '&' } else { '?' };
        format!("{}{rest}{sep}timeout_ms={}", self.base, self.timeout_ms)
    }

    fn get(&self, id: &str) -> Result<(Value, JobDoc), CliError> {
        let v = self.c.get(&self.path(&format!("/{}", seg(id))))?;
        let job = decode(&v)?;
        Ok((v, job))
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, CliError> {
    serde_json::from_value(v.clone())
        .map_err(|e| CliError::Transport(format!("the cloud's answer is not a job document: {e}")))
}

pub fn run(c: &Client, json_out: bool, args: JobArgs) -> Result<(), CliError> {
    let device = args.device.ok_or_else(|| {
        CliError::Usage(
            "give --device D (the device whose jobs these are; `edgefn-agent job` on the \
             device itself needs none)"
                .into(),
        )
    })?;
    let d = Device {
        c,
        base: format!("/v1/devices/{}/jobs", seg(&device)),
        timeout_ms: args.timeout.as_millis() as u64,
    };
    match args.command {
        JobCmd::Submit(s) => submit(&d, json_out, s),
        JobCmd::Status { id, wait } => {
            let (v, job) = if wait {
                wait_for(&d, &id, json_out)?
            } else {
                d.get(&id)?
            };
            if json_out {
                output::json(&v)
            } else {
                out(&render(&job))
            }
            Ok(())
        }
        JobCmd::List { state, limit } => {
            let mut q = format!("?limit={limit}");
            if let Some(s) = state {
                q.push_str(&format!("&state={}", seg(&s)));
            }
            let v = c.get(&d.path(&q))?;
            if json_out {
                output::json(&v);
                return Ok(());
            }
            let jobs: Vec<JobDoc> = decode(&v)?;
            if jobs.is_empty() {
                eprintln!("no jobs");
            } else {
                out(&render_list(&jobs));
            }
            Ok(())
        }
        JobCmd::Cancel { id } => {
            let v = c.call(
                Method::Post,
                &d.path(&format!("/{}/cancel", seg(&id))),
                None,
            )?;
            if json_out {
                output::json(&v);
            } else {
                let job: JobDoc = decode(&v)?;
                out(&format!(
                    "job {} {}: no new task starts; running tasks finish ({} of {} done)\n",
                    job.id,
                    job.state,
                    job.succeeded + job.failed,
                    job.tasks
                ));
            }
            Ok(())
        }
        JobCmd::Results { id, output: file } => {
            match file {
                Some(path) => {
                    let n = write_results(&d, &id, &path)?;
                    eprintln!("wrote {n} results to {}", path.display());
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    fetch_results(&d, &id, |page| stdout.write_all(page.as_bytes()))?;
                    let _ = stdout.flush();
                }
            }
            Ok(())
        }
    }
}

fn submit(d: &Device, json_out: bool, args: SubmitArgs) -> Result<(), CliError> {
    let (name, qualifier) =
        parse_target(&args.target).map_err(|e| CliError::Usage(format!("{}: {e}", args.target)))?;
    let format = match &args.format {
        Some(f) => parse_format(f).map_err(CliError::Usage)?,
        None => format_of(&args.input),
    };
    let bytes = read_input(&args.input)?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(CliError::Usage(format!(
            "{}: {} bytes: a job submitted through the cloud carries at most {MAX_INPUT_BYTES} \
             bytes of input (split it into several jobs, or run `edgefn-agent job submit` on \
             the device)",
            args.input.display(),
            bytes.len()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        CliError::Usage(format!(
            "{}: line {line}: not UTF-8 text",
            args.input.display()
        ))
    })?;
    let body = json!({
        "function": name,
        "qualifier": qualifier.to_string(),
        "format": format,
        "input": text,
        "parallelism": args.parallelism,
        "retries": args.retries,
        "timeout_ms": d.timeout_ms,
    });
    let v =
        d.c.call_with_timeout(&d.base, &body, Duration::from_millis(d.timeout_ms + 30_000))
            .map_err(|e| match e {
                // The device's message names the line; say which file it is about.
                CliError::Api {
                    status,
                    code,
                    message,
                } if status == 422 && message.contains(" input: ") => CliError::Api {
                    status,
                    code,
                    message: format!("{}: {message}", args.input.display()),
                },
                e => e,
            })?;
    let job: JobDoc = decode(&v)?;
    for w in &job.warnings {
        eprintln!("warning: {w}");
    }
    if args.detach {
        if json_out {
            output::json(&v);
        } else {
            out(&format!("{}\n", job.id));
        }
        return Ok(());
    }
    eprintln!(
        "job {} on {}: {} tasks for {}:{} (parallelism {}, retries {}); Ctrl-C stops waiting, \
         not the job",
        job.id,
        v["device"].as_str().unwrap_or("the device"),
        job.tasks,
        job.function,
        job.qualifier,
        job.parallelism,
        job.retries
    );
    let (v, job) = wait_for(d, &job.id, json_out)?;
    if let Some(path) = &args.output {
        let n = write_results(d, &job.id, path)?;
        eprintln!("wrote {n} results to {}", path.display());
    }
    if json_out {
        output::json(&v);
    } else {
        out(&render(&job));
    }
    if job.state == "succeeded" {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "job {} {}: {} of {} tasks failed",
            job.id, job.state, job.failed, job.tasks
        )))
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read the input from stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the input file {}: {e}",
            path.display()
        ))
    })
}

/// Polls the job until it has finished, drawing progress on stderr (not with `--json`).
fn wait_for(d: &Device, id: &str, quiet: bool) -> Result<(Value, JobDoc), CliError> {
    let mut bar = Progress::new(quiet);
    loop {
        let (v, job) = d.get(id)?;
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
    d: &Device,
    id: &str,
    mut sink: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<u64, CliError> {
    let mut from = 0u64;
    let mut lines = 0u64;
    loop {
        let path = d.path(&format!("/{}/results?from={from}", seg(id)));
        let (page, next) = d.c.get_text(&path, crate::api::jobs::NEXT_HEADER)?;
        lines += page.lines().count() as u64;
        sink(&page).map_err(|e| CliError::Usage(format!("cannot write the results: {e}")))?;
        match next.and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if n > from => from = n,
            _ => return Ok(lines),
        }
    }
}

/// Writes the results to `path` (through a temporary file, renamed when complete).
fn write_results(d: &Device, id: &str, path: &Path) -> Result<u64, CliError> {
    let tmp = path.with_extension(format!(
        "{}.part",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let io = |what: &str, p: &Path, e: std::io::Error| {
        CliError::Usage(format!("cannot {what} {}: {e}", p.display()))
    };
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?);
    let n = fetch_results(d, id, |page| file.write_all(page.as_bytes()))?;
    file.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(|e| io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename the results to", path, e))?;
    Ok(n)
}

fn render(job: &JobDoc) -> String {
    let mut text = fields(&jobs::summary(job, |ms| time(Some(ms))));
    if let Some((heading, rows)) = jobs::failures(job) {
        text.push_str(&heading);
        let mut t = Table::new(&jobs::FAILURE_COLUMNS);
        for mut row in rows {
            row[2] = row[2].escape_default().to_string();
            t.row(row.to_vec());
        }
        text.push_str(&t.render());
    }
    text
}

fn render_list(jobs: &[JobDoc]) -> String {
    let mut t = Table::new(&jobs::LIST_COLUMNS);
    for j in jobs {
        t.row(jobs::list_row(j, |ms| time(Some(ms))).to_vec());
    }
    t.render()
}

//! Batch jobs relayed from the cloud (docs/cloud-api.md, "Batch jobs on a device"): the
//! operation a signed remote request carries ([`JobOp`], in `InvokeRequest::job`), the job
//! document both the agent's API and the relay answer with ([`JobDoc`]), and the progress line
//! both CLIs draw ([`bar_line`], [`Progress`]).
//!
//! A job operation travels the remote-invoke channel (`protocol::invoke`): signed by the cloud,
//! verified, replay-checked and answered by the device like an invocation, so the relay has no
//! trust rules of its own. The device answers `done` with `InvokeReply::job` (the job document,
//! the list, or a page of results), or `refused` with a code (`not_found`: no such job or
//! function; `conflict`: cancel of a finished job; `invalid`: bad input).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest job input (the JSON lines or CSV text) a relayed submission carries: like a remote
/// invocation's payload ([`super::invoke::MAX_PAYLOAD_BYTES`]), so the signed request stays well
/// under the broker's packet limit. Bigger inputs: several jobs, or `edgefn-agent job submit` on
/// the device.
pub const MAX_INPUT_BYTES: usize = super::invoke::MAX_PAYLOAD_BYTES;

/// Bytes of result lines a relayed page carries at most (at least one line, however long):
/// a page's reply stays under the broker's packet limit.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Most jobs a relayed list returns (the agent's API limit).
pub const MAX_LIST: u32 = 10_000;

/// One operation on a device's jobs (the agent's `/v1/jobs` API, docs/agent-api.md "Jobs").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobOp {
    /// `POST /v1/jobs` with `input` and `format`.
    Submit {
        function: String,
        qualifier: String,
        /// `jsonl` or `csv`.
        format: String,
        /// The input file's text.
        input: String,
        parallelism: u32,
        retries: u32,
    },
    /// `GET /v1/jobs/{id}` (with the first failed tasks).
    Status { id: String },
    /// `GET /v1/jobs?state=&limit=`.
    List { state: Option<String>, limit: u32 },
    /// `POST /v1/jobs/{id}/cancel`.
    Cancel { id: String },
    /// `GET /v1/jobs/{id}/results?from=&limit=`, cut at [`MAX_PAGE_BYTES`].
    Results { id: String, from: u64, limit: u32 },
}

impl JobOp {
    /// `submit`, `status`, ... (log lines).
    pub fn name(&self) -> &'static str {
        match self {
            JobOp::Submit { .. } => "submit",
            JobOp::Status { .. } => "status",
            JobOp::List { .. } => "list",
            JobOp::Cancel { .. } => "cancel",
            JobOp::Results { .. } => "results",
        }
    }
}

/// A page of results as a relayed `results` answers it (in `InvokeReply::job`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsPage {
    /// JSON lines, one per task from `from`, in input order (docs/agent-api.md).
    pub lines: String,
    /// The index of the next page's first task; `None` on the last page.
    pub next_index: Option<u64>,
}

/// A job as the agent's API shows it (docs/agent-api.md "Jobs"); the fields both CLIs show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDoc {
    pub id: String,
    pub function: String,
    pub qualifier: String,
    /// `running`, `cancelling`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub parallelism: u32,
    pub retries: u32,
    /// `jsonl`, `csv` or `items`.
    pub input: String,
    pub tasks: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub pending: u64,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// The first failed tasks (status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<FailureDoc>>,
    /// Things worth knowing about a submission (submit only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl JobDoc {
    /// Succeeded, failed or cancelled.
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// A failed task of a job's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDoc {
    /// Position in the input, from 0.
    pub index: u64,
    pub attempts: u32,
    pub error: String,
    pub invocation_id: Option<String>,
}

/// A job's summary for people, as (label, value) pairs; `time` formats Unix ms. Both CLIs
/// (`edgefn-agent job`, `edgefn job --device`) print it with their own field layout.
pub fn summary(job: &JobDoc, time: impl Fn(i64) -> String) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("job", job.id.clone()),
        ("function", format!("{}:{}", job.function, job.qualifier)),
        ("state", job.state.clone()),
        ("progress", bar_line(job)),
        (
            "tasks",
            format!(
                "{} ({} succeeded, {} failed, {} pending)",
                job.tasks, job.succeeded, job.failed, job.pending
            ),
        ),
        (
            "settings",
            format!(
                "parallelism {}, retries {}, input {}",
                job.parallelism, job.retries, job.input
            ),
        ),
        ("created", time(job.created_ms)),
    ];
    if let Some(f) = job.finished_ms {
        pairs.push(("finished", time(f)));
    }
    pairs
}

/// Columns of [`failures`]' rows.
pub const FAILURE_COLUMNS: [&str; 4] = ["INDEX", "ATTEMPTS", "ERROR", "INVOCATION"];

/// The failed tasks a job document lists, for a table under its summary: the heading line, then
/// one row per task ([`FAILURE_COLUMNS`]; the error as it is, for the caller to escape). `None`
/// when it lists none.
pub fn failures(job: &JobDoc) -> Option<(String, Vec<[String; 4]>)> {
    let failures = job.failures.as_ref().filter(|f| !f.is_empty())?;
    let mut heading = String::from("\nfailed tasks");
    if (failures.len() as u64) < job.failed {
        heading.push_str(&format!(
            " (the first {} of {}; `job results` has all)",
            failures.len(),
            job.failed
        ));
    }
    heading.push_str(":\n");
    let rows = failures
        .iter()
        .map(|f| {
            [
                f.index.to_string(),
                f.attempts.to_string(),
                f.error.clone(),
                f.invocation_id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    Some((heading, rows))
}

/// Columns of [`list_row`].
pub const LIST_COLUMNS: [&str; 7] = [
    "ID",
    "FUNCTION",
    "STATE",
    "DONE",
    "FAILED",
    "PARALLELISM",
    "CREATED",
];

/// One job of a job list for people ([`LIST_COLUMNS`]); `time` formats Unix ms.
pub fn list_row(job: &JobDoc, time: impl Fn(i64) -> String) -> [String; 7] {
    [
        job.id.clone(),
        format!("{}:{}", job.function, job.qualifier),
        job.state.clone(),
        format!("{}/{}", job.succeeded + job.failed, job.tasks),
        job.failed.to_string(),
        job.parallelism.to_string(),
        time(job.created_ms),
    ]
}

/// `[##########----------]  50%  500/1000 tasks, 3 failed`.
pub fn bar_line(job: &JobDoc) -> String {
    const WIDTH: u64 = 30;
    let done = job.succeeded + job.failed;
    let total = job.tasks.max(1);
    let filled = (done * WIDTH / total) as usize;
    let mut line = format!(
        "[{}{}] {:>3}%  {done}/{} tasks",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        done * 100 / total,
        job.tasks
    );
    if job.failed > 0 {
        line.push_str(&format!(", {} failed", job.failed));
    }
    line
}

/// The progress display on stderr: a bar redrawn in place on a terminal, a line every few
/// seconds (and at the end) otherwise; nothing when `quiet` (`--json`).
pub struct Progress {
    quiet: bool,
    tty: bool,
    started: Instant,
    last_print: Option<Instant>,
    last_done: Option<u64>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_print: None,
            last_done: None,
        }
    }

    /// Draws the job's progress (rate once a second has passed).
    pub fn show(&mut self, job: &JobDoc) {
        if self.quiet {
            return;
        }
        let done = job.succeeded + job.failed;
        let secs = self.started.elapsed().as_secs_f64();
        let mut line = format!("{}  {}", bar_line(job), job.state);
        if secs >= 1.0 && done > 0 {
            line.push_str(&format!("  {:.1} tasks/s", done as f64 / secs));
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        } else {
            let due = self
                .last_print
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
            if (due && self.last_done != Some(done)) || job.finished() {
                let _ = writeln!(err, "{line}");
                self.last_print = Some(Instant::now());
                self.last_done = Some(done);
            }
        }
    }

    /// Ends the bar's line on a terminal.
    pub fn done(&mut self) {
        if !self.quiet && self.tty {
            eprintln!();
        }
    }
}

/// `.csv` files are CSV; everything else (`.jsonl`, `.ndjson`, stdin, ...) JSON lines.
pub fn format_of(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => "csv",
        _ => "jsonl",
    }
}

/// `--format` of `job submit`: `jsonl` (or `ndjson`, `json-lines`, `jsonlines`) or `csv`.
pub fn parse_format(text: &str) -> Result<&'static str, String> {
    match text.to_ascii_lowercase().as_str() {
        "jsonl" | "ndjson" | "json-lines" | "jsonlines" => Ok("jsonl"),
        "csv" => Ok("csv"),
        _ => Err(format!("--format {text}: expected jsonl or csv")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(succeeded: u64, failed: u64, tasks: u64) -> JobDoc {
        JobDoc {
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
    fn the_bar_fills_with_finished_tasks() {
        assert_eq!(
            bar_line(&job(0, 0, 10)),
            "[------------------------------]   0%  0/10 tasks"
        );
        assert_eq!(
            bar_line(&job(4, 1, 10)),
            "[###############---------------]  50%  5/10 tasks, 1 failed"
        );
        assert!(bar_line(&job(3, 0, 3)).starts_with("[##############################] 100%"));
    }

    #[test]
    fn ops_have_a_tagged_json_shape() {
        let op = JobOp::Status { id: "J1".into() };
        let v = serde_json::to_value(&op).unwrap();
        assert_eq!(v, serde_json::json!({"op": "status", "id": "J1"}));
        assert_eq!(serde_json::from_value::<JobOp>(v).unwrap(), op);
        assert!(serde_json::from_str::<JobOp>(r#"{"op":"delete","id":"J"}"#).is_err());
        assert_eq!(parse_format("NDJSON"), Ok("jsonl"));
        assert!(parse_format("xml").unwrap_err().contains("xml"));
        assert_eq!(format_of(std::path::Path::new("rows.CSV")), "csv");
        assert_eq!(format_of(std::path::Path::new("-")), "jsonl");
    }
}

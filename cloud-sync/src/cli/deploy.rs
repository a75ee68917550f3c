//! `edgefn deploy ...`: deployments and their rollouts, with progress while one runs.

use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{seg, Client, Method};
use super::output::{fields, json as print_json, out, text, time, Table};
use super::CliError;

#[derive(Subcommand, Debug)]
pub enum DeployCmd {
    /// Roll function versions (and mappings and flows) out to a group, batch by batch.
    Create {
        /// The device group to roll out to.
        #[arg(long)]
        group: String,
        /// `NAME:VERSION` or `NAME:ALIAS` (repeatable).
        #[arg(long = "function", required = true)]
        functions: Vec<String>,
        /// A registry mapping id or name to deploy with them (repeatable).
        #[arg(long = "mapping")]
        mappings: Vec<String>,
        /// A registry flow to deploy with them (repeatable).
        #[arg(long = "flow")]
        flows: Vec<String>,
        /// Share of the group per batch, percent (the first batch is the canary).
        #[arg(long, default_value_t = 100)]
        batch: u32,
        /// Roll back when more than this percent of the released devices fail.
        #[arg(long, default_value_t = 0)]
        failure_threshold: u32,
        /// How long a device must stay healthy before its batch counts as done.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        health_wait: Duration,
        /// A released device that has not reported within this long counts as failed
        /// (`0s` = wait for ever).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        report_timeout: Duration,
        /// Show progress until the rollout ends; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// A deployment and each device's state in it.
    Status {
        id: String,
        /// Show progress until the rollout ends; exit 1 unless it succeeded.
        #[arg(long)]
        follow: bool,
    },
    List,
    /// Stop releasing batches (devices that have it keep it).
    Cancel {
        id: String,
    },
}

fn counts(v: &Value) -> String {
    let c = &v["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    format!(
        "{} pending, {} released, {} applied, {} healthy, {} failed, {} rolled back",
        n("pending"),
        n("released"),
        n("applied"),
        n("healthy"),
        n("failed"),
        n("rolled_back")
    )
}

fn print(v: &Value) {
    let functions: Vec<String> = v["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let versions: Vec<String> = f["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            format!("{} v{}", text(&f["name"]), versions.join(",v"))
        })
        .collect();
    let mut s = fields(&[
        ("deployment", text(&v["id"])),
        ("group", text(&v["group"])),
        ("status", text(&v["status"])),
        ("message", text(&v["message"])),
        ("functions", functions.join("; ")),
        (
            "batch",
            format!(
                "{} of {} ({}% each)",
                v["current_batch"].as_u64().unwrap_or(0) + 1,
                text(&v["batches"]),
                text(&v["batch_percent"])
            ),
        ),
        (
            "threshold",
            format!("{}% failures", text(&v["failure_threshold_percent"])),
        ),
        ("devices", counts(v)),
        ("created", time(v["created_ms"].as_i64())),
    ]);
    let mut t = Table::new(&["DEVICE", "BATCH", "STATE", "ERROR"]);
    for d in v["devices"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&d["device"]),
            (d["batch"].as_u64().unwrap_or(0) + 1).to_string(),
            text(&d["state"]),
            text(&d["error"]),
        ]);
    }
    s.push('\n');
    s.push_str(&t.render());
    out(&s);
}

/// Polls until the deployment is no longer running, printing a progress line (stderr) at
/// every change; then prints it and fails unless it succeeded.
fn follow(c: &Client, json_out: bool, id: &str) -> Result<(), CliError> {
    let mut last = String::new();
    loop {
        let v = c.get(&format!("/v1/deployments/{}", seg(id)))?;
        let line = format!(
            "{}: {} ({})",
            text(&v["status"]),
            text(&v["message"]),
            counts(&v)
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if v["status"] != "running" {
            if json_out {
                print_json(&v)
            } else {
                print(&v)
            }
            return match v["status"].as_str() {
                Some("succeeded") => Ok(()),
                _ => Err(CliError::Failed(format!(
                    "deployment {id} {}: {}",
                    text(&v["status"]),
                    text(&v["message"])
                ))),
            };
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn run(c: &Client, json_out: bool, cmd: DeployCmd) -> Result<(), CliError> {
    match cmd {
        DeployCmd::Create {
            group,
            functions,
            mappings,
            flows,
            batch,
            failure_threshold,
            health_wait,
            report_timeout,
            wait,
        } => {
            let body = json!({
                "group": group,
                "functions": functions,
                "mappings": mappings,
                "flows": flows,
                "batch_percent": batch,
                "failure_threshold_percent": failure_threshold,
                "health_wait_ms": health_wait.as_millis() as u64,
                "report_timeout_ms": report_timeout.as_millis() as u64,
            });
            let v = c.call(Method::Post, "/v1/deployments", Some(&body))?;
            let id = text(&v["id"]);
            if wait {
                eprintln!("deployment {id}");
                return follow(c, json_out, &id);
            }
            if json_out {
                print_json(&v)
            } else {
                out(&format!("{id}\n"))
            }
        }
        DeployCmd::Status { id, follow: true } => return follow(c, json_out, &id),
        DeployCmd::Status { id, follow: false } => {
            let v = c.get(&format!("/v1/deployments/{}", seg(&id)))?;
            if json_out {
                print_json(&v)
            } else {
                print(&v)
            }
        }
        DeployCmd::List => {
            let v = c.get("/v1/deployments")?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "GROUP", "STATUS", "BATCH", "DEVICES", "CREATED"]);
            for d in v.as_array().into_iter().flatten() {
                t.row(vec![
                    text(&d["id"]),
                    text(&d["group"]),
                    text(&d["status"]),
                    format!(
                        "{}/{}",
                        d["current_batch"].as_u64().unwrap_or(0) + 1,
                        text(&d["batches"])
                    ),
                    counts(d),
                    time(d["created_ms"].as_i64()),
                ]);
            }
            out(&t.render());
        }
        DeployCmd::Cancel { id } => {
            let v = c.call(
                Method::Post,
                &format!("/v1/deployments/{}/cancel", seg(&id)),
                None,
            )?;
            if json_out {
                print_json(&v)
            } else {
                print(&v)
            }
        }
    }
    Ok(())
}

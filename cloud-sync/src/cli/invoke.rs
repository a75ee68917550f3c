//! `edgefn invoke NAME[:QUALIFIER] --device D`: one invocation on one device, relayed by the
//! cloud over its MQTT broker (`POST /v1/devices/{device}/invoke`). The output is the agent's
//! `edgefn-agent invoke`'s:
//!
//! Sync: stdout carries exactly the response bytes; a failed function prints
//! `error: OUTCOME: MESSAGE` on stderr and exits 1. `--async`: stdout carries the invocation id.
//! `--log-tail`: the invocation's newest log lines (up to 4 KiB) go to stderr
//! (`time level invocation text`). `--json`: stdout carries the cloud's answer. A device that
//! does not answer within `--timeout` (offline, or the function is slower) is an error naming
//! the device and when it was last seen (exit 1).

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};

use super::client::{seg, Client};
use super::logs::time_ms;
use super::output::{self, out, text};
use super::CliError;

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// The function, optionally with a qualifier: `latest` (default), a version number or an
    /// alias, e.g. `echo`, `echo:3`, `echo:prod`.
    #[arg(value_name = "NAME[:QUALIFIER]")]
    pub target: String,
    /// The device to run it on (id or name).
    #[arg(long, value_name = "D")]
    pub device: String,
    /// Event payload as text.
    #[arg(long, value_name = "TEXT", conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Event payload read from a file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<PathBuf>,
    /// Do not wait for the function: print the invocation id once the device accepted it; the
    /// outcome appears in logs and stats.
    #[arg(long = "async", conflicts_with = "log_tail")]
    pub run_async: bool,
    /// Also print the invocation's newest log lines (up to 4 KiB) to stderr.
    #[arg(long)]
    pub log_tail: bool,
    /// How long to wait for the device's answer (at most 5m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

pub(crate) fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    let max = Duration::from_millis(crate::protocol::invoke::MAX_TIMEOUT_MS);
    if d.is_zero() || d > max {
        return Err(format!(
            "{s:?}: the timeout must be more than 0 and at most 5m"
        ));
    }
    Ok(d)
}

/// The request body (the payload read from where the flags say).
fn body(a: &InvokeArgs) -> Result<Value, CliError> {
    let (name, qualifier) = crate::protocol::names::parse_target(&a.target)
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.target)))?;
    let data = match (&a.data, &a.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| CliError::Usage(format!("cannot read data from stdin: {e}")))?;
            buf
        }
        (None, Some(p)) => std::fs::read(p)
            .map_err(|e| CliError::Usage(format!("cannot read data file {}: {e}", p.display())))?,
        (None, None) => Vec::new(),
    };
    Ok(json!({
        "function": name,
        "qualifier": qualifier.to_string(),
        "payload_base64": B64.encode(data),
        "async": a.run_async,
        "log_tail": a.log_tail,
        "timeout_ms": a.timeout.as_millis() as u64,
    }))
}

/// A `--log-tail` line: `time level invocation text` (as the agent CLI's).
pub fn tail_line(line: &Value, invocation: &Value) -> String {
    let escaped: String = text(&line["text"])
        .chars()
        .flat_map(|c| match c {
            '\n' => "\\n".chars().collect::<Vec<_>>(),
            '\r' => "\\r".chars().collect(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect();
    format!(
        "{} {:<5} {} {}\n",
        time_ms(line["time_ms"].as_i64().unwrap_or(0)),
        text(&line["level"]),
        text(invocation),
        escaped
    )
}

pub fn run(c: &Client, json: bool, a: InvokeArgs) -> Result<(), CliError> {
    let body = body(&a)?;
    let path = format!("/v1/devices/{}/invoke", seg(&a.device));
    // The cloud answers by the timeout; the connection may take a little longer.
    let v = c.call_with_timeout(&path, &body, a.timeout + Duration::from_secs(15))?;
    if a.run_async {
        if json {
            output::json(&v);
        } else {
            out(&format!("{}\n", text(&v["invocation_id"])));
        }
        return Ok(());
    }
    if a.log_tail {
        let mut lines = String::new();
        for l in v["logs"].as_array().into_iter().flatten() {
            lines.push_str(&tail_line(l, &v["invocation_id"]));
        }
        if v["logs_truncated"] == true {
            lines.insert_str(
                0,
                "(older log lines left out: the tail keeps the newest 4 KiB)\n",
            );
        }
        eprint!("{lines}");
    }
    let ok = v["outcome"] == "success";
    if json {
        output::json(&v);
    } else if ok {
        let response = B64
            .decode(v["response_base64"].as_str().unwrap_or(""))
            .map_err(|e| CliError::Transport(format!("response_base64 is not base64: {e}")))?;
        let mut stdout = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut stdout, &response);
        let _ = std::io::Write::flush(&mut stdout);
    }
    if ok {
        return Ok(());
    }
    let outcome = text(&v["outcome"]);
    Err(CliError::Failed(
        match v["error"].as_str().filter(|m| !m.is_empty()) {
            Some(m) => format!("{outcome}: {}", m.replace(|c: char| c.is_control(), " ")),
            None => outcome,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<InvokeArgs, clap::Error> {
        let mut all = vec!["edgefn", "invoke"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Invoke(i) => Ok(i),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_parse_and_conflict() {
        let a = parse(&["echo:2", "--device", "pi", "--data", "hi", "--log-tail"]).unwrap();
        assert_eq!(a.timeout, Duration::from_secs(10));
        let b = body(&a).unwrap();
        assert_eq!(b["function"], "echo");
        assert_eq!(b["qualifier"], "2");
        assert_eq!(b["payload_base64"], B64.encode("hi"));
        assert_eq!(b["log_tail"], true);
        assert_eq!(b["timeout_ms"], 10_000);
        let a = parse(&["echo", "--device", "pi", "--async", "--timeout", "1m"]).unwrap();
        assert!(a.run_async);
        assert_eq!(body(&a).unwrap()["qualifier"], "latest");
        assert!(parse(&["echo"]).is_err(), "--device is required");
        assert!(parse(&["echo", "--device", "pi", "--async", "--log-tail"]).is_err());
        assert!(parse(&["echo", "--device", "pi", "--data", "a", "--data-file", "f"]).is_err());
        assert!(parse(&["echo", "--device", "pi", "--timeout", "6m"]).is_err());
        assert!(parse(&["echo", "--device", "pi", "--timeout", "0s"]).is_err());
        let bad = parse(&["echo:", "--device", "pi"]).unwrap();
        assert!(matches!(body(&bad), Err(CliError::Usage(_))));
    }

    #[test]
    fn tail_lines_show_time_level_invocation_text() {
        let line = json!({"time_ms": 1_714_564_800_123i64, "level": "info", "text": "a\nb"});
        assert_eq!(
            tail_line(&line, &json!("01HX")),
            "2024-05-01T12:00:00.123Z info  01HX a\\nb\n"
        );
    }
}

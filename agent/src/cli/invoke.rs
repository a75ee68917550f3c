//! `edgefn-agent invoke NAME[:QUALIFIER]`: one invocation on a running agent.
//!
//! Sync: stdout carries exactly the response bytes; a failed function prints
//! `error: OUTCOME: MESSAGE` on stderr and exits 1. `--async`: stdout carries the invocation id.
//! `--log-tail`: the invocation's log lines go to stderr (`time level invocation text`).
//! `--json`: stdout carries the API's Invocation document (or `{"invocation_id"}` with --async).

use super::client::{api_path, AgentOpts, Body, Client, Method};
use super::logs::LogRecord;
use super::output::{self, escape_text, time_ms};
use anyhow::Context;
use base64::Engine as _;
use edgefn_agent::runtime::Outcome;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// The function, optionally with a qualifier: `latest` (default), a version number or an
    /// alias, e.g. `echo`, `echo:3`, `echo:prod`.
    #[arg(value_name = "NAME[:QUALIFIER]", value_parser = parse_target)]
    target: Target,
    /// Event payload as text.
    #[arg(long, value_name = "TEXT", conflicts_with = "data_file")]
    data: Option<String>,
    /// Event payload read from a file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    data_file: Option<PathBuf>,
    /// Do not wait: print the invocation id at once; the outcome appears in logs and stats.
    #[arg(long = "async", conflicts_with = "log_tail")]
    run_async: bool,
    /// Also print the invocation's log lines to stderr.
    #[arg(long)]
    log_tail: bool,
    #[command(flatten)]
    opts: AgentOpts,
}

/// NAME[:QUALIFIER] as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub qualifier: Qualifier,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    /// The `qualifier=` query value.
    pub fn as_query(&self) -> String {
        match self {
            Qualifier::Latest => "latest".into(),
            Qualifier::Version(n) => n.to_string(),
            Qualifier::Alias(a) => a.clone(),
        }
    }
}

/// Invocation, as docs/agent-api.md defines it (the fields the text output needs).
#[derive(Debug, Deserialize)]
struct Invocation {
    outcome: String,
    error: Option<String>,
    response_base64: Option<String>,
    #[serde(default)]
    logs: Vec<LogRecord>,
}

#[derive(Debug, Deserialize)]
struct Accepted {
    invocation_id: String,
}

pub fn run(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let data = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("cannot read data from stdin")?;
            buf
        }
        (None, Some(p)) => {
            std::fs::read(p).with_context(|| format!("cannot read data file {}", p.display()))?
        }
        (None, None) => Vec::new(),
    };
    let client = Client::new(&args.opts)?;
    let query = [
        ("qualifier", args.target.qualifier.as_query()),
        ("async", args.run_async.to_string()),
        ("log_tail", args.log_tail.to_string()),
    ];
    let path = api_path(&["functions", &args.target.name, "invoke"]);
    let (_, v) = client.call(Method::Post, &path, &query, Body::Raw(&data))?;

    if args.run_async {
        if args.opts.json {
            output::json_document(&v)?;
        } else {
            let a: Accepted = client.decode(&v)?;
            output::out(&format!("{}\n", a.invocation_id))?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let inv: Invocation = client.decode(&v)?;
    if args.log_tail {
        let mut lines = String::new();
        for r in &inv.logs {
            lines.push_str(&tail_line(r));
        }
        eprint!("{lines}");
    }
    let ok = inv.outcome == Outcome::Success.as_str();
    if args.opts.json {
        output::json_document(&v)?;
    } else if ok {
        let response = match inv.response_base64.as_deref() {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| super::client::ClientError::Protocol {
                    url: client.base().to_string(),
                    detail: format!("response_base64 is not base64: {e}"),
                })?,
            None => Vec::new(),
        };
        output::out_bytes(&response)?;
    }
    if ok {
        return Ok(ExitCode::SUCCESS);
    }
    match inv.error.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => eprintln!("error: {}: {}", inv.outcome, escape_text(m)),
        None => eprintln!("error: {}", inv.outcome),
    }
    Ok(ExitCode::from(super::EXIT_FUNCTION))
}

/// A `--log-tail` line: `time level invocation text`.
fn tail_line(r: &LogRecord) -> String {
    format!(
        "{} {:<5} {} {}\n",
        time_ms(r.time_ms),
        r.level,
        r.invocation_id.as_deref().unwrap_or("-"),
        escape_text(&r.text)
    )
}

/// `NAME[:QUALIFIER]`. Names and aliases are `[A-Za-z0-9_-]` (docs/agent-api.md), so the first
/// `:` separates; all digits is a version number, `latest` is latest, anything else an alias.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let (name, qualifier) = match s.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (s, None),
    };
    check_name(name).map_err(|e| format!("function name `{name}` {e}"))?;
    let qualifier = match qualifier {
        None | Some("latest") => Qualifier::Latest,
        Some("") => return Err(format!("`{s}`: empty qualifier after `:`")),
        Some(q) if q.bytes().all(|b| b.is_ascii_digit()) => q
            .parse()
            .map(Qualifier::Version)
            .map_err(|_| format!("version `{q}` is too large"))?,
        Some(q) => {
            check_name(q).map_err(|e| format!("qualifier `{q}` {e}"))?;
            Qualifier::Alias(q.to_string())
        }
    };
    Ok(Target {
        name: name.to_string(),
        qualifier,
    })
}

/// The shape rules of function and alias names (the agent enforces the rest).
fn check_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 64 {
        return Err("is longer than 64 characters");
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may hold only letters, digits, `_` and `-`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn t(name: &str, q: Qualifier) -> Target {
        Target {
            name: name.into(),
            qualifier: q,
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("echo"), Ok(t("echo", Qualifier::Latest)));
        assert_eq!(
            parse_target("echo:latest"),
            Ok(t("echo", Qualifier::Latest))
        );
        assert_eq!(parse_target("echo:3"), Ok(t("echo", Qualifier::Version(3))));
        assert_eq!(
            parse_target("echo:007"),
            Ok(t("echo", Qualifier::Version(7)))
        );
        assert_eq!(
            parse_target("echo:prod"),
            Ok(t("echo", Qualifier::Alias("prod".into())))
        );
        // Digits with a letter are an alias, not a version.
        assert_eq!(
            parse_target("temp-2:v2"),
            Ok(t("temp-2", Qualifier::Alias("v2".into())))
        );
        assert_eq!(parse_target("42"), Ok(t("42", Qualifier::Latest)));
        assert_eq!(parse_target("42:1"), Ok(t("42", Qualifier::Version(1))));
    }

    #[test]
    fn bad_targets_are_refused() {
        for bad in [
            "",
            ":3",
            "echo:",
            "echo:a:b",
            "echo:pr od",
            "-echo",
            "ec/ho",
            "echo:99999999999999999999999",
            "echo:-x",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_target(&"a".repeat(65)).is_err());
        assert!(parse_target(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn qualifiers_become_query_values() {
        assert_eq!(Qualifier::Latest.as_query(), "latest");
        assert_eq!(Qualifier::Version(12).as_query(), "12");
        assert_eq!(Qualifier::Alias("prod".into()).as_query(), "prod");
    }

    fn parse(args: &[&str]) -> Result<InvokeArgs, clap::Error> {
        let mut all = vec!["edgefn-agent", "invoke"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Invoke(i) => Ok(i),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_parse_and_conflict() {
        let a = parse(&["echo:2", "--data", "hi", "--log-tail", "--json"]).unwrap();
        assert_eq!(a.target, t("echo", Qualifier::Version(2)));
        assert!(a.log_tail && a.opts.json && !a.run_async);
        assert!(parse(&["echo", "--async"]).unwrap().run_async);
        assert!(parse(&["echo", "--data", "a", "--data-file", "f"]).is_err());
        assert!(parse(&["echo", "--async", "--log-tail"]).is_err());
        assert!(parse(&["echo:"]).is_err());
    }

    #[test]
    fn tail_lines_show_time_level_invocation_text() {
        let r: LogRecord = serde_json::from_value(serde_json::json!({
            "seq": 7, "time_ms": 1_714_564_800_123u64, "level": "info", "function": "echo",
            "version": null, "invocation_id": "01HX", "text": "hello\nworld"
        }))
        .unwrap();
        assert_eq!(
            tail_line(&r),
            "2024-05-01T12:00:00.123Z info  01HX hello\\nworld\n"
        );
    }
}

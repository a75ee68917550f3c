//! `edgefn-agent dead-letters`: events whose delivery failed for good (every attempt failed and
//! the mapping has no on-failure destination, the function was disabled or missing, ...).

use super::client::{api_path, AgentOpts, Client};
use super::output::{self, time_ms, Table};
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DeadLettersArgs {
    /// Only the dead letters of this mapping (id or name).
    #[arg(long, value_name = "ID")]
    mapping: Option<String>,
    /// Only the dead letters of this function.
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// At most this many (the newest), oldest first.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    #[command(flatten)]
    opts: AgentOpts,
}

/// DeadLetter, as docs/agent-api.md defines it (the fields the table shows).
#[derive(Debug, Deserialize)]
struct DeadLetter {
    id: String,
    mapping_id: Option<String>,
    function: String,
    qualifier: String,
    attempts: u32,
    outcome: String,
    error: String,
    created_ms: i64,
    event: Event,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    source: String,
    subject: String,
}

pub fn run(args: DeadLettersArgs) -> anyhow::Result<ExitCode> {
    let opts = &args.opts;
    let client = Client::new(opts)?;
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(m) = args.mapping {
        query.push(("mapping", m));
    }
    if let Some(f) = args.function {
        query.push(("function", f));
    }
    let v = client.get(&api_path(&["dead-letters"]), &query)?;
    if opts.json {
        output::json_document(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<DeadLetter> = client.decode(&v)?;
    if list.is_empty() {
        eprintln!("no dead letters");
    } else {
        output::out(&render(&list))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render(list: &[DeadLetter]) -> String {
    let mut t = Table::new(&[
        "ID", "TIME", "MAPPING", "FUNCTION", "EVENT", "ATTEMPTS", "OUTCOME", "ERROR",
    ])
    .right(&[5]);
    for d in list {
        t.row(&[
            d.id.clone(),
            time_ms(d.created_ms.max(0) as u64),
            d.mapping_id.clone().unwrap_or_else(|| "-".into()),
            format!("{}:{}", d.function, d.qualifier),
            format!("{} {} {}", d.event.source, d.event.subject, d.event.id),
            d.attempts.to_string(),
            d.outcome.clone(),
            d.error.clone(),
        ]);
    }
    t.render()
}

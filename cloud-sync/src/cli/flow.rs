//! `edgefn flow create|update|get|list|delete|enable|disable`: flows in the registry, deployed
//! with `deploy create --flow NAME` (docs/flows.md, docs/cloud-api.md "Flows"). The file is
//! parsed here as the agent's CLI parses it (TOML, or JSON when it starts with `{`) with the
//! same parser (`protocol::flow`); the cloud validates it with the agent's rules.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{seg, Client, Method};
use super::output::{self, fields, out, text, time, Table};
use super::CliError;
use crate::protocol::flow::FlowDef;

#[derive(Subcommand, Debug)]
pub enum FlowCmd {
    /// Create a flow from a TOML or JSON file (its name: --name, else the file's `name`).
    Create {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// Replace a flow's definition (deployments keep the one they pinned).
    Update {
        name: String,
        file: PathBuf,
    },
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
    /// Let deployed copies start runs again.
    Enable {
        name: String,
    },
    /// Stop deployed copies from starting new runs (running ones go on).
    Disable {
        name: String,
    },
}

fn read(path: &Path) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let def =
        FlowDef::parse(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    Ok(serde_json::to_value(&def).expect("definitions serialize"))
}

fn print(v: &Value) {
    let steps = v["definition"]["steps"].as_array().map_or(0, Vec::len);
    out(&fields(&[
        ("name", text(&v["name"])),
        ("enabled", text(&v["enabled"])),
        ("revision", text(&v["revision"])),
        ("steps", steps.to_string()),
        ("updated", time(v["updated_ms"].as_i64())),
    ]));
    let def = serde_json::to_string_pretty(&v["definition"]).unwrap_or_default();
    out(&format!("\n{def}\n"));
}

pub fn run(c: &Client, json_out: bool, cmd: FlowCmd) -> Result<(), CliError> {
    let show = |v: Value| {
        if json_out {
            output::json(&v)
        } else {
            print(&v)
        }
    };
    match cmd {
        FlowCmd::Create { file, name } => {
            let mut body = json!({"definition": read(&file)?});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let v = c.call(Method::Post, "/v1/flows", Some(&body))?;
            if json_out {
                output::json(&v)
            } else {
                out(&format!("created flow {}\n", text(&v["name"])))
            }
        }
        FlowCmd::Update { name, file } => {
            let body = json!({"definition": read(&file)?});
            show(c.call(
                Method::Put,
                &format!("/v1/flows/{}", seg(&name)),
                Some(&body),
            )?)
        }
        FlowCmd::Get { name } => show(c.get(&format!("/v1/flows/{}", seg(&name)))?),
        FlowCmd::List => {
            let v = c.get("/v1/flows")?;
            if json_out {
                output::json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "ENABLED", "REVISION", "STEPS", "UPDATED"]);
            for f in v.as_array().into_iter().flatten() {
                t.row(vec![
                    text(&f["name"]),
                    text(&f["enabled"]),
                    text(&f["revision"]),
                    f["definition"]["steps"]
                        .as_array()
                        .map_or(0, Vec::len)
                        .to_string(),
                    time(f["updated_ms"].as_i64()),
                ]);
            }
            out(&t.render());
        }
        FlowCmd::Delete { name } => {
            c.call(Method::Delete, &format!("/v1/flows/{}", seg(&name)), None)?;
            if json_out {
                output::json(&json!({"deleted": true}))
            }
        }
        FlowCmd::Enable { name } => show(c.call(
            Method::Post,
            &format!("/v1/flows/{}/enable", seg(&name)),
            None,
        )?),
        FlowCmd::Disable { name } => show(c.call(
            Method::Post,
            &format!("/v1/flows/{}/disable", seg(&name)),
            None,
        )?),
    }
    Ok(())
}

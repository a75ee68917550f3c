//! `edgefn key ...`: signing keys.

use clap::Subcommand;
use serde_json::Value;

use super::client::{Client, Method};
use super::output::{json as print_json, out, text, time, Table};
use super::CliError;

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// A new signing key certified by the root; the old one is retired once every device runs a
    /// document signed by the new one.
    Rotate,
    List,
}

fn table(keys: &[Value]) -> String {
    let mut t = Table::new(&["KEY", "STATE", "EXPIRES", "CREATED", "RETIRED"]);
    for k in keys {
        t.row(vec![
            text(&k["id"]),
            text(&k["state"]),
            time(k["not_after_ms"].as_i64()),
            time(k["created_ms"].as_i64()),
            time(k["retired_ms"].as_i64()),
        ]);
    }
    t.render()
}

pub fn run(c: &Client, json_out: bool, cmd: KeyCmd) -> Result<(), CliError> {
    let v = match cmd {
        KeyCmd::Rotate => c.call(Method::Post, "/v1/keys/rotate", None)?,
        KeyCmd::List => c.get("/v1/keys")?,
    };
    if json_out {
        print_json(&v)
    } else {
        match &v {
            Value::Array(a) => out(&table(a)),
            one => out(&table(std::slice::from_ref(one))),
        }
    }
    Ok(())
}

//! `edgefn device ...` and `edgefn group ...`.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{seg, Client, Method};
use super::output::{fields, json as print_json, out, text, time, Table};
use super::CliError;

#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    /// Create a device and print its one-time enrollment token
    /// (`edgefn-agent enroll --cloud URL --token TOKEN`).
    Enroll {
        name: String,
        /// A group to put it in (repeatable; the group must exist).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    List,
    Get {
        device: String,
    },
    /// Delete a device: its credential stops working at once.
    Delete {
        device: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    Create {
        name: String,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Add a device to a group.
    Add {
        name: String,
        device: String,
    },
    /// Remove a device from a group.
    Remove {
        name: String,
        device: String,
    },
}

fn print_group(v: &Value) {
    let devices: Vec<String> = v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    out(&fields(&[
        ("group", text(&v["name"])),
        ("devices", devices.join(", ")),
        ("created", time(v["created_ms"].as_i64())),
    ]))
}

pub fn run_device(c: &Client, json_out: bool, cmd: DeviceCmd) -> Result<(), CliError> {
    match cmd {
        DeviceCmd::Enroll { name, groups } => {
            let v = c.call(
                Method::Post,
                "/v1/devices",
                Some(&json!({"name": name, "groups": groups})),
            )?;
            if json_out {
                print_json(
                    &json!({"token": v["token"], "device_id": v["device_id"], "expires_ms": v["expires_ms"]}),
                )
            } else {
                out(&format!("{}\n", text(&v["token"])))
            }
        }
        DeviceCmd::List => {
            let v = c.get("/v1/devices")?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&[
                "NAME",
                "ID",
                "ENROLLED",
                "GROUPS",
                "SEQUENCE",
                "APPLIED",
                "LAST SEEN",
            ]);
            for d in v.as_array().into_iter().flatten() {
                let groups: Vec<String> = d["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                t.row(vec![
                    text(&d["name"]),
                    text(&d["id"]),
                    text(&d["enrolled"]),
                    groups.join(","),
                    text(&d["sequence"]),
                    text(&d["applied_sequence"]),
                    time(d["last_seen_ms"].as_i64()),
                ]);
            }
            out(&t.render());
        }
        DeviceCmd::Get { device } => {
            let v = c.get(&format!("/v1/devices/{}", seg(&device)))?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let groups: Vec<String> = v["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let mut s = fields(&[
                ("name", text(&v["name"])),
                ("id", text(&v["id"])),
                ("enrolled", time(v["enrolled_ms"].as_i64())),
                ("groups", groups.join(", ")),
                ("sequence", text(&v["sequence"])),
                (
                    "applied",
                    format!(
                        "{} (key {})",
                        text(&v["applied_sequence"]),
                        text(&v["applied_key_id"])
                    ),
                ),
                ("last seen", time(v["last_seen_ms"].as_i64())),
            ]);
            let mut t = Table::new(&["DEPLOYMENT", "STATE", "ERROR"]);
            for d in v["deployments"].as_array().into_iter().flatten() {
                t.row(vec![
                    text(&d["deployment"]),
                    text(&d["state"]),
                    text(&d["error"]),
                ]);
            }
            s.push('\n');
            s.push_str(&t.render());
            out(&s);
        }
        DeviceCmd::Delete { device } => {
            c.call(
                Method::Delete,
                &format!("/v1/devices/{}", seg(&device)),
                None,
            )?;
            if json_out {
                print_json(&json!({"deleted": true}))
            }
        }
    }
    Ok(())
}

pub fn run_group(c: &Client, json_out: bool, cmd: GroupCmd) -> Result<(), CliError> {
    let show = |v: Value| {
        if json_out {
            print_json(&v)
        } else {
            print_group(&v)
        }
    };
    match cmd {
        GroupCmd::Create { name } => {
            show(c.call(Method::Post, "/v1/groups", Some(&json!({"name": name})))?)
        }
        GroupCmd::List => {
            let v = c.get("/v1/groups")?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["GROUP", "DEVICES"]);
            for g in v.as_array().into_iter().flatten() {
                t.row(vec![
                    text(&g["name"]),
                    g["devices"].as_array().map_or(0, Vec::len).to_string(),
                ]);
            }
            out(&t.render());
        }
        GroupCmd::Get { name } => show(c.get(&format!("/v1/groups/{}", seg(&name)))?),
        GroupCmd::Delete { name } => {
            c.call(Method::Delete, &format!("/v1/groups/{}", seg(&name)), None)?;
            if json_out {
                print_json(&json!({"deleted": true}))
            }
        }
        GroupCmd::Add { name, device } => show(c.call(
            Method::Put,
            &format!("/v1/groups/{}/devices/{}", seg(&name), seg(&device)),
            None,
        )?),
        GroupCmd::Remove { name, device } => show(c.call(
            Method::Delete,
            &format!("/v1/groups/{}/devices/{}", seg(&name), seg(&device)),
            None,
        )?),
    }
    Ok(())
}

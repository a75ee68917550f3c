//! `edgefn function ...` and `edgefn alias ...` (the agent CLI's verbs, against the registry).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{seg, Client, Method};
use super::output::{fields, json as print_json, out, text, time, Table};
use super::CliError;

#[derive(Subcommand, Debug)]
pub enum FunctionCmd {
    /// Create a function with its `latest` module and spec.
    Create {
        name: String,
        /// A .wasm file, or a project directory (`edgefn new`) to build first; a project's
        /// `function.toml` is its spec unless --spec says otherwise.
        #[arg(long)]
        module: std::path::PathBuf,
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
    },
    /// Change `latest` (module and/or spec).
    Update {
        name: String,
        /// A .wasm file or a project directory, as for `create`.
        #[arg(long)]
        module: Option<std::path::PathBuf>,
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
    },
    /// Publish `latest` as a new signed version (prints its number).
    Publish {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    Get {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    List,
    Delete {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    Enable {
        name: String,
    },
    Disable {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AliasCmd {
    /// Point ALIAS at VERSION (optionally with --also VERSION2 getting --weight of the events).
    Set {
        name: String,
        alias: String,
        version: u32,
        #[arg(long, requires = "weight")]
        also: Option<u32>,
        #[arg(long, requires = "also")]
        weight: Option<f64>,
    },
    List {
        name: String,
    },
    Delete {
        name: String,
        alias: String,
    },
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// `--module`'s bytes: a .wasm file as it is, or a project directory built and checked first
/// (its `function.toml`, if any, is returned as the spec to use).
fn module_and_spec(
    name: &str,
    module: &std::path::Path,
) -> Result<(Vec<u8>, Option<std::path::PathBuf>), CliError> {
    if !module.is_dir() {
        return Ok((read(module)?, None));
    }
    let built = super::build::build(module)?;
    let spec = Some(module.join("function.toml")).filter(|p| p.is_file());
    eprintln!(
        "uploading {name}: {} ({} bytes, sha256 {}){}",
        built.path.display(),
        built.wasm.len(),
        built.sha256(),
        spec.as_ref()
            .map_or(String::new(), |p| format!(" with spec {}", p.display()))
    );
    Ok((built.wasm, spec))
}

fn read_text(path: &std::path::Path) -> Result<String, CliError> {
    String::from_utf8(read(path)?)
        .map_err(|_| CliError::Usage(format!("{}: not UTF-8 text", path.display())))
}

fn print_function(v: &Value) {
    let mut text_out = fields(&[
        ("name", text(&v["name"])),
        ("enabled", text(&v["enabled"])),
        (
            "latest",
            format!(
                "{} ({} bytes)",
                text(&v["latest"]["sha256"]),
                text(&v["latest"]["size"])
            ),
        ),
        ("updated", time(v["updated_ms"].as_i64())),
    ]);
    let mut t = Table::new(&["VERSION", "SHA256", "SIZE", "KEY", "CREATED", "DESCRIPTION"]);
    for ver in v["versions"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&ver["version"]),
            text(&ver["sha256"]).chars().take(12).collect(),
            text(&ver["size"]),
            text(&ver["manifest"]["key_id"]),
            time(ver["created_ms"].as_i64()),
            text(&ver["description"]),
        ]);
    }
    text_out.push('\n');
    text_out.push_str(&t.render());
    if let Some(aliases) = v["aliases"].as_array().filter(|a| !a.is_empty()) {
        text_out.push('\n');
        text_out.push_str(&alias_table(aliases));
    }
    out(&text_out);
}

fn alias_table(aliases: &[Value]) -> String {
    let mut t = Table::new(&["ALIAS", "VERSION", "ALSO", "WEIGHT"]);
    for a in aliases {
        t.row(vec![
            text(&a["name"]),
            text(&a["version"]),
            text(&a["also_version"]),
            text(&a["weight"]),
        ]);
    }
    t.render()
}

pub fn run_function(c: &Client, json_out: bool, cmd: FunctionCmd) -> Result<(), CliError> {
    let show = |v: Value| {
        if json_out {
            print_json(&v)
        } else {
            print_function(&v)
        }
    };
    match cmd {
        FunctionCmd::Create { name, module, spec } => {
            let (wasm, project_spec) = module_and_spec(&name, &module)?;
            let spec = spec
                .or(project_spec)
                .as_deref()
                .map(read_text)
                .transpose()?
                .unwrap_or_default();
            let body = json!({"name": name, "module_base64": B64.encode(wasm), "spec": spec});
            show(c.call(Method::Post, "/v1/functions", Some(&body))?);
        }
        FunctionCmd::Update { name, module, spec } => {
            if module.is_none() && spec.is_none() {
                return Err(CliError::Usage(
                    "function update: give --module and/or --spec".into(),
                ));
            }
            let mut body = json!({});
            let mut spec = spec;
            if let Some(m) = module {
                let (wasm, project_spec) = module_and_spec(&name, &m)?;
                body["module_base64"] = json!(B64.encode(wasm));
                spec = spec.or(project_spec);
            }
            if let Some(s) = spec {
                body["spec"] = json!(read_text(&s)?);
            }
            show(c.call(
                Method::Put,
                &format!("/v1/functions/{}", seg(&name)),
                Some(&body),
            )?);
        }
        FunctionCmd::Publish { name, description } => {
            let v = c.call(
                Method::Post,
                &format!("/v1/functions/{}/publish", seg(&name)),
                Some(&json!({"description": description})),
            )?;
            if json_out {
                print_json(&v)
            } else {
                out(&format!("{}\n", text(&v["version"])))
            }
        }
        FunctionCmd::Get {
            name,
            version: Some(n),
        } => {
            let v = c.get(&format!("/v1/functions/{}/versions/{n}", seg(&name)))?;
            if json_out {
                print_json(&v)
            } else {
                out(&fields(&[
                    ("function", name),
                    ("version", text(&v["version"])),
                    ("sha256", text(&v["sha256"])),
                    ("size", text(&v["size"])),
                    ("signed by", text(&v["manifest"]["key_id"])),
                    ("created", time(v["created_ms"].as_i64())),
                    ("description", text(&v["description"])),
                    ("spec", text(&v["spec"])),
                ]))
            }
        }
        FunctionCmd::Get {
            name,
            version: None,
        } => show(c.get(&format!("/v1/functions/{}", seg(&name)))?),
        FunctionCmd::List => {
            let v = c.get("/v1/functions")?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&[
                "NAME", "ENABLED", "VERSIONS", "ALIASES", "LATEST", "UPDATED",
            ]);
            for f in v.as_array().into_iter().flatten() {
                t.row(vec![
                    text(&f["name"]),
                    text(&f["enabled"]),
                    text(&f["versions"]),
                    text(&f["aliases"]),
                    text(&f["latest_sha256"]).chars().take(12).collect(),
                    time(f["updated_ms"].as_i64()),
                ]);
            }
            out(&t.render());
        }
        FunctionCmd::Delete { name, version } => {
            let path = match version {
                Some(n) => format!("/v1/functions/{}/versions/{n}", seg(&name)),
                None => format!("/v1/functions/{}", seg(&name)),
            };
            c.call(Method::Delete, &path, None)?;
            if json_out {
                print_json(&json!({"deleted": true}))
            }
        }
        FunctionCmd::Enable { name } => show(c.call(
            Method::Post,
            &format!("/v1/functions/{}/enable", seg(&name)),
            None,
        )?),
        FunctionCmd::Disable { name } => show(c.call(
            Method::Post,
            &format!("/v1/functions/{}/disable", seg(&name)),
            None,
        )?),
    }
    Ok(())
}

pub fn run_alias(c: &Client, json_out: bool, cmd: AliasCmd) -> Result<(), CliError> {
    match cmd {
        AliasCmd::Set {
            name,
            alias,
            version,
            also,
            weight,
        } => {
            let body = json!({"version": version, "also_version": also, "weight": weight});
            let v = c.call(
                Method::Put,
                &format!("/v1/functions/{}/aliases/{}", seg(&name), seg(&alias)),
                Some(&body),
            )?;
            if json_out {
                print_json(&v)
            } else {
                out(&alias_table(&[v]))
            }
        }
        AliasCmd::List { name } => {
            let v = c.get(&format!("/v1/functions/{}/aliases", seg(&name)))?;
            if json_out {
                print_json(&v)
            } else {
                out(&alias_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                ))
            }
        }
        AliasCmd::Delete { name, alias } => {
            c.call(
                Method::Delete,
                &format!("/v1/functions/{}/aliases/{}", seg(&name), seg(&alias)),
                None,
            )?;
            if json_out {
                print_json(&json!({"deleted": true}))
            }
        }
    }
    Ok(())
}

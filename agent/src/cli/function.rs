//! `edgefn-agent function create|update|publish|get|list|delete|enable|disable`: the function
//! lifecycle on a running agent.

use super::alias::{alias_table, Alias};
use super::client::{api_path, AgentOpts, Body, Client, Method};
use super::output::{self, fields, short_sha, size, time_ms, yes_no, Table};
use anyhow::Context;
use base64::Engine as _;
use clap::Subcommand;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct FunctionArgs {
    #[command(subcommand)]
    cmd: FunctionCmd,
    #[command(flatten)]
    opts: AgentOpts,
}

#[derive(Debug, Subcommand)]
enum FunctionCmd {
    /// Create a function from a Wasm module and an optional spec; they become its `latest`.
    Create(CreateArgs),
    /// Replace the module and/or the spec of `latest` (published versions never change).
    Update(UpdateArgs),
    /// Publish `latest` as a new immutable version and print its number (an unchanged `latest`
    /// gives the existing version).
    Publish {
        /// The function's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// A note kept with the version.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Show a function (latest, versions, aliases), or one version with --version.
    Get {
        /// The function's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Show this published version instead.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// List the functions.
    List,
    /// Delete a function with all its versions, aliases and kv, or only one version with
    /// --version (refused while an alias uses it).
    Delete {
        /// The function's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Delete only this published version.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// Let a disabled function take invocations again.
    Enable {
        /// The function's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Refuse invocations of a function (its versions and aliases stay).
    Disable {
        /// The function's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// The function's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// The function's WebAssembly module (.wasm).
    #[arg(long, value_name = "FILE")]
    module: PathBuf,
    /// The function spec (limits, config, permissions) [default: the agent's defaults].
    #[arg(long, value_name = "FILE.toml")]
    spec: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("change").args(["module", "spec"]).required(true).multiple(true)))]
struct UpdateArgs {
    /// The function's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// A new WebAssembly module for `latest`.
    #[arg(long, value_name = "FILE")]
    module: Option<PathBuf>,
    /// A new spec for `latest`.
    #[arg(long, value_name = "FILE.toml")]
    spec: Option<PathBuf>,
}

/// Function, as docs/agent-api.md defines it.
#[derive(Debug, Deserialize)]
struct Function {
    name: String,
    enabled: bool,
    created_ms: Option<u64>,
    updated_ms: Option<u64>,
    latest: Option<Latest>,
    #[serde(default)]
    versions: Vec<Version>,
    #[serde(default)]
    aliases: Vec<Alias>,
}

#[derive(Debug, Deserialize)]
struct Latest {
    sha256: String,
    size: u64,
    #[serde(default)]
    spec: Value,
}

#[derive(Debug, Deserialize)]
struct Version {
    version: u64,
    sha256: String,
    size: u64,
    #[serde(default)]
    spec: Value,
    description: Option<String>,
    created_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Summary {
    name: String,
    enabled: bool,
    latest_sha256: Option<String>,
    versions: u64,
    aliases: u64,
    updated_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Published {
    version: u64,
    created: bool,
}

pub fn run(args: FunctionArgs) -> anyhow::Result<ExitCode> {
    let opts = &args.opts;
    match args.cmd {
        FunctionCmd::Create(c) => {
            // Local files first: a typo in a path is reported before any connection problem.
            let mut body = module_and_spec(Some(&c.module), c.spec.as_deref())?;
            body.insert("name".into(), Value::String(c.name));
            let client = Client::new(opts)?;
            let v = client.send(
                Method::Post,
                &api_path(&["functions"]),
                Body::Json(&Value::Object(body)),
            )?;
            show_changed(&client, opts, "created", &v)
        }
        FunctionCmd::Update(u) => {
            let body = module_and_spec(u.module.as_deref(), u.spec.as_deref())?;
            let client = Client::new(opts)?;
            let path = api_path(&["functions", &u.name]);
            let v = client.send(Method::Put, &path, Body::Json(&Value::Object(body)))?;
            show_changed(&client, opts, "updated", &v)
        }
        FunctionCmd::Publish { name, description } => {
            let client = Client::new(opts)?;
            let mut body = Map::new();
            if let Some(d) = description {
                body.insert("description".into(), Value::String(d));
            }
            let path = api_path(&["functions", &name, "publish"]);
            let v = client.send(Method::Post, &path, Body::Json(&Value::Object(body)))?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let p: Published = client.decode(&v)?;
                // stdout is the number alone, for scripts: `V=$(edgefn-agent function publish f)`.
                output::out(&format!("{}\n", p.version))?;
                if !p.created {
                    eprintln!("note: latest is unchanged: it is version {}", p.version);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FunctionCmd::Get { name, version } => {
            let client = Client::new(opts)?;
            let v = match version {
                Some(n) => client.get(
                    &api_path(&["functions", &name, "versions", &n.to_string()]),
                    &[],
                )?,
                None => client.get(&api_path(&["functions", &name]), &[])?,
            };
            if opts.json {
                output::json_document(&v)?;
            } else if version.is_some() {
                output::out(&render_version(&name, &client.decode(&v)?))?;
            } else {
                output::out(&render_function(&client.decode(&v)?))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        FunctionCmd::List => {
            let client = Client::new(opts)?;
            let v = client.get(&api_path(&["functions"]), &[])?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let list: Vec<Summary> = client.decode(&v)?;
                if list.is_empty() {
                    eprintln!("no functions");
                } else {
                    output::out(&render_list(&list))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FunctionCmd::Delete { name, version } => {
            let client = Client::new(opts)?;
            let path = match version {
                Some(n) => api_path(&["functions", &name, "versions", &n.to_string()]),
                None => api_path(&["functions", &name]),
            };
            client.send(Method::Delete, &path, Body::Empty)?;
            // The API answers 204 with no body; --json still prints one document.
            if opts.json {
                output::json_document(
                    &json!({"deleted": true, "function": name, "version": version}),
                )?;
            } else {
                let which = version.map_or(String::new(), |n| format!(" version {n}"));
                output::out(&format!("deleted {name}{which}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        FunctionCmd::Enable { name } => toggle(opts, &name, "enable", "enabled"),
        FunctionCmd::Disable { name } => toggle(opts, &name, "disable", "disabled"),
    }
}

fn toggle(opts: &AgentOpts, name: &str, verb: &str, done: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(opts)?;
    let v = client.send(
        Method::Post,
        &api_path(&["functions", name, verb]),
        Body::Empty,
    )?;
    if opts.json {
        output::json_document(&v)?;
    } else {
        output::out(&format!("{done} {name}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The body fields for create/update: `module_base64` and `spec` (TOML text), each if given.
fn module_and_spec(
    module: Option<&Path>,
    spec: Option<&Path>,
) -> anyhow::Result<Map<String, Value>> {
    let mut body = Map::new();
    if let Some(p) = module {
        let bytes =
            std::fs::read(p).with_context(|| format!("cannot read module {}", p.display()))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        body.insert("module_base64".into(), Value::String(b64));
    }
    if let Some(p) = spec {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read spec {}", p.display()))?;
        body.insert("spec".into(), Value::String(text));
    }
    Ok(body)
}

/// After create/update: the Function document, or one line for people.
fn show_changed(
    client: &Client,
    opts: &AgentOpts,
    done: &str,
    v: &Value,
) -> anyhow::Result<ExitCode> {
    if opts.json {
        output::json_document(v)?;
    } else {
        let f: Function = client.decode(v)?;
        let latest = f
            .latest
            .map(|l| format!(": latest {} ({})", short_sha(&l.sha256), size(l.size)))
            .unwrap_or_default();
        output::out(&format!("{done} {}{latest}\n", f.name))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render_function(f: &Function) -> String {
    let mut pairs = vec![
        ("name", f.name.clone()),
        ("enabled", yes_no(f.enabled).to_string()),
        ("created", f.created_ms.map(time_ms).unwrap_or_default()),
        ("updated", f.updated_ms.map(time_ms).unwrap_or_default()),
    ];
    if let Some(l) = &f.latest {
        pairs.push(("latest", format!("sha256 {} ({})", l.sha256, size(l.size))));
    }
    let mut text = fields(&pairs);
    text.push('\n');
    if f.versions.is_empty() {
        text.push_str("no published versions\n");
    } else {
        let mut t =
            Table::new(&["VERSION", "SHA256", "SIZE", "CREATED", "DESCRIPTION"]).right(&[0, 2]);
        for v in &f.versions {
            t.row(&[
                v.version.to_string(),
                short_sha(&v.sha256).to_string(),
                size(v.size),
                v.created_ms.map(time_ms).unwrap_or_default(),
                v.description.clone().unwrap_or_default(),
            ]);
        }
        text.push_str(&t.render());
    }
    text.push('\n');
    if f.aliases.is_empty() {
        text.push_str("no aliases\n");
    } else {
        text.push_str(&alias_table(&f.aliases));
    }
    if let Some(l) = &f.latest {
        text.push_str("\nspec of latest:\n");
        text.push_str(&spec_text(&l.spec));
    }
    text
}

fn render_version(function: &str, v: &Version) -> String {
    let mut text = fields(&[
        ("function", function.to_string()),
        ("version", v.version.to_string()),
        ("sha256", v.sha256.clone()),
        ("size", size(v.size)),
        ("created", v.created_ms.map(time_ms).unwrap_or_default()),
        ("description", v.description.clone().unwrap_or_default()),
    ]);
    text.push_str("\nspec:\n");
    text.push_str(&spec_text(&v.spec));
    text
}

fn render_list(list: &[Summary]) -> String {
    let mut t = Table::new(&[
        "NAME", "ENABLED", "VERSIONS", "ALIASES", "LATEST", "UPDATED",
    ])
    .right(&[2, 3]);
    for s in list {
        t.row(&[
            s.name.clone(),
            yes_no(s.enabled).to_string(),
            s.versions.to_string(),
            s.aliases.to_string(),
            s.latest_sha256
                .as_deref()
                .map(short_sha)
                .unwrap_or("-")
                .to_string(),
            s.updated_ms.map(time_ms).unwrap_or_default(),
        ]);
    }
    t.render()
}

/// A spec as TOML for people. The API sends the spec as TOML text; a JSON object (parsed spec)
/// is shown as TOML too, and no spec as the agent's defaults.
fn spec_text(spec: &Value) -> String {
    let text = match spec {
        Value::Null => return "(agent defaults)\n".into(),
        Value::String(s) if s.trim().is_empty() => return "(agent defaults)\n".into(),
        Value::String(s) => s.clone(),
        other => toml::to_string_pretty(other)
            .unwrap_or_else(|_| serde_json::to_string_pretty(other).unwrap_or_default()),
    };
    let mut text = text.trim_end().to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<FunctionCmd, clap::Error> {
        let mut all = vec!["edgefn-agent", "function"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            crate::cli::Command::Function(f) => Ok(f.cmd),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_needs_module_or_spec() {
        assert!(parse(&["update", "f"]).is_err());
        assert!(matches!(
            parse(&["update", "f", "--spec", "s.toml"]),
            Ok(FunctionCmd::Update(_))
        ));
        let both = parse(&["update", "f", "--module", "m.wasm", "--spec", "s.toml"]);
        assert!(
            matches!(both, Ok(FunctionCmd::Update(u)) if u.module.is_some() && u.spec.is_some())
        );
    }

    #[test]
    fn create_needs_a_module() {
        assert!(parse(&["create", "f"]).is_err());
        assert!(matches!(
            parse(&["create", "f", "--module", "m.wasm"]),
            Ok(FunctionCmd::Create(_))
        ));
    }

    #[test]
    fn version_flags_parse() {
        assert!(matches!(
            parse(&["get", "f", "--version", "3"]),
            Ok(FunctionCmd::Get {
                version: Some(3),
                ..
            })
        ));
        assert!(matches!(
            parse(&["delete", "f"]),
            Ok(FunctionCmd::Delete { version: None, .. })
        ));
        assert!(parse(&["delete", "f", "--version", "x"]).is_err());
    }

    #[test]
    fn function_renders_versions_aliases_and_spec() {
        let v = json!({
            "name": "echo", "enabled": true, "created_ms": 0, "updated_ms": 1000,
            "latest": {"sha256": "ab".repeat(32), "size": 2048, "spec": "[limits]\nfuel = 1000\n"},
            "versions": [{"version": 1, "sha256": "cd".repeat(32), "size": 10, "spec": null,
                          "description": "first", "created_ms": 0}],
            "aliases": [{"name": "prod", "version": 1, "also_version": null, "weight": null}]
        });
        let f: Function = serde_json::from_value(v).unwrap();
        let text = render_function(&f);
        assert!(
            text.starts_with("name:     echo\nenabled:  yes\n"),
            "{text}"
        );
        assert!(
            text.contains("      1  cdcdcdcdcdcd  10 B  1970-01-01T00:00:00.000Z  first\n"),
            "{text}"
        );
        assert!(text.contains("prod"), "{text}");
        assert!(
            text.ends_with("spec of latest:\n[limits]\nfuel = 1000\n"),
            "{text}"
        );
    }

    #[test]
    fn specs_render_as_toml() {
        assert_eq!(spec_text(&Value::Null), "(agent defaults)\n");
        assert_eq!(spec_text(&json!("a = 1")), "a = 1\n");
        assert_eq!(
            spec_text(&json!({"limits": {"fuel": 5}})),
            "[limits]\nfuel = 5\n"
        );
    }

    #[test]
    fn list_renders_a_table() {
        let list = vec![Summary {
            name: "echo".into(),
            enabled: false,
            latest_sha256: None,
            versions: 2,
            aliases: 0,
            updated_ms: None,
        }];
        assert_eq!(
            render_list(&list),
            "NAME  ENABLED  VERSIONS  ALIASES  LATEST  UPDATED\necho  no              2        0  -\n"
        );
    }
}

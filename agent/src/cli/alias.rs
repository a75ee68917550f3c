//! `edgefn-agent alias set|list|delete`: names for versions, optionally split by weight between
//! two versions (a canary). The agent validates everything; the weight is also checked here so a
//! typo is a usage error before any request.

use super::client::{api_path, AgentOpts, Body, Client, Method};
use super::output::{self, percent, Table};
use clap::Subcommand;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct AliasArgs {
    #[command(subcommand)]
    cmd: AliasCmd,
    #[command(flatten)]
    opts: AgentOpts,
}

#[derive(Debug, Subcommand)]
enum AliasCmd {
    /// Point ALIAS of function NAME at VERSION; with --also and --weight, a share W of the events
    /// goes to VERSION2 instead (the same event id always reaches the same version).
    Set(SetArgs),
    /// List the aliases of a function.
    List {
        /// The function's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Delete an alias (its versions stay).
    Delete {
        /// The function's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The alias name.
        #[arg(value_name = "ALIAS")]
        alias: String,
    },
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    /// The function's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// The alias name.
    #[arg(value_name = "ALIAS")]
    alias: String,
    /// The version the alias points at.
    #[arg(value_name = "VERSION")]
    version: u64,
    /// A second version that takes the share --weight of the events.
    #[arg(long, value_name = "VERSION2", requires = "weight")]
    also: Option<u64>,
    /// Share of the events for VERSION2, from 0 to 1 (0.1 = 10%).
    #[arg(long, value_name = "W", requires = "also", value_parser = parse_weight, allow_negative_numbers = true)]
    weight: Option<f64>,
}

/// Alias, as docs/agent-api.md defines it.
#[derive(Debug, Deserialize)]
pub struct Alias {
    pub name: String,
    pub version: u64,
    pub also_version: Option<u64>,
    pub weight: Option<f64>,
}

pub fn run(args: AliasArgs) -> anyhow::Result<ExitCode> {
    let opts = &args.opts;
    let client = Client::new(opts)?;
    match args.cmd {
        AliasCmd::Set(s) => {
            let mut body = Map::new();
            body.insert("version".into(), json!(s.version));
            if let (Some(also), Some(w)) = (s.also, s.weight) {
                body.insert("also_version".into(), json!(also));
                body.insert("weight".into(), json!(w));
            }
            let path = api_path(&["functions", &s.name, "aliases", &s.alias]);
            let v = client.send(Method::Put, &path, Body::Json(&Value::Object(body)))?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let a: Alias = client.decode(&v)?;
                output::out(&format!("{}: {}\n", a.name, describe(&a)))?;
            }
        }
        AliasCmd::List { name } => {
            let v = client.get(&api_path(&["functions", &name, "aliases"]), &[])?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let list: Vec<Alias> = client.decode(&v)?;
                if list.is_empty() {
                    eprintln!("{name} has no aliases");
                } else {
                    output::out(&alias_table(&list))?;
                }
            }
        }
        AliasCmd::Delete { name, alias } => {
            let path = api_path(&["functions", &name, "aliases", &alias]);
            client.send(Method::Delete, &path, Body::Empty)?;
            // 204 without a body; --json still prints one document.
            if opts.json {
                output::json_document(&json!({"deleted": true, "function": name, "alias": alias}))?;
            } else {
                output::out(&format!("deleted alias {alias} of {name}\n"))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `W` of `--weight`: a number in 0..=1 (the agent checks again; it is the authority).
fn parse_weight(s: &str) -> Result<f64, String> {
    let w: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&w) {
        return Err(format!(
            "{s} is out of range: the weight is the share of VERSION2, from 0 to 1"
        ));
    }
    Ok(w)
}

/// Where an alias sends events: `version 3`, or `version 3 (90%), version 4 (10%)`.
pub fn describe(a: &Alias) -> String {
    match (a.also_version, a.weight) {
        (Some(also), Some(w)) => format!(
            "version {} ({}), version {also} ({})",
            a.version,
            percent(1.0 - w),
            percent(w)
        ),
        _ => format!("version {}", a.version),
    }
}

/// The aliases table shared with `function get`.
pub fn alias_table(list: &[Alias]) -> String {
    let mut t = Table::new(&["ALIAS", "VERSION", "ALSO", "WEIGHT", "SPLIT"]).right(&[1, 2, 3]);
    for a in list {
        let split = match (a.also_version, a.weight) {
            (Some(_), Some(w)) => format!("{}/{}", percent(1.0 - w), percent(w)),
            _ => "100%".into(),
        };
        t.row(&[
            a.name.clone(),
            a.version.to_string(),
            a.also_version.map_or("-".into(), |v| v.to_string()),
            a.weight.map_or("-".into(), |w| w.to_string()),
            split,
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<AliasCmd, clap::Error> {
        let mut all = vec!["edgefn-agent", "alias"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Alias(a) => Ok(a.cmd),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn also_and_weight_come_together() {
        let ok = parse(&["set", "f", "prod", "3", "--also", "4", "--weight", "0.1"]).unwrap();
        match ok {
            AliasCmd::Set(s) => {
                assert_eq!((s.version, s.also, s.weight), (3, Some(4), Some(0.1)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["set", "f", "prod", "3"]),
            Ok(AliasCmd::Set(_))
        ));
        let e = parse(&["set", "f", "prod", "3", "--also", "4"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&["set", "f", "prod", "3", "--weight", "0.5"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn weight_must_be_a_share() {
        assert_eq!(parse_weight("0"), Ok(0.0));
        assert_eq!(parse_weight("1"), Ok(1.0));
        assert_eq!(parse_weight("0.25"), Ok(0.25));
        assert!(parse_weight("1.5").is_err());
        assert!(parse_weight("-0.1").is_err());
        assert!(parse_weight("NaN").is_err());
        assert!(parse_weight("10%").is_err());
        assert!(parse(&["set", "f", "prod", "3", "--also", "4", "--weight", "2"]).is_err());
        // A negative weight is a value out of range, not an unknown flag `-0`.
        let e = parse(&["set", "f", "prod", "3", "--also", "4", "--weight", "-0.1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn version_must_be_a_number() {
        assert!(parse(&["set", "f", "prod", "latest"]).is_err());
    }

    #[test]
    fn aliases_render() {
        let canary = Alias {
            name: "prod".into(),
            version: 3,
            also_version: Some(4),
            weight: Some(0.1),
        };
        let plain = Alias {
            name: "beta".into(),
            version: 4,
            also_version: None,
            weight: None,
        };
        assert_eq!(describe(&canary), "version 3 (90%), version 4 (10%)");
        assert_eq!(describe(&plain), "version 4");
        assert_eq!(
            alias_table(&[canary, plain]),
            "ALIAS  VERSION  ALSO  WEIGHT  SPLIT\n\
             prod         3     4     0.1  90%/10%\n\
             beta         4     -       -  100%\n"
        );
    }
}

//! Aliases: a name for a version, optionally with a second version getting `weight` (0..=1) of
//! the events (canary), with the agent's rules.

use serde::{Deserialize, Serialize};

use super::functions::{ensure_exists, get_version_tx, touch};
use super::{Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::names::check_alias_name;
use crate::store::{Row, StoreError, Tx};

/// A stored alias (the agent API's JSON shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AliasInfo {
    pub name: String,
    pub version: u32,
    pub also_version: Option<u32>,
    pub weight: Option<f64>,
    pub updated_ms: i64,
}

fn from_row(r: &Row) -> Result<AliasInfo> {
    Ok(AliasInfo {
        name: r.text(0)?,
        version: r.u32(1)?,
        also_version: r.opt_i64(2)?.map(|v| v as u32),
        weight: r.opt_f64(3)?,
        updated_ms: r.i64(4)?,
    })
}

const COLUMNS: &str = "name, version, also_version, weight, updated_ms";

pub(crate) fn list_tx(tx: &mut dyn Tx, function: &str) -> Result<Vec<AliasInfo>> {
    tx.query(
        &format!("SELECT {COLUMNS} FROM aliases WHERE function = $1 ORDER BY name"),
        params![function],
    )?
    .iter()
    .map(from_row)
    .collect()
}

pub(crate) fn get_tx(tx: &mut dyn Tx, function: &str, alias: &str) -> Result<AliasInfo> {
    match tx.query_opt(
        &format!("SELECT {COLUMNS} FROM aliases WHERE function = $1 AND name = $2"),
        params![function, alias],
    )? {
        Some(r) => from_row(&r),
        None => {
            ensure_exists(tx, function)?;
            Err(StoreError::not_found(format!(
                "{function} has no alias {alias}"
            )))
        }
    }
}

/// Checks a target on its own: weight range, both-or-neither, distinct versions.
pub fn check_target(
    alias: &str,
    version: u32,
    also: Option<u32>,
    weight: Option<f64>,
) -> Result<()> {
    let invalid = |m: String| Err(StoreError::invalid(format!("bad alias {alias}: {m}")));
    match (also, weight) {
        (None, None) => Ok(()),
        (Some(a), Some(w)) => {
            if !(0.0..=1.0).contains(&w) {
                return invalid(format!(
                    "weight {w} is outside 0..1 (it is the share of version {a})"
                ));
            }
            if a == version {
                return invalid(format!(
                    "the second version must differ from the first ({version})"
                ));
            }
            Ok(())
        }
        _ => invalid("also_version and weight go together".into()),
    }
}

impl Service {
    pub async fn set_alias(
        &self,
        function: String,
        alias: String,
        version: u32,
        also: Option<u32>,
        weight: Option<f64>,
    ) -> Result<AliasInfo> {
        check_alias_name(&alias).map_err(StoreError::invalid)?;
        check_target(&alias, version, also, weight)?;
        self.store
            .tx(move |tx| {
                for v in std::iter::once(version).chain(also) {
                    get_version_tx(tx, &function, v)?;
                }
                tx.execute(
                    "INSERT INTO aliases (function, name, version, also_version, weight, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (function, name) DO UPDATE SET version = excluded.version,
                        also_version = excluded.also_version, weight = excluded.weight,
                        updated_ms = excluded.updated_ms",
                    params![&function, &alias, version, also, weight, now_ms()],
                )?;
                touch(tx, &function)?;
                get_tx(tx, &function, &alias)
            })
            .await
    }

    pub async fn list_aliases(&self, function: String) -> Result<Vec<AliasInfo>> {
        self.store
            .tx(move |tx| {
                ensure_exists(tx, &function)?;
                list_tx(tx, &function)
            })
            .await
    }

    pub async fn delete_alias(&self, function: String, alias: String) -> Result<()> {
        self.store
            .tx(move |tx| {
                get_tx(tx, &function, &alias)?;
                tx.execute(
                    "DELETE FROM aliases WHERE function = $1 AND name = $2",
                    params![&function, &alias],
                )?;
                touch(tx, &function)
            })
            .await
    }
}

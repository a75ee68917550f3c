//! Flows in the registry (docs/flows.md, docs/cloud-api.md "Flows"): definitions checked with
//! the agent's own parser and validation (`protocol::flow`), so the cloud refuses what a device
//! would refuse, with the same message. A deployment carries flows to devices
//! (`deploy create --flow NAME`), pinned as they were when it was created.
//!
//! As on the agent, a flow's function steps must name functions the registry has; the device
//! does not check that again for a deployed flow (its function may come from the same
//! deployment or be local), and a step whose function is missing there fails its run.

use serde::{Deserialize, Serialize};

use super::functions::ensure_exists;
use super::{Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::flow::FlowDef;
use crate::protocol::names::name_reason;
use crate::store::{Row, StoreError, Tx};

/// A registry flow (the agent API's Flow shape, without `running`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub name: String,
    pub definition: FlowDef,
    pub enabled: bool,
    /// 1 at creation, +1 per change of the definition.
    pub revision: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
}

const COLUMNS: &str = "name, definition, enabled, revision, created_ms, updated_ms";

fn from_row(r: &Row) -> Result<Flow> {
    Ok(Flow {
        name: r.text(0)?,
        definition: serde_json::from_str(&r.text(1)?)
            .map_err(|e| StoreError::Db(format!("stored flow definition: {e}")))?,
        enabled: r.bool(2)?,
        revision: r.u32(3)?,
        created_ms: r.i64(4)?,
        updated_ms: r.i64(5)?,
    })
}

/// A flow by name.
pub(crate) fn get_tx(tx: &mut dyn Tx, name: &str) -> Result<Flow> {
    let r = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM flows WHERE name = $1"),
            params![name],
        )?
        .ok_or_else(|| StoreError::not_found(format!("flow {name:?} not found")))?;
    from_row(&r)
}

/// The agent's checks (`store/flows.rs`): the name, the definition's own rules, a `name` in it
/// that agrees, and the functions it invokes exist (here: in the registry).
fn check(tx: &mut dyn Tx, name: &str, def: &FlowDef) -> Result<()> {
    name_reason(name)
        .map_err(|r| StoreError::invalid(format!("invalid flow name {name:?}: {r}")))?;
    if let Some(n) = &def.name {
        if n != name {
            return Err(StoreError::invalid(format!(
                "the definition is named {n:?} but is stored as {name:?}: drop `name` or make \
                 them agree"
            )));
        }
    }
    def.validate()
        .map_err(|e| StoreError::invalid(e.to_string()))?;
    for s in &def.steps {
        if let Some(f) = &s.function {
            let function = f.split_once(':').map_or(f.as_str(), |(n, _)| n);
            if ensure_exists(tx, function).is_err() {
                return Err(StoreError::invalid(format!(
                    "invalid flow: step {:?}: unknown function {function:?} (create it first)",
                    s.name
                )));
            }
        }
    }
    Ok(())
}

impl Service {
    /// Creates flow `name` (or the definition's `name`).
    pub async fn create_flow(&self, name: Option<String>, def: FlowDef) -> Result<Flow> {
        let Some(name) = name.or_else(|| def.name.clone()) else {
            return Err(StoreError::invalid(
                "the flow has no name: give `name` in the definition or the request",
            ));
        };
        self.store
            .tx(move |tx| {
                check(tx, &name, &def)?;
                let mut def = def.clone();
                def.name = None;
                if tx
                    .query_opt("SELECT 1 FROM flows WHERE name = $1", params![&name])?
                    .is_some()
                {
                    return Err(StoreError::conflict(format!(
                        "flow {name:?} already exists"
                    )));
                }
                let now = now_ms();
                tx.execute(
                    "INSERT INTO flows (name, definition, enabled, revision, created_ms, updated_ms)
                     VALUES ($1, $2, $3, 1, $4, $4)",
                    params![&name, serde_json::to_string(&def).unwrap(), true, now],
                )?;
                get_tx(tx, &name)
            })
            .await
    }

    /// Replaces the definition of `name` (deployments keep the one they pinned).
    pub async fn update_flow(&self, name: String, def: FlowDef) -> Result<Flow> {
        self.store
            .tx(move |tx| {
                let old = get_tx(tx, &name)?;
                check(tx, &name, &def)?;
                let mut def = def.clone();
                def.name = None;
                if old.definition == def {
                    return Ok(old);
                }
                tx.execute(
                    "UPDATE flows SET definition = $2, revision = revision + 1, updated_ms = $3
                      WHERE name = $1",
                    params![&name, serde_json::to_string(&def).unwrap(), now_ms()],
                )?;
                get_tx(tx, &name)
            })
            .await
    }

    pub async fn get_flow(&self, name: String) -> Result<Flow> {
        self.store.tx(move |tx| get_tx(tx, &name)).await
    }

    /// Every flow, by name.
    pub async fn list_flows(&self) -> Result<Vec<Flow>> {
        self.store
            .tx(|tx| {
                tx.query(&format!("SELECT {COLUMNS} FROM flows ORDER BY name"), &[])?
                    .iter()
                    .map(from_row)
                    .collect()
            })
            .await
    }

    /// Deletes `name` from the registry (deployments that carry it keep their copy).
    pub async fn delete_flow(&self, name: String) -> Result<()> {
        self.store
            .tx(move |tx| {
                get_tx(tx, &name)?;
                tx.execute("DELETE FROM flows WHERE name = $1", params![&name])?;
                Ok(())
            })
            .await
    }

    /// Enables or disables `name`: devices that have it deployed follow at once (a disabled
    /// flow starts no new runs), like a function's enabled flag.
    pub async fn set_flow_enabled(&self, name: String, enabled: bool) -> Result<Flow> {
        let out = self
            .store
            .tx(move |tx| {
                let f = get_tx(tx, &name)?;
                if f.enabled == enabled {
                    return Ok(f);
                }
                tx.execute(
                    "UPDATE flows SET enabled = $2, updated_ms = $3 WHERE name = $1",
                    params![&name, enabled, now_ms()],
                )?;
                get_tx(tx, &name)
            })
            .await?;
        self.changed();
        Ok(out)
    }
}

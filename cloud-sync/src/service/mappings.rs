//! Event-source mappings in the registry (the agent's mapping rules, shared through
//! `protocol::mapping`, docs/agent-api.md). A deployment names the mappings it carries to
//! devices (`deploy create --mapping ID`). A mapping's target is a registry function, or
//! `flow:NAME` (a flow run per event; the qualifier is unused and stays `latest`).

use serde::{Deserialize, Serialize};

use super::functions::ensure_exists;
use super::{Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::names::{parse_target, Qualifier};
use crate::registry::mapping::{
    check_destination, check_mapping_name, check_retries, check_target, Source, FLOW_TARGET,
};
use crate::store::{Row, StoreError, Tx};

/// A stored mapping (the agent API's JSON shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub id: String,
    pub name: String,
    pub function: String,
    pub qualifier: String,
    pub source: Source,
    pub enabled: bool,
    pub retries: u32,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Body of `POST /v1/mappings` and `PATCH /v1/mappings/{id}` (all optional for PATCH; in a
/// PATCH, `null` removes a destination).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingInput {
    pub function: Option<String>,
    pub qualifier: Option<String>,
    pub source: Option<Source>,
    pub name: Option<String>,
    pub retries: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    pub on_success: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub on_failure: Option<Option<String>>,
    pub enabled: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

const COLUMNS: &str =
    "id, name, function, qualifier, source, enabled, retries, on_success, on_failure, created_ms, updated_ms";

fn from_row(r: &Row) -> Result<Mapping> {
    Ok(Mapping {
        id: r.text(0)?,
        name: r.text(1)?,
        function: r.text(2)?,
        qualifier: r.text(3)?,
        source: serde_json::from_str(&r.text(4)?)
            .map_err(|e| StoreError::Db(format!("stored source: {e}")))?,
        enabled: r.bool(5)?,
        retries: r.u32(6)?,
        on_success: r.opt_text(7)?,
        on_failure: r.opt_text(8)?,
        created_ms: r.i64(9)?,
        updated_ms: r.i64(10)?,
    })
}

/// A mapping by id or name.
pub(crate) fn get_tx(tx: &mut dyn Tx, id: &str) -> Result<Mapping> {
    let r = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM mappings WHERE id = $1 OR name = $1"),
            params![id],
        )?
        .ok_or_else(|| StoreError::not_found(format!("no mapping {id}")))?;
    from_row(&r)
}

/// Checks a complete mapping and the uniqueness of its name and HTTP path.
fn check(tx: &mut dyn Tx, m: &Mapping) -> Result<()> {
    let invalid = |e: String| StoreError::invalid(e);
    check_target(&m.function).map_err(invalid)?;
    Qualifier::parse(&m.qualifier).map_err(invalid)?;
    m.source.validate().map_err(invalid)?;
    check_retries(m.retries).map_err(invalid)?;
    if m.name != m.id {
        check_mapping_name(&m.name).map_err(invalid)?;
    }
    if let Some(r) = tx.query_opt(
        "SELECT id FROM mappings WHERE name = $1 AND id <> $2",
        params![&m.name, &m.id],
    )? {
        return Err(StoreError::conflict(format!(
            "mapping name {} is taken by {}",
            m.name,
            r.text(0)?
        )));
    }
    if let Some(path) = m.source.http_path() {
        if let Some(r) = tx.query_opt(
            "SELECT id FROM mappings WHERE http_path = $1 AND id <> $2",
            params![path, &m.id],
        )? {
            return Err(StoreError::conflict(format!(
                "HTTP path {path} is mapped by {}",
                r.text(0)?
            )));
        }
    }
    Ok(())
}

fn write(tx: &mut dyn Tx, m: &Mapping, insert: bool) -> Result<()> {
    let source = serde_json::to_string(&m.source).unwrap();
    let sql = if insert {
        "INSERT INTO mappings (id, name, function, qualifier, source, http_path, enabled, retries,
                               on_success, on_failure, created_ms, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    } else {
        "UPDATE mappings SET name = $2, function = $3, qualifier = $4, source = $5, http_path = $6,
                enabled = $7, retries = $8, on_success = $9, on_failure = $10, created_ms = $11,
                updated_ms = $12 WHERE id = $1"
    };
    tx.execute(
        sql,
        params![
            &m.id,
            &m.name,
            &m.function,
            &m.qualifier,
            source,
            m.source.http_path(),
            m.enabled,
            m.retries,
            m.on_success.clone(),
            m.on_failure.clone(),
            m.created_ms,
            m.updated_ms
        ],
    )?;
    Ok(())
}

/// The mapped function must be in the registry. A flow target (`flow:NAME`) is not checked
/// here: the flow may be one the cloud deploys or one made locally on the device; a device
/// without it fails the mapping's deliveries like an unknown function.
fn ensure_target(tx: &mut dyn Tx, target: &str) -> Result<()> {
    if target.starts_with(FLOW_TARGET) {
        return Ok(());
    }
    ensure_exists(tx, target)
}

fn destination(d: Option<String>) -> Result<Option<String>> {
    d.map(|d| check_destination(&d).map_err(StoreError::invalid))
        .transpose()
}

impl Service {
    pub async fn create_mapping(&self, input: MappingInput) -> Result<Mapping> {
        let target = input
            .function
            .clone()
            .ok_or_else(|| StoreError::bad_request("missing field `function`"))?;
        let source = input
            .source
            .clone()
            .ok_or_else(|| StoreError::bad_request("missing field `source`"))?;
        let flow = target.starts_with(FLOW_TARGET);
        let (function, qualifier) = match (target.split_once(':'), &input.qualifier) {
            _ if flow => (target.clone(), "latest".to_string()),
            (Some(_), Some(_)) => {
                return Err(StoreError::invalid(
                    "give the qualifier in `function` or in `qualifier`, not both",
                ))
            }
            (Some(_), None) => {
                let (f, q) = parse_target(&target).map_err(StoreError::invalid)?;
                (f, q.to_string())
            }
            (None, q) => (target.clone(), q.clone().unwrap_or_else(|| "latest".into())),
        };
        let id = format!("m-{}", ulid::Ulid::new());
        let now = now_ms();
        let m = Mapping {
            name: input.name.clone().unwrap_or_else(|| id.clone()),
            id,
            function,
            qualifier,
            source,
            enabled: input.enabled.unwrap_or(true),
            retries: input.retries.unwrap_or(2),
            on_success: destination(input.on_success.clone().flatten())?,
            on_failure: destination(input.on_failure.clone().flatten())?,
            created_ms: now,
            updated_ms: now,
        };
        self.store
            .tx(move |tx| {
                check(tx, &m)?;
                ensure_target(tx, &m.function)?;
                write(tx, &m, true)?;
                Ok(m.clone())
            })
            .await
    }

    pub async fn update_mapping(&self, id: String, input: MappingInput) -> Result<Mapping> {
        let on_success = input.on_success.clone().map(destination).transpose()?;
        let on_failure = input.on_failure.clone().map(destination).transpose()?;
        let out = self
            .store
            .tx(move |tx| {
                let mut m = get_tx(tx, &id)?;
                if let Some(f) = &input.function {
                    match f.split_once(':') {
                        _ if f.starts_with(FLOW_TARGET) => {
                            m.function = f.clone();
                            m.qualifier = "latest".into();
                        }
                        Some(_) => {
                            let (f, q) = parse_target(f).map_err(StoreError::invalid)?;
                            m.function = f;
                            m.qualifier = q.to_string();
                        }
                        None => m.function = f.clone(),
                    }
                    ensure_target(tx, &m.function)?;
                }
                if let Some(q) = &input.qualifier {
                    m.qualifier = q.clone();
                }
                if let Some(s) = &input.source {
                    m.source = s.clone();
                }
                if let Some(n) = &input.name {
                    m.name = n.clone();
                }
                if let Some(r) = input.retries {
                    m.retries = r;
                }
                if let Some(d) = &on_success {
                    m.on_success = d.clone();
                }
                if let Some(d) = &on_failure {
                    m.on_failure = d.clone();
                }
                if let Some(e) = input.enabled {
                    m.enabled = e;
                }
                m.updated_ms = now_ms();
                check(tx, &m)?;
                write(tx, &m, false)?;
                Ok(m)
            })
            .await?;
        self.changed();
        Ok(out)
    }

    pub async fn get_mapping(&self, id: String) -> Result<Mapping> {
        self.store.tx(move |tx| get_tx(tx, &id)).await
    }

    pub async fn list_mappings(&self, function: Option<String>) -> Result<Vec<Mapping>> {
        self.store
            .tx(move |tx| {
                let rows = match &function {
                    Some(f) => tx.query(
                        &format!("SELECT {COLUMNS} FROM mappings WHERE function = $1 ORDER BY id"),
                        params![f],
                    )?,
                    None => {
                        tx.query(&format!("SELECT {COLUMNS} FROM mappings ORDER BY id"), &[])?
                    }
                };
                rows.iter().map(from_row).collect()
            })
            .await
    }

    pub async fn delete_mapping(&self, id: String) -> Result<()> {
        self.store
            .tx(move |tx| {
                let m = get_tx(tx, &id)?;
                tx.execute("DELETE FROM mappings WHERE id = $1", params![&m.id])?;
                Ok(())
            })
            .await
    }
}

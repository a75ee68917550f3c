//! Functions: create, update `latest`, publish (a signed manifest), get, list, enable/disable,
//! delete (a function or one version), with the agent's rules (docs/agent-api.md).

use serde::{Deserialize, Serialize};

use super::{aliases, signing, Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::names::check_name;
use crate::protocol::{Context, Manifest, Signed};
use crate::registry::spec::validate_spec;
use crate::store::{Row, StoreError, Tx};

/// One line of `function list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSummary {
    pub name: String,
    pub enabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub latest_sha256: String,
    pub latest_size: u64,
    pub versions: u32,
    pub aliases: u32,
    pub last_version: Option<u32>,
}

/// `latest` of a function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    pub sha256: String,
    pub size: u64,
    pub spec: String,
    pub revision: u64,
}

/// A published version with its signed manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u32,
    pub sha256: String,
    pub size: u64,
    pub spec: String,
    pub description: String,
    pub created_ms: i64,
    pub manifest: Signed<Manifest>,
}

/// Everything `function get` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDetail {
    pub name: String,
    pub enabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub latest: Latest,
    pub versions: Vec<VersionInfo>,
    pub aliases: Vec<aliases::AliasInfo>,
}

/// What `publish` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub version: u32,
    /// False when `latest` equals the newest version, which is returned instead.
    pub created: bool,
}

/// Refuses what is not a WebAssembly binary module (the device validates it fully; a module
/// whose init fails there is rolled back).
pub fn check_module(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(StoreError::invalid(
            "bad module: not a WebAssembly binary (no `\\0asm` header)",
        ));
    }
    if bytes[4..8] != [1, 0, 0, 0] {
        return Err(StoreError::invalid(
            "bad module: not a core WebAssembly module (version 1); components are not supported",
        ));
    }
    Ok(())
}

const SUMMARY: &str =
    "SELECT f.name, f.enabled, f.created_ms, f.updated_ms, f.latest_sha256, a.size,
    (SELECT count(*) FROM versions v WHERE v.function = f.name),
    (SELECT count(*) FROM aliases x WHERE x.function = f.name), f.last_version,
    f.latest_spec, f.latest_revision
    FROM functions f JOIN artifacts a ON a.sha256 = f.latest_sha256";

fn summary_from(r: &Row) -> Result<FunctionSummary> {
    let last = r.u32(8)?;
    Ok(FunctionSummary {
        name: r.text(0)?,
        enabled: r.bool(1)?,
        created_ms: r.i64(2)?,
        updated_ms: r.i64(3)?,
        latest_sha256: r.text(4)?,
        latest_size: r.u64(5)?,
        versions: r.u32(6)?,
        aliases: r.u32(7)?,
        last_version: (last > 0).then_some(last),
    })
}

pub(crate) fn unknown_function(name: &str) -> StoreError {
    StoreError::not_found(format!("no function {name}"))
}

pub(crate) fn ensure_exists(tx: &mut dyn Tx, name: &str) -> Result<()> {
    match tx.query_opt("SELECT 1 FROM functions WHERE name = $1", params![name])? {
        Some(_) => Ok(()),
        None => Err(unknown_function(name)),
    }
}

pub(crate) fn touch(tx: &mut dyn Tx, name: &str) -> Result<()> {
    tx.execute(
        "UPDATE functions SET updated_ms = $2 WHERE name = $1",
        params![name, now_ms()],
    )?;
    Ok(())
}

fn record_artifact(tx: &mut dyn Tx, sha: &str, size: usize) -> Result<()> {
    tx.execute(
        "INSERT INTO artifacts (sha256, size, created_ms) VALUES ($1, $2, $3)
         ON CONFLICT (sha256) DO NOTHING",
        params![sha, size as i64, now_ms()],
    )?;
    Ok(())
}

fn version_from(r: &Row) -> Result<VersionInfo> {
    let manifest: Signed<Manifest> = serde_json::from_str(&r.text(6)?)
        .map_err(|e| StoreError::Db(format!("stored manifest: {e}")))?;
    Ok(VersionInfo {
        version: r.u32(0)?,
        sha256: r.text(1)?,
        size: r.u64(2)?,
        spec: r.text(3)?,
        description: r.text(4)?,
        created_ms: r.i64(5)?,
        manifest,
    })
}

const VERSION_COLUMNS: &str = "version, sha256, size, spec, description, created_ms, manifest";

pub(crate) fn get_version_tx(tx: &mut dyn Tx, function: &str, version: u32) -> Result<VersionInfo> {
    match tx.query_opt(
        &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 AND version = $2"),
        params![function, version],
    )? {
        Some(r) => version_from(&r),
        None => {
            ensure_exists(tx, function)?;
            Err(StoreError::not_found(format!(
                "{function} has no version {version}"
            )))
        }
    }
}

fn detail_tx(tx: &mut dyn Tx, name: &str) -> Result<FunctionDetail> {
    let r = tx
        .query_opt(&format!("{SUMMARY} WHERE f.name = $1"), params![name])?
        .ok_or_else(|| unknown_function(name))?;
    let s = summary_from(&r)?;
    let latest = Latest {
        sha256: s.latest_sha256.clone(),
        size: s.latest_size,
        spec: r.text(9)?,
        revision: r.u64(10)?,
    };
    let versions = tx
        .query(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 ORDER BY version"),
            params![name],
        )?
        .iter()
        .map(version_from)
        .collect::<Result<Vec<_>>>()?;
    let aliases = aliases::list_tx(tx, name)?;
    Ok(FunctionDetail {
        name: s.name,
        enabled: s.enabled,
        created_ms: s.created_ms,
        updated_ms: s.updated_ms,
        latest,
        versions,
        aliases,
    })
}

/// Deployments (not rolled back or cancelled before release) that hold `function` (and
/// `version`, if given): a version they hold may not be deleted.
fn deployments_using(tx: &mut dyn Tx, function: &str, version: Option<u32>) -> Result<Vec<String>> {
    let rows = tx.query(
        "SELECT id, content FROM deployments WHERE status <> 'rolled_back' ORDER BY created_ms, id",
        &[],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let content: super::deployments::Content = serde_json::from_str(&r.text(1)?)
            .map_err(|e| StoreError::Db(format!("stored deployment: {e}")))?;
        if content
            .functions
            .iter()
            .any(|f| f.name == function && version.is_none_or(|v| f.versions.contains(&v)))
        {
            out.push(r.text(0)?);
        }
    }
    Ok(out)
}

impl Service {
    pub async fn create_function(
        &self,
        name: String,
        module: Vec<u8>,
        spec: String,
    ) -> Result<FunctionDetail> {
        check_name(&name).map_err(StoreError::invalid)?;
        check_module(&module)?;
        validate_spec(&spec).map_err(StoreError::invalid)?;
        let sha = self.artifacts.put(&module)?;
        let size = module.len();
        self.store
            .tx(move |tx| {
                if tx
                    .query_opt("SELECT 1 FROM functions WHERE name = $1", params![&name])?
                    .is_some()
                {
                    return Err(StoreError::conflict(format!(
                        "function {name} already exists"
                    )));
                }
                record_artifact(tx, &sha, size)?;
                let now = now_ms();
                tx.execute(
                    "INSERT INTO functions (name, enabled, created_ms, updated_ms, latest_sha256,
                                            latest_spec, latest_revision, last_version)
                     VALUES ($1, 1, $2, $2, $3, $4, 1, 0)",
                    params![&name, now, &sha, &spec],
                )?;
                detail_tx(tx, &name)
            })
            .await
    }

    /// Replaces the module and/or spec of `latest`.
    pub async fn update_function(
        &self,
        name: String,
        module: Option<Vec<u8>>,
        spec: Option<String>,
    ) -> Result<FunctionDetail> {
        if let Some(m) = &module {
            check_module(m)?;
        }
        if let Some(s) = &spec {
            validate_spec(s).map_err(StoreError::invalid)?;
        }
        let new = match &module {
            Some(m) => Some((self.artifacts.put(m)?, m.len())),
            None => None,
        };
        self.store
            .tx(move |tx| {
                let r = tx
                    .query_opt("SELECT latest_sha256, latest_spec FROM functions WHERE name = $1", params![&name])?
                    .ok_or_else(|| unknown_function(&name))?;
                let (old_sha, old_spec) = (r.text(0)?, r.text(1)?);
                let sha = new.as_ref().map_or(old_sha.clone(), |(s, _)| s.clone());
                let spec = spec.clone().unwrap_or(old_spec.clone());
                if sha != old_sha || spec != old_spec {
                    if let Some((s, size)) = &new {
                        record_artifact(tx, s, *size)?;
                    }
                    tx.execute(
                        "UPDATE functions SET latest_sha256 = $2, latest_spec = $3,
                                latest_revision = latest_revision + 1, updated_ms = $4 WHERE name = $1",
                        params![&name, &sha, &spec, now_ms()],
                    )?;
                }
                detail_tx(tx, &name)
            })
            .await
    }

    /// Publishes `latest` as the next version and signs its manifest with the active signing key.
    pub async fn publish(&self, name: String, description: String) -> Result<Published> {
        self.store
            .tx(move |tx| {
                let r = tx
                    .query_opt(
                        "SELECT f.latest_sha256, f.latest_spec, a.size FROM functions f
                           JOIN artifacts a ON a.sha256 = f.latest_sha256 WHERE f.name = $1",
                        params![&name],
                    )?
                    .ok_or_else(|| unknown_function(&name))?;
                let (sha, spec, size) = (r.text(0)?, r.text(1)?, r.u64(2)?);
                if let Some(n) = tx.query_opt(
                    "SELECT version, sha256, spec FROM versions WHERE function = $1 ORDER BY version DESC LIMIT 1",
                    params![&name],
                )? {
                    if n.text(1)? == sha && n.text(2)? == spec {
                        return Ok(Published { version: n.u32(0)?, created: false });
                    }
                }
                // The row update serializes concurrent publishes (also across replicas).
                let version = tx
                    .query_one(
                        "UPDATE functions SET last_version = last_version + 1, updated_ms = $2
                          WHERE name = $1 RETURNING last_version",
                        params![&name, now_ms()],
                    )?
                    .u32(0)?;
                let now = now_ms();
                let manifest = Manifest {
                    function: name.clone(),
                    version,
                    sha256: sha.clone(),
                    size,
                    spec: spec.clone(),
                    description: description.clone(),
                    published_ms: now,
                };
                let (key_id, key) = signing::active_key(tx)?;
                let signed = Signed::sign(&manifest, Context::Manifest, &key_id, &key);
                tx.execute(
                    "INSERT INTO versions (function, version, sha256, size, spec, description, created_ms, manifest)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    params![&name, version, &sha, size, &spec, &description, now, serde_json::to_string(&signed).unwrap()],
                )?;
                Ok(Published { version, created: true })
            })
            .await
    }

    pub async fn get_function(&self, name: String) -> Result<FunctionDetail> {
        self.store.tx(move |tx| detail_tx(tx, &name)).await
    }

    pub async fn list_functions(&self) -> Result<Vec<FunctionSummary>> {
        self.store
            .tx(|tx| {
                tx.query(&format!("{SUMMARY} ORDER BY f.name"), &[])?
                    .iter()
                    .map(summary_from)
                    .collect()
            })
            .await
    }

    pub async fn get_version(&self, name: String, version: u32) -> Result<VersionInfo> {
        self.store
            .tx(move |tx| get_version_tx(tx, &name, version))
            .await
    }

    pub async fn set_enabled(&self, name: String, enabled: bool) -> Result<FunctionDetail> {
        let out = self
            .store
            .tx(move |tx| {
                ensure_exists(tx, &name)?;
                tx.execute(
                    "UPDATE functions SET enabled = $2, updated_ms = $3 WHERE name = $1",
                    params![&name, enabled, now_ms()],
                )?;
                detail_tx(tx, &name)
            })
            .await?;
        self.changed();
        Ok(out)
    }

    /// Deletes a function with its versions and aliases; refused while a deployment holds it.
    pub async fn delete_function(&self, name: String) -> Result<()> {
        self.store
            .tx(move |tx| {
                ensure_exists(tx, &name)?;
                let using = deployments_using(tx, &name, None)?;
                if !using.is_empty() {
                    return Err(StoreError::conflict(format!(
                        "function {name} is deployed by {}: deploy without it first",
                        using.join(", ")
                    )));
                }
                tx.execute("DELETE FROM aliases WHERE function = $1", params![&name])?;
                tx.execute("DELETE FROM versions WHERE function = $1", params![&name])?;
                tx.execute("DELETE FROM functions WHERE name = $1", params![&name])?;
                Ok(())
            })
            .await
    }

    /// Deletes one version; refused while an alias or a deployment uses it.
    pub async fn delete_version(&self, name: String, version: u32) -> Result<()> {
        self.store
            .tx(move |tx| {
                get_version_tx(tx, &name, version)?;
                let aliases: Vec<String> = tx
                    .query(
                        "SELECT name FROM aliases WHERE function = $1 AND (version = $2 OR also_version = $2) ORDER BY name",
                        params![&name, version],
                    )?
                    .iter()
                    .map(|r| r.text(0))
                    .collect::<Result<_>>()?;
                if !aliases.is_empty() {
                    return Err(StoreError::conflict(format!(
                        "version {version} of {name} is used by alias(es) {}",
                        aliases.join(", ")
                    )));
                }
                let using = deployments_using(tx, &name, Some(version))?;
                if !using.is_empty() {
                    return Err(StoreError::conflict(format!(
                        "version {version} of {name} is deployed by {}",
                        using.join(", ")
                    )));
                }
                tx.execute("DELETE FROM versions WHERE function = $1 AND version = $2", params![&name, version])?;
                touch(tx, &name)
            })
            .await
    }
}

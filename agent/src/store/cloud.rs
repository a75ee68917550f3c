//! Cloud-managed state (V3): activating a verified desired state in one transaction, rolling it
//! back to the last good one, and what status reports need.
//!
//! The sync actor (`crate::sync`) verifies and stages a document; here it becomes rows:
//! functions, versions, aliases and mappings with `origin = 'cloud'`, written in ONE write
//! transaction together with the `cloud_states` slots, so a crash (even `kill -9`) leaves the
//! old state or the new one, never a mix (flows too, `cloud_flows.rs`). Names the cloud wants
//! that a local function, mapping or flow already has are refused ([`StoreError::CloudConflict`]), never overwritten.
//!
//! Slots: `current` is the state the device runs (health `pending` until its health window
//! passed, then `healthy`); `previous` is the last healthy state before it, whose modules are
//! pinned (`module_pins`) so a rollback needs no download. A rollback writes `previous` back in
//! one transaction and records the failed deployment (`cloud_failures`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

pub use super::cloud_flows::CloudFlow;
use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::functions::Origin;
use super::logs::lifecycle;
use super::mappings::{self, Destination, Mapping, Source};
use super::modules;
use super::queue;

/// Meta key: the highest desired-state sequence ever activated (never goes backwards).
const SEQUENCE_KEY: &str = "cloud.sequence";
/// Meta key: the signing key of that document.
const KEY_ID_KEY: &str = "cloud.key_id";
/// Meta key: the device id the sequence belongs to.
const DEVICE_KEY: &str = "cloud.device";
/// Failed deployments kept for status reports.
const MAX_FAILURES: i64 = 32;

/// A desired state as the device keeps it (from a verified document).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudState {
    pub sequence: u64,
    pub key_id: String,
    pub functions: Vec<CloudFunction>,
    pub mappings: Vec<CloudMapping>,
    /// Cloud-managed flows (`store/cloud_flows.rs`); states stored before flows had none.
    #[serde(default)]
    pub flows: Vec<CloudFlow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudFunction {
    pub name: String,
    pub enabled: bool,
    pub deployment: String,
    /// Ascending version numbers.
    pub versions: Vec<CloudVersion>,
    pub aliases: Vec<CloudAlias>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudVersion {
    pub version: u32,
    pub sha256: String,
    pub size: u64,
    pub spec: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudAlias {
    pub name: String,
    pub version: u32,
    pub also_version: Option<u32>,
    pub weight: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudMapping {
    pub id: String,
    pub name: String,
    pub function: String,
    pub qualifier: String,
    pub source: Source,
    pub enabled: bool,
    pub retries: u32,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
    pub deployment: String,
}

impl CloudState {
    /// Every module sha256 the state refers to.
    pub fn modules(&self) -> BTreeSet<String> {
        self.functions
            .iter()
            .flat_map(|f| f.versions.iter().map(|v| v.sha256.clone()))
            .collect()
    }

    /// The deployments that brought its functions, mappings and flows.
    pub fn deployments(&self) -> BTreeSet<String> {
        self.functions
            .iter()
            .map(|f| f.deployment.clone())
            .chain(self.mappings.iter().map(|m| m.deployment.clone()))
            .chain(self.flows.iter().map(|f| f.deployment.clone()))
            .collect()
    }

    /// `(function, version, sha256)` of every version.
    pub fn versions(&self) -> BTreeSet<(String, u32, String)> {
        self.functions
            .iter()
            .flat_map(|f| {
                f.versions
                    .iter()
                    .map(|v| (f.name.clone(), v.version, v.sha256.clone()))
            })
            .collect()
    }

    /// The same content (sequence and key aside).
    pub fn same_content(&self, other: &CloudState) -> bool {
        self.functions == other.functions
            && self.mappings == other.mappings
            && self.flows == other.flows
    }
}

/// Health of the current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Its health window is running.
    Pending,
    Healthy,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Healthy => "healthy",
        }
    }
}

/// One slot of `cloud_states`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudSlot {
    pub state: CloudState,
    pub activated_ms: i64,
    pub health: Health,
}

/// A deployment rolled back on this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudFailure {
    pub deployment: String,
    pub error: String,
    pub sequence: u64,
    pub failed_ms: i64,
}

/// What an activation or rollback changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudApplied {
    /// Functions created, changed or removed (their pools are stale).
    pub functions: Vec<String>,
}

fn read_slot(tx: &Transaction<'_>, slot: &str) -> Result<Option<CloudSlot>> {
    let row: Option<(String, i64, String)> = tx
        .prepare_cached("SELECT state, activated_ms, health FROM cloud_states WHERE slot = ?1")?
        .query_row([slot], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(json, activated_ms, health)| {
        let state = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("cloud_states {slot}: {e}")))?;
        Ok(CloudSlot {
            state,
            activated_ms,
            health: if health == "healthy" {
                Health::Healthy
            } else {
                Health::Pending
            },
        })
    })
    .transpose()
}

fn write_slot(tx: &Transaction<'_>, slot: &str, s: Option<&CloudSlot>) -> Result<()> {
    match s {
        None => {
            tx.prepare_cached("DELETE FROM cloud_states WHERE slot = ?1")?
                .execute([slot])?;
        }
        Some(s) => {
            tx.prepare_cached(
                "INSERT INTO cloud_states (slot, sequence, state, activated_ms, health)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (slot) DO UPDATE SET sequence = ?2, state = ?3, activated_ms = ?4,
                        health = ?5",
            )?
            .execute(params![
                slot,
                s.state.sequence,
                serde_json::to_string(&s.state).expect("CloudState serialises"),
                s.activated_ms,
                s.health.as_str()
            ])?;
        }
    }
    Ok(())
}

fn meta_get(tx: &Transaction<'_>, key: &str) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn meta_put(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = ?2",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn origin_of(tx: &Transaction<'_>, name: &str) -> Result<Option<Origin>> {
    Ok(tx
        .prepare_cached("SELECT origin FROM functions WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn module_exists(tx: &Transaction<'_>, sha: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM modules WHERE sha256 = ?1")?
        .query_row([sha], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Removes a cloud function with its versions, aliases and kv entries.
fn remove_function(tx: &Transaction<'_>, name: &str) -> Result<()> {
    for sql in [
        "DELETE FROM kv WHERE function = ?1",
        "DELETE FROM aliases WHERE function = ?1",
        "DELETE FROM versions WHERE function = ?1",
        "DELETE FROM functions WHERE name = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([name])?;
    }
    lifecycle(tx, name, None, "cloud: function removed")
}

/// Makes the cloud-managed rows exactly `state`. Refuses names local functions or mappings hold.
/// `staged` holds module bytes not yet in the store.
fn write_state(
    tx: &Transaction<'_>,
    state: &CloudState,
    staged: &HashMap<String, Vec<u8>>,
    why: &str,
) -> Result<CloudApplied> {
    let mut changed = Vec::new();
    // Conflicts first, so a refused state writes nothing.
    for f in &state.functions {
        if origin_of(tx, &f.name)? == Some(Origin::Local) {
            return Err(StoreError::CloudConflict(format!(
                "function {} exists on this device as a local function; the cloud-managed one \
                 is refused (delete or rename the local one)",
                f.name
            )));
        }
        for v in &f.versions {
            if !staged.contains_key(&v.sha256) && !module_exists(tx, &v.sha256)? {
                return Err(StoreError::CloudConflict(format!(
                    "module {} of {} version {} is not staged",
                    v.sha256, f.name, v.version
                )));
            }
        }
    }
    for m in &state.mappings {
        let local: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM mappings WHERE origin = 'local' AND (id = ?1 OR name = ?2)",
            )?
            .query_row(params![m.id, m.name], |r| r.get(0))
            .optional()?;
        if let Some(id) = local {
            return Err(StoreError::CloudConflict(format!(
                "mapping {} ({}) collides with the local mapping {id}; the cloud-managed one is \
                 refused",
                m.id, m.name
            )));
        }
        if let Source::Http { path } = &m.source {
            let local: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM mappings WHERE origin = 'local' AND source_kind = 'http'
                       AND json_extract(source, '$.path') = ?1",
                )?
                .query_row([path], |r| r.get(0))
                .optional()?;
            if let Some(id) = local {
                return Err(StoreError::CloudConflict(format!(
                    "mapping {}: HTTP path {path} is mapped by the local mapping {id}",
                    m.id
                )));
            }
        }
    }

    super::cloud_flows::check_conflicts(tx, &state.flows)?;

    // Mappings that go away first (they may name functions that go away).
    let wanted_mappings: BTreeSet<&str> = state.mappings.iter().map(|m| m.id.as_str()).collect();
    let old_mappings: Vec<(String, String)> = tx
        .prepare_cached("SELECT id, function FROM mappings WHERE origin = 'cloud'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, function) in &old_mappings {
        if !wanted_mappings.contains(id.as_str()) {
            queue::delete_target(tx, &queue::mapping_target(id))?;
            tx.prepare_cached("DELETE FROM mappings WHERE id = ?1")?
                .execute([id])?;
            lifecycle(
                tx,
                function,
                None,
                &format!("cloud: mapping {id} removed ({why})"),
            )?;
        }
    }

    // Functions.
    let wanted: BTreeSet<&str> = state.functions.iter().map(|f| f.name.as_str()).collect();
    let old_cloud: Vec<String> = tx
        .prepare_cached("SELECT name FROM functions WHERE origin = 'cloud'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in &old_cloud {
        if !wanted.contains(name.as_str()) {
            remove_function(tx, name)?;
            changed.push(name.clone());
        }
    }
    let now = now_ms();
    for f in &state.functions {
        for v in &f.versions {
            if let Some(bytes) = staged.get(&v.sha256) {
                modules::put(tx, bytes)?;
            }
        }
        let Some(newest) = f.versions.iter().max_by_key(|v| v.version) else {
            return Err(StoreError::CloudConflict(format!(
                "function {} has no version",
                f.name
            )));
        };
        let exists = origin_of(tx, &f.name)?.is_some();
        let mut what = Vec::new();
        if !exists {
            tx.prepare_cached(
                "INSERT INTO functions (name, enabled, origin, created_ms, updated_ms,
                                        latest_sha256, latest_spec, latest_revision, last_version)
                 VALUES (?1, ?2, 'cloud', ?3, ?3, ?4, ?5, 1, ?6)",
            )?
            .execute(params![
                f.name,
                f.enabled,
                now,
                newest.sha256,
                newest.spec,
                newest.version
            ])?;
            what.push("created".to_string());
        } else {
            let (sha, spec, enabled): (String, String, bool) = tx
                .prepare_cached(
                    "SELECT latest_sha256, latest_spec, enabled FROM functions WHERE name = ?1",
                )?
                .query_row([&f.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            if sha != newest.sha256 || spec != newest.spec {
                tx.prepare_cached(
                    "UPDATE functions SET latest_sha256 = ?2, latest_spec = ?3,
                            latest_revision = latest_revision + 1, updated_ms = ?4
                      WHERE name = ?1",
                )?
                .execute(params![f.name, newest.sha256, newest.spec, now])?;
                what.push(format!("latest = version {}", newest.version));
            }
            if enabled != f.enabled {
                tx.prepare_cached(
                    "UPDATE functions SET enabled = ?2, updated_ms = ?3 WHERE name = ?1",
                )?
                .execute(params![f.name, f.enabled, now])?;
                what.push(if f.enabled { "enabled" } else { "disabled" }.into());
            }
            tx.prepare_cached(
                "UPDATE functions SET last_version = max(last_version, ?2) WHERE name = ?1",
            )?
            .execute(params![f.name, newest.version])?;
        }
        // Aliases are rewritten (they may point at versions that go away).
        let old_aliases: Vec<(String, u32, Option<u32>, Option<f64>)> = tx
            .prepare_cached(
                "SELECT name, version, also_version, weight FROM aliases WHERE function = ?1
                  ORDER BY name",
            )?
            .query_map([&f.name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        tx.prepare_cached("DELETE FROM aliases WHERE function = ?1")?
            .execute([&f.name])?;
        let old_versions: BTreeMap<u32, (String, String)> = tx
            .prepare_cached("SELECT version, sha256, spec FROM versions WHERE function = ?1")?
            .query_map([&f.name], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
            .collect::<rusqlite::Result<_>>()?;
        for (version, (sha, spec)) in &old_versions {
            let keep = f
                .versions
                .iter()
                .any(|v| v.version == *version && &v.sha256 == sha && &v.spec == spec);
            if !keep {
                tx.prepare_cached("DELETE FROM versions WHERE function = ?1 AND version = ?2")?
                    .execute(params![f.name, version])?;
                what.push(format!("version {version} removed"));
            }
        }
        for v in &f.versions {
            let present = old_versions
                .get(&v.version)
                .is_some_and(|(sha, spec)| sha == &v.sha256 && spec == &v.spec);
            if !present {
                tx.prepare_cached(
                    "INSERT INTO versions (function, version, sha256, spec, description, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    f.name,
                    v.version,
                    v.sha256,
                    v.spec,
                    v.description,
                    now
                ])?;
                what.push(format!("version {} ({})", v.version, &v.sha256[..12]));
            }
        }
        let mut new_aliases = Vec::new();
        for a in &f.aliases {
            if a.also_version.is_some() != a.weight.is_some()
                || a.weight.is_some_and(|w| !(0.0..=1.0).contains(&w))
            {
                return Err(StoreError::CloudConflict(format!(
                    "alias {}:{}: bad weight",
                    f.name, a.name
                )));
            }
            tx.prepare_cached(
                "INSERT INTO aliases (function, name, version, also_version, weight, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                f.name,
                a.name,
                a.version,
                a.also_version,
                a.weight,
                now
            ])?;
            new_aliases.push((a.name.clone(), a.version, a.also_version, a.weight));
        }
        new_aliases.sort_by(|a, b| a.0.cmp(&b.0));
        if new_aliases != old_aliases {
            let text: Vec<String> = new_aliases
                .iter()
                .map(|(n, v, also, w)| match (also, w) {
                    (Some(a), Some(w)) => format!("{n} -> {v} ({:.1}% to {a})", w * 100.0),
                    _ => format!("{n} -> {v}"),
                })
                .collect();
            what.push(format!("aliases [{}]", text.join(", ")));
        }
        if !what.is_empty() {
            tx.prepare_cached("UPDATE functions SET updated_ms = ?2 WHERE name = ?1")?
                .execute(params![f.name, now])?;
            lifecycle(
                tx,
                &f.name,
                None,
                &format!(
                    "cloud: {} (deployment {}, {why})",
                    what.join(", "),
                    f.deployment
                ),
            )?;
            changed.push(f.name.clone());
        }
    }

    // Flows (mappings may target them).
    super::cloud_flows::write_flows(tx, &state.flows, why)?;

    // Mappings: upsert by id, keeping their queued events.
    for cm in &state.mappings {
        let old: Option<Mapping> = mappings::find(tx, &cm.id)?.filter(|m| m.id == cm.id);
        let m = Mapping {
            id: cm.id.clone(),
            name: cm.name.clone(),
            function: cm.function.clone(),
            qualifier: cm.qualifier.clone(),
            source: cm.source.clone(),
            enabled: cm.enabled,
            retries: cm.retries,
            on_success: cm.on_success.clone(),
            on_failure: cm.on_failure.clone(),
            created_ms: old.as_ref().map_or(now, |o| o.created_ms),
            updated_ms: now,
        };
        if let Some(o) = &old {
            let same = Mapping {
                updated_ms: o.updated_ms,
                ..m.clone()
            };
            if &same == o {
                continue;
            }
        }
        mappings::validate(tx, &m)?;
        mappings::write_row(tx, &m, old.is_none())?;
        tx.prepare_cached("UPDATE mappings SET origin = 'cloud' WHERE id = ?1")?
            .execute([&m.id])?;
        lifecycle(
            tx,
            &m.function,
            None,
            &format!(
                "cloud: mapping {} ({}) {}: {} -> {} (deployment {}, {why})",
                m.id,
                m.name,
                if old.is_none() { "created" } else { "updated" },
                m.source,
                m.target(),
                cm.deployment
            ),
        )?;
    }
    mappings::bump_revision(tx)?;
    Ok(CloudApplied { functions: changed })
}

/// Pins the modules of `previous` and drops every module nothing refers to any more.
fn repin_and_collect(tx: &Transaction<'_>, previous: Option<&CloudState>) -> Result<()> {
    tx.execute("DELETE FROM module_pins", [])?;
    if let Some(p) = previous {
        for sha in p.modules() {
            tx.prepare_cached("INSERT OR IGNORE INTO module_pins (sha256) VALUES (?1)")?
                .execute([&sha])?;
        }
    }
    tx.execute(
        "DELETE FROM modules
          WHERE NOT EXISTS (SELECT 1 FROM functions f WHERE f.latest_sha256 = modules.sha256)
            AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.sha256 = modules.sha256)
            AND NOT EXISTS (SELECT 1 FROM module_pins p WHERE p.sha256 = modules.sha256)",
        [],
    )?;
    Ok(())
}

impl Store {
    /// The highest desired-state sequence activated, and its signing key (`None` before the
    /// first activation).
    pub fn cloud_sequence(&self) -> Result<Option<(u64, String)>> {
        self.read(|tx| {
            let Some(seq) = meta_get(tx, SEQUENCE_KEY)? else {
                return Ok(None);
            };
            let seq = seq
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("{SEQUENCE_KEY} is {seq:?}")))?;
            Ok(Some((seq, meta_get(tx, KEY_ID_KEY)?.unwrap_or_default())))
        })
    }

    /// Binds the cloud state to `device`. After an enrollment as another device (`enroll
    /// --force`), forgets the old device's sequence, key and failures (its functions stay until
    /// the new device's first document replaces them) and returns `true`.
    pub fn cloud_bind_device(&self, device: &str) -> Result<bool> {
        self.write(|tx| {
            let old = meta_get(tx, DEVICE_KEY)?;
            if old.as_deref() == Some(device) {
                return Ok(false);
            }
            let rebound = old.is_some();
            if rebound {
                tx.execute(
                    "DELETE FROM meta WHERE key IN (?1, ?2)",
                    [SEQUENCE_KEY, KEY_ID_KEY],
                )?;
                tx.execute("DELETE FROM cloud_failures", [])?;
            }
            meta_put(tx, DEVICE_KEY, device)?;
            Ok(rebound)
        })
    }

    /// The `current` and `previous` slots.
    pub fn cloud_slots(&self) -> Result<(Option<CloudSlot>, Option<CloudSlot>)> {
        self.read(|tx| Ok((read_slot(tx, "current")?, read_slot(tx, "previous")?)))
    }

    /// Deployments rolled back on this device, newest first.
    pub fn cloud_failures(&self) -> Result<Vec<CloudFailure>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT deployment, error, sequence, failed_ms FROM cloud_failures
                  ORDER BY failed_ms DESC",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(CloudFailure {
                    deployment: r.get(0)?,
                    error: r.get(1)?,
                    sequence: r.get(2)?,
                    failed_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Which of these modules the store does not hold.
    pub fn missing_modules<'a>(
        &self,
        shas: impl IntoIterator<Item = &'a String>,
    ) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut out = Vec::new();
            for sha in shas {
                if !module_exists(tx, sha)? {
                    out.push(sha.clone());
                }
            }
            Ok(out)
        })
    }

    /// Activates `state` in one transaction: the cloud-managed rows become exactly `state`, it
    /// becomes the `current` slot (health pending), the last healthy state the `previous` one
    /// (its modules pinned), and the sequence is remembered. `staged` holds the module bytes
    /// the store lacks. `before_commit` runs inside the transaction, last (a test hook).
    pub fn cloud_activate(
        &self,
        state: &CloudState,
        staged: &HashMap<String, Vec<u8>>,
        before_commit: &dyn Fn(),
    ) -> Result<CloudApplied> {
        self.write(|tx| {
            if let Some(last) = meta_get(tx, SEQUENCE_KEY)?.and_then(|s| s.parse::<u64>().ok()) {
                if state.sequence < last {
                    return Err(StoreError::CloudConflict(format!(
                        "desired state sequence {} is lower than the applied {last}",
                        state.sequence
                    )));
                }
            }
            let current = read_slot(tx, "current")?;
            let previous = match &current {
                Some(c) if c.health == Health::Healthy => Some(c.clone()),
                _ => read_slot(tx, "previous")?,
            };
            let why = format!("sequence {}", state.sequence);
            let applied = write_state(tx, state, staged, &why)?;
            let slot = CloudSlot {
                state: state.clone(),
                activated_ms: now_ms(),
                health: Health::Pending,
            };
            write_slot(tx, "current", Some(&slot))?;
            write_slot(tx, "previous", previous.as_ref())?;
            repin_and_collect(tx, previous.as_ref().map(|p| &p.state))?;
            meta_put(tx, SEQUENCE_KEY, &state.sequence.to_string())?;
            meta_put(tx, KEY_ID_KEY, &state.key_id)?;
            before_commit();
            Ok(applied)
        })
    }

    /// Marks the current state healthy (its health window passed): the previous one is no
    /// longer needed for a rollback, so its modules are unpinned. `false` if there is no
    /// pending current state with this sequence.
    pub fn cloud_mark_healthy(&self, sequence: u64) -> Result<bool> {
        self.write(|tx| {
            let Some(mut current) = read_slot(tx, "current")? else {
                return Ok(false);
            };
            if current.health == Health::Healthy || current.state.sequence != sequence {
                return Ok(false);
            }
            current.health = Health::Healthy;
            write_slot(tx, "current", Some(&current))?;
            write_slot(tx, "previous", None)?;
            repin_and_collect(tx, None)?;
            Ok(true)
        })
    }

    /// Rolls the pending current state back to the previous healthy one (or to no cloud
    /// functions at all) in one transaction, recording `deployment` as failed with `error`.
    pub fn cloud_rollback(&self, deployment: &str, error: &str) -> Result<CloudApplied> {
        self.write(|tx| {
            let current = read_slot(tx, "current")?
                .ok_or_else(|| StoreError::CloudConflict("no cloud state to roll back".into()))?;
            let previous = read_slot(tx, "previous")?;
            let target = previous
                .as_ref()
                .map(|p| p.state.clone())
                .unwrap_or_else(|| CloudState {
                    sequence: 0,
                    key_id: current.state.key_id.clone(),
                    ..CloudState::default()
                });
            let why = format!(
                "rollback of sequence {}: deployment {deployment} failed",
                current.state.sequence
            );
            let applied = write_state(tx, &target, &HashMap::new(), &why)?;
            let slot = CloudSlot {
                state: target,
                activated_ms: now_ms(),
                health: Health::Healthy,
            };
            write_slot(tx, "current", Some(&slot))?;
            write_slot(tx, "previous", None)?;
            repin_and_collect(tx, None)?;
            tx.prepare_cached(
                "INSERT INTO cloud_failures (deployment, error, sequence, failed_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (deployment) DO UPDATE SET error = ?2, sequence = ?3, failed_ms = ?4",
            )?
            .execute(params![deployment, error, current.state.sequence, now_ms()])?;
            tx.prepare_cached(
                "DELETE FROM cloud_failures WHERE deployment NOT IN
                   (SELECT deployment FROM cloud_failures ORDER BY failed_ms DESC LIMIT ?1)",
            )?
            .execute([MAX_FAILURES])?;
            Ok(applied)
        })
    }

    /// Failed invocations (trap, limits, init failure) of `function` version `version` that
    /// started at or after `since_ms`, with the error of the latest.
    pub fn failures_since(
        &self,
        function: &str,
        version: u32,
        since_ms: i64,
    ) -> Result<(u64, Option<String>)> {
        self.read(|tx| {
            let (n, err): (u64, Option<String>) = tx
                .prepare_cached(
                    "SELECT count(*), (SELECT outcome || ': ' || coalesce(error, '')
                                         FROM invocations
                                        WHERE function = ?1 AND version = ?2 AND start_ms >= ?3
                                          AND outcome IN ('trap', 'out_of_fuel', 'memory_limit',
                                                          'timeout', 'init_failed')
                                        ORDER BY seq DESC LIMIT 1)
                       FROM invocations
                      WHERE function = ?1 AND version = ?2 AND start_ms >= ?3
                        AND outcome IN ('trap', 'out_of_fuel', 'memory_limit', 'timeout',
                                        'init_failed')",
                )?
                .query_row(params![function, version, since_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok((n, err))
        })
    }

    /// Who manages a mapping (`None`: no such mapping).
    pub fn mapping_origin(&self, id: &str) -> Result<Option<Origin>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT origin FROM mappings WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use crate::store::{Qualifier, StoreError};

    fn version(v: u32, bytes: &[u8]) -> CloudVersion {
        CloudVersion {
            version: v,
            sha256: modules::sha256_hex(bytes),
            size: bytes.len() as u64,
            spec: String::new(),
            description: String::new(),
        }
    }

    fn state(
        seq: u64,
        versions: &[(u32, &[u8])],
        alias: u32,
    ) -> (CloudState, HashMap<String, Vec<u8>>) {
        let staged = versions
            .iter()
            .map(|(_, b)| (modules::sha256_hex(b), b.to_vec()))
            .collect();
        let s = CloudState {
            sequence: seq,
            key_id: "k-1".into(),
            functions: vec![CloudFunction {
                name: "f".into(),
                enabled: true,
                deployment: format!("dep-{seq}"),
                versions: versions.iter().map(|(v, b)| version(*v, b)).collect(),
                aliases: vec![CloudAlias {
                    name: "prod".into(),
                    version: alias,
                    also_version: None,
                    weight: None,
                }],
            }],
            flows: vec![],
            mappings: vec![CloudMapping {
                id: "m-cloud1".into(),
                name: "tick".into(),
                function: "f".into(),
                qualifier: "prod".into(),
                source: Source::Every {
                    interval_ms: 60_000,
                    missed: Default::default(),
                },
                enabled: true,
                retries: 1,
                on_success: None,
                on_failure: None,
                deployment: format!("dep-{seq}"),
            }],
        };
        (s, staged)
    }

    #[test]
    fn activate_mark_healthy_and_roll_back() {
        let (_dir, store) = temp_store();
        let (s1, m1) = state(1, &[(1, b"one")], 1);
        store.cloud_activate(&s1, &m1, &|| {}).unwrap();
        let f = store.get_function("f").unwrap();
        assert_eq!(f.summary.origin, Origin::Cloud);
        assert_eq!(
            store
                .resolve("f", &Qualifier::parse("prod").unwrap(), "e")
                .unwrap()
                .version,
            Some(1)
        );
        assert_eq!(
            store.mapping_origin("m-cloud1").unwrap(),
            Some(Origin::Cloud)
        );
        assert!(store.cloud_mark_healthy(1).unwrap());

        let (s2, m2) = state(2, &[(2, b"two")], 2);
        store.cloud_activate(&s2, &m2, &|| {}).unwrap();
        assert_eq!(
            store
                .resolve("f", &Qualifier::parse("prod").unwrap(), "e")
                .unwrap()
                .version,
            Some(2)
        );
        // version 1's module is pinned for the rollback
        assert_eq!(store.module(&modules::sha256_hex(b"one")).unwrap(), b"one");
        store
            .cloud_rollback("dep-2", "f version 2: init failed")
            .unwrap();
        let r = store
            .resolve("f", &Qualifier::parse("prod").unwrap(), "e")
            .unwrap();
        assert_eq!(
            (r.version, r.sha256),
            (Some(1), modules::sha256_hex(b"one"))
        );
        assert!(store.get_version("f", 2).is_err());
        assert_eq!(store.cloud_sequence().unwrap().unwrap().0, 2);
        assert_eq!(store.cloud_failures().unwrap()[0].deployment, "dep-2");
        assert_eq!(store.module_count().unwrap(), 1);

        // lower sequences are refused by the store too
        let (s0, m0) = state(1, &[(1, b"one")], 1);
        assert!(store.cloud_activate(&s0, &m0, &|| {}).is_err());
        // an empty state removes everything cloud-managed
        let empty = CloudState {
            sequence: 3,
            ..CloudState::default()
        };
        store
            .cloud_activate(&empty, &HashMap::new(), &|| {})
            .unwrap();
        assert!(matches!(
            store.get_function("f"),
            Err(StoreError::UnknownFunction(_))
        ));
        assert_eq!(store.mapping_origin("m-cloud1").unwrap(), None);
    }

    #[test]
    fn a_new_device_forgets_the_old_sequence() {
        let (_dir, store) = temp_store();
        assert!(!store.cloud_bind_device("d-1").unwrap());
        let (s5, m5) = state(5, &[(1, b"one")], 1);
        store.cloud_activate(&s5, &m5, &|| {}).unwrap();
        assert!(!store.cloud_bind_device("d-1").unwrap());
        assert!(store.cloud_bind_device("d-2").unwrap());
        assert_eq!(store.cloud_sequence().unwrap(), None);
        let (s1, m1) = state(1, &[(2, b"two")], 2);
        store.cloud_activate(&s1, &m1, &|| {}).unwrap();
    }

    #[test]
    fn local_names_are_not_taken_over() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"local", "", Origin::Local)
            .unwrap();
        let (s1, m1) = state(1, &[(1, b"one")], 1);
        let e = store.cloud_activate(&s1, &m1, &|| {}).unwrap_err();
        assert!(e.to_string().contains("local function"), "{e}");
        assert_eq!(
            store.get_function("f").unwrap().summary.origin,
            Origin::Local
        );
        assert_eq!(store.cloud_sequence().unwrap(), None);
    }

    #[test]
    fn a_panic_before_commit_leaves_the_old_state() {
        let (_dir, store) = temp_store();
        let (s1, m1) = state(1, &[(1, b"one")], 1);
        store.cloud_activate(&s1, &m1, &|| {}).unwrap();
        let (s2, m2) = state(2, &[(2, b"two")], 2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.cloud_activate(&s2, &m2, &|| panic!("crash")).unwrap();
        }));
        assert!(r.is_err());
        let r = store
            .resolve("f", &Qualifier::parse("prod").unwrap(), "e")
            .unwrap();
        assert_eq!(r.version, Some(1));
        assert_eq!(store.cloud_sequence().unwrap().unwrap().0, 1);
    }
}

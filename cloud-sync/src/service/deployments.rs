//! Deployments: what a group should run (function versions, aliases, mappings, flows, pinned at
//! creation) and how to roll it out (batch percent, failure threshold, health wait).
//!
//! Deployment status: `running` -> `succeeded` | `rolled_back` | `cancelled` (by the operator, or
//! superseded by a newer deployment to the same group).
//! Device state in a deployment: `pending` (batch not released) -> `released` (in its desired
//! state) -> `applied` (device activated it) -> `healthy` (health wait passed, or the device said
//! so) | `failed` (device reported failure and rolled back locally); `rolled_back` when the
//! deployment was rolled back; `cancelled` for pending devices of a cancelled deployment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::groups::ensure_group;
use super::{aliases, functions, mappings, rollout, signing, Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::names::{parse_target, Qualifier};
use crate::protocol::{AliasState, ReportState, StatusReport};
use crate::store::{Row, StoreError, Tx};

/// What a deployment puts on devices, pinned when it is created.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub functions: Vec<ContentFunction>,
    pub mappings: Vec<crate::protocol::MappingState>,
    /// Flows with their definitions as they were at creation (older deployments have none).
    #[serde(default)]
    pub flows: Vec<crate::protocol::FlowState>,
}

/// One function of a deployment: the versions devices hold and the aliases they see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentFunction {
    pub name: String,
    pub versions: Vec<u32>,
    pub aliases: Vec<AliasState>,
}

/// `deploy create` input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDeployment {
    pub group: String,
    /// `NAME:VERSION` or `NAME:ALIAS` (not `latest`: it is not signed).
    pub functions: Vec<String>,
    /// Ids or names of registry mappings; their functions must be deployed too.
    #[serde(default)]
    pub mappings: Vec<String>,
    /// Names of registry flows.
    #[serde(default)]
    pub flows: Vec<String>,
    #[serde(default = "default_batch")]
    pub batch_percent: u32,
    #[serde(default)]
    pub failure_threshold_percent: u32,
    #[serde(default)]
    pub health_wait_ms: u64,
    /// A released device that has not reported within this long counts as failed (0 = wait
    /// for ever).
    #[serde(default)]
    pub report_timeout_ms: u64,
}

fn default_batch() -> u32 {
    100
}

/// A device's state in a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentDevice {
    pub device_id: String,
    pub device: String,
    pub batch: u32,
    pub state: String,
    pub error: Option<String>,
}

/// `deploy status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    pub id: String,
    pub group: String,
    pub status: String,
    pub message: String,
    pub batch_percent: u32,
    pub failure_threshold_percent: u32,
    pub health_wait_ms: u64,
    pub report_timeout_ms: u64,
    pub batches: u32,
    /// The newest released batch (0-based).
    pub current_batch: u32,
    pub functions: Vec<ContentFunction>,
    pub mappings: Vec<String>,
    pub flows: Vec<String>,
    /// Devices per state.
    pub counts: BTreeMap<String, u32>,
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeploymentDevice>,
}

pub(crate) fn content_of(r: &str) -> Result<Content> {
    serde_json::from_str(r).map_err(|e| StoreError::Db(format!("stored deployment: {e}")))
}

const COLUMNS: &str =
    "id, group_name, status, message, batch_percent, failure_percent, health_wait_ms,
    batches, current_batch, content, created_ms, updated_ms, report_timeout_ms";

fn from_row(tx: &mut dyn Tx, r: &Row, with_devices: bool) -> Result<DeploymentInfo> {
    let id = r.text(0)?;
    let content = content_of(&r.text(9)?)?;
    let devices: Vec<DeploymentDevice> = tx
        .query(
            "SELECT dd.device_id, d.name, dd.batch, dd.state, dd.error FROM deployment_devices dd
               JOIN devices d ON d.id = dd.device_id WHERE dd.deployment_id = $1 ORDER BY dd.batch, d.name",
            params![&id],
        )?
        .iter()
        .map(|r| {
            Ok(DeploymentDevice {
                device_id: r.text(0)?,
                device: r.text(1)?,
                batch: r.u32(2)?,
                state: r.text(3)?,
                error: r.opt_text(4)?,
            })
        })
        .collect::<Result<_>>()?;
    let mut counts = BTreeMap::new();
    for d in &devices {
        *counts.entry(d.state.clone()).or_insert(0) += 1;
    }
    Ok(DeploymentInfo {
        id,
        group: r.text(1)?,
        status: r.text(2)?,
        message: r.text(3)?,
        batch_percent: r.u32(4)?,
        failure_threshold_percent: r.u32(5)?,
        health_wait_ms: r.u64(6)?,
        report_timeout_ms: r.u64(12)?,
        batches: r.u32(7)?,
        current_batch: r.u32(8)?,
        mappings: content.mappings.iter().map(|m| m.id.clone()).collect(),
        flows: content.flows.iter().map(|f| f.name.clone()).collect(),
        functions: content.functions,
        counts,
        created_ms: r.i64(10)?,
        updated_ms: r.i64(11)?,
        devices: if with_devices { devices } else { Vec::new() },
    })
}

pub(crate) fn get_tx(tx: &mut dyn Tx, id: &str, with_devices: bool) -> Result<DeploymentInfo> {
    let r = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM deployments WHERE id = $1"),
            params![id],
        )?
        .ok_or_else(|| StoreError::not_found(format!("no deployment {id}")))?;
    from_row(tx, &r, with_devices)
}

/// Resolves `NAME:QUALIFIER`s into pinned content.
fn pin(tx: &mut dyn Tx, new: &NewDeployment) -> Result<Content> {
    if new.functions.is_empty() {
        return Err(StoreError::invalid(
            "a deployment needs at least one --function NAME:QUALIFIER",
        ));
    }
    let mut by_name: BTreeMap<String, ContentFunction> = BTreeMap::new();
    for target in &new.functions {
        let (name, q) = parse_target(target).map_err(StoreError::invalid)?;
        let (versions, alias) = match q {
            Qualifier::Latest => {
                return Err(StoreError::invalid(format!(
                    "{target}: deploy a published version or an alias (`latest` is not signed)"
                )))
            }
            Qualifier::Version(v) => {
                functions::get_version_tx(tx, &name, v)?;
                (vec![v], None)
            }
            Qualifier::Alias(a) => {
                let info = aliases::get_tx(tx, &name, &a)?;
                let mut v = vec![info.version];
                v.extend(info.also_version);
                let state = AliasState {
                    name: a,
                    version: info.version,
                    also_version: info.also_version,
                    weight: info.weight,
                };
                (v, Some(state))
            }
        };
        let f = by_name
            .entry(name.clone())
            .or_insert_with(|| ContentFunction {
                name,
                versions: vec![],
                aliases: vec![],
            });
        for v in versions {
            if !f.versions.contains(&v) {
                f.versions.push(v);
            }
        }
        f.versions.sort_unstable();
        f.aliases.extend(alias);
    }
    let mut mappings_out = Vec::new();
    for id in &new.mappings {
        let m = mappings::get_tx(tx, id)?;
        // A flow target starts runs of a flow on the device (deployed with the mapping's
        // deployment or made there locally); a device without it fails the deliveries.
        let flow = m
            .function
            .starts_with(crate::registry::mapping::FLOW_TARGET);
        let Some(f) = by_name.get(&m.function).filter(|_| !flow) else {
            if flow {
                mappings_out.push(mapping_state(m));
                continue;
            }
            return Err(StoreError::invalid(format!(
                "mapping {} feeds {}, which this deployment does not deploy",
                m.id, m.function
            )));
        };
        // A device holds only the deployed versions and aliases of a cloud function (no
        // `latest`), so the mapping's qualifier must be one of them.
        let resolves = match Qualifier::parse(&m.qualifier).map_err(StoreError::invalid)? {
            Qualifier::Latest => false,
            Qualifier::Version(v) => f.versions.contains(&v),
            Qualifier::Alias(a) => f.aliases.iter().any(|x| x.name == a),
        };
        if !resolves {
            return Err(StoreError::invalid(format!(
                "mapping {} feeds {}:{}, which this deployment does not carry (devices get only \
                 the versions and aliases deployed: deploy {}:{} or map one of them)",
                m.id, m.function, m.qualifier, m.function, m.qualifier
            )));
        }
        mappings_out.push(mapping_state(m));
    }
    let mut flows = Vec::new();
    for name in &new.flows {
        if flows
            .iter()
            .any(|f: &crate::protocol::FlowState| &f.name == name)
        {
            continue;
        }
        let f = super::flows::get_tx(tx, name)?;
        flows.push(crate::protocol::FlowState {
            name: f.name,
            enabled: f.enabled,
            definition: serde_json::to_value(&f.definition).expect("definitions serialize"),
            deployment: String::new(),
        });
    }
    Ok(Content {
        functions: by_name.into_values().collect(),
        mappings: mappings_out,
        flows,
    })
}

/// A registry mapping as the desired document carries it (its deployment is set later).
fn mapping_state(m: mappings::Mapping) -> crate::protocol::MappingState {
    crate::protocol::MappingState {
        id: m.id,
        name: m.name,
        function: m.function,
        qualifier: m.qualifier,
        source: serde_json::to_value(&m.source).unwrap(),
        enabled: m.enabled,
        retries: m.retries,
        on_success: m.on_success,
        on_failure: m.on_failure,
        deployment: String::new(),
    }
}

impl Service {
    pub async fn create_deployment(&self, new: NewDeployment) -> Result<DeploymentInfo> {
        if !(1..=100).contains(&new.batch_percent) {
            return Err(StoreError::invalid(format!(
                "batch percent must be 1..=100, got {}",
                new.batch_percent
            )));
        }
        if new.failure_threshold_percent > 100 {
            return Err(StoreError::invalid(format!(
                "failure threshold must be 0..=100 percent, got {}",
                new.failure_threshold_percent
            )));
        }
        let id = format!("dep-{}", ulid::Ulid::new().to_string().to_lowercase());
        let out = self
            .store
            .tx(move |tx| {
                ensure_group(tx, &new.group)?;
                let mut content = pin(tx, &new)?;
                for m in &mut content.mappings {
                    m.deployment = id.clone();
                }
                for f in &mut content.flows {
                    f.deployment = id.clone();
                }
                // A new deployment to the group supersedes a running one: it stops releasing
                // batches (devices that have it keep it until the new one reaches them).
                tx.execute(
                    "UPDATE deployment_devices SET state = 'cancelled'
                      WHERE state = 'pending' AND deployment_id IN
                            (SELECT id FROM deployments WHERE group_name = $1 AND status = 'running')",
                    params![&new.group],
                )?;
                tx.execute(
                    "UPDATE deployments SET status = 'cancelled', message = $2, updated_ms = $3
                      WHERE group_name = $1 AND status = 'running'",
                    params![&new.group, format!("superseded by {id}"), now_ms()],
                )?;
                let devices: Vec<String> = tx
                    .query(
                        "SELECT m.device_id FROM group_members m WHERE m.group_name = $1 ORDER BY m.device_id",
                        params![&new.group],
                    )?
                    .iter()
                    .map(|r| r.text(0))
                    .collect::<Result<_>>()?;
                let n = devices.len();
                let per_batch = (n * new.batch_percent as usize).div_ceil(100).max(1);
                let batches = n.div_ceil(per_batch);
                let now = now_ms();
                let (status, message) = if n == 0 {
                    ("succeeded", "no devices in the group yet: devices that join get it".to_string())
                } else {
                    ("running", format!("batch 1 of {batches} released"))
                };
                tx.execute(
                    "INSERT INTO deployments (id, group_name, content, batch_percent, failure_percent, health_wait_ms,
                                              status, batches, current_batch, message, created_ms, updated_ms,
                                              report_timeout_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $10, $11)",
                    params![
                        &id, &new.group, serde_json::to_string(&content).unwrap(), new.batch_percent,
                        new.failure_threshold_percent, new.health_wait_ms, status, batches as i64, message, now,
                        new.report_timeout_ms
                    ],
                )?;
                for (i, d) in devices.iter().enumerate() {
                    let batch = i / per_batch;
                    let (state, released) = if batch == 0 { ("released", Some(now)) } else { ("pending", None) };
                    tx.execute(
                        "INSERT INTO deployment_devices (deployment_id, device_id, batch, state, released_ms)
                         VALUES ($1, $2, $3, $4, $5)",
                        params![&id, d, batch as i64, state, released],
                    )?;
                }
                get_tx(tx, &id, true)
            })
            .await?;
        self.changed();
        Ok(out)
    }

    pub async fn list_deployments(&self) -> Result<Vec<DeploymentInfo>> {
        self.store
            .tx(|tx| {
                let rows = tx.query(
                    &format!("SELECT {COLUMNS} FROM deployments ORDER BY created_ms, id"),
                    &[],
                )?;
                rows.iter().map(|r| from_row(tx, r, false)).collect()
            })
            .await
    }

    pub async fn get_deployment(&self, id: String) -> Result<DeploymentInfo> {
        self.store.tx(move |tx| get_tx(tx, &id, true)).await
    }

    /// Stops releasing batches; devices that already have the deployment keep it.
    pub async fn cancel_deployment(&self, id: String) -> Result<DeploymentInfo> {
        let out = self
            .store
            .tx(move |tx| {
                let d = get_tx(tx, &id, false)?;
                if d.status != "running" {
                    return Err(StoreError::conflict(format!("deployment {id} is {}, not running", d.status)));
                }
                tx.execute(
                    "UPDATE deployment_devices SET state = 'cancelled' WHERE deployment_id = $1 AND state = 'pending'",
                    params![&id],
                )?;
                tx.execute(
                    "UPDATE deployments SET status = 'cancelled', message = 'cancelled by the operator', updated_ms = $2
                      WHERE id = $1",
                    params![&id, now_ms()],
                )?;
                get_tx(tx, &id, true)
            })
            .await?;
        self.changed();
        Ok(out)
    }

    /// A device's status report: the sequence and key it runs, per-deployment states. Wakes
    /// long-polls ([`Service::changed`]) only when it may change a desired state: a device
    /// failed (its document drops the deployment), a rollout moved, or a key was retired. The
    /// `applied` and `healthy` reports of a rollout change no document, and waking every
    /// waiting device of the fleet for each of them would cost O(fleet) per report.
    pub async fn report_status(&self, device: String, report: StatusReport) -> Result<()> {
        let changed = self
            .store
            .tx(move |tx| {
                let (mut changed, mut failed) = (false, false);
                tx.execute(
                    "UPDATE devices SET applied_sequence = $2, applied_key_id = $3, last_seen_ms = $4 WHERE id = $1",
                    params![&device, report.sequence, report.key_id.clone(), now_ms()],
                )?;
                for r in &report.deployments {
                    let Some(row) = tx.query_opt(
                        "SELECT dd.state, d.status FROM deployment_devices dd JOIN deployments d ON d.id = dd.deployment_id
                          WHERE dd.deployment_id = $1 AND dd.device_id = $2",
                        params![&r.deployment, &device],
                    )?
                    else {
                        continue; // a deployment the device got by joining its group later
                    };
                    let state = row.text(0)?;
                    if !matches!(state.as_str(), "released" | "applied" | "healthy") {
                        continue; // rolled back, failed or cancelled: the report comes too late
                    }
                    let new = r.state.as_str();
                    if state == new || (state == "healthy" && r.state == ReportState::Applied) {
                        continue;
                    }
                    tx.execute(
                        "UPDATE deployment_devices SET state = $3, error = $4,
                                applied_ms = coalesce(applied_ms, $5)
                          WHERE deployment_id = $1 AND device_id = $2",
                        params![&r.deployment, &device, new, r.error.clone(), now_ms()],
                    )?;
                    changed |= r.state == ReportState::Failed;
                    failed |= r.state == ReportState::Failed;
                }
                changed |= signing::retire_confirmed(tx)?;
                // A failure may cross the threshold: roll back now. `applied` / `healthy` wait
                // for the ticker (250 ms): a step per report would cost O(fleet) per report.
                if failed {
                    changed |= rollout::advance_all(tx)?;
                }
                Ok(changed)
            })
            .await?;
        if changed {
            self.changed();
        }
        Ok(())
    }

    /// One step of every running rollout (the background ticker calls this).
    pub async fn tick(&self) -> Result<bool> {
        let changed = self.store.tx(rollout::advance_all).await?;
        if changed {
            self.changed();
        }
        Ok(changed)
    }
}

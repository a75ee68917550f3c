//! Devices: `device enroll` creates a device with a one-time enrollment token (stored as its
//! sha256, valid for a day); `POST /v1/enroll` trades it for the device's credential (also
//! stored hashed) and the trust anchor; the credential authenticates the device endpoints.

use serde::{Deserialize, Serialize};

use super::groups::ensure_group;
use super::{signing, Result, Service};
use crate::keys::{hash_token, random_token};
use crate::now_ms;
use crate::params;
use crate::protocol::keycert::encode_public;
use crate::protocol::names::check_name;
use crate::protocol::EnrollResponse;
use crate::store::{Row, StoreError, Tx};

/// What `device enroll` returns (the token is shown only here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    pub device_id: String,
    pub name: String,
    pub token: String,
    pub expires_ms: i64,
    pub groups: Vec<String>,
}

/// A device as `device list/get` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    pub name: String,
    pub enrolled: bool,
    pub groups: Vec<String>,
    pub created_ms: i64,
    pub enrolled_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    /// Sequence of the newest desired state issued to the device.
    pub sequence: u64,
    /// Sequence the device reports running.
    pub applied_sequence: u64,
    pub applied_key_id: Option<String>,
    /// Per-deployment state (`device get` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeviceDeployment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDeployment {
    pub deployment: String,
    pub state: String,
    pub error: Option<String>,
}

/// A device id from its id or name.
pub(crate) fn resolve_device(tx: &mut dyn Tx, id_or_name: &str) -> Result<String> {
    tx.query_opt(
        "SELECT id FROM devices WHERE id = $1 OR name = $1",
        params![id_or_name],
    )?
    .ok_or_else(|| StoreError::not_found(format!("no device {id_or_name}")))?
    .text(0)
}

pub(crate) fn device_groups(tx: &mut dyn Tx, id: &str) -> Result<Vec<String>> {
    tx.query(
        "SELECT group_name FROM group_members WHERE device_id = $1 ORDER BY group_name",
        params![id],
    )?
    .iter()
    .map(|r| r.text(0))
    .collect()
}

const COLUMNS: &str = "id, name, credential_hash, created_ms, enrolled_ms, last_seen_ms, sequence,
    applied_sequence, applied_key_id";

fn from_row(tx: &mut dyn Tx, r: &Row) -> Result<DeviceInfo> {
    let id = r.text(0)?;
    Ok(DeviceInfo {
        groups: device_groups(tx, &id)?,
        name: r.text(1)?,
        enrolled: r.opt_text(2)?.is_some(),
        created_ms: r.i64(3)?,
        enrolled_ms: r.opt_i64(4)?,
        last_seen_ms: r.opt_i64(5)?,
        sequence: r.u64(6)?,
        applied_sequence: r.u64(7)?,
        applied_key_id: r.opt_text(8)?,
        deployments: Vec::new(),
        id,
    })
}

impl Service {
    /// Creates a device and its one-time enrollment token.
    pub async fn enroll_token(&self, name: String, groups: Vec<String>) -> Result<EnrollmentToken> {
        check_name(&name).map_err(StoreError::invalid)?;
        let token = random_token("et-");
        let expires_ms = now_ms() + self.settings.enroll_token_ttl_ms;
        let out = self
            .store
            .tx(move |tx| {
                if tx.query_opt("SELECT 1 FROM devices WHERE name = $1", params![&name])?.is_some() {
                    return Err(StoreError::conflict(format!("device {name} already exists")));
                }
                for g in &groups {
                    ensure_group(tx, g)?;
                }
                let id = format!("d-{}", ulid::Ulid::new().to_string().to_lowercase());
                tx.execute(
                    "INSERT INTO devices (id, name, enroll_token_hash, enroll_expires_ms, created_ms, sequence,
                                          content_hash, document_issued_ms, applied_sequence)
                     VALUES ($1, $2, $3, $4, $5, 0, '', 0, 0)",
                    params![&id, &name, hash_token(&token), expires_ms, now_ms()],
                )?;
                for g in &groups {
                    tx.execute(
                        "INSERT INTO group_members (group_name, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        params![g, &id],
                    )?;
                }
                Ok(EnrollmentToken { device_id: id, name: name.clone(), token: token.clone(), expires_ms, groups: groups.clone() })
            })
            .await?;
        Ok(out)
    }

    /// Trades a one-time token for the device's credential and trust anchor.
    pub async fn enroll(&self, token: String) -> Result<EnrollResponse> {
        let credential = random_token("dc-");
        let root = encode_public(&self.root_public);
        self.store
            .tx(move |tx| {
                let r = tx
                    .query_opt(
                        "SELECT id, name, enroll_expires_ms FROM devices WHERE enroll_token_hash = $1",
                        params![hash_token(&token)],
                    )?
                    .ok_or_else(|| StoreError::unauthorized("enrollment token unknown or already used"))?;
                let id = r.text(0)?;
                if r.i64(2)? < now_ms() {
                    return Err(StoreError::unauthorized("enrollment token expired: create a new one with `edgefn device enroll`"));
                }
                tx.execute(
                    "UPDATE devices SET enroll_token_hash = NULL, enroll_expires_ms = NULL, credential_hash = $2,
                            enrolled_ms = $3 WHERE id = $1",
                    params![&id, hash_token(&credential), now_ms()],
                )?;
                Ok(EnrollResponse {
                    groups: device_groups(tx, &id)?,
                    device_id: id,
                    device_name: r.text(1)?,
                    credential: credential.clone(),
                    root_public_key: root.clone(),
                    keys: signing::listed_certs(tx)?,
                })
            })
            .await
    }

    /// The device a credential belongs to (and notes it seen, see [`super::presence`]). A read
    /// of the unique index on the credential's sha256: a deleted device's credential fails at
    /// once, on every replica.
    pub async fn authenticate_device(&self, credential: String) -> Result<String> {
        let hash = hash_token(&credential);
        let id = self
            .store
            .read(move |tx| {
                tx.query_opt(
                    "SELECT id FROM devices WHERE credential_hash = $1",
                    params![&hash],
                )?
                .ok_or_else(|| StoreError::unauthorized("unknown device credential"))?
                .text(0)
            })
            .await?;
        self.presence.seen(&id, now_ms());
        Ok(id)
    }

    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        let mut devices = self
            .store
            .read(|tx| {
                let rows =
                    tx.query(&format!("SELECT {COLUMNS} FROM devices ORDER BY name"), &[])?;
                rows.iter()
                    .map(|r| from_row(tx, r))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        for d in &mut devices {
            d.last_seen_ms = self.presence.merge(&d.id, d.last_seen_ms);
        }
        Ok(devices)
    }

    pub async fn get_device(&self, id_or_name: String) -> Result<DeviceInfo> {
        let mut d = self
            .store
            .read(move |tx| {
                let id = resolve_device(tx, &id_or_name)?;
                let r = tx.query_one(
                    &format!("SELECT {COLUMNS} FROM devices WHERE id = $1"),
                    params![&id],
                )?;
                let mut d = from_row(tx, &r)?;
                d.deployments = tx
                    .query(
                        "SELECT dd.deployment_id, dd.state, dd.error FROM deployment_devices dd
                           JOIN deployments d ON d.id = dd.deployment_id
                          WHERE dd.device_id = $1 ORDER BY d.created_ms, d.id",
                        params![&id],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(DeviceDeployment {
                            deployment: r.text(0)?,
                            state: r.text(1)?,
                            error: r.opt_text(2)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(d)
            })
            .await?;
        d.last_seen_ms = self.presence.merge(&d.id, d.last_seen_ms);
        Ok(d)
    }

    /// Deletes a device: its credential stops working at once.
    pub async fn delete_device(&self, id_or_name: String) -> Result<()> {
        let id = self
            .store
            .tx(move |tx| {
                let id = resolve_device(tx, &id_or_name)?;
                tx.execute(
                    "DELETE FROM group_members WHERE device_id = $1",
                    params![&id],
                )?;
                tx.execute(
                    "DELETE FROM deployment_devices WHERE device_id = $1",
                    params![&id],
                )?;
                tx.execute("DELETE FROM devices WHERE id = $1", params![&id])?;
                signing::retire_confirmed(tx)?;
                Ok(id)
            })
            .await?;
        self.documents.forget(&id);
        self.presence.forget(&id);
        self.changed();
        Ok(())
    }
}

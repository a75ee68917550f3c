//! A device's desired state: the overlay of the deployments that reach it, signed.
//!
//! Deployments to the device's groups are applied oldest first, each replacing the functions
//! (by name) and mappings (by id) it carries. A deployment reaches a device when the device's
//! batch is released (`released`, `applied`, `healthy`; or `cancelled` never), or, for devices
//! with no state in it (they joined the group later), when it has `succeeded`. Rolled-back
//! deployments and a device's `failed` ones do not reach it.
//!
//! The signed document is cached on the device row with a hash of its content (and of the
//! signing keys): it is re-signed with the next sequence number only when that changes, or
//! when half of its validity has passed.

use std::collections::BTreeMap;

use super::deployments::content_of;
use super::devices::device_groups;
use super::{signing, Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::verify::sha256_hex;
use crate::protocol::{
    Context, DesiredDocument, DesiredState, FunctionState, Manifest, MappingState, Signed,
};
use crate::store::{StoreError, Tx};

/// The functions and mappings `device` should run.
fn overlay(tx: &mut dyn Tx, device: &str) -> Result<(Vec<FunctionState>, Vec<MappingState>)> {
    let groups = device_groups(tx, device)?;
    let mut functions: BTreeMap<String, FunctionState> = BTreeMap::new();
    let mut mappings: BTreeMap<String, MappingState> = BTreeMap::new();
    let rows = tx.query(
        "SELECT d.id, d.group_name, d.status, d.content, dd.state FROM deployments d
           LEFT JOIN deployment_devices dd ON dd.deployment_id = d.id AND dd.device_id = $1
          WHERE d.status <> 'rolled_back' ORDER BY d.created_ms, d.id",
        params![device],
    )?;
    for r in rows {
        if !groups.contains(&r.text(1)?) {
            continue;
        }
        let reaches = matches!(
            (r.text(2)?.as_str(), r.opt_text(4)?.as_deref()),
            (_, Some("released" | "applied" | "healthy")) | ("succeeded", None)
        );
        if !reaches {
            continue;
        }
        let id = r.text(0)?;
        let content = content_of(&r.text(3)?)?;
        for f in content.functions {
            let enabled = tx
                .query_opt(
                    "SELECT enabled FROM functions WHERE name = $1",
                    params![&f.name],
                )?
                .map(|r| r.bool(0))
                .transpose()?
                .unwrap_or(true);
            let mut versions = Vec::with_capacity(f.versions.len());
            for v in &f.versions {
                let m = tx
                    .query_opt(
                        "SELECT manifest FROM versions WHERE function = $1 AND version = $2",
                        params![&f.name, *v],
                    )?
                    .ok_or_else(|| {
                        StoreError::Db(format!("deployment {id}: {} version {v} is gone", f.name))
                    })?;
                let signed: Signed<Manifest> = serde_json::from_str(&m.text(0)?)
                    .map_err(|e| StoreError::Db(format!("stored manifest: {e}")))?;
                versions.push(signed);
            }
            functions.insert(
                f.name.clone(),
                FunctionState {
                    name: f.name,
                    enabled,
                    deployment: id.clone(),
                    versions,
                    aliases: f.aliases,
                },
            );
        }
        for m in content.mappings {
            mappings.insert(m.id.clone(), m);
        }
    }
    Ok((
        functions.into_values().collect(),
        mappings.into_values().collect(),
    ))
}

/// The device's current signed document, re-signed if its content changed.
pub(crate) fn document_tx(tx: &mut dyn Tx, device: &str, ttl_ms: i64) -> Result<DesiredDocument> {
    let (functions, mappings) = overlay(tx, device)?;
    let keys = signing::listed_certs(tx)?;
    let (key_id, key) = signing::active_key(tx)?;
    let hash_input = serde_json::to_vec(&(&functions, &mappings, &keys, &key_id)).unwrap();
    let content_hash = sha256_hex(&hash_input);
    let r = tx.query_one(
        "SELECT sequence, content_hash, document, document_issued_ms FROM devices WHERE id = $1",
        params![device],
    )?;
    let now = now_ms();
    if let Some(doc) = r.opt_text(2)? {
        if r.text(1)? == content_hash && now - r.i64(3)? < ttl_ms / 2 {
            return serde_json::from_str(&doc)
                .map_err(|e| StoreError::Db(format!("stored document: {e}")));
        }
    }
    let sequence = r.u64(0)? + 1;
    let state = DesiredState {
        device: device.to_owned(),
        sequence,
        issued_ms: now,
        expires_ms: now + ttl_ms,
        functions,
        mappings,
    };
    let doc = DesiredDocument {
        keys,
        document: Signed::sign(&state, Context::Desired, &key_id, &key),
    };
    tx.execute(
        "UPDATE devices SET sequence = $2, content_hash = $3, document = $4, document_issued_ms = $5 WHERE id = $1",
        params![device, sequence, content_hash, serde_json::to_string(&doc).unwrap(), now],
    )?;
    Ok(doc)
}

impl Service {
    /// The device's desired-state document (and its sequence, the ETag).
    pub async fn desired(&self, device: String) -> Result<(u64, DesiredDocument)> {
        let ttl = self.settings.document_ttl_ms;
        self.store
            .tx(move |tx| {
                let doc = document_tx(tx, &device, ttl)?;
                let seq = doc
                    .document
                    .payload_unverified()
                    .map_err(|e| StoreError::Db(e.to_string()))?
                    .sequence;
                Ok((seq, doc))
            })
            .await
    }

    /// Brings every enrolled device's document up to date; returns (device id, sequence).
    pub async fn refresh_documents(&self) -> Result<Vec<(String, u64)>> {
        let ids: Vec<String> = self
            .store
            .tx(|tx| {
                tx.query(
                    "SELECT id FROM devices WHERE credential_hash IS NOT NULL ORDER BY id",
                    &[],
                )?
                .iter()
                .map(|r| r.text(0))
                .collect()
            })
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // A device deleted meanwhile has no document: skip it.
            if let Ok((seq, _)) = self.desired(id.clone()).await {
                out.push((id, seq));
            }
        }
        Ok(out)
    }
}

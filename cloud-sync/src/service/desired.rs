//! A device's desired state: the overlay of the deployments that reach it, signed.
//!
//! Deployments to the device's groups are applied oldest first, each replacing the functions
//! (by name), mappings (by id) and flows (by name) it carries. A deployment reaches a device when the device's
//! batch is released (`released`, `applied`, `healthy`; or `cancelled` never), or, for devices
//! with no state in it (they joined the group later), when it has `succeeded`. Rolled-back
//! deployments and a device's `failed` ones do not reach it.
//!
//! The signed document is cached on the device row with a hash of its content (and of the
//! signing keys): it is re-signed with the next sequence number only when that changes, or
//! when half of its validity has passed. A build reads in a read transaction (snapshot) and
//! writes, only when the document must change, the device's row alone in a write transaction
//! that checks the row did not move since the snapshot (else it starts over): on PostgreSQL a
//! fleet's polls then stay out of the serializable transactions that rollouts run.
//!
//! Polls are answered from memory while nothing changed: [`DocCache`] remembers, per device,
//! the sequence of the document last built and the change generation it was built at
//! ([`Service::changed`] moves the generation, in this process at once, for other replicas'
//! changes through the store's revision within its poll interval). A poll whose `If-None-Match`
//! names that sequence gets its `304` without the store, and without building or signing the
//! document ([`Service::desired_sequence`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::deployments::content_of;
use super::devices::device_groups;
use super::{signing, Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::verify::sha256_hex;
use crate::protocol::{
    Context, DesiredDocument, DesiredState, FlowState, FunctionState, Manifest, MappingState,
    Signed,
};
use crate::store::{StoreError, Tx};

/// What a device should run.
type Overlay = (Vec<FunctionState>, Vec<MappingState>, Vec<FlowState>);

/// The functions, mappings and flows `device` should run.
fn overlay(tx: &mut dyn Tx, device: &str) -> Result<Overlay> {
    let groups = device_groups(tx, device)?;
    let mut functions: BTreeMap<String, FunctionState> = BTreeMap::new();
    let mut mappings: BTreeMap<String, MappingState> = BTreeMap::new();
    let mut flows: BTreeMap<String, FlowState> = BTreeMap::new();
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
        for mut f in content.flows {
            // The registry's enabled flag now (like a function's); a flow deleted from the
            // registry keeps the deployment's.
            if let Some(r) = tx.query_opt(
                "SELECT enabled FROM flows WHERE name = $1",
                params![&f.name],
            )? {
                f.enabled = r.bool(0)?;
            }
            flows.insert(f.name.clone(), f);
        }
    }
    Ok((
        functions.into_values().collect(),
        mappings.into_values().collect(),
        flows.into_values().collect(),
    ))
}

/// The device's current signed document, re-signed if its content changed.
/// What a document build read: the content the device should run and the document it has.
struct Snapshot {
    functions: Vec<FunctionState>,
    mappings: Vec<MappingState>,
    flows: Vec<FlowState>,
    keys: Vec<Signed<crate::protocol::KeyCert>>,
    key_id: String,
    content_hash: String,
    stored: Stored,
}

/// The document stored on the device row.
#[derive(PartialEq, Eq)]
struct Stored {
    sequence: u64,
    content_hash: Option<String>,
    document: Option<String>,
    issued_ms: i64,
}

fn stored(tx: &mut dyn Tx, device: &str) -> Result<Stored> {
    let r = tx.query_one(
        "SELECT sequence, content_hash, document, document_issued_ms FROM devices WHERE id = $1",
        params![device],
    )?;
    Ok(Stored {
        sequence: r.u64(0)?,
        content_hash: r.opt_text(1)?,
        document: r.opt_text(2)?,
        issued_ms: r.opt_i64(3)?.unwrap_or(0),
    })
}

/// Phase 1, in a read transaction: the content and the stored document.
fn snapshot(tx: &mut dyn Tx, device: &str) -> Result<Snapshot> {
    let (functions, mappings, flows) = overlay(tx, device)?;
    let keys = signing::listed_certs(tx)?;
    let key_id = signing::active_key_id(tx)?;
    // Without flows the hash is what it was before flows existed (no needless re-signing).
    let hash_input = if flows.is_empty() {
        serde_json::to_vec(&(&functions, &mappings, &keys, &key_id)).unwrap()
    } else {
        serde_json::to_vec(&(&functions, &mappings, &keys, &key_id, &flows)).unwrap()
    };
    Ok(Snapshot {
        content_hash: sha256_hex(&hash_input),
        stored: stored(tx, device)?,
        functions,
        mappings,
        flows,
        keys,
        key_id,
    })
}

/// The stored document, if it is the one for this content and not due for re-issue.
fn current(
    stored: &Stored,
    content_hash: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<Option<DesiredDocument>> {
    match (&stored.document, &stored.content_hash) {
        (Some(doc), Some(hash)) if hash == content_hash && now - stored.issued_ms < ttl_ms / 2 => {
            serde_json::from_str(doc)
                .map(Some)
                .map_err(|e| StoreError::Db(format!("stored document: {e}")))
        }
        _ => Ok(None),
    }
}

/// Phase 2, in a write transaction that touches only the device's row: signs the snapshot's
/// content with the next sequence, unless the row moved since the snapshot (another request
/// built a document meanwhile: its document, if current, is the answer; else `None`, and the
/// build starts over from a new snapshot).
fn store_document(
    tx: &mut dyn Tx,
    device: &str,
    snap: &Snapshot,
    ttl_ms: i64,
) -> Result<Option<DesiredDocument>> {
    let now = now_ms();
    let row = stored(tx, device)?;
    if row != snap.stored {
        return current(&row, &snap.content_hash, now, ttl_ms);
    }
    let (key_id, key) = signing::active_key(tx)?;
    if key_id != snap.key_id {
        return Ok(None); // a key rotation meanwhile
    }
    let sequence = row.sequence + 1;
    let state = DesiredState {
        device: device.to_owned(),
        sequence,
        issued_ms: now,
        expires_ms: now + ttl_ms,
        functions: snap.functions.clone(),
        mappings: snap.mappings.clone(),
        flows: snap.flows.clone(),
    };
    let doc = DesiredDocument {
        keys: snap.keys.clone(),
        document: Signed::sign(&state, Context::Desired, &key_id, &key),
    };
    tx.execute(
        "UPDATE devices SET sequence = $2, content_hash = $3, document = $4, document_issued_ms = $5 WHERE id = $1",
        params![device, sequence, snap.content_hash.clone(), serde_json::to_string(&doc).unwrap(), now],
    )?;
    Ok(Some(doc))
}

/// What this process last established about one device's document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    /// The document's sequence (its ETag).
    sequence: u64,
    /// When it was issued: it is re-issued once half of its validity has passed.
    issued_ms: i64,
    /// The change generation read *before* the document was built: the entry describes the
    /// current document only while the generation has not moved since.
    generation: u64,
}

/// The current document's sequence per device, valid for one change generation (see the
/// module docs). Holds no document bytes: a `200` is served from the store.
#[derive(Default)]
pub(crate) struct DocCache {
    known: Mutex<HashMap<String, Known>>,
}

impl DocCache {
    /// The sequence of `device`'s current document, if known at `generation` and not due for
    /// re-issue at `now_ms`.
    fn sequence(&self, device: &str, generation: u64, now_ms: i64, ttl_ms: i64) -> Option<u64> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let k = known.get(device)?;
        (k.generation == generation && now_ms - k.issued_ms < ttl_ms / 2).then_some(k.sequence)
    }

    fn note(&self, device: &str, k: Known) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the entry of the newest generation (two polls of one device may race).
        match known.get(device) {
            Some(old) if old.generation > k.generation => {}
            _ => {
                known.insert(device.to_owned(), k);
            }
        }
    }

    /// Forgets a deleted device.
    pub(crate) fn forget(&self, device: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(device);
    }
}

impl Service {
    /// The device's desired-state document (and its sequence, the ETag), built from the store
    /// (re-signed if its content changed).
    pub async fn desired(&self, device: String) -> Result<(u64, DesiredDocument)> {
        let ttl = self.settings.document_ttl_ms;
        let generation = self.generation();
        let id = device.clone();
        // Built from a read snapshot, so that polls of a fleet during a rollout do not run
        // serializable transactions over the deployments the rollout writes (on PostgreSQL
        // they failed and were retried by the thousand); only storing a new document writes,
        // and only the device's row.
        let doc = loop {
            let id2 = id.clone();
            let snap = self.store.read(move |tx| snapshot(tx, &id2)).await?;
            if let Some(doc) = current(&snap.stored, &snap.content_hash, now_ms(), ttl)? {
                break doc;
            }
            let (id2, snap) = (id.clone(), std::sync::Arc::new(snap));
            if let Some(doc) = self
                .store
                .tx(move |tx| store_document(tx, &id2, &snap, ttl))
                .await?
            {
                break doc;
            }
        };
        let state = doc
            .document
            .payload_unverified()
            .map_err(|e| StoreError::Db(e.to_string()))?;
        self.documents.note(
            &device,
            Known {
                sequence: state.sequence,
                issued_ms: state.issued_ms,
                generation,
            },
        );
        Ok((state.sequence, doc))
    }

    /// The sequence of the device's current document if this process knows it: built here
    /// since the last change, and not due for re-issue.
    pub fn known_sequence(&self, device: &str) -> Option<u64> {
        let ttl = self.settings.document_ttl_ms;
        self.documents
            .sequence(device, self.generation(), now_ms(), ttl)
    }

    /// The sequence of the device's current document: [`Service::known_sequence`], else as
    /// [`Service::desired`] finds it.
    pub async fn desired_sequence(&self, device: &str) -> Result<u64> {
        match self.known_sequence(device) {
            Some(seq) => Ok(seq),
            None => Ok(self.desired(device.to_owned()).await?.0),
        }
    }

    /// Brings every enrolled device's document up to date; returns (device id, sequence).
    pub async fn refresh_documents(&self) -> Result<Vec<(String, u64)>> {
        let ids: Vec<String> = self
            .store
            .read(|tx| {
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
            if let Ok(seq) = self.desired_sequence(&id).await {
                out.push((id, seq));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{DocCache, Known};

    #[test]
    fn a_known_sequence_holds_for_its_generation_until_half_its_validity() {
        let c = DocCache::default();
        let k = |sequence, generation| Known {
            sequence,
            issued_ms: 1_000,
            generation,
        };
        assert_eq!(c.sequence("d", 3, 1_000, 100), None);
        c.note("d", k(7, 3));
        assert_eq!(c.sequence("d", 3, 1_049, 100), Some(7));
        assert_eq!(c.sequence("d", 3, 1_050, 100), None, "due for re-issue");
        assert_eq!(c.sequence("d", 4, 1_000, 100), None, "a change since");
        assert_eq!(c.sequence("e", 3, 1_000, 100), None);
        // An older generation's result never replaces a newer one.
        c.note("d", k(8, 5));
        c.note("d", k(7, 4));
        assert_eq!(c.sequence("d", 5, 1_000, 100), Some(8));
        c.forget("d");
        assert_eq!(c.sequence("d", 5, 1_000, 100), None);
    }
}

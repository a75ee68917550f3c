//! Signing keys in the store (so replicas share them): the one `active` key signs manifests
//! and documents; after `key rotate` the old keys are `retiring` (still listed in documents, so
//! devices trust both) until every enrolled device reports running a document signed by the new
//! key; then they are `retired` and no longer listed.
//!
//! Rotation re-signs every manifest with the new key (manifests are looked up when documents
//! are built), so retiring a key never orphans a version.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::{Result, Service};
use crate::keys::{decode_secret, encode_secret, issue_signing_key};
use crate::now_ms;
use crate::params;
use crate::protocol::{Context, KeyCert, Manifest, Signed};
use crate::store::{StoreError, Tx};

/// A signing key as `key list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    /// `active`, `retiring` or `retired`.
    pub state: String,
    pub not_after_ms: i64,
    pub created_ms: i64,
    pub retired_ms: Option<i64>,
}

/// The active key.
pub(crate) fn active_key(tx: &mut dyn Tx) -> Result<(String, SigningKey)> {
    let r = tx
        .query_opt(
            "SELECT id, secret FROM signing_keys WHERE state = 'active'",
            &[],
        )?
        .ok_or_else(|| StoreError::Db("no active signing key (run `edgefn-cloud init`)".into()))?;
    let key = decode_secret(&r.text(1)?)
        .map_err(|e| StoreError::Db(format!("stored signing key: {e}")))?;
    Ok((r.text(0)?, key))
}

/// The active signing key's id, without reading its secret (what a document's content hash
/// covers; only signing needs the key itself).
pub(crate) fn active_key_id(tx: &mut dyn Tx) -> Result<String> {
    tx.query_opt("SELECT id FROM signing_keys WHERE state = 'active'", &[])?
        .ok_or_else(|| StoreError::Db("no active signing key (run `edgefn-cloud init`)".into()))?
        .text(0)
}

/// Certificates of the keys documents list (active and retiring), newest first.
pub(crate) fn listed_certs(tx: &mut dyn Tx) -> Result<Vec<Signed<KeyCert>>> {
    tx.query(
        "SELECT cert FROM signing_keys WHERE state IN ('active', 'retiring') ORDER BY created_ms DESC, id",
        &[],
    )?
    .iter()
    .map(|r| serde_json::from_str(&r.text(0)?).map_err(|e| StoreError::Db(format!("stored key certificate: {e}"))))
    .collect()
}

fn insert_key(tx: &mut dyn Tx, key: &SigningKey, cert: &Signed<KeyCert>) -> Result<String> {
    let c = cert
        .payload_unverified()
        .map_err(|e| StoreError::Db(e.to_string()))?;
    tx.execute(
        "INSERT INTO signing_keys (id, secret, cert, not_after_ms, state, created_ms)
         VALUES ($1, $2, $3, $4, 'active', $5)",
        params![
            &c.key_id,
            encode_secret(key),
            serde_json::to_string(cert).unwrap(),
            c.not_after_ms,
            now_ms()
        ],
    )?;
    Ok(c.key_id)
}

/// Makes `key` (certified by `cert`) the active key if the store has none (first start).
pub fn import_if_empty(
    store: &crate::store::Store,
    key: &SigningKey,
    cert: &Signed<KeyCert>,
) -> Result<()> {
    let (key, cert) = (key.clone(), cert.clone());
    store.tx_blocking(move |tx| {
        if tx.query_opt("SELECT 1 FROM signing_keys", &[])?.is_none() {
            insert_key(tx, &key, &cert)?;
        }
        Ok(())
    })
}

/// Retires `retiring` keys once every enrolled device runs a document of the active key; true
/// if it did (documents stop listing them).
pub(crate) fn retire_confirmed(tx: &mut dyn Tx) -> Result<bool> {
    if tx
        .query_opt("SELECT 1 FROM signing_keys WHERE state = 'retiring'", &[])?
        .is_none()
    {
        return Ok(false);
    }
    let (active, _) = active_key(tx)?;
    let lagging = tx.query_opt(
        "SELECT 1 FROM devices WHERE credential_hash IS NOT NULL
            AND (applied_key_id IS NULL OR applied_key_id <> $1)",
        params![&active],
    )?;
    if lagging.is_some() {
        return Ok(false);
    }
    tx.execute(
        "UPDATE signing_keys SET state = 'retired', retired_ms = $1 WHERE state = 'retiring'",
        params![now_ms()],
    )?;
    Ok(true)
}

/// Makes `key` (certified by `cert`) the active key: the old active key starts retiring, every
/// manifest is re-signed with the new key, and the store's change revision moves (so running
/// servers wake their long-polls).
pub(crate) fn install_rotated(
    tx: &mut dyn Tx,
    key: &SigningKey,
    cert: &Signed<KeyCert>,
) -> Result<KeyInfo> {
    tx.execute(
        "UPDATE signing_keys SET state = 'retiring' WHERE state = 'active'",
        &[],
    )?;
    let id = insert_key(tx, key, cert)?;
    let rows = tx.query("SELECT function, version, manifest FROM versions", &[])?;
    for r in rows {
        let old: Signed<Manifest> = serde_json::from_str(&r.text(2)?)
            .map_err(|e| StoreError::Db(format!("stored manifest: {e}")))?;
        let m = old
            .payload_unverified()
            .map_err(|e| StoreError::Db(e.to_string()))?;
        let new = Signed::sign(&m, Context::Manifest, &id, key);
        tx.execute(
            "UPDATE versions SET manifest = $3 WHERE function = $1 AND version = $2",
            params![r.text(0)?, r.i64(1)?, serde_json::to_string(&new).unwrap()],
        )?;
    }
    retire_confirmed(tx)?;
    tx.execute("UPDATE revision SET value = value + 1 WHERE id = 1", &[])?;
    list_tx(tx)?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| StoreError::Db("rotated key vanished".into()))
}

/// `edgefn-cloud rotate-key`: the same rotation done offline, where the root key is, straight on
/// the store (blocking; not on an async runtime).
pub fn rotate_offline(
    store: &crate::store::Store,
    root: &SigningKey,
    validity_ms: i64,
) -> Result<KeyInfo> {
    let (key, cert) = issue_signing_key(root, now_ms(), validity_ms);
    store.tx_blocking(|tx| install_rotated(tx, &key, &cert))
}

impl Service {
    /// A new signing key certified by the root; the old active key starts retiring.
    pub async fn rotate_key(&self) -> Result<KeyInfo> {
        let root = self.root_secret.clone().ok_or_else(|| {
            StoreError::conflict("this server does not hold the root key (DIR/root.key)")
        })?;
        let (key, cert) = issue_signing_key(&root, now_ms(), self.settings.key_validity_ms);
        let out = self
            .store
            .tx(move |tx| install_rotated(tx, &key, &cert))
            .await?;
        self.changed();
        Ok(out)
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.store.tx(list_tx).await
    }
}

fn list_tx(tx: &mut dyn Tx) -> Result<Vec<KeyInfo>> {
    tx.query("SELECT id, state, not_after_ms, created_ms, retired_ms FROM signing_keys ORDER BY created_ms, id", &[])?
        .iter()
        .map(|r| {
            Ok(KeyInfo {
                id: r.text(0)?,
                state: r.text(1)?,
                not_after_ms: r.i64(2)?,
                created_ms: r.i64(3)?,
                retired_ms: r.opt_i64(4)?,
            })
        })
        .collect()
}

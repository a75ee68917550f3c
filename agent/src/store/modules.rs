//! Content-addressed module bytes: stored once per sha256, garbage-collected when nothing
//! (no function's `latest`, no version) refers to them any more.

use rusqlite::{params, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};

/// Lowercase hex sha256 of `bytes`: a module's content address.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 0xf) as usize] as char);
    }
    out
}

/// Stores `bytes` unless a module with the same hash exists; returns the hash.
pub(crate) fn put(tx: &Transaction<'_>, bytes: &[u8]) -> Result<String> {
    let sha = sha256_hex(bytes);
    tx.prepare_cached(
        "INSERT INTO modules (sha256, size, bytes, created_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sha256) DO NOTHING",
    )?
    .execute(params![sha, bytes.len() as i64, bytes, now_ms()])?;
    Ok(sha)
}

/// Deletes the module `sha` if no function's latest and no version uses it. Returns whether it
/// was deleted. Call after removing a reference; the lookups are indexed. Modules pinned by cloud
/// sync (the last good desired state, kept for a rollback: `module_pins`, V3) stay too.
pub(crate) fn collect_if_unused(tx: &Transaction<'_>, sha: &str) -> Result<bool> {
    let deleted = tx
        .prepare_cached(
            "DELETE FROM modules WHERE sha256 = ?1
               AND NOT EXISTS (SELECT 1 FROM functions WHERE latest_sha256 = ?1)
               AND NOT EXISTS (SELECT 1 FROM versions WHERE sha256 = ?1)
               AND NOT EXISTS (SELECT 1 FROM module_pins WHERE sha256 = ?1)",
        )?
        .execute([sha])?;
    Ok(deleted > 0)
}

impl Store {
    /// The bytes of the module with this sha256 (as returned by
    /// [`resolve`](Store::resolve)). The runtime caches compiled modules by hash, so this is
    /// only read on a cache miss.
    pub fn module(&self, sha256: &str) -> Result<Vec<u8>> {
        self.read(|tx| {
            tx.prepare_cached("SELECT bytes FROM modules WHERE sha256 = ?1")?
                .query_row([sha256], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::UnknownModule(sha256.to_owned()))
        })
    }

    /// Number of distinct modules stored (to observe deduplication and garbage collection).
    pub fn module_count(&self) -> Result<u64> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT count(*) FROM modules")?
                .query_row([], |r| r.get(0))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use crate::store::Origin;

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn modules_are_stored_once_and_collected_when_unused() {
        let (_dir, store) = temp_store();
        store
            .create_function("a", b"same", "", Origin::Local)
            .unwrap();
        store
            .create_function("b", b"same", "", Origin::Local)
            .unwrap();
        assert_eq!(store.module_count().unwrap(), 1);
        store.publish("a", "").unwrap();
        assert_eq!(store.module(&sha256_hex(b"same")).unwrap(), b"same");

        // Still used by b's latest and a's version 1.
        store.update_function("a", Some(b"other"), None).unwrap();
        assert_eq!(store.module_count().unwrap(), 2);
        store.delete_function("b").unwrap();
        assert_eq!(store.module_count().unwrap(), 2); // a's version 1 keeps it
        store.delete_version("a", 1).unwrap();
        assert_eq!(store.module_count().unwrap(), 1);
        assert!(matches!(
            store.module(&sha256_hex(b"same")),
            Err(StoreError::UnknownModule(_))
        ));
        store.delete_function("a").unwrap();
        assert_eq!(store.module_count().unwrap(), 0);
    }
}

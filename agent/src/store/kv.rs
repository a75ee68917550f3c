//! Each function's persistent key-value store (the guest's `kv_*` imports).
//!
//! Keys and values are bytes. Usage (entries and bytes = key + value lengths) is kept on the
//! function's row by triggers, so quota checks are O(1). The store reports usage; the quota
//! policy (refusing a guest's `kv_set`) belongs to the runtime, which can ask
//! [`Store::kv_usage_after`] what a set of writes would lead to.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::Result;
use super::functions::ensure_exists;

/// One write of an invocation: set `key` to `value`, or delete it (`value: None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWrite {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl KvWrite {
    pub fn set(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: None,
        }
    }
}

/// From the runtime's buffered effects (`(key, Some(value))` = set, `(key, None)` = delete).
impl From<(Vec<u8>, Option<Vec<u8>>)> for KvWrite {
    fn from((key, value): (Vec<u8>, Option<Vec<u8>>)) -> Self {
        Self { key, value }
    }
}

/// How much kv space a function uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvUsage {
    pub entries: u64,
    /// Sum of key and value lengths.
    pub bytes: u64,
}

/// Usage of `function` (all zero for an unknown function).
pub(crate) fn usage(tx: &Transaction<'_>, function: &str) -> Result<KvUsage> {
    Ok(tx
        .prepare_cached("SELECT kv_entries, kv_bytes FROM functions WHERE name = ?1")?
        .query_row([function], |r| {
            Ok(KvUsage {
                entries: r.get(0)?,
                bytes: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// Applies `writes` in order in the caller's transaction. The function must exist.
pub(crate) fn apply(tx: &Transaction<'_>, function: &str, writes: &[KvWrite]) -> Result<()> {
    for write in writes {
        match &write.value {
            Some(value) => {
                tx.prepare_cached(
                    "INSERT INTO kv (function, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (function, key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![function, write.key, value])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM kv WHERE function = ?1 AND key = ?2")?
                    .execute(params![function, write.key])?;
            }
        }
    }
    Ok(())
}

/// Size (key + value) of a stored entry, if present.
fn entry_size(tx: &Transaction<'_>, function: &str, key: &[u8]) -> Result<Option<u64>> {
    Ok(tx
        .prepare_cached(
            "SELECT length(key) + length(value) FROM kv WHERE function = ?1 AND key = ?2",
        )?
        .query_row(params![function, key], |r| r.get(0))
        .optional()?)
}

impl Store {
    /// The value of `key`, if set.
    pub fn kv_get(&self, function: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(|tx| {
            let value = tx
                .prepare_cached("SELECT value FROM kv WHERE function = ?1 AND key = ?2")?
                .query_row(params![function, key], |r| r.get(0))
                .optional()?;
            if value.is_none() {
                ensure_exists(tx, function)?;
            }
            Ok(value)
        })
    }

    /// Sets one key (outside an invocation, e.g. from the admin API).
    pub fn kv_set(&self, function: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.apply_kv_writes(function, &[KvWrite::set(key, value)])
            .map(|_| ())
    }

    /// Deletes one key; returns whether it existed.
    pub fn kv_delete(&self, function: &str, key: &[u8]) -> Result<bool> {
        self.write(|tx| {
            ensure_exists(tx, function)?;
            Ok(tx
                .prepare_cached("DELETE FROM kv WHERE function = ?1 AND key = ?2")?
                .execute(params![function, key])?
                > 0)
        })
    }

    /// Applies `writes` in order, atomically; returns the resulting usage.
    pub fn apply_kv_writes(&self, function: &str, writes: &[KvWrite]) -> Result<KvUsage> {
        self.write(|tx| {
            ensure_exists(tx, function)?;
            apply(tx, function, writes)?;
            usage(tx, function)
        })
    }

    /// Current usage of a function's kv store.
    pub fn kv_usage(&self, function: &str) -> Result<KvUsage> {
        self.read(|tx| {
            ensure_exists(tx, function)?;
            usage(tx, function)
        })
    }

    /// The usage `writes` would lead to, without applying them (for quota checks). Reads only
    /// the keys written.
    pub fn kv_usage_after(&self, function: &str, writes: &[KvWrite]) -> Result<KvUsage> {
        self.read(|tx| {
            ensure_exists(tx, function)?;
            let mut total = usage(tx, function)?;
            // Current size of every key touched so far, including the effect of earlier writes.
            let mut sizes: HashMap<&[u8], Option<u64>> = HashMap::new();
            for write in writes {
                let old = match sizes.get(write.key.as_slice()) {
                    Some(size) => *size,
                    None => entry_size(tx, function, &write.key)?,
                };
                let new = write
                    .value
                    .as_ref()
                    .map(|v| (write.key.len() + v.len()) as u64);
                if let Some(old) = old {
                    total.entries = total.entries.saturating_sub(1);
                    total.bytes = total.bytes.saturating_sub(old);
                }
                if let Some(new) = new {
                    total.entries += 1;
                    total.bytes += new;
                }
                sizes.insert(&write.key, new);
            }
            Ok(total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use crate::store::{Origin, StoreError};

    #[test]
    fn get_set_delete() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        assert_eq!(store.kv_get("f", b"k").unwrap(), None);
        store.kv_set("f", b"k", b"v1").unwrap();
        assert_eq!(
            store.kv_get("f", b"k").unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        store.kv_set("f", b"k", b"value-2").unwrap();
        assert_eq!(
            store.kv_get("f", b"k").unwrap().as_deref(),
            Some(&b"value-2"[..])
        );
        assert!(store.kv_delete("f", b"k").unwrap());
        assert!(!store.kv_delete("f", b"k").unwrap());
        assert_eq!(store.kv_get("f", b"k").unwrap(), None);
        // Empty keys and values are legal bytes.
        store.kv_set("f", b"", b"").unwrap();
        assert_eq!(store.kv_get("f", b"").unwrap(), Some(vec![]));
    }

    #[test]
    fn kv_is_per_function() {
        let (_dir, store) = temp_store();
        store.create_function("a", b"m", "", Origin::Local).unwrap();
        store.create_function("b", b"m", "", Origin::Local).unwrap();
        store.kv_set("a", b"k", b"from a").unwrap();
        assert_eq!(store.kv_get("b", b"k").unwrap(), None);
    }

    #[test]
    fn unknown_function_errors() {
        let (_dir, store) = temp_store();
        for result in [
            store.kv_get("nope", b"k").map(|_| ()),
            store.kv_set("nope", b"k", b"v"),
            store.kv_delete("nope", b"k").map(|_| ()),
            store.kv_usage("nope").map(|_| ()),
            store.kv_usage_after("nope", &[]).map(|_| ()),
            store.apply_kv_writes("nope", &[]).map(|_| ()),
        ] {
            assert!(
                matches!(result, Err(StoreError::UnknownFunction(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn batch_writes_apply_in_order_and_track_usage() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let usage = store
            .apply_kv_writes(
                "f",
                &[
                    KvWrite::set("a", "1234"),  // 5
                    KvWrite::set("b", "12"),    // 3
                    KvWrite::set("a", "1"),     // a -> 2
                    KvWrite::delete("b"),       // gone
                    KvWrite::delete("missing"), // no-op
                    KvWrite::set("cc", "xyz"),  // 5
                ],
            )
            .unwrap();
        assert_eq!(
            usage,
            KvUsage {
                entries: 2,
                bytes: 7
            }
        );
        assert_eq!(store.kv_usage("f").unwrap(), usage);
        assert_eq!(store.kv_get("f", b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.kv_get("f", b"b").unwrap(), None);
        assert_eq!(store.get_function("f").unwrap().kv, usage);
    }

    #[test]
    fn usage_after_predicts_without_writing() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        store.kv_set("f", b"a", b"1234").unwrap(); // 5 bytes
        let writes = [
            KvWrite::set("a", "1"),       // 5 -> 2
            KvWrite::set("new", "value"), // +8
            KvWrite::set("new", "v"),     // 8 -> 4
            KvWrite::delete("a"),         // -2
            KvWrite::delete("never"),     // nothing
        ];
        let predicted = store.kv_usage_after("f", &writes).unwrap();
        assert_eq!(
            predicted,
            KvUsage {
                entries: 1,
                bytes: 4
            }
        );
        assert_eq!(
            store.kv_usage("f").unwrap(),
            KvUsage {
                entries: 1,
                bytes: 5
            }
        );
        assert_eq!(store.apply_kv_writes("f", &writes).unwrap(), predicted);
    }

    #[test]
    fn failed_batch_leaves_nothing_behind() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let err = store.write(|tx| {
            apply(tx, "f", &[KvWrite::set("a", "1")])?;
            Err::<(), _>(StoreError::Corrupt("simulated failure".into()))
        });
        assert!(err.is_err());
        assert_eq!(store.kv_get("f", b"a").unwrap(), None);
        assert_eq!(store.kv_usage("f").unwrap(), KvUsage::default());
    }
}

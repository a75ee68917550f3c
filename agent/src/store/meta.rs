//! Small string settings of the agent that must survive restarts (admin token id, device id,
//! cloud sync cursors, ...).

use rusqlite::{params, OptionalExtension};

use super::db::Store;
use super::error::Result;

impl Store {
    /// The value of a setting.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
    }

    /// Sets (or replaces) a setting.
    pub fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
            Ok(())
        })
    }

    /// Removes a setting; returns whether it existed.
    pub fn meta_delete(&self, key: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM meta WHERE key = ?1")?
                .execute([key])?
                > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::temp_store;
    use crate::store::Store;

    #[test]
    fn set_get_replace_delete_and_persist() {
        let (dir, store) = temp_store();
        assert_eq!(store.meta_get("device.id").unwrap(), None);
        store.meta_set("device.id", "pi-1").unwrap();
        store.meta_set("device.id", "pi-2").unwrap();
        assert_eq!(
            store.meta_get("device.id").unwrap().as_deref(),
            Some("pi-2")
        );
        store.meta_set("admin.token_id", "t1").unwrap();
        assert!(store.meta_delete("admin.token_id").unwrap());
        assert!(!store.meta_delete("admin.token_id").unwrap());
        drop(store);
        let store = Store::open(dir.path().join("store.db")).unwrap();
        assert_eq!(
            store.meta_get("device.id").unwrap().as_deref(),
            Some("pi-2")
        );
    }
}

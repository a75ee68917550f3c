//! MQTT dedup marks: exactly-once processing of QoS 1/2 messages across agent crashes.
//!
//! The commit of a message's final outcome also writes a mark `(session, packet_id)`
//! ([`super::CommitExtra::dedup_mark`]); the message is acknowledged only afterwards. If the
//! agent dies in between, the broker redelivers the message (`dup = true`, same packet id):
//! a marked one is acknowledged without running the function again. A new message
//! (`dup = false`) reusing a packet id means the old one was acknowledged: the MQTT client
//! clears the mark ([`Store::dedup_clear`]) before processing it. `session` names the MQTT
//! session (broker + client id), since packet ids are per session; when the broker has no
//! session for us any more, [`Store::dedup_clear_session`] forgets its marks.

use rusqlite::{params, OptionalExtension, Transaction};

use super::db::Store;
use super::error::Result;

/// Writes (or refreshes) a mark in the caller's transaction. Packet id 0 does not exist in MQTT
/// and is refused by the schema (failing the transaction).
pub(crate) fn mark(tx: &Transaction<'_>, session: &str, packet_id: u16, now: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO mqtt_dedup (session, packet_id, committed_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (session, packet_id) DO UPDATE SET committed_ms = excluded.committed_ms",
    )?
    .execute(params![session, packet_id, now])?;
    Ok(())
}

impl Store {
    /// Whether a message with this packet id was committed in `session` (and not cleared).
    pub fn dedup_is_marked(&self, session: &str, packet_id: u16) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT 1 FROM mqtt_dedup WHERE session = ?1 AND packet_id = ?2")?
                .query_row(params![session, packet_id], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    /// Removes a mark; returns whether it existed.
    pub fn dedup_clear(&self, session: &str, packet_id: u16) -> Result<bool> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM mqtt_dedup WHERE session = ?1 AND packet_id = ?2")?
                .execute(params![session, packet_id])?
                > 0)
        })
    }

    /// The marked packet ids of `session`, ascending (to load them into memory at start-up).
    pub fn dedup_marks(&self, session: &str) -> Result<Vec<u16>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT packet_id FROM mqtt_dedup WHERE session = ?1 ORDER BY packet_id",
            )?;
            let rows = stmt.query_map([session], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<u16>>>()?)
        })
    }

    /// Removes every mark of `session` (a new session: no redelivery of old messages can come).
    pub fn dedup_clear_session(&self, session: &str) -> Result<u64> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM mqtt_dedup WHERE session = ?1")?
                .execute([session])? as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::temp_store;
    use crate::store::{CommitExtra, Store};

    fn mark(store: &Store, session: &str, pid: u16) {
        store
            .commit_extra(&CommitExtra {
                dedup_mark: Some((session.into(), pid)),
                ..CommitExtra::default()
            })
            .unwrap();
    }

    #[test]
    fn mark_check_clear_per_session() {
        let (dir, store) = temp_store();
        assert!(!store.dedup_is_marked("s1", 7).unwrap());
        mark(&store, "s1", 7);
        mark(&store, "s1", 7); // a retried commit refreshes the mark
        mark(&store, "s1", 65535);
        mark(&store, "s2", 7);
        assert!(store.dedup_is_marked("s1", 7).unwrap());
        assert!(!store.dedup_is_marked("s1", 8).unwrap());
        assert_eq!(store.dedup_marks("s1").unwrap(), [7, 65535]);

        assert!(store.dedup_clear("s1", 7).unwrap());
        assert!(!store.dedup_clear("s1", 7).unwrap());
        assert!(!store.dedup_is_marked("s1", 7).unwrap());
        assert!(
            store.dedup_is_marked("s2", 7).unwrap(),
            "other session kept"
        );

        drop(store);
        let store = Store::open(dir.path().join("store.db")).unwrap();
        assert!(store.dedup_is_marked("s1", 65535).unwrap());
        assert_eq!(store.dedup_clear_session("s1").unwrap(), 1);
        assert!(store.dedup_marks("s1").unwrap().is_empty());
        assert_eq!(store.dedup_marks("s2").unwrap(), [7]);
    }

    #[test]
    fn packet_id_zero_is_refused() {
        let (_dir, store) = temp_store();
        assert!(store
            .commit_extra(&CommitExtra {
                dedup_mark: Some(("s".into(), 0)),
                ..CommitExtra::default()
            })
            .is_err());
    }
}

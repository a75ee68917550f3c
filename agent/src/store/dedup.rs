//! MQTT dedup marks: exactly-once processing of QoS 1/2 messages across agent crashes.
//!
//! The commit of a message's final outcome also writes a mark `(key, packet_id)`
//! ([`super::CommitExtra::dedup_mark`]); the message is acknowledged only afterwards. If the
//! agent dies in between, the broker redelivers the message (`dup = true`, same packet id):
//! a marked one is acknowledged without running the function again. `key` is
//! `SESSION|MAPPING`, where `SESSION` names the MQTT session (broker + client id), since packet
//! ids are per session.
//!
//! A packet id is reused by the broker once the message that had it is acknowledged, and a new
//! message's commit overwrites the old mark; but a new message redelivered after a crash
//! *before* its commit would find the old message's mark. So a mark counts only while it is one
//! of the session's [`FRESH_MARKS`] newest (by commit time, over all its mappings): a redelivered
//! message was committed at most a receive window of messages before the crash, while the
//! broker reuses a packet id only after ~65,535 later messages. When the broker has no session
//! for us any more, [`Store::dedup_clear_session`] forgets its marks.

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

/// How many of a session's newest marks count for a redelivery: far more than the messages a
/// session can have in flight (a receive window of 64, times the mappings a message matches),
/// far fewer than the ~65,535 messages after which the broker reuses a packet id.
pub(crate) const FRESH_MARKS: i64 = 4096;

/// Whether a redelivered message with this packet id was committed under `key` (see the
/// module's doc: a mark older than the session's [`FRESH_MARKS`] newest is another message's).
pub(crate) fn is_marked(tx: &Transaction<'_>, key: &str, packet_id: u16) -> Result<bool> {
    let Some(at) = tx
        .prepare_cached(
            "SELECT committed_ms FROM mqtt_dedup WHERE session = ?1 AND packet_id = ?2",
        )?
        .query_row(params![key, packet_id], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(false);
    };
    let (from, to) = session_range(key);
    // Only read for redeliveries (after a reconnect), so no index on the time.
    let oldest_fresh: Option<i64> = tx
        .prepare_cached(
            "SELECT committed_ms FROM mqtt_dedup WHERE session >= ?1 AND session < ?2
             ORDER BY committed_ms DESC LIMIT 1 OFFSET ?3",
        )?
        .query_row(params![from, to, FRESH_MARKS - 1], |r| r.get(0))
        .optional()?;
    Ok(oldest_fresh.is_none_or(|t| at >= t))
}

/// The range of mark keys of `key`'s session: `SESSION|...` for a `SESSION|MAPPING` key, the key
/// itself otherwise.
fn session_range(key: &str) -> (String, String) {
    match key.rsplit_once('|') {
        Some((session, _)) => (format!("{session}|"), format!("{session}}}")),
        None => (key.to_string(), format!("{key}\u{1}")),
    }
}

impl Store {
    /// Whether a redelivered message with this packet id was committed under `key`
    /// (`SESSION|MAPPING`), by a mark still fresh (see the module's doc).
    pub fn dedup_is_marked(&self, key: &str, packet_id: u16) -> Result<bool> {
        self.read(|tx| is_marked(tx, key, packet_id))
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
        let (from, to) = session_range(&format!("{session}|"));
        self.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "DELETE FROM mqtt_dedup WHERE session = ?1 OR (session >= ?2 AND session < ?3)",
                )?
                .execute(params![session, from, to])? as u64)
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
    fn only_the_sessions_newest_marks_count_for_a_redelivery() {
        let (_dir, store) = temp_store();
        let at = |key: &str, pid: u16, ms: i64| {
            store.write(|tx| super::mark(tx, key, pid, ms)).unwrap();
        };
        // Packet id 7 committed long ago for mapping m1 ...
        at("b:1883/c|m1", 7, 1_000);
        assert!(store.dedup_is_marked("b:1883/c|m1", 7).unwrap());
        // ... then FRESH_MARKS later messages of the session, spread over two mappings (and
        // another session's, which do not count).
        for i in 0..super::FRESH_MARKS {
            let (key, pid) = if i % 2 == 0 {
                ("b:1883/c|m1", 8 + i as u16)
            } else {
                ("b:1883/c|m2", 8 + i as u16)
            };
            at(key, pid, 2_000 + i);
            at("b:1883/other|m1", 8 + i as u16, 2_000 + i);
        }
        // A redelivery with packet id 7 is a new message that reused it: not a duplicate.
        assert!(!store.dedup_is_marked("b:1883/c|m1", 7).unwrap());
        // The session's newest marks count, whichever mapping wrote them.
        assert!(store.dedup_is_marked("b:1883/c|m1", 8).unwrap());
        let newest = 8 + super::FRESH_MARKS as u16 - 1;
        assert!(store.dedup_is_marked("b:1883/c|m2", newest).unwrap());
        // Another session with few marks: all count.
        at("b:1883/few|m1", 7, 1_000);
        assert!(store.dedup_is_marked("b:1883/few|m1", 7).unwrap());

        // A lost session forgets the marks of all its mappings, and only its.
        let cleared = store.dedup_clear_session("b:1883/c").unwrap();
        assert_eq!(cleared as i64, super::FRESH_MARKS + 1);
        assert!(!store.dedup_is_marked("b:1883/c|m2", newest).unwrap());
        assert!(store.dedup_is_marked("b:1883/other|m1", newest).unwrap());
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

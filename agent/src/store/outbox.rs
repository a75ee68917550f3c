//! The durable MQTT outbox: messages to publish (function publishes, destinations, MQTT 5
//! responses), written in the transaction that commits the invocation producing them.
//!
//! The MQTT client publishes rows in `seq` order ([`Store::outbox_pending`]) and deletes a row
//! only when the broker acknowledged it (QoS 1/2) or once it was sent (QoS 0), so rows survive
//! broker and agent restarts. A crash between the broker's ack and the delete publishes the row
//! again: at-least-once on the way out; `message_id` (a ULID) lets receivers deduplicate.
//!
//! The outbox is bounded ([`Store::outbox_max_rows`]): when a commit takes it beyond the bound,
//! the oldest rows are dropped in the same transaction and counted (`dropped.outbox`, reported
//! by [`Store::dropped_totals`]), like retention drops. Its row count is trigger-maintained.

use rusqlite::{params, params_from_iter, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};

/// Largest number of rows one [`Store::outbox_pending`] call returns.
pub const MAX_PENDING: u32 = 10_000;

/// A message to publish, as a commit hands it over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    /// MQTT 5 correlation data (responses to requests).
    pub correlation: Option<Vec<u8>>,
    /// Unique id (a ULID): MQTT 5 publishes carry it as the user property `edgefn-id`.
    pub message_id: String,
}

impl OutboxMessage {
    /// A message with a fresh `message_id`.
    pub fn new(
        topic: impl Into<String>,
        payload: Vec<u8>,
        qos: u8,
        correlation: Option<Vec<u8>>,
    ) -> OutboxMessage {
        OutboxMessage {
            topic: topic.into(),
            payload,
            qos,
            correlation,
            message_id: ulid::Ulid::new().to_string(),
        }
    }
}

/// A stored outbox row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Position: publish in this order; never reused.
    pub seq: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub correlation: Option<Vec<u8>>,
    pub message_id: String,
    pub created_ms: i64,
}

impl OutboxRow {
    /// The row `push` wrote for `m` at `seq`.
    pub(crate) fn written(seq: i64, m: &OutboxMessage, now: i64) -> OutboxRow {
        OutboxRow {
            seq,
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
            correlation: m.correlation.clone(),
            message_id: m.message_id.clone(),
            created_ms: now,
        }
    }
}

/// Deletes published rows in the caller's transaction; returns how many existed.
pub(crate) fn delete_many(tx: &Transaction<'_>, seqs: &[i64]) -> Result<u64> {
    let mut n = 0;
    // Bounded statement size (SQLite's default limit is 32766 variables).
    for chunk in seqs.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        n += tx
            .prepare_cached(&format!("DELETE FROM outbox WHERE seq IN ({marks})"))?
            .execute(params_from_iter(chunk))? as u64;
    }
    Ok(n)
}

fn row_from(row: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        seq: row.get(0)?,
        topic: row.get(1)?,
        payload: row.get(2)?,
        qos: row.get(3)?,
        correlation: row.get(4)?,
        message_id: row.get(5)?,
        created_ms: row.get(6)?,
    })
}

/// Appends a message in the caller's transaction (the bound is applied by [`enforce_bound`]).
pub(crate) fn push(tx: &Transaction<'_>, m: &OutboxMessage, now: i64) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO outbox (topic, payload, qos, correlation, message_id, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        m.topic,
        m.payload,
        m.qos,
        m.correlation,
        m.message_id,
        now
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Drops the oldest rows beyond `max` (at least 1 row is kept) and counts them; returns how many.
pub(crate) fn enforce_bound(tx: &Transaction<'_>, max: u64) -> Result<u64> {
    let rows: u64 = tx
        .prepare_cached("SELECT value FROM counters WHERE name = 'rows.outbox'")?
        .query_row([], |r| r.get(0))?;
    let excess = rows.saturating_sub(max.max(1));
    if excess == 0 {
        return Ok(0);
    }
    let n = tx
        .prepare_cached(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?1)",
        )?
        .execute([excess as i64])? as u64;
    tx.prepare_cached("UPDATE counters SET value = value + ?1 WHERE name = 'dropped.outbox'")?
        .execute([n as i64])?;
    Ok(n)
}

impl Store {
    /// Appends messages in one transaction, outside an invocation (inside a commit, use
    /// [`super::CommitExtra::outbox`]). Returns their seqs.
    pub fn outbox_push(&self, messages: &[OutboxMessage]) -> Result<Vec<i64>> {
        let max = self.outbox_max_rows();
        self.write(|tx| {
            let now = now_ms();
            let seqs = messages
                .iter()
                .map(|m| push(tx, m, now))
                .collect::<Result<Vec<_>>>()?;
            enforce_bound(tx, max)?;
            Ok(seqs)
        })
    }

    /// The oldest `limit` (1..=[`MAX_PENDING`]) rows after position `after_seq` (0 = from the
    /// start), in publish order.
    pub fn outbox_pending(&self, limit: u32, after_seq: i64) -> Result<Vec<OutboxRow>> {
        if limit == 0 || limit > MAX_PENDING {
            return Err(StoreError::InvalidQuery(format!(
                "limit {limit} is outside 1..={MAX_PENDING}"
            )));
        }
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, topic, payload, qos, correlation, message_id, created_ms
                   FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after_seq, limit], row_from)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Deletes a published row; false if it was already gone.
    pub fn outbox_delete(&self, seq: i64) -> Result<bool> {
        Ok(self.outbox_delete_many(&[seq])? > 0)
    }

    /// Deletes published rows in one transaction; returns how many existed.
    pub fn outbox_delete_many(&self, seqs: &[i64]) -> Result<u64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        self.write(|tx| delete_many(tx, seqs))
    }

    /// Number of rows waiting to be published (O(1)).
    pub fn outbox_count(&self) -> Result<u64> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT value FROM counters WHERE name = 'rows.outbox'")?
                .query_row([], |r| r.get(0))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    fn msg(i: usize) -> OutboxMessage {
        OutboxMessage::new(format!("out/{i}"), vec![i as u8], (i % 3) as u8, None)
    }

    #[test]
    fn push_pending_delete_in_order() {
        let (_dir, store) = temp_store();
        let mut with_correlation = msg(0);
        with_correlation.correlation = Some(b"corr".to_vec());
        let seqs = store
            .outbox_push(&[with_correlation.clone(), msg(1), msg(2)])
            .unwrap();
        assert_eq!(store.outbox_count().unwrap(), 3);
        let rows = store.outbox_pending(10, 0).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            seqs,
            "publish order"
        );
        assert_eq!(rows[0].topic, "out/0");
        assert_eq!(rows[0].correlation.as_deref(), Some(&b"corr"[..]));
        assert_eq!(rows[0].message_id, with_correlation.message_id);
        assert_eq!(rows[0].message_id.len(), 26);
        assert_ne!(rows[0].message_id, rows[1].message_id);
        assert_eq!((rows[1].qos, rows[2].qos), (1, 2));
        assert_eq!(store.outbox_pending(1, seqs[0]).unwrap()[0].seq, seqs[1]);

        assert!(store.outbox_delete(seqs[1]).unwrap());
        assert!(!store.outbox_delete(seqs[1]).unwrap());
        assert_eq!(store.outbox_count().unwrap(), 2);
        assert_eq!(
            store.outbox_delete_many(&[seqs[0], seqs[2], 999]).unwrap(),
            2
        );
        assert_eq!(store.outbox_count().unwrap(), 0);
        assert_eq!(store.outbox_delete_many(&[]).unwrap(), 0);
        assert!(store.outbox_pending(0, 0).is_err());
        // Bad QoS is refused by the schema.
        let mut bad = msg(0);
        bad.qos = 3;
        assert!(store.outbox_push(&[bad]).is_err());
        assert_eq!(store.outbox_count().unwrap(), 0);
    }

    #[test]
    fn delete_many_handles_large_batches() {
        let (_dir, store) = temp_store();
        let messages: Vec<_> = (0..1_200).map(msg).collect();
        let seqs = store.outbox_push(&messages).unwrap();
        assert_eq!(store.outbox_delete_many(&seqs).unwrap(), 1_200);
        assert_eq!(store.outbox_count().unwrap(), 0);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts_them() {
        let (_dir, store) = temp_store();
        store.set_outbox_max_rows(5);
        assert_eq!(store.outbox_max_rows(), 5);
        store
            .outbox_push(&(0..4).map(msg).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(store.dropped_totals().unwrap().outbox, 0);
        store
            .outbox_push(&(4..8).map(msg).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(store.outbox_count().unwrap(), 5);
        let topics: Vec<_> = store
            .outbox_pending(100, 0)
            .unwrap()
            .into_iter()
            .map(|r| r.topic)
            .collect();
        assert_eq!(topics, ["out/3", "out/4", "out/5", "out/6", "out/7"]);
        assert_eq!(store.dropped_totals().unwrap().outbox, 3);
        store.outbox_push(&[msg(8)]).unwrap();
        assert_eq!(store.dropped_totals().unwrap().outbox, 4);
    }
}

//! Telemetry upload state: two cursors over the log and invocation tables, the next batch
//! number, stats buckets flagged `unsent`, and counts of records deleted before upload
//! (schema V4). There is no outbox table: a record is written once, by the commit that
//! creates it, and the upload reads it where it is (no write amplification on the hot path).
//!
//! A batch is built from the records after the cursors (oldest first across both tables, at
//! most `max_records`) and every unsent stats bucket (at most `max_stats`). Nothing is written
//! when a batch is built or sent; the cloud's answer ([`UploadAck`]) is recorded in one
//! transaction by [`Store::upload_acked`]: cursors move to the extent the cloud stored (for a
//! batch it already had, the extent of the first time), the batch number moves on, stats
//! buckets unchanged since they were read stop being unsent. A crash between sending and
//! recording re-sends the same batch number; the cloud answers `duplicate` with what it holds.
//!
//! Drops: the delete triggers count every log/invocation row deleted while its seq is past the
//! acknowledged cursor (retention, the disk budget) as dropped before upload. A row deleted
//! while its batch was in flight was counted too, but the cloud stored it: the ack's stored
//! counts against the rows still present in the acknowledged range correct that exactly.

use edgefn_cloud::protocol::telemetry::{
    Dropped, InvocationEntry, LogEntry, StatsEntry, UploadAck, UploadBatch,
};
use rusqlite::{params, Transaction};

use base64::Engine;

use super::db::Store;
use super::error::{Result, StoreError};

/// Raw size (estimated JSON bytes) above which a batch is cut, whatever `max_records` says.
pub const MAX_BATCH_RAW_BYTES: usize = 4 << 20;

fn counter(tx: &Transaction<'_>, name: &str) -> Result<i64> {
    Ok(tx
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

fn set_counter(tx: &Transaction<'_>, name: &str, value: i64) -> Result<()> {
    tx.prepare_cached("UPDATE counters SET value = ?2 WHERE name = ?1")?
        .execute(params![name, value])?;
    Ok(())
}

/// Where the upload stands (for status output and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UploadStatus {
    /// The number of the next batch to send.
    pub next_batch: u64,
    /// Log / invocation records not uploaded yet.
    pub pending_logs: u64,
    pub pending_invocations: u64,
    /// Records deleted before they were uploaded (since this device identity began).
    pub dropped: Dropped,
    /// Estimated bytes of all log and invocation records kept (the disk budget's measure).
    pub record_bytes: u64,
}

/// One record of either table, to merge both oldest first.
enum Either {
    Log(LogEntry),
    Invocation(InvocationEntry),
}

impl Either {
    fn raw_size(&self) -> usize {
        match self {
            Either::Log(l) => {
                96 + l.text.len()
                    + l.function.as_ref().map_or(0, String::len)
                    + l.invocation_id.as_ref().map_or(0, String::len)
            }
            Either::Invocation(i) => {
                260 + i.id.len()
                    + i.function.len()
                    + i.subject.len()
                    + i.event_id.len()
                    + i.error.as_ref().map_or(0, String::len)
            }
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Store {
    /// The batch to send next: records after the cursors (oldest first across logs and
    /// invocations, at most `max_records` and about [`MAX_BATCH_RAW_BYTES`]), unsent stats
    /// buckets (at most `max_stats`), and the drop counts. Writes nothing. `None` when there is
    /// nothing new to tell the cloud.
    pub fn upload_batch(
        &self,
        max_records: usize,
        max_stats: usize,
    ) -> Result<Option<UploadBatch>> {
        if max_records == 0 {
            return Err(StoreError::InvalidQuery("upload batch of 0 records".into()));
        }
        self.read(|tx| {
            let logs_acked = counter(tx, "upload.logs_acked")?;
            let invocations_acked = counter(tx, "upload.invocations_acked")?;
            let mut logs = tx
                .prepare_cached(
                    "SELECT seq, time_ms, level, function, version, invocation_id, text
                       FROM logs WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![logs_acked, max_records as i64], |r| {
                    let level: i64 = r.get(2)?;
                    Ok(LogEntry {
                        seq: r.get(0)?,
                        time_ms: r.get(1)?,
                        level: edgefn_cloud::protocol::telemetry::LEVELS
                            [level.clamp(0, 4) as usize]
                            .to_owned(),
                        function: r.get(3)?,
                        version: r.get(4)?,
                        invocation_id: r.get(5)?,
                        text: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .peekable();
            let mut invocations = tx
                .prepare_cached(
                    "SELECT seq, id, function, version, qualifier, source, subject, event_id,
                            attempt, event_time_ms, start_ms, duration_us, fuel_used, outcome,
                            error
                       FROM invocations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![invocations_acked, max_records as i64], |r| {
                    Ok(InvocationEntry {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        function: r.get(2)?,
                        version: r.get(3)?,
                        qualifier: r.get(4)?,
                        source: r.get(5)?,
                        subject: r.get(6)?,
                        event_id: r.get(7)?,
                        attempt: r.get(8)?,
                        event_time_ms: r.get(9)?,
                        start_ms: r.get(10)?,
                        duration_us: r.get(11)?,
                        fuel_used: r.get(12)?,
                        outcome: r.get(13)?,
                        error: r.get(14)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .peekable();

            // Merge by time, taking a prefix of each table (so each cursor stays contiguous).
            let mut batch = UploadBatch {
                batch_seq: counter(tx, "upload.next_batch")? as u64,
                logs_to: logs_acked,
                invocations_to: invocations_acked,
                ..UploadBatch::default()
            };
            let mut raw = 0usize;
            while batch.records() < max_records && raw < MAX_BATCH_RAW_BYTES {
                let take_log = match (logs.peek(), invocations.peek()) {
                    (Some(l), Some(i)) => l.time_ms <= i.start_ms,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let item = if take_log {
                    Either::Log(logs.next().expect("peeked"))
                } else {
                    Either::Invocation(invocations.next().expect("peeked"))
                };
                raw += item.raw_size();
                match item {
                    Either::Log(l) => {
                        batch.logs_to = l.seq;
                        batch.logs.push(l);
                    }
                    Either::Invocation(i) => {
                        batch.invocations_to = i.seq;
                        batch.invocations.push(i);
                    }
                }
            }

            batch.stats = tx
                .prepare_cached(
                    "SELECT function, version_key, minute_ms, invocations, errors, throttles,
                            retries, fuel_sum, duration_sum_us, latency_sum_us, duration_hist,
                            latency_hist
                       FROM stats WHERE unsent = 1 ORDER BY minute_ms LIMIT ?1",
                )?
                .query_map([max_stats as i64], |r| {
                    Ok(StatsEntry {
                        function: r.get(0)?,
                        version: r.get(1)?,
                        minute_ms: r.get(2)?,
                        invocations: r.get(3)?,
                        errors: r.get(4)?,
                        throttles: r.get(5)?,
                        retries: r.get(6)?,
                        fuel_sum: r.get(7)?,
                        duration_sum_us: r.get(8)?,
                        latency_sum_us: r.get(9)?,
                        duration_hist: b64(r.get_ref(10)?.as_blob()?),
                        latency_hist: b64(r.get_ref(11)?.as_blob()?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            batch.dropped = Dropped {
                logs: counter(tx, "upload.dropped.logs")?.max(0) as u64,
                invocations: counter(tx, "upload.dropped.invocations")?.max(0) as u64,
            };
            let acked_drops = Dropped {
                logs: counter(tx, "upload.dropped_acked.logs")?.max(0) as u64,
                invocations: counter(tx, "upload.dropped_acked.invocations")?.max(0) as u64,
            };
            let news =
                batch.records() > 0 || !batch.stats.is_empty() || batch.dropped != acked_drops;
            Ok(news.then_some(batch))
        })
    }

    /// Records the cloud's answer to `batch`, in one transaction (see the module docs).
    pub fn upload_acked(&self, batch: &UploadBatch, ack: &UploadAck) -> Result<()> {
        if ack.batch_seq != batch.batch_seq {
            return Err(StoreError::InvalidQuery(format!(
                "ack for batch {} does not answer batch {}",
                ack.batch_seq, batch.batch_seq
            )));
        }
        self.write(|tx| {
            let logs_acked = counter(tx, "upload.logs_acked")?;
            let invocations_acked = counter(tx, "upload.invocations_acked")?;
            // Rows the cloud stored that were deleted here meanwhile were counted as dropped.
            let present = |table: &str, from: i64, to: i64| -> Result<i64> {
                Ok(tx
                    .prepare_cached(&format!(
                        "SELECT count(*) FROM {table} WHERE seq > ?1 AND seq <= ?2"
                    ))?
                    .query_row(params![from, to], |r| r.get(0))?)
            };
            let logs_to = ack.logs_to.max(logs_acked);
            let invocations_to = ack.invocations_to.max(invocations_acked);
            let lost_logs = (ack.logs as i64 - present("logs", logs_acked, logs_to)?).max(0);
            let lost_invocations = (ack.invocations as i64
                - present("invocations", invocations_acked, invocations_to)?)
            .max(0);
            tx.prepare_cached("UPDATE counters SET value = max(0, value - ?2) WHERE name = ?1")?
                .execute(params!["upload.dropped.logs", lost_logs])?;
            tx.prepare_cached("UPDATE counters SET value = max(0, value - ?2) WHERE name = ?1")?
                .execute(params!["upload.dropped.invocations", lost_invocations])?;
            set_counter(tx, "upload.logs_acked", logs_to)?;
            set_counter(tx, "upload.invocations_acked", invocations_to)?;
            let next = counter(tx, "upload.next_batch")?.max(batch.batch_seq as i64 + 1);
            set_counter(tx, "upload.next_batch", next)?;
            if !ack.duplicate {
                // A duplicate answer means the cloud kept an older copy of these buckets: they
                // stay unsent and go again with the next batch (buckets replace, so that is
                // harmless). Otherwise a bucket is sent unless it changed since it was read
                // (every change adds to invocations or throttles).
                let mut clear = tx.prepare_cached(
                    "UPDATE stats SET unsent = 0
                      WHERE function = ?1 AND version_key = ?2 AND minute_ms = ?3
                        AND invocations = ?4 AND throttles = ?5",
                )?;
                for s in &batch.stats {
                    clear.execute(params![
                        s.function,
                        s.version,
                        s.minute_ms,
                        s.invocations,
                        s.throttles
                    ])?;
                }
                set_counter(tx, "upload.dropped_acked.logs", batch.dropped.logs as i64)?;
                set_counter(
                    tx,
                    "upload.dropped_acked.invocations",
                    batch.dropped.invocations as i64,
                )?;
            }
            Ok(())
        })
    }

    /// Starts the batch numbering and drop counts afresh when the store uploads for a device
    /// it did not upload for before (first enrollment, `enroll --force`). The cursors stay:
    /// records already uploaded are not sent to the new identity again.
    pub fn upload_bind_device(&self, device_id: &str) -> Result<bool> {
        self.write(|tx| {
            let current: Option<String> = tx
                .prepare_cached("SELECT value FROM meta WHERE key = 'upload.device'")?
                .query_row([], |r| r.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            if current.as_deref() == Some(device_id) {
                return Ok(false);
            }
            for (name, value) in [
                ("upload.next_batch", 1),
                ("upload.dropped.logs", 0),
                ("upload.dropped.invocations", 0),
                ("upload.dropped_acked.logs", 0),
                ("upload.dropped_acked.invocations", 0),
            ] {
                set_counter(tx, name, value)?;
            }
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('upload.device', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([device_id])?;
            Ok(true)
        })
    }

    /// Where the upload stands.
    pub fn upload_status(&self) -> Result<UploadStatus> {
        self.read(|tx| {
            let pending = |table: &str, cursor: &str| -> Result<u64> {
                let at = counter(tx, cursor)?;
                Ok(tx
                    .prepare_cached(&format!("SELECT count(*) FROM {table} WHERE seq > ?1"))?
                    .query_row([at], |r| r.get::<_, i64>(0))? as u64)
            };
            Ok(UploadStatus {
                next_batch: counter(tx, "upload.next_batch")? as u64,
                pending_logs: pending("logs", "upload.logs_acked")?,
                pending_invocations: pending("invocations", "upload.invocations_acked")?,
                dropped: Dropped {
                    logs: counter(tx, "upload.dropped.logs")?.max(0) as u64,
                    invocations: counter(tx, "upload.dropped.invocations")?.max(0) as u64,
                },
                record_bytes: (counter(tx, "bytes.logs")? + counter(tx, "bytes.invocations")?)
                    .max(0) as u64,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{InvocationLog, Level, Outcome};
    use crate::store::test_support::{outcome, record, temp_store};
    use crate::store::Retention;

    fn seed(store: &Store, n: usize, tag: &str) {
        let batch: Vec<_> = (0..n)
            .map(|i| {
                let mut item = outcome(record("f", &format!("{tag}-{i}"), Outcome::Success));
                item.record.start_ms += i as i64;
                item.logs = vec![InvocationLog {
                    time_ms: item.record.start_ms,
                    level: Level::Info,
                    text: format!("{tag} line {i}"),
                }];
                item
            })
            .collect();
        store.commit(&batch).unwrap();
    }

    fn ack(batch: &UploadBatch, duplicate: bool) -> UploadAck {
        UploadAck {
            batch_seq: batch.batch_seq,
            duplicate,
            logs_to: batch.logs_to,
            invocations_to: batch.invocations_to,
            logs: batch.logs.len() as u64,
            invocations: batch.invocations.len() as u64,
        }
    }

    #[test]
    fn batches_walk_the_tables_once_and_stats_until_sent() {
        let (_dir, store) = temp_store();
        store.upload_bind_device("d-1").unwrap();
        seed(&store, 10, "a");
        let b1 = store.upload_batch(8, 100).unwrap().unwrap();
        assert_eq!(b1.batch_seq, 1);
        assert_eq!(b1.records(), 8);
        // Oldest first across both tables: each invocation and its line alternate.
        assert_eq!(b1.logs.len(), 4);
        assert_eq!(b1.invocations.len(), 4);
        assert_eq!(b1.stats.len(), 1);
        // Building again without an ack gives the same batch.
        assert_eq!(store.upload_batch(8, 100).unwrap().unwrap(), b1);
        store.upload_acked(&b1, &ack(&b1, false)).unwrap();
        let b2 = store.upload_batch(8, 100).unwrap().unwrap();
        assert_eq!(b2.batch_seq, 2);
        assert_eq!(b2.records(), 8);
        assert!(b2.stats.is_empty(), "the bucket did not change");
        assert_eq!(b2.logs[0].seq, b1.logs_to + 1);
        store.upload_acked(&b2, &ack(&b2, false)).unwrap();
        let b3 = store.upload_batch(8, 100).unwrap().unwrap();
        assert_eq!(b3.records(), 4);
        store.upload_acked(&b3, &ack(&b3, false)).unwrap();
        assert_eq!(store.upload_batch(8, 100).unwrap(), None, "nothing new");
        seed(&store, 1, "b");
        let b4 = store.upload_batch(8, 100).unwrap().unwrap();
        assert_eq!(b4.records(), 2);
        assert_eq!(b4.stats.len(), 1, "the bucket changed");
        assert_eq!(b4.stats[0].invocations, 11);
    }

    #[test]
    fn a_duplicate_answer_moves_to_the_clouds_extent_and_keeps_stats_unsent() {
        let (_dir, store) = temp_store();
        store.upload_bind_device("d-1").unwrap();
        seed(&store, 4, "a");
        let sent = store.upload_batch(4, 100).unwrap().unwrap();
        // The agent "crashed" before recording the ack; more records arrived; the rebuilt batch
        // has the same number but more in it. The cloud holds the first one.
        seed(&store, 4, "b");
        let rebuilt = store.upload_batch(100, 100).unwrap().unwrap();
        assert_eq!(rebuilt.batch_seq, sent.batch_seq);
        assert!(rebuilt.records() > sent.records());
        store.upload_acked(&rebuilt, &ack(&sent, true)).unwrap();
        let next = store.upload_batch(100, 100).unwrap().unwrap();
        assert_eq!(next.batch_seq, 2);
        assert_eq!(
            next.records(),
            16 - 4,
            "exactly what the cloud does not have"
        );
        assert_eq!(next.stats.len(), 1, "stats go again after a duplicate");
    }

    #[test]
    fn deletions_before_upload_are_counted_and_corrected_for_rows_in_flight() {
        let (_dir, store) = temp_store();
        store.upload_bind_device("d-1").unwrap();
        seed(&store, 10, "a"); // 10 invocations, 10 lines
        let unbounded = Retention {
            max_age: None,
            max_log_rows: Some(6),
            max_invocation_rows: Some(6),
            max_dead_letter_rows: None,
            max_stats_age: None,
            max_record_bytes: None,
            chunk_rows: 100,
        };
        store.prune(&unbounded).unwrap();
        let s = store.upload_status().unwrap();
        assert_eq!(
            s.dropped,
            Dropped {
                logs: 4,
                invocations: 4
            }
        );
        assert_eq!((s.pending_logs, s.pending_invocations), (6, 6));

        // In flight: two more of each are deleted before the ack comes back.
        let batch = store.upload_batch(100, 100).unwrap().unwrap();
        assert_eq!(
            batch.dropped,
            Dropped {
                logs: 4,
                invocations: 4
            }
        );
        store
            .prune(&Retention {
                max_log_rows: Some(4),
                max_invocation_rows: Some(4),
                ..unbounded
            })
            .unwrap();
        assert_eq!(store.upload_status().unwrap().dropped.logs, 6);
        store.upload_acked(&batch, &ack(&batch, false)).unwrap();
        let s = store.upload_status().unwrap();
        assert_eq!(
            s.dropped,
            Dropped {
                logs: 4,
                invocations: 4
            },
            "stored, not dropped"
        );
        assert_eq!((s.pending_logs, s.pending_invocations), (0, 0));
    }

    #[test]
    fn record_bytes_follow_inserts_and_deletes() {
        let (_dir, store) = temp_store();
        let empty = store.upload_status().unwrap().record_bytes;
        seed(&store, 10, "a");
        let full = store.upload_status().unwrap().record_bytes;
        assert!(full > empty + 10 * (24 + 8), "{full}");
        store
            .prune(&Retention {
                max_age: None,
                max_log_rows: Some(0),
                max_invocation_rows: Some(0),
                max_dead_letter_rows: None,
                max_stats_age: None,
                max_record_bytes: None,
                chunk_rows: 100,
            })
            .unwrap();
        assert_eq!(store.upload_status().unwrap().record_bytes, 0);
    }

    #[test]
    fn binding_another_device_restarts_numbering_and_drop_counts() {
        let (_dir, store) = temp_store();
        assert!(store.upload_bind_device("d-1").unwrap());
        assert!(!store.upload_bind_device("d-1").unwrap());
        seed(&store, 2, "a");
        let b = store.upload_batch(100, 100).unwrap().unwrap();
        store.upload_acked(&b, &ack(&b, false)).unwrap();
        assert_eq!(store.upload_status().unwrap().next_batch, 2);
        assert!(store.upload_bind_device("d-2").unwrap());
        assert_eq!(store.upload_status().unwrap().next_batch, 1);
        assert_eq!(store.upload_batch(100, 100).unwrap(), None, "cursors kept");
    }
}

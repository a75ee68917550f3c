//! Telemetry ingest: a device's upload batch stored exactly once, in one transaction, and
//! cloud-side retention of what devices uploaded.
//!
//! Exactly once: `telemetry_batches` has the primary key `(device_id, batch_seq)`. The
//! transaction first looks the batch up; a batch already stored is answered with the extent and
//! counts stored then (`duplicate: true`) and nothing else is written. Otherwise the batch row,
//! its records (keyed by the device's own positions, `ON CONFLICT DO NOTHING`), its stats
//! buckets (replacing the stored copy: they are cumulative) and the device's drop counts are
//! written together. A server killed before the commit stored nothing; the device sends the
//! same batch again.
//!
//! Test hook: `EDGEFN_TEST_INGEST_PAUSE=commit` blocks an ingest inside its transaction after
//! every row was written and before the commit, printing `ingest: test hook: paused before
//! commit` on stderr, so a test can `kill -9` the server there.

use base64::Engine;

use super::{Result, Service};
use crate::now_ms;
use crate::protocol::histogram::Histogram;
use crate::protocol::telemetry::{level_number, UploadAck, UploadBatch};
use crate::store::{StoreError, Tx, Value};

/// The environment variable of the test hook (see the module docs).
pub const TEST_INGEST_PAUSE_ENV: &str = "EDGEFN_TEST_INGEST_PAUSE";

/// Most log + invocation records one batch may carry.
pub const MAX_BATCH_RECORDS: usize = 20_000;
/// Most stats buckets one batch may carry.
pub const MAX_BATCH_STATS: usize = 10_000;
/// Rows per multi-row INSERT (parameters stay far below both backends' limits).
const ROWS_PER_INSERT: usize = 100;

/// Counts of what one ingest did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub duplicate: bool,
    pub logs: u64,
    pub invocations: u64,
    pub stats: u64,
}

/// `INSERT INTO head VALUES (...), (...) tail` in chunks.
fn insert_rows(
    tx: &mut dyn Tx,
    head: &str,
    tail: &str,
    width: usize,
    rows: &[Vec<Value>],
) -> std::result::Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = format!("{head} VALUES ");
        let mut params = Vec::with_capacity(chunk.len() * width);
        for (r, row) in chunk.iter().enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", r * width + c + 1));
            }
            sql.push(')');
            params.extend(row.iter().cloned());
        }
        sql.push(' ');
        sql.push_str(tail);
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// Checks what a device sent; the message names what is wrong.
pub fn validate(batch: &UploadBatch) -> Result<()> {
    let bad = |m: String| Err(StoreError::invalid(m));
    if batch.batch_seq == 0 {
        return bad("batch_seq must be at least 1".into());
    }
    if batch.records() > MAX_BATCH_RECORDS {
        return bad(format!(
            "batch of {} records (at most {MAX_BATCH_RECORDS})",
            batch.records()
        ));
    }
    if batch.stats.len() > MAX_BATCH_STATS {
        return bad(format!(
            "batch of {} stats buckets (at most {MAX_BATCH_STATS})",
            batch.stats.len()
        ));
    }
    for l in &batch.logs {
        if level_number(&l.level).is_none() {
            return bad(format!(
                "log record {}: level {:?} is not trace, debug, info, warn or error",
                l.seq, l.level
            ));
        }
        if l.seq > batch.logs_to {
            return bad(format!(
                "log record {} is past logs_to {}",
                l.seq, batch.logs_to
            ));
        }
    }
    for i in &batch.invocations {
        if i.seq > batch.invocations_to {
            return bad(format!(
                "invocation record {} is past invocations_to {}",
                i.seq, batch.invocations_to
            ));
        }
    }
    for s in &batch.stats {
        if s.version != "latest" && !s.version.parse::<u32>().is_ok_and(|v| v > 0) {
            return bad(format!(
                "stats bucket of {}: version {:?} is not `latest` or a version number",
                s.function, s.version
            ));
        }
        if s.minute_ms % 60_000 != 0 {
            return bad(format!(
                "stats bucket of {}: minute_ms {} is not the start of a minute",
                s.function, s.minute_ms
            ));
        }
        for (what, text) in [("duration", &s.duration_hist), ("latency", &s.latency_hist)] {
            decode_hist(text).map_err(|e| {
                StoreError::invalid(format!("stats bucket of {}: {what}_hist: {e}", s.function))
            })?;
        }
    }
    Ok(())
}

/// base64 of a histogram's binary form, decoded and checked.
pub fn decode_hist(text: &str) -> std::result::Result<(Vec<u8>, Histogram), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    let h = Histogram::from_bytes(&bytes).map_err(|e| e.to_string())?;
    Ok((bytes, h))
}

fn store_batch(
    tx: &mut dyn Tx,
    device: &str,
    batch: &UploadBatch,
    wire_bytes: u64,
    now: i64,
) -> std::result::Result<(UploadAck, Ingested), StoreError> {
    if let Some(r) = tx.query_opt(
        "SELECT logs_to, invocations_to, logs, invocations FROM telemetry_batches
          WHERE device_id = $1 AND batch_seq = $2",
        crate::params![device, batch.batch_seq],
    )? {
        let ack = UploadAck {
            batch_seq: batch.batch_seq,
            duplicate: true,
            logs_to: r.i64(0)?,
            invocations_to: r.i64(1)?,
            logs: r.u64(2)?,
            invocations: r.u64(3)?,
        };
        let counts = Ingested {
            duplicate: true,
            ..Ingested::default()
        };
        return Ok((ack, counts));
    }
    tx.execute(
        "INSERT INTO telemetry_batches (device_id, batch_seq, logs_to, invocations_to, logs,
                                        invocations, stats, wire_bytes, received_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        crate::params![
            device,
            batch.batch_seq,
            batch.logs_to,
            batch.invocations_to,
            batch.logs.len() as u64,
            batch.invocations.len() as u64,
            batch.stats.len() as u64,
            wire_bytes,
            now
        ],
    )?;
    let logs: Vec<Vec<Value>> = batch
        .logs
        .iter()
        .map(|l| {
            vec![
                device.into(),
                l.seq.into(),
                l.time_ms.into(),
                i64::from(level_number(&l.level).unwrap_or(2)).into(),
                l.function.clone().into(),
                l.version.into(),
                l.invocation_id.clone().into(),
                l.text.clone().into(),
                now.into(),
            ]
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO device_logs (device_id, seq, time_ms, level, function, version,
                                  invocation_id, text, received_ms)",
        "ON CONFLICT (device_id, seq) DO NOTHING",
        9,
        &logs,
    )?;
    let invocations: Vec<Vec<Value>> = batch
        .invocations
        .iter()
        .map(|i| {
            vec![
                device.into(),
                i.seq.into(),
                i.id.clone().into(),
                i.function.clone().into(),
                i.version.into(),
                i.qualifier.clone().into(),
                i.source.clone().into(),
                i.subject.clone().into(),
                i.event_id.clone().into(),
                i.attempt.into(),
                i.event_time_ms.into(),
                i.start_ms.into(),
                i.duration_us.into(),
                i.fuel_used.into(),
                i.outcome.clone().into(),
                i.error.clone().into(),
                now.into(),
            ]
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO device_invocations (device_id, seq, id, function, version, qualifier,
             source, subject, event_id, attempt, event_time_ms, start_ms, duration_us,
             fuel_used, outcome, error, received_ms)",
        "ON CONFLICT (device_id, seq) DO NOTHING",
        17,
        &invocations,
    )?;
    let mut stats = Vec::with_capacity(batch.stats.len());
    for s in &batch.stats {
        let (d, _) = decode_hist(&s.duration_hist).map_err(StoreError::invalid)?;
        let (l, _) = decode_hist(&s.latency_hist).map_err(StoreError::invalid)?;
        stats.push(vec![
            device.into(),
            s.function.clone().into(),
            s.version.clone().into(),
            s.minute_ms.into(),
            s.invocations.into(),
            s.errors.into(),
            s.throttles.into(),
            s.retries.into(),
            s.fuel_sum.into(),
            s.duration_sum_us.into(),
            s.latency_sum_us.into(),
            Value::Blob(d),
            Value::Blob(l),
        ]);
    }
    insert_rows(
        tx,
        "INSERT INTO device_stats (device_id, function, version_key, minute_ms, invocations,
             errors, throttles, retries, fuel_sum, duration_sum_us, latency_sum_us,
             duration_hist, latency_hist)",
        "ON CONFLICT (device_id, function, version_key, minute_ms) DO UPDATE SET
             invocations = excluded.invocations, errors = excluded.errors,
             throttles = excluded.throttles, retries = excluded.retries,
             fuel_sum = excluded.fuel_sum, duration_sum_us = excluded.duration_sum_us,
             latency_sum_us = excluded.latency_sum_us, duration_hist = excluded.duration_hist,
             latency_hist = excluded.latency_hist",
        13,
        &stats,
    )?;
    // Drop counts are totals: the newest batch's are the truth (the device may correct them
    // downwards when records it counted turn out to have been stored).
    tx.execute(
        "INSERT INTO device_telemetry (device_id, last_batch_seq, last_received_ms,
                                       dropped_logs, dropped_invocations)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_id) DO UPDATE SET
             last_batch_seq = excluded.last_batch_seq,
             last_received_ms = excluded.last_received_ms,
             dropped_logs = excluded.dropped_logs,
             dropped_invocations = excluded.dropped_invocations
         WHERE device_telemetry.last_batch_seq < excluded.last_batch_seq",
        crate::params![
            device,
            batch.batch_seq,
            now,
            batch.dropped.logs,
            batch.dropped.invocations
        ],
    )?;
    if std::env::var(TEST_INGEST_PAUSE_ENV).is_ok_and(|v| v == "commit") {
        eprintln!("ingest: test hook: paused before commit");
        loop {
            std::thread::park();
        }
    }
    let ack = UploadAck {
        batch_seq: batch.batch_seq,
        duplicate: false,
        logs_to: batch.logs_to,
        invocations_to: batch.invocations_to,
        logs: batch.logs.len() as u64,
        invocations: batch.invocations.len() as u64,
    };
    let counts = Ingested {
        duplicate: false,
        logs: batch.logs.len() as u64,
        invocations: batch.invocations.len() as u64,
        stats: batch.stats.len() as u64,
    };
    Ok((ack, counts))
}

/// What cloud retention deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub logs: u64,
    pub invocations: u64,
    pub stats: u64,
    pub batches: u64,
}

impl Service {
    /// Stores `batch` from `device` exactly once (see the module docs).
    pub async fn ingest(
        &self,
        device: String,
        batch: UploadBatch,
        wire_bytes: u64,
    ) -> Result<(UploadAck, Ingested)> {
        validate(&batch)?;
        let batch = std::sync::Arc::new(batch);
        self.store
            .tx(move |tx| store_batch(tx, &device, &batch, wire_bytes, now_ms()))
            .await
    }

    /// Deletes uploaded records older than `max_age_ms` (by record time; stats by minute).
    /// Each device's newest batch row is kept whatever its age: it is what answers a retry.
    pub async fn prune_telemetry(&self, max_age_ms: i64) -> Result<Pruned> {
        let cutoff = now_ms() - max_age_ms;
        self.store
            .tx(move |tx| {
                let p = crate::params![cutoff];
                Ok(Pruned {
                    logs: tx.execute("DELETE FROM device_logs WHERE time_ms < $1", p)?,
                    invocations: tx
                        .execute("DELETE FROM device_invocations WHERE start_ms < $1", p)?,
                    stats: tx.execute("DELETE FROM device_stats WHERE minute_ms < $1", p)?,
                    batches: tx.execute(
                        "DELETE FROM telemetry_batches WHERE received_ms < $1
                            AND batch_seq < (SELECT t.last_batch_seq FROM device_telemetry t
                                              WHERE t.device_id = telemetry_batches.device_id)",
                        p,
                    )?,
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::telemetry::{LogEntry, StatsEntry};

    fn log(seq: i64, level: &str) -> LogEntry {
        LogEntry {
            seq,
            time_ms: 1,
            level: level.into(),
            function: None,
            version: None,
            invocation_id: None,
            text: "t".into(),
        }
    }

    #[test]
    fn bad_batches_are_named() {
        let ok = UploadBatch {
            batch_seq: 1,
            logs_to: 2,
            logs: vec![log(1, "info"), log(2, "warn")],
            ..UploadBatch::default()
        };
        validate(&ok).unwrap();
        let msg = |b: UploadBatch| validate(&b).unwrap_err().to_string();
        assert!(msg(UploadBatch {
            batch_seq: 0,
            ..ok.clone()
        })
        .contains("batch_seq"));
        assert!(msg(UploadBatch {
            logs: vec![log(1, "loud")],
            ..ok.clone()
        })
        .contains("\"loud\""));
        assert!(msg(UploadBatch {
            logs_to: 1,
            ..ok.clone()
        })
        .contains("past logs_to 1"));
        let mut h = Histogram::new();
        h.record(5);
        let hist = base64::engine::general_purpose::STANDARD.encode(h.to_bytes());
        let bucket = StatsEntry {
            function: "f".into(),
            version: "latest".into(),
            minute_ms: 60_000,
            invocations: 1,
            errors: 0,
            throttles: 0,
            retries: 0,
            fuel_sum: 0,
            duration_sum_us: 5,
            latency_sum_us: 5,
            duration_hist: hist.clone(),
            latency_hist: hist,
        };
        validate(&UploadBatch {
            stats: vec![bucket.clone()],
            ..ok.clone()
        })
        .unwrap();
        assert!(msg(UploadBatch {
            stats: vec![StatsEntry {
                version: "v2".into(),
                ..bucket.clone()
            }],
            ..ok.clone()
        })
        .contains("\"v2\""));
        assert!(msg(UploadBatch {
            stats: vec![StatsEntry {
                minute_ms: 61_000,
                ..bucket.clone()
            }],
            ..ok.clone()
        })
        .contains("61000"));
        assert!(msg(UploadBatch {
            stats: vec![StatsEntry {
                latency_hist: "!!".into(),
                ..bucket
            }],
            ..ok
        })
        .contains("latency_hist"));
    }
}

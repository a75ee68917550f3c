//! Retention: log and invocation records, dead letters (and stats buckets) are bounded by age and
//! by row count so a chatty function cannot fill the disk. What was dropped is counted, durably
//! (so is what the bounded MQTT outbox dropped, see `outbox`).
//!
//! Pruning deletes oldest first in small chunks, each in its own short transaction, so commits
//! of new invocations interleave with a large prune instead of waiting for it. Row counts come
//! from trigger-maintained counters: deciding how much to drop never scans the history.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::error::Result;

/// Retention limits; `None` means unbounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Drop log and invocation records and dead letters older than this (by log time /
    /// invocation start / dead letter creation).
    pub max_age: Option<Duration>,
    /// Keep at most this many log lines (the newest).
    pub max_log_rows: Option<u64>,
    /// Keep at most this many invocation records (the newest).
    pub max_invocation_rows: Option<u64>,
    /// Keep at most this many dead letters (the newest).
    pub max_dead_letter_rows: Option<u64>,
    /// Drop stats buckets older than this. Buckets are small, so they usually live longer than
    /// the records.
    pub max_stats_age: Option<Duration>,
    /// The disk budget of log and invocation records (estimated bytes, `[upload] disk_budget`):
    /// over it, the oldest records of either table are dropped first, whether uploaded or not
    /// (records not uploaded yet are counted for the cloud, see `upload`).
    pub max_record_bytes: Option<u64>,
    /// Rows deleted per transaction: bounds how long a prune holds the write lock.
    pub chunk_rows: u32,
}

/// Pauses between two chunk transactions. The writer connection's mutex is not fair: taken
/// again at once, it went back to the prune loop chunk after chunk while the group commit waited
/// (0.2–1.9 s p99 stalls under MQTT load, docs/benchmarks.md). A short sleep lets a waiting
/// commit in first; a prune of 100k rows in chunks of 1,000 takes ~0.2 s longer.
fn let_the_writer_go() {
    std::thread::sleep(Duration::from_millis(2));
}

impl Default for Retention {
    /// A week of records, at most 1M log lines, 200k invocation records and 10k dead letters,
    /// 30 days of stats.
    fn default() -> Self {
        Self {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_log_rows: Some(1_000_000),
            max_invocation_rows: Some(200_000),
            max_dead_letter_rows: Some(10_000),
            max_stats_age: Some(Duration::from_secs(30 * 24 * 3600)),
            max_record_bytes: None,
            chunk_rows: 1_000,
        }
    }
}

/// Numbers of dropped rows (by one prune, or in total since the store was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub logs: u64,
    pub invocations: u64,
    pub stats_buckets: u64,
    pub dead_letters: u64,
    /// Oldest MQTT outbox rows dropped because the outbox was full (by commits, not by prune).
    pub outbox: u64,
}

/// Current numbers of rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    pub logs: u64,
    pub invocations: u64,
}

fn counter(tx: &Transaction<'_>, name: &str) -> Result<u64> {
    Ok(tx
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

fn add_to_counter(tx: &Transaction<'_>, name: &str, n: u64) -> Result<()> {
    tx.prepare_cached("UPDATE counters SET value = value + ?2 WHERE name = ?1")?
        .execute(params![name, n])?;
    Ok(())
}

/// One prunable table.
struct Table {
    /// Name in SQL.
    table: &'static str,
    /// Primary key column(s), to delete selected rows (stats is a WITHOUT ROWID table).
    key_columns: &'static str,
    /// Column holding the row's age, indexed.
    time_column: &'static str,
    /// Oldest-first order for count-based pruning (insertion order).
    order_column: &'static str,
    /// Counter of rows (none for stats, which are not bounded by count).
    rows_counter: Option<&'static str>,
    dropped_counter: &'static str,
}

const LOGS: Table = Table {
    table: "logs",
    key_columns: "seq",
    time_column: "time_ms",
    order_column: "seq",
    rows_counter: Some("rows.logs"),
    dropped_counter: "dropped.logs",
};
const INVOCATIONS: Table = Table {
    table: "invocations",
    key_columns: "seq",
    time_column: "start_ms",
    order_column: "seq",
    rows_counter: Some("rows.invocations"),
    dropped_counter: "dropped.invocations",
};
const DEAD_LETTERS: Table = Table {
    table: "dead_letters",
    key_columns: "id",
    time_column: "created_ms",
    order_column: "created_ms",
    rows_counter: Some("rows.dead_letters"),
    dropped_counter: "dropped.dead_letters",
};
const STATS: Table = Table {
    table: "stats",
    key_columns: "function, version_key, minute_ms",
    time_column: "minute_ms",
    order_column: "minute_ms",
    rows_counter: None,
    dropped_counter: "dropped.stats",
};

impl Store {
    /// Applies `retention` now; returns what this call dropped.
    pub fn prune(&self, retention: &Retention) -> Result<Dropped> {
        self.prune_at(retention, now_ms())
    }

    /// Applies `retention` as if the time were `now_ms`.
    pub fn prune_at(&self, retention: &Retention, now_ms: i64) -> Result<Dropped> {
        let chunk = i64::from(retention.chunk_rows.max(1));
        let cutoff =
            |age: Duration| now_ms.saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
        let mut dropped = Dropped::default();
        if let Some(age) = retention.max_age {
            dropped.logs += self.prune_older(&LOGS, cutoff(age), chunk)?;
            dropped.invocations += self.prune_older(&INVOCATIONS, cutoff(age), chunk)?;
            dropped.dead_letters += self.prune_older(&DEAD_LETTERS, cutoff(age), chunk)?;
        }
        if let Some(max) = retention.max_log_rows {
            dropped.logs += self.prune_excess(&LOGS, max, chunk)?;
        }
        if let Some(max) = retention.max_invocation_rows {
            dropped.invocations += self.prune_excess(&INVOCATIONS, max, chunk)?;
        }
        if let Some(max) = retention.max_dead_letter_rows {
            dropped.dead_letters += self.prune_excess(&DEAD_LETTERS, max, chunk)?;
        }
        if let Some(age) = retention.max_stats_age {
            dropped.stats_buckets += self.prune_older(&STATS, cutoff(age), chunk)?;
        }
        if let Some(budget) = retention.max_record_bytes {
            let (logs, invocations) = self.prune_to_budget(budget, chunk)?;
            dropped.logs += logs;
            dropped.invocations += invocations;
        }
        Ok(dropped)
    }

    /// Deletes rows older than `cutoff`, a chunk per transaction.
    fn prune_older(&self, t: &Table, cutoff: i64, chunk: i64) -> Result<u64> {
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN
               (SELECT {key} FROM {table} WHERE {time} < ?1 ORDER BY {time} LIMIT ?2)",
            table = t.table,
            key = t.key_columns,
            time = t.time_column,
        );
        let mut total = 0;
        loop {
            let n = self.write(|tx| {
                let n = tx.prepare_cached(&sql)?.execute(params![cutoff, chunk])? as u64;
                add_to_counter(tx, t.dropped_counter, n)?;
                Ok(n)
            })?;
            total += n;
            if (n as i64) < chunk {
                return Ok(total);
            }
            let_the_writer_go();
        }
    }

    /// Deletes the oldest rows beyond `max`, a chunk per transaction.
    fn prune_excess(&self, t: &Table, max: u64, chunk: i64) -> Result<u64> {
        let Some(rows_counter) = t.rows_counter else {
            return Ok(0);
        };
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN
               (SELECT {key} FROM {table} ORDER BY {order} LIMIT ?1)",
            table = t.table,
            key = t.key_columns,
            order = t.order_column,
        );
        let mut total = 0;
        loop {
            let n = self.write(|tx| {
                let excess = counter(tx, rows_counter)?.saturating_sub(max);
                if excess == 0 {
                    return Ok(0);
                }
                let n = tx
                    .prepare_cached(&sql)?
                    .execute([excess.min(chunk as u64) as i64])? as u64;
                add_to_counter(tx, t.dropped_counter, n)?;
                Ok(n)
            })?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
            let_the_writer_go();
        }
    }

    /// Deletes the oldest log or invocation records (whichever table's oldest row is older),
    /// a chunk per transaction, until their estimated bytes fit `budget`.
    fn prune_to_budget(&self, budget: u64, chunk: i64) -> Result<(u64, u64)> {
        let mut total = (0, 0);
        loop {
            let n = self.write(|tx| {
                let bytes = counter(tx, "bytes.logs")? + counter(tx, "bytes.invocations")?;
                if bytes <= budget {
                    return Ok(None);
                }
                let oldest = |sql: &str| -> Result<Option<i64>> {
                    Ok(tx
                        .prepare_cached(sql)?
                        .query_row([], |r| r.get(0))
                        .optional()?)
                };
                let log = oldest("SELECT time_ms FROM logs ORDER BY seq LIMIT 1")?;
                let inv = oldest("SELECT start_ms FROM invocations ORDER BY seq LIMIT 1")?;
                let table = match (log, inv) {
                    (Some(l), Some(i)) if i < l => &INVOCATIONS,
                    (Some(_), _) => &LOGS,
                    (None, Some(_)) => &INVOCATIONS,
                    (None, None) => return Ok(None),
                };
                // Roughly as many rows as the excess needs (at least 16), at most a chunk.
                let rows_counter = table.rows_counter.expect("counted table");
                let rows = counter(tx, rows_counter)?.max(1) as u64;
                let bytes_of_table = counter(
                    tx,
                    if table.table == "logs" {
                        "bytes.logs"
                    } else {
                        "bytes.invocations"
                    },
                )?
                .max(1) as u64;
                let per_row = (bytes_of_table / rows).max(1);
                let want = ((bytes - budget) / per_row + 1).clamp(16, chunk.max(16) as u64);
                let n = tx
                    .prepare_cached(&format!(
                        "DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} ORDER BY seq LIMIT ?1)",
                        t = table.table
                    ))?
                    .execute([want as i64])? as u64;
                add_to_counter(tx, table.dropped_counter, n)?;
                Ok(Some((table.table == "logs", n)))
            })?;
            match n {
                None => return Ok(total),
                Some((true, n)) => total.0 += n,
                Some((false, n)) => total.1 += n,
            }
            let_the_writer_go();
        }
    }

    /// Everything retention has dropped since the store was created.
    pub fn dropped_totals(&self) -> Result<Dropped> {
        self.read(|tx| {
            Ok(Dropped {
                logs: counter(tx, LOGS.dropped_counter)?,
                invocations: counter(tx, INVOCATIONS.dropped_counter)?,
                stats_buckets: counter(tx, STATS.dropped_counter)?,
                dead_letters: counter(tx, DEAD_LETTERS.dropped_counter)?,
                outbox: counter(tx, "dropped.outbox")?,
            })
        })
    }

    /// Current numbers of log lines and invocation records (O(1)).
    pub fn row_counts(&self) -> Result<RowCounts> {
        self.read(|tx| {
            Ok(RowCounts {
                logs: counter(tx, "rows.logs")?,
                invocations: counter(tx, "rows.invocations")?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{InvocationLog, Level, LogLine, Outcome};
    use crate::store::test_support::{outcome, record, temp_store};
    use crate::store::{LogFilter, StatsQuery};

    const MINUTE: i64 = 60_000;

    /// `n` invocations starting at `start_ms`, one minute apart, each with 2 log lines.
    fn seed(store: &Store, n: i64, start_ms: i64) {
        let batch: Vec<_> = (0..n)
            .map(|i| {
                let mut item =
                    outcome(record("f", &format!("i{}", start_ms + i), Outcome::Success));
                item.record.start_ms = start_ms + i * MINUTE;
                item.record.event_time_ms = item.record.start_ms;
                item.logs = vec![
                    InvocationLog {
                        time_ms: item.record.start_ms,
                        level: Level::Info,
                        text: format!("line a {i}"),
                    },
                    InvocationLog {
                        time_ms: item.record.start_ms + 1,
                        level: Level::Info,
                        text: format!("line b {i}"),
                    },
                ];
                item
            })
            .collect();
        store.commit(&batch).unwrap();
    }

    fn unbounded() -> Retention {
        Retention {
            max_age: None,
            max_log_rows: None,
            max_invocation_rows: None,
            max_dead_letter_rows: None,
            max_stats_age: None,
            max_record_bytes: None,
            chunk_rows: 3, // tiny chunks: exercise the chunk loop
        }
    }

    #[test]
    fn prune_by_age_drops_old_rows_and_counts_them() {
        let (_dir, store) = temp_store();
        seed(&store, 10, 0); // starts at 0, 1, ..., 9 minutes
        let now = 10 * MINUTE;
        let dropped = store
            .prune_at(
                &Retention {
                    max_age: Some(Duration::from_secs(5 * 60)),
                    ..unbounded()
                },
                now,
            )
            .unwrap();
        // Older than minute 5: invocations 0..=4 and their 10 lines.
        assert_eq!(
            dropped,
            Dropped {
                logs: 10,
                invocations: 5,
                ..Dropped::default()
            }
        );
        assert_eq!(
            store.row_counts().unwrap(),
            RowCounts {
                logs: 10,
                invocations: 5
            }
        );
        let oldest = &store.logs(&LogFilter::default()).unwrap()[0];
        assert_eq!(oldest.time_ms, 5 * MINUTE);
        assert_eq!(store.dropped_totals().unwrap(), dropped);

        // Pruning again drops nothing more; the totals persist and accumulate.
        assert_eq!(
            store
                .prune_at(
                    &Retention {
                        max_age: Some(Duration::from_secs(5 * 60)),
                        ..unbounded()
                    },
                    now
                )
                .unwrap(),
            Dropped::default()
        );
        seed(&store, 2, 100 * MINUTE);
        store
            .prune_at(
                &Retention {
                    max_age: Some(Duration::from_secs(60)),
                    ..unbounded()
                },
                101 * MINUTE,
            )
            .unwrap();
        let totals = store.dropped_totals().unwrap();
        assert_eq!((totals.logs, totals.invocations), (10 + 10, 5 + 5));
    }

    #[test]
    fn prune_by_count_keeps_the_newest() {
        let (_dir, store) = temp_store();
        seed(&store, 10, 0);
        store
            .append_logs(&[LogLine {
                time_ms: 0, // old time, but newest row: count pruning goes by insertion order
                level: Level::Warn,
                function: None,
                version: None,
                invocation_id: None,
                text: "agent line".into(),
            }])
            .unwrap();
        let dropped = store
            .prune_at(
                &Retention {
                    max_log_rows: Some(7),
                    max_invocation_rows: Some(4),
                    ..unbounded()
                },
                0,
            )
            .unwrap();
        assert_eq!((dropped.logs, dropped.invocations), (14, 6));
        assert_eq!(
            store.row_counts().unwrap(),
            RowCounts {
                logs: 7,
                invocations: 4
            }
        );
        let logs = store.logs(&LogFilter::default()).unwrap();
        assert_eq!(logs.last().unwrap().text, "agent line");
        assert_eq!(logs[0].text, "line a 7");
        let ids: Vec<_> = store
            .invocations(&Default::default())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["i6", "i7", "i8", "i9"]);
    }

    #[test]
    fn stats_buckets_age_out_separately() {
        let (_dir, store) = temp_store();
        seed(&store, 10, 0);
        let dropped = store
            .prune_at(
                &Retention {
                    max_stats_age: Some(Duration::from_secs(3 * 60)),
                    ..unbounded()
                },
                10 * MINUTE,
            )
            .unwrap();
        assert_eq!(dropped.stats_buckets, 7);
        assert_eq!(dropped.logs + dropped.invocations, 0);
        let stats = store
            .stats(&StatsQuery {
                since_ms: 0,
                until_ms: Some(20 * MINUTE),
                ..StatsQuery::default()
            })
            .unwrap();
        assert_eq!(stats.totals.invocations, 3);
        assert_eq!(store.dropped_totals().unwrap().stats_buckets, 7);
    }

    #[test]
    fn counters_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        {
            let store = Store::open(&path).unwrap();
            seed(&store, 5, 0);
            store
                .prune_at(
                    &Retention {
                        max_invocation_rows: Some(2),
                        ..unbounded()
                    },
                    0,
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.dropped_totals().unwrap().invocations, 3);
        assert_eq!(
            store.row_counts().unwrap(),
            RowCounts {
                logs: 10,
                invocations: 2
            }
        );
    }

    #[test]
    fn dead_letters_are_bounded_by_age_and_count() {
        use crate::store::{CommitExtra, DeadLetter, QueuedEvent};
        let (_dir, store) = temp_store();
        let extras: Vec<_> = (0..6)
            .map(|i| {
                let mut d = DeadLetter::new(
                    None,
                    "f",
                    "latest",
                    QueuedEvent::new(format!("e{i}"), "mqtt", "t", vec![]),
                    1,
                    "error",
                    "x",
                );
                d.created_ms = i * MINUTE;
                CommitExtra {
                    dead_letter: Some(d),
                    ..CommitExtra::default()
                }
            })
            .collect();
        store.commit_extras(&extras).unwrap();
        let dropped = store
            .prune_at(
                &Retention {
                    max_age: Some(Duration::from_secs(4 * 60)),
                    ..unbounded()
                },
                6 * MINUTE,
            )
            .unwrap();
        assert_eq!(dropped.dead_letters, 2); // minutes 0 and 1
        let dropped = store
            .prune_at(
                &Retention {
                    max_dead_letter_rows: Some(3),
                    ..unbounded()
                },
                6 * MINUTE,
            )
            .unwrap();
        assert_eq!(dropped.dead_letters, 1);
        let left: Vec<_> = store
            .dead_letters(&Default::default())
            .unwrap()
            .into_iter()
            .map(|d| d.event.id)
            .collect();
        assert_eq!(left, ["e3", "e4", "e5"]);
        assert_eq!(store.dropped_totals().unwrap().dead_letters, 3);
    }

    #[test]
    fn default_retention_is_bounded() {
        let r = Retention::default();
        assert!(r.max_age.is_some() && r.max_log_rows.is_some() && r.max_invocation_rows.is_some());
        assert!(r.chunk_rows > 0);
    }
}

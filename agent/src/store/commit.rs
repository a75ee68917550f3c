//! The commit point of invocations: a batch of finished invocations (records, their log lines,
//! their kv writes, and the stats they add up to) is written in ONE transaction.
//!
//! Batching is what makes the store fast on an SD card (one commit per batch instead of per
//! invocation) and it is the exactly-once point: a batch is either entirely in the store or not
//! at all, and committing an invocation id that is already stored is a no-op, so the daemon may
//! retry a batch whose outcome it does not know.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::Result;
use super::functions;
use super::invocations;
use super::kv;
use super::logs;
use super::records::InvocationOutcome;
use super::stats::{self, minute_of, Bucket, VersionKey};

/// What [`Store::commit`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSummary {
    /// Invocations recorded.
    pub committed: usize,
    /// Invocations skipped because their id was already recorded (a retried batch).
    pub duplicates: usize,
    pub log_lines: usize,
    pub kv_writes_applied: usize,
    /// Kv writes not applied: of invocations that did not succeed, or whose function was
    /// deleted while they ran.
    pub kv_writes_discarded: usize,
}

impl Store {
    /// Commits finished invocations in one transaction: each record, its log lines (tagged with
    /// its function, version and id), its kv writes (successes only) and its stats.
    pub fn commit(&self, batch: &[InvocationOutcome]) -> Result<CommitSummary> {
        if batch.is_empty() {
            return Ok(CommitSummary::default());
        }
        self.write(|tx| {
            let mut summary = CommitSummary::default();
            let mut buckets: BTreeMap<(&str, VersionKey, i64), Bucket> = BTreeMap::new();
            let mut function_exists: HashMap<&str, bool> = HashMap::new();
            for item in batch {
                let record = &item.record;
                if !invocations::insert(tx, record)? {
                    summary.duplicates += 1;
                    continue;
                }
                summary.committed += 1;
                for line in &item.logs {
                    logs::insert_parts(
                        tx,
                        line.time_ms,
                        line.level,
                        Some(&record.function),
                        record.version,
                        Some(&record.id),
                        &line.text,
                    )?;
                }
                summary.log_lines += item.logs.len();
                buckets
                    .entry((
                        record.function.as_str(),
                        VersionKey::from(record.version),
                        minute_of(record.start_ms),
                    ))
                    .or_default()
                    .add_record(record);
                if item.kv_writes.is_empty() {
                    continue;
                }
                let exists = match function_exists.get(record.function.as_str()) {
                    Some(exists) => *exists,
                    None => {
                        let exists = functions::exists(tx, &record.function)?;
                        function_exists.insert(&record.function, exists);
                        exists
                    }
                };
                if record.outcome.is_success() && exists {
                    kv::apply(tx, &record.function, &item.kv_writes)?;
                    summary.kv_writes_applied += item.kv_writes.len();
                } else {
                    summary.kv_writes_discarded += item.kv_writes.len();
                }
            }
            for ((function, key, minute), bucket) in &buckets {
                stats::add_to_bucket(tx, function, *key, *minute, bucket)?;
            }
            Ok(summary)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{InvocationLog, Level, Outcome};
    use crate::store::test_support::{outcome, record, temp_store};
    use crate::store::{KvWrite, LogFilter, Origin, StatsQuery};

    fn with_logs_and_kv(id: &str, outcome_: Outcome, key: &str) -> InvocationOutcome {
        let mut item = outcome(record("f", id, outcome_));
        item.logs = (0..3)
            .map(|i| InvocationLog {
                time_ms: item.record.start_ms + i,
                level: Level::Info,
                text: format!("{id} line {i}"),
            })
            .collect();
        item.kv_writes = vec![KvWrite::set(key, id)];
        item
    }

    #[test]
    fn commit_writes_records_logs_kv_and_stats_together() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let summary = store
            .commit(&[
                with_logs_and_kv("ok-1", Outcome::Success, "a"),
                with_logs_and_kv("bad-1", Outcome::Trap, "b"),
                with_logs_and_kv("ok-2", Outcome::Success, "c"),
            ])
            .unwrap();
        assert_eq!(
            summary,
            CommitSummary {
                committed: 3,
                duplicates: 0,
                log_lines: 9,
                kv_writes_applied: 2,
                kv_writes_discarded: 1,
            }
        );
        assert_eq!(store.invocation("bad-1").unwrap().outcome, Outcome::Trap);
        let lines = store
            .logs(&LogFilter {
                invocation_id: Some("ok-2".into()),
                ..LogFilter::default()
            })
            .unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.function.as_deref() == Some("f")));
        assert_eq!(store.kv_get("f", b"a").unwrap(), Some(b"ok-1".to_vec()));
        // A failed invocation leaves no kv effect.
        assert_eq!(store.kv_get("f", b"b").unwrap(), None);
        let stats = store
            .stats(&StatsQuery {
                function: Some("f".into()),
                ..StatsQuery::default()
            })
            .unwrap();
        assert_eq!((stats.totals.invocations, stats.totals.errors), (3, 1));
    }

    #[test]
    fn recommitting_a_batch_is_a_no_op() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let batch = [
            with_logs_and_kv("1", Outcome::Success, "k"),
            with_logs_and_kv("2", Outcome::Success, "k2"),
        ];
        store.commit(&batch).unwrap();
        let again = store.commit(&batch).unwrap();
        assert_eq!(
            (again.committed, again.duplicates, again.log_lines),
            (0, 2, 0)
        );
        assert_eq!(store.row_counts().unwrap().invocations, 2);
        assert_eq!(
            store.logs(&LogFilter::default()).unwrap().len(),
            6 + 1 // + the "created" line
        );
        let stats = store.stats(&StatsQuery::default()).unwrap();
        assert_eq!(stats.totals.invocations, 2);
    }

    #[test]
    fn kv_writes_of_a_deleted_function_are_discarded_but_the_record_is_kept() {
        let (_dir, store) = temp_store();
        let summary = store
            .commit(&[with_logs_and_kv("late", Outcome::Success, "k")])
            .unwrap();
        assert_eq!((summary.committed, summary.kv_writes_discarded), (1, 1));
        assert_eq!(store.invocation("late").unwrap().function, "f");
    }

    #[test]
    fn a_failing_batch_commits_nothing() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let mut bad = with_logs_and_kv("2", Outcome::Success, "k");
        bad.record.fuel_used = u64::MAX; // cannot be stored as an SQLite integer
        let err = store.commit(&[with_logs_and_kv("1", Outcome::Success, "k"), bad]);
        assert!(err.is_err());
        assert_eq!(store.row_counts().unwrap().invocations, 0);
        assert_eq!(store.kv_get("f", b"k").unwrap(), None);
        assert_eq!(
            store
                .stats(&StatsQuery::default())
                .unwrap()
                .totals
                .invocations,
            0
        );
        assert!(store.commit(&[]).unwrap() == CommitSummary::default());
    }
}

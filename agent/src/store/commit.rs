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
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

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

    /// Set for the child process of the crash test: the database it writes to.
    const CRASH_CHILD_ENV: &str = "EDGEFN_STORE_CRASH_CHILD_DB";

    /// Not a test of its own: the body of the child process that the crash test re-invokes
    /// this test binary for. Without the environment variable it returns at once.
    #[test]
    fn crash_child_writer() {
        let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
            return;
        };
        let store = Store::open(&path).unwrap();
        let pid = std::process::id();
        let started = Instant::now();
        let mut acknowledged = 0usize;
        // Bounded, so an orphaned child cannot run forever.
        while started.elapsed() < Duration::from_secs(60) {
            let batch: Vec<_> = (0..10)
                .map(|i| {
                    let id = format!("{pid}-{acknowledged}-{i}");
                    with_logs_and_kv(&id, Outcome::Success, &id)
                })
                .collect();
            store.commit(&batch).unwrap();
            acknowledged += batch.len();
            // Printed only after the commit returned: the parent checks that all of these
            // survive the kill.
            println!("committed {acknowledged}");
        }
    }

    #[test]
    fn kill_9_leaves_a_consistent_store_with_every_acknowledged_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.db");
        Store::open(&path)
            .unwrap()
            .create_function("f", b"m", "", Origin::Local)
            .unwrap();
        let mut expected_at_least = 0usize;
        for round in 0..3 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::commit::tests::crash_child_writer",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_CHILD_ENV, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut acknowledged = 0usize;
            let target = 300 + round * 70; // vary where in the write loop the kill lands
            for line in BufReader::new(child.stdout.take().unwrap()).lines() {
                if let Some(n) = line.unwrap().strip_prefix("committed ") {
                    acknowledged = n.parse().unwrap();
                    if acknowledged >= target {
                        break;
                    }
                }
            }
            assert!(acknowledged >= target, "child stopped early");
            // Round 0 kills right away (mid-transaction, as seen by the reader); later rounds let
            // the child run on a little, so the kill lands somewhere else in its loop.
            std::thread::sleep(Duration::from_millis(round as u64 * 7));
            child.kill().unwrap(); // SIGKILL, most likely in the middle of a transaction
            let status = child.wait().unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "the child was not killed: {status}"
                );
            }
            #[cfg(not(unix))]
            let _ = status;
            expected_at_least += acknowledged;

            let store = Store::open(&path).unwrap();
            assert_eq!(store.integrity_check().unwrap(), ["ok"]);
            let (invocations, logs, kv_entries): (i64, i64, i64) = store
                .read(|tx| {
                    Ok(tx.query_row(
                        "SELECT (SELECT count(*) FROM invocations),
                                (SELECT count(*) FROM logs WHERE invocation_id IS NOT NULL),
                                (SELECT count(*) FROM kv)",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?)
                })
                .unwrap();
            // Every committed transaction is complete...
            assert_eq!(logs, 3 * invocations, "round {round}");
            assert_eq!(kv_entries, invocations, "round {round}");
            let stats = store.stats(&StatsQuery::default()).unwrap();
            assert_eq!(
                stats.totals.invocations as i64, invocations,
                "round {round}"
            );
            let counts = store.row_counts().unwrap();
            assert_eq!(counts.invocations as i64, invocations);
            // ...and every acknowledged one is there.
            assert!(
                invocations as usize >= expected_at_least,
                "round {round}: {invocations} < {expected_at_least} acknowledged"
            );
            eprintln!("round {round}: {acknowledged} acknowledged, {invocations} stored in total");
            expected_at_least = invocations as usize;
        }
    }
}

//! The commit point of invocations: a batch of finished invocations (records, their log lines,
//! their kv writes, the stats they add up to, and their delivery effects: outbox rows, queued
//! events, dedup marks, dequeues, dead letters) is written in ONE transaction.
//!
//! Batching is what makes the store fast on an SD card (one commit per batch instead of per
//! invocation) and it is the exactly-once point: a batch is either entirely in the store or not
//! at all, and committing an invocation id that is already stored is a no-op, so the daemon may
//! retry a batch whose outcome it does not know.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use rusqlite::Transaction;

use super::db::{now_ms, Store};
use super::error::Result;
use super::outbox::OutboxRow;
use super::records::{CommitExtra, InvocationOutcome};
use super::stats::{self, minute_of, Bucket, VersionKey};
use super::{dead_letters, dedup, functions, invocations, jobs, kv, logs, outbox, queue};

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
    /// Outbox rows written.
    pub outbox_messages: usize,
    /// Oldest outbox rows dropped because the outbox reached its bound.
    pub outbox_dropped: u64,
    /// Events queued.
    pub enqueued: usize,
    /// Queue rows deleted (delivered).
    pub dequeued: usize,
    /// Dedup marks written.
    pub dedup_marks: usize,
    /// Dead letters written.
    pub dead_letters: usize,
}

/// Writes one [`CommitExtra`] in the caller's transaction, counting into `summary` and
/// collecting the outbox rows it wrote into `written` (when asked to).
pub(crate) fn apply_extra(
    tx: &Transaction<'_>,
    extra: &CommitExtra,
    now: i64,
    summary: &mut CommitSummary,
    mut written: Option<&mut Vec<OutboxRow>>,
) -> Result<()> {
    for message in &extra.outbox {
        let seq = outbox::push(tx, message, now)?;
        if let Some(rows) = written.as_deref_mut() {
            rows.push(OutboxRow::written(seq, message, now));
        }
    }
    summary.outbox_messages += extra.outbox.len();
    for (target, event) in &extra.enqueue {
        queue::enqueue(tx, target, event)?;
    }
    summary.enqueued += extra.enqueue.len();
    if let Some((session, packet_id)) = &extra.dedup_mark {
        dedup::mark(tx, session, *packet_id, now)?;
        summary.dedup_marks += 1;
    }
    if let Some(seq) = extra.dequeue {
        if queue::dequeue(tx, seq)? {
            summary.dequeued += 1;
        }
    }
    if let Some(letter) = &extra.dead_letter {
        if dead_letters::insert(tx, letter)? {
            summary.dead_letters += 1;
        }
    }
    if let Some(task) = &extra.job_task {
        jobs::apply_update(tx, task)?;
    }
    if let Some(c) = &extra.stream_checkpoint {
        super::stream::checkpoint(tx, c)?;
    }
    Ok(())
}

impl Store {
    /// Commits finished invocations in one transaction: each record, its log lines (tagged with
    /// its function, version and id), its kv writes (successes only), its stats, and its
    /// [`CommitExtra`] (whatever the outcome). An invocation whose id is already recorded is
    /// skipped entirely, extras included. If anything fails, nothing is written.
    pub fn commit(&self, batch: &[InvocationOutcome]) -> Result<CommitSummary> {
        if batch.is_empty() {
            return Ok(CommitSummary::default());
        }
        Ok(self.commit_published(batch, &[], None)?.0)
    }

    /// [`Store::commit`] that also deletes the published outbox rows `published` in the same
    /// transaction (one write transaction instead of two, see `daemon/committer.rs`), and
    /// returns the outbox rows the batch wrote when `collect` is set, so that the MQTT link can
    /// publish them without reading them back. An empty `batch` only deletes.
    pub fn commit_published(
        &self,
        batch: &[InvocationOutcome],
        published: &[i64],
        collect: Option<&mut Vec<OutboxRow>>,
    ) -> Result<(CommitSummary, u64)> {
        if batch.is_empty() && published.is_empty() {
            return Ok((CommitSummary::default(), 0));
        }
        let outbox_max = self.outbox_max_rows();
        let mut collect = collect;
        self.write(|tx| {
            let deleted = outbox::delete_many(tx, published)?;
            let now = now_ms();
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
                // A batch-job attempt whose task already ended (another run finished it): its
                // record and logs stay, its kv writes and delivery effects do not apply twice.
                if let Some(task) = &item.extra.job_task {
                    if !jobs::task_pending(tx, &task.job, task.index)? {
                        summary.kv_writes_discarded += item.kv_writes.len();
                        continue;
                    }
                }
                if !item.kv_writes.is_empty() {
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
                apply_extra(tx, &item.extra, now, &mut summary, collect.as_deref_mut())?;
            }
            for ((function, key, minute), bucket) in &buckets {
                stats::add_to_bucket(tx, function, *key, *minute, bucket)?;
            }
            if summary.outbox_messages > 0 {
                summary.outbox_dropped = outbox::enforce_bound(tx, outbox_max)?;
            }
            Ok((summary, deleted))
        })
    }

    /// Commits delivery effects without an invocation record, in one transaction: a paused
    /// mapping's queued message with its dedup mark, the dead letter of an event that could not
    /// run (disabled or unknown function), ...
    pub fn commit_extra(&self, extra: &CommitExtra) -> Result<CommitSummary> {
        self.commit_extras(std::slice::from_ref(extra))
    }

    /// Like [`Store::commit_extra`] for several, all in one transaction.
    pub fn commit_extras(&self, extras: &[CommitExtra]) -> Result<CommitSummary> {
        if extras.iter().all(CommitExtra::is_empty) {
            return Ok(CommitSummary::default());
        }
        let outbox_max = self.outbox_max_rows();
        self.write(|tx| {
            let now = now_ms();
            let mut summary = CommitSummary::default();
            for extra in extras {
                apply_extra(tx, extra, now, &mut summary, None)?;
            }
            if summary.outbox_messages > 0 {
                summary.outbox_dropped = outbox::enforce_bound(tx, outbox_max)?;
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
    use crate::store::{
        DeadLetter, KvWrite, LogFilter, Origin, OutboxMessage, QueuedEvent, StatsQuery,
    };

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
                ..CommitSummary::default()
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

    fn extra_for(id: &str) -> CommitExtra {
        CommitExtra {
            outbox: vec![OutboxMessage::new(
                format!("out/{id}"),
                id.as_bytes().to_vec(),
                1,
                Some(b"c".to_vec()),
            )],
            enqueue: vec![(
                "function:g:latest".into(),
                QueuedEvent::new(format!("{id}:g"), "function", "f", b"next".to_vec()),
            )],
            dedup_mark: Some(("session".into(), 1 + id.len() as u16)),
            dequeue: None,
            dead_letter: None,
            job_task: None,
            stream_checkpoint: None,
        }
    }

    #[test]
    fn extras_are_written_with_the_record_whatever_its_outcome() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let queued = store
            .enqueue(
                "mapping:m-1",
                &QueuedEvent::new("q", "mqtt", "in", Vec::new()),
            )
            .unwrap();
        let mut ok = with_logs_and_kv("ok", Outcome::Success, "k");
        ok.extra = extra_for("ok");
        ok.extra.dequeue = Some(queued);
        let mut failed = with_logs_and_kv("failed", Outcome::Trap, "k2");
        failed.extra = CommitExtra {
            dead_letter: Some(DeadLetter::new(
                Some("m-1".into()),
                "f",
                "latest",
                QueuedEvent::new("e", "mqtt", "in", b"x".to_vec()),
                3,
                "trap",
                "unreachable",
            )),
            dedup_mark: Some(("session".into(), 99)),
            ..CommitExtra::default()
        };
        let summary = store.commit(&[ok.clone(), failed.clone()]).unwrap();
        assert_eq!(
            (
                summary.outbox_messages,
                summary.enqueued,
                summary.dedup_marks,
                summary.dequeued,
                summary.dead_letters,
                summary.outbox_dropped
            ),
            (1, 1, 2, 1, 1, 0)
        );
        assert_eq!(store.outbox_pending(10, 0).unwrap()[0].topic, "out/ok");
        let q = store.queue_peek(10).unwrap();
        assert_eq!(q.len(), 1, "the dequeued row is gone, the new one is there");
        assert_eq!(q[0].target, "function:g:latest");
        assert!(store.dedup_is_marked("session", 3).unwrap());
        assert!(store.dedup_is_marked("session", 99).unwrap());
        let letters = store.dead_letters(&Default::default()).unwrap();
        assert_eq!(letters, [failed.extra.dead_letter.clone().unwrap()]);
        // The failed invocation's kv writes are still discarded.
        assert_eq!(store.kv_get("f", b"k2").unwrap(), None);

        // A retried batch writes no extras a second time.
        let again = store.commit(&[ok, failed]).unwrap();
        assert_eq!(again.duplicates, 2);
        assert_eq!(
            again.outbox_messages + again.enqueued + again.dead_letters,
            0
        );
        assert_eq!(store.outbox_count().unwrap(), 1);
        assert_eq!(store.queue_count().unwrap(), 1);
    }

    #[test]
    fn commit_published_deletes_acked_rows_and_returns_the_rows_it_wrote() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let old = store
            .outbox_push(&[OutboxMessage::new("out/old", vec![1], 1, None)])
            .unwrap();
        let mut ok = with_logs_and_kv("ok", Outcome::Success, "k");
        ok.extra = extra_for("ok");
        let mut rows = Vec::new();
        let (summary, deleted) = store
            .commit_published(&[ok.clone()], &old, Some(&mut rows))
            .unwrap();
        assert_eq!(
            (summary.committed, summary.outbox_messages, deleted),
            (1, 1, 1)
        );
        // What it returns is what a reader of the outbox sees.
        assert_eq!(store.outbox_pending(10, 0).unwrap(), rows);
        assert_eq!(rows[0].topic, "out/ok");
        // Deletes alone, and a retried batch returns no rows.
        let mut again = Vec::new();
        let (summary, deleted) = store
            .commit_published(&[ok], &[rows[0].seq], Some(&mut again))
            .unwrap();
        assert_eq!((summary.duplicates, deleted), (1, 1));
        assert!(again.is_empty());
        assert_eq!(store.outbox_count().unwrap(), 0);
    }

    #[test]
    fn a_failing_extra_rolls_back_the_record_and_everything_else() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let queued = store
            .enqueue(
                "mapping:m-1",
                &QueuedEvent::new("q", "mqtt", "in", Vec::new()),
            )
            .unwrap();
        let mut good = with_logs_and_kv("good", Outcome::Success, "k");
        good.extra = extra_for("good");
        good.extra.dequeue = Some(queued);
        let mut bad = with_logs_and_kv("bad", Outcome::Success, "k2");
        bad.extra = extra_for("bad");
        bad.extra.dedup_mark = Some(("session".into(), 0)); // refused by the schema
        assert!(store.commit(&[good.clone(), bad]).is_err());
        assert_eq!(store.row_counts().unwrap().invocations, 0);
        assert_eq!(store.kv_get("f", b"k").unwrap(), None);
        assert_eq!(store.outbox_count().unwrap(), 0);
        assert_eq!(
            store.queue_count().unwrap(),
            1,
            "the dequeue was rolled back too"
        );
        assert!(store.dedup_marks("session").unwrap().is_empty());

        // So is a bad queue target.
        let mut bad = with_logs_and_kv("bad2", Outcome::Success, "k2");
        bad.extra.enqueue = vec![("nowhere".into(), QueuedEvent::new("e", "x", "y", vec![]))];
        assert!(store.commit(&[good.clone(), bad]).is_err());
        assert_eq!(store.row_counts().unwrap().invocations, 0);
        assert_eq!(store.outbox_count().unwrap(), 0);

        // The good one alone commits with all its extras.
        store.commit(&[good]).unwrap();
        assert_eq!(store.row_counts().unwrap().invocations, 1);
        assert_eq!(store.outbox_count().unwrap(), 1);
        assert_eq!(store.queue_count().unwrap(), 1); // one dequeued, one enqueued
        assert!(store.dedup_is_marked("session", 5).unwrap());
    }

    #[test]
    fn extras_commit_on_their_own() {
        let (_dir, store) = temp_store();
        assert_eq!(
            store.commit_extra(&CommitExtra::default()).unwrap(),
            CommitSummary::default()
        );
        // A paused mapping's message: queued with its dedup mark, no invocation.
        let summary = store
            .commit_extras(&[
                CommitExtra {
                    enqueue: vec![(
                        "mapping:m-1".into(),
                        QueuedEvent::new("e1", "mqtt", "in", b"1".to_vec()),
                    )],
                    dedup_mark: Some(("s".into(), 10)),
                    ..CommitExtra::default()
                },
                CommitExtra {
                    enqueue: vec![(
                        "mapping:m-1".into(),
                        QueuedEvent::new("e2", "mqtt", "in", b"2".to_vec()),
                    )],
                    dedup_mark: Some(("s".into(), 11)),
                    ..CommitExtra::default()
                },
            ])
            .unwrap();
        assert_eq!(
            (summary.committed, summary.enqueued, summary.dedup_marks),
            (0, 2, 2)
        );
        assert_eq!(store.queue_count_target("mapping:m-1").unwrap(), 2);
        assert_eq!(store.dedup_marks("s").unwrap(), [10, 11]);
        assert_eq!(store.row_counts().unwrap().invocations, 0);
        assert!(store
            .commit_extra(&CommitExtra {
                outbox: vec![OutboxMessage::new("t", vec![], 7, None)],
                ..CommitExtra::default()
            })
            .is_err());
    }

    #[test]
    fn commits_keep_the_outbox_bounded() {
        let (_dir, store) = temp_store();
        store.set_outbox_max_rows(3);
        let batch: Vec<_> = (0..5)
            .map(|i| {
                let mut item = outcome(record("f", &format!("i{i}"), Outcome::Success));
                item.extra.outbox = vec![OutboxMessage::new(format!("t/{i}"), vec![], 0, None)];
                item
            })
            .collect();
        let summary = store.commit(&batch).unwrap();
        assert_eq!((summary.outbox_messages, summary.outbox_dropped), (5, 2));
        assert_eq!(store.outbox_count().unwrap(), 3);
        assert_eq!(store.outbox_pending(10, 0).unwrap()[0].topic, "t/2");
        assert_eq!(store.dropped_totals().unwrap().outbox, 2);
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

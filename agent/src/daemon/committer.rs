//! Group commit: finished invocations are written to the store in batches (one SQLite
//! transaction per batch) by one writer thread. A caller waits for its own batch, so a sync
//! invoke answers only after its record, logs and kv writes are durable.
//!
//! The writer thread also owns the outbox's two hot paths, so that the MQTT link never touches
//! SQLite for them: the outbox rows a batch wrote are handed to the link in memory
//! ([`Committer::outbox_rows`]), and the rows the broker acknowledged are deleted in the next
//! batch's transaction ([`Committer::published`]) instead of in transactions of their own.
//!
//! When the writer thread is idle, a caller already on a blocking thread may commit right there
//! instead ([`Committer::claim_inline`]): a lone MQTT message then costs no hand-off to the
//! writer thread and back (two thread wake-ups, the largest share of its latency after SQLite).
//! Under load the writer thread is busy and batches form as before.

use crate::store::{InvocationOutcome, OutboxRow, Store};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

type Ack = oneshot::Sender<Result<(), String>>;

/// Where the writer thread hands the outbox rows it committed.
type RowSink = Arc<Mutex<Option<tokio_mpsc::UnboundedSender<Vec<OutboxRow>>>>>;

/// How long acknowledged outbox rows may wait for a commit to be deleted with.
const DELETE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

enum Job {
    /// Invocations to commit together, and who waits for them.
    Commit(Vec<InvocationOutcome>, Option<Ack>),
    /// Outbox rows the broker acknowledged: delete them.
    Published(Vec<i64>),
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    /// The MQTT link's inbox for committed outbox rows (none without MQTT: the rows stay in the
    /// store for whoever reads it).
    sink: RowSink,
    /// What the writer thread and inline commits share.
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    /// Held by whoever commits, from the transaction until its outbox rows are handed to the
    /// link: rows reach the link in seq order whichever thread wrote them.
    turn: Mutex<()>,
    /// Commit jobs sent to the writer thread and not yet committed: an inline commit must not
    /// overtake them (a function's kv writes commit in the order its invocations ran).
    queued: AtomicUsize,
}

/// The right to commit on the calling thread, from [`Committer::claim_inline`]: while it is
/// held, commits sent to the writer thread wait for it.
pub(crate) struct InlineCommit<'a> {
    committer: &'a Committer,
    _turn: MutexGuard<'a, ()>,
}

impl InlineCommit<'_> {
    /// Commits `outcomes` in one transaction on this thread and hands their outbox rows to the
    /// link, as the writer thread would.
    pub(crate) fn commit(self, outcomes: &[InvocationOutcome]) -> Result<(), String> {
        let sink = self.committer.sink();
        let mut rows = Vec::new();
        let collect = sink.as_ref().map(|_| &mut rows);
        let result = self
            .committer
            .shared
            .store
            .commit_published(outcomes, &[], collect)
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            eprintln!(
                "edgefn-agent: committing {} invocations failed: {e}",
                outcomes.len()
            );
        }
        if let (Some(sink), false) = (sink, rows.is_empty()) {
            let _ = sink.send(rows);
        }
        result
    }
}

impl Committer {
    /// Starts the writer thread; it ends when every handle is dropped, after draining.
    pub fn start(store: Store, max_batch: usize) -> Committer {
        let (tx, rx) = mpsc::channel::<Job>();
        let sink: RowSink = Arc::default();
        let rows_to = sink.clone();
        let shared = Arc::new(Shared {
            store: store.clone(),
            turn: Mutex::new(()),
            queued: AtomicUsize::new(0),
        });
        let mine = shared.clone();
        std::thread::Builder::new()
            .name("edgefn-commit".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(max_batch);
                let mut acks = Vec::new();
                let mut jobs = 0;
                let mut published = Vec::new();
                // Block for the first job, then take whatever else is already queued.
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    loop {
                        while let Some(job) = next {
                            match job {
                                Job::Commit(mut outcomes, ack) => {
                                    batch.append(&mut outcomes);
                                    acks.push(ack);
                                    jobs += 1;
                                }
                                Job::Published(mut seqs) => published.append(&mut seqs),
                            }
                            next = if batch.len() < max_batch {
                                rx.try_recv().ok()
                            } else {
                                None
                            };
                        }
                        // Only deletes: they ride with the next commit, or go on their own
                        // after a short wait (at 1,000 msg/s a transaction per PUBACK doubled
                        // the writes). A crash in between publishes those rows once more.
                        if !batch.is_empty() || published.len() >= max_batch {
                            break;
                        }
                        match rx.recv_timeout(DELETE_DELAY) {
                            Ok(job) => next = Some(job),
                            Err(_) => break,
                        }
                    }
                    let turn = mine.turn.lock().unwrap_or_else(|p| p.into_inner());
                    let sink = rows_to.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let mut rows = Vec::new();
                    let collect = sink.as_ref().map(|_| &mut rows);
                    let result = store
                        .commit_published(&batch, &published, collect)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    match &result {
                        Ok(()) => published.clear(),
                        // The deletes are tried again with the next batch; the invocations are
                        // reported failed to their callers.
                        Err(e) => eprintln!(
                            "edgefn-agent: committing {} invocations failed: {e}",
                            batch.len()
                        ),
                    }
                    if let (Some(sink), false) = (sink, rows.is_empty()) {
                        let _ = sink.send(rows);
                    }
                    mine.queued.fetch_sub(jobs, Ordering::SeqCst);
                    jobs = 0;
                    drop(turn);
                    for ack in acks.drain(..).flatten() {
                        let _ = ack.send(result.clone());
                    }
                    batch.clear();
                }
            })
            .expect("spawn the commit thread");
        Committer { tx, sink, shared }
    }

    fn sink(&self) -> Option<tokio_mpsc::UnboundedSender<Vec<OutboxRow>>> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The right to commit on this (blocking) thread, when nothing is committing or waiting to
    /// be committed by the writer thread; `None` otherwise (send the commit to the thread).
    pub(crate) fn claim_inline(&self) -> Option<InlineCommit<'_>> {
        let turn = match self.shared.turn.try_lock() {
            Ok(turn) => turn,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        (self.shared.queued.load(Ordering::SeqCst) == 0).then_some(InlineCommit {
            committer: self,
            _turn: turn,
        })
    }

    /// The outbox rows of every later commit, in commit (and so seq) order. One receiver at a
    /// time: a new call replaces the previous one. Rows written outside the group commit (and
    /// rows a full receiver missed) are only in the store.
    pub(crate) fn outbox_rows(&self) -> tokio_mpsc::UnboundedReceiver<Vec<OutboxRow>> {
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Deletes acknowledged outbox rows with the next batch (or on their own when idle).
    pub(crate) fn published(&self, seqs: Vec<i64>) {
        if !seqs.is_empty() {
            let _ = self.tx.send(Job::Published(seqs));
        }
    }

    /// Queues `outcome` and waits until its batch is committed.
    pub async fn commit(&self, outcome: InvocationOutcome) -> Result<(), String> {
        self.commit_all(vec![outcome]).await
    }

    /// Queues `outcomes` and waits until they are committed (all in one transaction).
    pub async fn commit_all(&self, outcomes: Vec<InvocationOutcome>) -> Result<(), String> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Job::Commit(outcomes, Some(ack))).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return Err("the commit thread has stopped".to_string());
        }
        done.await
            .map_err(|_| "the commit thread has stopped".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{outcome, record, temp_store};
    use crate::store::{Origin, OutboxMessage, Outcome};

    /// An invocation of `f` that publishes one message to `out/ID`.
    fn publishing(id: &str) -> InvocationOutcome {
        let mut item = outcome(record("f", id, Outcome::Success));
        item.extra.outbox = vec![OutboxMessage::new(
            format!("out/{id}"),
            id.as_bytes().to_vec(),
            1,
            None,
        )];
        item
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inline_commit_waits_for_queued_commits_and_keeps_the_rows_in_order() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let committer = Committer::start(store.clone(), 64);
        let mut rows = committer.outbox_rows();

        // Idle: the caller may commit on its own thread.
        let claim = committer.claim_inline().expect("idle writer thread");
        // While it holds the claim, no second inline commit, and a commit sent to the writer
        // thread waits for it.
        assert!(committer.claim_inline().is_none());
        let queued = tokio::spawn({
            let c = committer.clone();
            async move { c.commit(publishing("b")).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !queued.is_finished(),
            "the writer thread overtook the claim"
        );
        claim.commit(&[publishing("a")]).unwrap();
        queued.await.unwrap().unwrap();

        // Rows reached the link in commit order: the inline one first.
        let mut topics = Vec::new();
        while topics.len() < 2 {
            for row in rows.recv().await.unwrap() {
                topics.push(row.topic);
            }
        }
        assert_eq!(topics, ["out/a", "out/b"]);
        let stored: Vec<String> = store
            .outbox_pending(10, 0)
            .unwrap()
            .into_iter()
            .map(|r| r.topic)
            .collect();
        assert_eq!(stored, ["out/a", "out/b"]);

        // Idle again once the queued commit is done.
        assert!(committer.claim_inline().is_some());
    }
}

//! Group commit: finished invocations are written to the store in batches (one SQLite
//! transaction per batch) by one writer thread. A caller waits for its own batch, so a sync
//! invoke answers only after its record, logs and kv writes are durable.
//!
//! The writer thread also owns the outbox's two hot paths, so that the MQTT link never touches
//! SQLite for them: the outbox rows a batch wrote are handed to the link in memory
//! ([`Committer::outbox_rows`]), and the rows the broker acknowledged are deleted in the next
//! batch's transaction ([`Committer::published`]) instead of in transactions of their own.

use crate::store::{InvocationOutcome, OutboxRow, Store};
use std::sync::{mpsc, Arc, Mutex};
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
}

impl Committer {
    /// Starts the writer thread; it ends when every handle is dropped, after draining.
    pub fn start(store: Store, max_batch: usize) -> Committer {
        let (tx, rx) = mpsc::channel::<Job>();
        let sink: RowSink = Arc::default();
        let rows_to = sink.clone();
        std::thread::Builder::new()
            .name("edgefn-commit".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(max_batch);
                let mut acks = Vec::new();
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
                    for ack in acks.drain(..).flatten() {
                        let _ = ack.send(result.clone());
                    }
                    batch.clear();
                }
            })
            .expect("spawn the commit thread");
        Committer { tx, sink }
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
        self.tx
            .send(Job::Commit(outcomes, Some(ack)))
            .map_err(|_| "the commit thread has stopped".to_string())?;
        done.await
            .map_err(|_| "the commit thread has stopped".to_string())?
    }
}

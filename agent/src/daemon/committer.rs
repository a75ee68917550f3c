//! Group commit: finished invocations are written to the store in batches (one SQLite
//! transaction per batch) by one writer thread. A caller waits for its own batch, so a sync
//! invoke answers only after its record, logs and kv writes are durable. A commit that wrote
//! outbox rows signals [`Committer::outbox_signal`], so the MQTT link publishes them at once
//! instead of on its next poll.

use crate::store::{InvocationOutcome, Store};
use std::sync::{mpsc, Arc};
use tokio::sync::{oneshot, Notify};

type Ack = oneshot::Sender<Result<(), String>>;

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(InvocationOutcome, Option<Ack>)>,
    /// Notified (one stored permit) after each commit that wrote outbox rows.
    outbox_written: Arc<Notify>,
}

impl Committer {
    /// Starts the writer thread; it ends when every handle is dropped, after draining.
    pub fn start(store: Store, max_batch: usize) -> Committer {
        let (tx, rx) = mpsc::channel::<(InvocationOutcome, Option<Ack>)>();
        let outbox_written = Arc::new(Notify::new());
        let written = outbox_written.clone();
        std::thread::Builder::new()
            .name("edgefn-commit".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(max_batch);
                let mut acks = Vec::with_capacity(max_batch);
                // Block for the first item, then take whatever else is already queued.
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some((outcome, ack)) = next {
                        batch.push(outcome);
                        acks.push(ack);
                        next = if batch.len() < max_batch {
                            rx.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    let result = store.commit(&batch).map_err(|e| e.to_string());
                    if matches!(&result, Ok(s) if s.outbox_messages > 0) {
                        written.notify_one();
                    }
                    let result = result.map(|_| ());
                    if let Err(e) = &result {
                        eprintln!(
                            "edgefn-agent: committing {} invocations failed: {e}",
                            batch.len()
                        );
                    }
                    for ack in acks.drain(..).flatten() {
                        let _ = ack.send(result.clone());
                    }
                    batch.clear();
                }
            })
            .expect("spawn the commit thread");
        Committer { tx, outbox_written }
    }

    /// Notified after each commit that wrote outbox rows. `notify_one` keeps a permit when
    /// nobody waits, so a commit made while the waiter was busy is not missed.
    pub(crate) fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_written.clone()
    }

    /// Queues `outcome` and waits until its batch is committed.
    pub async fn commit(&self, outcome: InvocationOutcome) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((outcome, Some(ack)))
            .map_err(|_| "the commit thread has stopped".to_string())?;
        done.await
            .map_err(|_| "the commit thread has stopped".to_string())?
    }
}

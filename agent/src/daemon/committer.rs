//! Group commit: finished invocations are written to the store in batches (one SQLite
//! transaction per batch) by one writer thread. A caller waits for its own batch, so a sync
//! invoke answers only after its record, logs and kv writes are durable.

use crate::store::{InvocationOutcome, Store};
use std::sync::mpsc;
use tokio::sync::oneshot;

type Ack = oneshot::Sender<Result<(), String>>;

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(InvocationOutcome, Option<Ack>)>,
}

impl Committer {
    /// Starts the writer thread; it ends when every handle is dropped, after draining.
    pub fn start(store: Store, max_batch: usize) -> Committer {
        let (tx, rx) = mpsc::channel::<(InvocationOutcome, Option<Ack>)>();
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
                    let result = store.commit(&batch).map(|_| ()).map_err(|e| e.to_string());
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
        Committer { tx }
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

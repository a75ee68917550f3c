//! Appends the MQTT messages of stream mappings to the log in arrival order: the link hands
//! each message's appends over synchronously as it arrives, one task commits whatever has
//! gathered in one transaction (group commit: one SD-card sync for many messages), wakes the
//! mappings' workers and answers each message, which is acknowledged only then.

use super::Hub;
use crate::store::stream::Append;
use crate::store::Store;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Messages appended per transaction at most.
const GROUP_MAX: usize = 512;

/// Hands MQTT messages' records to the appender task.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::UnboundedSender<(Append, oneshot::Sender<()>)>,
}

impl Appender {
    /// Starts the appender task on the current runtime.
    pub fn start(store: Store, hub: Hub) -> (Appender, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Append, oneshot::Sender<()>)>();
        let task = tokio::spawn(async move {
            let mut items = Vec::with_capacity(GROUP_MAX);
            while rx.recv_many(&mut items, GROUP_MAX).await > 0 {
                let (appends, done): (Vec<Append>, Vec<oneshot::Sender<()>>) =
                    std::mem::take(&mut items).into_iter().unzip();
                let mut delay = Duration::from_millis(100);
                // Until it is committed: the messages stay unacknowledged meanwhile (and acks
                // go out in arrival order), so giving up would stall the session.
                let appends = std::sync::Arc::new(appends);
                loop {
                    let (st, a) = (store.clone(), appends.clone());
                    match tokio::task::spawn_blocking(move || st.stream_append(&a)).await {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => eprintln!(
                            "edgefn-agent: cannot append to a stream: {e}; retrying in {delay:?}"
                        ),
                        Err(_) => return, // shutting down: the broker redelivers
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                let mut woken: Vec<&str> = Vec::new();
                for a in appends.iter() {
                    if !woken.contains(&a.mapping.as_str()) {
                        hub.appended(&a.mapping);
                        woken.push(&a.mapping);
                    }
                }
                for d in done {
                    let _ = d.send(());
                }
            }
        });
        (Appender { tx }, task)
    }

    /// Queues `append` behind every earlier one; the receiver resolves once it is committed
    /// (dropped without an answer when the agent shuts down).
    pub fn submit(&self, append: Append) -> oneshot::Receiver<()> {
        let (done, committed) = oneshot::channel();
        let _ = self.tx.send((append, done));
        committed
    }
}

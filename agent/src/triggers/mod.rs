//! Event sources: MQTT, schedules, HTTP, and the durable event queue (paused mappings and
//! `function:` destinations), all delivering through one [`Dispatcher`] (docs/triggers.md).
//!
//! [`Triggers::start`] wires the actors: the mapping watcher (reloads the mapping set when the
//! store's mapping revision moves, so changes apply without a restart; the set also holds the
//! flows' trigger and wait sources, `flows/sources.rs`), one task per schedule,
//! the HTTP listener, the MQTT link, and the queue worker.

pub mod dispatch;
#[cfg(feature = "http-trigger")]
pub mod http;
pub mod mqtt;
pub mod schedule;
pub mod stream;

pub use dispatch::{Carry, Delivered, Dispatcher, Route};

use crate::daemon::Daemon;
use crate::store::{Mapping, Source};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The current mapping set, shared by every trigger.
pub type Mappings = watch::Receiver<Arc<Vec<Mapping>>>;

/// What to start.
pub struct TriggerConfig {
    /// The HTTP trigger listener (already bound), if enabled.
    pub http: Option<tokio::net::TcpListener>,
    /// The gateway's broker, if any.
    pub mqtt: Option<mqtt::MqttConfig>,
}

/// Running triggers; dropping this stops them.
pub struct Triggers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Triggers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Triggers {
    /// Starts every trigger actor on the current tokio runtime.
    pub async fn start(daemon: Daemon, config: TriggerConfig) -> Triggers {
        let dispatcher = Dispatcher::new(daemon.clone());
        let initial = load(&daemon).await.unwrap_or_default();
        let (tx, rx) = watch::channel(Arc::new(initial));
        let mut tasks = vec![tokio::spawn(watch_mappings(daemon.clone(), tx))];
        tasks.push(tokio::spawn(schedules(dispatcher.clone(), rx.clone())));
        tasks.push(tokio::spawn(queue_worker(dispatcher.clone(), rx.clone())));
        let hub = stream::Hub::default();
        let (appender, task) = stream::Appender::start(daemon.store().clone(), hub.clone());
        tasks.push(task);
        tasks.push(tokio::spawn(stream::supervise(
            dispatcher.clone(),
            hub,
            rx.clone(),
        )));
        #[cfg(not(feature = "http-trigger"))]
        if config.http.is_some() {
            eprintln!("edgefn-agent: this build has no HTTP trigger (feature `http-trigger`)");
        }
        #[cfg(feature = "http-trigger")]
        if let Some(listener) = config.http {
            let (d, m) = (dispatcher.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = http::serve(listener, d, m, std::future::pending()).await {
                    eprintln!("edgefn-agent: HTTP trigger stopped: {e}");
                }
            }));
        }
        if let Some(cfg) = config.mqtt {
            tasks.push(tokio::spawn(
                mqtt::Link::new(cfg, dispatcher.clone(), rx.clone())
                    .with_streams(appender)
                    .run(),
            ));
        }
        Triggers { tasks }
    }
}

/// The stored mappings, then the flows' event sources as mappings (`flows/sources.rs`; the
/// store keeps their HTTP paths apart from the mappings').
async fn load(daemon: &Daemon) -> Option<Vec<Mapping>> {
    let store = daemon.store().clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let mut m = store.list_mappings(None)?;
        m.extend(crate::flows::sources::mappings(&store.list_flows()?));
        Ok::<_, crate::store::StoreError>(m)
    });
    match loaded.await {
        Ok(Ok(m)) => Some(m),
        Ok(Err(e)) => {
            eprintln!("edgefn-agent: cannot load mappings: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Reloads the mapping set whenever the store's mapping revision moves (checked every 200 ms:
/// one indexed read of a meta row).
async fn watch_mappings(daemon: Daemon, tx: watch::Sender<Arc<Vec<Mapping>>>) {
    let mut seen = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let store = daemon.store().clone();
        let rev = tokio::task::spawn_blocking(move || store.mappings_revision()).await;
        let Ok(Ok(rev)) = rev else { continue };
        if seen == Some(rev) {
            continue;
        }
        if let Some(m) = load(&daemon).await {
            seen = Some(rev);
            if tx.send(Arc::new(m)).is_err() {
                return;
            }
        }
    }
}

/// One task per enabled schedule mapping, restarted when the mapping changes.
async fn schedules(dispatcher: Dispatcher, mut mappings: Mappings) {
    let mut running: HashMap<String, (i64, JoinHandle<()>)> = HashMap::new();
    // The missed-run policy applies to downtime of the agent, so only to the tasks started with
    // it: a schedule resumed (or changed) later does not catch up on runs its pause skipped.
    let mut at_start_up = true;
    loop {
        let current = mappings.borrow_and_update().clone();
        let wanted: HashMap<&str, &Mapping> = current
            .iter()
            .filter(|m| m.enabled && matches!(m.source, Source::Cron { .. } | Source::Every { .. }))
            .map(|m| (m.id.as_str(), m))
            .collect();
        running.retain(|id, (updated, task)| {
            let keep = wanted
                .get(id.as_str())
                .is_some_and(|m| m.updated_ms == *updated);
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, m) in wanted {
            if !running.contains_key(id) {
                let task = tokio::spawn(schedule::run(dispatcher.clone(), m.clone(), at_start_up));
                running.insert(id.to_string(), (m.updated_ms, task));
            }
        }
        at_start_up = false;
        if mappings.changed().await.is_err() {
            for (_, (_, t)) in running {
                t.abort();
            }
            return;
        }
    }
}

/// The route of an event a `function:` destination queued: the destinations and retries of
/// the function's own spec (`[destinations]`, of the version the event resolves to), so chains
/// go on until a function without an `on_success`, or until [`dispatch::MAX_DEPTH`]. An event
/// that cannot resolve gets the defaults; its delivery then fails with the reason.
async fn chained_route(
    dispatcher: &Dispatcher,
    name: &str,
    qualifier: &str,
    event_id: &str,
) -> Route {
    let store = dispatcher.daemon().store().clone();
    let (n, q, e) = (
        name.to_string(),
        qualifier.to_string(),
        event_id.to_string(),
    );
    let spec = tokio::task::spawn_blocking(move || {
        let qualifier = crate::store::Qualifier::parse(&q).ok()?;
        let r = store.resolve(&n, &qualifier, &e).ok()?;
        crate::spec::FunctionSpec::parse(&r.spec).ok()
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    Route {
        mapping_id: None,
        function: name.to_string(),
        qualifier: qualifier.to_string(),
        retries: spec.destinations.retries,
        on_success: spec.destinations.on_success,
        on_failure: spec.destinations.on_failure,
    }
}

/// Delivers queued events (destinations, paused mappings after resume) in queue order.
async fn queue_worker(dispatcher: Dispatcher, mappings: Mappings) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let store = dispatcher.daemon().store().clone();
        let rows = match tokio::task::spawn_blocking(move || store.queue_peek(64)).await {
            Ok(Ok(rows)) => rows,
            _ => continue,
        };
        for row in rows {
            let route = if let Some(id) = row.target.strip_prefix("mapping:") {
                let current = mappings.borrow().clone();
                match current.iter().find(|m| m.id == id) {
                    Some(m) if !m.enabled => continue, // still paused
                    Some(m) => Route::of(m),
                    None => Route {
                        mapping_id: Some(id.to_string()),
                        function: String::new(),
                        qualifier: "latest".into(),
                        retries: 0,
                        on_success: None,
                        on_failure: None,
                    },
                }
            } else if let Some(f) = row.target.strip_prefix("function:") {
                let (name, q) = f.split_once(':').unwrap_or((f, "latest"));
                chained_route(&dispatcher, name, q, &row.event.id).await
            } else {
                continue;
            };
            let carry = Carry {
                dedup_mark: None,
                dequeue: Some(row.seq),
                reply: row.event.reply.clone(),
                depth: row.event.depth,
                // The row stays queued until the final outcome commits.
                hold_when_throttled: true,
            };
            dispatcher
                .deliver(&route, row.event.to_event(), carry)
                .await;
        }
    }
}

//! A function pool: the warm instances of one function version, its concurrency bound and its
//! wait queue. Invocations run on tokio's blocking pool (sized for the machine at start-up), never
//! on the async reactor.

use crate::runtime::{
    FunctionEnv, FunctionModule, Instance, InstanceError, Invocation, Limits, LogLine, Outcome,
    Runtime,
};
use crate::spec::FunctionSpec;
use edgefn_sdk::Event;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// An event owned by the daemon (the runtime borrows it as an ABI [`Event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEvent {
    /// Unique id (dedup key; also drives the weighted alias split).
    pub id: String,
    /// Source kind (`invoke`, `mqtt`, ...).
    pub source: String,
    /// Topic, path, schedule name, ...
    pub subject: String,
    /// Event time, Unix ms.
    pub time_ms: u64,
    /// MIME type or empty.
    pub content_type: String,
    /// Payload.
    pub data: Vec<u8>,
    /// Delivery attempt, 1-based.
    pub attempt: u32,
}

impl OwnedEvent {
    /// The borrowed ABI view.
    pub fn as_event(&self) -> Event<'_> {
        Event {
            id: &self.id,
            source: &self.source,
            subject: &self.subject,
            time_ms: self.time_ms,
            content_type: &self.content_type,
            data: &self.data,
            attempt: self.attempt,
        }
    }
}

/// The pool refused the invocation: every instance is busy and the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("throttled: {running} invocations running and {waiting} waiting (max_concurrency and max_queue reached)")]
pub struct Throttled {
    /// Invocations running.
    pub running: usize,
    /// Invocations waiting.
    pub waiting: usize,
}

/// A pool's concurrency slot held past the end of an invocation (until its kv writes are
/// committed); dropping it lets the next invocation run.
#[derive(Debug)]
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Warm instances and limits of one function version.
pub struct Pool {
    runtime: Runtime,
    module: FunctionModule,
    limits: Arc<Limits>,
    env: FunctionEnv,
    /// Idle warm instances, most recently used last (reused LIFO: its memory is hot).
    idle: Mutex<Vec<Instance>>,
    /// One permit per instance that may run at once (`max_concurrency`).
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    /// Invocations waiting for a permit, bounded by `max_queue`.
    waiting: AtomicUsize,
    max_queue: usize,
    /// Live instances (idle + running), for the warm-instances metric.
    live: AtomicUsize,
    /// Instances that failed to start or were discarded after a trap.
    pub failures: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("live", &self.live)
            .field("waiting", &self.waiting)
            .finish()
    }
}

impl Pool {
    /// A pool for `module` under `spec`; `kv` backs the function's kv reads.
    pub fn new(
        runtime: Runtime,
        module: FunctionModule,
        spec: &FunctionSpec,
        kv: Arc<dyn crate::runtime::KvRead>,
    ) -> Pool {
        let env = FunctionEnv {
            config: Arc::new(spec.config.clone()),
            kv,
            publish_allow: spec.publish_allow.clone().map(Arc::new),
        };
        Pool {
            runtime,
            module,
            limits: Arc::new(spec.limits.clone()),
            env,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(spec.max_concurrency)),
            max_concurrency: spec.max_concurrency,
            waiting: AtomicUsize::new(0),
            max_queue: spec.max_queue,
            live: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Starts instances until `n` are idle (the spec's `min_instances`); returns init failures.
    pub fn prewarm(&self, n: usize) -> Vec<InstanceError> {
        let mut errors = Vec::new();
        while self.idle.lock().unwrap_or_else(|p| p.into_inner()).len() < n {
            match self.start_instance() {
                Ok(i) => self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(i),
                Err(e) => {
                    errors.push(e);
                    break;
                }
            }
        }
        errors
    }

    /// Live (warm or running) instances.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn start_instance(&self) -> Result<Instance, InstanceError> {
        let inst = self
            .runtime
            .instantiate(&self.module, self.limits.clone(), self.env.clone());
        match &inst {
            Ok(_) => {
                self.live.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        inst
    }

    /// Runs `event` on a warm (or new) instance once a concurrency permit is free.
    /// Returns the invocation, the lines `edgefn_init` logged if a new instance started, and,
    /// when the invocation wrote kv, its concurrency slot: the caller keeps it until those writes
    /// are committed, so the next invocation of the pool reads them (no lost updates).
    pub async fn invoke(
        self: &Arc<Self>,
        id: String,
        event: OwnedEvent,
    ) -> Result<(Invocation, Vec<LogLine>, Option<Slot>), Throttled> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
                if waiting >= self.max_queue {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(Throttled {
                        running: self.max_concurrency,
                        waiting,
                    });
                }
                let p = self.permits.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                p.expect("the pool's semaphore is never closed")
            }
        };
        let pool = self.clone();
        let result =
            tokio::task::spawn_blocking(move || pool.run_with_permit(permit, id, &event)).await;
        Ok(result.expect("an invocation task never panics"))
    }

    /// [`Pool::invoke`] for a caller already on a blocking thread: runs `event` on this thread
    /// if a concurrency permit is free right now; `None` (nothing ran) when every instance is
    /// busy, and the caller queues through [`Pool::invoke`]. Saves the hop to another blocking
    /// thread (and its wake-up) on the common, uncontended path.
    pub fn try_run_blocking(
        &self,
        id: String,
        event: &OwnedEvent,
    ) -> Option<(Invocation, Vec<LogLine>, Option<Slot>)> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.run_with_permit(permit, id, event))
    }

    fn run_with_permit(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        id: String,
        event: &OwnedEvent,
    ) -> (Invocation, Vec<LogLine>, Option<Slot>) {
        let (inv, init_logs) = self.run_blocking(id, event);
        // Without kv writes the next invocation may start right away.
        let slot = (!inv.effects.kv_writes.is_empty()).then_some(Slot { _permit: permit });
        (inv, init_logs, slot)
    }

    /// Runs one event synchronously on this thread (the blocking half of [`Pool::invoke`]).
    pub fn run_blocking(&self, id: String, event: &OwnedEvent) -> (Invocation, Vec<LogLine>) {
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (mut inst, init_logs) = match reused {
            Some(i) => (i, Vec::new()),
            None => match self.start_instance() {
                Ok(mut i) => {
                    let logs = i.take_init_logs();
                    (i, logs)
                }
                Err(e) => return (init_failure(id, e), Vec::new()),
            },
        };
        let inv = inst.invoke_as(id, &event.as_event());
        if inst.is_usable() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(inst);
        } else {
            self.live.fetch_sub(1, Ordering::Relaxed);
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        (inv, init_logs)
    }
}

/// An invocation record for an instance that could not start (init failed, trapped, or the
/// module does not fit its limits): always [`Outcome::InitFailed`]; the message says why.
fn init_failure(id: String, e: InstanceError) -> Invocation {
    let logs = match &e {
        InstanceError::Init { logs, .. } => logs.clone(),
        _ => Vec::new(),
    };
    Invocation {
        id,
        started_ms: crate::runtime::now_ms(),
        duration: Duration::ZERO,
        fuel_used: 0,
        outcome: Outcome::InitFailed,
        error: Some(e.to_string()),
        response: Vec::new(),
        logs,
        logs_dropped: 0,
        effects: Default::default(),
    }
}

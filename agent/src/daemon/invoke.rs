//! The invocation path: resolve the qualifier, refuse a disabled function, run on the pool
//! (or throttle), commit the record, logs and kv writes, then answer.

use super::metrics::{InvocationLabels, VersionLabels};
use super::{version_label, Daemon};
use crate::pool::{OwnedEvent, Pool, Slot, Throttled};
use crate::runtime::{Invocation, LogLine as GuestLog, Outcome};
use crate::store::Resolved;
use crate::store::{
    CommitExtra, InvocationLog, InvocationOutcome, InvocationRecord, Level, LogFilter, LogRecord,
    OutboxMessage, Outcome as RecordOutcome, Qualifier, StoreError,
};
use std::collections::HashMap;
use std::sync::Arc;

/// One invocation request.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// Function name.
    pub function: String,
    /// `latest`, a version or an alias.
    pub qualifier: Qualifier,
    /// The event (its id drives the weighted alias split).
    pub event: OwnedEvent,
    /// The invocation id to use (known in advance for async invocations).
    pub invocation_id: String,
}

/// A finished, committed invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// What the runtime reported.
    pub invocation: Invocation,
    /// Function name.
    pub function: String,
    /// The version that ran (`None` = latest).
    pub version: Option<u32>,
}

/// Why an invocation did not run.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Unknown function, version or alias, or a bad qualifier.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The function is disabled.
    #[error("function {0:?} is disabled; enable it to invoke it")]
    Disabled(String),
    /// Every instance busy and the queue full.
    #[error("function {function:?} is {throttled}")]
    Throttled {
        /// Function name.
        function: String,
        /// Details.
        throttled: Throttled,
    },
    /// The stored spec or module is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The record could not be committed.
    #[error("cannot commit the invocation: {0}")]
    Commit(String),
}

impl From<Outcome> for RecordOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => RecordOutcome::Success,
            Outcome::Error => RecordOutcome::Error,
            Outcome::Trap => RecordOutcome::Trap,
            Outcome::OutOfFuel => RecordOutcome::OutOfFuel,
            Outcome::MemoryLimit => RecordOutcome::MemoryLimit,
            Outcome::Timeout => RecordOutcome::Timeout,
            Outcome::EventTooLarge => RecordOutcome::EventTooLarge,
            Outcome::InitFailed => RecordOutcome::InitFailed,
        }
    }
}

/// What [`Daemon::invoke_then`] commits besides the record, derived from the invocation.
pub type Finish = Box<dyn FnOnce(&Invocation) -> CommitExtra + Send>;

/// The blocking half of an invocation: resolved, and run if an instance was free.
// `Ran` is the common case and moves once, from the blocking thread to its caller: boxing it
// would add an allocation per invocation to save stack space on the rare `Busy`.
#[allow(clippy::large_enum_variant)]
enum Started {
    Ran {
        version: Option<u32>,
        pool: Arc<Pool>,
        inv: Invocation,
        init_logs: Vec<GuestLog>,
        /// Held until the kv writes are committed (see [`Pool::invoke`]).
        slot: Option<Slot>,
    },
    /// Every instance was busy: wait in the pool's queue (or be throttled).
    Busy {
        version: Option<u32>,
        pool: Arc<Pool>,
    },
}

/// Rounds of [`Daemon::invoke_batch`] before the items still waiting for an instance queue.
const MAX_ROUNDS: usize = 4;

/// What one round of [`Daemon::invoke_batch`] did on its blocking thread.
struct Round<T> {
    /// Items that could not start (unknown function, disabled, ...).
    errors: Vec<(usize, InvokeError)>,
    /// Items whose guest ran: (index, request, version, invocation).
    done: Vec<(usize, InvokeRequest, Option<u32>, Invocation)>,
    /// Items whose instances were all busy, for the next round.
    busy: Vec<(usize, InvokeRequest, Started, Finish)>,
    /// What `done` commits, when it was not committed on the blocking thread.
    outcomes: Vec<InvocationOutcome>,
    /// Instances held until `outcomes` are committed (kv writes).
    slots: Vec<Option<Slot>>,
    /// The commit's result, when it was committed on the blocking thread.
    committed: Option<Result<(), String>>,
    /// The caller's turn, handed back unless the round released it.
    ran: Option<T>,
}

/// Resolutions of one batch: `latest` and numbered versions resolve the same for every event
/// of the batch (a weighted alias does not: its version depends on the event id).
type ResolveCache = HashMap<(String, String), Resolved>;

impl Daemon {
    /// Runs one invocation to its committed end.
    pub async fn invoke(&self, req: InvokeRequest) -> Result<Invoked, InvokeError> {
        self.invoke_then(req, |_| CommitExtra::default()).await
    }

    /// [`Daemon::invoke`], committing what `finish` derives from the invocation (destinations,
    /// dead letters, MQTT dedup marks, ...) in the same transaction as its record. The function's
    /// own publishes go to the outbox with it when MQTT is configured.
    pub async fn invoke_then(
        &self,
        req: InvokeRequest,
        finish: impl FnOnce(&Invocation) -> CommitExtra + Send + 'static,
    ) -> Result<Invoked, InvokeError> {
        let (d, r) = (self.clone(), req.clone());
        let finish: Finish = Box::new(finish);
        // One hop to the blocking pool: resolve, then run right there if an instance is free
        // (a second hop cost ~11 µs of a ~70 µs in-process invocation, benches/daemon.rs), and
        // commit right there too when the writer thread is idle.
        let started = tokio::task::spawn_blocking(move || {
            let started = d.start(&r, &mut ResolveCache::new(), &mut Vec::new())?;
            let Started::Ran {
                version,
                pool,
                inv,
                init_logs,
                slot,
            } = started
            else {
                return Ok(Err((started, finish)));
            };
            let Some(claim) = d.committer().claim_inline() else {
                let started = Started::Ran {
                    version,
                    pool,
                    inv,
                    init_logs,
                    slot,
                };
                return Ok(Err((started, finish)));
            };
            d.update_warm_gauge(&r.function, version, &pool);
            let outcome = d.outcome_of(&r, version, &inv, &init_logs, finish);
            let committed = claim.commit(std::slice::from_ref(&outcome));
            drop(slot);
            Ok::<_, InvokeError>(Ok((version, inv, committed)))
        })
        .await
        .expect("resolution, the guest call and the commit never panic")?;
        match started {
            Ok((version, inv, committed)) => {
                committed.map_err(InvokeError::Commit)?;
                Ok(self.committed(req, version, inv))
            }
            Err((started, finish)) => self.finish_one(req, started, finish).await,
        }
    }

    /// Runs several invocations with one hop to the blocking pool per round (one resolution
    /// per function and qualifier, the guest calls back to back) and commits each round's in one
    /// group commit. This is the MQTT link's path under load: per-message hand-offs between
    /// threads were the largest cost after SQLite. Results are in the order of `items`.
    ///
    /// An item whose instances are all busy waits for the next round, and so does every later
    /// item of the same pool (a function's events keep their order): usually the busy instance
    /// is this batch's own, holding its kv writes until their commit. After [`MAX_ROUNDS`], or a
    /// round in which nothing could run (another caller holds the instances), the rest queue one
    /// by one like [`Daemon::invoke_then`]. `ran` is dropped as soon as every guest has run and
    /// none holds its instance (no kv writes waiting), before the commit: the caller's next batch
    /// may run its guests while this one commits, and cannot overtake it.
    pub async fn invoke_batch<T: Send + 'static>(
        &self,
        items: Vec<(InvokeRequest, Finish)>,
        ran: Option<T>,
    ) -> Vec<Result<Invoked, InvokeError>> {
        let mut results: Vec<Option<Result<Invoked, InvokeError>>> =
            (0..items.len()).map(|_| None).collect();
        let mut pending: Vec<(usize, InvokeRequest, Finish)> = items
            .into_iter()
            .enumerate()
            .map(|(i, (req, finish))| (i, req, finish))
            .collect();
        let mut ran = ran;
        for round in 1.. {
            let d = self.clone();
            let held = ran.take();
            let out = tokio::task::spawn_blocking(move || d.run_round(pending, held))
                .await
                .expect("resolution, the guest call and the commit never panic");
            let Round {
                mut errors,
                done,
                mut busy,
                outcomes,
                slots,
                committed,
                ran: held,
            } = out;
            ran = held;
            for (i, e) in errors.drain(..) {
                results[i] = Some(Err(e));
            }
            let progressed = !done.is_empty();
            let committed = match committed {
                Some(committed) => committed,
                None => {
                    if busy.is_empty() && slots.iter().all(Option::is_none) {
                        // Nothing of this batch is left to run or holds an instance: the next
                        // batch's guests cannot overtake any of this one's.
                        drop(ran.take());
                    }
                    let committed = self.committer().commit_all(outcomes).await;
                    drop(slots);
                    committed
                }
            };
            for (i, req, version, inv) in done {
                results[i] = Some(match &committed {
                    Ok(()) => Ok(self.committed(req, version, inv)),
                    Err(e) => Err(InvokeError::Commit(e.clone())),
                });
            }
            if busy.is_empty() {
                break;
            }
            if !progressed || round >= MAX_ROUNDS {
                for (i, req, b, finish) in busy.drain(..) {
                    results[i] = Some(self.finish_one(req, b, finish).await);
                }
                break;
            }
            pending = busy
                .into_iter()
                .map(|(i, req, _, finish)| (i, req, finish))
                .collect();
        }
        results
            .into_iter()
            .map(|r| r.expect("every item has a result"))
            .collect()
    }

    /// One round of [`Daemon::invoke_batch`] on a blocking thread: resolve and run every item
    /// that has a free instance, then, if the writer thread is idle, commit them right here
    /// (one hand-off less each way; `ran` is released once the commit is claimed, so a later
    /// batch still cannot overtake this one). Otherwise the caller sends the outcomes to the
    /// writer thread.
    fn run_round<T>(
        &self,
        pending: Vec<(usize, InvokeRequest, Finish)>,
        ran: Option<T>,
    ) -> Round<T> {
        let mut cache = ResolveCache::new();
        let mut deferred: Vec<Arc<Pool>> = Vec::new();
        let mut round = Round {
            errors: Vec::new(),
            done: Vec::new(),
            busy: Vec::new(),
            outcomes: Vec::new(),
            slots: Vec::new(),
            committed: None,
            ran,
        };
        for (i, req, finish) in pending {
            match self.start(&req, &mut cache, &mut deferred) {
                Err(e) => round.errors.push((i, e)),
                Ok(Started::Ran {
                    version,
                    pool,
                    inv,
                    init_logs,
                    slot,
                }) => {
                    self.update_warm_gauge(&req.function, version, &pool);
                    round
                        .outcomes
                        .push(self.outcome_of(&req, version, &inv, &init_logs, finish));
                    round.slots.push(slot);
                    round.done.push((i, req, version, inv));
                }
                Ok(b) => round.busy.push((i, req, b, finish)),
            }
        }
        if round.outcomes.is_empty() {
            round.committed = Some(Ok(()));
            return round;
        }
        if let Some(claim) = self.committer().claim_inline() {
            if round.busy.is_empty() && round.slots.iter().all(Option::is_none) {
                drop(round.ran.take());
            }
            round.committed = Some(claim.commit(&round.outcomes));
            round.slots.clear();
            round.outcomes.clear();
        }
        round
    }

    /// Resolves `req` and runs it on this (blocking) thread if an instance is free and no
    /// earlier item of its pool is `deferred` (busy pools are added to it).
    fn start(
        &self,
        req: &InvokeRequest,
        cache: &mut ResolveCache,
        deferred: &mut Vec<Arc<Pool>>,
    ) -> Result<Started, InvokeError> {
        let key = (req.function.clone(), req.qualifier.to_string());
        let r = match cache.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = self
                    .store()
                    .resolve(&req.function, &req.qualifier, &req.event.id)?;
                if !matches!(req.qualifier, Qualifier::Alias(_)) {
                    cache.insert(key, r.clone());
                }
                r
            }
        };
        if !r.enabled {
            return Err(InvokeError::Disabled(req.function.clone()));
        }
        let pool = self.pool_for(&r)?;
        if deferred.iter().any(|p| Arc::ptr_eq(p, &pool)) {
            return Ok(Started::Busy {
                version: r.version,
                pool,
            });
        }
        Ok(
            match pool.try_run_blocking(req.invocation_id.clone(), &req.event) {
                Some((inv, init_logs, slot)) => Started::Ran {
                    version: r.version,
                    pool,
                    inv,
                    init_logs,
                    slot,
                },
                None => {
                    deferred.push(pool.clone());
                    Started::Busy {
                        version: r.version,
                        pool,
                    }
                }
            },
        )
    }

    /// Takes a started invocation to its committed end: waits for an instance if none was
    /// free (or commits the throttled record), then commits the outcome.
    async fn finish_one(
        &self,
        req: InvokeRequest,
        started: Started,
        finish: Finish,
    ) -> Result<Invoked, InvokeError> {
        let (version, pool, inv, init_logs, slot) = match started {
            Started::Ran {
                version,
                pool,
                inv,
                init_logs,
                slot,
            } => (version, pool, inv, init_logs, slot),
            Started::Busy { version, pool } => {
                match pool
                    .invoke(req.invocation_id.clone(), req.event.clone())
                    .await
                {
                    Ok((inv, init_logs, slot)) => (version, pool, inv, init_logs, slot),
                    Err(throttled) => return Err(self.throttled(req, version, throttled).await),
                }
            }
        };
        self.update_warm_gauge(&req.function, version, &pool);
        let outcome = self.outcome_of(&req, version, &inv, &init_logs, finish);
        let committed = self.committer().commit(outcome).await;
        drop(slot);
        committed.map_err(InvokeError::Commit)?;
        Ok(self.committed(req, version, inv))
    }

    /// Commits the record of a throttled invocation; returns the error to report.
    async fn throttled(
        &self,
        req: InvokeRequest,
        version: Option<u32>,
        throttled: Throttled,
    ) -> InvokeError {
        let labels = VersionLabels {
            function: req.function.clone(),
            version: version_label(version),
        };
        let mut record = base_record(&req, version, RecordOutcome::Throttled);
        record.error = Some(throttled.to_string());
        self.metrics().throttles.get_or_create(&labels).inc();
        self.count(&labels, "throttled");
        let outcome = InvocationOutcome {
            record,
            logs: Vec::new(),
            kv_writes: Vec::new(),
            extra: Default::default(),
        };
        if let Err(e) = self.committer().commit(outcome).await {
            return InvokeError::Commit(e);
        }
        InvokeError::Throttled {
            function: req.function,
            throttled,
        }
    }

    /// What a finished invocation commits.
    fn outcome_of(
        &self,
        req: &InvokeRequest,
        version: Option<u32>,
        inv: &Invocation,
        init_logs: &[GuestLog],
        finish: Finish,
    ) -> InvocationOutcome {
        let mut record = base_record(req, version, inv.outcome.into());
        record.start_ms = inv.started_ms as i64;
        record.duration_us = inv.duration.as_micros() as u64;
        record.fuel_used = inv.fuel_used;
        record.error = inv.error.clone();
        InvocationOutcome {
            record,
            logs: invocation_logs(inv, init_logs, req.event.attempt),
            kv_writes: inv
                .effects
                .kv_writes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()).into())
                .collect(),
            extra: self.extra_for(inv, finish(inv)),
        }
    }

    /// Counts a committed invocation in the metrics.
    fn committed(&self, req: InvokeRequest, version: Option<u32>, inv: Invocation) -> Invoked {
        let labels = VersionLabels {
            function: req.function.clone(),
            version: version_label(version),
        };
        let m = self.metrics();
        self.count(&labels, inv.outcome.as_str());
        if !inv.is_success() {
            m.errors.get_or_create(&labels).inc();
        } else if !inv.effects.publishes.is_empty() {
            m.publishes
                .get_or_create(&labels)
                .inc_by(inv.effects.publishes.len() as u64);
        }
        m.duration
            .get_or_create(&labels)
            .observe(inv.duration.as_secs_f64());
        Invoked {
            invocation: inv,
            function: req.function,
            version,
        }
    }

    fn count(&self, labels: &VersionLabels, outcome: &str) {
        let l = InvocationLabels {
            function: labels.function.clone(),
            version: labels.version.clone(),
            outcome: outcome.to_string(),
        };
        self.metrics().invocations.get_or_create(&l).inc();
    }

    /// The extras of a finished invocation: its publishes (on success, when MQTT is configured)
    /// first, then what the caller derived.
    fn extra_for(&self, inv: &Invocation, mut extra: CommitExtra) -> CommitExtra {
        if inv.is_success() && self.publishes_to_outbox() && !inv.effects.publishes.is_empty() {
            let mut outbox: Vec<OutboxMessage> = inv
                .effects
                .publishes
                .iter()
                .map(|p| OutboxMessage::new(&p.topic, p.data.clone(), p.qos as u8, None))
                .collect();
            outbox.append(&mut extra.outbox);
            extra.outbox = outbox;
        }
        extra
    }

    /// The committed log records of one invocation (for `--log-tail`).
    pub async fn invocation_logs(&self, invocation_id: &str) -> Result<Vec<LogRecord>, StoreError> {
        let d = self.clone();
        let filter = LogFilter {
            invocation_id: Some(invocation_id.to_string()),
            ..LogFilter::default()
        };
        tokio::task::spawn_blocking(move || d.store().logs(&filter))
            .await
            .expect("log query never panics")
    }
}

/// An invocation record of `req` with nothing measured yet.
fn base_record(
    req: &InvokeRequest,
    version: Option<u32>,
    outcome: RecordOutcome,
) -> InvocationRecord {
    InvocationRecord {
        id: req.invocation_id.clone(),
        function: req.function.clone(),
        version,
        qualifier: req.qualifier.to_string(),
        source: req.event.source.clone(),
        subject: req.event.subject.clone(),
        event_id: req.event.id.clone(),
        attempt: req.event.attempt,
        event_time_ms: req.event.time_ms as i64,
        start_ms: crate::runtime::now_ms() as i64,
        duration_us: 0,
        fuel_used: 0,
        outcome,
        error: None,
    }
}

/// The lines an invocation commits: `edgefn_init`'s (if a new instance started), the guest's,
/// then the host's notes (dropped lines, failures, a discarded instance). Publishes get no line
/// (they were 5% of the agent's CPU under MQTT load, and most of its log rows): the
/// `edgefn_publishes` metric counts them. Notes of a failure,
/// and of a success after retries, name the `attempt` (async deliveries retry).
fn invocation_logs(inv: &Invocation, init_logs: &[GuestLog], attempt: u32) -> Vec<InvocationLog> {
    let line = |l: &GuestLog| InvocationLog {
        time_ms: l.time_ms as i64,
        level: l.level,
        text: l.text.clone(),
    };
    let mut logs: Vec<InvocationLog> = init_logs.iter().chain(&inv.logs).map(line).collect();
    let now = crate::runtime::now_ms() as i64;
    let mut note = |level: Level, text: String| {
        logs.push(InvocationLog {
            time_ms: now,
            level,
            text,
        })
    };
    if inv.logs_dropped > 0 {
        note(
            Level::Warn,
            format!(
                "{} log lines dropped (per-invocation limit)",
                inv.logs_dropped
            ),
        );
    }
    if !inv.is_success() && !inv.outcome.ends_instance() {
        // A function error: the outcome is in the logs too (`logs --level error`, and the only
        // trace of an async invocation's failure besides stats).
        note(
            Level::Error,
            format!(
                "invocation failed (attempt {attempt}): {}: {}",
                inv.outcome,
                inv.error.as_deref().unwrap_or("")
            ),
        );
    }
    if inv.is_success() && attempt > 1 {
        note(
            Level::Info,
            format!("invocation succeeded (attempt {attempt})"),
        );
    }
    if inv.outcome.ends_instance() {
        note(
            Level::Warn,
            format!(
                "instance failure (attempt {attempt}): {}: {}; the next event gets a fresh instance",
                inv.outcome,
                inv.error.as_deref().unwrap_or("")
            ),
        );
    }
    logs
}

//! The job runner: an actor that drives every running job of the store, each by a driver task
//! with up to `parallelism` workers taking the job's pending tasks in input order.
//!
//! The runner polls the store (one indexed read of the active jobs every [`TICK`]): a job
//! submitted through the admin API, one left running by a previous agent process (a restart,
//! a crash), and a cancel all reach it that way, so the API needs no handle on the runner.
//!
//! A task's attempt is an invocation through the daemon's path ([`Daemon::invoke_then`]: record,
//! logs with the invocation id, stats, kv writes, publishes), and the task's state and result are
//! committed in the same transaction as the attempt's record ([`TaskUpdate`]). So after a crash
//! a task is either finished with all its effects, or pending with none: a task whose attempt was
//! running at the crash runs again (at-least-once execution of the guest, exactly-once effects),
//! and finished tasks never run again.

use crate::daemon::{Daemon, InvokeError, InvokeRequest};
use crate::pool::OwnedEvent;
use crate::runtime::Invocation;
use crate::store::jobs::{Finish, PendingTask};
use crate::store::{CommitExtra, JobState, Qualifier, StoreError, TaskOutcome, TaskUpdate};
use crate::triggers::dispatch::retry_delay;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};

/// How often the runner looks for new, cancelled and orphaned jobs.
pub const TICK: Duration = Duration::from_millis(200);

/// A job whose driver ended with tasks still pending (a store error) is picked up again after
/// this long.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Longest wait before a throttled attempt tries again (it uses up no attempt).
const THROTTLED_WAIT_MAX: Duration = Duration::from_secs(1);

/// Commit failures of one attempt before its worker gives the task back (it stays pending).
const MAX_COMMIT_FAILURES: u32 = 5;

/// The running runner; dropping it stops it and every driver.
pub struct JobRunner {
    task: JoinHandle<()>,
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JobRunner {
    /// Starts the runner on the current tokio runtime.
    pub fn start(daemon: Daemon) -> JobRunner {
        let runner = Runner {
            daemon,
            drivers: HashMap::new(),
            not_before: HashMap::new(),
        };
        JobRunner {
            task: tokio::spawn(runner.run()),
        }
    }
}

/// The actor's state.
struct Runner {
    daemon: Daemon,
    /// The driver of each job being run.
    drivers: HashMap<String, Driving>,
    /// Jobs whose driver ended early: not restarted before then.
    not_before: HashMap<String, Instant>,
}

/// One driver task and its cancel flag.
struct Driving {
    cancel: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Runner {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Forget ended drivers first: a job still active after its driver ended gets a new
            // one (its ending wrote the job's final state before the task ended).
            let now = Instant::now();
            let ended: Vec<String> = self
                .drivers
                .iter()
                .filter(|(_, d)| d.task.is_finished())
                .map(|(id, _)| id.clone())
                .collect();
            for id in ended {
                self.drivers.remove(&id);
                self.not_before.insert(id, now + RESTART_AFTER);
            }
            let store = self.daemon.store().clone();
            let active = match tokio::task::spawn_blocking(move || store.active_jobs()).await {
                Ok(Ok(active)) => active,
                Ok(Err(e)) => {
                    eprintln!("edgefn-agent: cannot read the active jobs: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            self.not_before
                .retain(|id, t| *t > now && active.iter().any(|(a, _)| a == id));
            for (id, state) in active {
                let cancelled = state == JobState::Cancelling;
                if let Some(d) = self.drivers.get(&id) {
                    if cancelled {
                        d.cancel.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
                if self.not_before.contains_key(&id) {
                    continue;
                }
                let cancel = Arc::new(AtomicBool::new(cancelled));
                let (d, c, job) = (self.daemon.clone(), cancel.clone(), id.clone());
                let task = tokio::spawn(async move {
                    match drive(d, job.clone(), c).await {
                        Ok(_) => {}
                        Err(e) => eprintln!("edgefn-agent: job {job}: {e}"),
                    }
                });
                self.drivers.insert(id, Driving { cancel, task });
            }
        }
    }
}

/// Why a driver stopped without finishing its job.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs job `id` until no task is left to start (or `cancel` is set and the running attempts
/// ended), then records its final state. Returns what [`crate::store::Store::finish_job`] found:
/// `Pending` when tasks are left (a store error stopped a worker; run it again later).
pub async fn drive(
    daemon: Daemon,
    id: String,
    cancel: Arc<AtomicBool>,
) -> Result<Finish, DriveError> {
    let store = daemon.store().clone();
    let job_id = id.clone();
    let job = tokio::task::spawn_blocking(move || store.job(&job_id)).await??;
    if job.state.is_finished() {
        return Ok(Finish::Finished(job.state));
    }
    let ctx = Arc::new(Ctx {
        qualifier: Qualifier::parse(&job.qualifier)?,
        function: job.function,
        attempts: job.retries + 1,
        feed: Feed::new(&id, job.parallelism),
        job: id.clone(),
        daemon: daemon.clone(),
        cancel,
    });
    let mut workers = JoinSet::new();
    for _ in 0..job.parallelism.min(job.pending.max(1) as u32) {
        workers.spawn(ctx.clone().work());
    }
    while let Some(done) = workers.join_next().await {
        done?;
    }
    let store = daemon.store().clone();
    Ok(tokio::task::spawn_blocking(move || store.finish_job(&id)).await??)
}

/// What the workers of one job share.
struct Ctx {
    daemon: Daemon,
    job: String,
    function: String,
    qualifier: Qualifier,
    /// Attempts per task (retries + 1).
    attempts: u32,
    feed: Feed,
    /// Set by a cancel: no new task or retry starts.
    cancel: Arc<AtomicBool>,
}

impl Ctx {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// One worker: tasks one after the other until none is left or the job is cancelled.
    async fn work(self: Arc<Self>) {
        while !self.cancelled() {
            let Some(task) = self.feed.next(&self.daemon).await else {
                return;
            };
            self.run_task(task).await;
        }
    }

    /// The attempts of one task, until one ends it (or the job is cancelled between attempts,
    /// or its commits keep failing: it stays pending).
    async fn run_task(&self, task: PendingTask) {
        let mut attempt = task.attempts + 1;
        let (mut throttled, mut commit_failures) = (0u32, 0u32);
        loop {
            let last = attempt >= self.attempts;
            let req = InvokeRequest {
                function: self.function.clone(),
                qualifier: self.qualifier.clone(),
                event: self.event(&task, attempt),
                invocation_id: ulid::Ulid::new().to_string(),
            };
            let (job, index, id) = (self.job.clone(), task.index, req.invocation_id.clone());
            let result = self
                .daemon
                .invoke_then(req, move |inv| CommitExtra {
                    job_task: Some(TaskUpdate {
                        job,
                        index,
                        attempt,
                        invocation_id: Some(id),
                        outcome: task_outcome(inv, last),
                    }),
                    ..CommitExtra::default()
                })
                .await;
            match result {
                Ok(invoked) => {
                    if !matches!(
                        task_outcome(&invoked.invocation, last),
                        TaskOutcome::Retry { .. }
                    ) {
                        return;
                    }
                }
                // Backpressure (the pool's queue is full): the same attempt again, not counted.
                Err(InvokeError::Throttled { .. }) => {
                    throttled += 1;
                    tokio::time::sleep(retry_delay(throttled).min(THROTTLED_WAIT_MAX)).await;
                    continue;
                }
                // Nothing was committed (or it is unknown whether it was: then the task is
                // finished, and the next attempt's update leaves it alone).
                Err(e) if transient(&e) => {
                    commit_failures += 1;
                    eprintln!(
                        "edgefn-agent: job {} task {}: {e} (try {commit_failures} of {MAX_COMMIT_FAILURES})",
                        self.job, task.index
                    );
                    if commit_failures >= MAX_COMMIT_FAILURES {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // Unknown function, version or alias, disabled, unusable module: no attempt can
                // run, so the task fails now (without an invocation record).
                Err(e) => {
                    let update = TaskUpdate {
                        job: self.job.clone(),
                        index: task.index,
                        attempt,
                        invocation_id: None,
                        outcome: TaskOutcome::Failed {
                            error: format!("rejected: {e}"),
                        },
                    };
                    let store = self.daemon.store().clone();
                    match tokio::task::spawn_blocking(move || store.commit_task_update(&update))
                        .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => eprintln!(
                            "edgefn-agent: job {} task {}: cannot record its failure: {e}",
                            self.job, task.index
                        ),
                        Err(_) => {}
                    }
                    return;
                }
            }
            if self.cancelled() {
                return;
            }
            tokio::time::sleep(retry_delay(attempt)).await;
            if self.cancelled() {
                return;
            }
            attempt += 1;
            throttled = 0;
        }
    }

    /// The event of one attempt: id and subject `JOB/INDEX` (the id stays the same across
    /// attempts, so a weighted alias sends every attempt of a task to the same version).
    fn event(&self, task: &PendingTask, attempt: u32) -> OwnedEvent {
        let name = format!("{}/{}", self.job, task.index);
        OwnedEvent {
            id: name.clone(),
            source: edgefn_sdk::abi::source::BATCH.to_string(),
            subject: name,
            time_ms: crate::runtime::now_ms(),
            content_type: if task.input.json {
                "application/json".into()
            } else {
                "text/plain; charset=utf-8".into()
            },
            data: task.input.payload.clone(),
            attempt,
        }
    }
}

/// What an attempt means for its task: success ends it, and so does the last attempt or a
/// failure that another attempt cannot change (an event larger than the function accepts).
fn task_outcome(inv: &Invocation, last: bool) -> TaskOutcome {
    if inv.is_success() {
        return TaskOutcome::Succeeded {
            result: inv.response.clone(),
        };
    }
    let error = format!("{}: {}", inv.outcome, inv.error.as_deref().unwrap_or(""));
    if last || inv.outcome == crate::runtime::Outcome::EventTooLarge {
        TaskOutcome::Failed { error }
    } else {
        TaskOutcome::Retry { error }
    }
}

/// Errors after which the same attempt may succeed: the commit failed, or the store could not
/// be read (not: the function is unknown, disabled or unusable).
fn transient(e: &InvokeError) -> bool {
    match e {
        InvokeError::Commit(_) => true,
        InvokeError::Store(s) => matches!(s, StoreError::Sqlite(_)),
        _ => false,
    }
}

/// The job's pending tasks, loaded in chunks in input order and handed out one at a time.
struct Feed {
    job: String,
    chunk: u32,
    state: tokio::sync::Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    queue: VecDeque<PendingTask>,
    /// Index of the last task loaded.
    after: Option<u64>,
    /// Every pending task has been loaded.
    exhausted: bool,
}

impl Feed {
    fn new(job: &str, parallelism: u32) -> Feed {
        Feed {
            job: job.to_string(),
            chunk: (parallelism * 4).clamp(64, 1024),
            state: tokio::sync::Mutex::new(FeedState::default()),
        }
    }

    async fn next(&self, daemon: &Daemon) -> Option<PendingTask> {
        let mut s = self.state.lock().await;
        if s.queue.is_empty() && !s.exhausted {
            let (store, job, after, chunk) = (
                daemon.store().clone(),
                self.job.clone(),
                s.after,
                self.chunk,
            );
            match tokio::task::spawn_blocking(move || store.job_pending_tasks(&job, after, chunk))
                .await
            {
                Ok(Ok(tasks)) => {
                    s.exhausted = tasks.len() < chunk as usize;
                    s.after = tasks.last().map(|t| t.index).or(s.after);
                    s.queue.extend(tasks);
                }
                Ok(Err(e)) => {
                    // The driver ends; the runner starts it again later.
                    eprintln!("edgefn-agent: job {}: cannot load tasks: {e}", self.job);
                    s.exhausted = true;
                }
                Err(_) => s.exhausted = true,
            }
        }
        s.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Effects, Outcome};

    fn inv(outcome: Outcome) -> Invocation {
        Invocation {
            id: "i".into(),
            started_ms: 0,
            duration: Duration::ZERO,
            fuel_used: 0,
            outcome,
            error: (outcome != Outcome::Success).then(|| "boom".to_string()),
            response: b"r".to_vec(),
            logs: Vec::new(),
            logs_dropped: 0,
            effects: Effects::default(),
        }
    }

    #[test]
    fn an_attempt_ends_its_task_on_success_last_attempt_or_too_large_event() {
        assert_eq!(
            task_outcome(&inv(Outcome::Success), false),
            TaskOutcome::Succeeded {
                result: b"r".to_vec()
            }
        );
        assert_eq!(
            task_outcome(&inv(Outcome::Trap), false),
            TaskOutcome::Retry {
                error: "trap: boom".into()
            }
        );
        assert_eq!(
            task_outcome(&inv(Outcome::Error), true),
            TaskOutcome::Failed {
                error: "error: boom".into()
            }
        );
        assert!(matches!(
            task_outcome(&inv(Outcome::EventTooLarge), false),
            TaskOutcome::Failed { .. }
        ));
    }

    #[test]
    fn only_store_and_commit_trouble_is_worth_the_same_attempt_again() {
        assert!(transient(&InvokeError::Commit("disk full".into())));
        assert!(!transient(&InvokeError::Disabled("f".into())));
        assert!(!transient(&InvokeError::Store(
            StoreError::UnknownFunction("f".into())
        )));
    }
}

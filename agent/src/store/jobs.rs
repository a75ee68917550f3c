//! Batch jobs (V5): a job runs one function qualifier over a list of tasks (the lines of a JSON
//! lines file or the rows of a CSV file), stored at submission in one transaction.
//!
//! - A task is `pending` until an attempt ends it: `succeeded` (its result is the function's
//!   response) or `failed` (every attempt failed, or the invocation was refused). The state,
//!   result, error and attempt count change in the transaction that commits the attempt's
//!   invocation record ([`super::CommitExtra::job_task`]), and the job's `succeeded` / `failed`
//!   counters with them: after a crash, a task is either finished with its record, kv writes
//!   and publishes, or pending with none of them.
//! - A job is `running` until no task is pending, then `succeeded` (every task succeeded) or
//!   `failed` ([`Store::finish_job`]). Cancelling makes it `cancelling` (no new task starts;
//!   attempts already running finish), then `cancelled` once they have.
//! - Every state change of a job writes an info log line for its function in the same
//!   transaction.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::logs::lifecycle;
use super::names::validate_function_name;
use super::qualifier::Qualifier;
use super::records::ParseEnumError;

/// Most tasks one job may have.
pub const MAX_TASKS: usize = 1_000_000;
/// Most instances one job may run at once.
pub const MAX_PARALLELISM: u32 = 256;
/// Most retries per task (with backoff capped at 10 s, about a quarter of an hour).
pub const MAX_RETRIES: u32 = 100;
/// Largest page of [`Store::job_results`] and [`Store::jobs`].
pub const MAX_PAGE: u32 = 10_000;

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidJob(reason.into())
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Tasks are pending or running.
    Running,
    /// Cancelled: no new task starts; the attempts running finish.
    Cancelling,
    /// Every task succeeded.
    Succeeded,
    /// Every task ended, some failed.
    Failed,
    /// Cancelled; the tasks that had not ended stay pending.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Running,
        JobState::Cancelling,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True once nothing more happens to the job.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Succeeded,
    Failed,
}

impl TaskState {
    pub const ALL: [TaskState; 3] = [TaskState::Pending, TaskState::Succeeded, TaskState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
        }
    }
}

macro_rules! text_enum {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                <$t>::ALL
                    .into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| ParseEnumError::new($what, s))
            }
        }
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}
text_enum!(JobState, "job state");
text_enum!(TaskState, "task state");

/// One task's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInput {
    /// The event data.
    pub payload: Vec<u8>,
    /// The payload is JSON text (content type `application/json`), else plain text.
    pub json: bool,
}

/// A job to store.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub function: String,
    /// `latest`, a version or an alias (checked for syntax here; the caller checks that it
    /// resolves).
    pub qualifier: String,
    /// Instances at once, 1..=[`MAX_PARALLELISM`].
    pub parallelism: u32,
    /// Retries per task after its first attempt, 0..=[`MAX_RETRIES`].
    pub retries: u32,
    /// Where the tasks came from (`jsonl`, `csv`, `items`), for people.
    pub input: String,
    /// In order; at least one.
    pub tasks: Vec<TaskInput>,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// A ULID (time-ordered).
    pub id: String,
    pub function: String,
    pub qualifier: String,
    pub state: JobState,
    pub parallelism: u32,
    pub retries: u32,
    pub input: String,
    /// Number of tasks.
    pub tasks: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Tasks not ended yet (running or waiting; after a cancel, never run).
    pub pending: u64,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

/// A failed task, for the job's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// Position in the input, from 0.
    pub index: u64,
    pub attempts: u32,
    pub error: String,
    /// The last attempt's invocation (`logs --invocation ID`); none if it never ran.
    pub invocation_id: Option<String>,
}

/// A task as [`Store::job_results`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResult {
    pub index: u64,
    pub state: TaskState,
    pub attempts: u32,
    /// The response of the successful attempt.
    pub result: Option<Vec<u8>>,
    /// How the last failed attempt failed.
    pub error: Option<String>,
    pub invocation_id: Option<String>,
}

/// A task to run, as the job runner loads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTask {
    pub index: u64,
    pub input: TaskInput,
    /// Attempts already committed (the next is `attempts + 1`).
    pub attempts: u32,
}

/// What an attempt of a task commits with its invocation record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub job: String,
    pub index: u64,
    /// This attempt's number (1-based): the task's attempt count from now on.
    pub attempt: u32,
    /// The attempt's invocation (none when it was refused before running).
    pub invocation_id: Option<String>,
    pub outcome: TaskOutcome,
}

/// How an attempt ended for its task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// The task succeeded with this response.
    Succeeded { result: Vec<u8> },
    /// The task failed for good.
    Failed { error: String },
    /// The attempt failed; another follows.
    Retry { error: String },
}

/// What [`Store::finish_job`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The job is (now) in this final state.
    Finished(JobState),
    /// Tasks are still pending (and the job was not cancelled): run them.
    Pending(u64),
}

const JOB_COLUMNS: &str = "id, function, qualifier, state, parallelism, retries, input, tasks, \
                           succeeded, failed, created_ms, finished_ms";

fn job_from(row: &Row<'_>) -> rusqlite::Result<Job> {
    let tasks: u64 = row.get(7)?;
    let succeeded: u64 = row.get(8)?;
    let failed: u64 = row.get(9)?;
    Ok(Job {
        id: row.get(0)?,
        function: row.get(1)?,
        qualifier: row.get(2)?,
        state: row.get(3)?,
        parallelism: row.get(4)?,
        retries: row.get(5)?,
        input: row.get(6)?,
        tasks,
        succeeded,
        failed,
        pending: tasks.saturating_sub(succeeded + failed),
        created_ms: row.get(10)?,
        finished_ms: row.get(11)?,
    })
}

fn get_job(tx: &Transaction<'_>, id: &str) -> Result<Job> {
    tx.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from)
        .optional()?
        .ok_or_else(|| StoreError::UnknownJob(id.to_owned()))
}

fn set_state(tx: &Transaction<'_>, job: &Job, state: JobState, text: &str) -> Result<()> {
    let finished = state.is_finished().then(now_ms);
    tx.prepare_cached("UPDATE jobs SET state = ?2, finished_ms = ?3 WHERE id = ?1")?
        .execute(params![job.id, state, finished])?;
    lifecycle(tx, &job.function, None, text)
}

/// Applies what an attempt of a task commits, in the caller's transaction (the one that commits
/// the attempt's invocation record). A task that is no longer pending (or a job deleted
/// meanwhile) is left alone. Returns whether the task changed.
/// Whether task `index` of `job` still waits for an attempt to end it. An attempt committed
/// after its task ended (a second run of a finished task) must not add its kv writes or
/// publishes a second time: [`super::commit`] checks this first.
pub(crate) fn task_pending(tx: &Transaction<'_>, job: &str, index: u64) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM job_tasks WHERE job = ?1 AND idx = ?2 AND state = 'pending'",
        )?
        .exists(params![job, index])?)
}

pub(crate) fn apply_update(tx: &Transaction<'_>, u: &TaskUpdate) -> Result<bool> {
    let now = now_ms();
    let changed = match &u.outcome {
        TaskOutcome::Succeeded { result } => tx
            .prepare_cached(
                "UPDATE job_tasks SET state = 'succeeded', attempts = ?3, result = ?4,
                        error = NULL, invocation_id = ?5, finished_ms = ?6
                  WHERE job = ?1 AND idx = ?2 AND state = 'pending'",
            )?
            .execute(params![
                u.job,
                u.index,
                u.attempt,
                result,
                u.invocation_id,
                now
            ])?,
        TaskOutcome::Failed { error } => tx
            .prepare_cached(
                "UPDATE job_tasks SET state = 'failed', attempts = ?3, error = ?4,
                        invocation_id = coalesce(?5, invocation_id), finished_ms = ?6
                  WHERE job = ?1 AND idx = ?2 AND state = 'pending'",
            )?
            .execute(params![
                u.job,
                u.index,
                u.attempt,
                error,
                u.invocation_id,
                now
            ])?,
        TaskOutcome::Retry { error } => tx
            .prepare_cached(
                "UPDATE job_tasks SET attempts = ?3, error = ?4,
                        invocation_id = coalesce(?5, invocation_id)
                  WHERE job = ?1 AND idx = ?2 AND state = 'pending'",
            )?
            .execute(params![u.job, u.index, u.attempt, error, u.invocation_id])?,
    };
    if changed == 0 {
        return Ok(false);
    }
    let counter = match u.outcome {
        TaskOutcome::Succeeded { .. } => "succeeded",
        TaskOutcome::Failed { .. } => "failed",
        TaskOutcome::Retry { .. } => return Ok(true),
    };
    tx.prepare_cached(&format!(
        "UPDATE jobs SET {counter} = {counter} + 1 WHERE id = ?1"
    ))?
    .execute([&u.job])?;
    Ok(true)
}

impl Store {
    /// Stores a job and all its tasks in one transaction; it starts `running`. The function must
    /// exist (the caller checks that the qualifier resolves and the function is enabled).
    pub fn create_job(&self, new: &NewJob) -> Result<Job> {
        validate_function_name(&new.function)?;
        Qualifier::parse(&new.qualifier)?;
        if new.tasks.is_empty() {
            return Err(invalid("a job needs at least one task"));
        }
        if new.tasks.len() > MAX_TASKS {
            return Err(invalid(format!(
                "{} tasks: a job may have at most {MAX_TASKS}",
                new.tasks.len()
            )));
        }
        if !(1..=MAX_PARALLELISM).contains(&new.parallelism) {
            return Err(invalid(format!(
                "parallelism {}: must be 1 to {MAX_PARALLELISM}",
                new.parallelism
            )));
        }
        if new.retries > MAX_RETRIES {
            return Err(invalid(format!(
                "retries {}: must be 0 to {MAX_RETRIES}",
                new.retries
            )));
        }
        let id = super::db::next_ulid().to_string();
        self.write(|tx| {
            super::functions::ensure_exists(tx, &new.function)?;
            tx.prepare_cached(
                "INSERT INTO jobs (id, function, qualifier, state, parallelism, retries, input,
                                   tasks, created_ms)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                id,
                new.function,
                new.qualifier,
                new.parallelism,
                new.retries,
                new.input,
                new.tasks.len() as u64,
                now_ms()
            ])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO job_tasks (job, idx, state, json, payload)
                 VALUES (?1, ?2, 'pending', ?3, ?4)",
            )?;
            for (i, t) in new.tasks.iter().enumerate() {
                insert.execute(params![id, i as u64, t.json, t.payload])?;
            }
            lifecycle(
                tx,
                &new.function,
                None,
                &format!(
                    "job {id} submitted ({}:{}, {} tasks from {}, parallelism {}, retries {})",
                    new.function,
                    new.qualifier,
                    new.tasks.len(),
                    new.input,
                    new.parallelism,
                    new.retries
                ),
            )?;
            get_job(tx, &id)
        })
    }

    /// A job.
    pub fn job(&self, id: &str) -> Result<Job> {
        self.read(|tx| get_job(tx, id))
    }

    /// The newest `limit` jobs (of `state`, if given), oldest first.
    pub fn jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(StoreError::InvalidQuery(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        self.read(|tx| {
            let mut list = tx
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE ?1 IS NULL OR state = ?1
                      ORDER BY id DESC LIMIT ?2"
                ))?
                .query_map(params![state, limit], job_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            list.reverse();
            Ok(list)
        })
    }

    /// Ids and states of the jobs that are running or cancelling (what the runner drives).
    pub fn active_jobs(&self) -> Result<Vec<(String, JobState)>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT id, state FROM jobs WHERE state IN ('running', 'cancelling')
                      ORDER BY id",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The first `limit` failed tasks of a job, by index.
    pub fn job_failures(&self, id: &str, limit: u32) -> Result<Vec<TaskFailure>> {
        self.read(|tx| {
            get_job(tx, id)?;
            Ok(tx
                .prepare_cached(
                    "SELECT idx, attempts, coalesce(error, ''), invocation_id FROM job_tasks
                      WHERE job = ?1 AND state = 'failed' ORDER BY idx LIMIT ?2",
                )?
                .query_map(params![id, limit], |r| {
                    Ok(TaskFailure {
                        index: r.get(0)?,
                        attempts: r.get(1)?,
                        error: r.get(2)?,
                        invocation_id: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Up to `limit` pending tasks of a job with an index above `after` (all when `None`), by
    /// index.
    pub fn job_pending_tasks(
        &self,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<PendingTask>> {
        let after = after.map_or(-1, |a| a as i64);
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT idx, json, payload, attempts FROM job_tasks
                      WHERE job = ?1 AND idx > ?2 AND state = 'pending' ORDER BY idx LIMIT ?3",
                )?
                .query_map(params![id, after, limit], |r| {
                    Ok(PendingTask {
                        index: r.get(0)?,
                        input: TaskInput {
                            json: r.get(1)?,
                            payload: r.get(2)?,
                        },
                        attempts: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Tasks `from..from + limit` of a job, in input order.
    pub fn job_results(&self, id: &str, from: u64, limit: u32) -> Result<Vec<TaskResult>> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(StoreError::InvalidQuery(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        self.read(|tx| {
            get_job(tx, id)?;
            Ok(tx
                .prepare_cached(
                    "SELECT idx, state, attempts, result, error, invocation_id FROM job_tasks
                      WHERE job = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3",
                )?
                .query_map(params![id, from as i64, limit], |r| {
                    Ok(TaskResult {
                        index: r.get(0)?,
                        state: r.get(1)?,
                        attempts: r.get(2)?,
                        result: r.get(3)?,
                        error: r.get(4)?,
                        invocation_id: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Commits a task update without an invocation record (an attempt refused before it ran:
    /// unknown function, disabled, ...).
    pub fn commit_task_update(&self, update: &TaskUpdate) -> Result<bool> {
        self.write(|tx| apply_update(tx, update))
    }

    /// Cancels a running job: no new task starts; the runner marks it `cancelled` once the
    /// attempts running have ended. Cancelling a cancelling job changes nothing; a finished job
    /// cannot be cancelled.
    pub fn cancel_job(&self, id: &str) -> Result<Job> {
        self.write(|tx| {
            let job = get_job(tx, id)?;
            match job.state {
                JobState::Running => {
                    set_state(
                        tx,
                        &job,
                        JobState::Cancelling,
                        &format!("job {id} cancelled"),
                    )?;
                    get_job(tx, id)
                }
                JobState::Cancelling => Ok(job),
                state => Err(StoreError::JobFinished {
                    id: id.to_owned(),
                    state: state.as_str(),
                }),
            }
        })
    }

    /// Ends a job whose runner has nothing left to start: `cancelled` if it was cancelled, else
    /// `succeeded` or `failed` once no task is pending. A finished job is reported as it is.
    pub fn finish_job(&self, id: &str) -> Result<Finish> {
        self.write(|tx| {
            let job = get_job(tx, id)?;
            let (state, text) = match job.state {
                s if s.is_finished() => return Ok(Finish::Finished(s)),
                JobState::Cancelling => (
                    JobState::Cancelled,
                    format!(
                        "job {id} stopped after a cancel: {} succeeded, {} failed, {} not run",
                        job.succeeded, job.failed, job.pending
                    ),
                ),
                _ if job.pending > 0 => return Ok(Finish::Pending(job.pending)),
                _ if job.failed > 0 => (
                    JobState::Failed,
                    format!(
                        "job {id} failed: {} of {} tasks failed",
                        job.failed, job.tasks
                    ),
                ),
                _ => (
                    JobState::Succeeded,
                    format!("job {id} succeeded: {} tasks", job.tasks),
                ),
            };
            set_state(tx, &job, state, &text)?;
            Ok(Finish::Finished(state))
        })
    }

    /// Deletes a finished job with its tasks and results.
    pub fn delete_job(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let job = get_job(tx, id)?;
            if !job.state.is_finished() {
                return Err(StoreError::JobActive(id.to_owned()));
            }
            tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                .execute([id])?;
            lifecycle(tx, &job.function, None, &format!("job {id} deleted"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{CommitExtra, Outcome};
    use crate::store::test_support::{outcome, record, temp_store};
    use crate::store::{KvWrite, Origin};

    fn new_job(n: usize) -> NewJob {
        NewJob {
            function: "f".into(),
            qualifier: "latest".into(),
            parallelism: 2,
            retries: 1,
            input: "jsonl".into(),
            tasks: (0..n)
                .map(|i| TaskInput {
                    payload: format!("{i}").into_bytes(),
                    json: true,
                })
                .collect(),
        }
    }

    fn attempt(job: &str, index: u64, attempt: u32, outcome_: TaskOutcome) -> TaskUpdate {
        TaskUpdate {
            job: job.into(),
            index,
            attempt,
            invocation_id: Some(format!("inv-{index}-{attempt}")),
            outcome: outcome_,
        }
    }

    /// Commits `u` with an invocation record, as the runner does.
    fn commit(store: &Store, u: TaskUpdate) {
        let ok = matches!(u.outcome, TaskOutcome::Succeeded { .. });
        let id = u.invocation_id.clone().unwrap();
        let mut item = outcome(record(
            "f",
            &id,
            if ok { Outcome::Success } else { Outcome::Error },
        ));
        item.extra = CommitExtra {
            job_task: Some(u),
            ..CommitExtra::default()
        };
        store.commit(&[item]).unwrap();
    }

    #[test]
    fn a_job_is_stored_with_its_tasks_and_ends_when_none_is_pending() {
        let (_dir, store) = temp_store();
        assert!(matches!(
            store.create_job(&new_job(3)),
            Err(StoreError::UnknownFunction(_))
        ));
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let job = store.create_job(&new_job(3)).unwrap();
        assert_eq!(
            (job.state, job.tasks, job.pending, job.succeeded),
            (JobState::Running, 3, 3, 0)
        );
        assert_eq!(
            store.active_jobs().unwrap(),
            [(job.id.clone(), JobState::Running)]
        );
        let pending = store.job_pending_tasks(&job.id, None, 2).unwrap();
        assert_eq!(pending.iter().map(|t| t.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(pending[1].input.payload, b"1");

        commit(
            &store,
            attempt(
                &job.id,
                0,
                1,
                TaskOutcome::Succeeded {
                    result: b"r0".to_vec(),
                },
            ),
        );
        commit(
            &store,
            attempt(
                &job.id,
                1,
                1,
                TaskOutcome::Retry {
                    error: "boom".into(),
                },
            ),
        );
        assert_eq!(store.finish_job(&job.id).unwrap(), Finish::Pending(2));
        // A retry is remembered: the next attempt after a restart is the second.
        let pending = store.job_pending_tasks(&job.id, Some(0), 10).unwrap();
        assert_eq!((pending[0].index, pending[0].attempts), (1, 1));
        commit(
            &store,
            attempt(
                &job.id,
                1,
                2,
                TaskOutcome::Failed {
                    error: "boom 2".into(),
                },
            ),
        );
        commit(
            &store,
            attempt(
                &job.id,
                2,
                1,
                TaskOutcome::Succeeded {
                    result: b"r2".to_vec(),
                },
            ),
        );
        // A late duplicate of an update for a finished task changes nothing.
        assert!(!store
            .commit_task_update(&attempt(
                &job.id,
                2,
                2,
                TaskOutcome::Failed { error: "x".into() }
            ))
            .unwrap());

        let job = store.job(&job.id).unwrap();
        assert_eq!((job.succeeded, job.failed, job.pending), (2, 1, 0));
        assert_eq!(
            store.finish_job(&job.id).unwrap(),
            Finish::Finished(JobState::Failed)
        );
        assert_eq!(
            store.finish_job(&job.id).unwrap(),
            Finish::Finished(JobState::Failed)
        );
        let job = store.job(&job.id).unwrap();
        assert!(job.finished_ms.is_some());
        assert!(store.active_jobs().unwrap().is_empty());
        assert_eq!(
            store.job_failures(&job.id, 10).unwrap(),
            [TaskFailure {
                index: 1,
                attempts: 2,
                error: "boom 2".into(),
                invocation_id: Some("inv-1-2".into()),
            }]
        );
        let results = store.job_results(&job.id, 0, 10).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].result.as_deref(), Some(&b"r0"[..]));
        assert_eq!(results[1].state, TaskState::Failed);
        assert_eq!(results[2].index, 2);
        assert_eq!(store.job_results(&job.id, 2, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_commit_leaves_the_task_pending() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let job = store.create_job(&new_job(1)).unwrap();
        let mut bad = outcome(record("f", "i", Outcome::Success));
        bad.record.fuel_used = u64::MAX; // cannot be stored: the transaction fails
        bad.extra.job_task = Some(attempt(
            &job.id,
            0,
            1,
            TaskOutcome::Succeeded { result: vec![] },
        ));
        assert!(store.commit(&[bad]).is_err());
        let job = store.job(&job.id).unwrap();
        assert_eq!((job.pending, job.succeeded), (1, 0));
    }

    #[test]
    fn a_second_run_of_a_finished_task_adds_no_effects() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let job = store.create_job(&new_job(1)).unwrap();
        let run = |id: &str, value: &[u8]| {
            let mut o = outcome(record("f", id, Outcome::Success));
            o.kv_writes = vec![KvWrite::set(&b"k"[..], value)];
            o.extra.job_task = Some(attempt(
                &job.id,
                0,
                1,
                TaskOutcome::Succeeded {
                    result: value.to_vec(),
                },
            ));
            o
        };
        store.commit(&[run("first", b"1")]).unwrap();
        // Another run of the same task (a retry after a commit whose outcome was unknown):
        // recorded, but its kv write and its result do not count.
        let summary = store.commit(&[run("second", b"2")]).unwrap();
        assert_eq!((summary.committed, summary.kv_writes_applied), (1, 0));
        assert_eq!(store.kv_get("f", b"k").unwrap().as_deref(), Some(&b"1"[..]));
        let results = store.job_results(&job.id, 0, 10).unwrap();
        assert_eq!(results[0].result.as_deref(), Some(&b"1"[..]));
        assert_eq!(store.job(&job.id).unwrap().succeeded, 1);
    }

    #[test]
    fn cancel_then_finish_and_delete() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let job = store.create_job(&new_job(2)).unwrap();
        assert!(matches!(
            store.delete_job(&job.id),
            Err(StoreError::JobActive(_))
        ));
        assert_eq!(
            store.cancel_job(&job.id).unwrap().state,
            JobState::Cancelling
        );
        assert_eq!(
            store.cancel_job(&job.id).unwrap().state,
            JobState::Cancelling
        );
        assert_eq!(
            store.active_jobs().unwrap(),
            [(job.id.clone(), JobState::Cancelling)]
        );
        commit(
            &store,
            attempt(&job.id, 0, 1, TaskOutcome::Succeeded { result: vec![] }),
        );
        assert_eq!(
            store.finish_job(&job.id).unwrap(),
            Finish::Finished(JobState::Cancelled)
        );
        let done = store.job(&job.id).unwrap();
        assert_eq!((done.succeeded, done.pending), (1, 1));
        assert!(matches!(
            store.cancel_job(&job.id),
            Err(StoreError::JobFinished {
                state: "cancelled",
                ..
            })
        ));
        store.delete_job(&job.id).unwrap();
        assert!(matches!(store.job(&job.id), Err(StoreError::UnknownJob(_))));
        assert!(store
            .job_pending_tasks(&job.id, None, 10)
            .unwrap()
            .is_empty());
        let texts = crate::store::test_support::lifecycle_texts(&store, "f");
        assert!(texts.iter().any(|t| t.contains("submitted")), "{texts:?}");
        assert!(texts.iter().any(|t| t.contains("not run")), "{texts:?}");
    }

    #[test]
    fn bad_jobs_are_refused_with_the_reason() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let mut j = new_job(0);
        assert!(store
            .create_job(&j)
            .unwrap_err()
            .to_string()
            .contains("at least one task"));
        j = new_job(1);
        j.parallelism = 0;
        assert!(store
            .create_job(&j)
            .unwrap_err()
            .to_string()
            .contains("parallelism 0"));
        j.parallelism = 1;
        j.retries = 1000;
        assert!(store
            .create_job(&j)
            .unwrap_err()
            .to_string()
            .contains("retries 1000"));
        j.retries = 0;
        j.qualifier = "no such thing!".into();
        assert!(store.create_job(&j).is_err());
        assert!(store.jobs(None, 10).unwrap().is_empty());
    }

    #[test]
    fn jobs_list_newest_first_limited_oldest_first_shown() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let ids: Vec<String> = (0..3)
            .map(|_| store.create_job(&new_job(1)).unwrap().id)
            .collect();
        let list = store.jobs(None, 2).unwrap();
        assert_eq!(
            list.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
            ids[1..]
        );
        store.cancel_job(&ids[0]).unwrap();
        let cancelling = store.jobs(Some(JobState::Cancelling), 10).unwrap();
        assert_eq!(cancelling.len(), 1);
        assert!(store.jobs(None, 0).is_err());
    }
}

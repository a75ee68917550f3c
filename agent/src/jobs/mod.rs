//! Batch jobs: one function qualifier over the tasks of an input file (docs/agent-api.md, "Jobs";
//! docs/architecture.md, "Batch jobs").
//!
//! - [`input`]: JSON lines and CSV files → tasks (errors name the line and field).
//! - [`runner`]: the actor that runs the store's active jobs ([`JobRunner`]), a driver per job
//!   with up to `parallelism` workers; retries with backoff; cancel; resume after a restart.
//! - [`results`]: a job's results as JSON lines, one per task in input order.
//!
//! The jobs and their tasks live in the store (`store/jobs.rs`, schema V5).

pub mod input;
pub mod results;
pub mod runner;

pub use input::{Format, InputError};
pub use runner::{drive, DriveError, JobRunner};

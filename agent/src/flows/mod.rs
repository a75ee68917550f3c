//! Flows (workflows) on the agent (docs/flows.md): declarative definitions whose steps invoke
//! functions in sequence, in parallel (joined back) or by choice on a result, run durably.
//!
//! - [`definition`]: the TOML/JSON definition and its validation (errors name step and field),
//!   shared with the cloud (`edgefn_cloud::protocol::flow`)
//! - [`run`]: a run as a plain state machine (entered steps, results, joins, retries, the end)
//! - [`engine`]: the actor driving runs through the daemon's invocation path, storing each
//!   run's state after every step, so runs continue after a restart
//! - [`trigger`]: event sources of a flow: its `[trigger]` (`any` / `all` within a window, by a
//!   key) and the events its `wait` steps wait for (shared too: `protocol::flow_trigger`);
//!   [`envelope`]: how such an event appears in a run
//! - [`sources`]: those sources as mappings of the trigger runtime, and the ids that tell them
//!   apart
//! - [`events`]: what such an event does (a run, a partial match, resolved waits)
//!
//! The store keeps definitions and runs (`store/flows.rs`); the admin API (`api/flows.rs`) and
//! the CLI (`cli/flow.rs`) manage them; a mapping whose function is `flow:NAME` starts a run per
//! event (`triggers/dispatch.rs`).

pub mod engine;
pub mod envelope;
pub mod events;
pub mod run;
pub mod sources;

/// The definition and its triggers live in the sync protocol crate (`edgefn_cloud::protocol`),
/// so the cloud's registry parses and validates flows with this same code.
pub use edgefn_cloud::protocol::flow as definition;
pub use edgefn_cloud::protocol::flow_trigger as trigger;

pub use definition::FlowDef;
pub use engine::{start, value_from_bytes, wake};
pub use run::{RunState, RunStatus};

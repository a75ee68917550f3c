//! The integration tests of edgefn-cloud: real servers on port 0 (in this process, on a tokio
//! runtime of their own), SQLite and PostgreSQL backends running the same scenarios, simulated
//! devices talking HTTP, and the two binaries end to end.

mod support;

mod binaries;
mod devices;
mod nudge;
mod registry;
mod remote_invoke;
mod replicas;
mod rollouts;
mod telemetry;
mod verify;

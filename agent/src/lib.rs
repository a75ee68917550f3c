//! edgefn-agent: the edge agent.
//!
//! - [`runtime`]: loads, validates and runs ABI v1 functions on wasmi with limits.
//! - [`paths`]: the default data directory and the files in it (daemon and CLI agree).
//! - `cli`: the `edgefn-agent` command line (the binary's only consumer).

pub mod config;
pub mod paths;
pub mod pool;
pub mod runtime;
pub mod spec;

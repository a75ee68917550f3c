//! edgefn-agent: the edge agent.
//!
//! - [`runtime`]: loads, validates and runs ABI v1 functions on wasmi with limits.
//! - `cli`: the `edgefn-agent` command line (the binary's only consumer).

pub mod runtime;

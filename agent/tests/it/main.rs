//! Integration tests of edgefn-agent: one binary, one module per area.

mod daemon_support;
mod support;

mod batch;
mod builder;
mod daemon;
mod exec;
mod flows;
mod jobs;
mod mappings;
mod remote_invoke;
mod remote_jobs;
mod runtime_abi;
mod runtime_examples;
mod streams;
mod sync;
mod systemd;
mod triggers;
mod upload;

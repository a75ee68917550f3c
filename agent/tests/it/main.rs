//! Integration tests of edgefn-agent: one binary, one module per area.

mod support;

mod exec;
mod runtime_abi;
mod runtime_examples;

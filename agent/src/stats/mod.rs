//! Statistics primitives shared by the store (per-minute buckets) and the daemon (metrics).
//!
//! - [`histogram`]: a mergeable log-linear histogram with a compact binary form.

pub mod histogram;

pub use histogram::Histogram;

//! Statistics primitives shared by the store (per-minute buckets) and the daemon (metrics).
//!
//! - [`histogram`]: a mergeable log-linear histogram with a compact binary form. It lives in
//!   the sync protocol crate (`edgefn_cloud::protocol::histogram`) because uploaded stats carry
//!   it and the cloud merges it: one definition of the bucket layout on both sides.

pub use edgefn_cloud::protocol::histogram;

pub use histogram::Histogram;

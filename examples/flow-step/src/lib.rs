//! `flow-step`: a building block for flows (docs/flows.md) and their tests.
//!
//! Responds `{"tag":TAG,"in":INPUT}`, where `TAG` is config `tag` (default `step`) and `INPUT`
//! is the event data as it came (a flow hands each step JSON, so the answer is JSON too). The
//! same module deployed under several names with different `tag`s shows which steps ran and in
//! what order: a sequence a → b answers `{"tag":"b","in":{"tag":"a","in":...}}`.
//!
//! Config (all optional):
//!
//! | key | effect |
//! |---|---|
//! | `tag` | the tag of the answer |
//! | `fail` | `1`: always fail with `flow-step TAG: failing as configured` |
//! | `spin_ms` | busy-wait this long before answering (a slow step; give it the fuel and timeout) |
//!
//! Each invocation logs `flow-step TAG ran`, so the logs count the runs of each step.
#![no_std]

use edgefn_sdk::{config, Error, Event, Response};

fn handle(event: Event) -> Result<Response, Error> {
    let mut buf = [0u8; 64];
    let tag = config::get_str("tag", &mut buf)?.unwrap_or("step");
    edgefn_sdk::info!("flow-step {tag} ran");
    let mut fail = [0u8; 8];
    if config::get_str("fail", &mut fail)?.map(str::trim) == Some("1") {
        edgefn_sdk::fail!("flow-step {tag}: failing as configured");
    }
    let mut spin = [0u8; 16];
    if let Some(ms) = config::get_str("spin_ms", &mut spin)? {
        let ms: u64 = ms
            .trim()
            .parse()
            .map_err(|_| Error::msg("flow-step: spin_ms must be a whole number"))?;
        let until = edgefn_sdk::monotonic_us() + ms * 1000;
        while edgefn_sdk::monotonic_us() < until {}
    }
    let input = core::str::from_utf8(event.data)?;
    let input = if input.trim().is_empty() {
        "null"
    } else {
        input
    };
    // Built in a stack buffer (results of joins outgrow `Response::fmt`'s 1 KiB).
    let mut out = [0u8; 16 * 1024];
    let parts: [&[u8]; 5] = [
        b"{\"tag\":\"",
        tag.as_bytes(),
        b"\",\"in\":",
        input.as_bytes(),
        b"}",
    ];
    let mut n = 0;
    for p in parts {
        let end = n + p.len();
        if end > out.len() {
            return Err(Error::msg("flow-step: answer longer than 16 KiB"));
        }
        out[n..end].copy_from_slice(p);
        n = end;
    }
    edgefn_sdk::respond(&out[..n]);
    Ok(Response::Empty)
}

edgefn_sdk::export_handler!(handle);

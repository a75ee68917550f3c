//! `counter`: persistent state in the function's key-value store.
//!
//! Every event increments the `u64` under key `count` and responds with the new count as decimal
//! text; an event whose data is `reset` sets it back to 0. The kv write is committed with the
//! invocation, so a failed invocation never counts.
#![no_std]

use edgefn_sdk::{kv, Error, Event, Response};

const KEY: &str = "count";

fn handle(event: Event) -> Result<Response, Error> {
    let count = if event.data.trim_ascii() == b"reset" {
        0
    } else {
        kv::get_u64(KEY)?.unwrap_or(0).wrapping_add(1)
    };
    kv::set_u64(KEY, count)?;
    Response::fmt(format_args!("{count}"))
}

edgefn_sdk::export_handler!(handle);

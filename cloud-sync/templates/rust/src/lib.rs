//! `{{name}}`: an edgefn function. It logs where each event came from, counts the events it has
//! handled in its key-value store, and responds with a greeting and the event's data.
//!
//! Try it on the agent without deploying: `edgefn-agent exec target/wasm32-unknown-unknown/release/{{crate}}.wasm --data world`.
#![no_std]

use edgefn_sdk::{info, kv, Error, Event, Response};

fn handle(event: Event) -> Result<Response, Error> {
    info!("{} event from {}", event.source, event.subject);
    // kv writes are committed only when the invocation succeeds.
    let count = kv::get_u64("count")?.unwrap_or(0) + 1;
    kv::set_u64("count", count)?;
    let data = core::str::from_utf8(event.data).map_err(|_| Error::msg("data is not UTF-8"))?;
    Response::fmt(format_args!("hello {data} (#{count})"))
}

edgefn_sdk::export_handler!(handle);

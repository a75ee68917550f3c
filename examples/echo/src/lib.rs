//! `echo`: responds with the event data unchanged.
//!
//! The smallest possible function: no logs, no host calls besides the response. It is the
//! benchmark for the bare invocation path (decode the event, call the handler, respond).
#![no_std]

use edgefn_sdk::{Error, Event, Response};

fn handle(event: Event) -> Result<Response, Error> {
    Ok(Response::bytes(event.data))
}

edgefn_sdk::export_handler!(handle);

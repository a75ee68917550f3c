//! `stream-audit`: consumes stream batches (docs/triggers.md, "Batch encoding") and keeps an
//! audit of each partition in kv, so order, loss and duplicates can be checked from outside.
//!
//! The event data is the batch: a JSON array of `{"partition", "offset", "subject", "time_ms",
//! "payload"}`. A record whose payload is an object with `"poison": true` fails the whole batch
//! (the agent then bisects it down to that record). A record with `"seq": N` (numbered from 1
//! per partition by the producer) is checked against the partition's last one: kv
//! `last/<partition>` holds the last `seq` seen, `gaps` counts every `seq` that is not the last
//! plus one (a lost, repeated or reordered record), `records` counts records. The writes commit
//! with the invocation, so a failed batch leaves no trace. Responds with the batch's length.
#![no_std]

use core::fmt::Write as _;
use edgefn_sdk::{kv, Error, Event, Response};
use serde::Deserialize;

/// Records per batch this function can take (the mapping's `--batch-size` must not exceed it).
const MAX_RECORDS: usize = 512;

#[derive(Deserialize)]
struct Record<'a> {
    partition: &'a str,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct Payload {
    /// A number, or a string of digits (CSV rows have string values).
    #[serde(default, deserialize_with = "number_or_text")]
    seq: Option<u64>,
    #[serde(default)]
    poison: Option<bool>,
}

fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Seq;
    impl serde::de::Visitor<'_> for Seq {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
            f.write_str("a sequence number")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(Some).map_err(|_| E::custom("seq is not a number"))
        }
    }
    d.deserialize_any(Seq)
}

fn handle(event: Event) -> Result<Response, Error> {
    let text = core::str::from_utf8(event.data)?;
    let batch: heapless::Vec<Record, MAX_RECORDS> = match serde_json_core::from_str(text) {
        Ok((b, _)) => b,
        Err(e) => edgefn_sdk::fail!("stream-audit: not a stream batch: {e}"),
    };
    let Some(first) = batch.first() else {
        return Response::fmt(format_args!("0"));
    };
    let mut key: heapless::String<256> = heapless::String::new();
    if write!(key, "last/{}", first.partition).is_err() {
        edgefn_sdk::fail!("stream-audit: partition key too long");
    }
    let mut last = kv::get_u64(&key)?.unwrap_or(0);
    let mut gaps = 0u64;
    for (i, r) in batch.iter().enumerate() {
        let Some(p) = &r.payload else { continue };
        if p.poison == Some(true) {
            edgefn_sdk::fail!("stream-audit: poison record at index {i} of the batch");
        }
        if let Some(seq) = p.seq {
            if seq != last + 1 {
                gaps += 1;
            }
            last = seq;
        }
    }
    kv::set_u64(&key, last)?;
    if gaps > 0 {
        kv::set_u64("gaps", kv::get_u64("gaps")?.unwrap_or(0) + gaps)?;
    }
    let records = kv::get_u64("records")?.unwrap_or(0) + batch.len() as u64;
    kv::set_u64("records", records)?;
    Response::fmt(format_args!("{}", batch.len()))
}

edgefn_sdk::export_handler!(handle);

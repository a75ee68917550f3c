//! `stream-audit`: consumes stream batches (docs/triggers.md, "Batch encoding") and keeps an
//! audit of each partition in kv, so order, loss and duplicates can be checked from outside.
//!
//! The event data is the batch: a JSON array of `{"partition", "offset", "subject", "time_ms",
//! "payload"}`. A record whose payload is an object with `"poison": true` fails the whole batch
//! (the agent then bisects it down to that record). A record with `"seq": N` (numbered from 1
//! per partition by the producer; or `"n": "N"`, the same as a string, as CSV rows have it) is checked against the partition's last one: kv
//! `last/<partition>` holds the last `seq` seen, `gaps` counts every `seq` that is not the last
//! plus one (a lost, repeated or reordered record), `records` counts records. The writes commit
//! with the invocation, so a failed batch leaves no trace. Responds with the batch's length.
#![no_std]

use core::fmt::Write as _;
use edgefn_sdk::{kv, Error, Event, Response};
use serde::Deserialize;

#[derive(Deserialize)]
struct Record<'a> {
    partition: &'a str,
    #[serde(default)]
    #[serde(borrow)]
    payload: Option<Payload<'a>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(default)]
    seq: Option<u64>,
    /// `seq` as a string of digits (CSV rows have string values; serde-json-core cannot take
    /// either type in one field).
    #[serde(default)]
    n: Option<&'a str>,
    #[serde(default)]
    poison: Option<bool>,
}

/// What a batch holds, gathered record by record (the guest has a 32 KiB stack: no arrays of
/// records).
#[derive(Default)]
struct Summary {
    partition: heapless::String<200>,
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// `seq`s within the batch that do not follow the one before.
    gaps: u64,
    /// Index of the first poison record.
    poison: Option<usize>,
}

impl<'de> Deserialize<'de> for Summary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Batch;
        impl<'de> serde::de::Visitor<'de> for Batch {
            type Value = Summary;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                f.write_str("a JSON array of stream records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Summary, A::Error> {
                let mut s = Summary::default();
                while let Some(r) = seq.next_element::<Record<'de>>()? {
                    if s.records == 0 && s.partition.push_str(r.partition).is_err() {
                        return Err(serde::de::Error::custom("partition key too long"));
                    }
                    if let Some(p) = r.payload {
                        if p.poison == Some(true) && s.poison.is_none() {
                            s.poison = Some(s.records as usize);
                        }
                        let seq = match (p.seq, p.n) {
                            (Some(n), _) => Some(n),
                            (None, Some(t)) => match t.parse() {
                                Ok(n) => Some(n),
                                Err(_) => {
                                    return Err(serde::de::Error::custom("n is not a number"))
                                }
                            },
                            (None, None) => None,
                        };
                        if let Some(n) = seq {
                            match s.last_seq {
                                Some(prev) if n != prev + 1 => s.gaps += 1,
                                Some(_) => {}
                                None => s.first_seq = Some(n),
                            }
                            s.last_seq = Some(n);
                        }
                    }
                    s.records += 1;
                }
                Ok(s)
            }
        }
        d.deserialize_seq(Batch)
    }
}

fn handle(event: Event) -> Result<Response, Error> {
    let text = core::str::from_utf8(event.data)?;
    let batch: Summary = match serde_json_core::from_str(text) {
        Ok((b, _)) => b,
        Err(e) => edgefn_sdk::fail!("stream-audit: not a stream batch: {e}"),
    };
    if let Some(i) = batch.poison {
        edgefn_sdk::fail!("stream-audit: poison record at index {i} of the batch");
    }
    let mut key: heapless::String<256> = heapless::String::new();
    if write!(key, "last/{}", batch.partition).is_err() {
        edgefn_sdk::fail!("stream-audit: partition key too long");
    }
    let last = kv::get_u64(&key)?.unwrap_or(0);
    let mut gaps = batch.gaps;
    if let Some(first) = batch.first_seq {
        if first != last + 1 {
            gaps += 1;
        }
        kv::set_u64(&key, batch.last_seq.unwrap_or(last))?;
    }
    if gaps > 0 {
        kv::set_u64("gaps", kv::get_u64("gaps")?.unwrap_or(0) + gaps)?;
    }
    let records = kv::get_u64("records")?.unwrap_or(0) + batch.records;
    kv::set_u64("records", records)?;
    Response::fmt(format_args!("{}", batch.records))
}

edgefn_sdk::export_handler!(handle);

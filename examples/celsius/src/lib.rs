//! `celsius`: parse JSON without allocation, transform it, publish the result and return it.
//!
//! Input (event data): `{"seq":N,"ts_us":T,"temp":X}` with `X` in degrees Celsius (other fields
//! are ignored). Output: `{"seq":N,"ts_us":T,"temp_f":F}` with `F = X * 9 / 5 + 32`, published to
//! `bench/out/<last level of the event's subject>` (`bench/out/unknown` when the subject is
//! empty) and returned as the response. Config `qos` (0, 1 or 2; default 1) sets the publish QoS.
//!
//! The JSON is parsed with `serde-json-core` straight from the event buffer; a malformed event is
//! a function error whose message says what was wrong (and near which field).
#![no_std]

use core::cell::Cell;
use core::fmt::{self, Write};

use edgefn_sdk::{config, publish, Error, Event, QoS, Response, ResponseBuf, INLINE_RESPONSE};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

/// One temperature reading; `None` = the field was not in the JSON object.
#[derive(Default)]
struct Reading {
    seq: Option<u64>,
    ts_us: Option<u64>,
    temp: Option<f64>,
}

fn handle(event: Event) -> Result<Response, Error> {
    let reading = parse(event.data)?;
    let (Some(seq), Some(ts_us), Some(temp)) = (reading.seq, reading.ts_us, reading.temp) else {
        let missing = if reading.seq.is_none() {
            "seq"
        } else if reading.ts_us.is_none() {
            "ts_us"
        } else {
            "temp"
        };
        edgefn_sdk::fail!("celsius: input JSON has no field `{missing}` (expected {{\"seq\":N,\"ts_us\":T,\"temp\":X}})");
    };
    if !temp.is_finite() {
        edgefn_sdk::fail!("celsius: field `temp` must be a finite number");
    }
    let temp_f = temp * 9.0 / 5.0 + 32.0;
    if !temp_f.is_finite() {
        edgefn_sdk::fail!("celsius: field `temp` out of range");
    }

    let mut out = heapless::String::<INLINE_RESPONSE>::new();
    let mut f = ryu::Buffer::new();
    let temp_f = f.format_finite(temp_f);
    write!(
        out,
        "{{\"seq\":{seq},\"ts_us\":{ts_us},\"temp_f\":{temp_f}}}"
    )
    .map_err(|_| Error::msg("celsius: output longer than the response buffer"))?;

    let mut topic = heapless::String::<256>::new();
    write!(topic, "bench/out/{}", last_level(event.subject))
        .map_err(|_| Error::msg("celsius: subject too long for the output topic"))?;
    publish(&topic, out.as_bytes(), qos()?)
        .map_err(|e| Error::fmt(format_args!("celsius: publish to `{topic}` refused: {e}")))?;

    let bytes: ResponseBuf = out.into_bytes();
    Ok(Response::Inline(bytes))
}

/// The last `/`-separated level of an MQTT topic, `unknown` when empty.
fn last_level(subject: &str) -> &str {
    match subject.rsplit('/').next() {
        Some(level) if !level.is_empty() => level,
        _ => "unknown",
    }
}

/// Publish QoS from config `qos`, default 1.
fn qos() -> Result<QoS, Error> {
    let mut buf = [0u8; 8];
    match config::get_str("qos", &mut buf)? {
        None => Ok(QoS::AtLeastOnce),
        Some(s) => s
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(QoS::from_i32)
            .ok_or_else(|| {
                Error::fmt(format_args!(
                    "celsius: config `qos` must be 0, 1 or 2, not `{s}`"
                ))
            }),
    }
}

/// Parses the reading, naming the field the parser was at when the JSON was malformed.
fn parse(data: &[u8]) -> Result<Reading, Error> {
    let at = Cell::new("");
    let mut de = serde_json_core::de::Deserializer::new(data, None);
    let reading = de
        .deserialize_map(ReadingVisitor { at: &at })
        .map_err(|e| match at.get() {
            "" => Error::fmt(format_args!("celsius: input is not a JSON object: {e}")),
            field => Error::fmt(format_args!(
                "celsius: bad JSON input at field `{field}`: {e}"
            )),
        })?;
    de.end().map_err(|e| {
        Error::fmt(format_args!(
            "celsius: unexpected text after the JSON object: {e}"
        ))
    })?;
    Ok(reading)
}

struct ReadingVisitor<'c, 'de> {
    /// The key whose value is being parsed (for error messages).
    at: &'c Cell<&'de str>,
}

impl<'de> Visitor<'de> for ReadingVisitor<'_, 'de> {
    type Value = Reading;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object {\"seq\":N,\"ts_us\":T,\"temp\":X}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reading, A::Error> {
        let mut r = Reading::default();
        while let Some(key) = map.next_key::<&str>()? {
            self.at.set(key);
            match key {
                "seq" => r.seq = Some(map.next_value()?),
                "ts_us" => r.ts_us = Some(map.next_value()?),
                "temp" => r.temp = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
}

edgefn_sdk::export_handler!(handle);

//! `threshold-alert`: configuration, a conditional publish and a warn log.
//!
//! Config:
//! - `threshold` (required): a number. A missing or non-numeric threshold fails every invocation
//!   with a message saying so.
//! - `field` (optional, default `value`): the top-level JSON field holding the reading.
//! - `alert_topic` (optional, default `alerts/<subject>`; `alerts/unknown` for an empty subject).
//!
//! Input: a JSON object such as `{"value":31.2}`. When the value is above the threshold the function
//! publishes `{"subject":...,"value":...,"threshold":...}` (QoS 1) to the alert topic, logs a warn
//! line and responds `alert`; otherwise it responds `ok`.
#![no_std]

use core::fmt::{self, Write};

use edgefn_sdk::{config, publish, Error, Event, Lookup, QoS, Response};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

fn handle(event: Event) -> Result<Response, Error> {
    let threshold = threshold()?;

    let mut field_buf = [0u8; 128];
    let field = config::get_str("field", &mut field_buf)?.unwrap_or("value");
    let value = read_field(event.data, field)?;
    if value <= threshold {
        return Ok(Response::text("ok"));
    }

    let mut topic_buf = [0u8; 256];
    let mut default_topic = heapless::String::<256>::new();
    let topic = match config::get_str("alert_topic", &mut topic_buf)? {
        Some(t) => t,
        None => {
            let subject = if event.subject.is_empty() {
                "unknown"
            } else {
                event.subject
            };
            write!(default_topic, "alerts/{subject}")
                .map_err(|_| Error::msg("threshold-alert: subject too long for the alert topic"))?;
            &default_topic
        }
    };

    // ryu writes the shortest text that reads back as the same f64 (and is smaller than core's
    // float formatting).
    let (mut v, mut t) = (ryu::Buffer::new(), ryu::Buffer::new());
    let (value, threshold) = (v.format_finite(value), t.format_finite(threshold));

    let mut alert = heapless::String::<1024>::new();
    write!(alert, "{{\"subject\":")
        .and_then(|_| write_json_str(&mut alert, event.subject))
        .and_then(|_| write!(alert, ",\"value\":{value},\"threshold\":{threshold}}}"))
        .map_err(|_| Error::msg("threshold-alert: alert longer than 1024 bytes"))?;
    publish(topic, alert.as_bytes(), QoS::AtLeastOnce).map_err(|e| {
        Error::fmt(format_args!(
            "threshold-alert: publish to `{topic}` refused: {e}"
        ))
    })?;
    edgefn_sdk::warn!(
        "threshold-alert: value {value} from `{}` is above the threshold {threshold}",
        event.subject
    );
    Ok(Response::text("alert"))
}

/// The required config value `threshold`.
fn threshold() -> Result<f64, Error> {
    let mut buf = [0u8; 64];
    let text = match config::get_str("threshold", &mut buf) {
        Ok(Some(text)) => text.trim(),
        Ok(None) => edgefn_sdk::fail!(
            "threshold-alert: config `threshold` is required (a number, e.g. 30.5)"
        ),
        Err(Lookup::TooSmall(n)) => {
            edgefn_sdk::fail!(
                "threshold-alert: config `threshold` must be a number, not a {n}-byte text"
            )
        }
        Err(e) => return Err(e.into()),
    };
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() => Ok(t),
        _ => {
            edgefn_sdk::fail!("threshold-alert: config `threshold` must be a number, not `{text}`")
        }
    }
}

/// Reads the number in top-level field `field` of the JSON object `data`.
fn read_field(data: &[u8], field: &str) -> Result<f64, Error> {
    let mut de = serde_json_core::de::Deserializer::new(data, None);
    let found = FieldSeed { field }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|_| v));
    match found {
        Ok(Some(v)) if v.is_finite() => Ok(v),
        Ok(Some(_)) => {
            edgefn_sdk::fail!("threshold-alert: field `{field}` must be a finite number")
        }
        Ok(None) => edgefn_sdk::fail!("threshold-alert: input JSON object has no field `{field}`"),
        Err(e) => edgefn_sdk::fail!(
            "threshold-alert: input must be a JSON object with a numeric field `{field}`: {e}"
        ),
    }
}

/// Deserializes a JSON object, keeping only the number under one key chosen at run time.
struct FieldSeed<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<f64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a JSON object with a numeric field `{}`", self.field)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<f64>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<&str>()? {
            if key == self.field {
                found = Some(map.next_value::<f64>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Writes `s` as a JSON string literal.
fn write_json_str(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

edgefn_sdk::export_handler!(handle);

//! The event a stream batch becomes (docs/triggers.md, "Batch encoding"): source `stream`,
//! subject = the partition key, content type `application/json`, data = a JSON array of the
//! batch's records in offset order:
//!
//! ```json
//! [{"partition":"d7","offset":41,"subject":"plant/d7/temp","time_ms":1764201600000,"payload":{"t":21.5}},
//!  {"partition":"d7","offset":42,"subject":"plant/d7/temp","time_ms":1764201600012,"payload_text":"hello"}]
//! ```
//!
//! Each record has exactly one of `payload` (the payload is JSON: embedded as it is, byte for
//! byte), `payload_text` (UTF-8 that is not JSON, as a JSON string) or `payload_base64` (other
//! bytes, standard base64).

use crate::pool::OwnedEvent;
use crate::store::stream::StreamRecord;
use base64::Engine as _;
use serde::de::IgnoredAny;

/// The content type of batch events.
pub const CONTENT_TYPE: &str = "application/json";

/// The JSON array of `records` (see the module docs).
pub fn encode(records: &[StreamRecord]) -> Vec<u8> {
    let size: usize = records.iter().map(|r| r.payload.len() + 96).sum();
    let mut out = Vec::with_capacity(size + 2);
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"partition\":");
        push_json_string(&mut out, &r.partition);
        out.extend_from_slice(format!(",\"offset\":{},\"subject\":", r.offset).as_bytes());
        push_json_string(&mut out, &r.subject);
        out.extend_from_slice(format!(",\"time_ms\":{},", r.time_ms).as_bytes());
        if is_json(&r.payload) {
            out.extend_from_slice(b"\"payload\":");
            out.extend_from_slice(r.payload.trim_ascii());
        } else if let Ok(text) = std::str::from_utf8(&r.payload) {
            out.extend_from_slice(b"\"payload_text\":");
            push_json_string(&mut out, text);
        } else {
            out.extend_from_slice(b"\"payload_base64\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(&r.payload)
                    .as_bytes(),
            );
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b']');
    out
}

/// The event of a batch (`records` non-empty, all of one partition).
pub fn event(mapping_id: &str, records: &[StreamRecord]) -> OwnedEvent {
    let (first, last) = (&records[0], &records[records.len() - 1]);
    OwnedEvent {
        // Names the batch: the same records always make the same id (traceable in logs, and
        // a weighted alias sends a retried batch to the same version).
        id: format!(
            "stream:{mapping_id}:{}:{}-{}",
            first.partition, first.offset, last.offset
        ),
        source: edgefn_sdk::abi::source::STREAM.into(),
        subject: first.partition.clone(),
        time_ms: first.time_ms.max(0) as u64,
        content_type: CONTENT_TYPE.into(),
        data: encode(records),
        attempt: 1,
    }
}

fn is_json(payload: &[u8]) -> bool {
    !payload.trim_ascii().is_empty() && serde_json::from_slice::<IgnoredAny>(payload).is_ok()
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn rec(offset: i64, payload: &[u8]) -> StreamRecord {
        StreamRecord {
            partition: "d\"7".into(),
            offset,
            subject: "plant/d7".into(),
            time_ms: 5,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn json_text_and_binary_payloads() {
        let data = encode(&[
            rec(1, br#" {"t": 21.50, "b": [1,2]} "#),
            rec(2, b"hello \"you\""),
            rec(3, &[0xff, 0x00]),
            rec(4, b""),
            rec(5, b"42"),
        ]);
        let v: Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(
            v,
            json!([
                {"partition": "d\"7", "offset": 1, "subject": "plant/d7", "time_ms": 5,
                 "payload": {"t": 21.50, "b": [1, 2]}},
                {"partition": "d\"7", "offset": 2, "subject": "plant/d7", "time_ms": 5,
                 "payload_text": "hello \"you\""},
                {"partition": "d\"7", "offset": 3, "subject": "plant/d7", "time_ms": 5,
                 "payload_base64": "/wA="},
                {"partition": "d\"7", "offset": 4, "subject": "plant/d7", "time_ms": 5,
                 "payload_text": ""},
                {"partition": "d\"7", "offset": 5, "subject": "plant/d7", "time_ms": 5,
                 "payload": 42},
            ])
        );
        // JSON payloads are embedded byte for byte (no reformatting of numbers or key order).
        assert!(String::from_utf8(data)
            .unwrap()
            .contains(r#"{"t": 21.50, "b": [1,2]}"#));
        assert_eq!(encode(&[]), b"[]");
    }

    #[test]
    fn batch_events_name_their_records() {
        let e = event("m-1", &[rec(7, b"1"), rec(8, b"2")]);
        assert_eq!(e.id, "stream:m-1:d\"7:7-8");
        assert_eq!((e.source.as_str(), e.subject.as_str()), ("stream", "d\"7"));
        assert_eq!(e.content_type, "application/json");
    }
}

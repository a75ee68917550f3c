//! Guest ABI v1: the one definition of the wire contract between the agent and a function.
//!
//! Both sides use this module: the agent to encode events and name imports, the SDK to decode
//! events and call imports. `docs/abi.md` is the language-neutral spec of the same contract.
//! Change it only by extending it.

use serde::{Deserialize, Serialize};

/// ABI version implemented by this module.
pub const ABI_VERSION: u32 = 1;

/// Import module name of every host function.
pub const IMPORT_MODULE: &str = "edgefn";

/// Export: the module's linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// Export: `(size: i32) -> i32`, a pointer to `size` writable bytes, 0 when out of memory.
pub const EXPORT_ALLOC: &str = "edgefn_alloc";
/// Export: `(ptr: i32, len: i32) -> i32`, handle one event; 0 = success.
pub const EXPORT_HANDLE: &str = "edgefn_handle";
/// Optional export: `() -> i32`, called once per instance before its first event; 0 = ready.
pub const EXPORT_INIT: &str = "edgefn_init";

/// A WebAssembly value type as it appears in an ABI signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValType {
    /// 32-bit integer (also pointers and lengths).
    I32,
    /// 64-bit integer.
    I64,
}

/// The signature of one import or export of ABI v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Name inside the `edgefn` import module (or the export name).
    pub name: &'static str,
    /// Parameter types in order.
    pub params: &'static [ValType],
    /// Result types (zero or one).
    pub results: &'static [ValType],
}

use ValType::{I32, I64};

/// Every host function of ABI v1, with its exact signature.
pub const IMPORTS: &[Signature] = &[
    Signature {
        name: "log",
        params: &[I32, I32, I32],
        results: &[],
    },
    Signature {
        name: "respond",
        params: &[I32, I32],
        results: &[],
    },
    Signature {
        name: "publish",
        params: &[I32, I32, I32, I32, I32],
        results: &[I32],
    },
    Signature {
        name: "kv_get",
        params: &[I32, I32, I32, I32],
        results: &[I32],
    },
    Signature {
        name: "kv_set",
        params: &[I32, I32, I32, I32],
        results: &[I32],
    },
    Signature {
        name: "kv_delete",
        params: &[I32, I32],
        results: &[I32],
    },
    Signature {
        name: "config_get",
        params: &[I32, I32, I32, I32],
        results: &[I32],
    },
    Signature {
        name: "now_ms",
        params: &[],
        results: &[I64],
    },
    Signature {
        name: "monotonic_us",
        params: &[],
        results: &[I64],
    },
];

/// The function exports of ABI v1 (`memory` aside), with `required` telling which must exist.
pub const EXPORTS: &[(Signature, bool)] = &[
    (
        Signature {
            name: EXPORT_ALLOC,
            params: &[I32],
            results: &[I32],
        },
        true,
    ),
    (
        Signature {
            name: EXPORT_HANDLE,
            params: &[I32, I32],
            results: &[I32],
        },
        true,
    ),
    (
        Signature {
            name: EXPORT_INIT,
            params: &[],
            results: &[I32],
        },
        false,
    ),
];

/// Looks up an ABI v1 import by name.
pub fn import(name: &str) -> Option<&'static Signature> {
    IMPORTS.iter().find(|s| s.name == name)
}

/// Status codes returned by host functions (negative = refused).
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// `kv_get` / `config_get`: no such key.
    pub const NOT_FOUND: i32 = -1;
    /// Not permitted (e.g. publishing to a topic outside the function's permissions).
    pub const DENIED: i32 = -2;
    /// Too large (topic, payload, key or value over its limit).
    pub const TOO_LARGE: i32 = -3;
    /// Invalid argument (e.g. topic not UTF-8 or containing wildcards, qos not 0..=2, empty key).
    pub const INVALID: i32 = -4;
    /// A per-invocation or per-function quota is exhausted (publish count, kv size).
    pub const QUOTA: i32 = -5;
}

/// Log levels of the `log` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Level {
    /// 0: very detailed tracing.
    Trace = 0,
    /// 1: debugging detail.
    Debug = 1,
    /// 2: normal information.
    Info = 2,
    /// 3: something unexpected, handled.
    Warn = 3,
    /// 4: a failure.
    Error = 4,
}

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// The level for an ABI integer; values above 4 clamp to `Error`, below 0 to `Trace`.
    pub fn from_i32(v: i32) -> Level {
        match v {
            i32::MIN..=0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
        }
    }

    /// Lower-case name: `trace`, `debug`, `info`, `warn`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// Parses a level name (case-insensitive; `warning` and `err` accepted).
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .or(if s.eq_ignore_ascii_case("warning") {
                Some(Level::Warn)
            } else if s.eq_ignore_ascii_case("err") {
                Some(Level::Error)
            } else {
                None
            })
    }
}

impl core::fmt::Display for Level {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.pad(self.as_str())
    }
}

/// MQTT quality of service of the `publish` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for an ABI integer, `None` outside 0..=2.
    pub fn from_i32(v: i32) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Event sources named in [`Event::source`].
pub mod source {
    /// An MQTT message; subject = topic.
    pub const MQTT: &str = "mqtt";
    /// A schedule; subject = mapping name.
    pub const SCHEDULE: &str = "schedule";
    /// A local HTTP request; subject = path.
    pub const HTTP: &str = "http";
    /// A direct invocation.
    pub const INVOKE: &str = "invoke";
    /// A stream batch; subject = partition.
    pub const STREAM: &str = "stream";
    /// A batch-job task.
    pub const BATCH: &str = "batch";
    /// Another function's result (destination chaining).
    pub const FUNCTION: &str = "function";
}

/// One event as the guest receives it: postcard, fields in this order, borrowing the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<'a> {
    /// Unique event id (dedup key).
    pub id: &'a str,
    /// Which kind of source produced it (see [`source`]).
    pub source: &'a str,
    /// MQTT topic, schedule name, HTTP path, stream partition, ...
    pub subject: &'a str,
    /// Event time, Unix milliseconds.
    pub time_ms: u64,
    /// MIME type of `data`, `""` when unknown.
    pub content_type: &'a str,
    /// The payload.
    #[serde(borrow, serialize_with = "serialize_bytes")]
    pub data: &'a [u8],
    /// 1 on first delivery, 2.. on retries.
    pub attempt: u32,
}

/// Writes `data` as one byte string (serde's default for `&[u8]` is a sequence of single bytes:
/// the same postcard encoding, but ~10x slower to write for a 4 KiB payload).
fn serialize_bytes<S: serde::Serializer>(data: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(data)
}

/// Why bytes are not a valid ABI v1 event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("malformed edgefn ABI v1 event encoding")
    }
}

impl<'a> Event<'a> {
    /// Decodes an event without copying: strings and data borrow `bytes`.
    /// Trailing bytes are an error.
    pub fn decode(bytes: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        match postcard::take_from_bytes::<Event<'a>>(bytes) {
            Ok((ev, [])) => Ok(ev),
            _ => Err(DecodeError),
        }
    }

    /// Encodes the event into `buf`, returning the used prefix (`None` if `buf` is too small).
    pub fn encode_to_slice<'b>(&self, buf: &'b mut [u8]) -> Option<&'b mut [u8]> {
        postcard::to_slice(self, buf).ok()
    }

    /// Exact number of bytes [`Event::encode_to_slice`] writes.
    pub fn encoded_len(&self) -> usize {
        fn varint(v: u64) -> usize {
            (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
        }
        fn bytes(b: usize) -> usize {
            varint(b as u64) + b
        }
        bytes(self.id.len())
            + bytes(self.source.len())
            + bytes(self.subject.len())
            + varint(self.time_ms)
            + bytes(self.content_type.len())
            + bytes(self.data.len())
            + varint(self.attempt as u64)
    }

    /// Encodes the event into a new vector.
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> postcard::Result<alloc::vec::Vec<u8>> {
        postcard::to_allocvec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.as_str()), Some(l));
            assert_eq!(Level::from_i32(l as i32), l);
        }
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(Level::from_i32(99), Level::Error);
        assert_eq!(Level::from_i32(-3), Level::Trace);
    }

    #[test]
    fn every_import_is_found_by_name() {
        for s in IMPORTS {
            assert_eq!(import(s.name), Some(s));
        }
        assert!(import("exit").is_none());
    }

    #[test]
    fn encoded_len_matches_encoding() {
        let data = [7u8; 300];
        let ev = Event {
            id: "x",
            source: source::MQTT,
            subject: "a/b",
            time_ms: u64::MAX,
            content_type: "",
            data: &data,
            attempt: 200,
        };
        let mut buf = [0u8; 512];
        let n = ev.encode_to_slice(&mut buf).unwrap().len();
        assert_eq!(n, ev.encoded_len());
    }

    #[test]
    fn trailing_bytes_and_truncation_are_refused() {
        let ev = Event {
            id: "i",
            source: "invoke",
            subject: "",
            time_ms: 5,
            content_type: "",
            data: b"hi",
            attempt: 1,
        };
        let mut buf = [0u8; 64];
        let n = ev.encode_to_slice(&mut buf).unwrap().len();
        assert_eq!(Event::decode(&buf[..n]), Ok(ev));
        assert_eq!(Event::decode(&buf[..n + 1]), Err(DecodeError));
        assert_eq!(Event::decode(&buf[..n - 1]), Err(DecodeError));
    }
}

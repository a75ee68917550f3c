//! Safe wrappers over the host imports: respond, publish, kv, config and the clocks.

use crate::abi::{status, QoS};
use crate::sys;

/// Why the host refused a call (the negative status of ABI v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// Not permitted (topic outside the function's publish permissions).
    Denied,
    /// Topic, payload, key or value over its limit.
    TooLarge,
    /// Invalid argument (topic with wildcards, empty key, ...).
    Invalid,
    /// Quota exhausted (publishes per invocation, kv size).
    Quota,
    /// A status this SDK version does not know.
    Other(i32),
}

impl HostError {
    fn from_status(code: i32) -> HostError {
        match code {
            status::DENIED => HostError::Denied,
            status::TOO_LARGE => HostError::TooLarge,
            status::INVALID => HostError::Invalid,
            status::QUOTA => HostError::Quota,
            c => HostError::Other(c),
        }
    }

    fn check(code: i32) -> Result<(), HostError> {
        if code >= 0 {
            Ok(())
        } else {
            Err(HostError::from_status(code))
        }
    }
}

impl core::fmt::Display for HostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HostError::Denied => f.write_str("denied by the host"),
            HostError::TooLarge => f.write_str("too large"),
            HostError::Invalid => f.write_str("invalid argument"),
            HostError::Quota => f.write_str("quota exhausted"),
            HostError::Other(c) => write!(f, "host status {c}"),
        }
    }
}

/// Sets the invocation's response bytes (the last call wins). Returning a [`crate::Response`]
/// from the handler does the same; use this for responses built in your own buffer.
pub fn respond(bytes: &[u8]) {
    unsafe { sys::respond(bytes.as_ptr(), bytes.len()) }
}

/// Publishes `data` to `topic`. Takes effect only if the invocation succeeds.
pub fn publish(topic: &str, data: &[u8], qos: QoS) -> Result<(), HostError> {
    HostError::check(unsafe {
        sys::publish(
            topic.as_ptr(),
            topic.len(),
            data.as_ptr(),
            data.len(),
            qos as i32,
        )
    })
}

/// Result of a lookup into a caller-provided buffer.
fn lookup(code: i32, buf: &mut [u8]) -> Result<Option<&[u8]>, Lookup> {
    if code == status::NOT_FOUND {
        Ok(None)
    } else if code < 0 {
        Err(Lookup::Host(HostError::from_status(code)))
    } else if code as usize > buf.len() {
        Err(Lookup::TooSmall(code as usize))
    } else {
        Ok(Some(&buf[..code as usize]))
    }
}

/// Why a kv or config lookup did not return a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The value exists but needs this many bytes; nothing was copied.
    TooSmall(usize),
    /// The host refused the call.
    Host(HostError),
}

impl core::fmt::Display for Lookup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Lookup::TooSmall(n) => write!(f, "value needs {n} bytes, buffer too small"),
            Lookup::Host(e) => e.fmt(f),
        }
    }
}

/// The function's persistent key-value store. Writes take effect only if the invocation
/// succeeds; reads see this invocation's own earlier writes.
pub mod kv {
    use super::*;

    /// Reads `key` into `buf`: `Ok(None)` if absent.
    pub fn get<'b>(key: &str, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Lookup> {
        let code = unsafe { sys::kv_get(key.as_ptr(), key.len(), buf.as_mut_ptr(), buf.len()) };
        lookup(code, buf)
    }

    /// Reads a little-endian `u64` stored with [`set_u64`]; absent = `None`.
    pub fn get_u64(key: &str) -> Result<Option<u64>, Lookup> {
        let mut buf = [0u8; 8];
        match get(key, &mut buf)? {
            Some(b) if b.len() == 8 => Ok(Some(u64::from_le_bytes(buf))),
            Some(b) => Err(Lookup::TooSmall(b.len())),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
        HostError::check(unsafe {
            sys::kv_set(key.as_ptr(), key.len(), value.as_ptr(), value.len())
        })
    }

    /// Stores a `u64` as 8 little-endian bytes.
    pub fn set_u64(key: &str, value: u64) -> Result<(), HostError> {
        set(key, &value.to_le_bytes())
    }

    /// Deletes `key` (deleting an absent key is not an error).
    pub fn delete(key: &str) -> Result<(), HostError> {
        HostError::check(unsafe { sys::kv_delete(key.as_ptr(), key.len()) })
    }
}

/// The function's configuration values (from its spec, or `--config` with `exec`).
pub mod config {
    use super::*;

    /// Reads config value `key` into `buf`: `Ok(None)` if absent.
    pub fn get<'b>(key: &str, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Lookup> {
        let code = unsafe { sys::config_get(key.as_ptr(), key.len(), buf.as_mut_ptr(), buf.len()) };
        lookup(code, buf)
    }

    /// Reads config value `key` as UTF-8 text; invalid UTF-8 reads as absent.
    pub fn get_str<'b>(key: &str, buf: &'b mut [u8]) -> Result<Option<&'b str>, Lookup> {
        Ok(get(key, buf)?.and_then(|b| core::str::from_utf8(b).ok()))
    }
}

/// Wall clock, Unix milliseconds.
pub fn now_ms() -> u64 {
    unsafe { sys::now_ms() as u64 }
}

/// Monotonic clock in microseconds (what embassy-time's [`crate::Instant`] reads).
pub fn monotonic_us() -> u64 {
    unsafe { sys::monotonic_us() as u64 }
}

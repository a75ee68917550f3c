//! `rolling-average`: state that is more than a counter, kept in one kv value.
//!
//! Keeps the last N numbers (config `window`, default 10, at most 512) under the kv key `values`
//! as a packed array of little-endian `f64`, oldest first, and responds with their average as
//! text. The event data is a plain number (`21.5`) or a JSON object `{"value":21.5}`.
#![no_std]

use edgefn_sdk::{config, kv, Error, Event, Lookup, Response};
use serde::Deserialize;

const KEY: &str = "values";
const DEFAULT_WINDOW: usize = 10;
const MAX_WINDOW: usize = 512;

#[derive(Deserialize)]
struct Reading {
    value: Option<f64>,
}

fn handle(event: Event) -> Result<Response, Error> {
    let value = parse(event.data)?;
    let window = window()?;

    // Load the stored values, append the new one, keep the last `window`.
    let mut buf = [0u8; MAX_WINDOW * 8];
    let stored = match kv::get(KEY, &mut buf) {
        Ok(Some(b)) => b.len() / 8,
        Ok(None) => 0,
        // Longer than any window (not written by this function): start over.
        Err(Lookup::TooSmall(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    let mut n = stored;
    if stored >= window {
        // Drop the oldest so that the new value fits in the window.
        let keep = window - 1;
        buf.copy_within((stored - keep) * 8..stored * 8, 0);
        n = keep;
    }
    buf[n * 8..n * 8 + 8].copy_from_slice(&value.to_le_bytes());
    n += 1;
    kv::set(KEY, &buf[..n * 8])?;

    let sum: f64 = buf[..n * 8]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
        .sum();
    let mut text = ryu::Buffer::new();
    let avg = text.format_finite(sum / n as f64);
    Response::fmt(format_args!("{avg}"))
}

/// A plain number or `{"value": x}`.
fn parse(data: &[u8]) -> Result<f64, Error> {
    let text = core::str::from_utf8(data)?.trim();
    let value = if text.starts_with('{') {
        match serde_json_core::from_str::<Reading>(text) {
            Ok((Reading { value: Some(v) }, _)) => v,
            Ok((Reading { value: None }, _)) => {
                edgefn_sdk::fail!("rolling-average: the JSON object has no field `value`")
            }
            Err(e) => edgefn_sdk::fail!("rolling-average: expected {{\"value\":<number>}}: {e}"),
        }
    } else {
        match text.parse::<f64>() {
            Ok(v) => v,
            Err(_) => edgefn_sdk::fail!(
                "rolling-average: data must be a number or {{\"value\":<number>}}, not `{text}`"
            ),
        }
    };
    if !value.is_finite() {
        edgefn_sdk::fail!("rolling-average: the value must be a finite number");
    }
    Ok(value)
}

/// Config `window`: how many values to average, 1..=512, default 10.
fn window() -> Result<usize, Error> {
    let mut buf = [0u8; 16];
    match config::get_str("window", &mut buf) {
        Ok(None) => Ok(DEFAULT_WINDOW),
        Ok(Some(s)) => match s.trim().parse::<usize>() {
            Ok(w) if (1..=MAX_WINDOW).contains(&w) => Ok(w),
            _ => edgefn_sdk::fail!("rolling-average: config `window` must be a whole number from 1 to {MAX_WINDOW}, not `{s}`"),
        },
        Err(Lookup::TooSmall(_)) => {
            edgefn_sdk::fail!("rolling-average: config `window` must be a whole number from 1 to {MAX_WINDOW}")
        }
        Err(e) => Err(e.into()),
    }
}

edgefn_sdk::export_handler!(handle);

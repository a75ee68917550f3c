#![doc = include_str!("../README.md")]
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod abi;
#[cfg(feature = "check")]
pub mod check;
mod handler;
mod host;
pub mod log;
mod sys;
mod time;

pub use abi::{Event, Level, QoS};
pub use embassy_time::{Duration, Instant};
#[doc(hidden)]
pub use handler::__rt;
pub use handler::{Error, Response, ResponseBuf, INLINE_RESPONSE, MAX_ERROR};
pub use host::{config, kv, monotonic_us, now_ms, publish, respond, HostError, Lookup};

#[cfg(all(target_arch = "wasm32", feature = "panic-handler", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // A panic is a trap: the host ends this instance and reports the invocation as failed.
    core::arch::wasm32::unreachable()
}

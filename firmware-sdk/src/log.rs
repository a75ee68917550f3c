//! Logging: `trace!` .. `error!` format into a fixed buffer (no allocation) and call the `log` import.

use crate::abi::Level;
use core::fmt::Write;

/// Longest log line sent to the host; longer lines are cut and end with `...`.
pub const MAX_LINE: usize = 512;

/// Sends one log line at `level`. Static text is passed through without formatting.
pub fn write(level: Level, args: core::fmt::Arguments<'_>) {
    if let Some(s) = args.as_str() {
        return write_str(level, s);
    }
    let mut line = heapless::String::<MAX_LINE>::new();
    if line.write_fmt(args).is_err() {
        // Cut on a char boundary and mark the cut.
        let mut end = MAX_LINE - 3;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        let _ = line.push_str("...");
    }
    write_str(level, &line)
}

/// Sends one log line of static or already formatted text.
pub fn write_str(level: Level, text: &str) {
    unsafe { crate::sys::log(level as i32, text.as_ptr(), text.len()) }
}

/// Logs at trace level: `trace!("x = {}", x)`.
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log::write($crate::Level::Trace, format_args!($($arg)*)) } }
/// Logs at debug level.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::write($crate::Level::Debug, format_args!($($arg)*)) } }
/// Logs at info level.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::write($crate::Level::Info, format_args!($($arg)*)) } }
/// Logs at warn level.
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::write($crate::Level::Warn, format_args!($($arg)*)) } }
/// Logs at error level.
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::write($crate::Level::Error, format_args!($($arg)*)) } }

//! The handler contract: [`Response`], [`Error`] and the glue behind [`export_handler!`](crate::export_handler).

use crate::abi::{DecodeError, Event};
use crate::host::{respond, HostError, Lookup};
use core::fmt::Write;

/// Capacity of an inline response buffer ([`Response::Inline`]).
pub const INLINE_RESPONSE: usize = 1024;
/// Capacity of an error message; longer messages are cut.
pub const MAX_ERROR: usize = 256;

/// A fixed-capacity buffer for building a response without allocation.
pub type ResponseBuf = heapless::Vec<u8, INLINE_RESPONSE>;

/// What a handler returns on success.
// The inline variant is large on purpose: a no_std guest has no allocator to box it into, and the
// value lives on the handler's stack for one call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// No response bytes (keeps whatever [`respond`](crate::respond) set, if anything).
    Empty,
    /// Bytes borrowed from the event or from static data.
    Bytes(&'a [u8]),
    /// Bytes built in a fixed buffer (up to [`INLINE_RESPONSE`]); for larger responses build your
    /// own buffer, call [`respond`](crate::respond) and return [`Response::Empty`].
    Inline(ResponseBuf),
}

impl<'a> Response<'a> {
    /// No response bytes.
    pub fn empty() -> Response<'static> {
        Response::Empty
    }

    /// Borrowed bytes.
    pub fn bytes(b: &'a [u8]) -> Response<'a> {
        Response::Bytes(b)
    }

    /// Borrowed text.
    pub fn text(s: &'a str) -> Response<'a> {
        Response::Bytes(s.as_bytes())
    }

    /// Formats into an inline buffer: `Response::fmt(format_args!("{}", x))`.
    /// Fails when the text is longer than [`INLINE_RESPONSE`].
    // `Error` holds its message inline (no allocator in a guest), hence its size.
    #[allow(clippy::result_large_err)]
    pub fn fmt(args: core::fmt::Arguments<'_>) -> Result<Response<'static>, Error> {
        let mut s = heapless::String::<INLINE_RESPONSE>::new();
        s.write_fmt(args)
            .map_err(|_| Error::msg("response longer than the inline buffer (1024 bytes)"))?;
        Ok(Response::Inline(s.into_bytes()))
    }

    /// The response bytes (`None` for [`Response::Empty`]).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Response::Empty => None,
            Response::Bytes(b) => Some(b),
            Response::Inline(v) => Some(v),
        }
    }
}

impl<'a> From<&'a [u8]> for Response<'a> {
    fn from(b: &'a [u8]) -> Self {
        Response::Bytes(b)
    }
}

impl<'a> From<&'a str> for Response<'a> {
    fn from(s: &'a str) -> Self {
        Response::Bytes(s.as_bytes())
    }
}

/// A function error: its message becomes the invocation's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: heapless::String<MAX_ERROR>,
}

impl Error {
    /// An error with a fixed message (cut at [`MAX_ERROR`] bytes).
    pub fn msg(text: &str) -> Error {
        let mut message = heapless::String::new();
        for c in text.chars() {
            if message.push(c).is_err() {
                break;
            }
        }
        Error { message }
    }

    /// An error with a formatted message: `Error::fmt(format_args!("bad {}", x))`.
    pub fn fmt(args: core::fmt::Arguments<'_>) -> Error {
        let mut e = Error {
            message: heapless::String::new(),
        };
        let mut w = Truncating(&mut e.message);
        let _ = w.write_fmt(args);
        e
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

struct Truncating<'s>(&'s mut heapless::String<MAX_ERROR>);

impl Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Error {
        Error::fmt(format_args!("host refused the call: {e}"))
    }
}

impl From<Lookup> for Error {
    fn from(e: Lookup) -> Error {
        Error::fmt(format_args!("lookup failed: {e}"))
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::fmt(format_args!("{e}"))
    }
}

impl From<core::str::Utf8Error> for Error {
    fn from(_: core::str::Utf8Error) -> Error {
        Error::msg("data is not valid UTF-8")
    }
}

/// Returns early with a formatted [`Error`]: `fail!("temperature {} out of range", t)`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { return ::core::result::Result::Err($crate::Error::fmt(format_args!($($arg)*))) };
}

/// Exports `edgefn_alloc`, `edgefn_handle` and (with `init = f`) `edgefn_init` around plain functions.
///
/// The handler takes the [`Event`] by value: it is `Copy` and its fields borrow the event buffer,
/// so with plain lifetime elision the [`Response`] may borrow from the event (`event.data`).
///
/// ```no_run
/// use edgefn_sdk::{Event, Response, Error};
/// fn handle(event: Event) -> Result<Response, Error> {
///     Ok(Response::bytes(event.data))
/// }
/// fn init() -> Result<(), Error> { Ok(()) }
/// edgefn_sdk::export_handler!(handle, init = init);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:path) => {
        #[no_mangle]
        pub extern "C" fn edgefn_alloc(size: i32) -> i32 {
            $crate::__rt::alloc(size)
        }
        #[no_mangle]
        pub extern "C" fn edgefn_handle(ptr: i32, len: i32) -> i32 {
            $crate::__rt::handle(ptr, len, $handler)
        }
    };
    ($handler:path, init = $init:path) => {
        $crate::export_handler!($handler);
        #[no_mangle]
        pub extern "C" fn edgefn_init() -> i32 {
            $crate::__rt::init($init)
        }
    };
}

/// Runtime glue used by [`export_handler!`](crate::export_handler); not a stable API.
#[doc(hidden)]
pub mod __rt {
    use super::*;

    /// Events up to this size land in a static buffer inside the module's first page, so a
    /// function that only sees small events never grows its memory (a fresh instance stays one
    /// 64 KiB page: cheaper to create and to keep warm).
    pub const SMALL_EVENT: usize = 4096;

    #[repr(align(8))]
    struct Small([u8; SMALL_EVENT]);

    static mut SMALL: Small = Small([0; SMALL_EVENT]);

    /// One reusable region for larger events: grown (with `memory.grow`) only when an event is
    /// larger than every earlier one, so memory stays flat across invocations.
    static mut REGION: (usize, usize) = (0, 0);

    const PAGE: usize = 65536;

    pub fn alloc(size: i32) -> i32 {
        if size < 0 {
            return 0;
        }
        let size = size as usize;
        // SAFETY: a wasm32 guest is single-threaded and the host calls exports one at a time;
        // the event buffer is only read during the `edgefn_handle` call that follows.
        unsafe {
            if size <= SMALL_EVENT {
                return core::ptr::addr_of_mut!(SMALL.0) as usize as i32;
            }
            let (ptr, cap) = *core::ptr::addr_of!(REGION);
            if size <= cap && ptr != 0 {
                return ptr as i32;
            }
            let pages = size.div_ceil(PAGE);
            match grow(pages) {
                Some(base) => {
                    *core::ptr::addr_of_mut!(REGION) = (base, pages * PAGE);
                    base as i32
                }
                None => 0,
            }
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn grow(pages: usize) -> Option<usize> {
        let old = core::arch::wasm32::memory_grow(0, pages);
        (old != usize::MAX).then_some(old * PAGE)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn grow(_pages: usize) -> Option<usize> {
        None
    }

    /// The handler signature [`export_handler!`](crate::export_handler) accepts.
    pub type Handler = for<'a> fn(Event<'a>) -> Result<Response<'a>, Error>;

    pub fn handle(ptr: i32, len: i32, f: Handler) -> i32 {
        let bytes: &[u8] = if ptr == 0 || len <= 0 {
            &[]
        } else {
            // SAFETY: the host wrote `len` bytes at `ptr`, inside the region `alloc` returned.
            unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
        };
        let event = match Event::decode(bytes) {
            Ok(e) => e,
            Err(e) => {
                respond(Error::from(e).message().as_bytes());
                return 1;
            }
        };
        match f(event) {
            Ok(r) => {
                if let Some(b) = r.as_bytes() {
                    respond(b);
                }
                0
            }
            Err(e) => {
                respond(e.message().as_bytes());
                1
            }
        }
    }

    pub fn init(f: fn() -> Result<(), Error>) -> i32 {
        match f() {
            Ok(()) => 0,
            Err(e) => {
                crate::log::write_str(crate::Level::Error, e.message());
                1
            }
        }
    }
}

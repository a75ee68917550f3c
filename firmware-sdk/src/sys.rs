//! The raw host imports of ABI v1 (`extern "C"` in the `edgefn` import module).
//!
//! On targets other than wasm32 the same names exist but panic when called, so code using the SDK
//! (and its doc examples) still compiles and type-checks natively.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "edgefn")]
extern "C" {
    pub fn log(level: i32, ptr: *const u8, len: usize);
    pub fn respond(ptr: *const u8, len: usize);
    pub fn publish(
        topic_ptr: *const u8,
        topic_len: usize,
        data_ptr: *const u8,
        data_len: usize,
        qos: i32,
    ) -> i32;
    pub fn kv_get(key_ptr: *const u8, key_len: usize, out_ptr: *mut u8, out_cap: usize) -> i32;
    pub fn kv_set(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize) -> i32;
    pub fn kv_delete(key_ptr: *const u8, key_len: usize) -> i32;
    pub fn config_get(key_ptr: *const u8, key_len: usize, out_ptr: *mut u8, out_cap: usize) -> i32;
    pub fn now_ms() -> i64;
    pub fn monotonic_us() -> i64;
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    #![allow(clippy::missing_safety_doc)]
    const MSG: &str =
        "edgefn host imports exist only inside the agent (build for wasm32-unknown-unknown)";
    pub unsafe fn log(_: i32, _: *const u8, _: usize) {
        panic!("{MSG}")
    }
    pub unsafe fn respond(_: *const u8, _: usize) {
        panic!("{MSG}")
    }
    pub unsafe fn publish(_: *const u8, _: usize, _: *const u8, _: usize, _: i32) -> i32 {
        panic!("{MSG}")
    }
    pub unsafe fn kv_get(_: *const u8, _: usize, _: *mut u8, _: usize) -> i32 {
        panic!("{MSG}")
    }
    pub unsafe fn kv_set(_: *const u8, _: usize, _: *const u8, _: usize) -> i32 {
        panic!("{MSG}")
    }
    pub unsafe fn kv_delete(_: *const u8, _: usize) -> i32 {
        panic!("{MSG}")
    }
    pub unsafe fn config_get(_: *const u8, _: usize, _: *mut u8, _: usize) -> i32 {
        panic!("{MSG}")
    }
    pub unsafe fn now_ms() -> i64 {
        panic!("{MSG}")
    }
    pub unsafe fn monotonic_us() -> i64 {
        panic!("{MSG}")
    }
}
#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

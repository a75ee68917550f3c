//! glibc malloc settings for a small gateway (issue 8; docs/benchmarks.md, "Footprint").
//!
//! glibc gives each thread that allocates an arena of its own (up to 8 per core), and memory
//! freed into an arena stays resident until the top of that arena's heap is free. The agent's
//! threads (tokio's workers, the blocking pool that runs invocations, the committer, the MQTT
//! link) all allocate, so without a cap the idle RSS grows with the threads that ever ran.
//! [`limit_arenas`] caps the arenas at start (unless `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in
//! the environment say otherwise, so the default can be measured against); [`trim`] hands free
//! heap pages back to the kernel, after each retention pass (which frees SQLite's and the
//! records' memory). Both do nothing on other C libraries.

/// Arenas the agent allows: two, so the committer and an invocation thread rarely contend for a
/// lock (docs/benchmarks.md, "Footprint", has the RSS with the default, 2 and 1).
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`]; call before starting threads. Returns whether
/// the cap was set (`false`: the environment chose, or not glibc).
pub fn limit_arenas() -> bool {
    let env_chose = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    !env_chose && glibc::set_arena_max(MALLOC_ARENAS)
}

/// Returns free heap memory of every arena to the kernel (`malloc_trim(0)`).
pub fn trim() {
    glibc::trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    /// `M_ARENA_MAX` of glibc's malloc.h.
    const M_ARENA_MAX: c_int = -8;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
    }

    pub fn set_arena_max(n: i32) -> bool {
        // SAFETY: mallopt takes two integers and is safe to call at any time.
        unsafe { mallopt(M_ARENA_MAX, n) == 1 }
    }

    pub fn trim() {
        // SAFETY: malloc_trim takes an integer; it locks each arena while it trims it.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn set_arena_max(_: i32) -> bool {
        false
    }

    pub fn trim() {}
}

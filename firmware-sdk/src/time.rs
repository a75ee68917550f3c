//! embassy-time for guests: a time driver over the host's `monotonic_us` (1 tick = 1 µs).
//!
//! Only [`Instant`](embassy_time::Instant) and [`Duration`](embassy_time::Duration) make sense in a
//! function: there is no executor to sleep on, so a timer wakes at once (it would only spin and
//! burn fuel).

struct HostClock;

impl embassy_time_driver::Driver for HostClock {
    fn now(&self) -> u64 {
        crate::host::monotonic_us()
    }

    fn schedule_wake(&self, _at: u64, waker: &core::task::Waker) {
        waker.wake_by_ref()
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: HostClock = HostClock);

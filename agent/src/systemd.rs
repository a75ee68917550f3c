//! systemd integration of `edgefn-agent run` under a `Type=notify` unit (packaging/deb):
//! `READY=1` once the admin API, the triggers and the store are up, `STOPPING=1` on shutdown,
//! and watchdog pings (`WATCHDOG=1`) at half of the unit's `WatchdogSec`.
//!
//! A ping is sent only after a store read has answered within the ping interval, so a wedged
//! reactor, a stuck blocking pool or a hung SQLite file stops the pings and systemd restarts the
//! agent. Without `$NOTIFY_SOCKET` / `$WATCHDOG_USEC` (not started by systemd) every function
//! here is a no-op.

use crate::daemon::Daemon;
use sd_notify::NotifyState;
use std::time::Duration;

/// Tells systemd the agent is ready, with a one-line status (`systemctl status` shows it).
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the agent is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The watchdog ping interval: half of the unit's `WatchdogSec` (as systemd recommends), or
/// `None` when no watchdog is configured for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Pings the watchdog every `every` for as long as the store answers a read within `every`.
/// Runs until its task is dropped.
pub async fn watchdog(daemon: Daemon, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = daemon.store().clone();
        let probe = tokio::task::spawn_blocking(move || store.mappings_revision());
        match tokio::time::timeout(every, probe).await {
            Ok(Ok(Ok(_))) => notify(&[NotifyState::Watchdog]),
            Ok(Ok(Err(e))) => eprintln!("edgefn-agent: watchdog: the store read failed: {e}"),
            Ok(Err(e)) => eprintln!("edgefn-agent: watchdog: the store probe panicked: {e}"),
            Err(_) => eprintln!(
                "edgefn-agent: watchdog: the store did not answer within {every:?}; no ping"
            ),
        }
    }
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        eprintln!("edgefn-agent: cannot notify systemd: {e}");
    }
}

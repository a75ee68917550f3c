//! The upload actor: sends log records, invocation records and stats buckets to the cloud in
//! compressed batches (`POST /v1/device/telemetry`), on a thread of its own (blocking HTTP,
//! blocking store calls).
//!
//! One round: build the next batch from the store ([`Store::upload_batch`], which writes
//! nothing), compress its JSON (zlib), send it, record the answer in one transaction
//! ([`Store::upload_acked`]). A full batch is followed at once by the next (a backlog drains
//! batch after batch); otherwise the actor waits `interval`. While the cloud is unreachable or
//! refuses, it backs off exponentially from 1 s to `retry_max`, each pause drawn between half
//! and all of its step (jitter, so a fleet coming back does not arrive in step).
//!
//! Test hook: `EDGEFN_TEST_UPLOAD_PAUSE=acked` blocks the actor after the cloud answered a
//! batch and before the answer is recorded, printing `upload: test hook: paused at acked`, so
//! a test can `kill -9` the agent there.

use std::time::{Duration, Instant};

use edgefn_cloud::protocol::telemetry::compress;

use super::client::{ClientError, CloudClient};
use crate::daemon::Daemon;
use crate::store::{Level, LogLine};

/// The environment variable of the test hook (see the module docs).
pub const TEST_UPLOAD_PAUSE_ENV: &str = "EDGEFN_TEST_UPLOAD_PAUSE";

/// Stats buckets per batch at most.
const MAX_STATS_PER_BATCH: usize = 1000;

/// The `[upload]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSettings {
    /// Upload while enrolled.
    pub enabled: bool,
    /// Pause between batches when there is no backlog.
    pub interval: Duration,
    /// Log + invocation records per batch at most.
    pub batch_records: usize,
    /// Longest pause between attempts while the cloud is unreachable.
    pub retry_max: Duration,
    /// Disk budget of log and invocation records, bytes (applied by retention).
    pub disk_budget: u64,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            enabled: true,
            interval: Duration::from_secs(10),
            batch_records: 2000,
            retry_max: Duration::from_secs(300),
            disk_budget: 64 << 20,
        }
    }
}

/// Capped exponential backoff with jitter, as a plain state machine.
#[derive(Debug)]
pub struct Backoff {
    /// Failed attempts in a row.
    failures: u32,
    /// The cap.
    max: Duration,
    /// xorshift state for the jitter (no need for a cryptographic generator).
    rng: u64,
}

impl Backoff {
    pub fn new(max: Duration, seed: u64) -> Backoff {
        Backoff {
            failures: 0,
            max,
            rng: seed | 1,
        }
    }

    /// The pause after one more failure: a step of `min(1 s x 2^(failures-1), max)`, drawn
    /// uniformly from its upper half.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let step = Duration::from_secs(1)
            .saturating_mul(1u32 << (self.failures - 1).min(20))
            .min(self.max);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        step.mul_f64(fraction)
    }

    /// A success: the next failure starts from the first step again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

pub struct UploadActor {
    daemon: Daemon,
    client: CloudClient,
    settings: UploadSettings,
}

impl UploadActor {
    pub fn new(daemon: Daemon, client: CloudClient, settings: UploadSettings) -> UploadActor {
        UploadActor {
            daemon,
            client,
            settings,
        }
    }

    fn note(&self, level: Level, text: String) {
        eprintln!("edgefn-agent: {text}");
        let _ = self.daemon.store().append_logs(&[LogLine {
            time_ms: crate::runtime::now_ms() as i64,
            level,
            function: None,
            version: None,
            invocation_id: None,
            text,
        }]);
    }

    /// Runs for ever.
    pub fn run(self) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let mut backoff = Backoff::new(self.settings.retry_max, seed);
        let pause_at_ack = std::env::var(TEST_UPLOAD_PAUSE_ENV).is_ok_and(|v| v == "acked");
        let mut down_since: Option<Instant> = None;
        loop {
            let batch = match self
                .daemon
                .store()
                .upload_batch(self.settings.batch_records, MAX_STATS_PER_BATCH)
            {
                Ok(Some(b)) => b,
                Ok(None) => {
                    std::thread::sleep(self.settings.interval);
                    continue;
                }
                Err(e) => {
                    eprintln!("edgefn-agent: upload: reading the store: {e}");
                    std::thread::sleep(backoff.failed());
                    continue;
                }
            };
            let json = serde_json::to_vec(&batch).expect("telemetry serialises");
            let body = compress(&json);
            match self.client.telemetry(&body) {
                Ok(ack) => {
                    if pause_at_ack {
                        eprintln!("upload: test hook: paused at acked");
                        loop {
                            std::thread::park();
                        }
                    }
                    if let Err(e) = self.daemon.store().upload_acked(&batch, &ack) {
                        eprintln!(
                            "edgefn-agent: upload: recording batch {}: {e}",
                            ack.batch_seq
                        );
                        std::thread::sleep(backoff.failed());
                        continue;
                    }
                    self.daemon
                        .metrics()
                        .upload_sent(batch.records() as u64, body.len() as u64);
                    backoff.succeeded();
                    if let Some(since) = down_since.take() {
                        self.note(
                            Level::Info,
                            format!(
                                "upload: the cloud takes batches again (after {}s); sending the backlog",
                                since.elapsed().as_secs()
                            ),
                        );
                    }
                    if batch.records() < self.settings.batch_records {
                        std::thread::sleep(self.settings.interval);
                    }
                }
                Err(e) => {
                    let pause = backoff.failed();
                    self.daemon.metrics().upload_failed();
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        let level = match e {
                            ClientError::Refused { .. } => Level::Error,
                            _ => Level::Warn,
                        };
                        self.note(
                            level,
                            format!(
                                "upload: batch {} not sent: {e}; records stay on disk, retrying with backoff (at most {}s apart)",
                                batch.batch_seq,
                                self.settings.retry_max.as_secs()
                            ),
                        );
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let max = Duration::from_secs(60);
        let mut b = Backoff::new(max, 42);
        let mut steps = Vec::new();
        for _ in 0..10 {
            steps.push(b.failed());
        }
        for (i, d) in steps.iter().enumerate() {
            let step = Duration::from_secs(1 << i.min(20)).min(max);
            assert!(
                *d >= step / 2 && *d <= step,
                "attempt {i}: {d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        assert_eq!(b.failures(), 10);
        b.succeeded();
        assert!(b.failed() <= Duration::from_secs(1));
        // Different seeds spread out.
        let a = Backoff::new(max, 1).failed();
        let c = Backoff::new(max, 0xdead_beef).failed();
        assert_ne!(a, c);
    }
}

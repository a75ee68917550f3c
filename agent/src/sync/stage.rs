//! Staging: downloads the modules a desired state needs into `<data_dir>/sync/staging/`, checked
//! against their signed manifests (size and sha256), with retries and resume.
//!
//! A download goes to `SHA.part`; after a crash or a broken connection it resumes from the
//! part's length with `Range: bytes=N-`. A download that runs past the manifest's size is
//! stopped at once. A complete file is checked with `verify_module` and renamed to `SHA.wasm`;
//! activation reads it into the store and removes it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefn_cloud::protocol::{verify_module, Manifest, VerifyError};

use super::client::{ClientError, CloudClient};
use super::test_hook;

/// Attempts per artifact before the sync round gives up (and retries later).
const ATTEMPTS: u32 = 5;

/// Why a module could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The bytes do not match the signed manifest: refused.
    #[error("{0}")]
    Verify(#[from] VerifyError),
    /// The cloud could not deliver it (after retries): try again later.
    #[error("download of {sha256} failed: {source}")]
    Transport { sha256: String, source: ClientError },
    #[error("staging file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where staged modules live.
pub struct Stager {
    dir: PathBuf,
}

impl Stager {
    pub fn new(data_dir: &Path) -> Stager {
        Stager {
            dir: data_dir.join("sync").join("staging"),
        }
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> StageError + '_ {
        let path = path.to_path_buf();
        move |source| StageError::Io {
            path: path.clone(),
            source,
        }
    }

    /// The module of `m`, downloaded (or resumed) and verified.
    pub fn fetch(&self, client: &CloudClient, m: &Manifest) -> Result<Vec<u8>, StageError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let done = self.dir.join(format!("{}.wasm", m.sha256));
        if let Ok(bytes) = std::fs::read(&done) {
            if verify_module(m, &bytes).is_ok() {
                return Ok(bytes);
            }
            let _ = std::fs::remove_file(&done);
        }
        let part = self.dir.join(format!("{}.part", m.sha256));
        let mut delay = Duration::from_millis(200);
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            match self.attempt(client, m, &part) {
                Ok(Some(bytes)) => {
                    std::fs::rename(&part, &done).map_err(self.io(&part))?;
                    return Ok(bytes);
                }
                Ok(None) => {} // the connection ended early: resume
                Err(StageError::Transport { source, .. }) => {
                    // A 404 will not get better by retrying now.
                    let permanent = matches!(source, ClientError::Refused { status: 404, .. });
                    eprintln!(
                        "edgefn-agent: sync: download of {} {} version {} failed (attempt \
                         {attempt}/{ATTEMPTS}): {source}",
                        &m.sha256[..12],
                        m.function,
                        m.version
                    );
                    last_error = Some(source);
                    if permanent {
                        break;
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        Err(StageError::Transport {
            sha256: m.sha256.clone(),
            source: last_error.unwrap_or_else(|| {
                ClientError::Protocol(format!(
                    "artifact {} ended early {ATTEMPTS} times",
                    m.sha256
                ))
            }),
        })
    }

    /// One request: appends to `part`; `Some(bytes)` once complete and verified.
    fn attempt(
        &self,
        client: &CloudClient,
        m: &Manifest,
        part: &Path,
    ) -> Result<Option<Vec<u8>>, StageError> {
        let mut have = std::fs::metadata(part).map(|md| md.len()).unwrap_or(0);
        if have > m.size {
            std::fs::remove_file(part).map_err(self.io(part))?;
            have = 0;
        }
        if have > 0 && have < m.size {
            eprintln!(
                "edgefn-agent: sync: resuming download of {} ({} version {}) at byte {have} of {}",
                &m.sha256[..12],
                m.function,
                m.version,
                m.size
            );
        }
        let (status, mut body) = if have == m.size && have > 0 {
            (206, Box::new(std::io::empty()) as Box<dyn Read + Send>)
        } else {
            match client.artifact(&m.sha256, have) {
                Ok(r) => r,
                Err(ClientError::Refused { status: 416, .. }) => {
                    // Our partial file does not fit the artifact: start over.
                    std::fs::remove_file(part).map_err(self.io(part))?;
                    return Ok(None);
                }
                Err(source) => {
                    return Err(StageError::Transport {
                        sha256: m.sha256.clone(),
                        source,
                    })
                }
            }
        };
        if status == 200 && have > 0 {
            have = 0; // the cloud ignored the range: the body is the whole module
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(have == 0)
            .append(have > 0)
            .open(part)
            .map_err(self.io(part))?;
        let pause = test_hook("download");
        let mut total = have;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    file.sync_data().map_err(self.io(part))?;
                    eprintln!(
                        "edgefn-agent: sync: download of {} broke at byte {total}: {e}",
                        &m.sha256[..12]
                    );
                    return Ok(None);
                }
            };
            if total + n as u64 > m.size {
                // Endless data: stop at once.
                return Err(VerifyError::SizeMismatch {
                    function: m.function.clone(),
                    version: m.version,
                    expected: m.size,
                    got: total + n as u64,
                }
                .into());
            }
            if pause && total == 0 && m.size >= 2 {
                // Test hook: write half of the module, make it durable, and stop here.
                let half = (m.size / 2) as usize;
                let take = half.min(n);
                file.write_all(&buf[..take]).map_err(self.io(part))?;
                file.sync_all().map_err(self.io(part))?;
                pause_here("download");
            }
            file.write_all(&buf[..n]).map_err(self.io(part))?;
            total += n as u64;
        }
        file.sync_data().map_err(self.io(part))?;
        drop(file);
        if total < m.size {
            return Ok(None);
        }
        let bytes = std::fs::read(part).map_err(self.io(part))?;
        verify_module(m, &bytes)?;
        Ok(Some(bytes))
    }

    /// Removes staged files (after an activation).
    pub fn clean(&self, shas: impl IntoIterator<Item = String>) {
        for sha in shas {
            let _ = std::fs::remove_file(self.dir.join(format!("{sha}.wasm")));
            let _ = std::fs::remove_file(self.dir.join(format!("{sha}.part")));
        }
    }
}

/// Test hook: announces the pause on stderr and blocks this thread for ever (the test then
/// kills the agent with SIGKILL).
pub(crate) fn pause_here(step: &str) -> ! {
    eprintln!("edgefn-agent: sync: test hook: paused at {step}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

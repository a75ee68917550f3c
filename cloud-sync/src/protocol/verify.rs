//! What a device checks before it applies a desired state (TUF-lite, DESIGN.md):
//!
//! 1. every key certificate is signed by the root key, names its own public key, and is valid
//!    at `now` (not before `not_before_ms`, not after `not_after_ms`);
//! 2. the document is signed by one of those keys (`UnknownKey` otherwise);
//! 3. it is for this device, not expired at `now`, and its sequence is not lower than the last
//!    one the device applied (equal = the same state again, accepted);
//! 4. every manifest is signed by one of those keys and names the function it is listed under;
//!    aliases only name versions that are listed.
//!
//! Then [`verify_module`] checks each downloaded module against its manifest (size first, so a
//! download can stop as soon as it runs past `size`).

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::desired::{AliasState, DesiredDocument, DesiredState, MappingState};
use super::keycert::KeyCert;
use super::manifest::Manifest;
use super::signed::{Context, Signed};

/// Why a document, key or module is refused. Every message names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("bad signature on {what} (key {key_id})")]
    BadSignature { what: String, key_id: String },
    #[error("{what} is signed by unknown key {key_id}")]
    UnknownKey { what: String, key_id: String },
    #[error("signing key {key_id} expired at {not_after_ms} (now {now_ms})")]
    KeyExpired {
        key_id: String,
        not_after_ms: i64,
        now_ms: i64,
    },
    #[error("signing key {key_id} is not valid before {not_before_ms} (now {now_ms})")]
    KeyNotYetValid {
        key_id: String,
        not_before_ms: i64,
        now_ms: i64,
    },
    #[error("{what} is for device {got}, not {expected}")]
    WrongDevice {
        what: String,
        expected: String,
        got: String,
    },
    #[error("desired state sequence {got} is lower than the applied {last} (rollback refused)")]
    Rollback { last: u64, got: u64 },
    #[error("{what} expired at {expires_ms} (now {now_ms})")]
    Expired {
        what: String,
        expires_ms: i64,
        now_ms: i64,
    },
    #[error("inconsistent desired state: {0}")]
    Inconsistent(String),
    #[error("module of {function} version {version}: size {got} bytes, manifest says {expected}")]
    SizeMismatch {
        function: String,
        version: u32,
        expected: u64,
        got: u64,
    },
    #[error("module of {function} version {version}: sha256 {got}, manifest says {expected}")]
    HashMismatch {
        function: String,
        version: u32,
        expected: String,
        got: String,
    },
}

/// A verified function: its versions' manifests (verified) and aliases.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedFunction {
    pub name: String,
    pub enabled: bool,
    pub deployment: String,
    pub versions: Vec<Manifest>,
    pub aliases: Vec<AliasState>,
}

/// A desired state whose every signature checked out.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedState {
    pub device: String,
    pub sequence: u64,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// The signing key that signed the document.
    pub key_id: String,
    pub functions: Vec<VerifiedFunction>,
    pub mappings: Vec<MappingState>,
    /// Flows, as the signed document carries them (the device checks their definitions).
    pub flows: Vec<super::FlowState>,
}

/// Checks one key certificate against the root key at `now_ms`.
pub fn verify_key_cert(
    cert: &Signed<KeyCert>,
    root: &VerifyingKey,
    now_ms: i64,
) -> Result<(String, VerifyingKey), VerifyError> {
    if cert.key_id != "root" {
        return Err(VerifyError::UnknownKey {
            what: "key certificate".into(),
            key_id: cert.key_id.clone(),
        });
    }
    let c: KeyCert = cert.verify(Context::Key, root, "key certificate")?;
    let key = c.public_key()?;
    if now_ms < c.not_before_ms {
        return Err(VerifyError::KeyNotYetValid {
            key_id: c.key_id,
            not_before_ms: c.not_before_ms,
            now_ms,
        });
    }
    if now_ms > c.not_after_ms {
        return Err(VerifyError::KeyExpired {
            key_id: c.key_id,
            not_after_ms: c.not_after_ms,
            now_ms,
        });
    }
    Ok((c.key_id, key))
}

/// Verifies a desired-state document for `device` (see the module docs for every check).
/// `last_sequence` is the sequence the device applied last (`None` before the first).
pub fn verify_desired(
    doc: &DesiredDocument,
    root: &VerifyingKey,
    device: &str,
    last_sequence: Option<u64>,
    now_ms: i64,
) -> Result<VerifiedState, VerifyError> {
    // Keys: a bad certificate is an error only if the document relies on it, so that one stale
    // certificate does not block a device (but its error is reported if it is the one used).
    let mut keys: BTreeMap<String, Result<VerifyingKey, VerifyError>> = BTreeMap::new();
    for cert in &doc.keys {
        match verify_key_cert(cert, root, now_ms) {
            Ok((id, key)) => {
                keys.insert(id, Ok(key));
            }
            Err(e) => {
                if let Ok(c) = cert.payload_unverified() {
                    keys.entry(c.key_id).or_insert(Err(e));
                } else {
                    return Err(e);
                }
            }
        }
    }
    let key_for = |what: &str, key_id: &str| -> Result<&VerifyingKey, VerifyError> {
        match keys.get(key_id) {
            Some(Ok(k)) => Ok(k),
            Some(Err(e)) => Err(e.clone()),
            None => Err(VerifyError::UnknownKey {
                what: what.to_owned(),
                key_id: key_id.to_owned(),
            }),
        }
    };
    let signer = key_for("desired state", &doc.document.key_id)?;
    let state: DesiredState = doc
        .document
        .verify(Context::Desired, signer, "desired state")?;
    if state.device != device {
        return Err(VerifyError::WrongDevice {
            what: "desired state".into(),
            expected: device.to_owned(),
            got: state.device,
        });
    }
    if now_ms > state.expires_ms {
        return Err(VerifyError::Expired {
            what: "desired state".into(),
            expires_ms: state.expires_ms,
            now_ms,
        });
    }
    if let Some(last) = last_sequence {
        if state.sequence < last {
            return Err(VerifyError::Rollback {
                last,
                got: state.sequence,
            });
        }
    }
    let mut functions = Vec::with_capacity(state.functions.len());
    let mut names = BTreeSet::new();
    for f in &state.functions {
        if !names.insert(f.name.clone()) {
            return Err(VerifyError::Inconsistent(format!(
                "function {} listed twice",
                f.name
            )));
        }
        let mut versions = Vec::with_capacity(f.versions.len());
        for signed in &f.versions {
            let what = format!("a manifest of {}", f.name);
            let key = key_for(&what, &signed.key_id)?;
            let m: Manifest = signed.verify(Context::Manifest, key, &what)?;
            if m.function != f.name {
                return Err(VerifyError::Inconsistent(format!(
                    "manifest of {} version {} is listed under function {}",
                    m.function, m.version, f.name
                )));
            }
            if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(VerifyError::Malformed(format!(
                    "manifest of {} version {}: bad sha256 {:?}",
                    m.function, m.version, m.sha256
                )));
            }
            versions.push(m);
        }
        for a in &f.aliases {
            for v in std::iter::once(a.version).chain(a.also_version) {
                if !versions.iter().any(|m| m.version == v) {
                    return Err(VerifyError::Inconsistent(format!(
                        "alias {}:{} names version {v}, which is not listed",
                        f.name, a.name
                    )));
                }
            }
        }
        functions.push(VerifiedFunction {
            name: f.name.clone(),
            enabled: f.enabled,
            deployment: f.deployment.clone(),
            versions,
            aliases: f.aliases.clone(),
        });
    }
    Ok(VerifiedState {
        device: state.device,
        sequence: state.sequence,
        issued_ms: state.issued_ms,
        expires_ms: state.expires_ms,
        key_id: doc.document.key_id.clone(),
        functions,
        mappings: state.mappings,
        flows: state.flows,
    })
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a downloaded module against its manifest: size, then sha256.
pub fn verify_module(manifest: &Manifest, module: &[u8]) -> Result<(), VerifyError> {
    if module.len() as u64 != manifest.size {
        return Err(VerifyError::SizeMismatch {
            function: manifest.function.clone(),
            version: manifest.version,
            expected: manifest.size,
            got: module.len() as u64,
        });
    }
    let got = sha256_hex(module);
    if !got.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(VerifyError::HashMismatch {
            function: manifest.function.clone(),
            version: manifest.version,
            expected: manifest.sha256.clone(),
            got,
        });
    }
    Ok(())
}

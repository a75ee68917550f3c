//! A signing key's certificate: the root key vouches for a signing key until `not_after_ms`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::verify::VerifyError;

/// Payload of a `Signed<KeyCert>` (context `key`, `key_id` = `root`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCert {
    /// [`key_id`] of `public_key_base64`.
    pub key_id: String,
    /// The ed25519 public key (32 bytes), base64.
    pub public_key_base64: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

/// A key's id: `k-` + the first 16 hex digits of the sha256 of its 32 public-key bytes.
pub fn key_id(public: &VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("k-{hex}")
}

/// Encodes a public key as in [`KeyCert::public_key_base64`] and `root.pub`.
pub fn encode_public(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Decodes a base64 ed25519 public key.
pub fn decode_public(text: &str) -> Result<VerifyingKey, VerifyError> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| VerifyError::Malformed(format!("public key is not base64: {e}")))?;
    let bytes = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        VerifyError::Malformed(format!("public key has {} bytes, not 32", bytes.len()))
    })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| VerifyError::Malformed("public key is not a valid ed25519 point".into()))
}

impl KeyCert {
    /// The certified public key (checks that `key_id` matches it).
    pub fn public_key(&self) -> Result<VerifyingKey, VerifyError> {
        let key = decode_public(&self.public_key_base64)?;
        if key_id(&key) != self.key_id {
            return Err(VerifyError::Malformed(format!(
                "key certificate: key id {} does not match its public key",
                self.key_id
            )));
        }
        Ok(key)
    }
}

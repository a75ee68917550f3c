//! The signed envelope.
//!
//! A signature covers exact bytes, never a re-serialisation: the payload travels as base64 of
//! the JSON bytes that were signed, and a verifier checks the signature over those bytes before
//! it parses them. The signed message is domain-separated, so a signature made for one kind of
//! payload can never be replayed as another:
//!
//! ```text
//! message = "edgefn-sig-v1" 0x00 CONTEXT 0x00 PAYLOAD
//! CONTEXT = "key" | "manifest" | "desired" | "invoke"
//! ```
//!
//! The signature is ed25519 (RFC 8032) over `message`, 64 bytes, base64 (standard, padded).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

use super::verify::VerifyError;

/// What a signature is for (part of the signed message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// A signing key's certificate, signed by the root key.
    Key,
    /// A published version's manifest.
    Manifest,
    /// A device's desired-state document.
    Desired,
    /// A remote invoke request (`protocol::invoke`).
    Invoke,
}

impl Context {
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Key => "key",
            Context::Manifest => "manifest",
            Context::Desired => "desired",
            Context::Invoke => "invoke",
        }
    }
}

/// The bytes an ed25519 signature covers.
pub fn message(context: Context, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(payload.len() + 24);
    m.extend_from_slice(b"edgefn-sig-v1\0");
    m.extend_from_slice(context.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

/// A payload of type `T` (its JSON bytes, base64) with one signature.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed<T> {
    pub payload_base64: String,
    /// `root` for key certificates; a signing key's id otherwise.
    pub key_id: String,
    pub signature_base64: String,
    #[serde(skip)]
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Signed {
            payload_base64: self.payload_base64.clone(),
            key_id: self.key_id.clone(),
            signature_base64: self.signature_base64.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("key_id", &self.key_id)
            .field("payload_base64", &self.payload_base64)
            .finish_non_exhaustive()
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.payload_base64 == other.payload_base64
            && self.key_id == other.key_id
            && self.signature_base64 == other.signature_base64
    }
}

impl<T: Serialize + DeserializeOwned> Signed<T> {
    /// Serialises `value` to JSON and signs those bytes.
    pub fn sign(value: &T, context: Context, key_id: &str, key: &SigningKey) -> Signed<T> {
        let payload = serde_json::to_vec(value).expect("protocol types serialise");
        let signature = key.sign(&message(context, &payload));
        Signed {
            payload_base64: B64.encode(&payload),
            key_id: key_id.to_owned(),
            signature_base64: B64.encode(signature.to_bytes()),
            _t: PhantomData,
        }
    }

    /// Checks the signature with `key`, then parses the payload. `what` names the document in
    /// errors ("manifest of f version 3").
    pub fn verify(
        &self,
        context: Context,
        key: &VerifyingKey,
        what: &str,
    ) -> Result<T, VerifyError> {
        let payload = B64
            .decode(&self.payload_base64)
            .map_err(|e| VerifyError::Malformed(format!("{what}: payload is not base64: {e}")))?;
        let sig = B64
            .decode(&self.signature_base64)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| VerifyError::BadSignature {
                what: what.to_owned(),
                key_id: self.key_id.clone(),
            })?;
        key.verify(&message(context, &payload), &Signature::from_bytes(&sig))
            .map_err(|_| VerifyError::BadSignature {
                what: what.to_owned(),
                key_id: self.key_id.clone(),
            })?;
        serde_json::from_slice(&payload).map_err(|e| VerifyError::Malformed(format!("{what}: {e}")))
    }

    /// Parses the payload WITHOUT checking the signature (for display and for the server's own
    /// records; never for a trust decision).
    pub fn payload_unverified(&self) -> Result<T, VerifyError> {
        let payload = B64
            .decode(&self.payload_base64)
            .map_err(|e| VerifyError::Malformed(format!("payload is not base64: {e}")))?;
        serde_json::from_slice(&payload).map_err(|e| VerifyError::Malformed(e.to_string()))
    }
}

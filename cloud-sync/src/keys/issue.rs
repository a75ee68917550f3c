//! Issuing signing keys: the root key certifies a fresh key for a period.

use ed25519_dalek::SigningKey;

use crate::protocol::keycert::{encode_public, key_id};
use crate::protocol::{Context, KeyCert, Signed};

/// A new signing key and its certificate, valid from `now_ms` for `validity_ms`.
pub fn issue_signing_key(
    root: &SigningKey,
    now_ms: i64,
    validity_ms: i64,
) -> (SigningKey, Signed<KeyCert>) {
    let key = super::secret::generate();
    let cert = certify(root, &key, now_ms, now_ms + validity_ms);
    (key, cert)
}

/// A certificate for `key`, signed by `root`.
pub fn certify(
    root: &SigningKey,
    key: &SigningKey,
    not_before_ms: i64,
    not_after_ms: i64,
) -> Signed<KeyCert> {
    let public = key.verifying_key();
    let cert = KeyCert {
        key_id: key_id(&public),
        public_key_base64: encode_public(&public),
        not_before_ms,
        not_after_ms,
    };
    Signed::sign(&cert, Context::Key, "root", root)
}

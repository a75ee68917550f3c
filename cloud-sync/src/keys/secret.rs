//! ed25519 secret keys: generated from the OS's randomness, stored as base64 of the 32-byte
//! seed on one line (RFC 8032 secret key), in files only their owner can read.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::SigningKey;

use crate::protocol::VerifyError;

/// A fresh key from the OS's random number generator.
pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random number generator works");
    SigningKey::from_bytes(&seed)
}

/// Base64 of the 32-byte seed.
pub fn encode_secret(key: &SigningKey) -> String {
    B64.encode(key.to_bytes())
}

pub fn decode_secret(text: &str) -> Result<SigningKey, VerifyError> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| VerifyError::Malformed(format!("secret key is not base64: {e}")))?;
    let seed = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        VerifyError::Malformed(format!("secret key has {} bytes, not 32", bytes.len()))
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `text` to `path` readable by its owner only (0600 on Unix), failing if it exists.
pub fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Reads a key file written by [`write_secret_file`].
pub fn read_secret_file(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode_secret(&text).map_err(|e| format!("{}: {e}", path.display()))
}

//! Bearer tokens (operator, enrollment, device credentials). The server stores only their
//! sha256, so a leaked database does not hand out working tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// 32 random bytes, base64url without padding (43 characters), after `prefix`.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Lowercase hex sha256 of a token.
pub fn hash_token(token: &str) -> String {
    crate::protocol::verify::sha256_hex(token.as_bytes())
}

//! Keys: the root key pair, signing keys certified by the root, random tokens.
//!
//! - [`secret`]: generating ed25519 keys, their text encoding, key files (mode 0600).
//! - [`issue`]: a new signing key certified by the root key until an expiry.
//! - [`token`]: random bearer tokens and the hashes the server stores instead of them.

pub mod issue;
pub mod secret;
pub mod token;

pub use issue::issue_signing_key;
pub use secret::{decode_secret, encode_secret, generate, read_secret_file, write_secret_file};
pub use token::{hash_token, random_token};

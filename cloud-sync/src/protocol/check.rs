//! Checking a module while it downloads: [`ModuleCheck`] hashes chunks as they arrive, refuses
//! the first byte past the manifest's size (endless-data attack) and compares the hash at the
//! end. To resume an interrupted download, feed it the bytes already on disk first, then ask
//! for the rest with `Range: bytes=<checked()>-`.

use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::verify::VerifyError;

/// An incremental [`super::verify_module`].
pub struct ModuleCheck {
    function: String,
    version: u32,
    expected_sha256: String,
    expected_size: u64,
    seen: u64,
    hasher: Sha256,
}

impl ModuleCheck {
    pub fn new(manifest: &Manifest) -> ModuleCheck {
        ModuleCheck {
            function: manifest.function.clone(),
            version: manifest.version,
            expected_sha256: manifest.sha256.to_ascii_lowercase(),
            expected_size: manifest.size,
            seen: 0,
            hasher: Sha256::new(),
        }
    }

    /// Bytes checked so far (where a resumed download continues).
    pub fn checked(&self) -> u64 {
        self.seen
    }

    /// Adds the next bytes; fails as soon as they run past the manifest's size.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), VerifyError> {
        let seen = self.seen + chunk.len() as u64;
        if seen > self.expected_size {
            return Err(VerifyError::SizeMismatch {
                function: self.function.clone(),
                version: self.version,
                expected: self.expected_size,
                got: seen,
            });
        }
        self.hasher.update(chunk);
        self.seen = seen;
        Ok(())
    }

    /// Checks the size and the sha256 of everything fed.
    pub fn finish(self) -> Result<(), VerifyError> {
        if self.seen != self.expected_size {
            return Err(VerifyError::SizeMismatch {
                function: self.function,
                version: self.version,
                expected: self.expected_size,
                got: self.seen,
            });
        }
        let got: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != self.expected_sha256 {
            return Err(VerifyError::HashMismatch {
                function: self.function,
                version: self.version,
                expected: self.expected_sha256,
                got,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::verify::sha256_hex;

    fn manifest(module: &[u8]) -> Manifest {
        Manifest {
            function: "f".into(),
            version: 1,
            sha256: sha256_hex(module),
            size: module.len() as u64,
            spec: String::new(),
            description: String::new(),
            published_ms: 0,
        }
    }

    #[test]
    fn chunks_resume_and_refusals() {
        let module = b"\0asm\x01\0\0\0 some bytes".to_vec();
        let m = manifest(&module);
        let mut c = ModuleCheck::new(&m);
        c.update(&module[..5]).unwrap();
        assert_eq!(c.checked(), 5);
        c.update(&module[5..]).unwrap();
        c.finish().unwrap();
        // one byte too many is refused at once
        let mut c = ModuleCheck::new(&m);
        c.update(&module).unwrap();
        assert!(matches!(
            c.update(b"x"),
            Err(VerifyError::SizeMismatch { .. })
        ));
        // short, or same size with other bytes
        let mut c = ModuleCheck::new(&m);
        c.update(&module[..3]).unwrap();
        assert!(matches!(c.finish(), Err(VerifyError::SizeMismatch { .. })));
        let mut other = module.clone();
        other[9] ^= 1;
        let mut c = ModuleCheck::new(&m);
        c.update(&other).unwrap();
        assert!(matches!(c.finish(), Err(VerifyError::HashMismatch { .. })));
    }
}

//! Module bytes, stored once by content address: `DIR/<sha256>` (written to a temporary file,
//! synced, then renamed, so a reader never sees a partial file and two writers of the same
//! bytes agree). Replicas share the directory. The store's `artifacts` table records sizes.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::protocol::verify::sha256_hex;
use crate::store::StoreError;

#[derive(Clone, Debug)]
pub struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    pub fn open(dir: &Path) -> Result<Artifacts, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?;
        Ok(Artifacts {
            dir: dir.to_owned(),
        })
    }

    /// The file holding `sha256` (which must be 64 hex digits).
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        (sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| self.dir.join(sha256))
    }

    /// Stores `bytes` (once) and returns their sha256.
    pub fn put(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let sha = sha256_hex(bytes);
        let path = self.dir.join(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let io = |e: std::io::Error| StoreError::Db(format!("artifact {sha}: {e}"));
        let tmp = self
            .dir
            .join(format!(".{sha}.{}", crate::keys::random_token("")));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(sha)
    }

    /// The bytes of `sha256`.
    pub fn get(&self, sha256: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(sha256)?).ok()
    }
}

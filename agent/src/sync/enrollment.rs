//! The device's enrollment: `<data_dir>/cloud.json`, mode 0600 (it holds the credential).

use std::io::Write;
use std::path::{Path, PathBuf};

use edgefn_cloud::protocol::{EnrollResponse, KeyCert, Signed};
use serde::{Deserialize, Serialize};

/// File name of the enrollment inside the data directory.
pub const ENROLLMENT_FILE: &str = "cloud.json";

/// What `edgefn-agent enroll` stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The cloud's base URL.
    pub cloud: String,
    /// PEM CA certificate(s) to trust for an https:// cloud (`None`: the system's).
    pub ca_file: Option<PathBuf>,
    pub device_id: String,
    pub device_name: String,
    /// The device's bearer credential (secret).
    pub credential: String,
    /// The root public key (base64): the trust anchor, never taken from anywhere else later.
    pub root_public_key: String,
    /// The signing keys' certificates at enrollment.
    pub keys: Vec<Signed<KeyCert>>,
    pub groups: Vec<String>,
    pub enrolled_ms: i64,
}

impl Enrollment {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(ENROLLMENT_FILE)
    }

    pub fn from_response(cloud: &str, ca_file: Option<PathBuf>, r: EnrollResponse) -> Enrollment {
        Enrollment {
            cloud: cloud.trim().trim_end_matches('/').to_owned(),
            ca_file,
            device_id: r.device_id,
            device_name: r.device_name,
            credential: r.credential,
            root_public_key: r.root_public_key,
            keys: r.keys,
            groups: r.groups,
            enrolled_ms: edgefn_cloud::now_ms(),
        }
    }

    /// The enrollment in `data_dir`, `None` if the device is not enrolled.
    pub fn load(data_dir: &Path) -> Result<Option<Enrollment>, String> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("bad enrollment file {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the enrollment atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, data_dir: &Path) -> Result<PathBuf, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{ENROLLMENT_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("serialises"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Ok(d) = std::fs::File::open(data_dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

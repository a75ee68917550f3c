//! Where the agent keeps its files. The daemon (`run`) and the CLI verbs both resolve the data
//! directory here, so a CLI run without `--data-dir` finds the token of an agent started without it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "EDGEFN_DATA_DIR";
/// The system-wide data directory of a packaged agent.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/edgefn";
/// The fallback for a developer's first run: relative to the working directory.
pub const LOCAL_DATA_DIR: &str = "./edgefn-data";
/// File name of the admin API bearer token inside the data directory (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The data directory when none is given: `$EDGEFN_DATA_DIR` if set and non-empty, else
/// `/var/lib/edgefn` if it exists and is readable, else `./edgefn-data`.
pub fn default_data_dir() -> PathBuf {
    choose_data_dir(std::env::var_os(DATA_DIR_ENV), Path::new(SYSTEM_DATA_DIR))
}

/// The admin token file of a data directory.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// [`default_data_dir`] with its inputs made explicit (for tests).
fn choose_data_dir(env: Option<OsString>, system: &Path) -> PathBuf {
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    // "Readable" means we can list it: an existing directory we may not enter is not ours.
    if std::fs::read_dir(system).is_ok() {
        return system.to_path_buf();
    }
    PathBuf::from(LOCAL_DATA_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edgefn-paths-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn env_wins_when_set() {
        let got = choose_data_dir(Some("/srv/edgefn".into()), Path::new("/nonexistent"));
        assert_eq!(got, PathBuf::from("/srv/edgefn"));
    }

    #[test]
    fn empty_env_is_ignored() {
        let got = choose_data_dir(Some(OsString::new()), Path::new("/nonexistent/edgefn"));
        assert_eq!(got, PathBuf::from(LOCAL_DATA_DIR));
    }

    #[test]
    fn readable_system_dir_is_used() {
        let dir = scratch("system");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(choose_data_dir(None, &dir), dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_system_dir_falls_back_to_local() {
        let dir = scratch("missing");
        assert_eq!(choose_data_dir(None, &dir), PathBuf::from(LOCAL_DATA_DIR));
    }

    #[test]
    fn token_path_is_inside_the_data_dir() {
        assert_eq!(
            admin_token_path(Path::new("/var/lib/edgefn")),
            PathBuf::from("/var/lib/edgefn/admin.token")
        );
    }
}

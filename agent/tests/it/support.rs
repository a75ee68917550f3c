//! Shared test helpers: build the example functions once, compile WAT, run the binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds every example function (Rust and C) once per test process and returns the directory
/// holding the `.wasm` files.
pub fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let examples = root.join("examples");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&examples)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--quiet",
            ])
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("run cargo for the examples");
        assert!(status.success(), "building the examples failed");
        let out = examples.join("target/wasm32-unknown-unknown/release");
        let status = Command::new("sh")
            .arg(examples.join("c/build.sh"))
            .arg(out.join("hello_c.wasm"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run examples/c/build.sh");
        assert!(status.success(), "building the C example failed");
        out
    })
}

/// The bytes of example `name` (file stem, e.g. `echo`, `threshold_alert`).
pub fn example(name: &str) -> Vec<u8> {
    let path = examples_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn example_path(name: &str) -> PathBuf {
    examples_dir().join(format!("{name}.wasm"))
}

/// Compiles WAT text to Wasm bytes.
pub fn wat(src: &str) -> Vec<u8> {
    wat::parse_str(src).expect("valid WAT")
}

/// The agent binary under test.
pub fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgefn-agent"))
}

/// A fresh temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("edgefn-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

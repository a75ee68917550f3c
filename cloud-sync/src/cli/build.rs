//! `edgefn build [PATH]`: builds a function project to a wasm32 release module (small stack) and
//! checks it against guest ABI v1 with the agent's own check (`edgefn_sdk::check`), so a module
//! that passes here loads on every agent. A Rust project (a `Cargo.toml`) builds with cargo,
//! a C project (`*.c`) with clang and wasm-ld; a `.wasm` file is only checked.

use super::CliError;
use crate::protocol::verify::sha256_hex;
use edgefn_sdk::check::{self, Shape};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A built, checked module.
#[derive(Debug)]
pub struct Built {
    /// Where the module is.
    pub path: PathBuf,
    /// Its bytes (what `function create|update` uploads).
    pub wasm: Vec<u8>,
    /// What the ABI check learned.
    pub shape: Shape,
}

impl Built {
    /// The module's sha256 (its content address in the registry).
    pub fn sha256(&self) -> String {
        sha256_hex(&self.wasm)
    }

    /// The facts `edgefn build --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "module": self.path.display().to_string(),
            "size": self.wasm.len(),
            "sha256": self.sha256(),
            "abi": edgefn_sdk::abi::ABI_VERSION,
            "imports": self.shape.imports,
            "has_init": self.shape.has_init,
            "initial_memory": self.shape.initial_memory,
        })
    }
}

/// The table `edgefn build` prints for people.
pub fn describe(b: &Built) -> String {
    let memory = b.shape.initial_memory;
    super::output::fields(&[
        ("module", b.path.display().to_string()),
        ("size", format!("{} bytes", b.wasm.len())),
        ("sha256", b.sha256()),
        ("abi", format!("v{} ok", edgefn_sdk::abi::ABI_VERSION)),
        ("imports", format!("{} host functions", b.shape.imports)),
        ("init", if b.shape.has_init { "yes" } else { "no" }.into()),
        ("memory", format!("{} KiB initial", memory / 1024)),
    ])
}

/// Rust's per-module stack for functions (the examples' setting): the default 1 MiB would be
/// 16 pages of memory per instance.
const STACK_FLAGS: &str =
    r#"target.wasm32-unknown-unknown.rustflags=["-C","link-arg=-zstack-size=32768"]"#;

/// Builds (if a project) and checks `path`. Build tools' progress goes to stderr.
pub fn build(path: &Path) -> Result<Built, CliError> {
    let module = if path.is_dir() {
        if path.join("Cargo.toml").is_file() {
            build_rust(path)?
        } else {
            build_c(path)?
        }
    } else if path.extension().is_some_and(|e| e == "wasm") {
        path.to_path_buf()
    } else {
        return Err(CliError::Usage(format!(
            "edgefn build: {} is neither a project directory (Cargo.toml or *.c) nor a .wasm file",
            path.display()
        )));
    };
    let wasm = std::fs::read(&module)
        .map_err(|e| CliError::Usage(format!("{}: {e}", module.display())))?;
    // An absolute path, so what is printed works from any directory.
    let module = module.canonicalize().unwrap_or(module);
    let shape = check_module(&wasm).map_err(|e| {
        CliError::Failed(format!("{}: not an ABI v1 module: {e}", module.display()))
    })?;
    Ok(Built {
        path: module,
        wasm,
        shape,
    })
}

/// Parses, validates and checks `wasm` as the agent does before it accepts a module.
pub fn check_module(wasm: &[u8]) -> Result<Shape, String> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(format!(
            "not a WebAssembly binary ({} bytes, no `\\0asm` magic)",
            wasm.len()
        ));
    }
    let module = wasmi::Module::new(&wasmi::Engine::default(), wasm)
        .map_err(|e| format!("invalid WebAssembly module: {e}"))?;
    check::shape(&module).map_err(|e| e.to_string())
}

fn build_rust(dir: &Path) -> Result<PathBuf, CliError> {
    need_wasm_target()?;
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Cargo reads `.cargo/config.toml` from its working directory, so run it in the project.
    cmd.current_dir(dir).args([
        "build",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
        "--message-format=json-render-diagnostics",
    ]);
    if !dir.join(".cargo/config.toml").is_file() {
        cmd.args(["--config", STACK_FLAGS]);
    }
    eprintln!("building {} (cargo, wasm32 release)", dir.display());
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| CliError::Usage(format!("edgefn build: cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Failed(format!(
            "edgefn build: cargo build failed in {} ({})",
            dir.display(),
            out.status
        )));
    }
    // The cdylib artifacts cargo reports (one per line of JSON messages).
    let mut wasm = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if msg["reason"] == "compiler-artifact" && cdylib {
            for f in msg["filenames"].as_array().into_iter().flatten() {
                if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                    wasm.push(PathBuf::from(f));
                }
            }
        }
    }
    match wasm.len() {
        1 => Ok(wasm.remove(0)),
        0 => Err(CliError::Failed(format!(
            "edgefn build: {} built no wasm module: its [lib] needs crate-type = [\"cdylib\"]",
            dir.display()
        ))),
        _ => Err(CliError::Usage(format!(
            "edgefn build: {} built {} modules ({}); build one function per project",
            dir.display(),
            wasm.len(),
            wasm.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Names the missing target instead of letting cargo fail on `core`.
fn need_wasm_target() -> Result<(), CliError> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(()); // no rustup: let cargo speak for itself
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    if out.status.success()
        && !installed
            .lines()
            .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Err(CliError::Usage(
            "edgefn build: the Rust target wasm32-unknown-unknown is not installed; run `rustup target add wasm32-unknown-unknown`".into(),
        ));
    }
    Ok(())
}

fn build_c(dir: &Path) -> Result<PathBuf, CliError> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    // One source: the module is named after it; several: after the project's directory.
    let name = match sources.as_slice() {
        [] => {
            return Err(CliError::Usage(format!(
                "edgefn build: {} has no Cargo.toml and no .c file",
                dir.display()
            )))
        }
        [one] => one.file_stem().map(|s| s.to_string_lossy().into_owned()),
        _ => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())),
    }
    .unwrap_or_else(|| "function".into());
    let out = dir.join("target").join(format!("{name}.wasm"));
    std::fs::create_dir_all(dir.join("target"))
        .map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "clang".into());
    eprintln!("building {} ({cc}, wasm32)", out.display());
    // As examples/c/build.sh: no libc, the stack first (an overflow traps), 8 KiB of it.
    let status = Command::new(&cc)
        .args([
            "--target=wasm32",
            "-nostdlib",
            "-ffreestanding",
            "-O2",
            "-mbulk-memory",
            "-Wall",
            "-Wextra",
            "-I",
        ])
        .arg(dir)
        .args([
            "-Wl,--no-entry",
            "-Wl,--stack-first",
            "-Wl,-z,stack-size=8192",
            "-Wl,--strip-all",
            "-o",
        ])
        .arg(&out)
        .args(&sources)
        .status()
        .map_err(|e| {
            CliError::Usage(format!(
                "edgefn build: cannot run {cc} ({e}); C functions need clang and lld (wasm-ld)"
            ))
        })?;
    if !status.success() {
        return Err(CliError::Failed(format!(
            "edgefn build: {cc} failed ({status}) building {}",
            out.display()
        )));
    }
    Ok(out)
}

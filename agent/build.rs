//! Linking the Raspberry Pi agents (issue 8: <= 6 MB stripped on aarch64).
//!
//! For `aarch64-unknown-linux-gnu` and `armv7-unknown-linux-gnueabihf`, the agent's binary is
//! linked by the LLD that ships with the Rust toolchain (`rust-lld`, reached through the cross gcc
//! with `-B <sysroot>/lib/rustlib/<host>/bin/gcc-ld -fuse-ld=lld`), which Debian's GNU ld cannot
//! replace here:
//!
//! - `-z pack-relative-relocs` stores the position-independent binary's relative relocations as
//!   a compact bitmap (DT_RELR) instead of 24 bytes each (GNU ld 2.40 has it for x86 only). The
//!   binary then needs glibc 2.36 or newer (Raspberry Pi OS bookworm, Debian 12, Ubuntu 24.04), and
//!   says so: it carries the `GLIBC_ABI_DT_RELR` version, which packaging/deb/build-deb.sh turns
//!   into `Depends: libc6 (>= 2.36)` and which an older glibc refuses with a clear message.
//!
//! Identical code folding is not used: `--icf=all` saves another ~128 KiB but may fold C functions
//! that SQLite compares by address, and `--icf=safe` folds nothing here (rustc emits no
//! address-significance tables), both measured in docs/benchmarks.md.
//!
//! Only the agent's own link changes (dependencies are not rebuilt). With `EDGEFN_LINK_LLD=0`, or
//! without a `rust-lld` in the toolchain (an unusual toolchain; the build warns), the target's
//! default linker is used as before. Sizes in docs/benchmarks.md ("Footprint").

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=EDGEFN_LINK_LLD");
    let target = env::var("TARGET").unwrap_or_default();
    let pi = matches!(
        target.as_str(),
        "aarch64-unknown-linux-gnu" | "armv7-unknown-linux-gnueabihf"
    );
    if !pi || env::var("EDGEFN_LINK_LLD").is_ok_and(|v| v == "0") {
        return;
    }
    let Some(gcc_ld) = gcc_ld_dir() else {
        println!(
            "cargo:warning=no rust-lld in the Rust toolchain: linking {target} with its default \
             linker (a larger binary)"
        );
        return;
    };
    for arg in [
        format!("-B{}", gcc_ld.display()),
        "-fuse-ld=lld".to_string(),
        "-Wl,-z,pack-relative-relocs".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}

/// `<sysroot>/lib/rustlib/<host>/bin/gcc-ld`, where the toolchain keeps an `ld.lld` that runs
/// its `rust-lld`, if it has one.
fn gcc_ld_dir() -> Option<PathBuf> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let host = env::var("HOST").ok()?;
    let out = Command::new(rustc)
        .arg("--print")
        .arg("sysroot")
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = PathBuf::from(sysroot.trim()).join(format!("lib/rustlib/{host}/bin/gcc-ld"));
    dir.join("ld.lld").is_file().then_some(dir)
}

//! `edgefn new NAME [--lang rust|c]`: a function project from a template, ready for
//! `edgefn build`. A project carries its own copy of the SDK (Rust: `sdk/`, C: `edgefn.h`), so
//! it builds anywhere, offline from this repository, against the ABI this CLI was built with.

use super::CliError;
use crate::protocol::names::check_name;
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// The languages `edgefn new` has a template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A `no_std` cdylib on the Rust SDK (needs the `wasm32-unknown-unknown` target).
    Rust,
    /// Freestanding C on `edgefn.h`, built with clang and wasm-ld (no libc).
    C,
}

/// The Rust SDK's sources, copied into a Rust project's `sdk/`. Its manifest is written out
/// below (the workspace's inherits fields a standalone crate cannot).
const SDK_FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../firmware-sdk/README.md")),
    (
        "src/lib.rs",
        include_str!("../../../firmware-sdk/src/lib.rs"),
    ),
    (
        "src/abi.rs",
        include_str!("../../../firmware-sdk/src/abi.rs"),
    ),
    (
        "src/handler.rs",
        include_str!("../../../firmware-sdk/src/handler.rs"),
    ),
    (
        "src/host.rs",
        include_str!("../../../firmware-sdk/src/host.rs"),
    ),
    (
        "src/log.rs",
        include_str!("../../../firmware-sdk/src/log.rs"),
    ),
    (
        "src/sys.rs",
        include_str!("../../../firmware-sdk/src/sys.rs"),
    ),
    (
        "src/time.rs",
        include_str!("../../../firmware-sdk/src/time.rs"),
    ),
];

/// The guest side of the SDK only: the host-side `check` module (and its wasmi) stays out.
const SDK_MANIFEST: &str = r#"# A copy of the edgefn SDK (guest ABI v1), written by `edgefn new`.
[package]
name = "edgefn-sdk"
version = "0.1.0"
edition = "2021"
license = "Apache-2.0"
publish = false

[features]
default = ["panic-handler"]
panic-handler = []
alloc = ["postcard/alloc"]

[dependencies]
postcard = { version = "1.1", default-features = false }
serde = { version = "1.0", default-features = false, features = ["derive"] }
heapless = "0.9"
embassy-time = { version = "0.5", default-features = false }
embassy-time-driver = { version = "0.2", default-features = false }
"#;

const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../templates/rust/cargo-config.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    (
        "function.toml",
        include_str!("../../templates/rust/function.toml"),
    ),
    (".gitignore", include_str!("../../templates/rust/gitignore")),
];

/// The C template is the C example (`examples/c/hello.c`, built and run by the agent's tests)
/// under this header, its messages prefixed with the function's name (see [`c_source`]).
const C_HEADER: &str = include_str!("../../templates/c/header.c");
const C_EXAMPLE: &str = include_str!("../../../examples/c/hello.c");

const C: &[(&str, &str)] = &[
    ("edgefn.h", include_str!("../../../firmware-sdk/c/edgefn.h")),
    (
        "function.toml",
        include_str!("../../templates/c/function.toml"),
    ),
    (".gitignore", include_str!("../../templates/c/gitignore")),
];

/// Writes a new project for function `name` into `dir` (default `./NAME`), which must not exist
/// or be empty. Returns the project's directory and the files written, relative to it.
pub fn create(
    name: &str,
    lang: Lang,
    dir: Option<&Path>,
) -> Result<(PathBuf, Vec<String>), CliError> {
    check_name(name).map_err(|e| CliError::Usage(format!("edgefn new: {e}")))?;
    if lang == Lang::Rust && name.as_bytes()[0].is_ascii_digit() {
        return Err(CliError::Usage(format!(
            "edgefn new: {name:?} cannot name a Rust package (Cargo's names start with a letter)"
        )));
    }
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if let Ok(mut entries) = std::fs::read_dir(&dir) {
        if entries.next().is_some() {
            return Err(CliError::Usage(format!(
                "edgefn new: {} exists and is not empty",
                dir.display()
            )));
        }
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
    };
    let mut files: Vec<(String, String)> = Vec::new();
    match lang {
        Lang::Rust => {
            files.extend(RUST.iter().map(|(p, t)| (p.to_string(), fill(t))));
            files.push(("sdk/Cargo.toml".into(), SDK_MANIFEST.into()));
            files.extend(
                SDK_FILES
                    .iter()
                    .map(|(p, t)| (format!("sdk/{p}"), guest_only(p, t))),
            );
        }
        Lang::C => {
            files.push((format!("{name}.c"), fill(&c_source())));
            files.extend(C.iter().map(|(p, t)| (fill(p), fill(t))));
        }
    }
    for (path, text) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&full, text).map_err(|e| io(&full, e))?;
    }
    Ok((dir, files.into_iter().map(|(p, _)| p).collect()))
}

/// The C example with the template's header instead of its own, and `{{name}}` where it
/// names itself in its messages (`"hello: ..."`).
fn c_source() -> String {
    let body = C_EXAMPLE
        .split_once("*/\n")
        .map_or(C_EXAMPLE, |(_, body)| body);
    format!("{C_HEADER}{}", body.replace("\"hello: ", "\"{{name}}: "))
}

/// The SDK's `lib.rs` without the host-side `check` module, which the copy leaves out.
fn guest_only(path: &str, text: &str) -> String {
    if path != "src/lib.rs" {
        return text.to_string();
    }
    text.replace("#[cfg(feature = \"check\")]\npub mod check;\n", "")
}

fn io(path: &Path, e: std::io::Error) -> CliError {
    CliError::Usage(format!("edgefn new: {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy's dependencies are the SDK's own: a drift would build functions against other
    /// versions than the agent's tests use.
    #[test]
    fn the_sdk_copy_has_the_sdk_s_dependencies() {
        let sdk: toml::Table = include_str!("../../../firmware-sdk/Cargo.toml")
            .parse()
            .unwrap();
        let ws: toml::Table = include_str!("../../../Cargo.toml").parse().unwrap();
        let copy: toml::Table = SDK_MANIFEST.parse().unwrap();
        let copy_deps = copy["dependencies"].as_table().unwrap();
        for (name, dep) in sdk["dependencies"].as_table().unwrap() {
            let optional = dep.get("optional").and_then(|v| v.as_bool()) == Some(true);
            if optional {
                assert!(!copy_deps.contains_key(name), "{name} is host-side only");
                continue;
            }
            let wanted = if dep.get("workspace").is_some() {
                &ws["workspace"]["dependencies"][name]
            } else {
                dep
            };
            let version = |v: &toml::Value| match v {
                toml::Value::String(s) => s.clone(),
                t => t["version"].as_str().unwrap().to_string(),
            };
            assert_eq!(version(&copy_deps[name]), version(wanted), "{name}");
        }
        assert!(!guest_only("src/lib.rs", SDK_FILES[1].1).contains("check"));
    }

    #[test]
    fn refuses_a_bad_name_and_a_non_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let e = create("Bad Name", Lang::Rust, Some(&tmp.path().join("x"))).unwrap_err();
        assert!(e.to_string().contains("Bad Name"), "{e}");
        std::fs::write(tmp.path().join("taken"), "x").unwrap();
        let e = create("ok", Lang::C, Some(tmp.path())).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        let (dir, files) = create("ok", Lang::C, Some(&tmp.path().join("ok"))).unwrap();
        assert!(files.contains(&"ok.c".to_string()), "{files:?}");
        let c = std::fs::read_to_string(dir.join("ok.c")).unwrap();
        assert!(
            c.contains("\"ok: malformed event\"") && !c.contains("{{"),
            "{c}"
        );
    }
}

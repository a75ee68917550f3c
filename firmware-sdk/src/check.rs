//! Host side: checks that a parsed WebAssembly module has ABI v1's shape (imports, exports and
//! their signatures). The agent runs it before it accepts a module, and `edgefn build` runs it
//! on what it built, so a function that passes the one passes the other: this is the only copy.
//!
//! Feature `check` (pulls in wasmi, which parses and validates the module).

use crate::abi::{self, Signature, ValType};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;
use wasmi::{ExternType, FuncType, Module};

/// Why a module does not have ABI v1's shape. Each variant names what is wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// An import other than ABI v1's host functions.
    #[error("unknown import `{module}.{name}`: ABI v1 modules may import only these functions from module `edgefn`: {allowed}")]
    UnknownImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// The importable names.
        allowed: String,
    },
    /// A known import with the wrong type or signature.
    #[error("import `edgefn.{name}` has signature {found}, ABI v1 expects {expected}")]
    ImportSignature {
        /// Import name.
        name: String,
        /// What the module declares.
        found: String,
        /// What ABI v1 defines.
        expected: String,
    },
    /// A required export is absent.
    #[error("missing export `{0}`: ABI v1 modules must export `memory`, `edgefn_alloc` and `edgefn_handle`")]
    MissingExport(&'static str),
    /// An ABI export with the wrong kind or signature.
    #[error("export `{name}` has signature {found}, ABI v1 expects {expected}")]
    ExportSignature {
        /// Export name.
        name: &'static str,
        /// What the module declares.
        found: String,
        /// What ABI v1 defines.
        expected: String,
    },
}

/// What the check learned about a module that has ABI v1's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Whether it exports the optional `edgefn_init`.
    pub has_init: bool,
    /// Bytes of linear memory each instance starts with (the memory's minimum).
    pub initial_memory: u64,
    /// How many of ABI v1's host functions it imports.
    pub imports: usize,
}

/// Checks `module`'s imports and exports against ABI v1.
pub fn shape(module: &Module) -> Result<Shape, ShapeError> {
    let mut imports = 0;
    for import in module.imports() {
        let (m, n) = (import.module(), import.name());
        let sig = (m == abi::IMPORT_MODULE).then(|| abi::import(n)).flatten();
        let Some(sig) = sig else {
            return Err(ShapeError::UnknownImport {
                module: m.to_string(),
                name: n.to_string(),
                allowed: abi::IMPORTS
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        match import.ty() {
            ExternType::Func(f) if matches(f, sig) => imports += 1,
            other => {
                return Err(ShapeError::ImportSignature {
                    name: n.to_string(),
                    found: describe(other),
                    expected: render(sig),
                })
            }
        }
    }
    let initial_memory = match module.get_export(abi::EXPORT_MEMORY) {
        Some(ExternType::Memory(m)) => m.minimum() * 65536,
        Some(other) => {
            return Err(ShapeError::ExportSignature {
                name: abi::EXPORT_MEMORY,
                found: describe(&other),
                expected: "a memory".into(),
            })
        }
        None => return Err(ShapeError::MissingExport(abi::EXPORT_MEMORY)),
    };
    let mut has_init = false;
    for (sig, required) in abi::EXPORTS {
        match module.get_export(sig.name) {
            Some(ExternType::Func(f)) if matches(&f, sig) => {
                has_init |= sig.name == abi::EXPORT_INIT
            }
            Some(other) => {
                return Err(ShapeError::ExportSignature {
                    name: sig.name,
                    found: describe(&other),
                    expected: render(sig),
                })
            }
            None if *required => return Err(ShapeError::MissingExport(sig.name)),
            None => {}
        }
    }
    Ok(Shape {
        has_init,
        initial_memory,
        imports,
    })
}

fn val(t: ValType) -> wasmi::ValType {
    match t {
        ValType::I32 => wasmi::ValType::I32,
        ValType::I64 => wasmi::ValType::I64,
    }
}

fn matches(f: &FuncType, sig: &Signature) -> bool {
    f.params()
        .iter()
        .copied()
        .eq(sig.params.iter().map(|t| val(*t)))
        && f.results()
            .iter()
            .copied()
            .eq(sig.results.iter().map(|t| val(*t)))
}

fn render(sig: &Signature) -> String {
    let name = |t: &ValType| match t {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
    };
    let mut s = String::from("(");
    s.push_str(&sig.params.iter().map(name).collect::<Vec<_>>().join(", "));
    s.push_str(") -> (");
    s.push_str(&sig.results.iter().map(name).collect::<Vec<_>>().join(", "));
    s.push(')');
    s
}

fn describe(t: &ExternType) -> String {
    let list = |types: &[wasmi::ValType]| {
        let mut s = String::new();
        for (i, t) in types.iter().enumerate() {
            let _ = write!(
                s,
                "{}{}",
                if i > 0 { ", " } else { "" },
                format!("{t:?}").to_lowercase()
            );
        }
        s
    };
    match t {
        ExternType::Func(f) => format!("({}) -> ({})", list(f.params()), list(f.results())),
        ExternType::Memory(_) => "a memory".into(),
        ExternType::Table(_) => "a table".into(),
        ExternType::Global(_) => "a global".into(),
    }
}

//! Loading a function module: Wasm validation plus the ABI v1 shape (imports, exports, signatures).

use edgefn_sdk::abi::{self, Signature, ValType};
use std::fmt::Write;
use wasmi::{Engine, ExternType, FuncType, Module};

/// Why a module cannot be loaded. Each variant names what is wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// Not a WebAssembly module at all, or invalid Wasm.
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
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

/// A validated ABI v1 module, ready to instantiate any number of times.
#[derive(Debug, Clone)]
pub struct FunctionModule {
    pub(crate) module: Module,
    /// Whether it exports `edgefn_init`.
    pub(crate) has_init: bool,
    /// Initial memory size in bytes (the lower bound every instance starts with).
    pub(crate) initial_memory: u64,
}

impl FunctionModule {
    /// Validates `wasm` as an ABI v1 module.
    pub fn load(engine: &Engine, wasm: &[u8]) -> Result<FunctionModule, LoadError> {
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            return Err(LoadError::Invalid(format!(
                "not a WebAssembly binary ({} bytes, no `\\0asm` magic)",
                wasm.len()
            )));
        }
        let module = Module::new(engine, wasm).map_err(|e| LoadError::Invalid(e.to_string()))?;
        for import in module.imports() {
            let (m, n) = (import.module(), import.name());
            let sig = (m == abi::IMPORT_MODULE).then(|| abi::import(n)).flatten();
            let Some(sig) = sig else {
                return Err(LoadError::UnknownImport {
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
                ExternType::Func(f) if matches(&f, sig) => {}
                other => {
                    return Err(LoadError::ImportSignature {
                        name: n.to_string(),
                        found: describe(&other),
                        expected: render(sig),
                    })
                }
            }
        }
        let initial_memory = match module.get_export(abi::EXPORT_MEMORY) {
            Some(ExternType::Memory(m)) => m.minimum() * 65536,
            Some(other) => {
                return Err(LoadError::ExportSignature {
                    name: abi::EXPORT_MEMORY,
                    found: describe(&other),
                    expected: "a memory".into(),
                })
            }
            None => return Err(LoadError::MissingExport(abi::EXPORT_MEMORY)),
        };
        let mut has_init = false;
        for (sig, required) in abi::EXPORTS {
            match module.get_export(sig.name) {
                Some(ExternType::Func(f)) if matches(&f, sig) => {
                    has_init |= sig.name == abi::EXPORT_INIT
                }
                Some(other) => {
                    return Err(LoadError::ExportSignature {
                        name: sig.name,
                        found: describe(&other),
                        expected: render(sig),
                    })
                }
                None if *required => return Err(LoadError::MissingExport(sig.name)),
                None => {}
            }
        }
        Ok(FunctionModule {
            module,
            has_init,
            initial_memory,
        })
    }

    /// Whether the module exports `edgefn_init`.
    pub fn has_init(&self) -> bool {
        self.has_init
    }

    /// Bytes of linear memory each instance starts with.
    pub fn initial_memory(&self) -> u64 {
        self.initial_memory
    }
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
    match t {
        ExternType::Func(f) => {
            let mut s = String::from("(");
            for (i, p) in f.params().iter().enumerate() {
                let _ = write!(
                    s,
                    "{}{}",
                    if i > 0 { ", " } else { "" },
                    format!("{p:?}").to_lowercase()
                );
            }
            s.push_str(") -> (");
            for (i, r) in f.results().iter().enumerate() {
                let _ = write!(
                    s,
                    "{}{}",
                    if i > 0 { ", " } else { "" },
                    format!("{r:?}").to_lowercase()
                );
            }
            s.push(')');
            s
        }
        ExternType::Memory(_) => "a memory".into(),
        ExternType::Table(_) => "a table".into(),
        ExternType::Global(_) => "a global".into(),
    }
}

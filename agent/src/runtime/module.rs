//! Loading a function module: Wasm validation plus the ABI v1 shape (imports, exports, signatures).

use edgefn_sdk::check::{self, ShapeError};
use wasmi::{Engine, Module};

/// Why a module cannot be loaded. Each variant names what is wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// Not a WebAssembly module at all, or invalid Wasm.
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    /// Valid Wasm without ABI v1's shape (imports, exports, signatures).
    #[error(transparent)]
    Shape(#[from] ShapeError),
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
        let shape = check::shape(&module)?;
        Ok(FunctionModule {
            module,
            has_init: shape.has_init,
            initial_memory: shape.initial_memory,
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

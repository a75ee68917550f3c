//! The function runtime: wasmi with fuel, memory and wall-clock limits, ABI v1 host imports,
//! and effects buffered until an invocation succeeds.
//!
//! [`Runtime`] owns the engine and the import linker (share it; it is cheap to clone).
//! [`Runtime::load`] validates a module into a [`FunctionModule`]; [`Runtime::instantiate`] makes
//! a warm [`Instance`]; [`Instance::invoke`] runs one event and returns an [`Invocation`].
//! Calls are synchronous: the daemon runs them on worker threads, never on the async reactor.

mod host;
mod instance;
mod kv;
mod limits;
mod module;
mod outcome;
pub mod topic;

pub use host::{now_ms, FunctionEnv};
pub use instance::{Instance, InstanceError};
pub use kv::{KvRead, MemoryKv};
pub use limits::Limits;
pub(crate) use limits::FUEL_SLICE;
pub use module::{FunctionModule, LoadError};
pub use outcome::{Effects, Invocation, LogLine, Outcome, Publish};

use std::sync::Arc;

/// The engine and linker shared by every function of an agent.
#[derive(Clone)]
pub struct Runtime {
    engine: wasmi::Engine,
    linker: Arc<wasmi::Linker<host::HostState>>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Runtime {
    /// A runtime with fuel metering on.
    pub fn new() -> Runtime {
        let mut config = wasmi::Config::default();
        config.consume_fuel(true);
        // Translate every function when the module loads: lazy translation would charge its
        // fuel inside an invocation, as a trap that cannot be resumed across fuel slices, and
        // an edge agent prefers its costs up front (load happens once per function version).
        config.compilation_mode(wasmi::CompilationMode::Eager);
        let engine = wasmi::Engine::new(&config);
        let linker = Arc::new(host::linker(&engine));
        Runtime { engine, linker }
    }

    /// Validates `wasm` as an ABI v1 module (Wasm validity, imports, exports, signatures).
    pub fn load(&self, wasm: &[u8]) -> Result<FunctionModule, LoadError> {
        FunctionModule::load(&self.engine, wasm)
    }

    /// Starts an instance (runs `edgefn_init` if exported) under `limits` with `env`.
    pub fn instantiate(
        &self,
        module: &FunctionModule,
        limits: Arc<Limits>,
        env: FunctionEnv,
    ) -> Result<Instance, InstanceError> {
        Instance::new(&self.linker, module, limits, env)
    }
}

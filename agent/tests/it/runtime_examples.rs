//! The example functions (built from examples/) through the runtime.

//! The store's error type: one enum, with a variant per thing a caller may want to react to
//! (unknown names map to "not found", validation to "bad request", the rest to "internal").

use std::path::PathBuf;

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("function {0:?} not found")]
    UnknownFunction(String),

    #[error("function {0:?} already exists")]
    FunctionExists(String),

    #[error("function {function:?} has no version {version}")]
    UnknownVersion { function: String, version: u32 },

    #[error("function {function:?} has no alias {alias:?}")]
    UnknownAlias { function: String, alias: String },

    #[error(
        "version {version} of function {function:?} is used by alias(es) {}; \
         point them at another version or delete them first",
        .aliases.join(", ")
    )]
    VersionInUse {
        function: String,
        version: u32,
        /// Every alias that names the version (as its version or its weighted second version).
        aliases: Vec<String>,
    },

    #[error("no module with sha256 {0}")]
    UnknownModule(String),

    #[error("no invocation {0:?}")]
    UnknownInvocation(String),

    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("invalid qualifier {qualifier:?}: {reason}")]
    InvalidQualifier {
        qualifier: String,
        reason: &'static str,
    },

    #[error("invalid alias {alias:?}: {reason}")]
    InvalidAlias { alias: String, reason: String },

    #[error("invalid query: {0}")]
    InvalidQuery(String),

    #[error("mapping {0:?} not found")]
    UnknownMapping(String),

    #[error("a mapping named {name:?} already exists ({id})")]
    MappingExists { name: String, id: String },

    #[error("HTTP path {path:?} is already mapped by {mapping}")]
    HttpPathTaken { path: String, mapping: String },

    #[error("invalid mapping: {reason}")]
    InvalidMapping { reason: String },

    #[error("dead letter {0:?} not found")]
    UnknownDeadLetter(String),

    #[error("flow {0:?} not found")]
    UnknownFlow(String),

    #[error("flow {0:?} already exists")]
    FlowExists(String),

    /// A flow definition that cannot run (the message names the step and field).
    #[error("{0}")]
    InvalidFlow(String),

    #[error("flow run {0:?} not found")]
    UnknownFlowRun(String),

    #[error(
        "{path}: store schema version {found} is newer than this agent supports ({supported}); \
         run a newer agent"
    )]
    SchemaTooNew {
        path: String,
        found: u32,
        supported: u32,
    },

    #[error("{path} is not an edgefn store (application_id {found:#010x})")]
    NotAStore { path: String, found: i32 },

    #[error("{path}: {reason}")]
    Setup { path: String, reason: String },

    /// The local API may not change what cloud sync manages.
    #[error("{0} is managed by the cloud (cloud sync); change it there, not on the device")]
    CloudManaged(String),

    /// Cloud sync refused a desired state (a name taken by a local function or mapping, a
    /// module not staged, ...); the message names it.
    #[error("{0}")]
    CloudConflict(String),

    #[error("job {0:?} not found")]
    UnknownJob(String),

    #[error("job {id} is already {state}")]
    JobFinished { id: String, state: &'static str },

    #[error("job {0} is still running; cancel it first (`job cancel`)")]
    JobActive(String),

    #[error("invalid job: {0}")]
    InvalidJob(String),

    #[error("corrupt stored data: {0}")]
    Corrupt(String),

    #[error("cannot open store {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

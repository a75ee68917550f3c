//! The store's errors. Domain rules (unknown function, conflict, ...) are [`StoreError::Rule`]
//! so that one error type travels out of a transaction closure.

/// What a request got wrong, in the API's terms (docs/cloud-api.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    BadRequest,
    NotFound,
    Conflict,
    Invalid,
    Unauthorized,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A domain rule refused the request; the message says why.
    #[error("{message}")]
    Rule { kind: RuleKind, message: String },
    /// PostgreSQL could not serialize the transaction; it is run again.
    #[error("serialization failure: {0}")]
    Retry(String),
    #[error("database: {0}")]
    Db(String),
    #[error("database configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub fn not_found(message: impl Into<String>) -> Self {
        StoreError::Rule {
            kind: RuleKind::NotFound,
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        StoreError::Rule {
            kind: RuleKind::Conflict,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        StoreError::Rule {
            kind: RuleKind::Invalid,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        StoreError::Rule {
            kind: RuleKind::BadRequest,
            message: message.into(),
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        StoreError::Rule {
            kind: RuleKind::Unauthorized,
            message: message.into(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        use ::postgres::error::SqlState;
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StoreError::Retry(describe(&e))
            }
            // Two replicas inserting the same key at once: the loser retries and then sees it.
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Retry(describe(&e)),
            _ => StoreError::Db(describe(&e)),
        }
    }
}

/// `SQLSTATE: message` of a database error (`postgres::Error`'s own text is just "db error").
fn describe(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

//! The cloud's durable state, over SQLite (embedded default) or PostgreSQL (shared by replicas).
//!
//! Both backends run the same SQL: statements are written with `$1, $2, ...` placeholders
//! (PostgreSQL's; SQLite gets `?1, ?2, ...`), only portable types (`TEXT`, `BIGINT`,
//! `DOUBLE PRECISION`, `BYTEA`; booleans are `BIGINT` 0/1) and portable syntax
//! (`INSERT ... ON CONFLICT`, `RETURNING`). Code reaches the database only through [`Tx`]: a
//! closure gets a transaction and may run again if PostgreSQL reports a serialization failure,
//! so transactions are `SERIALIZABLE` on PostgreSQL and `BEGIN IMMEDIATE` on SQLite.
//!
//! - [`value`]: [`Value`] and [`Row`], the values both backends exchange.
//! - [`error`]: the store's error type.
//! - [`schema`]: the schema and its migrations (one list for both).
//! - [`sqlite`], [`postgres`]: the backends.

pub mod error;
pub mod postgres;
pub mod schema;
pub mod sqlite;
pub mod value;

use std::sync::Arc;

pub use error::StoreError;
pub use value::{Row, Value};

/// One transaction: run statements, get rows.
pub trait Tx {
    /// Runs a query and returns all its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// Runs a statement and returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// Exactly one row.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Db(format!("no row from: {sql}")))
    }
}

/// The backend behind a [`Store`].
enum Backend {
    Sqlite(sqlite::SqliteDb),
    Postgres(postgres::PgDb),
}

/// The store: cheap to clone, shared by all request handlers.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

impl Store {
    /// Opens `sqlite://PATH` or `postgres://...` (`?schema=NAME` selects, and creates, a schema
    /// of its own, e.g. for tests) and brings the schema up to date.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            Backend::Sqlite(sqlite::SqliteDb::open(std::path::Path::new(path))?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::PgDb::open(url)?)
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL {url:?}: expected sqlite://PATH or postgres://..."
            )));
        };
        let store = Store {
            backend: Arc::new(backend),
        };
        store.migrate()?;
        Ok(store)
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match &*self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.migrate(),
            Backend::Postgres(db) => db.migrate(),
        }
    }

    /// Runs `f` in a transaction (blocking; call from a blocking thread). Commits if `f`
    /// returns `Ok`; on PostgreSQL runs `f` again (in a new transaction, after a short random
    /// pause) when the transaction fails with a serialization failure or a deadlock (SQLSTATE
    /// 40001, 40P01), a bounded number of times.
    pub fn tx_blocking<T>(
        &self,
        f: impl Fn(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.tx(&f),
            Backend::Postgres(db) => db.tx(&f),
        }
    }

    /// Runs `f` in a read-only transaction (blocking): a consistent snapshot that never waits
    /// for the writer lock on SQLite (`BEGIN DEFERRED`) and never takes part in PostgreSQL's
    /// serialization conflicts (`REPEATABLE READ, READ ONLY`; a write in `f` is an error).
    pub fn read_blocking<T>(
        &self,
        f: impl Fn(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.read(&f),
            Backend::Postgres(db) => db.read(&f),
        }
    }

    /// [`Store::read_blocking`] on tokio's blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|e| StoreError::Db(format!("store task failed: {e}")))?
    }

    /// [`Store::tx_blocking`] on tokio's blocking pool.
    pub async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.tx_blocking(f))
            .await
            .map_err(|e| StoreError::Db(format!("store task failed: {e}")))?
    }
}

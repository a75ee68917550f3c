//! The [`Store`] handle: opening, connection settings, and the thread model.
//!
//! One writer connection behind a mutex serialises all writes (SQLite allows one writer at a time
//! anyway, and one connection means no SQLITE_BUSY between our own threads). A few reader
//! connections serve queries concurrently with the writer: in WAL mode readers see the last
//! committed state and never block the writer, nor the writer them. Every operation is a short
//! transaction; no lock is held across an `await` or a guest call, so the handle is safe to use
//! from worker threads and (through `spawn_blocking`) from async tasks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::error::{Result, StoreError};
use super::migrations;

/// Prepared statements kept per connection (`prepare_cached`). The store has a few dozen distinct
/// statements; the log and stats queries add a bounded number of filter combinations.
const STATEMENT_CACHE: usize = 128;

/// Default bound of the MQTT outbox, in rows ([`StoreOptions::outbox_max_rows`]).
pub const DEFAULT_OUTBOX_MAX_ROWS: u64 = 100_000;

/// Page size of new stores ([`StoreOptions::page_size`]): 1 KiB rather than SQLite's 4 KiB cuts
/// what an invocation appends to the WAL by ~3x (measured in docs/benchmarks.md, "Footprint").
pub const DEFAULT_PAGE_SIZE: u32 = 1024;

/// Upper bound for the WAL file left on disk after a checkpoint (SD cards are small).
const JOURNAL_SIZE_LIMIT: i64 = 32 * 1024 * 1024;

/// When a commit is durable.
///
/// The store always runs in WAL mode. The difference is when SQLite calls `fsync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `synchronous=NORMAL` (default): a commit is appended to the WAL and handed to the OS; the
    /// WAL is fsynced at checkpoints, not at every commit. A committed transaction survives the
    /// agent crashing or being killed (`kill -9`, OOM killer): the OS still writes its pages. A
    /// power loss or kernel crash can lose the last transactions before the most recent
    /// checkpoint, but never corrupts the database (WAL frames are checksummed; a torn tail is
    /// discarded on recovery). This is the right trade on an SD card: one fsync per commit costs
    /// milliseconds and wears the card.
    #[default]
    Normal,
    /// `synchronous=FULL`: the WAL is fsynced on every commit, so a commit also survives power
    /// loss. Costs one fsync per transaction (commit invocations in batches).
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How to open a store. `StoreOptions::default()` is what [`Store::open`] uses.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Durability of commits; see [`Synchronous`].
    pub synchronous: Synchronous,
    /// How long an operation waits for a lock held by another process (e.g. a backup tool or a
    /// second agent started by mistake) before failing with SQLITE_BUSY.
    pub busy_timeout: Duration,
    /// Reader connections for queries, so a log or stats query never waits for a commit.
    /// `0` sends reads through the writer connection.
    pub readers: usize,
    /// Page cache per connection, in KiB (SQLite's default is 2 MiB). Kept small: the agent
    /// targets devices with 512 MiB of RAM or less, and the OS page cache helps anyway.
    pub cache_kib: u32,
    /// Most rows the MQTT outbox keeps: a commit that goes beyond drops the oldest rows and
    /// counts them (`Dropped::outbox`). Changeable later with [`Store::set_outbox_max_rows`].
    pub outbox_max_rows: u64,
    /// SQLite page size in bytes of a store created by this open (a power of two,
    /// 512..=65536); an existing store keeps the page size it was created with (changing it
    /// needs a VACUUM outside WAL mode). The WAL appends a whole page for every page a
    /// transaction changes, and an invocation's commit changes ~11 pages of different tables
    /// and indexes by a few bytes each, so the page size sets an idle gateway's write volume
    /// (docs/benchmarks.md, "Footprint", SD-card writes).
    pub page_size: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            readers: 2,
            cache_kib: 2048,
            outbox_max_rows: DEFAULT_OUTBOX_MAX_ROWS,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// The agent's durable store. Cheap to clone (an `Arc`), `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the database lives; `None` for an in-memory store (tests).
    path: Option<PathBuf>,
    /// The only connection that writes. Holding its lock = being the writer.
    writer: Mutex<Connection>,
    /// Query-only connections (empty for in-memory stores, whose data only the writer sees).
    readers: Vec<Mutex<Connection>>,
    /// Round-robin start for picking a reader.
    next_reader: AtomicUsize,
    /// See [`StoreOptions::outbox_max_rows`].
    outbox_max_rows: AtomicU64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("readers", &self.inner.readers.len())
            .finish()
    }
}

/// Locks a connection. A panic while holding the lock cannot leave SQLite inconsistent (the open
/// transaction is rolled back when it is dropped during unwinding), so poisoning is ignored.
fn lock(mutex: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if needed) the store at `path` with default options, and migrates its
    /// schema. The directory must exist. Does no work proportional to the amount of stored
    /// history: a few pragmas and reading the schema version.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// Opens the store at `path` with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Store> {
        let path = path.as_ref();
        let display = path.display().to_string();
        let open = || {
            Connection::open(path).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })
        };
        if !(options.page_size.is_power_of_two() && (512..=65536).contains(&options.page_size)) {
            return Err(StoreError::Setup {
                path: display,
                reason: format!(
                    "page size {} is not a power of two in 512..=65536",
                    options.page_size
                ),
            });
        }
        let mut writer = open()?;
        configure(&writer, options)?;
        // Only takes effect while the file is still empty (a new store); ignored otherwise.
        writer.pragma_update(None, "page_size", options.page_size)?;
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Setup {
                path: display,
                reason: format!(
                    "cannot enable WAL (journal_mode is {mode}); is it on a network file system?"
                ),
            });
        }
        writer.pragma_update(None, "synchronous", options.synchronous.pragma_value())?;
        writer.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        migrations::migrate(&mut writer, &display)?;

        let readers = (0..options.readers)
            .map(|_| {
                let reader = open()?;
                configure(&reader, options)?;
                reader.pragma_update(None, "query_only", true)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(Store {
            inner: Arc::new(Inner {
                path: Some(path.to_owned()),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                outbox_max_rows: AtomicU64::new(options.outbox_max_rows),
            }),
        })
    }

    /// A private in-memory store (tests, dry runs). Not durable; all access is serialised.
    pub fn open_in_memory() -> Result<Store> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn, &StoreOptions::default())?;
        migrations::migrate(&mut conn, ":memory:")?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: None,
                writer: Mutex::new(conn),
                readers: Vec::new(),
                next_reader: AtomicUsize::new(0),
                outbox_max_rows: AtomicU64::new(DEFAULT_OUTBOX_MAX_ROWS),
            }),
        })
    }

    /// The database file, `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Most rows the MQTT outbox keeps (see [`StoreOptions::outbox_max_rows`]).
    pub fn outbox_max_rows(&self) -> u64 {
        self.inner.outbox_max_rows.load(Ordering::Relaxed)
    }

    /// Changes the outbox bound; applied from the next commit that adds outbox rows.
    pub fn set_outbox_max_rows(&self, max: u64) {
        self.inner.outbox_max_rows.store(max, Ordering::Relaxed);
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<u32> {
        self.read(|tx| Ok(tx.pragma_query_value(None, "user_version", |r| r.get(0))?))
    }

    /// Runs SQLite's `PRAGMA integrity_check`: `["ok"]` when the database is sound, otherwise
    /// the problems found. Reads the whole database: for diagnostics, not for start-up.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    /// Runs `f` in an IMMEDIATE write transaction, committed when `f` returns `Ok` and rolled
    /// back otherwise. Keep `f` short: it holds the write lock.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.inner.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a read transaction, so that multi-statement reads see one consistent
    /// snapshot. Uses a reader connection when there is one.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.reader();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?; // ends the snapshot; nothing was written
        Ok(out)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let readers = &self.inner.readers;
        if readers.is_empty() {
            return lock(&self.inner.writer);
        }
        let start = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        for offset in 0..readers.len() {
            if let Ok(conn) = readers[(start + offset) % readers.len()].try_lock() {
                return conn;
            }
        }
        lock(&readers[start])
    }
}

/// Settings every connection gets.
fn configure(conn: &Connection, options: &StoreOptions) -> Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_kib))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// A fresh ULID, greater than every other this process made in the same millisecond, so ids the
/// store hands out (mappings, dead letters) sort in creation order.
pub(crate) fn next_ulid() -> ulid::Ulid {
    static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    // Overflow (2^80 ids in one millisecond) cannot happen in practice; fall back to random.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

/// Wall clock in Unix milliseconds, for timestamps the store sets itself.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    #[test]
    fn store_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Store>();
    }

    #[test]
    fn file_store_uses_wal_foreign_keys_and_normal_sync() {
        let (_dir, store) = temp_store();
        let conn = lock(&store.inner.writer);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1); // NORMAL
        drop(conn);
        assert_eq!(store.inner.readers.len(), 2);
        assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_string()]);
        assert_eq!(
            store.schema_version().unwrap(),
            migrations::MIGRATIONS.len() as u32
        );
    }

    #[test]
    fn full_sync_option_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            synchronous: Synchronous::Full,
            readers: 0,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path().join("s.db"), &options).unwrap();
        let sync: i64 = lock(&store.inner.writer)
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2); // FULL
    }

    #[test]
    fn page_size_applies_to_new_stores_only_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let page_size = |store: &Store| -> i64 {
            lock(&store.inner.writer)
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .unwrap()
        };
        let with = |page_size| StoreOptions {
            page_size,
            ..StoreOptions::default()
        };
        let store = Store::open_with(&path, &with(2048)).unwrap();
        assert_eq!(page_size(&store), 2048);
        store.meta_set("k", "v").unwrap();
        drop(store);
        // Reopened with another page size: the store keeps its own, and its data.
        let store = Store::open_with(&path, &with(8192)).unwrap();
        assert_eq!(page_size(&store), 2048);
        assert_eq!(store.meta_get("k").unwrap().as_deref(), Some("v"));
        assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_string()]);
        drop(store);
        let default = Store::open(dir.path().join("d.db")).unwrap();
        assert_eq!(page_size(&default), i64::from(DEFAULT_PAGE_SIZE));
        for bad in [0, 1000, 256, 131072] {
            let err = Store::open_with(dir.path().join("bad.db"), &with(bad)).unwrap_err();
            assert!(
                err.to_string().contains(&format!("page size {bad}")),
                "{err}"
            );
        }
    }

    #[test]
    fn reader_connections_cannot_write() {
        let (_dir, store) = temp_store();
        let err = lock(&store.inner.readers[0])
            .execute("INSERT INTO meta (key, value) VALUES ('a', 'b')", [])
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn opening_a_non_store_file_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE unrelated (x); PRAGMA user_version = 7;")
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x55u8; 8192]).unwrap();
        assert!(Store::open(&garbage).is_err());
    }

    #[test]
    fn a_store_from_a_newer_agent_is_refused() {
        let (dir, store) = temp_store();
        drop(store);
        let path = dir.path().join("store.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 1000)
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 1000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn unopenable_path_is_an_open_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("store.db");
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    #[test]
    fn in_memory_store_works_without_readers() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.path(), None);
        assert_eq!(
            store.schema_version().unwrap(),
            migrations::MIGRATIONS.len() as u32
        );
    }
}

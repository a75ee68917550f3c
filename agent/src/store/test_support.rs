//! Helpers shared by the store's unit tests.

use super::Store;

/// A store in a fresh temporary directory (`<dir>/store.db`); keep the directory alive.
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store.db")).unwrap();
    (dir, store)
}

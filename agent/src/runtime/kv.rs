//! The function's persistent key-value store as the runtime sees it: reads go to a backend,
//! writes are buffered in the invocation's [`Effects`](super::Effects) until it commits.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// Read access to a function's committed kv data (the daemon backs it with SQLite).
pub trait KvRead: Send + Sync {
    /// The committed value of `key`, if any. An `Err` fails the guest's `kv_get` with a trap.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
}

/// An in-memory kv store: `exec`'s default and handy in tests.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryKv {
    /// A store holding `entries`.
    pub fn from_map(entries: BTreeMap<Vec<u8>, Vec<u8>>) -> MemoryKv {
        MemoryKv {
            map: RwLock::new(entries),
        }
    }

    /// Applies committed writes (`None` deletes).
    pub fn apply(&self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k.clone(), v.clone()),
                None => map.remove(k),
            };
        }
    }

    /// A copy of everything stored.
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl KvRead for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }
}

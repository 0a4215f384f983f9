//! The compiled-script cache: each script's code at the newest version seen, bounded by an
//! estimate of the memory it holds. When an insert would go over the budget, the scripts
//! used least recently go first.
//!
//! Rhai does not report an AST's size, so a script is estimated from its source: on
//! sample scripts (straight-line code, SDK calls, many small functions) a compiled AST
//! took 10 to 28 times its source length, and a one-character script about 650 bytes.
//! [`BYTES_PER_SOURCE_BYTE`] and [`BYTES_PER_SCRIPT`] lean above both, so the real total
//! stays under the budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use picloud_shared::ScriptId;

use crate::engine::CompiledScript;

/// Estimated bytes of compiled code per byte of source.
pub const BYTES_PER_SOURCE_BYTE: usize = 32;

/// Estimated bytes every cached script holds whatever its length: the AST's own
/// structures, the engine handle, the map entry.
pub const BYTES_PER_SCRIPT: usize = 1024;

/// The compiled-script cache's default budget: 64 MiB, about a thousand scripts of 2 KB.
pub const DEFAULT_COMPILED_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The memory a script of `source_len` bytes is estimated to take compiled.
pub fn estimated_bytes(source_len: usize) -> usize {
    source_len
        .saturating_mul(BYTES_PER_SOURCE_BYTE)
        .saturating_add(BYTES_PER_SCRIPT)
}

#[derive(Debug)]
pub(crate) struct CompiledCache {
    max_bytes: usize,
    entries: RwLock<Entries>,
    /// Stamps each use, so eviction can tell which scripts ran longest ago.
    clock: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    by_script: HashMap<ScriptId, Entry>,
    /// The sum of the entries' estimates.
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    version: i64,
    compiled: Arc<CompiledScript>,
    bytes: usize,
    last_used: AtomicU64,
}

impl CompiledCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            entries: RwLock::new(Entries::default()),
            clock: AtomicU64::new(0),
        }
    }

    // Every change to the map and its byte count happens under one write lock, so what a
    // panicking holder left behind is still consistent.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The code of `id` at `version`, if cached.
    pub(crate) fn get(&self, id: ScriptId, version: i64) -> Option<Arc<CompiledScript>> {
        let entries = self.read();
        let entry = entries
            .by_script
            .get(&id)
            .filter(|entry| entry.version == version)?;
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        Some(Arc::clone(&entry.compiled))
    }

    /// Caches `compiled` as `id`'s code at `version`, compiled from `source_len` bytes,
    /// unless a newer version is cached (a slow compile of an older version must not
    /// replace it) or the script alone is over the budget. Evicts the scripts used least
    /// recently until it fits.
    pub(crate) fn insert(
        &self,
        id: ScriptId,
        version: i64,
        compiled: Arc<CompiledScript>,
        source_len: usize,
    ) {
        let bytes = estimated_bytes(source_len);
        let mut entries = self.write();
        if entries
            .by_script
            .get(&id)
            .is_some_and(|cached| cached.version > version)
        {
            return;
        }
        entries.remove(id);
        if bytes > self.max_bytes {
            return;
        }
        if entries.bytes.saturating_add(bytes) > self.max_bytes {
            entries.evict_until(self.max_bytes - bytes);
        }
        entries.bytes += bytes;
        entries.by_script.insert(
            id,
            Entry {
                version,
                compiled,
                bytes,
                last_used: AtomicU64::new(self.tick()),
            },
        );
    }

    /// Drops `id`'s code.
    pub(crate) fn remove(&self, id: ScriptId) {
        self.write().remove(id);
    }

    /// How many scripts have code cached.
    pub(crate) fn len(&self) -> usize {
        self.read().by_script.len()
    }

    /// The estimated bytes the cached code holds.
    pub(crate) fn bytes(&self) -> usize {
        self.read().bytes
    }
}

impl Entries {
    fn remove(&mut self, id: ScriptId) {
        if let Some(old) = self.by_script.remove(&id) {
            self.bytes -= old.bytes;
        }
    }

    /// Drops the entries used least recently until at most `target` bytes remain.
    fn evict_until(&mut self, target: usize) {
        let mut by_age: Vec<(u64, ScriptId)> = self
            .by_script
            .iter()
            .map(|(id, entry)| (entry.last_used.load(Ordering::Relaxed), *id))
            .collect();
        by_age.sort_unstable();
        for (_, id) in by_age {
            if self.bytes <= target {
                break;
            }
            self.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use picloud_shared::{SandboxCeiling, SandboxLimits};

    use super::*;
    use crate::engine::ScriptEngine;

    fn compiled(source: &str) -> Arc<CompiledScript> {
        let engine = ScriptEngine::new(SandboxCeiling::default());
        Arc::new(engine.compile(source, SandboxLimits::default()).unwrap())
    }

    /// A cache with room for exactly `scripts` scripts of `source`.
    fn room_for(scripts: usize, source: &str) -> CompiledCache {
        CompiledCache::new(scripts * estimated_bytes(source.len()))
    }

    #[test]
    fn the_estimate_grows_with_the_source() {
        assert_eq!(estimated_bytes(0), BYTES_PER_SCRIPT);
        assert_eq!(
            estimated_bytes(1000),
            1000 * BYTES_PER_SOURCE_BYTE + BYTES_PER_SCRIPT
        );
        assert_eq!(estimated_bytes(usize::MAX), usize::MAX, "no overflow");
    }

    #[test]
    fn going_over_the_byte_budget_evicts_the_script_used_longest_ago() {
        let source = "40 + 2";
        let cache = room_for(2, source);
        let (a, b, c) = (ScriptId::new(), ScriptId::new(), ScriptId::new());
        cache.insert(a, 1, compiled(source), source.len());
        cache.insert(b, 1, compiled(source), source.len());
        assert_eq!(cache.bytes(), 2 * estimated_bytes(source.len()));
        // `a` ran more recently than `b`.
        assert!(cache.get(a, 1).is_some());

        cache.insert(c, 1, compiled(source), source.len());
        assert_eq!(cache.len(), 2);
        assert!(cache.get(b, 1).is_none(), "the least recently used went");
        assert!(cache.get(a, 1).is_some());
        assert!(cache.get(c, 1).is_some());
        assert_eq!(cache.bytes(), 2 * estimated_bytes(source.len()));
    }

    #[test]
    fn one_large_script_evicts_as_many_small_ones_as_its_size_needs() {
        let small = "1";
        let large = "1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1";
        // The large one is estimated at more than two small ones and at most three.
        assert!(estimated_bytes(large.len()) > 2 * estimated_bytes(small.len()));
        assert!(estimated_bytes(large.len()) <= 3 * estimated_bytes(small.len()));
        let budget = 6 * estimated_bytes(small.len());
        let cache = CompiledCache::new(budget);
        let smalls: Vec<ScriptId> = (0..6).map(|_| ScriptId::new()).collect();
        for id in &smalls {
            cache.insert(*id, 1, compiled(small), small.len());
        }
        assert_eq!(cache.len(), 6, "six small scripts fit");

        cache.insert(ScriptId::new(), 1, compiled(large), large.len());
        assert!(cache.bytes() <= budget);
        assert_eq!(
            cache.len(),
            4,
            "three small ones make room for the large one"
        );
        let kept: Vec<bool> = smalls
            .iter()
            .map(|id| cache.get(*id, 1).is_some())
            .collect();
        assert_eq!(
            kept,
            [false, false, false, true, true, true],
            "oldest first"
        );
    }

    #[test]
    fn a_script_over_the_whole_budget_is_not_cached_and_evicts_nothing() {
        let small = "1";
        let cache = room_for(1, small);
        let kept = ScriptId::new();
        cache.insert(kept, 1, compiled(small), small.len());
        let huge = "1 + 2";
        cache.insert(ScriptId::new(), 1, compiled(huge), huge.len());
        assert_eq!(cache.len(), 1);
        assert!(cache.get(kept, 1).is_some());
    }

    #[test]
    fn a_new_version_replaces_the_old_ones_bytes_and_an_older_one_loses() {
        let cache = CompiledCache::new(DEFAULT_COMPILED_CACHE_BYTES);
        let id = ScriptId::new();
        cache.insert(id, 1, compiled("1"), 1);
        cache.insert(id, 2, compiled("1 + 1"), 5);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), estimated_bytes(5));
        cache.insert(id, 1, compiled("1"), 1);
        assert!(cache.get(id, 2).is_some(), "the newer version stayed");
        assert!(cache.get(id, 1).is_none());

        cache.remove(id);
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }
}

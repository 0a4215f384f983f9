//! The script lookup on every execute request's path: a read-mostly cache over the
//! [`ScriptRepository`], invalidated by script changes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use picloud_shared::{
    AppId, AppSlug, ResolveError, Script, ScriptChangeObserver, ScriptId, ScriptName,
    ScriptResolver,
};

use crate::error_chain;
use crate::{repository::RepoError, scripts::ScriptRepository};

/// A [`ScriptResolver`] that caches scripts by id and by (app slug, name).
///
/// Misses are not cached, so a freshly created script resolves at once; a saved script is
/// put in the cache by id as soon as its change commits, so its first call needs no
/// lookup. Updates and deletes reach the cache through [`ScriptChangeObserver`], which
/// drops both keys of the script (or, when an app is renamed or deleted, every entry of
/// that app). The cache is bounded twice: in entries (`capacity`) and in estimated bytes
/// (`max_bytes`, an entry counting [`Self::entry_bytes`]). When an insert would pass either
/// bound the cache is cleared rather than evicted piecemeal: refilling is one query per
/// script and keeps the bookkeeping trivial. A script larger than the whole byte budget is
/// answered but not cached.
pub struct CachedScriptResolver {
    repo: Arc<dyn ScriptRepository>,
    capacity: usize,
    max_bytes: usize,
    cache: RwLock<Cache>,
}

#[derive(Default)]
struct Cache {
    by_id: HashMap<ScriptId, Arc<Script>>,
    by_name: HashMap<(AppSlug, ScriptName), Arc<Script>>,
    /// The estimated bytes of every entry, both maps together.
    bytes: usize,
    /// Bumped by every invalidation. A lookup that started before an invalidation must not
    /// store what it read, or a script changed mid-lookup would stay stale in the cache.
    generation: u64,
}

impl Cache {
    fn len(&self) -> usize {
        self.by_id.len() + self.by_name.len()
    }

    fn clear(&mut self) {
        self.by_id.clear();
        self.by_name.clear();
        self.bytes = 0;
    }

    fn insert_by_id(&mut self, script: Arc<Script>) {
        self.bytes += CachedScriptResolver::entry_bytes(&script);
        if let Some(old) = self.by_id.insert(script.id, script) {
            self.bytes -= CachedScriptResolver::entry_bytes(&old);
        }
    }

    fn insert_by_name(&mut self, key: (AppSlug, ScriptName), script: Arc<Script>) {
        self.bytes += CachedScriptResolver::entry_bytes(&script);
        if let Some(old) = self.by_name.insert(key, script) {
            self.bytes -= CachedScriptResolver::entry_bytes(&old);
        }
    }

    /// Keeps only the entries of scripts `keep` accepts, under either key.
    fn retain(&mut self, keep: impl Fn(&Script) -> bool) {
        let mut dropped = 0;
        let mut check = |script: &Arc<Script>| {
            let kept = keep(script);
            if !kept {
                dropped += CachedScriptResolver::entry_bytes(script);
            }
            kept
        };
        self.by_id.retain(|_, script| check(script));
        self.by_name.retain(|_, script| check(script));
        self.bytes -= dropped;
    }
}

impl fmt::Debug for CachedScriptResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = self.read();
        f.debug_struct("CachedScriptResolver")
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .field("cached_by_id", &cache.by_id.len())
            .field("cached_by_name", &cache.by_name.len())
            .field("cached_bytes", &cache.bytes)
            .finish_non_exhaustive()
    }
}

impl CachedScriptResolver {
    /// Entries held before the cache is cleared, counting both keys of a script.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// Estimated bytes held before the cache is cleared: 32 MiB, a hundred scripts at the
    /// largest source the admin API accepts, or thousands of ordinary ones.
    pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

    /// What an entry is estimated to hold beside its source: the `Script`'s fields and
    /// name, the key, the map slot and the `Arc`'s counts.
    pub const ENTRY_OVERHEAD_BYTES: usize = 256;

    /// A resolver over `repo` with [`Self::DEFAULT_CAPACITY`] and [`Self::DEFAULT_MAX_BYTES`].
    pub fn new(repo: Arc<dyn ScriptRepository>) -> Self {
        Self::with_limits(repo, Self::DEFAULT_CAPACITY, Self::DEFAULT_MAX_BYTES)
    }

    /// A resolver over `repo` holding at most `capacity` entries (at least 1).
    pub fn with_capacity(repo: Arc<dyn ScriptRepository>, capacity: usize) -> Self {
        Self::with_limits(repo, capacity, Self::DEFAULT_MAX_BYTES)
    }

    /// A resolver over `repo` holding at most `capacity` entries (at least 1) and
    /// `max_bytes` estimated bytes.
    pub fn with_limits(repo: Arc<dyn ScriptRepository>, capacity: usize, max_bytes: usize) -> Self {
        Self {
            repo,
            capacity: capacity.max(1),
            max_bytes,
            cache: RwLock::new(Cache::default()),
        }
    }

    /// The estimated bytes one entry of `script` holds: its source plus
    /// [`Self::ENTRY_OVERHEAD_BYTES`]. A script cached under both keys counts twice, which
    /// overestimates when both share one copy and is exact when they hold two versions.
    pub fn entry_bytes(script: &Script) -> usize {
        script
            .source
            .len()
            .saturating_add(Self::ENTRY_OVERHEAD_BYTES)
    }

    /// Clears the cache when adding `entries` entries of `script` would pass either bound;
    /// false when the script alone does not fit, so it is not cached at all.
    fn make_room(&self, cache: &mut Cache, script: &Script, entries: usize) -> bool {
        let bytes = Self::entry_bytes(script).saturating_mul(entries);
        if bytes > self.max_bytes {
            return false;
        }
        if cache.len() + entries > self.capacity
            || cache.bytes.saturating_add(bytes) > self.max_bytes
        {
            cache.clear();
        }
        true
    }

    // The cache is rebuilt from the database on demand, so data left by a panicking
    // writer is still a valid (if partial) cache: recover it rather than propagate.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a lookup's result unless the cache was invalidated since it started.
    fn store(
        &self,
        generation: u64,
        script: &Arc<Script>,
        name_key: Option<(AppSlug, ScriptName)>,
    ) {
        let mut cache = self.write();
        if cache.generation != generation {
            return;
        }
        let adding = 1 + usize::from(name_key.is_some());
        if !self.make_room(&mut cache, script, adding) {
            return;
        }
        cache.insert_by_id(Arc::clone(script));
        if let Some(key) = name_key {
            cache.insert_by_name(key, Arc::clone(script));
        }
    }
}

fn resolve_error(err: &RepoError) -> ResolveError {
    ResolveError(error_chain(err))
}

#[async_trait]
impl ScriptResolver for CachedScriptResolver {
    async fn by_id(&self, id: ScriptId) -> Result<Option<Arc<Script>>, ResolveError> {
        let generation = {
            let cache = self.read();
            if let Some(hit) = cache.by_id.get(&id) {
                return Ok(Some(Arc::clone(hit)));
            }
            cache.generation
        };
        let Some(script) = self.repo.get(id).await.map_err(|e| resolve_error(&e))? else {
            return Ok(None);
        };
        let script = Arc::new(script);
        self.store(generation, &script, None);
        Ok(Some(script))
    }

    async fn by_name(
        &self,
        app: &AppSlug,
        name: &ScriptName,
    ) -> Result<Option<Arc<Script>>, ResolveError> {
        let key = (app.clone(), name.clone());
        let generation = {
            let cache = self.read();
            if let Some(hit) = cache.by_name.get(&key) {
                return Ok(Some(Arc::clone(hit)));
            }
            cache.generation
        };
        let found = self
            .repo
            .get_by_name(app, name)
            .await
            .map_err(|e| resolve_error(&e))?;
        let Some(script) = found else {
            return Ok(None);
        };
        let script = Arc::new(script);
        self.store(generation, &script, Some(key));
        Ok(Some(script))
    }
}

impl ScriptChangeObserver for CachedScriptResolver {
    fn script_changed(&self, id: ScriptId) {
        let mut cache = self.write();
        cache.generation = cache.generation.wrapping_add(1);
        // A rename leaves the old name's key pointing at the script, so match by id.
        cache.retain(|script| script.id != id);
    }

    fn script_saved(&self, script: &Script) {
        let mut cache = self.write();
        // A slower save of an older version must not replace a newer one.
        if cache
            .by_id
            .get(&script.id)
            .is_some_and(|cached| cached.version > script.version)
        {
            return;
        }
        if !self.make_room(&mut cache, script, 1) {
            // Too large to cache: at least no older version may answer for it.
            cache.retain(|cached| cached.id != script.id);
            return;
        }
        // By id only: the by-name key needs the app's slug, which the first by-name
        // lookup fills in.
        cache.insert_by_id(Arc::new(script.clone()));
    }

    fn app_changed(&self, id: AppId) {
        let mut cache = self.write();
        cache.generation = cache.generation.wrapping_add(1);
        // A renamed slug leaves keys under the old slug, and a deleted app takes its
        // scripts with it: drop every entry of the app, whichever key it sits under.
        cache.retain(|script| script.app_id != id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use picloud_shared::ScriptLimits;
    use tokio::sync::Notify;

    use super::*;
    use crate::DEFAULT_APP_ID;
    use crate::{apps::InMemoryAppRepository, scripts::InMemoryScriptRepository};
    use crate::{
        apps::{AppRepository, AppUpdate},
        repository::RepoResult,
        scripts::{ListScripts, NewScript, ScriptSummary, ScriptUpdate},
    };

    /// Counts reads, can fail them, and can hold one read until released, so tests see
    /// exactly when the cache goes to the store.
    struct Probe {
        apps: Arc<InMemoryAppRepository>,
        inner: InMemoryScriptRepository,
        reads: AtomicUsize,
        failing: AtomicBool,
        hold: AtomicBool,
        held: Notify,
        release: Notify,
    }

    impl Probe {
        fn new() -> Arc<Self> {
            let apps = Arc::new(InMemoryAppRepository::new());
            Arc::new(Self {
                inner: InMemoryScriptRepository::new(apps.clone()),
                apps,
                reads: AtomicUsize::new(0),
                failing: AtomicBool::new(false),
                hold: AtomicBool::new(false),
                held: Notify::new(),
                release: Notify::new(),
            })
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }

        async fn read(&self) -> RepoResult<()> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(RepoError::Internal("disk on fire".into()));
            }
            Ok(())
        }

        async fn add(&self, name: &str) -> Script {
            self.inner
                .create(NewScript {
                    app_id: DEFAULT_APP_ID,
                    name: ScriptName::parse(name).unwrap(),
                    source: "1".to_owned(),
                    limits: ScriptLimits::default(),
                    require_token: false,
                })
                .await
                .unwrap()
        }
    }

    #[async_trait]
    impl ScriptRepository for Probe {
        async fn create(&self, new: NewScript) -> RepoResult<Script> {
            self.inner.create(new).await
        }

        async fn get(&self, id: ScriptId) -> RepoResult<Option<Script>> {
            self.read().await?;
            let found = self.inner.get(id).await;
            if self.hold.swap(false, Ordering::SeqCst) {
                self.held.notify_one();
                self.release.notified().await;
            }
            found
        }

        async fn get_by_name(
            &self,
            app: &AppSlug,
            name: &ScriptName,
        ) -> RepoResult<Option<Script>> {
            self.read().await?;
            self.inner.get_by_name(app, name).await
        }

        async fn list(&self, query: ListScripts) -> RepoResult<Vec<ScriptSummary>> {
            self.inner.list(query).await
        }

        async fn update(&self, id: ScriptId, update: ScriptUpdate) -> RepoResult<Script> {
            self.inner.update(id, update).await
        }

        async fn delete(&self, id: ScriptId) -> RepoResult<()> {
            self.inner.delete(id).await
        }
    }

    fn name(raw: &str) -> ScriptName {
        ScriptName::parse(raw).unwrap()
    }

    fn new_source(source: &str) -> ScriptUpdate {
        ScriptUpdate {
            source: Some(source.to_owned()),
            ..ScriptUpdate::default()
        }
    }

    #[tokio::test]
    async fn lookups_are_served_from_the_cache_after_the_first() {
        let repo = Probe::new();
        let script = repo.add("hello").await;
        let resolver = CachedScriptResolver::new(repo.clone());

        let first = resolver.by_id(script.id).await.unwrap().unwrap();
        let second = resolver.by_id(script.id).await.unwrap().unwrap();
        assert_eq!(*first, script);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(repo.reads(), 1);

        let slug = AppSlug::default_app();
        let by_name = resolver
            .by_name(&slug, &name("hello"))
            .await
            .unwrap()
            .unwrap();
        resolver
            .by_name(&slug, &name("hello"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*by_name, script);
        assert_eq!(repo.reads(), 2);
    }

    #[tokio::test]
    async fn a_by_name_lookup_also_fills_the_id_key() {
        let repo = Probe::new();
        let script = repo.add("hello").await;
        let resolver = CachedScriptResolver::new(repo.clone());
        resolver
            .by_name(&AppSlug::default_app(), &name("hello"))
            .await
            .unwrap();
        assert_eq!(*resolver.by_id(script.id).await.unwrap().unwrap(), script);
        assert_eq!(repo.reads(), 1);
    }

    #[tokio::test]
    async fn a_saved_script_is_served_without_a_lookup_and_older_saves_lose() {
        let repo = Probe::new();
        let script = repo.add("fresh").await;
        let resolver = CachedScriptResolver::new(repo.clone());
        resolver.script_saved(&script);
        assert_eq!(*resolver.by_id(script.id).await.unwrap().unwrap(), script);
        assert_eq!(
            repo.reads(),
            0,
            "the first call after an upload needs no lookup"
        );

        let newer = Script {
            version: script.version + 1,
            source: "\"v2\"".to_owned(),
            ..script.clone()
        };
        resolver.script_saved(&newer);
        resolver.script_saved(&script);
        let cached = resolver.by_id(script.id).await.unwrap().unwrap();
        assert_eq!(
            cached.version, newer.version,
            "an older save never replaces a newer one"
        );
        assert_eq!(repo.reads(), 0);
    }

    #[tokio::test]
    async fn misses_are_not_cached_so_new_scripts_resolve_at_once() {
        let repo = Probe::new();
        let resolver = CachedScriptResolver::new(repo.clone());
        let slug = AppSlug::default_app();
        assert_eq!(resolver.by_name(&slug, &name("later")).await.unwrap(), None);

        let script = repo.add("later").await;
        let found = resolver.by_name(&slug, &name("later")).await.unwrap();
        assert_eq!(found.as_deref(), Some(&script));
    }

    #[tokio::test]
    async fn a_change_drops_both_keys_including_the_old_name() {
        let repo = Probe::new();
        let script = repo.add("before").await;
        let resolver = CachedScriptResolver::new(repo.clone());
        let slug = AppSlug::default_app();
        resolver.by_id(script.id).await.unwrap();
        resolver.by_name(&slug, &name("before")).await.unwrap();

        let renamed = repo
            .update(
                script.id,
                ScriptUpdate {
                    name: Some(name("after")),
                    ..ScriptUpdate::default()
                },
            )
            .await
            .unwrap();
        resolver.script_changed(script.id);

        assert_eq!(
            resolver.by_name(&slug, &name("before")).await.unwrap(),
            None
        );
        let by_id = resolver.by_id(script.id).await.unwrap().unwrap();
        assert_eq!(by_id.version, 2);
        let by_name = resolver.by_name(&slug, &name("after")).await.unwrap();
        assert_eq!(by_name.as_deref(), Some(&renamed));

        repo.delete(script.id).await.unwrap();
        resolver.script_changed(script.id);
        assert_eq!(resolver.by_id(script.id).await.unwrap(), None);
        assert_eq!(resolver.by_name(&slug, &name("after")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_lookup_overtaken_by_a_change_does_not_cache_the_old_version() {
        let repo = Probe::new();
        let script = repo.add("racy").await;
        let resolver = Arc::new(CachedScriptResolver::new(repo.clone()));

        repo.hold.store(true, Ordering::SeqCst);
        let lookup = tokio::spawn({
            let resolver = resolver.clone();
            async move { resolver.by_id(script.id).await }
        });
        // The lookup has read version 1; the update commits and notifies before it stores.
        repo.held.notified().await;
        repo.update(script.id, new_source("2")).await.unwrap();
        resolver.script_changed(script.id);
        repo.release.notify_one();
        let stale = lookup.await.unwrap().unwrap().unwrap();
        assert_eq!(stale.version, 1, "the lookup itself answers what it read");

        let fresh = resolver.by_id(script.id).await.unwrap().unwrap();
        assert_eq!(fresh.version, 2);
    }

    #[tokio::test]
    async fn an_app_change_drops_every_entry_of_that_app_only() {
        let repo = Probe::new();
        let script = repo.add("hello").await;
        let shop = repo
            .apps
            .create("shop".parse().unwrap(), "Shop".to_owned(), None)
            .await
            .unwrap();
        let other = repo
            .inner
            .create(NewScript {
                app_id: shop.id,
                name: name("other"),
                source: "2".to_owned(),
                limits: ScriptLimits::default(),
                require_token: false,
            })
            .await
            .unwrap();
        let resolver = CachedScriptResolver::new(repo.clone());
        let old_slug = AppSlug::default_app();
        resolver.by_name(&old_slug, &name("hello")).await.unwrap();
        resolver.by_id(other.id).await.unwrap();
        assert_eq!(repo.reads(), 2);

        let new_slug: AppSlug = "renamed".parse().unwrap();
        repo.apps
            .update(
                DEFAULT_APP_ID,
                AppUpdate {
                    slug: Some(new_slug.clone()),
                    name: None,
                },
            )
            .await
            .unwrap();
        resolver.app_changed(DEFAULT_APP_ID);

        // The old slug no longer answers; the new one and the id go back to the store.
        assert_eq!(
            resolver.by_name(&old_slug, &name("hello")).await.unwrap(),
            None
        );
        let found = resolver.by_name(&new_slug, &name("hello")).await.unwrap();
        assert_eq!(found.as_deref(), Some(&script));
        assert_eq!(repo.reads(), 4);
        // The other app's entry stayed cached.
        resolver.by_id(other.id).await.unwrap();
        assert_eq!(repo.reads(), 4);
    }

    #[tokio::test]
    async fn a_full_cache_is_cleared_and_keeps_answering_correctly() {
        let repo = Probe::new();
        let a = repo.add("a").await;
        let b = repo.add("b").await;
        let c = repo.add("c").await;
        let resolver = CachedScriptResolver::with_capacity(repo.clone(), 2);
        for script in [&a, &b, &c] {
            assert_eq!(*resolver.by_id(script.id).await.unwrap().unwrap(), *script);
        }
        assert_eq!(repo.reads(), 3);
        // Filling up with `c` cleared `a` and `b`; `c` is still cached.
        resolver.by_id(c.id).await.unwrap();
        assert_eq!(repo.reads(), 3);
        assert_eq!(*resolver.by_id(a.id).await.unwrap().unwrap(), a);
        assert_eq!(repo.reads(), 4);
    }

    #[tokio::test]
    async fn a_cache_over_its_byte_budget_is_cleared_and_keeps_answering_correctly() {
        let repo = Probe::new();
        let a = repo.add("a").await;
        let b = repo.add("b").await;
        let c = repo.add("c").await;
        // Room in bytes for two entries, in count for many more.
        let budget = 2 * CachedScriptResolver::entry_bytes(&a);
        let resolver = CachedScriptResolver::with_limits(repo.clone(), 100, budget);
        for script in [&a, &b] {
            assert_eq!(*resolver.by_id(script.id).await.unwrap().unwrap(), *script);
        }
        resolver.by_id(a.id).await.unwrap();
        resolver.by_id(b.id).await.unwrap();
        assert_eq!(repo.reads(), 2, "two entries fit in the budget");

        assert_eq!(*resolver.by_id(c.id).await.unwrap().unwrap(), c);
        assert_eq!(repo.reads(), 3);
        // `c` went over the budget: `a` and `b` were cleared, `c` is cached.
        resolver.by_id(c.id).await.unwrap();
        assert_eq!(repo.reads(), 3);
        assert_eq!(*resolver.by_id(a.id).await.unwrap().unwrap(), a);
        assert_eq!(repo.reads(), 4);
    }

    #[tokio::test]
    async fn a_script_larger_than_the_byte_budget_is_answered_but_never_cached() {
        let repo = Probe::new();
        let small = repo.add("small").await;
        let large = repo
            .update(repo.add("large").await.id, new_source(&"1;".repeat(500)))
            .await
            .unwrap();
        let budget = CachedScriptResolver::entry_bytes(&small) * 3;
        assert!(CachedScriptResolver::entry_bytes(&large) > budget);
        let resolver = CachedScriptResolver::with_limits(repo.clone(), 100, budget);
        resolver.by_id(small.id).await.unwrap();

        for _ in 0..2 {
            assert_eq!(*resolver.by_id(large.id).await.unwrap().unwrap(), large);
        }
        assert_eq!(repo.reads(), 3, "each call for the large script reads it");
        resolver.by_id(small.id).await.unwrap();
        assert_eq!(repo.reads(), 3, "and it evicted nothing");

        // A saved version too large to cache drops the older version it replaces.
        let grown = Script {
            version: small.version + 1,
            source: "1;".repeat(500),
            ..small.clone()
        };
        resolver.script_saved(&grown);
        resolver.by_id(small.id).await.unwrap();
        assert_eq!(repo.reads(), 4, "the old version no longer answers");
    }

    #[tokio::test]
    async fn invalidations_give_back_the_bytes_of_what_they_drop() {
        let repo = Probe::new();
        let a = repo.add("a").await;
        let resolver = CachedScriptResolver::new(repo.clone());
        resolver
            .by_name(&AppSlug::default_app(), &name("a"))
            .await
            .unwrap();
        assert_eq!(
            resolver.read().bytes,
            2 * CachedScriptResolver::entry_bytes(&a),
            "both keys count"
        );
        resolver.script_changed(a.id);
        assert_eq!(resolver.read().bytes, 0);

        resolver.script_saved(&a);
        resolver.script_saved(&a);
        assert_eq!(
            resolver.read().bytes,
            CachedScriptResolver::entry_bytes(&a),
            "a replaced entry is not counted twice"
        );
        resolver.app_changed(DEFAULT_APP_ID);
        assert_eq!(resolver.read().bytes, 0);
    }

    #[tokio::test]
    async fn store_failures_become_resolve_errors_with_the_cause() {
        let repo = Probe::new();
        let resolver = CachedScriptResolver::new(repo.clone());
        repo.failing.store(true, Ordering::SeqCst);
        let err = resolver.by_id(ScriptId::new()).await.unwrap_err();
        assert!(err.0.contains("disk on fire"), "{err}");
        let err = resolver
            .by_name(&AppSlug::default_app(), &name("x"))
            .await
            .unwrap_err();
        assert!(err.0.contains("disk on fire"), "{err}");
    }
}

//! [`KvService`] in memory, with the same validation, limits, ordering, versions and
//! access checks as the PostgreSQL one; a change and its events commit together through
//! the same [`UnitOfWork`] as there, over an [`InMemoryTx`].
//!
//! Conditions (a check-and-set, an atomic batch's checks) are decided when the call is
//! made, under the store's lock: the in-memory store serves tests, which exercise the
//! rules; ordering concurrent conditional writes is PostgreSQL's row locks' job.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::kv::{
    authorize_kv_read, authorize_kv_write, check_kv_value, incremented, kv_event,
};
use picloud_shared::{
    AppId, CollectionInfo, CollectionName, KvAtomic, KvCondition, KvEntry, KvIncrement, KvKey,
    KvListOptions, KvMutation, KvOp, KvPage, KvService, KvVersioned, ServiceContext, ServiceError,
    ServiceEvent, ServiceEventEmitter, UnitOfWork,
};
use serde_json::Value;

use crate::memory::{lock, now};
use crate::outbox::InMemoryTx;

/// A stored value, when it was written and its version.
type Stored = (Value, DateTime<Utc>, i64);
type Collection = BTreeMap<KvKey, Stored>;

/// KV entries in memory; every change emits its event through the emitter it was given.
pub struct InMemoryKvService {
    state: Arc<Mutex<State>>,
    emitter: Arc<dyn ServiceEventEmitter<InMemoryTx>>,
}

impl fmt::Debug for InMemoryKvService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKvService").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    // Keyed by app first, so one app's collections are one contiguous range.
    collections: BTreeMap<(AppId, CollectionName), Collection>,
    /// The last version handed out, for every key alike (as the database's sequence).
    last_version: i64,
}

impl State {
    fn get(&self, app: AppId, collection: &CollectionName, key: &KvKey) -> Option<&Stored> {
        self.collections
            .get(&(app, collection.clone()))
            .and_then(|entries| entries.get(key))
    }

    fn version(&self, app: AppId, collection: &CollectionName, key: &KvKey) -> Option<i64> {
        self.get(app, collection, key)
            .map(|(_, _, version)| *version)
    }

    fn put(&mut self, app: AppId, collection: &CollectionName, key: &KvKey, value: Value) -> i64 {
        self.last_version += 1;
        let version = self.last_version;
        self.collections
            .entry((app, collection.clone()))
            .or_default()
            .insert(key.clone(), (value, now(), version));
        version
    }

    fn remove(&mut self, app: AppId, collection: &CollectionName, key: &KvKey) -> bool {
        let id = (app, collection.clone());
        let Some(entries) = self.collections.get_mut(&id) else {
            return false;
        };
        let removed = entries.remove(key).is_some();
        // A collection exists only while it holds keys, as in the table.
        if entries.is_empty() {
            self.collections.remove(&id);
        }
        removed
    }
}

impl InMemoryKvService {
    /// An empty store whose changes emit through `emitter`.
    pub fn new(emitter: Arc<dyn ServiceEventEmitter<InMemoryTx>>) -> Self {
        Self {
            state: Arc::default(),
            emitter,
        }
    }

    /// Emits `events` and commits them with the change `apply` makes under the store's
    /// lock; what `apply` returned.
    async fn change<T: Send + 'static>(
        &self,
        events: Vec<ServiceEvent>,
        apply: impl FnOnce(&mut State) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let mut change = UnitOfWork::new(InMemoryTx::new(), self.emitter.as_ref());
        let outcome: Arc<Mutex<Option<T>>> = Arc::default();
        let (state, slot) = (Arc::clone(&self.state), Arc::clone(&outcome));
        change.tx().stage(move || {
            let applied = apply(&mut lock(&state));
            *lock(&slot) = Some(applied);
        });
        for event in &events {
            change.emit(event).await?;
        }
        change.commit().await?;
        lock(&outcome)
            .take()
            .ok_or_else(|| ServiceError::Internal("an in-memory change did not apply".to_owned()))
    }
}

/// The changes a batch makes (its increments already summed into sets) and the events
/// they emit.
type Plan = (Vec<KvMutation>, Vec<ServiceEvent>);

/// What a batch's mutations do to `state`, and the events they emit, when its checks
/// hold against `state`; `None` when they do not.
fn plan(
    state: &State,
    ctx: &ServiceContext,
    batch: &KvAtomic,
) -> Result<Option<Plan>, ServiceError> {
    let app = ctx.app_id;
    if batch
        .checks
        .iter()
        .any(|check| state.version(app, &check.collection, &check.key) != check.version)
    {
        return Ok(None);
    }
    // The batch's own view of each key it changes, so later changes see earlier ones.
    let mut view: BTreeMap<(CollectionName, KvKey), Option<Value>> = BTreeMap::new();
    let mut applied = Vec::new();
    let mut events = Vec::new();
    for mutation in &batch.mutations {
        let (collection, key) = mutation.target();
        let id = (collection.clone(), key.clone());
        let current = view
            .entry(id.clone())
            .or_insert_with(|| state.get(app, collection, key).map(|(v, _, _)| v.clone()));
        match mutation {
            KvMutation::Set { value, .. } => {
                *current = Some(value.clone());
                applied.push(mutation.clone());
                events.push(kv_event(
                    ctx,
                    collection,
                    key,
                    KvOp::Set,
                    Some(value.clone()),
                ));
            }
            KvMutation::Incr { by, .. } => {
                let value = incremented(key, current.as_ref(), *by)?;
                *current = Some(value.clone());
                applied.push(KvMutation::Set {
                    collection: collection.clone(),
                    key: key.clone(),
                    value: value.clone(),
                });
                events.push(kv_event(ctx, collection, key, KvOp::Set, Some(value)));
            }
            KvMutation::Delete { .. } => {
                if current.take().is_some() {
                    applied.push(mutation.clone());
                    events.push(kv_event(ctx, collection, key, KvOp::Delete, None));
                }
            }
        }
    }
    Ok(Some((applied, events)))
}

#[async_trait]
impl KvService for InMemoryKvService {
    async fn get(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<Value>, ServiceError> {
        authorize_kv_read(ctx)?;
        let state = lock(&self.state);
        Ok(state
            .get(ctx.app_id, collection, key)
            .map(|(value, _, _)| value.clone()))
    }

    async fn get_entry(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<Option<KvVersioned>, ServiceError> {
        authorize_kv_read(ctx)?;
        let state = lock(&self.state);
        Ok(state
            .get(ctx.app_id, collection, key)
            .map(|(value, _, version)| KvVersioned {
                value: value.clone(),
                version: *version,
            }))
    }

    async fn set(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
    ) -> Result<i64, ServiceError> {
        authorize_kv_write(ctx)?;
        check_kv_value(key, &value)?;
        let event = kv_event(ctx, collection, key, KvOp::Set, Some(value.clone()));
        let (app, collection, key) = (ctx.app_id, collection.clone(), key.clone());
        self.change(vec![event], move |state| {
            state.put(app, &collection, &key, value)
        })
        .await
    }

    async fn set_if(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
        condition: KvCondition,
    ) -> Result<Option<i64>, ServiceError> {
        authorize_kv_write(ctx)?;
        authorize_kv_read(ctx)?;
        check_kv_value(key, &value)?;
        let holds = |state: &State| {
            let version = state.version(ctx.app_id, collection, key);
            match condition {
                KvCondition::IfVersion(wanted) => version == Some(wanted),
                KvCondition::IfAbsent => version.is_none(),
            }
        };
        if !holds(&lock(&self.state)) {
            return Ok(None);
        }
        let event = kv_event(ctx, collection, key, KvOp::Set, Some(value.clone()));
        let (app, collection, key) = (ctx.app_id, collection.clone(), key.clone());
        self.change(vec![event], move |state| {
            state.put(app, &collection, &key, value)
        })
        .await
        .map(Some)
    }

    async fn incr(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        by: KvIncrement,
    ) -> Result<KvVersioned, ServiceError> {
        authorize_kv_write(ctx)?;
        let value = {
            let state = lock(&self.state);
            let current = state.get(ctx.app_id, collection, key).map(|(v, _, _)| v);
            incremented(key, current, by)?
        };
        let event = kv_event(ctx, collection, key, KvOp::Set, Some(value.clone()));
        let (app, collection, key) = (ctx.app_id, collection.clone(), key.clone());
        let stored = value.clone();
        let version = self
            .change(vec![event], move |state| {
                state.put(app, &collection, &key, stored)
            })
            .await?;
        Ok(KvVersioned { value, version })
    }

    async fn commit(&self, ctx: &ServiceContext, batch: KvAtomic) -> Result<bool, ServiceError> {
        authorize_kv_write(ctx)?;
        if !batch.checks.is_empty() {
            authorize_kv_read(ctx)?;
        }
        batch.validate()?;
        let planned = plan(&lock(&self.state), ctx, &batch)?;
        let Some((applied, events)) = planned else {
            return Ok(false);
        };
        let app = ctx.app_id;
        self.change(events, move |state| {
            for mutation in applied {
                match mutation {
                    KvMutation::Set {
                        collection,
                        key,
                        value,
                    } => {
                        state.put(app, &collection, &key, value);
                    }
                    KvMutation::Delete { collection, key } => {
                        state.remove(app, &collection, &key);
                    }
                    // Planned into the sets they come to.
                    KvMutation::Incr { .. } => {}
                }
            }
        })
        .await?;
        Ok(true)
    }

    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<bool, ServiceError> {
        authorize_kv_write(ctx)?;
        if lock(&self.state).get(ctx.app_id, collection, key).is_none() {
            // Nothing changes, so there is nothing to tell any trigger.
            return Ok(false);
        }
        let event = kv_event(ctx, collection, key, KvOp::Delete, None);
        let (app, collection, key) = (ctx.app_id, collection.clone(), key.clone());
        self.change(vec![event], move |state| {
            state.remove(app, &collection, &key)
        })
        .await?;
        Ok(true)
    }

    async fn list(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        options: KvListOptions,
    ) -> Result<KvPage, ServiceError> {
        authorize_kv_read(ctx)?;
        let bounds = options.bounds()?;
        let limit = usize::try_from(bounds.limit).unwrap_or(usize::MAX);
        let state = lock(&self.state);
        let entries: Vec<(KvEntry, usize)> = state
            .collections
            .get(&(ctx.app_id, collection.clone()))
            .into_iter()
            .flatten()
            .filter(|(key, _)| bounds.contains(key.as_str()))
            .take(limit + 1)
            .map(|(key, (value, updated_at, version))| {
                let entry = KvEntry {
                    key: key.clone(),
                    value: value.clone(),
                    version: *version,
                    updated_at: *updated_at,
                };
                // The size the page's byte budget counts: the value as JSON text.
                (entry, value.to_string().len())
            })
            .collect();
        Ok(KvPage::from_overfetch(entries, bounds.limit))
    }

    async fn collections(&self, ctx: &ServiceContext) -> Result<Vec<CollectionInfo>, ServiceError> {
        authorize_kv_read(ctx)?;
        let state = lock(&self.state);
        Ok(state
            .collections
            .iter()
            .filter(|((app, _), _)| *app == ctx.app_id)
            .map(|((_, name), entries)| CollectionInfo {
                name: name.clone(),
                keys: u64::try_from(entries.len()).unwrap_or(u64::MAX),
            })
            .collect())
    }
}

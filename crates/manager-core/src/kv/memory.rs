//! [`KvService`] in memory, with the same validation, limits, ordering and access checks
//! as the PostgreSQL one; a change and its events commit together through the same
//! [`UnitOfWork`] as there, over an [`InMemoryTx`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::kv::{authorize_kv_read, authorize_kv_write, check_kv_value, kv_event};
use picloud_shared::{
    AppId, CollectionInfo, CollectionName, KvEntry, KvKey, KvListOptions, KvOp, KvPage, KvService,
    ServiceContext, ServiceError, ServiceEventEmitter, UnitOfWork,
};
use serde_json::Value;

use crate::memory::{lock, now};
use crate::outbox::InMemoryTx;

type Collection = BTreeMap<KvKey, (Value, DateTime<Utc>)>;

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
}

impl InMemoryKvService {
    /// An empty store whose changes emit through `emitter`.
    pub fn new(emitter: Arc<dyn ServiceEventEmitter<InMemoryTx>>) -> Self {
        Self {
            state: Arc::default(),
            emitter,
        }
    }
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
            .collections
            .get(&(ctx.app_id, collection.clone()))
            .and_then(|entries| entries.get(key))
            .map(|(value, _)| value.clone()))
    }

    async fn set(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
        value: Value,
    ) -> Result<(), ServiceError> {
        authorize_kv_write(ctx)?;
        check_kv_value(key, &value)?;
        let mut change = UnitOfWork::new(InMemoryTx::new(), self.emitter.as_ref());
        let (state, id, stored_key, stored) = (
            Arc::clone(&self.state),
            (ctx.app_id, collection.clone()),
            key.clone(),
            value.clone(),
        );
        change.tx().stage(move || {
            lock(&state)
                .collections
                .entry(id)
                .or_default()
                .insert(stored_key, (stored, now()));
        });
        change
            .emit(&kv_event(ctx, collection, key, KvOp::Set, Some(value)))
            .await?;
        change.commit().await
    }

    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<bool, ServiceError> {
        authorize_kv_write(ctx)?;
        let id = (ctx.app_id, collection.clone());
        let present = lock(&self.state)
            .collections
            .get(&id)
            .is_some_and(|entries| entries.contains_key(key));
        if !present {
            // Nothing changes, so there is nothing to tell any trigger.
            return Ok(false);
        }
        let mut change = UnitOfWork::new(InMemoryTx::new(), self.emitter.as_ref());
        let (state, removed) = (Arc::clone(&self.state), key.clone());
        change.tx().stage(move || {
            let mut state = lock(&state);
            if let Some(entries) = state.collections.get_mut(&id) {
                entries.remove(&removed);
                // A collection exists only while it holds keys, as in the table.
                if entries.is_empty() {
                    state.collections.remove(&id);
                }
            }
        });
        change
            .emit(&kv_event(ctx, collection, key, KvOp::Delete, None))
            .await?;
        change.commit().await?;
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
            .map(|(key, (value, updated_at))| {
                let entry = KvEntry {
                    key: key.clone(),
                    value: value.clone(),
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

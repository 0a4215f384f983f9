//! [`KvService`] in memory, with the same validation, limits, ordering and access checks
//! as the PostgreSQL one; the events it would emit are kept for tests to read.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::kv::{authorize_kv_read, authorize_kv_write, check_kv_value, kv_event};
use picloud_shared::{
    AppId, CollectionInfo, CollectionName, KvEntry, KvKey, KvListOptions, KvOp, KvPage, KvService,
    ServiceContext, ServiceError, ServiceEvent,
};
use serde_json::Value;

use crate::memory::{lock, now};

type Collection = BTreeMap<KvKey, (Value, DateTime<Utc>)>;

/// KV entries in memory. A write and its event are recorded under one lock, so a reader
/// never sees one without the other.
#[derive(Debug, Default)]
pub struct InMemoryKvService {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    // Keyed by app first, so one app's collections are one contiguous range.
    collections: BTreeMap<(AppId, CollectionName), Collection>,
    events: Vec<ServiceEvent>,
}

impl InMemoryKvService {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event emitted so far, oldest first.
    pub fn events(&self) -> Vec<ServiceEvent> {
        lock(&self.state).events.clone()
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
        let mut state = lock(&self.state);
        state
            .collections
            .entry((ctx.app_id, collection.clone()))
            .or_default()
            .insert(key.clone(), (value.clone(), now()));
        state
            .events
            .push(kv_event(ctx, collection, key, KvOp::Set, Some(value)));
        Ok(())
    }

    async fn delete(
        &self,
        ctx: &ServiceContext,
        collection: &CollectionName,
        key: &KvKey,
    ) -> Result<bool, ServiceError> {
        authorize_kv_write(ctx)?;
        let mut state = lock(&self.state);
        let id = (ctx.app_id, collection.clone());
        let Some(entries) = state.collections.get_mut(&id) else {
            return Ok(false);
        };
        if entries.remove(key).is_none() {
            return Ok(false);
        }
        // A collection exists only while it holds keys, as in the table.
        if entries.is_empty() {
            state.collections.remove(&id);
        }
        state
            .events
            .push(kv_event(ctx, collection, key, KvOp::Delete, None));
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
        let mut entries: Vec<KvEntry> = state
            .collections
            .get(&(ctx.app_id, collection.clone()))
            .into_iter()
            .flatten()
            .filter(|(key, _)| bounds.contains(key.as_str()))
            .take(limit + 1)
            .map(|(key, (value, updated_at))| KvEntry {
                key: key.clone(),
                value: value.clone(),
                updated_at: *updated_at,
            })
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more {
            entries.last().map(|e| e.key.as_str().to_owned())
        } else {
            None
        };
        Ok(KvPage {
            entries,
            next_cursor,
        })
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

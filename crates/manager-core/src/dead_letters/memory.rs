//! [`DeadLetterRepository`] and [`AbandonedExecutionRepository`] in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, DeadLetterId, ScriptId, TriggerId};
use serde_json::Value;

use crate::{
    dead_letters::{
        AbandonedExecutionRepository, DeadLetter, DeadLetterActionError, DeadLetterRepository,
        ListDeadLetters, NewDeadLetter, Resolution,
    },
    repository::RepoResult,
    triggers::TriggerRepository,
};
use crate::{
    memory::{InMemoryStore, lock, now, stored},
    triggers::InMemoryTriggerRepository,
};

/// An event a replay enqueued: what PostgreSQL would have written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueuedReplay {
    /// The app.
    pub app_id: AppId,
    /// The trigger it goes to.
    pub trigger_id: TriggerId,
    /// The trigger's script.
    pub script_id: ScriptId,
    /// The original event.
    pub event: Value,
    /// The original depth.
    pub depth: u32,
}

/// Dead letters beside an [`InMemoryStore`] and a trigger repository: a dead letter of a
/// deleted app disappears, and one whose trigger is deleted loses its `trigger_id`, as the
/// foreign keys make it in PostgreSQL. Replays are kept in a list, standing in for the
/// outbox.
#[derive(Debug)]
pub struct InMemoryDeadLetterRepository {
    store: InMemoryStore,
    triggers: Arc<InMemoryTriggerRepository>,
    letters: Mutex<BTreeMap<DeadLetterId, DeadLetter>>,
    replays: Mutex<Vec<EnqueuedReplay>>,
}

impl InMemoryDeadLetterRepository {
    /// A repository whose dead letters belong to the apps of `store` and name the triggers
    /// of `triggers`.
    pub fn new(store: InMemoryStore, triggers: Arc<InMemoryTriggerRepository>) -> Self {
        Self {
            store,
            triggers,
            letters: Mutex::new(BTreeMap::new()),
            replays: Mutex::new(Vec::new()),
        }
    }

    /// Every event replays have enqueued, oldest first.
    pub fn replays(&self) -> Vec<EnqueuedReplay> {
        lock(&self.replays).clone()
    }

    /// Stores a dead letter at once (what `record` does, without awaiting).
    pub(crate) fn record_now(&self, new: NewDeadLetter) -> RepoResult<DeadLetter> {
        if !self.store.lock().apps.contains_key(&new.app_id) {
            return Err(crate::repository::RepoError::NotFound {
                what: format!("app {}", new.app_id),
            });
        }
        let letter = DeadLetter {
            id: DeadLetterId::new(),
            app_id: new.app_id,
            trigger_id: new.trigger_id,
            trigger_kind: new.trigger_kind,
            script_id: new.script_id,
            event: new.event,
            depth: new.depth,
            attempts: new.attempts,
            last_error: new.last_error,
            failed_at: now(),
            resolution: None,
            resolved_at: None,
        };
        lock(&self.letters).insert(letter.id, letter.clone());
        Ok(letter)
    }

    /// Sets a resolution directly, as a dispatcher settling a handler's outcome does.
    pub fn resolve(&self, id: DeadLetterId, resolution: Resolution) {
        if let Some(letter) = lock(&self.letters).get_mut(&id) {
            letter.resolution = Some(resolution);
            letter.resolved_at = Some(now());
        }
    }

    /// The dead letters still alive, with the triggers a deletion would have unset
    /// cleared. The trigger lookups happen before the letters are locked, so locks are
    /// never held in two orders.
    async fn live(
        &self,
    ) -> RepoResult<std::sync::MutexGuard<'_, BTreeMap<DeadLetterId, DeadLetter>>> {
        let named: Vec<TriggerId> = lock(&self.letters)
            .values()
            .filter_map(|l| l.trigger_id)
            .collect();
        let mut gone = Vec::new();
        for trigger in named {
            if self.triggers.get(trigger).await?.is_none() {
                gone.push(trigger);
            }
        }
        let apps: Vec<AppId> = self.store.lock().apps.keys().copied().collect();
        let mut letters = lock(&self.letters);
        letters.retain(|_, l| apps.contains(&l.app_id));
        for letter in letters.values_mut() {
            if letter.trigger_id.is_some_and(|t| gone.contains(&t)) {
                letter.trigger_id = None;
            }
        }
        Ok(letters)
    }

    /// The dead letter if an operator may still act on it.
    async fn actionable(&self, id: DeadLetterId) -> Result<DeadLetter, DeadLetterActionError> {
        let letter = self
            .live()
            .await?
            .get(&id)
            .cloned()
            .ok_or(DeadLetterActionError::NotFound(id))?;
        match letter.resolution {
            Some(resolution) if resolution.is_final() => {
                Err(DeadLetterActionError::AlreadyResolved { id, resolution })
            }
            _ => Ok(letter),
        }
    }

    /// Resolves the dead letter if it is still open, checking and changing it under one
    /// lock so that two operators cannot both act on it; `then` runs under that lock too.
    fn close(
        &self,
        id: DeadLetterId,
        resolution: Resolution,
        then: impl FnOnce(&DeadLetter),
    ) -> Result<DeadLetter, DeadLetterActionError> {
        let mut letters = lock(&self.letters);
        let letter = letters
            .get_mut(&id)
            .ok_or(DeadLetterActionError::NotFound(id))?;
        if let Some(current) = letter.resolution.filter(Resolution::is_final) {
            return Err(DeadLetterActionError::AlreadyResolved {
                id,
                resolution: current,
            });
        }
        letter.resolution = Some(resolution);
        letter.resolved_at = Some(now());
        then(letter);
        Ok(letter.clone())
    }
}

#[async_trait]
impl DeadLetterRepository for InMemoryDeadLetterRepository {
    async fn record(&self, new: NewDeadLetter) -> RepoResult<DeadLetter> {
        self.record_now(new)
    }

    async fn get(&self, id: DeadLetterId) -> RepoResult<Option<DeadLetter>> {
        Ok(self.live().await?.get(&id).cloned())
    }

    async fn list(&self, query: ListDeadLetters) -> RepoResult<Vec<DeadLetter>> {
        let letters = self.live().await?;
        let mut matching: Vec<&DeadLetter> = letters
            .values()
            .filter(|l| l.app_id == query.app)
            .filter(|l| !query.unresolved_only || l.resolution.is_none())
            .filter(|l| {
                query
                    .before
                    .is_none_or(|c| (l.failed_at, l.id) < (c.failed_at, c.id))
            })
            .collect();
        matching.sort_by_key(|l| std::cmp::Reverse((l.failed_at, l.id)));
        Ok(matching
            .into_iter()
            .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn count_unresolved(&self, app: AppId) -> RepoResult<u64> {
        let letters = self.live().await?;
        let count = letters
            .values()
            .filter(|l| l.app_id == app && l.resolution.is_none())
            .count();
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn replay(&self, id: DeadLetterId) -> Result<DeadLetter, DeadLetterActionError> {
        let letter = self.actionable(id).await?;
        let trigger_id = letter
            .trigger_id
            .ok_or(DeadLetterActionError::NoTrigger(id))?;
        let trigger = self
            .triggers
            .get(trigger_id)
            .await?
            .filter(|t| t.app_id == letter.app_id)
            .ok_or(DeadLetterActionError::NoTrigger(id))?;
        self.close(id, Resolution::Replayed, |letter| {
            lock(&self.replays).push(EnqueuedReplay {
                app_id: letter.app_id,
                trigger_id,
                script_id: trigger.script_id,
                event: letter.event.clone(),
                depth: letter.depth.max(1),
            });
        })
    }

    async fn ignore(&self, id: DeadLetterId) -> Result<DeadLetter, DeadLetterActionError> {
        self.actionable(id).await?;
        self.close(id, Resolution::Ignored, |_| {})
    }

    async fn prune_resolved_before(&self, cutoff: DateTime<Utc>) -> RepoResult<u64> {
        let mut letters = lock(&self.letters);
        let before = letters.len();
        letters.retain(|_, l| l.resolved_at.is_none_or(|at| at >= cutoff));
        Ok(u64::try_from(before - letters.len()).unwrap_or(u64::MAX))
    }
}

/// Abandoned results in memory: only their times, which is all pruning looks at.
#[derive(Debug, Default)]
pub struct InMemoryAbandonedExecutionRepository {
    abandoned_at: Mutex<Vec<DateTime<Utc>>>,
}

impl InMemoryAbandonedExecutionRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a result abandoned at `at`.
    pub fn add(&self, at: DateTime<Utc>) {
        lock(&self.abandoned_at).push(stored(at));
    }

    /// How many are stored.
    pub fn len(&self) -> usize {
        lock(&self.abandoned_at).len()
    }

    /// Whether none is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl AbandonedExecutionRepository for InMemoryAbandonedExecutionRepository {
    async fn prune_before(&self, cutoff: DateTime<Utc>) -> RepoResult<u64> {
        let mut all = lock(&self.abandoned_at);
        let before = all.len();
        all.retain(|at| *at >= cutoff);
        Ok(u64::try_from(before - all.len()).unwrap_or(u64::MAX))
    }
}

//! [`TriggerRepository`] in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use picloud_shared::{AppId, EventSubject, TriggerId};

use crate::memory::store::Tables;
use crate::memory::{InMemoryStore, lock, now};
use crate::{
    repository::{RepoError, RepoResult},
    triggers::{ListTriggers, NewTrigger, Target, Trigger, TriggerRepository, TriggerUpdate},
};

/// Triggers beside an [`InMemoryStore`]: the app, script and user they reference must
/// exist there, and a trigger whose app, script or user is deleted from it disappears, as
/// the cascading foreign keys make it in PostgreSQL.
#[derive(Debug)]
pub struct InMemoryTriggerRepository {
    store: InMemoryStore,
    triggers: Mutex<BTreeMap<TriggerId, Trigger>>,
}

impl InMemoryTriggerRepository {
    /// A repository whose triggers reference the apps, scripts and users of `store`.
    pub fn new(store: InMemoryStore) -> Self {
        Self {
            store,
            triggers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs `f` on the store's tables and the triggers still alive (those a cascade would
    /// have deleted are dropped first). Locks are always taken store first, then triggers.
    fn with_live<R>(&self, f: impl FnOnce(&Tables, &mut BTreeMap<TriggerId, Trigger>) -> R) -> R {
        let tables = self.store.lock();
        let mut triggers = lock(&self.triggers);
        triggers.retain(|_, trigger| references_exist(&tables, trigger));
        f(&tables, &mut triggers)
    }
}

impl InMemoryTriggerRepository {
    /// The enabled triggers of `app` that `subject` concerns, oldest first, by the kinds'
    /// own matcher: what the in-memory emitter fans an event out to.
    pub(crate) fn targets_now(&self, app: AppId, subject: &EventSubject) -> Vec<Target> {
        let mut matching: Vec<Trigger> = self.with_live(|_, triggers| {
            triggers
                .values()
                .filter(|t| t.app_id == app && t.enabled && t.details.matches(subject))
                .cloned()
                .collect()
        });
        sort(&mut matching);
        matching
            .into_iter()
            .map(|t| Target {
                trigger_id: t.id,
                script_id: t.script_id,
            })
            .collect()
    }
}

fn references_exist(tables: &Tables, trigger: &Trigger) -> bool {
    tables.apps.contains_key(&trigger.app_id)
        && tables.users.contains_key(&trigger.registered_by)
        && tables
            .scripts
            .get(&trigger.script_id)
            .is_some_and(|s| s.app_id == trigger.app_id)
}

/// Creation then id, as the PostgreSQL query orders.
fn sort(triggers: &mut [Trigger]) {
    triggers.sort_by_key(|t| (t.created_at, t.id));
}

fn not_found(id: TriggerId) -> RepoError {
    RepoError::NotFound {
        what: format!("trigger {id}"),
    }
}

#[async_trait]
impl TriggerRepository for InMemoryTriggerRepository {
    async fn create(&self, new: NewTrigger) -> RepoResult<Trigger> {
        self.with_live(|tables, triggers| {
            let script_in_app = tables
                .scripts
                .get(&new.script_id)
                .is_some_and(|s| s.app_id == new.app_id);
            if !script_in_app {
                return Err(RepoError::NotFound {
                    what: format!("script {} in app {}", new.script_id, new.app_id),
                });
            }
            if !tables.users.contains_key(&new.registered_by) {
                return Err(RepoError::NotFound {
                    what: format!("user {}", new.registered_by),
                });
            }
            let details = new.details;
            if new.retry.validate().is_err() {
                // What the schema's CHECK constraints refuse in PostgreSQL.
                return Err(RepoError::Invalid(
                    "value refused by a database constraint".to_owned(),
                ));
            }
            let at = now();
            let trigger = Trigger {
                id: TriggerId::new(),
                app_id: new.app_id,
                script_id: new.script_id,
                enabled: new.enabled,
                registered_by: new.registered_by,
                retry: new.retry,
                details,
                created_at: at,
                updated_at: at,
            };
            triggers.insert(trigger.id, trigger.clone());
            Ok(trigger)
        })
    }

    async fn get(&self, id: TriggerId) -> RepoResult<Option<Trigger>> {
        Ok(self.with_live(|_, triggers| triggers.get(&id).cloned()))
    }

    async fn list(&self, query: ListTriggers) -> RepoResult<Vec<Trigger>> {
        let mut matching: Vec<Trigger> = self.with_live(|_, triggers| {
            triggers
                .values()
                .filter(|t| {
                    query
                        .apps
                        .as_ref()
                        .is_none_or(|apps| apps.contains(&t.app_id))
                })
                .filter(|t| query.kind.is_none_or(|kind| t.kind() == kind))
                .filter(|t| query.after.is_none_or(|after| (t.created_at, t.id) > after))
                .cloned()
                .collect()
        });
        sort(&mut matching);
        matching.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
        Ok(matching)
    }

    async fn update(&self, id: TriggerId, update: TriggerUpdate) -> RepoResult<Trigger> {
        self.with_live(|_, triggers| {
            let trigger = triggers.get_mut(&id).ok_or_else(|| not_found(id))?;
            if let Some(details) = &update.details
                && details.kind() != trigger.kind()
            {
                return Err(RepoError::Invalid(format!(
                    "trigger {id} is a {} trigger; its details cannot become {}",
                    trigger.kind(),
                    details.kind()
                )));
            }
            if update.retry.is_some_and(|retry| retry.validate().is_err()) {
                return Err(RepoError::Invalid(
                    "value refused by a database constraint".to_owned(),
                ));
            }
            if let Some(enabled) = update.enabled {
                trigger.enabled = enabled;
            }
            if let Some(retry) = update.retry {
                trigger.retry = retry;
            }
            if let Some(details) = update.details {
                trigger.details = details;
            }
            trigger.updated_at = now();
            Ok(trigger.clone())
        })
    }

    async fn delete(&self, id: TriggerId) -> RepoResult<()> {
        self.with_live(|_, triggers| {
            triggers
                .remove(&id)
                .map(|_| ())
                .ok_or_else(|| not_found(id))
        })
    }

    async fn targets(&self, app: AppId, subject: &EventSubject) -> RepoResult<Vec<Target>> {
        Ok(self.targets_now(app, subject))
    }
}

//! [`ScriptRepository`] in memory.

use std::sync::Arc;

use async_trait::async_trait;
use picloud_shared::{AppSlug, Script, ScriptId, ScriptName};

use crate::{
    apps::InMemoryAppRepository,
    memory::{InMemoryStore, now},
};
use crate::{
    repository::{RepoError, RepoResult},
    scripts::{ListScripts, NewScript, ScriptRepository, ScriptSummary, ScriptUpdate},
};

/// Scripts in the [`InMemoryStore`] of an app repository, so the app reference and
/// by-slug lookups behave as the foreign key and join do in PostgreSQL.
#[derive(Debug, Clone)]
pub struct InMemoryScriptRepository {
    store: InMemoryStore,
}

impl InMemoryScriptRepository {
    /// A repository whose scripts belong to the apps of `apps` (sharing its store).
    pub fn new(apps: Arc<InMemoryAppRepository>) -> Self {
        Self::over(apps.store().clone())
    }

    /// A repository over a shared store.
    pub fn over(store: InMemoryStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl ScriptRepository for InMemoryScriptRepository {
    async fn create(&self, new: NewScript) -> RepoResult<Script> {
        let mut tables = self.store.lock();
        if !tables.apps.contains_key(&new.app_id) {
            return Err(RepoError::NotFound {
                what: format!("app {}", new.app_id),
            });
        }
        if tables
            .scripts
            .values()
            .any(|s| s.app_id == new.app_id && s.name == new.name)
        {
            return Err(RepoError::Conflict {
                what: format!("script '{}' in app {}", new.name, new.app_id),
            });
        }
        let at = now();
        let script = Script {
            id: ScriptId::new(),
            app_id: new.app_id,
            name: new.name,
            source: new.source,
            limits: new.limits,
            version: 1,
            require_token: new.require_token,
            created_at: at,
            updated_at: at,
        };
        tables.scripts.insert(script.id, script.clone());
        Ok(script)
    }

    async fn get(&self, id: ScriptId) -> RepoResult<Option<Script>> {
        Ok(self.store.lock().scripts.get(&id).cloned())
    }

    async fn get_by_name(&self, app: &AppSlug, name: &ScriptName) -> RepoResult<Option<Script>> {
        let tables = self.store.lock();
        let Some(app_id) = tables.app_id_of(app) else {
            return Ok(None);
        };
        Ok(tables
            .scripts
            .values()
            .find(|s| s.app_id == app_id && &s.name == name)
            .cloned())
    }

    async fn list(&self, query: ListScripts) -> RepoResult<Vec<ScriptSummary>> {
        let tables = self.store.lock();
        let mut matching: Vec<&Script> = tables
            .scripts
            .values()
            .filter(|s| {
                query
                    .apps
                    .as_ref()
                    .is_none_or(|apps| apps.contains(&s.app_id))
            })
            .collect();
        // Byte order, as the PostgreSQL query sorts with `COLLATE "C"`.
        matching.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(matching
            .into_iter()
            .filter(|s| {
                query.after.as_ref().is_none_or(|(name, id)| {
                    (s.name.as_str(), s.id.as_uuid()) > (name.as_str(), id.as_uuid())
                })
            })
            .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
            .map(ScriptSummary::from)
            .collect())
    }

    async fn update(&self, id: ScriptId, update: ScriptUpdate) -> RepoResult<Script> {
        if update.is_empty() {
            return Err(RepoError::Invalid("the update changes nothing".to_owned()));
        }
        let mut tables = self.store.lock();
        let not_found = || RepoError::NotFound {
            what: format!("script {id}"),
        };
        let Some(current) = tables.scripts.get(&id) else {
            return Err(not_found());
        };
        if let Some(name) = &update.name
            && tables
                .scripts
                .values()
                .any(|s| s.id != id && s.app_id == current.app_id && &s.name == name)
        {
            return Err(RepoError::Conflict {
                what: format!("script '{name}' in the same app"),
            });
        }
        let script = tables.scripts.get_mut(&id).ok_or_else(not_found)?;
        if let Some(name) = update.name {
            script.name = name;
        }
        if let Some(source) = update.source {
            script.source = source;
        }
        if let Some(limits) = update.limits {
            script.limits = limits;
        }
        if let Some(require_token) = update.require_token {
            script.require_token = require_token;
        }
        script.version += 1;
        script.updated_at = now();
        Ok(script.clone())
    }

    async fn delete(&self, id: ScriptId) -> RepoResult<()> {
        match self.store.lock().scripts.remove(&id) {
            Some(_) => Ok(()),
            None => Err(RepoError::NotFound {
                what: format!("script {id}"),
            }),
        }
    }
}

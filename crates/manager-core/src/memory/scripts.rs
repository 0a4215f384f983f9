//! [`ScriptRepository`] in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use picloud_shared::{AppSlug, Script, ScriptId, ScriptName};

use super::{InMemoryAppRepository, lock, now};
use crate::repo::{
    ListScripts, NewScript, Page, RepoError, RepoResult, ScriptRepository, ScriptSummary,
    ScriptUpdate,
};

/// Scripts held in a map. Shares the app repository so the app reference and by-slug
/// lookups behave as the foreign key and join do in PostgreSQL.
#[derive(Debug)]
pub struct InMemoryScriptRepository {
    apps: Arc<InMemoryAppRepository>,
    scripts: Mutex<BTreeMap<ScriptId, Script>>,
}

impl InMemoryScriptRepository {
    /// An empty repository whose scripts belong to `apps`.
    pub fn new(apps: Arc<InMemoryAppRepository>) -> Self {
        Self {
            apps,
            scripts: Mutex::new(BTreeMap::new()),
        }
    }
}

#[async_trait]
impl ScriptRepository for InMemoryScriptRepository {
    async fn create(&self, new: NewScript) -> RepoResult<Script> {
        if self.apps.slug_of(new.app_id).is_none() {
            return Err(RepoError::NotFound {
                what: format!("app {}", new.app_id),
            });
        }
        let mut scripts = lock(&self.scripts);
        if scripts
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
            created_at: at,
            updated_at: at,
        };
        scripts.insert(script.id, script.clone());
        Ok(script)
    }

    async fn get(&self, id: ScriptId) -> RepoResult<Option<Script>> {
        Ok(lock(&self.scripts).get(&id).cloned())
    }

    async fn get_by_name(&self, app: &AppSlug, name: &ScriptName) -> RepoResult<Option<Script>> {
        let Some(app_id) = self.apps.id_of(app) else {
            return Ok(None);
        };
        Ok(lock(&self.scripts)
            .values()
            .find(|s| s.app_id == app_id && &s.name == name)
            .cloned())
    }

    async fn list(&self, query: ListScripts) -> RepoResult<Page<ScriptSummary>> {
        let scripts = lock(&self.scripts);
        let mut matching: Vec<&Script> = scripts
            .values()
            .filter(|s| query.app.is_none_or(|app| s.app_id == app))
            .collect();
        // Byte order, as the PostgreSQL query sorts with `COLLATE "C"`.
        matching.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let total = u64::try_from(matching.len()).unwrap_or(u64::MAX);
        let items = matching
            .into_iter()
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
            .map(ScriptSummary::from)
            .collect();
        Ok(Page { items, total })
    }

    async fn update(&self, id: ScriptId, update: ScriptUpdate) -> RepoResult<Script> {
        if update.is_empty() {
            return Err(RepoError::Invalid("the update changes nothing".to_owned()));
        }
        let mut scripts = lock(&self.scripts);
        let Some(current) = scripts.get(&id) else {
            return Err(RepoError::NotFound {
                what: format!("script {id}"),
            });
        };
        if let Some(name) = &update.name
            && scripts
                .values()
                .any(|s| s.id != id && s.app_id == current.app_id && &s.name == name)
        {
            return Err(RepoError::Conflict {
                what: format!("script '{name}' in the same app"),
            });
        }
        let Some(script) = scripts.get_mut(&id) else {
            return Err(RepoError::NotFound {
                what: format!("script {id}"),
            });
        };
        if let Some(name) = update.name {
            script.name = name;
        }
        if let Some(source) = update.source {
            script.source = source;
        }
        if let Some(limits) = update.limits {
            script.limits = limits;
        }
        script.version += 1;
        script.updated_at = now();
        Ok(script.clone())
    }

    async fn delete(&self, id: ScriptId) -> RepoResult<()> {
        match lock(&self.scripts).remove(&id) {
            Some(_) => Ok(()),
            None => Err(RepoError::NotFound {
                what: format!("script {id}"),
            }),
        }
    }
}

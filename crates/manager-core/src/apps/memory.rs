//! [`AppRepository`] in memory.

use async_trait::async_trait;
use picloud_shared::{AppId, AppRole, AppSlug, ScriptId, UserId};

use crate::memory::store::Tables;
use crate::memory::{InMemoryStore, now};
use crate::{
    apps::{App, AppRepository, AppUpdate, ListApps},
    repository::{RepoError, RepoResult},
};

/// Apps in an [`InMemoryStore`], starting with the `default` app as the first migration
/// does.
#[derive(Debug, Clone)]
pub struct InMemoryAppRepository {
    store: InMemoryStore,
}

impl Default for InMemoryAppRepository {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryAppRepository {
    /// A repository over a store of its own holding only the `default` app.
    pub fn new() -> Self {
        Self::over(InMemoryStore::new())
    }

    /// A repository over a shared store.
    pub fn over(store: InMemoryStore) -> Self {
        Self { store }
    }

    /// The store, to build the other repositories over the same data.
    pub fn store(&self) -> &InMemoryStore {
        &self.store
    }

    /// Adds an app without an owner, refusing a slug already in use, as the `apps.slug`
    /// unique index does.
    pub fn add(&self, slug: AppSlug, name: &str) -> RepoResult<App> {
        insert(&mut self.store.lock(), slug, name.to_owned(), None)
    }
}

fn slug_taken(slug: &AppSlug) -> RepoError {
    RepoError::Conflict {
        what: format!("app '{slug}'"),
    }
}

fn slug_reserved(slug: &AppSlug) -> RepoError {
    RepoError::Conflict {
        what: format!("a reservation of slug '{slug}' for the app that used it before a rename"),
    }
}

fn app_not_found(id: AppId) -> RepoError {
    RepoError::NotFound {
        what: format!("app {id}"),
    }
}

fn insert(
    tables: &mut Tables,
    slug: AppSlug,
    name: String,
    owner: Option<UserId>,
) -> RepoResult<App> {
    if tables.app_id_of(&slug).is_some() {
        return Err(slug_taken(&slug));
    }
    if tables.retired_slugs.contains_key(slug.as_str()) {
        return Err(slug_reserved(&slug));
    }
    if let Some(owner) = owner
        && !tables.users.contains_key(&owner)
    {
        return Err(RepoError::NotFound {
            what: format!("user {owner}"),
        });
    }
    let at = now();
    let app = App {
        id: AppId::new(),
        slug,
        name,
        created_at: at,
        updated_at: at,
    };
    tables.apps.insert(app.id, app.clone());
    if let Some(owner) = owner {
        tables.members.insert((app.id, owner), AppRole::Owner);
    }
    Ok(app)
}

#[async_trait]
impl AppRepository for InMemoryAppRepository {
    async fn get(&self, id: AppId) -> RepoResult<Option<App>> {
        Ok(self.store.lock().apps.get(&id).cloned())
    }

    async fn get_by_slug(&self, slug: &AppSlug) -> RepoResult<Option<App>> {
        let tables = self.store.lock();
        Ok(tables
            .app_id_of(slug)
            .and_then(|id| tables.apps.get(&id))
            .cloned())
    }

    async fn create(&self, slug: AppSlug, name: String, owner: Option<UserId>) -> RepoResult<App> {
        insert(&mut self.store.lock(), slug, name, owner)
    }

    async fn list(&self, query: ListApps) -> RepoResult<Vec<App>> {
        let tables = self.store.lock();
        let mut apps: Vec<App> = tables
            .apps
            .values()
            .filter(|a| query.only.as_ref().is_none_or(|only| only.contains(&a.id)))
            .filter(|a| {
                query
                    .after
                    .as_ref()
                    .is_none_or(|after| a.slug.as_str() > after.as_str())
            })
            .cloned()
            .collect();
        apps.sort_by(|a, b| a.slug.as_str().cmp(b.slug.as_str()));
        apps.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
        Ok(apps)
    }

    async fn update(&self, id: AppId, update: AppUpdate) -> RepoResult<App> {
        if update.slug.is_none() && update.name.is_none() {
            return Err(RepoError::Invalid("the update changes nothing".to_owned()));
        }
        let mut tables = self.store.lock();
        if !tables.apps.contains_key(&id) {
            return Err(app_not_found(id));
        }
        if let Some(slug) = &update.slug
            && tables.app_id_of(slug).is_some_and(|other| other != id)
        {
            return Err(slug_taken(slug));
        }
        if let Some(slug) = &update.slug
            && tables
                .retired_slugs
                .get(slug.as_str())
                .is_some_and(|holder| *holder != id)
        {
            return Err(slug_reserved(slug));
        }
        let app = tables.apps.get_mut(&id).ok_or_else(|| app_not_found(id))?;
        let mut retired = None;
        if let Some(slug) = update.slug {
            if app.slug != slug {
                retired = Some(std::mem::replace(&mut app.slug, slug.clone()));
            }
            tables.retired_slugs.remove(slug.as_str());
        }
        let app = tables.apps.get_mut(&id).ok_or_else(|| app_not_found(id))?;
        if let Some(name) = update.name {
            app.name = name;
        }
        app.updated_at = now();
        let app = app.clone();
        if let Some(old) = retired {
            tables.retired_slugs.insert(old.as_str().to_owned(), id);
        }
        Ok(app)
    }

    async fn delete(&self, id: AppId, cascade: bool) -> RepoResult<Vec<ScriptId>> {
        let mut tables = self.store.lock();
        let Some(app) = tables.apps.get(&id) else {
            return Err(app_not_found(id));
        };
        let scripts: Vec<ScriptId> = tables
            .scripts
            .values()
            .filter(|s| s.app_id == id)
            .map(|s| s.id)
            .collect();
        if !scripts.is_empty() && !cascade {
            return Err(RepoError::Conflict {
                what: format!("a script in app '{}'", app.slug),
            });
        }
        for script in &scripts {
            tables.scripts.remove(script);
        }
        tables.members.retain(|(app_id, _), _| *app_id != id);
        tables.tokens.retain(|_, row| row.token.app_id != Some(id));
        tables.retired_slugs.retain(|_, holder| *holder != id);
        tables.apps.remove(&id);
        Ok(scripts)
    }
}

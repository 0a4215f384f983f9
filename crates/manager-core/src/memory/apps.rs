//! [`AppRepository`] in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use picloud_shared::{AppId, AppSlug};

use super::{lock, now};
use crate::DEFAULT_APP_ID;
use crate::repo::{App, AppRepository, RepoError, RepoResult};

/// Apps held in a map, starting with the `default` app as the first migration does.
#[derive(Debug)]
pub struct InMemoryAppRepository {
    apps: Mutex<BTreeMap<AppId, App>>,
}

impl Default for InMemoryAppRepository {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryAppRepository {
    /// A repository holding only the `default` app (id [`DEFAULT_APP_ID`]).
    pub fn new() -> Self {
        let at = now();
        let default = App {
            id: DEFAULT_APP_ID,
            slug: AppSlug::default_app(),
            name: "Default".to_owned(),
            created_at: at,
            updated_at: at,
        };
        Self {
            apps: Mutex::new(BTreeMap::from([(default.id, default)])),
        }
    }

    /// Adds an app, refusing a slug already in use, as the `apps.slug` unique index does.
    pub fn add(&self, slug: AppSlug, name: &str) -> RepoResult<App> {
        let mut apps = lock(&self.apps);
        if apps.values().any(|a| a.slug == slug) {
            return Err(RepoError::Conflict {
                what: format!("app '{slug}'"),
            });
        }
        let at = now();
        let app = App {
            id: AppId::new(),
            slug,
            name: name.to_owned(),
            created_at: at,
            updated_at: at,
        };
        apps.insert(app.id, app.clone());
        Ok(app)
    }

    /// The app's slug, for the script repository's by-name lookups.
    pub(super) fn slug_of(&self, id: AppId) -> Option<AppSlug> {
        lock(&self.apps).get(&id).map(|a| a.slug.clone())
    }

    /// The id behind a slug.
    pub(super) fn id_of(&self, slug: &AppSlug) -> Option<AppId> {
        lock(&self.apps)
            .values()
            .find(|a| &a.slug == slug)
            .map(|a| a.id)
    }
}

#[async_trait]
impl AppRepository for InMemoryAppRepository {
    async fn get(&self, id: AppId) -> RepoResult<Option<App>> {
        Ok(lock(&self.apps).get(&id).cloned())
    }

    async fn get_by_slug(&self, slug: &AppSlug) -> RepoResult<Option<App>> {
        Ok(lock(&self.apps).values().find(|a| &a.slug == slug).cloned())
    }
}

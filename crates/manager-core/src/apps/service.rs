//! The rules every change to an app goes through, whoever asks: the `default` app keeps
//! its slug and cannot be deleted, and a committed rename or deletion is told to the caches
//! that look scripts up by the app's slug (and, for a deletion, to those holding its
//! scripts' compiled code).

use std::sync::Arc;

use picloud_shared::{AppId, AppSlug, ScriptId, UserId};

use super::{App, AppRepository, AppUpdate};
use crate::DEFAULT_APP_ID;
use crate::repository::RepoError;
use crate::scripts::ScriptObservers;

/// Why an app change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppChangeError {
    /// The `default` app's slug cannot change: the friendly execute route of every script
    /// created in it depends on it.
    #[error("the default app's slug cannot change")]
    DefaultSlug,
    /// The `default` app cannot be deleted.
    #[error("the default app cannot be deleted")]
    DefaultApp,
    /// The store refused or failed (`Conflict` for a taken slug or, on delete, an app that
    /// still has scripts without `cascade`).
    #[error(transparent)]
    Store(#[from] RepoError),
}

/// Creates, renames and deletes apps by the rules, and tells the caches.
#[derive(Clone)]
pub struct AppService {
    repo: Arc<dyn AppRepository>,
    observers: ScriptObservers,
}

impl std::fmt::Debug for AppService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppService").finish_non_exhaustive()
    }
}

impl AppService {
    /// A service over `repo`, telling `observers` of renames and deletions.
    pub fn new(repo: Arc<dyn AppRepository>, observers: ScriptObservers) -> Self {
        Self { repo, observers }
    }

    /// The apps themselves, for reads.
    pub fn repo(&self) -> &dyn AppRepository {
        self.repo.as_ref()
    }

    /// Creates an app, with `owner` as its first owner.
    pub async fn create(
        &self,
        slug: AppSlug,
        name: String,
        owner: Option<UserId>,
    ) -> Result<App, AppChangeError> {
        Ok(self.repo.create(slug, name, owner).await?)
    }

    /// Renames an app (slug, display name or both).
    pub async fn update(&self, current: &App, update: AppUpdate) -> Result<App, AppChangeError> {
        if current.id == DEFAULT_APP_ID && update.slug.as_ref().is_some_and(|s| *s != current.slug)
        {
            return Err(AppChangeError::DefaultSlug);
        }
        let app = self.repo.update(current.id, update).await?;
        self.observers.app_changed(current.id);
        Ok(app)
    }

    /// Deletes an app; with `cascade`, its scripts too. Returns the deleted scripts.
    pub async fn delete(&self, id: AppId, cascade: bool) -> Result<Vec<ScriptId>, AppChangeError> {
        if id == DEFAULT_APP_ID {
            return Err(AppChangeError::DefaultApp);
        }
        let deleted = self.repo.delete(id, cascade).await?;
        for script in &deleted {
            self.observers.script_changed(*script);
        }
        self.observers.app_changed(id);
        Ok(deleted)
    }
}

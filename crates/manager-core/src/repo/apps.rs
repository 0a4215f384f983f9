//! Apps: the unit that groups scripts and their data. Only lookups for now; managing apps
//! comes with the apps API.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, AppSlug};

use super::RepoResult;

/// A stored app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Stable id.
    pub id: AppId,
    /// URL-safe, unique slug.
    pub slug: AppSlug,
    /// Display name.
    pub name: String,
    /// When the app was created.
    pub created_at: DateTime<Utc>,
    /// When the app last changed.
    pub updated_at: DateTime<Utc>,
}

/// Reads apps.
#[async_trait]
pub trait AppRepository: Send + Sync {
    /// The app with this id, `None` when there is none.
    async fn get(&self, id: AppId) -> RepoResult<Option<App>>;

    /// The app with this slug, `None` when there is none.
    async fn get_by_slug(&self, slug: &AppSlug) -> RepoResult<Option<App>>;
}

//! Apps: the unit that groups scripts and their data.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;
mod service;

#[cfg(feature = "admin-api")]
pub use http::{
    AppView, AppsState, CreateAppRequest, DeleteAppQuery, MAX_APP_NAME_CHARS, UpdateAppRequest,
};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryAppRepository;
pub use pg::PgAppRepository;
pub use service::{AppChangeError, AppService};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, AppSlug, ScriptId, UserId};

use crate::repository::RepoResult;

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

/// Which apps to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListApps {
    /// `None`: every app (instance admins); `Some`: only these (a user's memberships).
    pub only: Option<Vec<AppId>>,
    /// Most items on the page.
    pub limit: u32,
    /// Only apps whose slug sorts after this one (byte order): the previous page's last.
    pub after: Option<AppSlug>,
}

/// A change to an app; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppUpdate {
    /// A new slug (changes the by-name execute URLs of its scripts).
    pub slug: Option<AppSlug>,
    /// A new display name.
    pub name: Option<String>,
}

/// Stores apps.
#[async_trait]
pub trait AppRepository: Send + Sync {
    /// The app with this id, `None` when there is none.
    async fn get(&self, id: AppId) -> RepoResult<Option<App>>;

    /// The app with this slug, `None` when there is none.
    async fn get_by_slug(&self, slug: &AppSlug) -> RepoResult<Option<App>>;

    /// Creates an app and, in the same transaction, makes `owner` (when given) its owner;
    /// `Conflict` when the slug is taken.
    async fn create(&self, slug: AppSlug, name: String, owner: Option<UserId>) -> RepoResult<App>;

    /// Apps ordered by slug.
    async fn list(&self, query: ListApps) -> RepoResult<Vec<App>>;

    /// Renames an app; `Conflict` on a taken slug, `NotFound` when absent, `Invalid` when
    /// the update changes nothing.
    async fn update(&self, id: AppId, update: AppUpdate) -> RepoResult<App>;

    /// Deletes an app with its memberships and app-limited tokens. Without `cascade`, an app
    /// that still has scripts is refused with `Conflict`; with it, its scripts go too, in
    /// the same transaction. Execution records stay (they outlive scripts by design).
    /// Returns the ids of the scripts deleted with it, so caches can drop them.
    async fn delete(&self, id: AppId, cascade: bool) -> RepoResult<Vec<ScriptId>>;
}

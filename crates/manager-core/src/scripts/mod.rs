//! Scripts: the stored source, limits and version of each script.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;
pub mod resolver;
mod service;

#[cfg(feature = "admin-api")]
pub use http::{CreateScriptRequest, ListScriptsQuery, ScriptsState, UpdateScriptRequest};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryScriptRepository;
pub use pg::PgScriptRepository;
pub use resolver::CachedScriptResolver;
pub use service::{MAX_SOURCE_BYTES, ScriptChangeError, ScriptObservers, ScriptService};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, AppSlug, Script, ScriptId, ScriptLimits, ScriptName};

use crate::repository::RepoResult;

/// A script to create; the store assigns the id, version 1 and the timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScript {
    /// The app it belongs to, which must exist.
    pub app_id: AppId,
    /// Unique within the app.
    pub name: ScriptName,
    /// Rhai source, already validated by the caller.
    pub source: String,
    /// Limits, already checked against the ceiling by the caller.
    pub limits: ScriptLimits,
    /// Whether calling the script needs a token with `script:execute` for its app.
    pub require_token: bool,
}

/// A change to a script; absent fields stay as they are. Any change bumps the version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptUpdate {
    /// A new name, unique within the script's app.
    pub name: Option<ScriptName>,
    /// New source.
    pub source: Option<String>,
    /// New limits (replacing the old ones as a whole).
    pub limits: Option<ScriptLimits>,
    /// Whether calling the script needs a token from now on.
    pub require_token: Option<bool>,
}

impl ScriptUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.source.is_none()
            && self.limits.is_none()
            && self.require_token.is_none()
    }
}

/// Which scripts to list, one page at a time, ordered by name then id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListScripts {
    /// Only these apps' scripts (a user's visible apps, or one app); all apps when `None`.
    pub apps: Option<Vec<AppId>>,
    /// Most items on the page.
    pub limit: u32,
    /// Only scripts that sort after this `(name, id)` (names in byte order): the previous
    /// page's last.
    pub after: Option<(ScriptName, ScriptId)>,
}

/// A script without its source, for lists (the admin API shows it as it is).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct ScriptSummary {
    /// Stable id.
    pub id: ScriptId,
    /// The app it belongs to.
    pub app_id: AppId,
    /// Unique within the app.
    pub name: ScriptName,
    /// The author's limits.
    pub limits: ScriptLimits,
    /// Current version.
    pub version: i64,
    /// Whether calling the script needs a token.
    pub require_token: bool,
    /// When the script was created.
    pub created_at: DateTime<Utc>,
    /// When the script last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Script> for ScriptSummary {
    fn from(script: &Script) -> Self {
        Self {
            id: script.id,
            app_id: script.app_id,
            name: script.name.clone(),
            limits: script.limits,
            version: script.version,
            require_token: script.require_token,
            created_at: script.created_at,
            updated_at: script.updated_at,
        }
    }
}

/// Stores scripts.
#[async_trait]
pub trait ScriptRepository: Send + Sync {
    /// Stores a new script at version 1. A missing app is `NotFound` naming the app; a name
    /// already used in the app is `Conflict` naming the name.
    async fn create(&self, new: NewScript) -> RepoResult<Script>;

    /// The script with this id, `None` when there is none.
    async fn get(&self, id: ScriptId) -> RepoResult<Option<Script>>;

    /// The script named `name` in the app with slug `app`, `None` when there is none.
    async fn get_by_name(&self, app: &AppSlug, name: &ScriptName) -> RepoResult<Option<Script>>;

    /// One page of scripts, ordered by name then id.
    async fn list(&self, query: ListScripts) -> RepoResult<Vec<ScriptSummary>>;

    /// Applies `update` and bumps the version and `updated_at`, atomically. A missing script
    /// is `NotFound`; a rename onto a used name is `Conflict`; an empty update is `Invalid`.
    async fn update(&self, id: ScriptId, update: ScriptUpdate) -> RepoResult<Script>;

    /// Deletes the script. A missing script is `NotFound`.
    async fn delete(&self, id: ScriptId) -> RepoResult<()>;
}

//! Triggers (Layout E): one parent row per trigger with what every kind shares (app,
//! target script, enabled, who registered it, retry policy) and one details row in the
//! kind's own table.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
pub mod kinds;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;
mod service;

#[cfg(feature = "admin-api")]
pub use http::{
    CreateTriggerRequest, ListTriggersQuery, RetryRequest, TriggerView, TriggersState,
    UpdateTriggerRequest,
};
pub use kinds::{Target, TriggerDetails, TriggerDetailsRequest};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryTriggerRepository;
pub use pg::PgTriggerRepository;
pub use service::{RetryOverrides, ScriptRef, TriggerChangeError, TriggerService};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, EventSubject, RetryPolicy, ScriptId, TriggerId, TriggerKind, UserId};

use crate::repository::RepoResult;

/// A stored trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Stable id.
    pub id: TriggerId,
    /// The app it belongs to; it only ever sees that app's events.
    pub app_id: AppId,
    /// The script it runs, in the same app.
    pub script_id: ScriptId,
    /// Disabled triggers match nothing.
    pub enabled: bool,
    /// The user who registered it: the script runs as them, with their current roles.
    pub registered_by: UserId,
    /// How failed deliveries are retried.
    pub retry: RetryPolicy,
    /// The kind and what it watches.
    pub details: TriggerDetails,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Trigger {
    /// The trigger's kind.
    pub fn kind(&self) -> TriggerKind {
        self.details.kind()
    }
}

/// A trigger to create; the store assigns the id and timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrigger {
    /// The app it belongs to.
    pub app_id: AppId,
    /// The script it runs, which must exist in that same app.
    pub script_id: ScriptId,
    /// Whether it starts enabled.
    pub enabled: bool,
    /// Who registers it.
    pub registered_by: UserId,
    /// How failed deliveries are retried, already validated.
    pub retry: RetryPolicy,
    /// The kind and what it watches.
    pub details: TriggerDetails,
}

/// A change to a trigger: each field present replaces the stored one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerUpdate {
    /// Enables or disables it.
    pub enabled: Option<bool>,
    /// A new retry policy, already validated.
    pub retry: Option<RetryPolicy>,
    /// New details, of the trigger's own kind (a kind cannot change).
    pub details: Option<TriggerDetails>,
}

impl TriggerUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.enabled.is_none() && self.retry.is_none() && self.details.is_none()
    }
}

/// Which triggers to list, one page at a time, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTriggers {
    /// Only these apps' triggers; every app's when `None`.
    pub apps: Option<Vec<AppId>>,
    /// Only this kind.
    pub kind: Option<TriggerKind>,
    /// Most items on the page.
    pub limit: u32,
    /// Only triggers created after this `(created_at, id)`: the previous page's last.
    pub after: Option<(DateTime<Utc>, TriggerId)>,
}

/// Stores triggers.
#[async_trait]
pub trait TriggerRepository: Send + Sync {
    /// Stores a trigger with its details, in one transaction. A script that does not exist
    /// in `app_id` is `NotFound` naming the script; a missing user is `NotFound` naming
    /// the user.
    async fn create(&self, new: NewTrigger) -> RepoResult<Trigger>;

    /// The trigger with this id, `None` when there is none.
    async fn get(&self, id: TriggerId) -> RepoResult<Option<Trigger>>;

    /// One page of triggers, oldest first (by creation, then id).
    async fn list(&self, query: ListTriggers) -> RepoResult<Vec<Trigger>>;

    /// Applies `update`; `NotFound` when the trigger does not exist, `Invalid` when the new
    /// details are of another kind.
    async fn update(&self, id: TriggerId, update: TriggerUpdate) -> RepoResult<Trigger>;

    /// Enables or disables a trigger; `NotFound` when it does not exist.
    async fn set_enabled(&self, id: TriggerId, enabled: bool) -> RepoResult<Trigger> {
        let update = TriggerUpdate {
            enabled: Some(enabled),
            ..TriggerUpdate::default()
        };
        self.update(id, update).await
    }

    /// Deletes a trigger with its details and its pending deliveries; `NotFound` when it
    /// does not exist. Its dead letters stay, without their trigger.
    async fn delete(&self, id: TriggerId) -> RepoResult<()>;

    /// The enabled triggers of `app` that an event with `subject` concerns, oldest first,
    /// found by the kind's own matcher, as the emitter finds them. Never another app's.
    async fn targets(&self, app: AppId, subject: &EventSubject) -> RepoResult<Vec<Target>>;
}

//! Triggers (Layout E): one parent row per trigger with what every kind shares (app,
//! target script, enabled, who registered it, retry policy) and one details row in the
//! kind's own table.

pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;

pub use http::{
    CreateDeadLetterTriggerRequest, CreateKvTriggerRequest, ListTriggersQuery, RetryRequest,
    TriggerPage, TriggerView,
};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryTriggerRepository;
pub use pg::PgTriggerRepository;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{
    AppId, CollectionGlob, KvOp, RetryPolicy, ScriptId, TriggerId, TriggerKind, UserId,
};

use crate::repository::{Page, RepoResult};

/// What a trigger of each kind watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerDetails {
    /// KV changes in the collections a glob matches.
    Kv {
        /// Which collections.
        collection: CollectionGlob,
        /// Which operations, in the order set, delete; never empty.
        ops: Vec<KvOp>,
    },
    /// Dead letters of triggers of these kinds.
    DeadLetter {
        /// Which kinds' dead letters; never empty.
        source_kinds: Vec<TriggerKind>,
    },
}

impl TriggerDetails {
    /// The kind these details belong to.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Self::Kv { .. } => TriggerKind::Kv,
            Self::DeadLetter { .. } => TriggerKind::DeadLetter,
        }
    }

    /// The same details with their lists in canonical form, as both stores hand them
    /// back: ops without duplicates in the order set, delete; source kinds without
    /// duplicates in [`TriggerKind::ALL`] order.
    pub fn normalized(self) -> Self {
        match self {
            Self::Kv { collection, ops } => Self::Kv {
                collection,
                ops: [KvOp::Set, KvOp::Delete]
                    .into_iter()
                    .filter(|op| ops.contains(op))
                    .collect(),
            },
            Self::DeadLetter { source_kinds } => Self::DeadLetter {
                source_kinds: TriggerKind::ALL
                    .into_iter()
                    .filter(|kind| source_kinds.contains(kind))
                    .collect(),
            },
        }
    }

    /// Whether a KV change of `op` in `collection` is one this trigger watches (never for
    /// other kinds).
    pub fn matches_kv(&self, collection: &str, op: KvOp) -> bool {
        match self {
            Self::Kv {
                collection: glob,
                ops,
            } => ops.contains(&op) && glob.matches(collection),
            Self::DeadLetter { .. } => false,
        }
    }
}

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
    /// When it last changed (enabled or disabled).
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

/// Which triggers to list, one page at a time, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTriggers {
    /// Only these apps' triggers; every app's when `None`.
    pub apps: Option<Vec<AppId>>,
    /// Only this kind.
    pub kind: Option<TriggerKind>,
    /// Most items on the page.
    pub limit: u32,
    /// Items to skip before the page starts.
    pub offset: u64,
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
    async fn list(&self, query: ListTriggers) -> RepoResult<Page<Trigger>>;

    /// Enables or disables a trigger; `NotFound` when it does not exist.
    async fn set_enabled(&self, id: TriggerId, enabled: bool) -> RepoResult<Trigger>;

    /// Deletes a trigger with its details and its pending deliveries; `NotFound` when it
    /// does not exist. Its dead letters stay, without their trigger.
    async fn delete(&self, id: TriggerId) -> RepoResult<()>;

    /// The enabled KV triggers of `app` that watch `op` on `collection`, oldest first:
    /// the fan-out of one KV change. Never another app's.
    async fn matching_kv(&self, app: AppId, collection: &str, op: KvOp)
    -> RepoResult<Vec<Trigger>>;
}

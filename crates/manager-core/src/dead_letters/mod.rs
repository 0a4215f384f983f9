//! Dead letters: events whose delivery failed for good (or that were refused at the depth
//! limit), kept for an operator to replay or ignore, or for a `dead_letter` trigger to
//! handle.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;

#[cfg(feature = "admin-api")]
pub use http::{DeadLetterCount, DeadLettersState, ListDeadLettersQuery};
#[cfg(feature = "testsuite")]
pub use memory::{
    EnqueuedReplay, InMemoryAbandonedExecutionRepository, InMemoryDeadLetterRepository,
};
pub use pg::{PgAbandonedExecutionRepository, PgDeadLetterRepository, insert_dead_letter};

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, DeadLetterId, ScriptId, TriggerId, TriggerKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::repository::{RepoError, RepoResult};

/// How a dead letter was resolved. Unresolved dead letters (no resolution) are what the
/// dashboard badge counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// An operator re-enqueued the event for its trigger.
    Replayed,
    /// An operator dismissed it.
    Ignored,
    /// A `dead_letter` trigger's script handled it.
    HandledByScript,
    /// A `dead_letter` trigger's script tried and failed; the event is still unhandled,
    /// so it can still be replayed or ignored.
    HandlerFailed,
}

impl Resolution {
    /// Every resolution, in a stable order.
    pub const ALL: [Self; 4] = [
        Self::Replayed,
        Self::Ignored,
        Self::HandledByScript,
        Self::HandlerFailed,
    ];

    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Replayed => "replayed",
            Self::Ignored => "ignored",
            Self::HandledByScript => "handled_by_script",
            Self::HandlerFailed => "handler_failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    /// Whether an operator may still act on a dead letter resolved this way: only a
    /// failed handler leaves the event unhandled.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::HandlerFailed)
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored dead letter (the admin API shows it as it is; absent fields are left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// Stable id.
    pub id: DeadLetterId,
    /// The app whose event it is.
    pub app_id: AppId,
    /// The trigger whose delivery failed; `None` for an event refused at the depth limit,
    /// or when the trigger has since been deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<TriggerId>,
    /// The kind of that trigger (of the event, for a refused one).
    pub trigger_kind: TriggerKind,
    /// The script that failed, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_id: Option<ScriptId>,
    /// The event as the script saw it (`ctx.event`).
    pub event: Value,
    /// The event's trigger depth.
    pub depth: u32,
    /// How many attempts were made (0 for a refused event).
    pub attempts: u32,
    /// The last attempt's error, or why the event was refused.
    pub last_error: String,
    /// When it became a dead letter.
    pub failed_at: DateTime<Utc>,
    /// How it was resolved; `None` while unresolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// When it was resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A dead letter to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// The app whose event it is.
    pub app_id: AppId,
    /// The trigger whose delivery failed (`None`: refused at the depth limit).
    pub trigger_id: Option<TriggerId>,
    /// That trigger's kind.
    pub trigger_kind: TriggerKind,
    /// The script that failed.
    pub script_id: Option<ScriptId>,
    /// The event.
    pub event: Value,
    /// Its trigger depth.
    pub depth: u32,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
}

/// A position in an app's newest-first dead-letter list: the page continues with dead
/// letters strictly older than this one (by failure time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterCursor {
    /// When the last dead letter seen failed.
    pub failed_at: DateTime<Utc>,
    /// Its id, which breaks ties.
    pub id: DeadLetterId,
}

impl From<&DeadLetter> for DeadLetterCursor {
    fn from(dead_letter: &DeadLetter) -> Self {
        Self {
            failed_at: dead_letter.failed_at,
            id: dead_letter.id,
        }
    }
}

/// Which dead letters to list: one app's, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListDeadLetters {
    /// The app.
    pub app: AppId,
    /// Only unresolved ones (the badge's).
    pub unresolved_only: bool,
    /// Most items on the page.
    pub limit: u32,
    /// Continue after this one.
    pub before: Option<DeadLetterCursor>,
}

/// Why an operator's replay or ignore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterActionError {
    /// No such dead letter.
    #[error("dead letter {0} not found")]
    NotFound(DeadLetterId),
    /// It was already replayed, ignored or handled.
    #[error("dead letter {id} is already resolved ({resolution})")]
    AlreadyResolved {
        /// The dead letter.
        id: DeadLetterId,
        /// How it was resolved.
        resolution: Resolution,
    },
    /// There is no trigger to replay it to: it was refused at the depth limit, or its
    /// trigger has been deleted.
    #[error("dead letter {0} has no trigger to replay it to")]
    NoTrigger(DeadLetterId),
    /// The store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Stores dead letters.
#[async_trait]
pub trait DeadLetterRepository: Send + Sync {
    /// Records an unresolved dead letter.
    async fn record(&self, new: NewDeadLetter) -> RepoResult<DeadLetter>;

    /// The dead letter with this id, `None` when there is none.
    async fn get(&self, id: DeadLetterId) -> RepoResult<Option<DeadLetter>>;

    /// Up to `limit` dead letters of an app, newest first.
    async fn list(&self, query: ListDeadLetters) -> RepoResult<Vec<DeadLetter>>;

    /// How many unresolved dead letters an app has.
    async fn count_unresolved(&self, app: AppId) -> RepoResult<u64>;

    /// In one transaction: enqueues the event again for its trigger (attempts from 0,
    /// the original event and depth) and resolves the dead letter as `replayed`.
    async fn replay(&self, id: DeadLetterId) -> Result<DeadLetter, DeadLetterActionError>;

    /// Resolves the dead letter as `ignored`.
    async fn ignore(&self, id: DeadLetterId) -> Result<DeadLetter, DeadLetterActionError>;

    /// Deletes dead letters resolved before `cutoff`; unresolved ones are never deleted.
    /// Returns how many were deleted.
    async fn prune_resolved_before(&self, cutoff: DateTime<Utc>) -> RepoResult<u64>;
}

/// Results of synchronous invocations whose caller had gone: written by the dispatcher,
/// only pruned here.
#[async_trait]
pub trait AbandonedExecutionRepository: Send + Sync {
    /// Deletes those abandoned before `cutoff`; returns how many.
    async fn prune_before(&self, cutoff: DateTime<Utc>) -> RepoResult<u64>;
}

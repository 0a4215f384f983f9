//! Trigger kinds as plug-ins. A kind is one module here implementing [`Kind`]: its details
//! (what a trigger of the kind watches, validated), the request a client sends for them,
//! the storage of those details in the kind's own `<kind>_trigger_details` table, and the
//! matcher that decides whether an event concerns a trigger. A kind that watches some
//! operations in the collections a glob matches (`kv`, `files`) implements `GlobKind`
//! instead, and `glob_ops` makes it a [`Kind`]. This file is the registry:
//! the one place that lists the kinds and dispatches to them. Nothing outside the kind
//! modules names a kind's table or fields.
//!
//! `docs/adding-a-trigger-kind.md` says what a new kind touches.

mod dead_letter;
mod files;
mod glob_ops;
mod kv;
mod table;

use async_trait::async_trait;
use picloud_shared::{AppId, ErrorCode, EventSubject, ScriptId, TriggerId, TriggerKind};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

pub use dead_letter::{DeadLetterDetails, DeadLetterDetailsRequest, SourceKinds};
pub use files::{FilesDetails, FilesDetailsRequest, FilesOps};
pub use glob_ops::{Ops, WatchedOp};
pub use kv::{KvDetails, KvDetailsRequest, KvOps};

use crate::repository::RepoResult;

/// A request's details that a kind refused: `code` is the error code the API answers with
/// (422), `message` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDetails {
    /// The error code, e.g. `invalid_glob`.
    pub code: ErrorCode,
    /// What is wrong, naming the field.
    pub message: String,
}

/// A trigger the event concerns: the fan-out writes one outbox row for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The trigger.
    pub trigger_id: TriggerId,
    /// The script it runs.
    pub script_id: ScriptId,
}

/// What every trigger kind provides. The storage functions run in the caller's
/// transaction (or connection); `load` and `enabled` read what `save` wrote.
#[async_trait]
pub(crate) trait Kind {
    /// The kind.
    const KIND: TriggerKind;
    /// What a trigger of this kind watches, validated.
    type Details: Clone + Send + Sync;
    /// What a client sends for those details.
    type Request;

    /// Validates a request's details.
    fn details(request: Self::Request) -> Result<Self::Details, InvalidDetails>;

    /// Whether `subject` (an event of this kind) is one a trigger with `details` watches:
    /// the one matcher, used by every emitter.
    fn matches(details: &Self::Details, subject: &EventSubject) -> bool;

    /// Stores the details of trigger `id`, replacing any it had.
    async fn save(
        conn: &mut PgConnection,
        id: TriggerId,
        details: &Self::Details,
    ) -> RepoResult<()>;

    /// The details of the triggers `ids` (all of this kind), in any order.
    async fn load(conn: &mut PgConnection, ids: &[Uuid]) -> RepoResult<Vec<(Uuid, Self::Details)>>;

    /// The enabled triggers of this kind in `app` with their details that may match
    /// `subject` (every one that does, and perhaps others: [`matches`](Self::matches)
    /// decides), oldest first, each locked against deletion (`FOR KEY SHARE`) until the
    /// caller's transaction ends: the outbox rows written for them reference them.
    async fn enabled(
        conn: &mut PgConnection,
        app: AppId,
        subject: &EventSubject,
    ) -> RepoResult<Vec<(Target, Self::Details)>>;
}

/// What a trigger of each kind watches, tagged by `kind` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerDetails {
    /// KV changes in the collections a glob matches.
    Kv(KvDetails),
    /// File changes in the collections a glob matches.
    Files(FilesDetails),
    /// Dead letters of triggers of some kinds.
    DeadLetter(DeadLetterDetails),
}

/// What a client sends for a trigger's details, tagged by `kind` in JSON.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerDetailsRequest {
    /// A `kv` trigger.
    Kv(KvDetailsRequest),
    /// A `files` trigger.
    Files(FilesDetailsRequest),
    /// A `dead_letter` trigger.
    DeadLetter(DeadLetterDetailsRequest),
}

impl TriggerDetailsRequest {
    /// The kind asked for.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Self::Kv(_) => kv::Kv::KIND,
            Self::Files(_) => files::Files::KIND,
            Self::DeadLetter(_) => dead_letter::DeadLetter::KIND,
        }
    }

    /// Validates the details with their kind's rules.
    pub fn validate(self) -> Result<TriggerDetails, InvalidDetails> {
        match self {
            Self::Kv(request) => kv::Kv::details(request).map(TriggerDetails::Kv),
            Self::Files(request) => files::Files::details(request).map(TriggerDetails::Files),
            Self::DeadLetter(request) => {
                dead_letter::DeadLetter::details(request).map(TriggerDetails::DeadLetter)
            }
        }
    }
}

impl TriggerDetails {
    /// The kind these details belong to.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Self::Kv(_) => kv::Kv::KIND,
            Self::Files(_) => files::Files::KIND,
            Self::DeadLetter(_) => dead_letter::DeadLetter::KIND,
        }
    }

    /// Whether an event is one a trigger with these details watches (never an event of
    /// another kind).
    pub fn matches(&self, subject: &EventSubject) -> bool {
        match self {
            Self::Kv(details) => kv::Kv::matches(details, subject),
            Self::Files(details) => files::Files::matches(details, subject),
            Self::DeadLetter(details) => dead_letter::DeadLetter::matches(details, subject),
        }
    }

    /// Stores these details for trigger `id`, replacing any it had.
    pub(crate) async fn save(&self, conn: &mut PgConnection, id: TriggerId) -> RepoResult<()> {
        match self {
            Self::Kv(details) => kv::Kv::save(conn, id, details).await,
            Self::Files(details) => files::Files::save(conn, id, details).await,
            Self::DeadLetter(details) => dead_letter::DeadLetter::save(conn, id, details).await,
        }
    }
}

/// The details of the triggers `ids`, all of `kind`.
pub(crate) async fn load(
    conn: &mut PgConnection,
    kind: TriggerKind,
    ids: &[Uuid],
) -> RepoResult<Vec<(Uuid, TriggerDetails)>> {
    fn wrap<D>(rows: Vec<(Uuid, D)>, f: fn(D) -> TriggerDetails) -> Vec<(Uuid, TriggerDetails)> {
        rows.into_iter().map(|(id, d)| (id, f(d))).collect()
    }
    Ok(match kind {
        TriggerKind::Kv => wrap(kv::Kv::load(conn, ids).await?, TriggerDetails::Kv),
        TriggerKind::Files => wrap(files::Files::load(conn, ids).await?, TriggerDetails::Files),
        TriggerKind::DeadLetter => wrap(
            dead_letter::DeadLetter::load(conn, ids).await?,
            TriggerDetails::DeadLetter,
        ),
    })
}

/// The enabled triggers of `app` that `subject` concerns, oldest first, locked against
/// deletion until the caller's transaction ends.
pub(crate) async fn targets(
    conn: &mut PgConnection,
    app: AppId,
    subject: &EventSubject,
) -> RepoResult<Vec<Target>> {
    async fn matching<K: Kind>(
        conn: &mut PgConnection,
        app: AppId,
        subject: &EventSubject,
    ) -> RepoResult<Vec<Target>> {
        Ok(K::enabled(conn, app, subject)
            .await?
            .into_iter()
            .filter(|(_, details)| K::matches(details, subject))
            .map(|(target, _)| target)
            .collect())
    }
    match subject.kind() {
        TriggerKind::Kv => matching::<kv::Kv>(conn, app, subject).await,
        TriggerKind::Files => matching::<files::Files>(conn, app, subject).await,
        TriggerKind::DeadLetter => matching::<dead_letter::DeadLetter>(conn, app, subject).await,
    }
}

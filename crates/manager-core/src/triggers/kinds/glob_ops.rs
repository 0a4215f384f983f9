//! What the kinds that watch some operations in the collections a glob matches (`kv`,
//! `files`) share: the set of operations ([`Ops`]), and the whole of their [`Kind`] — the
//! validation of a request, the matcher, and the storage of the details in the kind's
//! `(trigger_id, collection_glob, ops text[])` table. A kind brings its operation type
//! ([`WatchedOp`]), its details and request types and its table ([`GlobKind`]).

use std::fmt::Debug;

use async_trait::async_trait;
use picloud_shared::{AppId, CollectionGlob, ErrorCode, EventSubject, TriggerId, TriggerKind};
use serde::Serialize;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::table::{DetailsTable, column};
use super::{InvalidDetails, Kind, Target};
use crate::db::{corrupt_row, db_error};
use crate::repository::RepoResult;

/// An operation a trigger can watch for (`KvOp`, `FileOp`).
pub trait WatchedOp: Debug + Copy + Eq + Serialize + Send + Sync + 'static {
    /// Every operation, in canonical order.
    const ALL: &'static [Self];
    /// The name of a set of them in the OpenAPI document, e.g. `KvOps`.
    #[cfg(feature = "admin-api")]
    const SET_SCHEMA_NAME: &'static str;
    /// The description of a set of them in the OpenAPI document.
    #[cfg(feature = "admin-api")]
    const SET_SCHEMA_DESCRIPTION: &'static str;

    /// The operation's stored name.
    fn stored_name(self) -> &'static str;
}

/// The operations a trigger watches: never empty, each once, in the order of
/// [`WatchedOp::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ops<O>(Vec<O>);

impl<O: WatchedOp> Ops<O> {
    /// Every operation.
    pub fn all() -> Self {
        Self(O::ALL.to_vec())
    }

    /// The set of `ops` in canonical order; `None` when it is empty.
    pub fn new(ops: &[O]) -> Option<Self> {
        let canonical: Vec<O> = O::ALL
            .iter()
            .copied()
            .filter(|op| ops.contains(op))
            .collect();
        (!canonical.is_empty()).then_some(Self(canonical))
    }

    /// Whether `op` is one of them.
    pub fn contains(&self, op: O) -> bool {
        self.0.contains(&op)
    }

    /// The operations, in canonical order.
    pub fn as_slice(&self) -> &[O] {
        &self.0
    }
}

// By hand rather than derived, so that each kind's set keeps its own name and description
// (`KvOps`, `FilesOps`): an array of the kind's operations.
#[cfg(feature = "admin-api")]
impl<O: WatchedOp + utoipa::ToSchema> utoipa::PartialSchema for Ops<O> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name(O::name()))
            .description(Some(O::SET_SCHEMA_DESCRIPTION))
            .into()
    }
}

#[cfg(feature = "admin-api")]
impl<O: WatchedOp + utoipa::ToSchema> utoipa::ToSchema for Ops<O> {
    fn name() -> std::borrow::Cow<'static, str> {
        O::SET_SCHEMA_NAME.into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((O::name().into_owned(), O::schema()));
        O::schemas(schemas);
    }
}

/// A kind whose details are a collection glob and a set of [`Ops`]. It is a [`Kind`]
/// through this module, which validates, matches and stores its details (in `TABLE`).
pub(crate) trait GlobKind: Send + Sync + 'static {
    /// The kind.
    const KIND: TriggerKind;
    /// Its details table, `(trigger_id, collection_glob, ops text[])`, e.g.
    /// `kv_trigger_details`: a constant, formatted into SQL.
    const TABLE: &'static str;
    /// What its triggers watch for.
    type Op: WatchedOp;
    /// What a trigger of this kind watches, validated.
    type Details: Clone + Send + Sync;
    /// What a client sends for those details.
    type Request: Send;

    /// The details of a trigger watching `ops` in the collections `collection` matches.
    fn new_details(collection: CollectionGlob, ops: Ops<Self::Op>) -> Self::Details;

    /// The glob and the operations of `details`.
    fn parts(details: &Self::Details) -> (&CollectionGlob, &Ops<Self::Op>);

    /// The glob and the operations (every one when `None`) a request asks for.
    fn asked(request: Self::Request) -> (String, Option<Vec<Self::Op>>);

    /// The collection and the operation of `subject`, an event of this kind; `None` for an
    /// event of any other kind, which never matches, whatever kinds are added later.
    fn change(subject: &EventSubject) -> Option<(&str, Self::Op)>;
}

#[async_trait]
impl<K: GlobKind> Kind for K {
    const KIND: TriggerKind = <K as GlobKind>::KIND;
    type Details = <K as GlobKind>::Details;
    type Request = <K as GlobKind>::Request;

    fn details(request: Self::Request) -> Result<Self::Details, InvalidDetails> {
        let (collection, ops) = K::asked(request);
        let collection = CollectionGlob::parse(&collection).map_err(|e| InvalidDetails {
            code: ErrorCode::InvalidGlob,
            message: e.to_string(),
        })?;
        let ops = match ops {
            None => Ops::all(),
            Some(ops) => Ops::new(&ops).ok_or_else(|| {
                let names: Vec<&str> = K::Op::ALL.iter().map(|op| op.stored_name()).collect();
                InvalidDetails {
                    code: ErrorCode::InvalidOps,
                    message: format!("ops must name at least one of {}", names.join(", ")),
                }
            })?,
        };
        Ok(K::new_details(collection, ops))
    }

    fn matches(details: &Self::Details, subject: &EventSubject) -> bool {
        let (glob, ops) = K::parts(details);
        K::change(subject)
            .is_some_and(|(collection, op)| ops.contains(op) && glob.matches(collection))
    }

    async fn save(
        conn: &mut PgConnection,
        id: TriggerId,
        details: &Self::Details,
    ) -> RepoResult<()> {
        save::<K>(conn, id, details).await
    }

    async fn load(conn: &mut PgConnection, ids: &[Uuid]) -> RepoResult<Vec<(Uuid, Self::Details)>> {
        table::<K>().load(conn, ids, parse_row::<K>).await
    }

    async fn enabled(
        conn: &mut PgConnection,
        app: AppId,
        subject: &EventSubject,
    ) -> RepoResult<Vec<(Target, Self::Details)>> {
        match K::change(subject) {
            Some((collection, _)) => {
                table::<K>()
                    .enabled_in_collection(conn, app, collection, parse_row::<K>)
                    .await
            }
            // Not a change of this kind: no trigger of it matches.
            None => Ok(Vec::new()),
        }
    }
}

/// Stores the details of trigger `id`, replacing any it had.
async fn save<K: GlobKind>(
    conn: &mut PgConnection,
    id: TriggerId,
    details: &<K as GlobKind>::Details,
) -> RepoResult<()> {
    let (collection, ops) = K::parts(details);
    let ops: Vec<&str> = ops.as_slice().iter().map(|op| op.stored_name()).collect();
    let sql = format!(
        "INSERT INTO {} (trigger_id, collection_glob, ops) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (trigger_id) \
         DO UPDATE SET collection_glob = EXCLUDED.collection_glob, ops = EXCLUDED.ops",
        K::TABLE
    );
    sqlx::query(&sql)
        .bind(id.as_uuid())
        .bind(collection.as_str())
        .bind(&ops)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Where kind `K` keeps its details.
fn table<K: GlobKind>() -> DetailsTable {
    DetailsTable {
        kind: <K as GlobKind>::KIND,
        name: K::TABLE,
        columns: &["collection_glob", "ops"],
    }
}

/// The details stored for trigger `id` in `row`.
fn parse_row<K: GlobKind>(id: Uuid, row: &PgRow) -> RepoResult<<K as GlobKind>::Details> {
    let glob: String = column(row, "collection_glob")?;
    let ops: Vec<String> = column(row, "ops")?;
    let bad =
        |what: String| corrupt_row(format!("{} trigger {id} has {what}", <K as GlobKind>::KIND));
    let collection = CollectionGlob::parse(&glob)
        .map_err(|e| bad(format!("a stored glob {glob:?} that is not valid: {e}")))?;
    let ops = ops
        .iter()
        .map(|raw| {
            K::Op::ALL
                .iter()
                .copied()
                .find(|op| op.stored_name() == raw)
                .ok_or_else(|| bad(format!("a stored op {raw:?}")))
        })
        .collect::<RepoResult<Vec<K::Op>>>()?;
    let ops = Ops::new(&ops).ok_or_else(|| bad("no ops".to_owned()))?;
    Ok(K::new_details(collection, ops))
}

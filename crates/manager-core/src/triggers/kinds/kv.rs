//! The `kv` trigger kind: run a script when a KV entry is set or deleted in a collection
//! that the trigger's glob matches. Details in `kv_trigger_details`.

use async_trait::async_trait;
use picloud_shared::{
    AppId, CollectionGlob, ErrorCode, EventSubject, KvOp, ScriptId, TriggerId, TriggerKind,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{InvalidDetails, Kind, Target};
use crate::db::{corrupt_row, db_error};
use crate::repository::RepoResult;

/// The operations a `kv` trigger watches: never empty, each once, in the order set,
/// delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema), schema(value_type = Vec<KvOp>))]
pub struct KvOps(Vec<KvOp>);

impl KvOps {
    /// Every operation.
    pub fn all() -> Self {
        Self(vec![KvOp::Set, KvOp::Delete])
    }

    /// The set of `ops` in canonical order; `None` when it is empty.
    pub fn new(ops: &[KvOp]) -> Option<Self> {
        let canonical: Vec<KvOp> = [KvOp::Set, KvOp::Delete]
            .into_iter()
            .filter(|op| ops.contains(op))
            .collect();
        (!canonical.is_empty()).then_some(Self(canonical))
    }

    /// Whether `op` is one of them.
    pub fn contains(&self, op: KvOp) -> bool {
        self.0.contains(&op)
    }

    /// The operations, in canonical order.
    pub fn as_slice(&self) -> &[KvOp] {
        &self.0
    }
}

/// What a `kv` trigger watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct KvDetails {
    /// Which collections: `*` (all), a prefix followed by `*` (`orders:*`), or an exact
    /// collection name.
    pub collection: CollectionGlob,
    /// Which operations.
    pub ops: KvOps,
}

/// The details of a `kv` trigger as a client sends them.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KvDetailsRequest {
    /// Which collections: `*` (all), a prefix followed by `*` (`orders:*`), or an exact
    /// collection name.
    pub collection: String,
    /// Which operations (`set`, `delete`); both when absent.
    #[serde(default)]
    pub ops: Option<Vec<KvOp>>,
}

/// The `kv` kind.
pub(crate) struct Kv;

type Row = (Uuid, String, Vec<String>);

fn parse_row(id: Uuid, glob: &str, ops: &[String]) -> RepoResult<KvDetails> {
    let bad = |what: String| corrupt_row(format!("kv trigger {id} has {what}"));
    let collection = CollectionGlob::parse(glob)
        .map_err(|e| bad(format!("a stored glob {glob:?} that is not valid: {e}")))?;
    let ops = ops
        .iter()
        .map(|raw| {
            [KvOp::Set, KvOp::Delete]
                .into_iter()
                .find(|op| op.as_str() == raw)
                .ok_or_else(|| bad(format!("a stored op {raw:?}")))
        })
        .collect::<RepoResult<Vec<KvOp>>>()?;
    let ops = KvOps::new(&ops).ok_or_else(|| bad("no ops".to_owned()))?;
    Ok(KvDetails { collection, ops })
}

#[async_trait]
impl Kind for Kv {
    const KIND: TriggerKind = TriggerKind::Kv;
    type Details = KvDetails;
    type Request = KvDetailsRequest;

    fn details(request: KvDetailsRequest) -> Result<KvDetails, InvalidDetails> {
        let collection =
            CollectionGlob::parse(&request.collection).map_err(|e| InvalidDetails {
                code: ErrorCode::InvalidGlob,
                message: e.to_string(),
            })?;
        let ops = match request.ops {
            None => KvOps::all(),
            Some(ops) => KvOps::new(&ops).ok_or_else(|| InvalidDetails {
                code: ErrorCode::InvalidOps,
                message: "ops must name at least one of set, delete".to_owned(),
            })?,
        };
        Ok(KvDetails { collection, ops })
    }

    fn matches(details: &KvDetails, subject: &EventSubject) -> bool {
        // Events of other kinds never match, whatever kinds are added later.
        if let EventSubject::Kv { collection, op, .. } = subject {
            details.ops.contains(*op) && details.collection.matches(collection)
        } else {
            false
        }
    }

    async fn save(conn: &mut PgConnection, id: TriggerId, details: &KvDetails) -> RepoResult<()> {
        let ops: Vec<&str> = details.ops.as_slice().iter().map(KvOp::as_str).collect();
        sqlx::query(
            "INSERT INTO kv_trigger_details (trigger_id, collection_glob, ops) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (trigger_id) \
             DO UPDATE SET collection_glob = EXCLUDED.collection_glob, ops = EXCLUDED.ops",
        )
        .bind(id.as_uuid())
        .bind(details.collection.as_str())
        .bind(&ops)
        .execute(conn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn load(conn: &mut PgConnection, ids: &[Uuid]) -> RepoResult<Vec<(Uuid, KvDetails)>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT trigger_id, collection_glob, ops FROM kv_trigger_details \
             WHERE trigger_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|(id, glob, ops)| Ok((*id, parse_row(*id, glob, ops)?)))
            .collect()
    }

    async fn enabled(conn: &mut PgConnection, app: AppId) -> RepoResult<Vec<(Target, KvDetails)>> {
        let rows: Vec<(Uuid, Uuid, String, Vec<String>)> = sqlx::query_as(
            "SELECT t.id, t.script_id, d.collection_glob, d.ops \
             FROM triggers t JOIN kv_trigger_details d ON d.trigger_id = t.id \
             WHERE t.app_id = $1 AND t.kind = 'kv' AND t.enabled \
             ORDER BY t.created_at, t.id \
             FOR KEY SHARE OF t",
        )
        .bind(app.as_uuid())
        .fetch_all(conn)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|(id, script, glob, ops)| {
                let target = Target {
                    trigger_id: TriggerId::from_uuid(*id),
                    script_id: ScriptId::from_uuid(*script),
                };
                Ok((target, parse_row(*id, glob, ops)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn change(collection: &str, op: KvOp) -> EventSubject {
        EventSubject::Kv {
            collection: collection.to_owned(),
            key: "k".to_owned(),
            op,
            value: None,
        }
    }

    fn details(glob: &str, ops: &[KvOp]) -> KvDetails {
        KvDetails {
            collection: CollectionGlob::parse(glob).unwrap(),
            ops: KvOps::new(ops).unwrap(),
        }
    }

    fn op() -> impl Strategy<Value = KvOp> {
        prop_oneof![Just(KvOp::Set), Just(KvOp::Delete)]
    }

    proptest! {
        // Short names over a small alphabet, so prefixes and exact names often coincide.
        #[test]
        fn a_glob_matches_exactly_what_its_form_says(
            name in "[ab:]{1,4}",
            collection in "[ab:]{0,5}",
            op in op(),
        ) {
            let both = [KvOp::Set, KvOp::Delete];
            prop_assert!(Kv::matches(&details("*", &both), &change(&collection, op)));
            prop_assert_eq!(
                Kv::matches(&details(&format!("{name}*"), &both), &change(&collection, op)),
                collection.starts_with(&name)
            );
            prop_assert_eq!(
                Kv::matches(&details(&name, &both), &change(&collection, op)),
                collection == name
            );
        }

        #[test]
        fn only_the_watched_ops_match(watched in op(), happened in op()) {
            prop_assert_eq!(
                Kv::matches(&details("*", &[watched]), &change("c", happened)),
                watched == happened
            );
        }
    }

    #[test]
    fn events_of_other_kinds_never_match() {
        let dead_letter = EventSubject::DeadLetter {
            dead_letter_id: picloud_shared::DeadLetterId::new(),
            source_kind: TriggerKind::Kv,
            trigger_id: None,
            script_id: None,
            event: json!({}),
            attempts: 1,
            last_error: "boom".to_owned(),
        };
        assert!(!Kv::matches(
            &details("*", &[KvOp::Set, KvOp::Delete]),
            &dead_letter
        ));
    }

    #[test]
    fn requests_are_validated_naming_the_problem() {
        let request = |collection: &str, ops: Option<Vec<KvOp>>| KvDetailsRequest {
            collection: collection.to_owned(),
            ops,
        };
        let all = Kv::details(request("orders:*", None)).unwrap();
        assert_eq!(all.ops.as_slice(), &[KvOp::Set, KvOp::Delete]);
        let deduplicated = Kv::details(request(
            "x",
            Some(vec![KvOp::Delete, KvOp::Set, KvOp::Delete]),
        ))
        .unwrap();
        assert_eq!(deduplicated.ops.as_slice(), &[KvOp::Set, KvOp::Delete]);
        assert_eq!(
            Kv::details(request("x", Some(vec![]))).unwrap_err().code,
            ErrorCode::InvalidOps
        );
        assert_eq!(
            Kv::details(request("a*b", None)).unwrap_err().code,
            ErrorCode::InvalidGlob
        );
    }
}

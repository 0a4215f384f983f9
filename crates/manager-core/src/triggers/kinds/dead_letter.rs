//! The `dead_letter` trigger kind: run a script for each delivery of another trigger of
//! the app that failed for good. Details in `dead_letter_trigger_details`.

use async_trait::async_trait;
use picloud_shared::{AppId, ErrorCode, EventSubject, TriggerId, TriggerKind};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::table::{DetailsTable, column};
use super::{InvalidDetails, Kind, Target};
use crate::db::{corrupt_row, db_error};
use crate::repository::RepoResult;

/// The trigger kinds whose dead letters a `dead_letter` trigger handles: never empty, each
/// once, in [`TriggerKind::ALL`] order, and only kinds whose dead letters fan out (a
/// dead-letter handler's own failures are never handed to another handler, so handlers
/// cannot loop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema), schema(value_type = Vec<TriggerKind>))]
pub struct SourceKinds(Vec<TriggerKind>);

impl SourceKinds {
    /// The kinds in `kinds`, in canonical order: refused when empty or when one of them
    /// never fans out.
    pub fn new(kinds: &[TriggerKind]) -> Result<Self, InvalidDetails> {
        let invalid = |message: String| InvalidDetails {
            code: ErrorCode::InvalidSourceKinds,
            message,
        };
        if let Some(kind) = kinds.iter().find(|k| !k.dead_letters_fan_out()) {
            return Err(invalid(format!(
                "dead letters of {kind} triggers are never handed to a dead-letter trigger"
            )));
        }
        let canonical: Vec<TriggerKind> = TriggerKind::ALL
            .into_iter()
            .filter(|kind| kinds.contains(kind))
            .collect();
        if canonical.is_empty() {
            return Err(invalid(
                "source_kinds must name at least one trigger kind".to_owned(),
            ));
        }
        Ok(Self(canonical))
    }

    /// Whether dead letters of `kind` are handled.
    pub fn contains(&self, kind: TriggerKind) -> bool {
        self.0.contains(&kind)
    }

    /// The kinds, in canonical order.
    pub fn as_slice(&self) -> &[TriggerKind] {
        &self.0
    }
}

/// What a `dead_letter` trigger watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct DeadLetterDetails {
    /// Dead letters of triggers of these kinds.
    pub source_kinds: SourceKinds,
}

/// The details of a `dead_letter` trigger as a client sends them.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeadLetterDetailsRequest {
    /// Dead letters of which trigger kinds it handles; `["kv"]` when absent.
    #[serde(default)]
    pub source_kinds: Option<Vec<TriggerKind>>,
}

/// The `dead_letter` kind.
pub(crate) struct DeadLetter;

/// Where the details are kept.
const TABLE: DetailsTable = DetailsTable {
    kind: DeadLetter::KIND,
    name: "dead_letter_trigger_details",
    columns: &["source_kinds"],
};

fn parse_row(id: Uuid, row: &PgRow) -> RepoResult<DeadLetterDetails> {
    let kinds: Vec<String> = column(row, "source_kinds")?;
    let bad = |what: String| corrupt_row(format!("dead_letter trigger {id} has {what}"));
    let kinds = kinds
        .iter()
        .map(|raw| TriggerKind::parse(raw).ok_or_else(|| bad(format!("a stored kind {raw:?}"))))
        .collect::<RepoResult<Vec<TriggerKind>>>()?;
    let source_kinds = SourceKinds::new(&kinds).map_err(|e| bad(e.message))?;
    Ok(DeadLetterDetails { source_kinds })
}

#[async_trait]
impl Kind for DeadLetter {
    const KIND: TriggerKind = TriggerKind::DeadLetter;
    type Details = DeadLetterDetails;
    type Request = DeadLetterDetailsRequest;

    fn details(request: DeadLetterDetailsRequest) -> Result<DeadLetterDetails, InvalidDetails> {
        let kinds = request
            .source_kinds
            .unwrap_or_else(|| vec![TriggerKind::Kv]);
        Ok(DeadLetterDetails {
            source_kinds: SourceKinds::new(&kinds)?,
        })
    }

    fn matches(details: &DeadLetterDetails, subject: &EventSubject) -> bool {
        // Events of other kinds never match, whatever kinds are added later.
        if let EventSubject::DeadLetter { source_kind, .. } = subject {
            details.source_kinds.contains(*source_kind)
        } else {
            false
        }
    }

    async fn save(
        conn: &mut PgConnection,
        id: TriggerId,
        details: &DeadLetterDetails,
    ) -> RepoResult<()> {
        let kinds: Vec<&str> = details
            .source_kinds
            .as_slice()
            .iter()
            .map(TriggerKind::as_str)
            .collect();
        let sql = format!(
            "INSERT INTO {} (trigger_id, source_kinds) \
             VALUES ($1, $2) \
             ON CONFLICT (trigger_id) DO UPDATE SET source_kinds = EXCLUDED.source_kinds",
            TABLE.name
        );
        sqlx::query(&sql)
            .bind(id.as_uuid())
            .bind(&kinds)
            .execute(conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn load(
        conn: &mut PgConnection,
        ids: &[Uuid],
    ) -> RepoResult<Vec<(Uuid, DeadLetterDetails)>> {
        TABLE.load(conn, ids, parse_row).await
    }

    async fn enabled(
        conn: &mut PgConnection,
        app: AppId,
        _subject: &EventSubject,
    ) -> RepoResult<Vec<(Target, DeadLetterDetails)>> {
        TABLE.enabled(conn, app, parse_row).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dead_letter_of(source_kind: TriggerKind) -> EventSubject {
        EventSubject::DeadLetter {
            dead_letter_id: picloud_shared::DeadLetterId::new(),
            source_kind,
            trigger_id: None,
            script_id: None,
            event: json!({}),
            attempts: 1,
            last_error: "boom".to_owned(),
        }
    }

    #[test]
    fn a_handler_sees_the_dead_letters_of_its_source_kinds_only() {
        let details = DeadLetter::details(DeadLetterDetailsRequest { source_kinds: None }).unwrap();
        assert_eq!(details.source_kinds.as_slice(), &[TriggerKind::Kv]);
        for kind in TriggerKind::ALL {
            assert_eq!(
                DeadLetter::matches(&details, &dead_letter_of(kind)),
                kind == TriggerKind::Kv,
                "{kind}"
            );
        }
        // Every kind whose dead letters fan out can be asked for, and only those.
        let fanning_out: Vec<TriggerKind> = TriggerKind::ALL
            .into_iter()
            .filter(TriggerKind::dead_letters_fan_out)
            .collect();
        let every = DeadLetter::details(DeadLetterDetailsRequest {
            source_kinds: Some(fanning_out.iter().rev().copied().collect()),
        })
        .unwrap();
        assert_eq!(every.source_kinds.as_slice(), fanning_out.as_slice());
        for kind in TriggerKind::ALL {
            assert_eq!(
                DeadLetter::matches(&every, &dead_letter_of(kind)),
                kind.dead_letters_fan_out(),
                "{kind}"
            );
        }
        let kv_change = EventSubject::Kv {
            collection: "c".to_owned(),
            key: "k".to_owned(),
            op: picloud_shared::KvOp::Set,
            value: None,
        };
        assert!(!DeadLetter::matches(&details, &kv_change));
    }

    #[test]
    fn source_kinds_are_never_empty_nor_a_kind_that_does_not_fan_out() {
        assert_eq!(
            SourceKinds::new(&[]).unwrap_err().code,
            ErrorCode::InvalidSourceKinds
        );
        assert_eq!(
            SourceKinds::new(&[TriggerKind::DeadLetter])
                .unwrap_err()
                .code,
            ErrorCode::InvalidSourceKinds
        );
        let kinds = SourceKinds::new(&[TriggerKind::Kv, TriggerKind::Kv]).unwrap();
        assert_eq!(kinds.as_slice(), &[TriggerKind::Kv]);
    }
}

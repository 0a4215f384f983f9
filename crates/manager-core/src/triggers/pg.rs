//! [`TriggerRepository`] over PostgreSQL: the `triggers` parent table and one details
//! table per kind, read back together with a LEFT JOIN on each.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{
    AppId, CollectionGlob, KvOp, RetryPolicy, ScriptId, TriggerId, TriggerKind, UserId,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::{
    repository::{Page, RepoError, RepoResult},
    triggers::{ListTriggers, NewTrigger, Trigger, TriggerDetails, TriggerRepository},
};

/// Triggers stored in `triggers` and the `<kind>_trigger_details` tables.
#[derive(Debug, Clone)]
pub struct PgTriggerRepository {
    pool: PgPool,
}

impl PgTriggerRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The select list and joins every read uses, as a literal so queries can be built with
/// `concat!`.
macro_rules! select {
    () => {
        "SELECT t.id, t.app_id, t.kind, t.script_id, t.enabled, t.registered_by_principal, \
                t.max_attempts, t.backoff_base_ms, t.backoff_max_ms, t.created_at, \
                t.updated_at, kv.collection_glob, kv.ops, dl.source_kinds \
         FROM triggers t \
         LEFT JOIN kv_trigger_details kv ON kv.trigger_id = t.id \
         LEFT JOIN dead_letter_trigger_details dl ON dl.trigger_id = t.id "
    };
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    id: Uuid,
    app_id: Uuid,
    kind: String,
    script_id: Uuid,
    enabled: bool,
    registered_by_principal: Uuid,
    max_attempts: i32,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    collection_glob: Option<String>,
    ops: Option<Vec<String>>,
    source_kinds: Option<Vec<String>>,
}

impl TryFrom<TriggerRow> for Trigger {
    type Error = RepoError;

    fn try_from(row: TriggerRow) -> Result<Self, Self::Error> {
        let id = row.id;
        let bad = |what: &str| corrupt_row(format!("trigger {id} has {what}"));
        let details = match TriggerKind::parse(&row.kind) {
            Some(TriggerKind::Kv) => {
                let glob = row.collection_glob.ok_or_else(|| bad("no kv details"))?;
                let collection = CollectionGlob::parse(&glob)
                    .map_err(|e| bad(&format!("a stored glob {glob:?} that is not valid: {e}")))?;
                let ops = row
                    .ops
                    .unwrap_or_default()
                    .iter()
                    .map(|op| parse_op(op).ok_or_else(|| bad(&format!("a stored op {op:?}"))))
                    .collect::<RepoResult<Vec<KvOp>>>()?;
                TriggerDetails::Kv { collection, ops }.normalized()
            }
            Some(TriggerKind::DeadLetter) => {
                let kinds = row
                    .source_kinds
                    .ok_or_else(|| bad("no dead_letter details"))?;
                let source_kinds = kinds
                    .iter()
                    .map(|k| {
                        TriggerKind::parse(k)
                            .ok_or_else(|| bad(&format!("a stored source kind {k:?}")))
                    })
                    .collect::<RepoResult<Vec<TriggerKind>>>()?;
                TriggerDetails::DeadLetter { source_kinds }.normalized()
            }
            None => return Err(bad(&format!("a stored kind {:?}", row.kind))),
        };
        Ok(Self {
            id: TriggerId::from_uuid(row.id),
            app_id: AppId::from_uuid(row.app_id),
            script_id: ScriptId::from_uuid(row.script_id),
            enabled: row.enabled,
            registered_by: UserId::from_uuid(row.registered_by_principal),
            retry: RetryPolicy {
                max_attempts: u32::try_from(row.max_attempts).unwrap_or(1),
                base_delay_ms: u64::try_from(row.backoff_base_ms).unwrap_or(0),
                max_delay_ms: u64::try_from(row.backoff_max_ms).unwrap_or(0),
            },
            details,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn parse_op(raw: &str) -> Option<KvOp> {
    [KvOp::Set, KvOp::Delete]
        .into_iter()
        .find(|op| op.as_str() == raw)
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

async fn insert_details(
    conn: &mut PgConnection,
    id: TriggerId,
    details: &TriggerDetails,
) -> Result<(), sqlx::Error> {
    match details.clone().normalized() {
        TriggerDetails::Kv { collection, ops } => {
            let ops: Vec<&str> = ops.iter().map(KvOp::as_str).collect();
            sqlx::query(
                "INSERT INTO kv_trigger_details (trigger_id, collection_glob, ops) \
                 VALUES ($1, $2, $3)",
            )
            .bind(id.as_uuid())
            .bind(collection.as_str())
            .bind(&ops)
            .execute(conn)
            .await?;
        }
        TriggerDetails::DeadLetter { source_kinds } => {
            let kinds: Vec<&str> = source_kinds.iter().map(TriggerKind::as_str).collect();
            sqlx::query(
                "INSERT INTO dead_letter_trigger_details (trigger_id, source_kinds) \
                 VALUES ($1, $2)",
            )
            .bind(id.as_uuid())
            .bind(&kinds)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

impl PgTriggerRepository {
    async fn fetch(&self, id: TriggerId) -> RepoResult<Option<Trigger>> {
        let row: Option<TriggerRow> = sqlx::query_as(concat!(select!(), "WHERE t.id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(Trigger::try_from).transpose()
    }
}

#[async_trait]
impl TriggerRepository for PgTriggerRepository {
    #[tracing::instrument(skip(self, new), fields(app_id = %new.app_id, script_id = %new.script_id))]
    async fn create(&self, new: NewTrigger) -> RepoResult<Trigger> {
        let id = TriggerId::new();
        let violations = || Violations {
            foreign_keys: vec![
                (
                    "triggers_registered_by_principal_fkey",
                    format!("user {}", new.registered_by),
                ),
                ("triggers_app_id_fkey", format!("app {}", new.app_id)),
            ],
            foreign_key: Some(format!("script {} in app {}", new.script_id, new.app_id)),
            ..Violations::default()
        };
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Inserting from the script's row is what ties the target to the trigger's app: a
        // script of another app (or none) inserts nothing.
        let inserted = sqlx::query(
            "INSERT INTO triggers (id, app_id, kind, script_id, enabled, \
                                   registered_by_principal, max_attempts, backoff_base_ms, \
                                   backoff_max_ms) \
             SELECT $1, s.app_id, $3, s.id, $5, $6, $7, $8, $9 \
             FROM scripts s WHERE s.id = $4 AND s.app_id = $2",
        )
        .bind(id.as_uuid())
        .bind(new.app_id.as_uuid())
        .bind(new.details.kind().as_str())
        .bind(new.script_id.as_uuid())
        .bind(new.enabled)
        .bind(new.registered_by.as_uuid())
        .bind(i32::try_from(new.retry.max_attempts).unwrap_or(i32::MAX))
        .bind(millis(new.retry.base_delay_ms))
        .bind(millis(new.retry.max_delay_ms))
        .execute(&mut *tx)
        .await
        .map_err(|e| translate(e, violations()))?
        .rows_affected();
        if inserted == 0 {
            return Err(RepoError::NotFound {
                what: format!("script {} in app {}", new.script_id, new.app_id),
            });
        }
        insert_details(&mut tx, id, &new.details)
            .await
            .map_err(|e| translate(e, violations()))?;
        tx.commit().await.map_err(db_error)?;
        self.fetch(id).await?.ok_or_else(|| {
            RepoError::Internal(format!("trigger {id} vanished right after its creation").into())
        })
    }

    async fn get(&self, id: TriggerId) -> RepoResult<Option<Trigger>> {
        self.fetch(id).await
    }

    async fn list(&self, query: ListTriggers) -> RepoResult<Page<Trigger>> {
        let apps: Option<Vec<Uuid>> = query
            .apps
            .map(|apps| apps.iter().map(AppId::as_uuid).collect());
        let kind = query.kind.map(|k| k.as_str());
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM triggers \
             WHERE ($1::uuid[] IS NULL OR app_id = ANY($1)) AND ($2::text IS NULL OR kind = $2)",
        )
        .bind(&apps)
        .bind(kind)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let rows: Vec<TriggerRow> = sqlx::query_as(concat!(
            select!(),
            "WHERE ($1::uuid[] IS NULL OR t.app_id = ANY($1)) ",
            "AND ($2::text IS NULL OR t.kind = $2) ",
            "ORDER BY t.created_at, t.id LIMIT $3 OFFSET $4"
        ))
        .bind(&apps)
        .bind(kind)
        .bind(i64::from(query.limit))
        .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(Trigger::try_from)
                .collect::<RepoResult<_>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    #[tracing::instrument(skip(self))]
    async fn set_enabled(&self, id: TriggerId, enabled: bool) -> RepoResult<Trigger> {
        let done =
            sqlx::query("UPDATE triggers SET enabled = $2, updated_at = now() WHERE id = $1")
                .bind(id.as_uuid())
                .bind(enabled)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(RepoError::NotFound {
                what: format!("trigger {id}"),
            });
        }
        self.fetch(id).await?.ok_or_else(|| RepoError::NotFound {
            what: format!("trigger {id}"),
        })
    }

    #[tracing::instrument(skip(self))]
    async fn delete(&self, id: TriggerId) -> RepoResult<()> {
        let done = sqlx::query("DELETE FROM triggers WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(RepoError::NotFound {
                what: format!("trigger {id}"),
            });
        }
        Ok(())
    }

    async fn matching_kv(
        &self,
        app: AppId,
        collection: &str,
        op: KvOp,
    ) -> RepoResult<Vec<Trigger>> {
        let rows: Vec<TriggerRow> = sqlx::query_as(concat!(
            select!(),
            "WHERE t.app_id = $1 AND t.kind = 'kv' AND t.enabled AND $2 = ANY (kv.ops) ",
            "ORDER BY t.created_at, t.id"
        ))
        .bind(app.as_uuid())
        .bind(op.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut matched = Vec::new();
        for row in rows {
            let trigger = Trigger::try_from(row)?;
            if trigger.details.matches_kv(collection, op) {
                matched.push(trigger);
            }
        }
        Ok(matched)
    }
}

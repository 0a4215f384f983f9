//! [`ExecutionLogRepository`] over PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{
    AppId, ExecutionId, ExecutionRecord, ExecutionStatus, InvocationType, LogEntry, RequestId,
    ScriptId, TriggerId,
};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{corrupt_row, db_error, storable_text};
use crate::{
    executions::{ExecutionCursor, ExecutionLogRepository},
    repository::{RepoError, RepoResult},
};

/// Execution records stored in the `execution_logs` table.
#[derive(Debug, Clone)]
pub struct PgExecutionLogRepository {
    pool: PgPool,
}

impl PgExecutionLogRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The columns an [`ExecutionRow`] reads, as a literal so queries can be built with `concat!`.
macro_rules! columns {
    () => {
        "id, script_id, app_id, script_version, invocation_type, request_id, status, \
         http_status, duration_ms, logs, error, started_at, trigger_id"
    };
}

#[derive(sqlx::FromRow)]
struct ExecutionRow {
    id: Uuid,
    script_id: Uuid,
    app_id: Uuid,
    script_version: Option<i64>,
    invocation_type: String,
    request_id: String,
    status: String,
    http_status: Option<i32>,
    duration_ms: i64,
    logs: Json<Vec<LogEntry>>,
    error: Option<String>,
    started_at: DateTime<Utc>,
    trigger_id: Option<Uuid>,
}

impl TryFrom<ExecutionRow> for ExecutionRecord {
    type Error = RepoError;

    fn try_from(row: ExecutionRow) -> Result<Self, Self::Error> {
        let bad = |column: &str, value: &str| {
            corrupt_row(format!(
                "execution {} has a stored {column} {value:?} that is not valid",
                row.id
            ))
        };
        let invocation_type = match row.invocation_type.as_str() {
            "http" => InvocationType::Http,
            "trigger" => InvocationType::Trigger,
            other => return Err(bad("invocation_type", other)),
        };
        let status =
            ExecutionStatus::parse(&row.status).ok_or_else(|| bad("status", &row.status))?;
        let request_id =
            RequestId::parse(&row.request_id).ok_or_else(|| bad("request_id", &row.request_id))?;
        Ok(Self {
            id: ExecutionId::from_uuid(row.id),
            script_id: ScriptId::from_uuid(row.script_id),
            app_id: AppId::from_uuid(row.app_id),
            // Records without a version are not written today; 0 is never a real version.
            script_version: row.script_version.unwrap_or(0),
            invocation_type,
            trigger_id: row.trigger_id.map(TriggerId::from_uuid),
            request_id,
            status,
            http_status: row.http_status.and_then(|s| u16::try_from(s).ok()),
            duration_ms: u64::try_from(row.duration_ms).unwrap_or(0),
            logs: row.logs.0,
            error: row.error,
            started_at: row.started_at,
        })
    }
}

/// A batch turned into one array per column, so any number of records is one `UNNEST`
/// insert with one parameter per column rather than one per column and record.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    script_ids: Vec<Uuid>,
    app_ids: Vec<Uuid>,
    versions: Vec<i64>,
    invocation_types: Vec<&'static str>,
    request_ids: Vec<String>,
    statuses: Vec<&'static str>,
    http_statuses: Vec<Option<i32>>,
    durations: Vec<i64>,
    logs: Vec<Json<Vec<LogEntry>>>,
    errors: Vec<Option<String>>,
    started_ats: Vec<DateTime<Utc>>,
    trigger_ids: Vec<Option<Uuid>>,
}

impl Columns {
    fn of(records: &[ExecutionRecord]) -> Self {
        let mut c = Self::default();
        for r in records {
            c.ids.push(r.id.as_uuid());
            c.script_ids.push(r.script_id.as_uuid());
            c.app_ids.push(r.app_id.as_uuid());
            c.versions.push(r.script_version);
            c.invocation_types.push(r.invocation_type.as_str());
            c.request_ids.push(r.request_id.as_str().to_owned());
            c.statuses.push(r.status.as_str());
            c.http_statuses.push(r.http_status.map(i32::from));
            c.durations
                .push(i64::try_from(r.duration_ms).unwrap_or(i64::MAX));
            c.logs.push(Json(
                r.logs
                    .iter()
                    .map(|entry| LogEntry {
                        level: entry.level,
                        message: storable_text(&entry.message).into_owned(),
                        at: entry.at,
                    })
                    .collect(),
            ));
            c.errors
                .push(r.error.as_deref().map(|e| storable_text(e).into_owned()));
            c.started_ats.push(r.started_at);
            c.trigger_ids.push(r.trigger_id.map(|t| t.as_uuid()));
        }
        c
    }
}

#[async_trait]
impl ExecutionLogRepository for PgExecutionLogRepository {
    #[tracing::instrument(skip_all, fields(count = records.len()))]
    async fn insert_batch(&self, records: &[ExecutionRecord]) -> RepoResult<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let c = Columns::of(records);
        let done = sqlx::query(concat!(
            "INSERT INTO execution_logs (",
            columns!(),
            ") SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int8[], $5::text[], ",
            "$6::text[], $7::text[], $8::int4[], $9::int8[], $10::jsonb[], $11::text[], ",
            "$12::timestamptz[], $13::uuid[]) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(&c.ids)
        .bind(&c.script_ids)
        .bind(&c.app_ids)
        .bind(&c.versions)
        .bind(&c.invocation_types)
        .bind(&c.request_ids)
        .bind(&c.statuses)
        .bind(&c.http_statuses)
        .bind(&c.durations)
        .bind(&c.logs)
        .bind(&c.errors)
        .bind(&c.started_ats)
        .bind(&c.trigger_ids)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn list_for_script(
        &self,
        script: ScriptId,
        limit: u32,
        before: Option<ExecutionCursor>,
    ) -> RepoResult<Vec<ExecutionRecord>> {
        // Two statements rather than one with `$2 IS NULL OR …`, so each gets a plan that
        // walks the (script_id, started_at DESC, id DESC) index.
        let query = match before {
            None => sqlx::query_as::<_, ExecutionRow>(concat!(
                "SELECT ",
                columns!(),
                " FROM execution_logs WHERE script_id = $1 ",
                "ORDER BY started_at DESC, id DESC LIMIT $2"
            ))
            .bind(script.as_uuid())
            .bind(i64::from(limit)),
            Some(cursor) => sqlx::query_as::<_, ExecutionRow>(concat!(
                "SELECT ",
                columns!(),
                " FROM execution_logs WHERE script_id = $1 AND (started_at, id) < ($3, $4) ",
                "ORDER BY started_at DESC, id DESC LIMIT $2"
            ))
            .bind(script.as_uuid())
            .bind(i64::from(limit))
            .bind(cursor.started_at)
            .bind(cursor.id.as_uuid()),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
        rows.into_iter().map(ExecutionRecord::try_from).collect()
    }

    async fn get(&self, id: ExecutionId) -> RepoResult<Option<ExecutionRecord>> {
        let row: Option<ExecutionRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM execution_logs WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(ExecutionRecord::try_from).transpose()
    }

    #[tracing::instrument(skip(self))]
    async fn prune_older_than(&self, cutoff: DateTime<Utc>) -> RepoResult<u64> {
        let done = sqlx::query("DELETE FROM execution_logs WHERE started_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

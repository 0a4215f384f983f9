//! [`DeadLetterRepository`] and [`AbandonedExecutionRepository`] over PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, DeadLetterId, ScriptId, TriggerId, TriggerKind};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{corrupt_row, db_error};
use crate::outbox::OutboxSignal;
use crate::{
    dead_letters::{
        AbandonedExecutionRepository, DeadLetter, DeadLetterActionError, DeadLetterRepository,
        ListDeadLetters, NewDeadLetter, Resolution,
    },
    repository::{RepoError, RepoResult},
};

/// Dead letters stored in the `dead_letters` table.
#[derive(Debug, Clone)]
pub struct PgDeadLetterRepository {
    pool: PgPool,
    signal: OutboxSignal,
}

impl PgDeadLetterRepository {
    /// A repository over `pool`; a replay's outbox row is announced through `signal` once
    /// it committed.
    pub fn new(pool: PgPool, signal: OutboxSignal) -> Self {
        Self { pool, signal }
    }
}

/// The columns a [`DeadLetterRow`] reads, as a literal so queries can be built with
/// `concat!`.
macro_rules! columns {
    () => {
        "id, app_id, trigger_id, trigger_kind, script_id, event, depth, attempts, last_error, \
         failed_at, resolution, resolved_at"
    };
}

#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    id: Uuid,
    app_id: Uuid,
    trigger_id: Option<Uuid>,
    trigger_kind: String,
    script_id: Option<Uuid>,
    event: Value,
    depth: i32,
    attempts: i32,
    last_error: String,
    failed_at: DateTime<Utc>,
    resolution: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
}

impl TryFrom<DeadLetterRow> for DeadLetter {
    type Error = RepoError;

    fn try_from(row: DeadLetterRow) -> Result<Self, Self::Error> {
        let bad = |column: &str, value: &str| {
            corrupt_row(format!(
                "dead letter {} has a stored {column} {value:?} that is not valid",
                row.id
            ))
        };
        let trigger_kind = TriggerKind::parse(&row.trigger_kind)
            .ok_or_else(|| bad("trigger_kind", &row.trigger_kind))?;
        let resolution = match row.resolution.as_deref() {
            None => None,
            Some(raw) => Some(Resolution::parse(raw).ok_or_else(|| bad("resolution", raw))?),
        };
        Ok(Self {
            id: DeadLetterId::from_uuid(row.id),
            app_id: AppId::from_uuid(row.app_id),
            trigger_id: row.trigger_id.map(TriggerId::from_uuid),
            trigger_kind,
            script_id: row.script_id.map(ScriptId::from_uuid),
            event: row.event,
            depth: u32::try_from(row.depth).unwrap_or(0),
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            last_error: row.last_error,
            failed_at: row.failed_at,
            resolution,
            resolved_at: row.resolved_at,
        })
    }
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Records an unresolved dead letter inside the caller's transaction (the emitter's depth
/// refusal, a dispatcher giving up), so it commits or rolls back with the rest.
pub async fn insert_dead_letter(
    conn: &mut PgConnection,
    new: &NewDeadLetter,
) -> RepoResult<DeadLetter> {
    let row: DeadLetterRow = sqlx::query_as(concat!(
        "INSERT INTO dead_letters (id, app_id, trigger_id, trigger_kind, script_id, event, ",
        "depth, attempts, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
        columns!()
    ))
    .bind(DeadLetterId::new().as_uuid())
    .bind(new.app_id.as_uuid())
    .bind(new.trigger_id.map(|t| t.as_uuid()))
    .bind(new.trigger_kind.as_str())
    .bind(new.script_id.map(|s| s.as_uuid()))
    .bind(&new.event)
    .bind(to_i32(new.depth))
    .bind(to_i32(new.attempts))
    .bind(&new.last_error)
    .fetch_one(conn)
    .await
    .map_err(db_error)?;
    row.try_into()
}

/// The dead letter, locked for the rest of the transaction so that a replay and an ignore
/// (or a handler's outcome) cannot both resolve it.
async fn locked(
    conn: &mut PgConnection,
    id: DeadLetterId,
) -> Result<DeadLetter, DeadLetterActionError> {
    let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM dead_letters WHERE id = $1 FOR UPDATE"
    ))
    .bind(id.as_uuid())
    .fetch_optional(conn)
    .await
    .map_err(db_error)?;
    let dead_letter: DeadLetter = row.ok_or(DeadLetterActionError::NotFound(id))?.try_into()?;
    match dead_letter.resolution {
        Some(resolution) if resolution.is_final() => {
            Err(DeadLetterActionError::AlreadyResolved { id, resolution })
        }
        _ => Ok(dead_letter),
    }
}

async fn resolve(
    conn: &mut PgConnection,
    id: DeadLetterId,
    resolution: Resolution,
) -> RepoResult<DeadLetter> {
    let row: DeadLetterRow = sqlx::query_as(concat!(
        "UPDATE dead_letters SET resolution = $2, resolved_at = now() WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id.as_uuid())
    .bind(resolution.as_str())
    .fetch_one(conn)
    .await
    .map_err(db_error)?;
    row.try_into()
}

#[async_trait]
impl DeadLetterRepository for PgDeadLetterRepository {
    #[tracing::instrument(skip_all, fields(app_id = %new.app_id))]
    async fn record(&self, new: NewDeadLetter) -> RepoResult<DeadLetter> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        insert_dead_letter(&mut conn, &new).await
    }

    async fn get(&self, id: DeadLetterId) -> RepoResult<Option<DeadLetter>> {
        let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(DeadLetter::try_from).transpose()
    }

    async fn list(&self, query: ListDeadLetters) -> RepoResult<Vec<DeadLetter>> {
        // `resolution IS NULL` is spelled out (not `$2 AND …`) in the unresolved variants
        // so their plans can use the partial index of unresolved rows.
        let sql = match (query.unresolved_only, query.before.is_some()) {
            (true, false) => concat!(
                "SELECT ",
                columns!(),
                " FROM dead_letters WHERE app_id = $1 AND resolution IS NULL ",
                "ORDER BY failed_at DESC, id DESC LIMIT $2"
            ),
            (true, true) => concat!(
                "SELECT ",
                columns!(),
                " FROM dead_letters WHERE app_id = $1 AND resolution IS NULL ",
                "AND (failed_at, id) < ($3, $4) ORDER BY failed_at DESC, id DESC LIMIT $2"
            ),
            (false, false) => concat!(
                "SELECT ",
                columns!(),
                " FROM dead_letters WHERE app_id = $1 ",
                "ORDER BY failed_at DESC, id DESC LIMIT $2"
            ),
            (false, true) => concat!(
                "SELECT ",
                columns!(),
                " FROM dead_letters WHERE app_id = $1 AND (failed_at, id) < ($3, $4) ",
                "ORDER BY failed_at DESC, id DESC LIMIT $2"
            ),
        };
        let mut statement = sqlx::query_as::<_, DeadLetterRow>(sql)
            .bind(query.app.as_uuid())
            .bind(i64::from(query.limit));
        if let Some(cursor) = query.before {
            statement = statement.bind(cursor.failed_at).bind(cursor.id.as_uuid());
        }
        let rows = statement.fetch_all(&self.pool).await.map_err(db_error)?;
        rows.into_iter().map(DeadLetter::try_from).collect()
    }

    async fn count_unresolved(&self, app: AppId) -> RepoResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dead_letters WHERE app_id = $1 AND resolution IS NULL",
        )
        .bind(app.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    #[tracing::instrument(skip(self))]
    async fn replay(&self, id: DeadLetterId) -> Result<DeadLetter, DeadLetterActionError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let dead_letter = locked(&mut tx, id).await?;
        let trigger = dead_letter
            .trigger_id
            .ok_or(DeadLetterActionError::NoTrigger(id))?;
        // The trigger's current target: a trigger keeps its script, but reading it here
        // rather than trusting the dead letter also proves the trigger still exists.
        let enqueued = sqlx::query(
            "INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth) \
             SELECT $1, t.app_id, t.id, t.script_id, $3, $4 FROM triggers t \
             WHERE t.id = $2 AND t.app_id = $5 \
             FOR KEY SHARE OF t",
        )
        .bind(Uuid::now_v7())
        .bind(trigger.as_uuid())
        .bind(&dead_letter.event)
        .bind(to_i32(dead_letter.depth.max(1)))
        .bind(dead_letter.app_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if enqueued == 0 {
            return Err(DeadLetterActionError::NoTrigger(id));
        }
        let replayed = resolve(&mut tx, id, Resolution::Replayed).await?;
        tx.commit().await.map_err(db_error)?;
        self.signal.rows_committed();
        tracing::info!(dead_letter_id = %id, trigger_id = %trigger, "dead letter replayed");
        Ok(replayed)
    }

    #[tracing::instrument(skip(self))]
    async fn ignore(&self, id: DeadLetterId) -> Result<DeadLetter, DeadLetterActionError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        locked(&mut tx, id).await?;
        let ignored = resolve(&mut tx, id, Resolution::Ignored).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(ignored)
    }

    #[tracing::instrument(skip(self))]
    async fn prune_resolved_before(&self, cutoff: DateTime<Utc>) -> RepoResult<u64> {
        let done = sqlx::query(
            "DELETE FROM dead_letters WHERE resolution IS NOT NULL AND resolved_at < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

/// Abandoned results stored in the `abandoned_executions` table.
#[derive(Debug, Clone)]
pub struct PgAbandonedExecutionRepository {
    pool: PgPool,
}

impl PgAbandonedExecutionRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl AbandonedExecutionRepository for PgAbandonedExecutionRepository {
    #[tracing::instrument(skip(self))]
    async fn prune_before(&self, cutoff: DateTime<Utc>) -> RepoResult<u64> {
        let done = sqlx::query("DELETE FROM abandoned_executions WHERE abandoned_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

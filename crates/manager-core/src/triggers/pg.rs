//! [`TriggerRepository`] over PostgreSQL: the `triggers` parent table, and one details
//! table per kind that only the kind's module (`kinds/`) reads and writes.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, EventSubject, RetryPolicy, ScriptId, TriggerId, TriggerKind, UserId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::kinds::{self, Target, TriggerDetails};
use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::repository::{RepoError, RepoResult};
use crate::triggers::{ListTriggers, NewTrigger, Trigger, TriggerRepository, TriggerUpdate};

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

/// The parent columns every read takes, as a literal so queries can be built with
/// `concat!`.
macro_rules! select {
    () => {
        "SELECT t.id, t.app_id, t.kind, t.script_id, t.enabled, t.registered_by_principal, \
                t.max_attempts, t.backoff_base_ms, t.backoff_max_ms, t.created_at, \
                t.updated_at \
         FROM triggers t "
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
}

impl TriggerRow {
    fn into_trigger(self, details: &mut HashMap<Uuid, TriggerDetails>) -> RepoResult<Trigger> {
        let id = self.id;
        let details = details
            .remove(&id)
            .ok_or_else(|| corrupt_row(format!("trigger {id} has no {} details", self.kind)))?;
        Ok(Trigger {
            id: TriggerId::from_uuid(self.id),
            app_id: AppId::from_uuid(self.app_id),
            script_id: ScriptId::from_uuid(self.script_id),
            enabled: self.enabled,
            registered_by: UserId::from_uuid(self.registered_by_principal),
            retry: RetryPolicy {
                max_attempts: u32::try_from(self.max_attempts).unwrap_or(1),
                base_delay_ms: u64::try_from(self.backoff_base_ms).unwrap_or(0),
                max_delay_ms: u64::try_from(self.backoff_max_ms).unwrap_or(0),
            },
            details,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The triggers of `rows` with their details: one read per kind among them.
async fn with_details(conn: &mut PgConnection, rows: Vec<TriggerRow>) -> RepoResult<Vec<Trigger>> {
    let mut by_kind: HashMap<TriggerKind, Vec<Uuid>> = HashMap::new();
    for row in &rows {
        let kind = TriggerKind::parse(&row.kind).ok_or_else(|| {
            corrupt_row(format!(
                "trigger {} has a stored kind {:?}",
                row.id, row.kind
            ))
        })?;
        by_kind.entry(kind).or_default().push(row.id);
    }
    let mut details = HashMap::new();
    for (kind, ids) in by_kind {
        details.extend(kinds::load(conn, kind, &ids).await?);
    }
    rows.into_iter()
        .map(|row| row.into_trigger(&mut details))
        .collect()
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl PgTriggerRepository {
    async fn fetch(&self, id: TriggerId) -> RepoResult<Option<Trigger>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        fetch(&mut conn, id).await
    }
}

async fn fetch(conn: &mut PgConnection, id: TriggerId) -> RepoResult<Option<Trigger>> {
    let row: Option<TriggerRow> = sqlx::query_as(concat!(select!(), "WHERE t.id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => Ok(with_details(conn, vec![row]).await?.pop()),
        None => Ok(None),
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
        new.details.save(&mut tx, id).await?;
        tx.commit().await.map_err(db_error)?;
        self.fetch(id).await?.ok_or_else(|| {
            RepoError::Internal(format!("trigger {id} vanished right after its creation").into())
        })
    }

    async fn get(&self, id: TriggerId) -> RepoResult<Option<Trigger>> {
        self.fetch(id).await
    }

    async fn list(&self, query: ListTriggers) -> RepoResult<Vec<Trigger>> {
        let apps: Option<Vec<Uuid>> = query
            .apps
            .map(|apps| apps.iter().map(AppId::as_uuid).collect());
        let kind = query.kind.map(|k| k.as_str());
        let (after_at, after_id) = query.after.map(|(at, id)| (at, id.as_uuid())).unzip();
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let rows: Vec<TriggerRow> = sqlx::query_as(concat!(
            select!(),
            "WHERE ($1::uuid[] IS NULL OR t.app_id = ANY($1)) ",
            "AND ($2::text IS NULL OR t.kind = $2) ",
            "AND ($4::timestamptz IS NULL OR (t.created_at, t.id) > ($4, $5)) ",
            "ORDER BY t.created_at, t.id LIMIT $3"
        ))
        .bind(&apps)
        .bind(kind)
        .bind(i64::from(query.limit))
        .bind(after_at)
        .bind(after_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        with_details(&mut conn, rows).await
    }

    #[tracing::instrument(skip(self, update))]
    async fn update(&self, id: TriggerId, update: TriggerUpdate) -> RepoResult<Trigger> {
        let not_found = || RepoError::NotFound {
            what: format!("trigger {id}"),
        };
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The row lock orders concurrent updates of one trigger.
        let kind: Option<String> =
            sqlx::query_scalar("SELECT kind FROM triggers WHERE id = $1 FOR UPDATE")
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let kind = kind.ok_or_else(not_found)?;
        if let Some(details) = &update.details {
            if details.kind().as_str() != kind {
                return Err(RepoError::Invalid(format!(
                    "trigger {id} is a {kind} trigger; its details cannot become {}",
                    details.kind()
                )));
            }
            details.save(&mut tx, id).await?;
        }
        let retry = update.retry;
        sqlx::query(
            "UPDATE triggers SET enabled = coalesce($2, enabled), \
                 max_attempts = coalesce($3, max_attempts), \
                 backoff_base_ms = coalesce($4, backoff_base_ms), \
                 backoff_max_ms = coalesce($5, backoff_max_ms), \
                 updated_at = now() \
             WHERE id = $1",
        )
        .bind(id.as_uuid())
        .bind(update.enabled)
        .bind(retry.map(|r| i32::try_from(r.max_attempts).unwrap_or(i32::MAX)))
        .bind(retry.map(|r| millis(r.base_delay_ms)))
        .bind(retry.map(|r| millis(r.max_delay_ms)))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let trigger = fetch(&mut tx, id).await?.ok_or_else(not_found)?;
        tx.commit().await.map_err(db_error)?;
        Ok(trigger)
    }

    #[tracing::instrument(skip(self))]
    async fn delete(&self, id: TriggerId) -> RepoResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        crate::outbox::dead_letter_queued(
            &mut tx,
            crate::outbox::DoomedTriggers::Trigger(id.as_uuid()),
        )
        .await?;
        let done = sqlx::query("DELETE FROM triggers WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(RepoError::NotFound {
                what: format!("trigger {id}"),
            });
        }
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn targets(&self, app: AppId, subject: &EventSubject) -> RepoResult<Vec<Target>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let targets = kinds::targets(&mut tx, app, subject).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(targets)
    }
}

//! [`ScriptRepository`] over PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, AppSlug, Script, ScriptId, ScriptLimits, ScriptName};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::{
    repository::{RepoError, RepoResult},
    scripts::{ListScripts, NewScript, ScriptRepository, ScriptSummary, ScriptUpdate},
};

/// Scripts stored in the `scripts` table.
#[derive(Debug, Clone)]
pub struct PgScriptRepository {
    pool: PgPool,
}

impl PgScriptRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[derive(sqlx::FromRow)]
struct ScriptRow {
    id: Uuid,
    app_id: Uuid,
    name: String,
    source: String,
    limits: Json<ScriptLimits>,
    version: i64,
    require_token: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ScriptRow> for Script {
    type Error = RepoError;

    fn try_from(row: ScriptRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: ScriptId::from_uuid(row.id),
            app_id: AppId::from_uuid(row.app_id),
            name: stored_name(&row.name, row.id)?,
            source: row.source,
            limits: row.limits.0,
            version: row.version,
            require_token: row.require_token,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    app_id: Uuid,
    name: String,
    limits: Json<ScriptLimits>,
    version: i64,
    require_token: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SummaryRow> for ScriptSummary {
    type Error = RepoError;

    fn try_from(row: SummaryRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: ScriptId::from_uuid(row.id),
            app_id: AppId::from_uuid(row.app_id),
            name: stored_name(&row.name, row.id)?,
            limits: row.limits.0,
            version: row.version,
            require_token: row.require_token,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn stored_name(raw: &str, id: Uuid) -> RepoResult<ScriptName> {
    ScriptName::parse(raw).map_err(|e| {
        corrupt_row(format!(
            "script {id} has a stored name {raw:?} that is not valid: {e}"
        ))
    })
}

fn name_conflict(name: &ScriptName, app_id: AppId) -> String {
    format!("script '{name}' in app {app_id}")
}

/// The columns a [`ScriptRow`] reads, as a literal so queries can be built with `concat!`.
macro_rules! columns {
    () => {
        "id, app_id, name, source, limits, version, require_token, created_at, updated_at"
    };
}

#[async_trait]
impl ScriptRepository for PgScriptRepository {
    #[tracing::instrument(skip(self, new), fields(app_id = %new.app_id, name = %new.name))]
    async fn create(&self, new: NewScript) -> RepoResult<Script> {
        let row: ScriptRow = sqlx::query_as(concat!(
            "INSERT INTO scripts (id, app_id, name, source, limits, require_token) ",
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            columns!()
        ))
        .bind(ScriptId::new().as_uuid())
        .bind(new.app_id.as_uuid())
        .bind(new.name.as_str())
        .bind(&new.source)
        .bind(Json(new.limits))
        .bind(new.require_token)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            translate(
                e,
                Violations {
                    unique: Some(name_conflict(&new.name, new.app_id)),
                    foreign_key: Some(format!("app {}", new.app_id)),
                    ..Violations::default()
                },
            )
        })?;
        row.try_into()
    }

    async fn get(&self, id: ScriptId) -> RepoResult<Option<Script>> {
        let row: Option<ScriptRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM scripts WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Script::try_from).transpose()
    }

    async fn get_by_name(&self, app: &AppSlug, name: &ScriptName) -> RepoResult<Option<Script>> {
        let row: Option<ScriptRow> = sqlx::query_as(
            "SELECT s.id, s.app_id, s.name, s.source, s.limits, s.version, s.require_token, \
                    s.created_at, s.updated_at \
             FROM scripts s JOIN apps a ON a.id = s.app_id \
             WHERE a.slug = $1 AND s.name = $2",
        )
        .bind(app.as_str())
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Script::try_from).transpose()
    }

    async fn list(&self, query: ListScripts) -> RepoResult<Vec<ScriptSummary>> {
        // Byte order ("C") rather than the database's collation, so the order is the same on
        // every server and matches the in-memory repository.
        let apps: Option<Vec<Uuid>> = query
            .apps
            .map(|apps| apps.iter().map(AppId::as_uuid).collect::<Vec<Uuid>>());
        let (after_name, after_id) = query
            .after
            .map(|(name, id)| (name.as_str().to_owned(), id.as_uuid()))
            .unzip();
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT id, app_id, name, limits, version, require_token, created_at, updated_at \
             FROM scripts \
             WHERE ($1::uuid[] IS NULL OR app_id = ANY($1)) \
               AND ($3::text IS NULL OR (name COLLATE \"C\", id) > ($3, $4)) \
             ORDER BY name COLLATE \"C\", id LIMIT $2",
        )
        .bind(&apps)
        .bind(i64::from(query.limit))
        .bind(after_name)
        .bind(after_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(ScriptSummary::try_from).collect()
    }

    #[tracing::instrument(skip(self, update))]
    async fn update(&self, id: ScriptId, update: ScriptUpdate) -> RepoResult<Script> {
        if update.is_empty() {
            return Err(RepoError::Invalid("the update changes nothing".to_owned()));
        }
        // One statement, so the change and the version bump commit together.
        let result = sqlx::query_as::<_, ScriptRow>(concat!(
            "UPDATE scripts SET name = COALESCE($2, name), source = COALESCE($3, source), ",
            "limits = COALESCE($4, limits), require_token = COALESCE($5, require_token), ",
            "version = version + 1, updated_at = now() ",
            "WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(id.as_uuid())
        .bind(update.name.as_ref().map(ScriptName::as_str))
        .bind(update.source.as_deref())
        .bind(update.limits.map(Json))
        .bind(update.require_token)
        .fetch_optional(&self.pool)
        .await;
        match result {
            Ok(Some(row)) => row.try_into(),
            Ok(None) => Err(RepoError::NotFound {
                what: format!("script {id}"),
            }),
            Err(err) => Err(translate(
                err,
                Violations {
                    unique: update
                        .name
                        .as_ref()
                        .map(|name| format!("script '{name}' in the same app")),
                    ..Violations::default()
                },
            )),
        }
    }

    #[tracing::instrument(skip(self))]
    async fn delete(&self, id: ScriptId) -> RepoResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        crate::outbox::dead_letter_queued(
            &mut tx,
            crate::outbox::DoomedTriggers::OfScript(id.as_uuid()),
        )
        .await?;
        let done = sqlx::query("DELETE FROM scripts WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(RepoError::NotFound {
                what: format!("script {id}"),
            });
        }
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }
}

//! [`AppRepository`] over PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, AppSlug, ScriptId, UserId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::{
    apps::{App, AppRepository, AppUpdate, ListApps},
    repository::{RepoError, RepoResult},
};

/// Apps stored in the `apps` table.
#[derive(Debug, Clone)]
pub struct PgAppRepository {
    pool: PgPool,
}

impl PgAppRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[derive(sqlx::FromRow)]
struct AppRow {
    id: Uuid,
    slug: String,
    name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<AppRow> for App {
    type Error = RepoError;

    fn try_from(row: AppRow) -> Result<Self, Self::Error> {
        let slug = AppSlug::parse(&row.slug).map_err(|e| {
            corrupt_row(format!(
                "app {} has a stored slug {:?} that is not valid: {e}",
                row.id, row.slug
            ))
        })?;
        Ok(Self {
            id: AppId::from_uuid(row.id),
            slug,
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn slug_taken(slug: &AppSlug) -> Violations {
    Violations {
        unique: Some(format!("app '{slug}'")),
        ..Violations::default()
    }
}

/// The answer for a slug another app gave up by renaming: still that app's.
fn slug_reserved(slug: &AppSlug) -> RepoError {
    RepoError::Conflict {
        what: format!("a reservation of slug '{slug}' for the app that used it before a rename"),
    }
}

/// Serialises every statement that takes or gives up `slug` (a rename away from it and a
/// rename or create onto it), so a check of the reservations cannot race the reservation.
async fn lock_slug(conn: &mut sqlx::PgConnection, slug: &str) -> RepoResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('picloud app slug ' || $1, 0))")
        .bind(slug)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Refuses `slug` when another app than `app` retired it.
async fn check_not_reserved(
    conn: &mut sqlx::PgConnection,
    slug: &AppSlug,
    app: Option<AppId>,
) -> RepoResult<()> {
    let holder: Option<Uuid> =
        sqlx::query_scalar("SELECT app_id FROM retired_slugs WHERE slug = $1")
            .bind(slug.as_str())
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
    match holder {
        Some(holder) if Some(AppId::from_uuid(holder)) != app => Err(slug_reserved(slug)),
        _ => Ok(()),
    }
}

fn not_found(id: AppId) -> RepoError {
    RepoError::NotFound {
        what: format!("app {id}"),
    }
}

#[async_trait]
impl AppRepository for PgAppRepository {
    async fn get(&self, id: AppId) -> RepoResult<Option<App>> {
        let row: Option<AppRow> =
            sqlx::query_as("SELECT id, slug, name, created_at, updated_at FROM apps WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        row.map(App::try_from).transpose()
    }

    async fn get_by_slug(&self, slug: &AppSlug) -> RepoResult<Option<App>> {
        let row: Option<AppRow> = sqlx::query_as(
            "SELECT id, slug, name, created_at, updated_at FROM apps WHERE slug = $1",
        )
        .bind(slug.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(App::try_from).transpose()
    }

    #[tracing::instrument(skip(self, name))]
    async fn create(&self, slug: AppSlug, name: String, owner: Option<UserId>) -> RepoResult<App> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        lock_slug(&mut tx, slug.as_str()).await?;
        check_not_reserved(&mut tx, &slug, None).await?;
        let row: AppRow = sqlx::query_as(
            "INSERT INTO apps (id, slug, name) VALUES ($1, $2, $3) \
             RETURNING id, slug, name, created_at, updated_at",
        )
        .bind(AppId::new().as_uuid())
        .bind(slug.as_str())
        .bind(&name)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| translate(e, slug_taken(&slug)))?;
        if let Some(owner) = owner {
            sqlx::query("INSERT INTO app_members (app_id, user_id, role) VALUES ($1, $2, 'owner')")
                .bind(row.id)
                .bind(owner.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    translate(
                        e,
                        Violations {
                            foreign_key: Some(format!("user {owner}")),
                            ..Violations::default()
                        },
                    )
                })?;
        }
        tx.commit().await.map_err(db_error)?;
        row.try_into()
    }

    async fn list(&self, query: ListApps) -> RepoResult<Vec<App>> {
        let only: Option<Vec<Uuid>> = query
            .only
            .map(|ids| ids.iter().map(AppId::as_uuid).collect());
        let rows: Vec<AppRow> = sqlx::query_as(
            "SELECT id, slug, name, created_at, updated_at FROM apps \
             WHERE ($1::uuid[] IS NULL OR id = ANY($1)) \
               AND ($3::text IS NULL OR slug COLLATE \"C\" > $3) \
             ORDER BY slug COLLATE \"C\" LIMIT $2",
        )
        .bind(&only)
        .bind(i64::from(query.limit))
        .bind(query.after.as_ref().map(AppSlug::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(App::try_from).collect()
    }

    #[tracing::instrument(skip(self, update))]
    async fn update(&self, id: AppId, update: AppUpdate) -> RepoResult<App> {
        if update.slug.is_none() && update.name.is_none() {
            return Err(RepoError::Invalid("the update changes nothing".to_owned()));
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let old_slug = match &update.slug {
            Some(new_slug) => {
                lock_slug(&mut tx, new_slug.as_str()).await?;
                let old: Option<String> =
                    sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1 FOR UPDATE")
                        .bind(id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                let old = old.ok_or_else(|| not_found(id))?;
                lock_slug(&mut tx, &old).await?;
                check_not_reserved(&mut tx, new_slug, Some(id)).await?;
                // Taking an old slug back ends its reservation.
                sqlx::query("DELETE FROM retired_slugs WHERE slug = $1 AND app_id = $2")
                    .bind(new_slug.as_str())
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                (old != new_slug.as_str()).then_some(old)
            }
            None => None,
        };
        let result = sqlx::query_as::<_, AppRow>(
            "UPDATE apps SET slug = COALESCE($2, slug), name = COALESCE($3, name), \
             updated_at = now() WHERE id = $1 \
             RETURNING id, slug, name, created_at, updated_at",
        )
        .bind(id.as_uuid())
        .bind(update.slug.as_ref().map(AppSlug::as_str))
        .bind(update.name.as_deref())
        .fetch_optional(&mut *tx)
        .await;
        let row = match result {
            Ok(Some(row)) => row,
            Ok(None) => return Err(not_found(id)),
            Err(err) => {
                return Err(translate(
                    err,
                    update.slug.as_ref().map(slug_taken).unwrap_or_default(),
                ));
            }
        };
        if let Some(old) = old_slug {
            sqlx::query("INSERT INTO retired_slugs (slug, app_id) VALUES ($1, $2)")
                .bind(&old)
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        row.try_into()
    }

    async fn delete(&self, id: AppId, cascade: bool) -> RepoResult<Vec<ScriptId>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Locking the app row first makes a concurrent script insert (whose foreign key
        // check takes a share lock on it) wait for this transaction, so no script can slip
        // in between the check below and the delete.
        let slug: Option<String> =
            sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1 FOR UPDATE")
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let Some(slug) = slug else {
            return Err(not_found(id));
        };
        let scripts: Vec<Uuid> = if cascade {
            sqlx::query_scalar("DELETE FROM scripts WHERE app_id = $1 RETURNING id")
                .bind(id.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?
        } else {
            let has_scripts: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM scripts WHERE app_id = $1)")
                    .bind(id.as_uuid())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
            if has_scripts {
                return Err(RepoError::Conflict {
                    what: format!("a script in app '{slug}'"),
                });
            }
            Vec::new()
        };
        // Memberships and app-limited tokens go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let mut scripts: Vec<ScriptId> = scripts.into_iter().map(ScriptId::from_uuid).collect();
        scripts.sort();
        Ok(scripts)
    }
}

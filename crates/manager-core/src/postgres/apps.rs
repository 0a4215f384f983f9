//! [`AppRepository`] over PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, AppSlug};
use sqlx::PgPool;
use uuid::Uuid;

use super::error::{corrupt_row, db_error};
use crate::repo::{App, AppRepository, RepoError, RepoResult};

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
}

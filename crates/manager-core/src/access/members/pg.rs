//! [`MembershipRepository`] over PostgreSQL.

use std::collections::HashMap;

use async_trait::async_trait;
use picloud_shared::{AppId, AppRole, UserId, Username};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::{
    access::{Member, MembershipRepository},
    repository::{RepoError, RepoResult},
};

/// Memberships stored in the `app_members` table.
#[derive(Debug, Clone)]
pub struct PgMembershipRepository {
    pool: PgPool,
}

impl PgMembershipRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn stored_role(raw: &str, app: Uuid, user: Uuid) -> RepoResult<AppRole> {
    raw.parse().map_err(|e: String| {
        corrupt_row(format!(
            "membership of user {user} in app {app} has a stored role that is not valid: {e}"
        ))
    })
}

#[async_trait]
impl MembershipRepository for PgMembershipRepository {
    async fn roles_of(&self, user_id: UserId) -> RepoResult<HashMap<AppId, AppRole>> {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT app_id, role FROM app_members WHERE user_id = $1")
                .bind(user_id.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        rows.into_iter()
            .map(|(app, role)| {
                Ok((
                    AppId::from_uuid(app),
                    stored_role(&role, app, user_id.as_uuid())?,
                ))
            })
            .collect()
    }

    async fn members(&self, app_id: AppId) -> RepoResult<Vec<Member>> {
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT u.id, u.username, m.role FROM app_members m \
             JOIN users u ON u.id = m.user_id \
             WHERE m.app_id = $1 ORDER BY u.username COLLATE \"C\"",
        )
        .bind(app_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|(user, username, role)| {
                Ok(Member {
                    user_id: UserId::from_uuid(user),
                    username: Username::parse(&username).map_err(|e| {
                        corrupt_row(format!(
                            "user {user} has a stored username {username:?} that is not valid: {e}"
                        ))
                    })?,
                    role: stored_role(&role, app_id.as_uuid(), user)?,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip(self))]
    async fn set_role(&self, app_id: AppId, user_id: UserId, role: AppRole) -> RepoResult<()> {
        sqlx::query(
            "INSERT INTO app_members (app_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (app_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        )
        .bind(app_id.as_uuid())
        .bind(user_id.as_uuid())
        .bind(role.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            translate(
                e,
                Violations {
                    foreign_keys: vec![
                        ("app_members_app_id_fkey", format!("app {app_id}")),
                        ("app_members_user_id_fkey", format!("user {user_id}")),
                    ],
                    ..Violations::default()
                },
            )
        })?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn remove(&self, app_id: AppId, user_id: UserId) -> RepoResult<()> {
        let done = sqlx::query("DELETE FROM app_members WHERE app_id = $1 AND user_id = $2")
            .bind(app_id.as_uuid())
            .bind(user_id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(RepoError::NotFound {
                what: format!("member {user_id} of app {app_id}"),
            });
        }
        Ok(())
    }
}

//! [`UserRepository`] over PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{UserId, Username};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::{
    access::{NewUser, User, UserRepository},
    repository::{RepoError, RepoResult},
};

/// Users stored in the `users` table.
#[derive(Debug, Clone)]
pub struct PgUserRepository {
    pool: PgPool,
}

impl PgUserRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Any key serialising the first-user check; what matters is that every node uses the
/// same one. ("picloud" as ASCII, then 1 for "first user".)
const FIRST_USER_LOCK: i64 = 0x7069_636c_6f75_6401;

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    instance_admin: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = RepoError;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        let username = Username::parse(&row.username).map_err(|e| {
            corrupt_row(format!(
                "user {} has a stored username {:?} that is not valid: {e}",
                row.id, row.username
            ))
        })?;
        Ok(Self {
            id: UserId::from_uuid(row.id),
            username,
            instance_admin: row.instance_admin,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

fn username_taken(username: &Username) -> Violations {
    Violations {
        unique: Some(format!("user '{username}'")),
        ..Violations::default()
    }
}

fn not_found(id: UserId) -> RepoError {
    RepoError::NotFound {
        what: format!("user {id}"),
    }
}

#[async_trait]
impl UserRepository for PgUserRepository {
    #[tracing::instrument(skip_all, fields(username = %user.username))]
    async fn create(&self, user: NewUser) -> RepoResult<User> {
        let row: UserRow = sqlx::query_as(
            "INSERT INTO users (id, username, password_hash, instance_admin) \
             VALUES ($1, $2, $3, $4) \
             RETURNING id, username, instance_admin, created_at, updated_at",
        )
        .bind(UserId::new().as_uuid())
        .bind(user.username.as_str())
        .bind(&user.password_hash)
        .bind(user.instance_admin)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| translate(e, username_taken(&user.username)))?;
        row.try_into()
    }

    #[tracing::instrument(skip_all, fields(username = %user.username))]
    async fn create_if_none(&self, user: NewUser) -> RepoResult<Option<User>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Two nodes starting on an empty database both see "no users" under READ
        // COMMITTED; the lock makes the second wait for the first to commit, and the
        // insert's own snapshot (taken after the lock) then sees the first user.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FIRST_USER_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let row: Option<UserRow> = sqlx::query_as(
            "INSERT INTO users (id, username, password_hash, instance_admin) \
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM users) \
             RETURNING id, username, instance_admin, created_at, updated_at",
        )
        .bind(UserId::new().as_uuid())
        .bind(user.username.as_str())
        .bind(&user.password_hash)
        .bind(user.instance_admin)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| translate(e, username_taken(&user.username)))?;
        tx.commit().await.map_err(db_error)?;
        row.map(User::try_from).transpose()
    }

    async fn get(&self, id: UserId) -> RepoResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, username, instance_admin, created_at, updated_at FROM users \
             WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(User::try_from).transpose()
    }

    async fn credentials(&self, username: &Username) -> RepoResult<Option<(User, String)>> {
        let row: Option<CredentialsRow> = sqlx::query_as(
            "SELECT id, username, instance_admin, created_at, updated_at, password_hash \
             FROM users WHERE username = $1",
        )
        .bind(username.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| Ok((User::try_from(row.user)?, row.password_hash)))
            .transpose()
    }

    async fn list(&self, limit: u32, after: Option<&Username>) -> RepoResult<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT id, username, instance_admin, created_at, updated_at FROM users \
             WHERE ($2::text IS NULL OR username COLLATE \"C\" > $2) \
             ORDER BY username COLLATE \"C\" LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(after.map(Username::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(User::try_from).collect()
    }

    #[tracing::instrument(skip(self, password_hash))]
    async fn set_password(&self, id: UserId, password_hash: String) -> RepoResult<()> {
        let done =
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
                .bind(id.as_uuid())
                .bind(&password_hash)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn delete(&self, id: UserId) -> RepoResult<()> {
        // Tokens and memberships go with the user (ON DELETE CASCADE); the triggers they
        // registered do too, and their queued deliveries become dead letters.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        crate::outbox::dead_letter_queued(
            &mut tx,
            crate::outbox::DoomedTriggers::RegisteredBy(id.as_uuid()),
        )
        .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }
}

//! [`TokenRepository`] over PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, CredentialKind, Scope, TokenId, UserId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{Violations, corrupt_row, db_error, translate};
use crate::{
    access::{NewToken, Token, TokenRepository},
    repository::{RepoError, RepoResult},
};

/// Tokens and sessions stored in the `api_tokens` table.
#[derive(Debug, Clone)]
pub struct PgTokenRepository {
    pool: PgPool,
}

impl PgTokenRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The columns a [`TokenRow`] reads (never the secret hash), as a literal so queries can
/// be built with `concat!`.
macro_rules! columns {
    () => {
        "id, user_id, name, kind, scopes, app_id, prefix, created_at, expires_at, \
         last_used_at, revoked_at, parent_id"
    };
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    user_id: Uuid,
    name: String,
    kind: String,
    scopes: Vec<String>,
    app_id: Option<Uuid>,
    prefix: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    parent_id: Option<Uuid>,
}

fn kind_str(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Session => "session",
        CredentialKind::ApiToken => "api",
    }
}

impl TryFrom<TokenRow> for Token {
    type Error = RepoError;

    fn try_from(row: TokenRow) -> Result<Self, Self::Error> {
        let bad = |column: &str, value: &str| {
            corrupt_row(format!(
                "token {} has a stored {column} {value:?} that is not valid",
                row.id
            ))
        };
        let kind = match row.kind.as_str() {
            "session" => CredentialKind::Session,
            "api" => CredentialKind::ApiToken,
            other => return Err(bad("kind", other)),
        };
        let scopes = row
            .scopes
            .iter()
            .map(|s| s.parse::<Scope>().map_err(|_| bad("scope", s)))
            .collect::<RepoResult<_>>()?;
        Ok(Self {
            id: TokenId::from_uuid(row.id),
            user_id: UserId::from_uuid(row.user_id),
            name: row.name,
            kind,
            scopes,
            app_id: row.app_id.map(AppId::from_uuid),
            prefix: row.prefix,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            parent_id: row.parent_id.map(TokenId::from_uuid),
        })
    }
}

fn not_found(id: TokenId) -> RepoError {
    RepoError::NotFound {
        what: format!("token {id}"),
    }
}

#[async_trait]
impl TokenRepository for PgTokenRepository {
    #[tracing::instrument(skip_all, fields(user_id = %token.user_id, kind = kind_str(token.kind)))]
    async fn create(&self, token: NewToken) -> RepoResult<Token> {
        let scopes: Vec<&str> = token.scopes.iter().map(Scope::as_str).collect();
        let row: TokenRow = sqlx::query_as(concat!(
            "INSERT INTO api_tokens (id, user_id, name, kind, scopes, app_id, secret_hash, ",
            "prefix, expires_at, parent_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ",
            "RETURNING ",
            columns!()
        ))
        .bind(TokenId::new().as_uuid())
        .bind(token.user_id.as_uuid())
        .bind(&token.name)
        .bind(kind_str(token.kind))
        .bind(&scopes)
        .bind(token.app_id.map(|a| a.as_uuid()))
        .bind(&token.secret_hash[..])
        .bind(&token.prefix)
        .bind(token.expires_at)
        .bind(token.parent_id.map(|p| p.as_uuid()))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            let mut foreign_keys =
                vec![("api_tokens_user_id_fkey", format!("user {}", token.user_id))];
            if let Some(app) = token.app_id {
                foreign_keys.push(("api_tokens_app_id_fkey", format!("app {app}")));
            }
            if let Some(parent) = token.parent_id {
                foreign_keys.push(("api_tokens_parent_id_fkey", format!("token {parent}")));
            }
            translate(
                e,
                Violations {
                    unique: Some("a token with this secret".to_owned()),
                    foreign_keys,
                    ..Violations::default()
                },
            )
        })?;
        row.try_into()
    }

    async fn find_usable(
        &self,
        secret_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> RepoResult<Option<Token>> {
        // An index lookup on the hash: equality on a SHA-256 of a 256-bit secret leaks
        // nothing through timing that would help forge another token.
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL ",
            "AND (expires_at IS NULL OR expires_at > $2)"
        ))
        .bind(&secret_hash[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Token::try_from).transpose()
    }

    async fn get(&self, id: TokenId) -> RepoResult<Option<Token>> {
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Token::try_from).transpose()
    }

    async fn list_for_user(&self, user_id: UserId, kind: CredentialKind) -> RepoResult<Vec<Token>> {
        let rows: Vec<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens WHERE user_id = $1 AND kind = $2 ",
            "ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id.as_uuid())
        .bind(kind_str(kind))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Token::try_from).collect()
    }

    #[tracing::instrument(skip(self))]
    async fn revoke(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()> {
        // The first revocation's time is kept: revoking again changes nothing. The token's
        // descendants, made through it, are revoked in the same statement.
        let done = sqlx::query(
            "WITH RECURSIVE family AS (
                 SELECT id FROM api_tokens WHERE id = $1
                 UNION
                 SELECT child.id FROM api_tokens child JOIN family ON child.parent_id = family.id
             )
             UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2)
             WHERE id IN (SELECT id FROM family)",
        )
        .bind(id.as_uuid())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn revoke_all_for_user(&self, user_id: UserId, now: DateTime<Utc>) -> RepoResult<u64> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id.as_uuid())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn touch(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()> {
        // Touches are sent in the background and may arrive out of order: keep the latest.
        let done = sqlx::query(
            "UPDATE api_tokens SET last_used_at = GREATEST(last_used_at, $2) WHERE id = $1",
        )
        .bind(id.as_uuid())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}

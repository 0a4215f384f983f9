//! API tokens and login sessions: both are bearer tokens, stored only as a SHA-256 hash.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;

#[cfg(feature = "admin-api")]
pub use http::{
    CreateTokenRequest, CreatedTokenView, MAX_TOKEN_DAYS, MAX_TOKEN_NAME_CHARS, TokenView,
};
#[cfg(feature = "testsuite")]
pub use memory::InMemoryTokenRepository;
pub use pg::PgTokenRepository;

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{AppId, Credential, CredentialKind, Principal, Scope, TokenId, UserId};

use crate::repository::{RepoError, RepoResult};

/// A stored token (never the secret: only its hash is kept, and only the repository sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Stable id.
    pub id: TokenId,
    /// The user the token acts for.
    pub user_id: UserId,
    /// A label the user chose ("ci deploy"); sessions are named by the server.
    pub name: String,
    /// A login session or an API token.
    pub kind: CredentialKind,
    /// What the token may do (sessions: all seven).
    pub scopes: BTreeSet<Scope>,
    /// When set, the token works for this app only.
    pub app_id: Option<AppId>,
    /// The first characters of the secret (e.g. `pc_a1b2c3d4`), to recognise a token in a
    /// list without revealing it.
    pub prefix: String,
    /// When the token was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request (updated at most about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The API token it was made through, if any: it expires no later than that one and
    /// is revoked with it.
    pub parent_id: Option<TokenId>,
}

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The user the token acts for.
    pub user_id: UserId,
    /// A label.
    pub name: String,
    /// Session or API token.
    pub kind: CredentialKind,
    /// Its scopes.
    pub scopes: BTreeSet<Scope>,
    /// An optional single app.
    pub app_id: Option<AppId>,
    /// SHA-256 of the secret.
    pub secret_hash: [u8; 32],
    /// The secret's first characters.
    pub prefix: String,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// The API token it is made through, if any.
    pub parent_id: Option<TokenId>,
}

/// Stores tokens.
#[async_trait]
pub trait TokenRepository: Send + Sync {
    /// Stores a token; `NotFound` when the user or app does not exist.
    async fn create(&self, token: NewToken) -> RepoResult<Token>;

    /// The token with this secret hash if it is usable at `now`: not revoked, not expired.
    async fn find_usable(
        &self,
        secret_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> RepoResult<Option<Token>>;

    /// The token with this id, whatever its state.
    async fn get(&self, id: TokenId) -> RepoResult<Option<Token>>;

    /// A user's tokens of one kind, newest first, revoked ones included.
    async fn list_for_user(&self, user_id: UserId, kind: CredentialKind) -> RepoResult<Vec<Token>>;

    /// Revokes a token and every token made through it, their children included
    /// (idempotent); `NotFound` when there is no such token.
    async fn revoke(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()>;

    /// Revokes every token of a user (after a password change); returns how many.
    async fn revoke_all_for_user(&self, user_id: UserId, now: DateTime<Utc>) -> RepoResult<u64>;

    /// Records that the token was used at `now` (an earlier time than the one stored is
    /// ignored, so out-of-order touches keep the latest); `NotFound` when there is no such
    /// token.
    async fn touch(&self, id: TokenId, now: DateTime<Utc>) -> RepoResult<()>;
}

/// Why a principal may not make the token it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenEscalation {
    /// The new token would hold a scope the making token lacks.
    #[error("this token lacks scope {0}, so it cannot create a token that has it")]
    Scope(Scope),
    /// The making token is limited to one app; the new one must be limited to the same.
    #[error(
        "this token is limited to one app, so a token it creates must be limited to the same app"
    )]
    WiderApp,
}

/// The no-escalation rule of every token made, whoever makes it: a token acting through
/// another API token may hand out only the scopes it holds itself and no wider an app
/// restriction; a login session may hand out anything (the user's roles still bound what
/// any of their tokens can do).
pub fn check_no_escalation(
    maker: &Principal,
    scopes: &BTreeSet<Scope>,
    app: Option<AppId>,
) -> Result<(), TokenEscalation> {
    if maker.credential.token_kind() != Some(CredentialKind::ApiToken) {
        return Ok(());
    }
    if let Some(missing) = scopes.iter().find(|s| !maker.scopes.contains(s)) {
        return Err(TokenEscalation::Scope(*missing));
    }
    if let Some(only) = maker.app_restriction
        && app != Some(only)
    {
        return Err(TokenEscalation::WiderApp);
    }
    Ok(())
}

/// What a new session or API token is, before its secret exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The user the token acts for.
    pub user_id: UserId,
    /// A label.
    pub name: String,
    /// Session or API token.
    pub kind: CredentialKind,
    /// Its scopes.
    pub scopes: BTreeSet<Scope>,
    /// An optional single app.
    pub app_id: Option<AppId>,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// The API token it is made through, if any.
    pub parent_id: Option<TokenId>,
}

/// A token just made: its secret, shown this once and stored nowhere, and the token.
pub struct IssuedToken {
    /// The secret for `Authorization: Bearer`.
    pub secret: String,
    /// The stored token (with only the secret's hash and prefix).
    pub token: Token,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &self.token.id)
            .finish_non_exhaustive()
    }
}

/// Makes a token: a fresh secret from the OS's randomness, stored only as its hash. The
/// one way a session or an API token comes to exist.
pub async fn issue(repo: &dyn TokenRepository, request: TokenRequest) -> RepoResult<IssuedToken> {
    let crate::access::secrets::GeneratedToken {
        secret,
        hash,
        prefix,
    } = crate::access::secrets::generate_token();
    let token = repo
        .create(NewToken {
            user_id: request.user_id,
            name: request.name,
            kind: request.kind,
            scopes: request.scopes,
            app_id: request.app_id,
            secret_hash: hash,
            prefix,
            expires_at: request.expires_at,
            parent_id: request.parent_id,
        })
        .await?;
    Ok(IssuedToken { secret, token })
}

/// Why an API token was not made.
#[derive(Debug, thiserror::Error)]
pub enum TokenIssueError {
    /// It would have more than its maker may hand out.
    #[error(transparent)]
    Escalation(#[from] TokenEscalation),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] crate::repository::RepoError),
}

/// Makes an API token for `maker`'s user, by the no-escalation rule. A token made
/// through another API token is its child: it expires no later than its parent (a
/// requested later expiry, or none, is cut to the parent's) and is revoked with it. One
/// made through a login session stands on its own, as it must outlive the session.
pub async fn issue_api_token(
    repo: &dyn TokenRepository,
    maker: &Principal,
    name: String,
    scopes: BTreeSet<Scope>,
    app_id: Option<AppId>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedToken, TokenIssueError> {
    check_no_escalation(maker, &scopes, app_id)?;
    let (parent_id, expires_at) = match maker.credential {
        Credential::Token {
            kind: CredentialKind::ApiToken,
            token_id,
        } => {
            let parent = repo.get(token_id).await?.ok_or(RepoError::NotFound {
                what: format!("token {token_id}"),
            })?;
            let expires_at = match (expires_at, parent.expires_at) {
                (Some(asked), Some(parents)) => Some(asked.min(parents)),
                (asked, parents) => asked.or(parents),
            };
            (Some(token_id), expires_at)
        }
        _ => (None, expires_at),
    };
    Ok(issue(
        repo,
        TokenRequest {
            user_id: maker.user_id,
            name,
            kind: CredentialKind::ApiToken,
            scopes,
            app_id,
            expires_at,
            parent_id,
        },
    )
    .await?)
}

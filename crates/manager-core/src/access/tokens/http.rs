//! `/tokens`: the caller's own API tokens. The secret is shown once, at creation; the
//! server keeps only its SHA-256.

use std::collections::BTreeSet;
use std::fmt;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, TimeDelta, Utc};
use picloud_shared::{
    AppId, Capability, Credential, CredentialKind, ErrorCode, ErrorEnvelope, Scope, TokenId,
    check_label,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::AccessState;
use crate::access::Token;
use crate::access::auth::Auth;
use crate::access::{IssuedToken, TokenIssueError, issue_api_token};
use crate::apps::http::authorized_app;
use crate::http::AdminState;
use crate::http::Page;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathId};

/// Longest token name accepted, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 128;
/// Longest lifetime a token may be given, in days (about ten years).
pub const MAX_TOKEN_DAYS: u32 = 3650;

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// Body of `POST /api/admin/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// A label to recognise the token by, 1-128 characters, without control or bidirectional
    /// control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// At least one of `script:read`, `script:write`, `script:execute`, `data:read`,
    /// `data:write`, `triggers:manage`, `app:admin`.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    pub scopes: Vec<String>,
    /// Limit the token to this app; every app the user can reach when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub app_id: Option<AppId>,
    /// Days until the token stops working, 1 to 3650; never when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// A token just created, with its secret: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedTokenView {
    /// The secret, for `Authorization: Bearer <token>`. Store it now: it cannot be shown
    /// again.
    pub token: String,
    /// The token as lists show it.
    #[serde(flatten)]
    pub view: TokenView,
}

impl fmt::Debug for CreatedTokenView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedTokenView")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// An API token as lists show it: never the secret or its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Stable id.
    pub id: TokenId,
    /// The label.
    pub name: String,
    /// What the token may do.
    pub scopes: Vec<Scope>,
    /// The one app the token works for, if limited.
    pub app_id: Option<AppId>,
    /// The secret's first characters.
    pub prefix: String,
    /// When the token was created.
    pub created_at: DateTime<Utc>,
    /// When the token stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the token last authenticated a request (to within about a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the token was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<Token> for TokenView {
    fn from(t: Token) -> Self {
        Self {
            id: t.id,
            name: t.name,
            scopes: t.scopes.into_iter().collect(),
            app_id: t.app_id,
            prefix: t.prefix,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

fn check_token_name(raw: &str) -> Result<String, ApiError> {
    check_label("token name", raw, MAX_TOKEN_NAME_CHARS).map_err(|e| ApiError::invalid_name(&e))?;
    Ok(raw.to_owned())
}

fn parse_scopes(raw: &[String]) -> Result<BTreeSet<Scope>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidScope,
            "give at least one scope",
        ));
    }
    raw.iter()
        .map(|s| {
            s.parse::<Scope>()
                .map_err(|e| ApiError::new(ErrorCode::InvalidScope, e.to_string()))
        })
        .collect()
}

fn token_not_found(id: TokenId) -> ApiError {
    ApiError::not_found(format!("token {id} not found"))
}

/// Create an API token for yourself. The secret is in this answer and nowhere else.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The token, with its secret (shown only now)", body = CreatedTokenView),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "An API token without `app:admin`, or one that asked for more than it holds", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Unknown scope (`invalid_scope`), bad name or lifetime", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create_token(
    State(state): State<AccessState>,
    auth: Auth,
    Json(body): Json<CreateTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require_scope(Scope::AppAdmin)?;
    let name = check_token_name(&body.name)?;
    let scopes = parse_scopes(&body.scopes)?;
    let lifetime = match body.expires_in_days {
        Some(days) if (1..=MAX_TOKEN_DAYS).contains(&days) => {
            Some(TimeDelta::days(i64::from(days)))
        }
        Some(_) => {
            return Err(ApiError::invalid_body(format!(
                "expires_in_days must be between 1 and {MAX_TOKEN_DAYS}"
            )));
        }
        None => None,
    };
    let app = match body.app_id {
        Some(id) => {
            // An app the caller cannot see is answered like a missing one.
            authorized_app(state.apps.as_ref(), &auth, id, Capability::AppRead).await?;
            Some(id)
        }
        None => None,
    };
    let IssuedToken { secret, token } = issue_api_token(
        state.tokens.as_ref(),
        &auth,
        name,
        scopes,
        app,
        lifetime.map(|l| Utc::now() + l),
    )
    .await
    .map_err(|err| match err {
        TokenIssueError::Escalation(e) => ApiError::forbidden(e.to_string()),
        TokenIssueError::Store(e) => e.into(),
    })?;
    tracing::info!(token_id = %token.id, user = %auth.username, "api token created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedTokenView {
            token: secret,
            view: TokenView::from(token),
        }),
    ))
}

/// List your own API tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "Your API tokens (revoked ones included), newest first, all on one page", body = Page<TokenView>),
        (status = 403, description = "An API token without `app:admin`", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_tokens(
    State(state): State<AccessState>,
    auth: Auth,
) -> Result<axum::Json<Page<TokenView>>, ApiError> {
    auth.require_scope(Scope::AppAdmin)?;
    let tokens = state
        .tokens
        .list_for_user(auth.user_id, CredentialKind::ApiToken)
        .await?;
    Ok(axum::Json(Page {
        items: tokens.into_iter().map(TokenView::from).collect(),
        next_cursor: None,
    }))
}

/// Revoke one of your tokens (instance admins: anyone's). It is refused from its very
/// next use.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, format = Uuid, description = "Token id")),
    responses(
        (status = 204, description = "The token is revoked, with every token made through it"),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "An API token without `app:admin` revoking another token", body = ErrorEnvelope),
        (status = 404, description = "No such token of yours", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn revoke_token(
    State(state): State<AccessState>,
    auth: Auth,
    PathId(id): PathId<TokenId>,
) -> Result<StatusCode, ApiError> {
    let token = state
        .tokens
        .get(id)
        .await?
        .ok_or_else(|| token_not_found(id))?;
    // A token may always revoke itself (a leaked one is put out of use by whoever holds
    // it); revoking any other takes `app:admin`.
    let itself = matches!(auth.credential, Credential::Token { token_id, .. } if token_id == id);
    if !itself {
        auth.require_scope(Scope::AppAdmin)?;
    }
    // Someone else's token is none of a non-admin's business, not even its existence.
    if token.user_id != auth.user_id && auth.require_instance_admin().is_err() {
        return Err(token_not_found(id));
    }
    state.tokens.revoke(id, Utc::now()).await?;
    tracing::info!(token_id = %id, owner = %token.user_id, user = %auth.username, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

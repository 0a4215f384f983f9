//! `/users`: the people who log in. Managed by instance admins; anyone may change their
//! own password from a login session.

use std::fmt;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use picloud_shared::{CredentialKind, ErrorCode, ErrorEnvelope, UserId, Username};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::AccessState;
use crate::access::UserChangeError;
use crate::access::auth::Auth;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathId, Query};
use crate::http::{AdminState, Page, PageQuery, created};
use crate::{access::User, repository::RepoError};

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(set_password))
}

/// Body of `POST /api/admin/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 1-64 lowercase ASCII letters, digits, `.`, `_` and `-`, starting with a letter or
    /// digit.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"
    )]
    pub username: String,
    /// At least 8 characters and at most 1024 bytes.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    /// Whether the user administers the instance; `false` when absent.
    #[serde(default)]
    pub instance_admin: Option<bool>,
}

impl fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("username", &self.username)
            .field("instance_admin", &self.instance_admin)
            .finish_non_exhaustive()
    }
}

/// Body of `PUT /api/admin/users/{id}/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    /// The new password: at least 8 characters and at most 1024 bytes.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
}

impl fmt::Debug for SetPasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPasswordRequest").finish_non_exhaustive()
    }
}

/// A user as the admin API shows them (never with a password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Stable id.
    pub id: UserId,
    /// Unique login name.
    pub username: Username,
    /// Whether they administer the instance.
    pub instance_admin: bool,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            instance_admin: u.instance_admin,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

fn user_not_found(id: UserId) -> ApiError {
    ApiError::not_found(format!("user {id} not found"))
}

/// The answer to a refused user change.
fn change_refused(err: UserChangeError) -> ApiError {
    match err {
        UserChangeError::Password(err) => {
            ApiError::new(ErrorCode::InvalidPassword, err.to_string())
        }
        UserChangeError::DeletingSelf => {
            ApiError::new(ErrorCode::CannotDeleteSelf, err.to_string())
        }
        UserChangeError::Hashing(_) => ApiError::internal(&err),
        UserChangeError::Store(err) => err.into(),
    }
}

/// Create a user. Instance admins only.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "The user was created", body = UserView,
            headers(("location" = String, description = "The new user's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "Not an instance admin (with `app:admin`)", body = ErrorEnvelope),
        (status = 409, description = "The username is taken", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid username (`invalid_name`), password (`invalid_password`) or body", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create_user(
    State(state): State<AccessState>,
    auth: Auth,
    Json(body): Json<CreateUserRequest>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require_instance_admin()?;
    let username = Username::parse(&body.username).map_err(|e| ApiError::invalid_name(&e))?;
    let user = state
        .users
        .create(
            username.clone(),
            body.password,
            body.instance_admin.unwrap_or(false),
        )
        .await
        .map_err(|err| match err {
            UserChangeError::Store(RepoError::Conflict { .. }) => {
                ApiError::conflict(format!("a user named '{username}' already exists"))
            }
            other => change_refused(other),
        })?;
    tracing::info!(
        user_id = %user.id,
        username = %user.username,
        instance_admin = user.instance_admin,
        by = %auth.username,
        "user created"
    );
    Ok(created("users", user.id, UserView::from(user)))
}

/// List users. Instance admins only.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of users, by username", body = Page<UserView>),
        (status = 400, description = "Bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "Not an instance admin (with `app:admin`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_users(
    State(state): State<AccessState>,
    auth: Auth,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<Page<UserView>>, ApiError> {
    auth.require_instance_admin()?;
    let request = query.request::<Username>()?;
    let users = state
        .users
        .repo()
        .list(request.fetch(), request.after.as_ref())
        .await?;
    Ok(axum::Json(request.page(
        users,
        |u| u.username.clone(),
        UserView::from,
    )))
}

/// Read one user. Instance admins only.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "Not an instance admin (with `app:admin`)", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get_user(
    State(state): State<AccessState>,
    auth: Auth,
    PathId(id): PathId<UserId>,
) -> Result<axum::Json<UserView>, ApiError> {
    auth.require_instance_admin()?;
    let user = state
        .users
        .repo()
        .get(id)
        .await?
        .ok_or_else(|| user_not_found(id))?;
    Ok(axum::Json(user.into()))
}

/// Delete a user with their tokens and memberships. Instance admins only, and not
/// themselves.
#[utoipa::path(
    delete,
    path = "/users/{id}",
    tag = "users",
    params(("id" = String, Path, format = Uuid, description = "User id")),
    responses(
        (status = 204, description = "The user was deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "Not an instance admin (with `app:admin`)", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        (status = 409, description = "Admins cannot delete themselves (`cannot_delete_self`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete_user(
    State(state): State<AccessState>,
    auth: Auth,
    PathId(id): PathId<UserId>,
) -> Result<StatusCode, ApiError> {
    auth.require_instance_admin()?;
    state
        .users
        .delete(auth.user_id, id)
        .await
        .map_err(|err| match err {
            UserChangeError::Store(RepoError::NotFound { .. }) => user_not_found(id),
            other => change_refused(other),
        })?;
    tracing::info!(user_id = %id, by = %auth.username, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Set a user's password: their own or, for instance admins, anyone's; always from a login
/// session, never through an API token. Every session and API token of the user is revoked.
#[utoipa::path(
    put,
    path = "/users/{id}/password",
    tag = "users",
    params(("id" = String, Path, format = Uuid, description = "User id")),
    request_body = SetPasswordRequest,
    responses(
        (status = 204, description = "The password was changed and the user's tokens revoked"),
        (status = 400, description = "The id is not a UUID, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "Through an API token rather than a login session, or someone else's password without being an instance admin", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "The password does not meet the policy (`invalid_password`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn set_password(
    State(state): State<AccessState>,
    auth: Auth,
    PathId(id): PathId<UserId>,
    Json(body): Json<SetPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    // A password opens a login session, which is worth more than any API token: a leaked
    // token (even an instance admin's `app:admin` one) must not be able to take over an
    // account, its maker's included, by setting a password.
    if auth.credential.token_kind() != Some(CredentialKind::Session) {
        return Err(ApiError::forbidden(
            "setting a password needs a login session, not an API token",
        ));
    }
    if id != auth.user_id {
        auth.require_instance_admin()?;
    }
    let revoked = state
        .users
        .set_password(id, body.password)
        .await
        .map_err(|err| match err {
            UserChangeError::Store(RepoError::NotFound { .. }) => user_not_found(id),
            other => change_refused(other),
        })?;
    tracing::info!(user_id = %id, revoked, by = %auth.username, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

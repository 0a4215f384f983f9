//! `/apps/{id}/members`: who belongs to an app, in which role.

use axum::extract::State;
use axum::http::StatusCode;
use picloud_shared::{AppId, AppRole, Capability, ErrorCode, ErrorEnvelope, UserId, Username};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::AccessState;
use crate::access::auth::Auth;
use crate::access::{Member, MembershipChangeError};
use crate::apps::App;
use crate::apps::http::authorized_app;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathId, PathIds};
use crate::http::{AdminState, Page};
use crate::repository::RepoError;

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_members))
        .routes(routes!(set_member, remove_member))
}

/// Body of `PUT /api/admin/apps/{id}/members/{user_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMemberRequest {
    /// The user's role in the app: `viewer`, `developer` or `owner`.
    pub role: AppRole,
}

/// One member of an app.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// The user.
    pub user_id: UserId,
    /// Their username.
    pub username: Username,
    /// Their role in the app.
    pub role: AppRole,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            username: m.username,
            role: m.role,
        }
    }
}

/// The answer to a refused membership change, naming the app.
fn change_refused(err: MembershipChangeError, app: &App) -> ApiError {
    match err {
        MembershipChangeError::LastOwner(user) => ApiError::new(
            ErrorCode::LastOwner,
            format!(
                "user {user} is the only owner of app '{}'; make someone else owner first",
                app.slug
            ),
        ),
        MembershipChangeError::NotMember(user) => {
            ApiError::not_found(format!("user {user} is not a member of app '{}'", app.slug))
        }
        MembershipChangeError::Store(err) => err.into(),
    }
}

/// List an app's members.
#[utoipa::path(
    get,
    path = "/apps/{id}/members",
    tag = "members",
    params(("id" = String, Path, format = Uuid, description = "App id")),
    responses(
        (status = 200, description = "The members", body = Page<MemberView>),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `script:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_members(
    State(state): State<AccessState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
) -> Result<axum::Json<Page<MemberView>>, ApiError> {
    authorized_app(state.apps.as_ref(), &auth, id, Capability::AppRead).await?;
    let members = state.memberships.repo().members(id).await?;
    Ok(axum::Json(Page {
        items: members.into_iter().map(MemberView::from).collect(),
        next_cursor: None,
    }))
}

/// Add a user to an app, or change their role there. App owners only.
#[utoipa::path(
    put,
    path = "/apps/{id}/members/{user_id}",
    tag = "members",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("user_id" = String, Path, format = Uuid, description = "User id"),
    ),
    request_body = SetMemberRequest,
    responses(
        (status = 200, description = "The member with their new role", body = MemberView),
        (status = 400, description = "An id is not a UUID, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "Not the app's owner (with `app:admin`)", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see), or no such user", body = ErrorEnvelope),
        (status = 409, description = "The change would leave the app without an owner (`last_owner`)", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Unknown role", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn set_member(
    State(state): State<AccessState>,
    auth: Auth,
    PathIds(id, user_id): PathIds<AppId, UserId>,
    Json(body): Json<SetMemberRequest>,
) -> Result<axum::Json<MemberView>, ApiError> {
    let app = authorized_app(state.apps.as_ref(), &auth, id, Capability::AppAdmin).await?;
    let user_not_found = || ApiError::not_found(format!("user {user_id} not found"));
    let user = state
        .users
        .repo()
        .get(user_id)
        .await?
        .ok_or_else(user_not_found)?;
    state
        .memberships
        .set_role(id, user_id, body.role)
        .await
        .map_err(|err| match err {
            MembershipChangeError::Store(RepoError::NotFound { .. }) => user_not_found(),
            other => change_refused(other, &app),
        })?;
    tracing::info!(
        app_id = %id,
        member = %user.username,
        role = body.role.as_str(),
        user = %auth.username,
        "member role set"
    );
    Ok(axum::Json(MemberView {
        user_id,
        username: user.username,
        role: body.role,
    }))
}

/// Remove a user from an app. App owners only.
#[utoipa::path(
    delete,
    path = "/apps/{id}/members/{user_id}",
    tag = "members",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        ("user_id" = String, Path, format = Uuid, description = "User id"),
    ),
    responses(
        (status = 204, description = "The user is no longer a member"),
        (status = 400, description = "An id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "Not the app's owner (with `app:admin`)", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see), or the user is not a member", body = ErrorEnvelope),
        (status = 409, description = "The user is the app's only owner (`last_owner`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn remove_member(
    State(state): State<AccessState>,
    auth: Auth,
    PathIds(id, user_id): PathIds<AppId, UserId>,
) -> Result<StatusCode, ApiError> {
    let app = authorized_app(state.apps.as_ref(), &auth, id, Capability::AppAdmin).await?;
    state
        .memberships
        .remove(id, user_id)
        .await
        .map_err(|err| change_refused(err, &app))?;
    tracing::info!(app_id = %id, member = %user_id, user = %auth.username, "member removed");
    Ok(StatusCode::NO_CONTENT)
}

//! `/apps`: create, list, read, rename and delete apps.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use picloud_shared::{
    AppId, AppRole, AppSlug, Capability, ErrorCode, ErrorEnvelope, Scope, check_label,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::apps::{App, AppChangeError, AppRepository, AppService, AppUpdate, ListApps};
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathId, Query};
use crate::http::{AdminState, Page, PageQuery, created};
use crate::repository::RepoError;
use crate::scripts::{ListScripts, ScriptRepository};

/// Longest app display name accepted, in characters.
pub const MAX_APP_NAME_CHARS: usize = 100;

/// What the app routes work with.
#[derive(Clone)]
pub struct AppsState {
    /// Apps, changed by their rules.
    pub apps: AppService,
    /// Scripts, to say how many are in the way of a deletion.
    pub scripts: Arc<dyn ScriptRepository>,
}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_apps, create_app))
        .routes(routes!(get_app, update_app, delete_app))
}

/// Body of `POST /api/admin/apps`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    /// URL-safe and unique: 1-63 lowercase ASCII letters, digits and `-`, not starting or
    /// ending with `-`. Used by the by-name execute route.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub slug: String,
    /// Display name, 1-100 characters, without control or bidirectional control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

/// Body of `PATCH /api/admin/apps/{id}`: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppRequest {
    /// A new slug (this changes the by-name URLs of the app's scripts).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub slug: Option<String>,
    /// A new display name, with the same rules as at creation.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
}

/// An app as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppView {
    /// Stable id.
    pub id: AppId,
    /// URL-safe, unique slug.
    pub slug: AppSlug,
    /// Display name.
    pub name: String,
    /// The caller's role in the app (instance admins are owners everywhere).
    pub role: Option<AppRole>,
    /// When the app was created.
    pub created_at: DateTime<Utc>,
    /// When the app last changed.
    pub updated_at: DateTime<Utc>,
}

impl AppView {
    fn new(app: App, auth: &Auth) -> Self {
        Self {
            role: auth.role_in(app.id),
            id: app.id,
            slug: app.slug,
            name: app.name,
            created_at: app.created_at,
            updated_at: app.updated_at,
        }
    }
}

/// Query of `DELETE /api/admin/apps/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteAppQuery {
    /// Delete the app's scripts with it; without it an app that has scripts is refused.
    pub cascade: Option<bool>,
}

fn parse_slug(raw: &str) -> Result<AppSlug, ApiError> {
    AppSlug::parse(raw).map_err(|e| ApiError::invalid_name(&e))
}

fn check_app_name(raw: &str) -> Result<String, ApiError> {
    check_label("app name", raw, MAX_APP_NAME_CHARS).map_err(|e| ApiError::invalid_name(&e))?;
    Ok(raw.to_owned())
}

pub(crate) fn app_not_found(id: AppId) -> ApiError {
    ApiError::not_found(format!("app {id} not found"))
}

fn slug_taken(slug: &AppSlug) -> ApiError {
    ApiError::conflict(format!("an app with slug '{slug}' already exists"))
}

/// The app with this id if the principal holds `capability` in it; an app the principal
/// cannot see is "not found", exactly like a missing one.
pub(crate) async fn authorized_app(
    apps: &dyn AppRepository,
    auth: &Auth,
    id: AppId,
    capability: fn(AppId) -> Capability,
) -> Result<App, ApiError> {
    let app = apps.get(id).await?.ok_or_else(|| app_not_found(id))?;
    auth.require(capability(id), || app_not_found(id))?;
    Ok(app)
}

/// Create an app; the creator becomes its owner. Instance admins only.
#[utoipa::path(
    post,
    path = "/apps",
    tag = "apps",
    request_body = CreateAppRequest,
    responses(
        (status = 201, description = "The app was created", body = AppView,
            headers(("location" = String, description = "The new app's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "Not an instance admin (with `app:admin`)", body = ErrorEnvelope),
        (status = 409, description = "The slug is taken", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid slug, name or body", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create_app(
    State(state): State<AppsState>,
    auth: Auth,
    Json(body): Json<CreateAppRequest>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require_instance_admin()?;
    let slug = parse_slug(&body.slug)?;
    let name = check_app_name(&body.name)?;
    let app = state
        .apps
        .create(slug.clone(), name, Some(auth.user_id))
        .await
        .map_err(|err| match err {
            AppChangeError::Store(RepoError::Conflict { .. }) => slug_taken(&slug),
            other => other.into(),
        })?;
    tracing::info!(app_id = %app.id, app = %app.slug, user = %auth.username, "app created");
    let mut view = AppView::new(app, &auth);
    // The roles the request was authenticated with predate the app.
    view.role = Some(AppRole::Owner);
    Ok(created("apps", view.id, view))
}

/// List the apps the caller can see, one page at a time.
#[utoipa::path(
    get,
    path = "/apps",
    tag = "apps",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of apps, by slug", body = Page<AppView>),
        (status = 400, description = "Bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "No `script:read`", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_apps(
    State(state): State<AppsState>,
    auth: Auth,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<Page<AppView>>, ApiError> {
    let request = query.request::<AppSlug>()?;
    // The scope `AppRead` maps onto: listing needs what reading one app needs.
    auth.require_scope(Scope::ScriptRead)?;
    let only = (!auth.sees_every_app()).then(|| auth.visible_apps());
    let apps = state
        .apps
        .repo()
        .list(ListApps {
            only,
            limit: request.fetch(),
            after: request.after.clone(),
        })
        .await?;
    Ok(axum::Json(request.page(
        apps,
        |app| app.slug.clone(),
        |app| AppView::new(app, &auth),
    )))
}

/// Read one app.
#[utoipa::path(
    get,
    path = "/apps/{id}",
    tag = "apps",
    params(("id" = String, Path, format = Uuid, description = "App id")),
    responses(
        (status = 200, description = "The app", body = AppView),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `script:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get_app(
    State(state): State<AppsState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
) -> Result<axum::Json<AppView>, ApiError> {
    let app = authorized_app(state.apps.repo(), &auth, id, Capability::AppRead).await?;
    Ok(axum::Json(AppView::new(app, &auth)))
}

/// Rename an app: a new slug, a new display name, or both. App owners only.
#[utoipa::path(
    patch,
    path = "/apps/{id}",
    tag = "apps",
    params(("id" = String, Path, format = Uuid, description = "App id")),
    request_body = UpdateAppRequest,
    responses(
        (status = 200, description = "The renamed app", body = AppView),
        (status = 400, description = "The id is not a UUID, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "Not the app's owner (with `app:admin`)", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 409, description = "The slug is taken, or the default app's slug would change (`default_app`)", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid slug, name or body", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn update_app(
    State(state): State<AppsState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
    Json(body): Json<UpdateAppRequest>,
) -> Result<axum::Json<AppView>, ApiError> {
    let current = authorized_app(state.apps.repo(), &auth, id, Capability::AppAdmin).await?;
    let update = AppUpdate {
        slug: body.slug.as_deref().map(parse_slug).transpose()?,
        name: body.name.as_deref().map(check_app_name).transpose()?,
    };
    if update.slug.is_none() && update.name.is_none() {
        return Err(ApiError::invalid_body("give at least one of slug or name"));
    }
    let new_slug = update.slug.clone();
    let app = state
        .apps
        .update(&current, update)
        .await
        .map_err(|err| match err {
            AppChangeError::Store(RepoError::Conflict { .. }) => new_slug.as_ref().map_or_else(
                || ApiError::conflict("the app changed concurrently"),
                slug_taken,
            ),
            AppChangeError::Store(RepoError::NotFound { .. }) => app_not_found(id),
            other => other.into(),
        })?;
    tracing::info!(app_id = %id, app = %app.slug, user = %auth.username, "app renamed");
    Ok(axum::Json(AppView::new(app, &auth)))
}

/// Delete an app with its members and app-limited tokens. An app that still has scripts
/// is refused unless `cascade=true`, which deletes them too. App owners only; the default
/// app cannot be deleted.
#[utoipa::path(
    delete,
    path = "/apps/{id}",
    tag = "apps",
    params(
        ("id" = String, Path, format = Uuid, description = "App id"),
        DeleteAppQuery,
    ),
    responses(
        (status = 204, description = "The app was deleted"),
        (status = 400, description = "The id is not a UUID, or bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "Not the app's owner (with `app:admin`)", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 409, description = "The app has scripts and `cascade` was not set (`app_not_empty`), or it is the default app (`default_app`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete_app(
    State(state): State<AppsState>,
    auth: Auth,
    PathId(id): PathId<AppId>,
    Query(query): Query<DeleteAppQuery>,
) -> Result<StatusCode, ApiError> {
    let app = authorized_app(state.apps.repo(), &auth, id, Capability::AppAdmin).await?;
    let cascade = query.cascade.unwrap_or(false);
    let deleted = match state.apps.delete(id, cascade).await {
        Ok(deleted) => deleted,
        Err(AppChangeError::Store(RepoError::Conflict { .. })) => {
            return Err(not_empty(&state, &app).await);
        }
        Err(AppChangeError::Store(RepoError::NotFound { .. })) => return Err(app_not_found(id)),
        Err(other) => return Err(other.into()),
    };
    tracing::info!(
        app_id = %id,
        app = %app.slug,
        scripts = deleted.len(),
        user = %auth.username,
        "app deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Scripts counted exactly in an `app_not_empty` message; past it, "more than".
const SCRIPTS_COUNTED: u32 = 100;

/// 409 `app_not_empty`, counting the scripts that are in the way (up to a bound: this is a
/// message, not a report).
async fn not_empty(state: &AppsState, app: &App) -> ApiError {
    let scripts = state
        .scripts
        .list(ListScripts {
            apps: Some(vec![app.id]),
            limit: SCRIPTS_COUNTED + 1,
            after: None,
        })
        .await;
    match scripts {
        Ok(scripts) => {
            let count = match u32::try_from(scripts.len()) {
                Ok(n) if n <= SCRIPTS_COUNTED => n.to_string(),
                _ => format!("more than {SCRIPTS_COUNTED}"),
            };
            let plural = if count == "1" { "" } else { "s" };
            ApiError::new(
                ErrorCode::AppNotEmpty,
                format!(
                    "app '{}' still has {count} script{plural}; delete them first or pass cascade=true",
                    app.slug
                ),
            )
        }
        Err(err) => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_must_be_present_and_not_too_long() {
        assert_eq!(check_app_name("Shop").unwrap(), "Shop");
        assert!(check_app_name("   ").is_err());
        assert!(check_app_name("").is_err());
        assert!(check_app_name(&"x".repeat(MAX_APP_NAME_CHARS)).is_ok());
        assert!(check_app_name(&"x".repeat(MAX_APP_NAME_CHARS + 1)).is_err());
    }
}

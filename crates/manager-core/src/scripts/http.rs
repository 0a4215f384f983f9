//! `/scripts`: create, list, read, update and delete scripts.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use picloud_shared::{
    AppId, AppSlug, Capability, ErrorEnvelope, Scope, Script, ScriptId, ScriptLimits, ScriptName,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::apps::AppRepository;
use crate::apps::http::authorized_app;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathId, Query};
use crate::http::{AdminState, Page, PageQuery, created};
use crate::repository::RepoError;
use crate::scripts::{
    ListScripts, NewScript, ScriptChangeError, ScriptRepository, ScriptService, ScriptSummary,
    ScriptUpdate,
};

/// What the script routes work with.
#[derive(Clone)]
pub struct ScriptsState {
    /// Scripts, changed by their rules.
    pub scripts: ScriptService,
    /// Apps, to find the one a request names.
    pub apps: Arc<dyn AppRepository>,
}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_scripts, create_script))
        .routes(routes!(get_script, update_script, delete_script))
}

/// Body of `POST /api/admin/scripts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScriptRequest {
    /// Unique within the app: 1-64 ASCII letters, digits, `-` and `_`, starting with a
    /// letter or digit.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
    )]
    pub name: String,
    /// Rhai source, at most 256 KiB; it must compile.
    #[schema(max_length = 262144)]
    pub source: String,
    /// The app it belongs to.
    #[schema(value_type = String, format = Uuid)]
    pub app_id: AppId,
    /// Per-script limits, each at most the instance ceiling; the ceiling's values when
    /// absent.
    #[serde(default)]
    pub limits: Option<ScriptLimits>,
    /// Whether calling the script needs a bearer token with `script:execute` for its app;
    /// `false` (public: the script decides) when absent.
    #[serde(default)]
    pub require_token: Option<bool>,
}

/// Body of `PATCH /api/admin/scripts/{id}`: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScriptRequest {
    /// A new name, unique within the script's app.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
    )]
    pub name: Option<String>,
    /// New source; it must compile.
    #[serde(default)]
    #[schema(max_length = 262144)]
    pub source: Option<String>,
    /// New limits, replacing the old ones as a whole.
    #[serde(default)]
    pub limits: Option<ScriptLimits>,
    /// Whether calling the script needs a bearer token from now on.
    #[serde(default)]
    pub require_token: Option<bool>,
}

/// Query of `GET /api/admin/scripts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListScriptsQuery {
    /// Only this app's scripts; every visible app's when absent.
    #[param(value_type = Option<String>, format = Uuid)]
    pub app_id: Option<AppId>,
    /// Page size, 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; the first page when absent.
    pub cursor: Option<String>,
}

fn parse_name(raw: &str) -> Result<ScriptName, ApiError> {
    ScriptName::parse(raw).map_err(|e| ApiError::invalid_name(&e))
}

fn name_taken(name: &ScriptName, app: &AppSlug) -> ApiError {
    ApiError::conflict(format!(
        "a script named '{name}' already exists in app '{app}'"
    ))
}

fn script_not_found(id: ScriptId) -> ApiError {
    ApiError::not_found(format!("script {id} not found"))
}

/// The script with this id if the principal holds `capability` in its app; a script in an
/// app the principal cannot see is "not found", exactly like a missing one.
pub(crate) async fn authorized_script(
    scripts: &dyn ScriptRepository,
    auth: &Auth,
    id: ScriptId,
    capability: fn(AppId) -> Capability,
) -> Result<Script, ApiError> {
    let script = scripts.get(id).await?.ok_or_else(|| script_not_found(id))?;
    auth.require(capability(script.app_id), || script_not_found(id))?;
    Ok(script)
}

/// Create a script.
#[utoipa::path(
    post,
    path = "/scripts",
    tag = "scripts",
    request_body = CreateScriptRequest,
    responses(
        (status = 201, description = "The script was created", body = Script,
            headers(("location" = String, description = "The new script's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "No `script:write` for the app", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 409, description = "The app already has a script with that name", body = ErrorEnvelope),
        (status = 413, description = "Request body too large", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid name, limits, body or source; `compile_error` carries line and column", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create_script(
    State(state): State<ScriptsState>,
    auth: Auth,
    Json(body): Json<CreateScriptRequest>,
) -> Result<impl IntoResponse, ApiError> {
    // Permission first: a caller who may not write here learns nothing from validation.
    let app = authorized_app(
        state.apps.as_ref(),
        &auth,
        body.app_id,
        Capability::AppScriptsWrite,
    )
    .await?;
    let slug = app.slug;
    let name = parse_name(&body.name)?;
    let script = state
        .scripts
        .create(NewScript {
            app_id: app.id,
            name: name.clone(),
            source: body.source,
            limits: body.limits.unwrap_or_default(),
            require_token: body.require_token.unwrap_or(false),
        })
        .await
        .map_err(|err| match err {
            ScriptChangeError::Store(RepoError::Conflict { .. }) => name_taken(&name, &slug),
            other => other.into(),
        })?;
    tracing::info!(
        script_id = %script.id,
        app = %slug,
        name = %script.name,
        user = %auth.username,
        "script created"
    );
    Ok(created("scripts", script.id, script))
}

/// List scripts of the apps the caller can see, one page at a time.
#[utoipa::path(
    get,
    path = "/scripts",
    tag = "scripts",
    params(ListScriptsQuery),
    responses(
        (status = 200, description = "One page of scripts, by name then id", body = Page<ScriptSummary>),
        (status = 400, description = "Bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "No `script:read`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_scripts(
    State(state): State<ScriptsState>,
    auth: Auth,
    Query(query): Query<ListScriptsQuery>,
) -> Result<axum::Json<Page<ScriptSummary>>, ApiError> {
    let request = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .request::<(ScriptName, ScriptId)>()?;
    let apps = match query.app_id {
        Some(id) => {
            authorized_app(state.apps.as_ref(), &auth, id, Capability::AppScriptsRead).await?;
            Some(vec![id])
        }
        None => {
            auth.require_scope(Scope::ScriptRead)?;
            (!auth.sees_every_app()).then(|| auth.visible_apps())
        }
    };
    let scripts = state
        .scripts
        .repo()
        .list(ListScripts {
            apps,
            limit: request.fetch(),
            after: request.after.clone(),
        })
        .await?;
    Ok(axum::Json(request.page(
        scripts,
        |s| (s.name.clone(), s.id),
        |summary| summary,
    )))
}

/// Read one script, with its source.
#[utoipa::path(
    get,
    path = "/scripts/{id}",
    tag = "scripts",
    params(("id" = String, Path, format = Uuid, description = "Script id")),
    responses(
        (status = 200, description = "The script", body = Script),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `script:read` for the script's app", body = ErrorEnvelope),
        (status = 404, description = "No such script (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get_script(
    State(state): State<ScriptsState>,
    auth: Auth,
    PathId(id): PathId<ScriptId>,
) -> Result<axum::Json<Script>, ApiError> {
    let script =
        authorized_script(state.scripts.repo(), &auth, id, Capability::AppScriptsRead).await?;
    Ok(axum::Json(script))
}

/// Change a script's name, source, limits or token requirement; the version grows by one.
#[utoipa::path(
    patch,
    path = "/scripts/{id}",
    tag = "scripts",
    params(("id" = String, Path, format = Uuid, description = "Script id")),
    request_body = UpdateScriptRequest,
    responses(
        (status = 200, description = "The updated script", body = Script),
        (status = 400, description = "The id is not a UUID, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "No `script:write` for the script's app", body = ErrorEnvelope),
        (status = 404, description = "No such script (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 409, description = "The app already has a script with the new name", body = ErrorEnvelope),
        (status = 413, description = "Request body too large", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid name, limits, body or source; `compile_error` carries line and column", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn update_script(
    State(state): State<ScriptsState>,
    auth: Auth,
    PathId(id): PathId<ScriptId>,
    Json(body): Json<UpdateScriptRequest>,
) -> Result<axum::Json<Script>, ApiError> {
    let current =
        authorized_script(state.scripts.repo(), &auth, id, Capability::AppScriptsWrite).await?;
    let update = ScriptUpdate {
        name: body.name.as_deref().map(parse_name).transpose()?,
        source: body.source,
        limits: body.limits,
        require_token: body.require_token,
    };
    if update.is_empty() {
        return Err(ApiError::invalid_body(
            "give at least one of name, source, limits or require_token",
        ));
    }
    let new_name = update.name.clone();
    let updated = match state.scripts.update(id, update).await {
        Ok(script) => script,
        Err(ScriptChangeError::Store(RepoError::NotFound { .. })) => {
            return Err(script_not_found(id));
        }
        Err(ScriptChangeError::Store(RepoError::Conflict { what })) => {
            return Err(match new_name {
                Some(name) => rename_conflict(&state, current.app_id, &name).await,
                None => ApiError::conflict(format!("{what} already exists")),
            });
        }
        Err(other) => return Err(other.into()),
    };
    tracing::info!(
        script_id = %id,
        version = updated.version,
        user = %auth.username,
        "script updated"
    );
    Ok(axum::Json(updated))
}

/// Names the app in a rename conflict; the lookup only runs on this rare path.
async fn rename_conflict(state: &ScriptsState, app: AppId, name: &ScriptName) -> ApiError {
    match state.apps.get(app).await {
        Ok(Some(app)) => name_taken(name, &app.slug),
        Ok(None) => ApiError::conflict(format!("a script named '{name}' already exists")),
        Err(err) => err.into(),
    }
}

/// Delete a script. Its execution records stay until retention removes them.
#[utoipa::path(
    delete,
    path = "/scripts/{id}",
    tag = "scripts",
    params(("id" = String, Path, format = Uuid, description = "Script id")),
    responses(
        (status = 204, description = "The script was deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `script:write` for the script's app", body = ErrorEnvelope),
        (status = 404, description = "No such script (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete_script(
    State(state): State<ScriptsState>,
    auth: Auth,
    PathId(id): PathId<ScriptId>,
) -> Result<StatusCode, ApiError> {
    authorized_script(state.scripts.repo(), &auth, id, Capability::AppScriptsWrite).await?;
    match state.scripts.delete(id).await {
        Ok(()) => {}
        Err(ScriptChangeError::Store(RepoError::NotFound { .. })) => {
            return Err(script_not_found(id));
        }
        Err(other) => return Err(other.into()),
    }
    tracing::info!(script_id = %id, user = %auth.username, "script deleted");
    Ok(StatusCode::NO_CONTENT)
}

//! `/triggers`: register scripts to run on events (`POST /triggers`, the kind named by the
//! body's tagged `details`), list, read, change (`PATCH`: enable, retry policy, details) and
//! delete them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use picloud_shared::{
    AppId, Capability, ErrorCode, ErrorEnvelope, RetryPolicy, Scope, ScriptId, ScriptName,
    TriggerId, TriggerKind, UserId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::apps::App;
use crate::apps::AppRepository;
use crate::apps::http::authorized_app;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathId, Query};
use crate::http::{AdminState, Page, PageQuery, created};
use crate::repository::RepoError;
use crate::triggers::kinds::InvalidDetails;
use crate::triggers::{
    ListTriggers, RetryOverrides, ScriptRef, Trigger, TriggerChangeError, TriggerDetails,
    TriggerDetailsRequest, TriggerService,
};

/// What the trigger routes work with.
#[derive(Clone)]
pub struct TriggersState {
    /// Triggers, changed by their rules.
    pub triggers: TriggerService,
    /// Apps, to find the one a request names.
    pub apps: Arc<dyn AppRepository>,
}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_triggers, create_trigger))
        .routes(routes!(get_trigger, update_trigger, delete_trigger))
}

/// A trigger's retry policy in a request: absent fields take the instance defaults
/// (`PICLOUD_TRIGGER_RETRY_*`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Attempts in all, the first included: 1 to 100.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Delay after the first failed attempt, in milliseconds; doubled after each next one.
    /// At least 100 when the trigger retries.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86400000)]
    pub base_delay_ms: Option<u64>,
    /// The longest delay between two attempts, in milliseconds (at most one day, not below
    /// `base_delay_ms`).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86400000)]
    pub max_delay_ms: Option<u64>,
}

/// Body of `POST /api/admin/triggers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTriggerRequest {
    /// The app whose events it sees.
    #[schema(value_type = String, format = Uuid)]
    pub app_id: AppId,
    /// The script to run, by id (or give `script_name`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub script_id: Option<ScriptId>,
    /// The script to run, by its name in the app (or give `script_id`).
    #[serde(default)]
    pub script_name: Option<String>,
    /// The kind (`details.kind`) and what the trigger watches.
    pub details: TriggerDetailsRequest,
    /// Whether the trigger starts enabled; `true` when absent.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How failed runs are retried; the instance defaults when absent.
    #[serde(default)]
    pub retry: Option<RetryRequest>,
}

/// Body of `PATCH /api/admin/triggers/{id}`: each field present replaces the stored one;
/// at least one must be present.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTriggerRequest {
    /// Enables (events match it again from now on) or disables it (it matches no event;
    /// deliveries already in the outbox still run).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Changes to the retry policy; absent fields keep their current values.
    #[serde(default)]
    pub retry: Option<RetryRequest>,
    /// New details, of the trigger's own kind.
    #[serde(default)]
    pub details: Option<TriggerDetailsRequest>,
}

/// A trigger as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerView {
    /// Stable id.
    pub id: TriggerId,
    /// The app whose events it sees.
    pub app_id: AppId,
    /// What it reacts to.
    pub kind: TriggerKind,
    /// The script it runs.
    pub script_id: ScriptId,
    /// Disabled triggers match nothing.
    pub enabled: bool,
    /// The user who registered it; the script runs as them, with their current roles.
    pub registered_by: UserId,
    /// How failed runs are retried.
    pub retry: RetryPolicy,
    /// What it watches, tagged by `kind`.
    pub details: TriggerDetails,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Trigger> for TriggerView {
    fn from(t: Trigger) -> Self {
        let kind = t.kind();
        Self {
            id: t.id,
            app_id: t.app_id,
            kind,
            script_id: t.script_id,
            enabled: t.enabled,
            registered_by: t.registered_by,
            retry: t.retry,
            details: t.details,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Query of `GET /api/admin/triggers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListTriggersQuery {
    /// Only this app's triggers; those of every app where the caller may manage triggers
    /// when absent.
    #[param(value_type = Option<String>, format = Uuid)]
    pub app_id: Option<AppId>,
    /// Only this kind (`kv`, `files`, `dead_letter`).
    #[param(value_type = Option<TriggerKind>)]
    pub kind: Option<TriggerKind>,
    /// Page size, 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; the first page when absent.
    pub cursor: Option<String>,
}

fn trigger_not_found(id: TriggerId) -> ApiError {
    ApiError::not_found(format!("trigger {id} not found"))
}

/// The trigger with this id if the principal may manage its app's triggers; another
/// app's trigger is "not found", exactly like a missing one.
async fn authorized_trigger(
    state: &TriggersState,
    auth: &Auth,
    id: TriggerId,
) -> Result<Trigger, ApiError> {
    let trigger = state
        .triggers
        .repo()
        .get(id)
        .await?
        .ok_or_else(|| trigger_not_found(id))?;
    auth.require(Capability::AppManageTriggers(trigger.app_id), || {
        trigger_not_found(id)
    })?;
    Ok(trigger)
}

/// The app a create request names, once the caller may manage its triggers.
async fn target_app(state: &TriggersState, auth: &Auth, id: AppId) -> Result<App, ApiError> {
    authorized_app(state.apps.as_ref(), auth, id, Capability::AppManageTriggers).await
}

fn invalid_details(err: InvalidDetails) -> ApiError {
    ApiError::new(err.code, err.message)
}

fn change_refused(err: TriggerChangeError) -> ApiError {
    match err {
        TriggerChangeError::ScriptNotFound { .. } => ApiError::not_found(err.to_string()),
        TriggerChangeError::KindChange(_) | TriggerChangeError::NothingToChange => {
            ApiError::invalid_body(err.to_string())
        }
        TriggerChangeError::Retry(e) => ApiError::new(ErrorCode::InvalidRetry, e.to_string()),
        // The script was deleted between the check and the insert.
        TriggerChangeError::Store(RepoError::NotFound { what }) => {
            ApiError::not_found(format!("{what} not found"))
        }
        TriggerChangeError::Store(other) => other.into(),
    }
}

impl From<RetryRequest> for RetryOverrides {
    fn from(r: RetryRequest) -> Self {
        Self {
            max_attempts: r.max_attempts,
            base_delay_ms: r.base_delay_ms,
            max_delay_ms: r.max_delay_ms,
        }
    }
}

/// How a create request names its script: by exactly one of `script_id`, `script_name`.
fn script_ref(id: Option<ScriptId>, name: Option<&str>) -> Result<ScriptRef, ApiError> {
    match (id, name) {
        (Some(id), None) => Ok(ScriptRef::Id(id)),
        (None, Some(raw)) => ScriptName::parse(raw)
            .map(ScriptRef::Name)
            .map_err(|e| ApiError::invalid_name(&e)),
        _ => Err(ApiError::invalid_body(
            "name the script by exactly one of script_id or script_name",
        )),
    }
}

/// Run a script when an event of the trigger's kind happens in the app: `kv` (a key set or
/// deleted in a matching collection), `files` (a file created, updated or deleted in a
/// matching collection) or `dead_letter` (another trigger's delivery failed for good).
#[utoipa::path(
    post,
    path = "/triggers",
    tag = "triggers",
    request_body = CreateTriggerRequest,
    responses(
        (status = 201, description = "The trigger was created", body = TriggerView,
            headers(("location" = String, description = "The new trigger's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "No `triggers:manage` for the app", body = ErrorEnvelope),
        (status = 404, description = "No such app, or no such script in it (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 413, description = "Request body too large", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid body (`invalid_body`: also both or neither of `script_id` and `script_name`), script name (`invalid_name`), details (`invalid_glob`, `invalid_ops`, `invalid_source_kinds`, `invalid_details`) or retry policy (`invalid_retry`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create_trigger(
    State(state): State<TriggersState>,
    auth: Auth,
    Json(body): Json<CreateTriggerRequest>,
) -> Result<impl IntoResponse, ApiError> {
    // Permission first: a caller who may not manage triggers here learns nothing more.
    let app = target_app(&state, &auth, body.app_id).await?;
    let details = body.details.validate().map_err(invalid_details)?;
    let script = script_ref(body.script_id, body.script_name.as_deref())?;
    let trigger = state
        .triggers
        .create(
            &app,
            script,
            details,
            body.enabled,
            body.retry.unwrap_or_default().into(),
            auth.user_id,
        )
        .await
        .map_err(change_refused)?;
    tracing::info!(
        trigger_id = %trigger.id,
        kind = trigger.kind().as_str(),
        script_id = %trigger.script_id,
        user = %auth.username,
        "trigger created"
    );
    Ok(created("triggers", trigger.id, TriggerView::from(trigger)))
}

/// List triggers, oldest first, one page at a time.
#[utoipa::path(
    get,
    path = "/triggers",
    tag = "triggers",
    params(ListTriggersQuery),
    responses(
        (status = 200, description = "One page of triggers, oldest first", body = Page<TriggerView>),
        (status = 400, description = "Bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "No `triggers:manage`", body = ErrorEnvelope),
        (status = 404, description = "No such app (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_triggers(
    State(state): State<TriggersState>,
    auth: Auth,
    Query(query): Query<ListTriggersQuery>,
) -> Result<axum::Json<Page<TriggerView>>, ApiError> {
    let request = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .request::<(DateTime<Utc>, TriggerId)>()?;
    let apps = match query.app_id {
        Some(id) => {
            target_app(&state, &auth, id).await?;
            Some(vec![id])
        }
        None => {
            auth.require_scope(Scope::TriggersManage)?;
            (!auth.sees_every_app()).then(|| {
                auth.visible_apps()
                    .into_iter()
                    .filter(|app| auth.authorize(&Capability::AppManageTriggers(*app)).is_ok())
                    .collect()
            })
        }
    };
    let triggers = state
        .triggers
        .repo()
        .list(ListTriggers {
            apps,
            kind: query.kind,
            limit: request.fetch(),
            after: request.after,
        })
        .await?;
    Ok(axum::Json(request.page(
        triggers,
        |t| (t.created_at, t.id),
        TriggerView::from,
    )))
}

/// Read one trigger.
#[utoipa::path(
    get,
    path = "/triggers/{id}",
    tag = "triggers",
    params(("id" = String, Path, format = Uuid, description = "Trigger id")),
    responses(
        (status = 200, description = "The trigger", body = TriggerView),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `triggers:manage` for the trigger's app", body = ErrorEnvelope),
        (status = 404, description = "No such trigger (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get_trigger(
    State(state): State<TriggersState>,
    auth: Auth,
    PathId(id): PathId<TriggerId>,
) -> Result<axum::Json<TriggerView>, ApiError> {
    let trigger = authorized_trigger(&state, &auth, id).await?;
    Ok(axum::Json(trigger.into()))
}

/// Change a trigger: enable or disable it, replace its retry policy or its details (of
/// its own kind). Its id, and so its dead letters and execution records, stay.
#[utoipa::path(
    patch,
    path = "/triggers/{id}",
    tag = "triggers",
    params(("id" = String, Path, format = Uuid, description = "Trigger id")),
    request_body = UpdateTriggerRequest,
    responses(
        (status = 200, description = "The trigger, changed", body = TriggerView),
        (status = 400, description = "The id is not a UUID, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "No `triggers:manage` for the trigger's app", body = ErrorEnvelope),
        (status = 404, description = "No such trigger (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 413, description = "Request body too large", body = ErrorEnvelope),
        (status = 415, description = "Body is not declared as JSON", body = ErrorEnvelope),
        (status = 422, description = "Invalid body (`invalid_body`: nothing to change, or details of another kind), details (`invalid_glob`, `invalid_ops`, `invalid_source_kinds`) or retry policy (`invalid_retry`)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn update_trigger(
    State(state): State<TriggersState>,
    auth: Auth,
    PathId(id): PathId<TriggerId>,
    Json(body): Json<UpdateTriggerRequest>,
) -> Result<axum::Json<TriggerView>, ApiError> {
    let trigger = authorized_trigger(&state, &auth, id).await?;
    let details = body
        .details
        .map(|request| request.validate().map_err(invalid_details))
        .transpose()?;
    let trigger = state
        .triggers
        .update(
            &trigger,
            body.enabled,
            body.retry.map(RetryOverrides::from),
            details,
        )
        .await
        .map_err(|err| match err {
            TriggerChangeError::Store(RepoError::NotFound { .. }) => trigger_not_found(id),
            other => change_refused(other),
        })?;
    tracing::info!(trigger_id = %id, enabled = trigger.enabled, user = %auth.username, "trigger changed");
    Ok(axum::Json(trigger.into()))
}

/// Delete a trigger and its pending deliveries. Its dead letters stay, without their
/// trigger (they can be ignored, no longer replayed).
#[utoipa::path(
    delete,
    path = "/triggers/{id}",
    tag = "triggers",
    params(("id" = String, Path, format = Uuid, description = "Trigger id")),
    responses(
        (status = 204, description = "The trigger was deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `triggers:manage` for the trigger's app", body = ErrorEnvelope),
        (status = 404, description = "No such trigger (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete_trigger(
    State(state): State<TriggersState>,
    auth: Auth,
    PathId(id): PathId<TriggerId>,
) -> Result<StatusCode, ApiError> {
    authorized_trigger(&state, &auth, id).await?;
    match state.triggers.repo().delete(id).await {
        Ok(()) => {}
        Err(RepoError::NotFound { .. }) => return Err(trigger_not_found(id)),
        Err(other) => return Err(other.into()),
    }
    tracing::info!(trigger_id = %id, user = %auth.username, "trigger deleted");
    Ok(StatusCode::NO_CONTENT)
}

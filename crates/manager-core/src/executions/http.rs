//! Execution records: a script's runs, newest first, and single runs by id.

use std::sync::Arc;

use axum::extract::State;
use picloud_shared::{Capability, ErrorEnvelope, ExecutionId, ExecutionRecord, ScriptId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::executions::{ExecutionCursor, ExecutionLogRepository};
use crate::http::error::ApiError;
use crate::http::extract::{PathId, Query};
use crate::http::{AdminState, Page, PageQuery};
use crate::scripts::ScriptRepository;
use crate::scripts::http::authorized_script;

/// What the execution-record routes work with.
#[derive(Clone)]
pub struct ExecutionsState {
    /// Execution records.
    pub executions: Arc<dyn ExecutionLogRepository>,
    /// Scripts, to check the caller may read the script a record belongs to.
    pub scripts: Arc<dyn ScriptRepository>,
}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_script_executions))
        .routes(routes!(get_execution))
}

/// List a script's runs, newest first.
#[utoipa::path(
    get,
    path = "/scripts/{id}/executions",
    tag = "executions",
    params(
        ("id" = String, Path, format = Uuid, description = "Script id"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "One page of runs, newest first", body = Page<ExecutionRecord>),
        (status = 400, description = "The id is not a UUID, or bad query parameters", body = ErrorEnvelope),
        (status = 403, description = "No `script:read` for the script's app", body = ErrorEnvelope),
        (status = 404, description = "No such script (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn list_script_executions(
    State(state): State<ExecutionsState>,
    auth: Auth,
    PathId(id): PathId<ScriptId>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<Page<ExecutionRecord>>, ApiError> {
    let request = query.request::<ExecutionCursor>()?;
    authorized_script(
        state.scripts.as_ref(),
        &auth,
        id,
        Capability::AppScriptsRead,
    )
    .await?;
    let runs = state
        .executions
        .list_for_script(id, request.fetch(), request.after)
        .await?;
    Ok(axum::Json(request.page(
        runs,
        |run: &ExecutionRecord| ExecutionCursor::from(run),
        |run| run,
    )))
}

/// Read one run.
#[utoipa::path(
    get,
    path = "/executions/{id}",
    tag = "executions",
    params(("id" = String, Path, format = Uuid, description = "Execution id")),
    responses(
        (status = 200, description = "The run", body = ExecutionRecord),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 403, description = "No `script:read` for the run's app", body = ErrorEnvelope),
        (status = 404, description = "No such run (or one the caller cannot see)", body = ErrorEnvelope),
        (status = 503, description = "Database unavailable", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get_execution(
    State(state): State<ExecutionsState>,
    auth: Auth,
    PathId(id): PathId<ExecutionId>,
) -> Result<axum::Json<ExecutionRecord>, ApiError> {
    let not_found = || ApiError::not_found(format!("execution {id} not found"));
    let run = state.executions.get(id).await?.ok_or_else(not_found)?;
    auth.require(Capability::AppScriptsRead(run.app_id), not_found)?;
    Ok(axum::Json(run))
}

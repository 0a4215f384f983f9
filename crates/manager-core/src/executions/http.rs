//! Execution records: a script's runs, newest first, and single runs by id.

use std::sync::Arc;

use axum::extract::State;
use picloud_shared::{Capability, ErrorEnvelope, ExecutionId, ExecutionRecord, ScriptId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::auth::Auth;
use crate::executions::{ExecutionCursor, ExecutionLogRepository};
use crate::http::error::ApiError;
use crate::http::extract::{PathId, Query};
use crate::http::{AdminState, page_limit};
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

impl std::fmt::Debug for ExecutionsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionsState").finish_non_exhaustive()
    }
}

pub(crate) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_script_executions))
        .routes(routes!(get_execution))
}

/// Query of `GET /api/admin/scripts/{id}/executions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListExecutionsQuery {
    /// Page size, 1 to 200; 50 when absent.
    pub limit: Option<u32>,
    /// Continue with the runs older than this one (the previous page's `next_before`).
    #[param(value_type = Option<String>, format = Uuid)]
    pub before: Option<ExecutionId>,
}

/// One page of a script's runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionPage {
    /// The runs on this page.
    pub items: Vec<ExecutionRecord>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<ExecutionId>,
}

/// List a script's runs, newest first.
#[utoipa::path(
    get,
    path = "/scripts/{id}/executions",
    tag = "executions",
    params(
        ("id" = String, Path, format = Uuid, description = "Script id"),
        ListExecutionsQuery,
    ),
    responses(
        (status = 200, description = "One page of runs", body = ExecutionPage),
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
    Query(query): Query<ListExecutionsQuery>,
) -> Result<axum::Json<ExecutionPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    authorized_script(
        state.scripts.as_ref(),
        &auth,
        id,
        Capability::AppScriptsRead,
    )
    .await?;
    let before = match query.before {
        Some(before) => match state.executions.get(before).await? {
            Some(run) if run.script_id == id => Some(ExecutionCursor::from(&run)),
            _ => {
                return Err(ApiError::invalid_query(format!(
                    "before: {before} is not an execution of script {id}"
                )));
            }
        },
        None => None,
    };
    let items = state.executions.list_for_script(id, limit, before).await?;
    let full = u32::try_from(items.len()).is_ok_and(|n| n == limit);
    let next_before = if full {
        items.last().map(|r| r.id)
    } else {
        None
    };
    Ok(axum::Json(ExecutionPage { items, next_before }))
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

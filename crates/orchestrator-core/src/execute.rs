use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{self, AUTHORIZATION, CONTENT_LENGTH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use picloud_shared::{
    AppSlug, AuthError, Authenticator, Caller, Capability, ExecutionId, ExecutionRecord,
    ExecutionRecorder, ExecutionReport, ExecutionRequest, ExecutionStatus, ExecutorClient,
    HttpRequestData, InvocationType, RequestId, Script, ScriptId, ScriptName, ScriptResolver,
    ScriptResponse, bearer_token, carries_picloud_token,
};

use crate::{ApiError, OrchestratorConfig};

/// The header that names the execution behind a response, for looking up its record.
pub const EXECUTION_ID_HEADER: &str = "x-picloud-execution-id";

/// What the execute endpoints need: where scripts come from, what runs them, and where
/// their records go.
#[derive(Clone)]
pub struct OrchestratorState {
    /// Finds scripts (cached).
    pub resolver: Arc<dyn ScriptResolver>,
    /// Runs them.
    pub executor: Arc<dyn ExecutorClient>,
    /// Takes execution records off the request path.
    pub recorder: Arc<dyn ExecutionRecorder>,
    /// Checks bearer tokens for scripts that require one.
    pub authenticator: Arc<dyn Authenticator>,
    /// Limits.
    pub config: OrchestratorConfig,
}

impl std::fmt::Debug for OrchestratorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The execute routes. Apply [`crate::propagate_request_id`] around them (the binary does it
/// for the whole server); without it a fresh request id is made per request.
pub fn router(state: OrchestratorState) -> Router {
    Router::new()
        .route("/api/execute/{script_id}", any(execute_by_id))
        .route(
            "/api/execute/{script_id}/{*path}",
            any(execute_by_id_with_path),
        )
        .route("/api/run/{app}/{script}", any(execute_by_name))
        .route(
            "/api/run/{app}/{script}/{*path}",
            any(execute_by_name_with_path),
        )
        .with_state(state)
}

async fn execute_by_id(
    State(state): State<OrchestratorState>,
    path: Result<Path<String>, PathRejection>,
    request_id: Option<Extension<RequestId>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path(script_id) = path.map_err(ApiError::from)?;
    let script = resolve_by_id(&state, &script_id).await?;
    run(&state, script, String::new(), request_id, query, request).await
}

async fn execute_by_id_with_path(
    State(state): State<OrchestratorState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request_id: Option<Extension<RequestId>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path((script_id, path)) = path.map_err(ApiError::from)?;
    let script = resolve_by_id(&state, &script_id).await?;
    run(&state, script, path, request_id, query, request).await
}

async fn execute_by_name(
    State(state): State<OrchestratorState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request_id: Option<Extension<RequestId>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path((app, script)) = path.map_err(ApiError::from)?;
    let script = resolve_by_name(&state, &app, &script).await?;
    run(&state, script, String::new(), request_id, query, request).await
}

async fn execute_by_name_with_path(
    State(state): State<OrchestratorState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    request_id: Option<Extension<RequestId>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path((app, script, path)) = path.map_err(ApiError::from)?;
    let script = resolve_by_name(&state, &app, &script).await?;
    run(&state, script, path, request_id, query, request).await
}

async fn resolve_by_id(state: &OrchestratorState, raw: &str) -> Result<Arc<Script>, ApiError> {
    let id: ScriptId = raw
        .parse()
        .map_err(|_| ApiError::InvalidId(raw.to_owned()))?;
    state
        .resolver
        .by_id(id)
        .await
        .map_err(lookup_unavailable)?
        .ok_or_else(|| ApiError::ScriptNotFound(format!("no script with id {id}")))
}

async fn resolve_by_name(
    state: &OrchestratorState,
    app: &str,
    script: &str,
) -> Result<Arc<Script>, ApiError> {
    let app = AppSlug::parse(app).map_err(|e| ApiError::InvalidName(e.to_string()))?;
    let name = ScriptName::parse(script).map_err(|e| ApiError::InvalidName(e.to_string()))?;
    state
        .resolver
        .by_name(&app, &name)
        .await
        .map_err(lookup_unavailable)?
        .ok_or_else(|| ApiError::ScriptNotFound(format!("no script named '{name}' in app '{app}'")))
}

fn lookup_unavailable(err: picloud_shared::ResolveError) -> ApiError {
    tracing::error!(error = %err, "script lookup failed");
    ApiError::LookupUnavailable
}

async fn run(
    state: &OrchestratorState,
    script: Arc<Script>,
    sub_path: String,
    request_id: Option<Extension<RequestId>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let caller = if script.require_token {
        Some(authorize_caller(state, &script, request.headers()).await?)
    } else {
        None
    };
    let request_id = request_id.map_or_else(RequestId::generate, |Extension(id)| id);
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, state.config.max_body_bytes).await?;
    let http = HttpRequestData {
        method: parts.method.as_str().to_owned(),
        path: format!("/{sub_path}"),
        query,
        headers: headers_for_script(&parts.headers, script.require_token),
        body,
    };
    let execution_id = ExecutionId::new();
    let report = state
        .executor
        .execute(ExecutionRequest {
            execution_id,
            script: Arc::clone(&script),
            invocation_type: InvocationType::Http,
            request_id: request_id.clone(),
            http: Some(http),
            trigger: None,
            depth: 0,
            run_as: None,
            caller,
        })
        .await;

    let ExecutionReport {
        outcome,
        logs,
        duration,
        started_at,
        ..
    } = report;
    let result = outcome.map_err(ApiError::from).and_then(into_http_response);
    let (status, http_status, error) = match &result {
        Ok(response) => (ExecutionStatus::Success, response.status(), None),
        Err(failure @ ApiError::Execution(e)) => {
            (e.status(), failure.status(), Some(e.to_string()))
        }
        Err(other) => (
            ExecutionStatus::ScriptError,
            other.status(),
            Some(other.to_string()),
        ),
    };
    log_finished_run!(
        status,
        script_id = %script.id,
        execution_id = %execution_id,
        status = status.as_str(),
        http_status = http_status.as_u16(),
        duration_ms = duration_ms(duration),
        "script executed"
    );
    state
        .recorder
        .record(ExecutionRecord {
            id: execution_id,
            script_id: script.id,
            app_id: script.app_id,
            script_version: script.version,
            invocation_type: InvocationType::Http,
            trigger_id: None,
            request_id,
            status,
            http_status: Some(http_status.as_u16()),
            duration_ms: duration_ms(duration),
            logs,
            error,
            started_at,
        })
        .await;

    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Ok(value) = HeaderValue::from_str(&execution_id.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(EXECUTION_ID_HEADER), value);
    }
    Ok(response)
}

/// The request headers a script sees. A PiCloud credential never reaches a script, which
/// could log or store it where every viewer of its app reads it: `Authorization` is
/// dropped when it carries a PiCloud token (or was the token a `require_token` script
/// consumed), and `Proxy-Authorization` always (it is the proxy's, never the script's).
/// Everything else, a script's own webhook signature or `Basic` credentials included,
/// passes through; a header value that is not visible ASCII is left out.
fn headers_for_script(headers: &HeaderMap, token_consumed: bool) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| **name != header::PROXY_AUTHORIZATION)
        .filter_map(|(name, value)| Some((name, value.to_str().ok()?)))
        .filter(|(name, value)| {
            *name != AUTHORIZATION || !(token_consumed || carries_picloud_token(value))
        })
        .map(|(name, value)| (name.as_str().to_owned(), value.to_owned()))
        .collect()
}

/// A script that requires a token runs only for a caller whose token holds
/// `AppScriptsExecute` in the script's app, and learns who that caller is. The script's
/// endpoint is public knowledge, so a caller without access gets 403, not 404.
async fn authorize_caller(
    state: &OrchestratorState,
    script: &Script,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .ok_or(ApiError::Unauthorized)?;
    let principal = state
        .authenticator
        .authenticate(token)
        .await
        .map_err(|err| match err {
            AuthError::Invalid => ApiError::Unauthorized,
            AuthError::Unavailable(cause) => {
                tracing::error!(%cause, "token check failed");
                ApiError::LookupUnavailable
            }
        })?;
    let capability = Capability::AppScriptsExecute(script.app_id);
    principal
        .authorize(&capability)
        .map_err(|_| ApiError::Forbidden {
            scope: capability.required_scope(),
        })?;
    // An authenticator only ever answers with the principal of a presented token.
    Caller::from_principal(&principal).ok_or(ApiError::Unauthorized)
}

/// Reads the body up to `limit` bytes. A declared length over the limit is refused before
/// reading anything; a body that grows past it while streaming is refused as soon as it does.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(err) if picloud_shared::BodyTimedOut::caused(&*err) => Err(ApiError::BodyTimedOut),
        Err(err) => Err(ApiError::BodyUnreadable(err.to_string())),
    }
}

fn into_http_response(script_response: ScriptResponse) -> Result<Response, ApiError> {
    let ScriptResponse {
        status,
        headers,
        body,
    } = script_response;
    let status = StatusCode::from_u16(status).map_err(|_| {
        ApiError::Execution(picloud_shared::ExecutionError::Script {
            message: format!("statusCode {status} is not a valid HTTP status"),
            line: None,
            column: None,
        })
    })?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ApiError::InvalidResponseHeader(name.clone()))?;
        let header_value =
            HeaderValue::from_str(&value).map_err(|_| ApiError::InvalidResponseHeader(name))?;
        response.headers_mut().append(header_name, header_value);
    }
    // Appended, not replacing a script's own policy: every policy a response carries is
    // enforced, so the sandbox holds whatever the script adds.
    response.headers_mut().append(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SCRIPT_RESPONSE_POLICY),
    );
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// The Content-Security-Policy on every script response. Scripts answer on the same
/// origin as the admin API (and the dashboard behind the same Caddy), so a page a script
/// serves must not act with that origin: `sandbox` without `allow-same-origin` gives it an
/// opaque origin of its own, which can run its scripts and submit its forms but cannot read
/// the dashboard's storage or cookies, nor call the admin API with them.
pub const SCRIPT_RESPONSE_POLICY: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-downloads";

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

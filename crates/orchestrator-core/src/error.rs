use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picloud_shared::{ErrorEnvelope, ExecutionError};
use serde_json::json;

/// Everything the data plane can answer instead of a script's response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path names a script id that is not a UUID.
    #[error("'{0}' is not a valid script id (expected a UUID)")]
    InvalidId(String),
    /// The path names an app slug or script name that cannot exist.
    #[error("{0}")]
    InvalidName(String),
    /// The query string cannot be parsed.
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// No script at that id or name.
    #[error("{0}")]
    ScriptNotFound(String),
    /// The request body is over the limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body could not be read.
    #[error("could not read the request body: {0}")]
    BodyUnreadable(String),
    /// The script store is unreachable.
    #[error("script lookup is unavailable, try again shortly")]
    LookupUnavailable,
    /// The script requires a token and the request has none that works.
    #[error("this script requires a bearer token")]
    Unauthorized,
    /// The token works but may not call this script.
    #[error("this token may not call this script: it needs scope {scope} in the script's app")]
    Forbidden {
        /// The scope the call needs.
        scope: picloud_shared::Scope,
    },
    /// The script returned a header that HTTP cannot carry.
    #[error("script returned an invalid response header '{0}'")]
    InvalidResponseHeader(String),
    /// The run failed.
    #[error(transparent)]
    Execution(#[from] ExecutionError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid_id"),
            Self::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            Self::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::ScriptNotFound(_) => (StatusCode::NOT_FOUND, "script_not_found"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BodyUnreadable(_) => (StatusCode::BAD_REQUEST, "body_unreadable"),
            Self::LookupUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            Self::InvalidResponseHeader(_) => (StatusCode::UNPROCESSABLE_ENTITY, "script_error"),
            Self::Execution(e) => execution_status_and_code(e),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }
}

/// The status and envelope code a failed run answers with (SPEC §2: script error 422,
/// timeout 504, executor unreachable 502, resource limit 507).
pub(crate) fn execution_status_and_code(error: &ExecutionError) -> (StatusCode, &'static str) {
    match error {
        ExecutionError::Script { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "script_error"),
        ExecutionError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ExecutionError::ResourceLimit { .. } => {
            (StatusCode::INSUFFICIENT_STORAGE, "resource_limit")
        }
        ExecutionError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        ExecutionError::Unavailable { .. } => (StatusCode::BAD_GATEWAY, "executor_unavailable"),
        ExecutionError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            // A script error's position helps its author; everything else is the envelope.
            Self::Execution(ExecutionError::Script {
                message,
                line,
                column,
            }) => {
                json!({ "error": { "code": code, "message": message, "line": line, "column": column } })
            }
            Self::Execution(ExecutionError::Internal { message }) => {
                tracing::error!(cause = %message, "execution failed inside picloud");
                json!(ErrorEnvelope::new(code, "internal error"))
            }
            Self::Execution(ExecutionError::Unavailable { message }) => {
                tracing::error!(cause = %message, "executor unavailable");
                json!(ErrorEnvelope::new(code, "executor unavailable"))
            }
            other => json!(ErrorEnvelope::new(code, other.to_string())),
        };
        let mut response = (status, Json(body)).into_response();
        if let Self::Unauthorized = &self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::Execution(ExecutionError::Overloaded { retry_after }) = &self {
            let secs = retry_after.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

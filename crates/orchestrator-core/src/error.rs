use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picloud_shared::{ErrorCode, ErrorEnvelope, ExecutionError};

/// Everything the data plane can answer instead of a script's response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path names a script id that is not a UUID.
    #[error("'{0}' is not a valid script id (expected a UUID)")]
    InvalidId(String),
    /// The path names an app slug or script name that cannot exist.
    #[error("{0}")]
    InvalidName(String),
    /// The path cannot be decoded (invalid percent-encoding or UTF-8).
    #[error("the path could not be decoded: {0}")]
    InvalidPath(String),
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
    /// The body did not arrive within the server's body timeout.
    #[error("the request body did not arrive in time")]
    BodyTimedOut,
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
    /// The code this error answers with; its status is the code's own.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidId(_) => ErrorCode::InvalidId,
            Self::InvalidName(_) => ErrorCode::InvalidName,
            Self::InvalidPath(_) => ErrorCode::InvalidPath,
            Self::InvalidQuery(_) => ErrorCode::InvalidQuery,
            Self::ScriptNotFound(_) => ErrorCode::NotFound,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::BodyUnreadable(_) => ErrorCode::UnreadableBody,
            Self::BodyTimedOut => ErrorCode::RequestTimeout,
            Self::LookupUnavailable => ErrorCode::Unavailable,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::Forbidden { .. } => ErrorCode::Forbidden,
            Self::InvalidResponseHeader(_) => ErrorCode::ScriptError,
            Self::Execution(e) => execution_code(e),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The code a failed run answers with (SPEC §2: script error 422, timeout 504, executor
/// unreachable 502, resource limit 507).
fn execution_code(error: &ExecutionError) -> ErrorCode {
    match error {
        ExecutionError::Script { .. } => ErrorCode::ScriptError,
        ExecutionError::Timeout { .. } => ErrorCode::Timeout,
        ExecutionError::ResourceLimit { .. } => ErrorCode::ResourceLimit,
        ExecutionError::Overloaded { .. } => ErrorCode::Overloaded,
        ExecutionError::Unavailable { .. } => ErrorCode::ExecutorUnavailable,
        ExecutionError::Internal { .. } => ErrorCode::Internal,
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::InvalidPath(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = (self.status(), self.code());
        let body = match &self {
            // A script error's position helps its author; absent parts stay absent.
            Self::Execution(ExecutionError::Script {
                message,
                line,
                column,
            }) => ErrorEnvelope::new(code, message.clone()).at(*line, *column),
            Self::Execution(ExecutionError::Internal { message }) => {
                tracing::error!(cause = %message, "execution failed inside picloud");
                ErrorEnvelope::new(code, "internal error")
            }
            Self::Execution(ExecutionError::Unavailable { message }) => {
                tracing::error!(cause = %message, "executor unavailable");
                ErrorEnvelope::new(code, "executor unavailable")
            }
            other => ErrorEnvelope::new(code, other.to_string()),
        };
        let mut response = (status, Json(body)).into_response();
        if let Self::Unauthorized = &self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::Execution(ExecutionError::Overloaded { retry_after }) = &self {
            let secs = picloud_shared::retry_after_seconds(*retry_after);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

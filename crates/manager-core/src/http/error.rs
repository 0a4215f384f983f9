//! The admin API's error responses. This is the only place domain outcomes become status
//! codes; every error leaves in the one JSON envelope, 5xx bodies stay generic and their
//! cause is logged here, once.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picloud_shared::{
    AccessDenied, AuthError, CompileError, ErrorCode, ErrorEnvelope, LimitsError, NameError,
    ServiceError,
};

use crate::apps::AppChangeError;
use crate::error_chain;
use crate::repository::RepoError;
use crate::scripts::ScriptChangeError;

/// An admin API failure, ready to be answered.
#[derive(Debug)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
    position: Option<(u32, u32)>,
    // Boxed: rarely set, and it would double the size of every `Result<_, ApiError>`.
    header: Option<Box<(HeaderName, HeaderValue)>>,
}

impl ApiError {
    /// An answer with `code` (and so with its one status).
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            position: None,
            header: None,
        }
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some(Box::new((name, value)));
        self
    }

    /// 401 `unauthorized` with `WWW-Authenticate: Bearer`: no credential, or one that is
    /// unknown, malformed, expired or revoked (which of these is not said).
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 401 `invalid_credentials`: the same answer for an unknown user and a wrong password.
    pub(crate) fn invalid_credentials() -> Self {
        Self::new(ErrorCode::InvalidCredentials, "wrong username or password")
    }

    /// 403 `forbidden`, with a message naming what is missing.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// Turns a refused capability into its answer: `Hidden` becomes `hidden` (the very
    /// error a missing resource gets, so nothing leaks), `Forbidden` a 403 naming the scope.
    pub(crate) fn denied(denied: AccessDenied, hidden: impl FnOnce() -> Self) -> Self {
        match denied {
            AccessDenied::Hidden => hidden(),
            AccessDenied::Forbidden { .. } => Self::forbidden(denied.to_string()),
        }
    }

    /// 429 `too_many_attempts` with `Retry-After` in whole seconds (at least 1).
    pub(crate) fn too_many_attempts(retry_after: Duration) -> Self {
        let secs = picloud_shared::retry_after_seconds(retry_after);
        Self::new(
            ErrorCode::TooManyAttempts,
            format!("too many failed logins, try again in {secs} s"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// 503 `overloaded` with `Retry-After: 1`: the server is too busy to take this request
    /// now, and one a moment later may well succeed.
    pub(crate) fn overloaded(cause: &dyn std::error::Error) -> Self {
        Self::new(
            ErrorCode::Overloaded,
            format!("{cause}; try again in a moment"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(1_u64))
    }

    /// 500 `internal`, logging the cause once.
    pub(crate) fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(cause), "admin request failed");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 409 `conflict`.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 400 `invalid_id`: a path segment that should be an id is not a UUID.
    pub(crate) fn invalid_id(raw: &str) -> Self {
        Self::new(
            ErrorCode::InvalidId,
            format!("'{raw}' is not a valid id (expected a UUID)"),
        )
    }

    /// 400 `invalid_query`.
    pub(crate) fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidQuery, message)
    }

    /// 422 `invalid_argument`: a header or value the service cannot use, named in
    /// `message`.
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// 422 `invalid_body`: well-formed JSON that does not fit the request.
    pub(crate) fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidBody, message)
    }

    /// 422 `invalid_name`.
    pub(crate) fn invalid_name(err: &NameError) -> Self {
        Self::new(ErrorCode::InvalidName, err.to_string())
    }

    /// 422 `invalid_limits`.
    pub(crate) fn invalid_limits(err: &LimitsError) -> Self {
        Self::new(ErrorCode::InvalidLimits, err.to_string())
    }

    /// 422 `compile_error`, with the position in the body.
    pub(crate) fn compile(err: &CompileError) -> Self {
        Self {
            position: Some((err.line, err.column)),
            ..Self::new(ErrorCode::CompileError, err.to_string())
        }
    }

    /// 422 `source_too_large`.
    pub(crate) fn source_too_large(len: usize, max: usize) -> Self {
        Self::new(
            ErrorCode::SourceTooLarge,
            format!("source is {len} bytes, above the limit of {max} bytes"),
        )
    }

    /// 404 `not_found` for a path no route serves.
    pub(crate) fn no_route() -> Self {
        Self::not_found("no such admin endpoint")
    }

    /// 405 `method_not_allowed`.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            ErrorCode::MethodNotAllowed,
            "this endpoint does not support the request's method",
        )
    }
}

impl From<RepoError> for ApiError {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::NotFound { .. } => Self::not_found(err.to_string()),
            RepoError::Conflict { .. } => Self::conflict(err.to_string()),
            // Every rule a request must meet is checked before the store is asked; a value
            // the store still refuses (a CHECK constraint) is a fault here, not the client's.
            RepoError::Invalid(_) => {
                tracing::error!(error = %error_chain(&err), "admin request failed: the store refused a value that passed validation");
                Self::new(ErrorCode::Internal, "internal error")
            }
            RepoError::Unavailable(_) => {
                tracing::error!(error = %error_chain(&err), "admin request failed: database unavailable");
                Self::new(
                    ErrorCode::Unavailable,
                    "the database is unavailable, try again later",
                )
            }
            RepoError::Internal(_) => {
                tracing::error!(error = %error_chain(&err), "admin request failed");
                Self::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// A service call's failure (KV and the other script services, called on an admin's
/// behalf). Internal faults were logged by the service that hit them.
impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::InvalidArgument(message) => {
                Self::new(ErrorCode::InvalidArgument, message)
            }
            ServiceError::TooLarge { .. } => Self::new(ErrorCode::ValueTooLarge, err.to_string()),
            ServiceError::NotFound(message) => Self::not_found(message),
            ServiceError::Conflict(message) => Self::conflict(message),
            ServiceError::QuotaExceeded(message) => Self::new(ErrorCode::QuotaExceeded, message),
            ServiceError::StorageFull(_) => Self::new(ErrorCode::StorageFull, err.to_string()),
            // Logged with the path where it was found; the message names only the file.
            ServiceError::Corrupted(message) => Self::new(ErrorCode::FileCorrupted, message),
            ServiceError::Forbidden(_) => Self::forbidden(err.to_string()),
            ServiceError::Unavailable(_) => Self::new(
                ErrorCode::Unavailable,
                "the database is unavailable, try again later",
            ),
            ServiceError::Internal(_) => Self::new(ErrorCode::Internal, "internal error"),
        }
    }
}

impl From<ScriptChangeError> for ApiError {
    fn from(err: ScriptChangeError) -> Self {
        match err {
            ScriptChangeError::SourceTooLarge { len, max } => Self::source_too_large(len, max),
            ScriptChangeError::Compile(err) => Self::compile(&err),
            ScriptChangeError::Limits(err) => Self::invalid_limits(&err),
            ScriptChangeError::Store(err) => err.into(),
        }
    }
}

impl From<AppChangeError> for ApiError {
    fn from(err: AppChangeError) -> Self {
        match err {
            AppChangeError::DefaultSlug | AppChangeError::DefaultApp => {
                Self::new(ErrorCode::DefaultApp, err.to_string())
            }
            AppChangeError::Store(err) => err.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Invalid => Self::unauthorized(),
            AuthError::Unavailable(_) => {
                tracing::error!(error = %err, "admin request failed: authentication unavailable");
                Self::new(
                    ErrorCode::Unavailable,
                    "authentication is unavailable, try again later",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let detail = rejection_detail(&rejection, rejection.body_text());
        match rejection {
            JsonRejection::JsonDataError(_) => {
                Self::invalid_body(format!("invalid request body: {detail}"))
            }
            JsonRejection::JsonSyntaxError(_) => Self::new(
                ErrorCode::MalformedJson,
                format!("request body is not valid JSON: {detail}"),
            ),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                ErrorCode::UnsupportedMediaType,
                "request body must be JSON with content-type application/json",
            ),
            JsonRejection::BytesRejection(_)
                if picloud_shared::BodyTimedOut::caused(&rejection) =>
            {
                Self::new(
                    ErrorCode::RequestTimeout,
                    "the request body did not arrive in time",
                )
            }
            JsonRejection::BytesRejection(ref bytes)
                if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Self::new(
                    ErrorCode::PayloadTooLarge,
                    "request body is larger than this endpoint accepts",
                )
            }
            _ => Self::new(
                ErrorCode::UnreadableBody,
                format!("request body could not be read: {detail}"),
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let detail = rejection_detail(&rejection, rejection.body_text());
        Self::invalid_query(format!("invalid query string: {detail}"))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // Routes only capture plain strings, so this is a routing fault, not bad input.
        tracing::error!(error = %error_chain(&rejection), "admin path extraction failed");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// The parser's own words from a rejection (axum's wrapper repeats them in its `Display`,
/// behind a capitalised preamble).
fn rejection_detail(rejection: &dyn std::error::Error, fallback: String) -> String {
    rejection
        .source()
        .map_or(fallback, |cause| cause.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        let header = self.header.take();
        let (line, column) = self.position.unzip();
        let envelope = ErrorEnvelope::new(self.code, self.message).at(line, column);
        let status =
            StatusCode::from_u16(envelope.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(envelope)).into_response();
        if let Some((name, value)) = header.map(|h| *h) {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

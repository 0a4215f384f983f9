//! The admin API's error responses. This is the only place domain outcomes become status
//! codes; every error leaves in the one JSON envelope, 5xx bodies stay generic and their
//! cause is logged here, once.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picloud_shared::{
    AccessDenied, AuthError, CompileError, ErrorEnvelope, LimitsError, NameError, ServiceError,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error_chain;
use crate::repository::RepoError;

/// The envelope of a 422 answer: the usual `{"error": {"code", "message"}}`, plus `line`
/// and `column` when the code is `compile_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ValidationErrorEnvelope {
    /// The error itself.
    pub error: ValidationErrorBody,
}

/// The body of a [`ValidationErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    /// `compile_error`, `invalid_limits`, `invalid_name`, `invalid_body` or
    /// `source_too_large`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// 1-based line of a compile error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column of a compile error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// An admin API failure, ready to be answered.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    position: Option<(u32, u32)>,
    // Boxed: rarely set, and it would double the size of every `Result<_, ApiError>`.
    header: Option<Box<(HeaderName, HeaderValue)>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
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
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 401 `invalid_credentials`: the same answer for an unknown user and a wrong password.
    pub(crate) fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong username or password",
        )
    }

    /// 403 `forbidden`, with a message naming what is missing.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
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
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed logins, try again in {secs} s"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// 409 with a specific code (`app_not_empty`, `default_app`, `cannot_delete_self`, ...).
    pub(crate) fn conflict_with(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 400 with a specific code (`not_a_session`, ...).
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 with a specific code (`invalid_scope`, `invalid_password`, ...).
    pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500 `internal`, logging the cause once.
    pub(crate) fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(cause), "admin request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 400 `invalid_id`: a path segment that should be an id is not a UUID.
    pub(crate) fn invalid_id(raw: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("'{raw}' is not a valid id (expected a UUID)"),
        )
    }

    /// 400 `invalid_query`.
    pub(crate) fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    /// 422 `invalid_body`: well-formed JSON that does not fit the request.
    pub(crate) fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    /// 422 `invalid_name`.
    pub(crate) fn invalid_name(err: &NameError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            err.to_string(),
        )
    }

    /// 422 `invalid_limits`.
    pub(crate) fn invalid_limits(err: &LimitsError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_limits",
            err.to_string(),
        )
    }

    /// 422 `compile_error`, with the position in the body.
    pub(crate) fn compile(err: &CompileError) -> Self {
        Self {
            position: Some((err.line, err.column)),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "compile_error",
                err.to_string(),
            )
        }
    }

    /// 422 `source_too_large`.
    pub(crate) fn source_too_large(len: usize, max: usize) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "source_too_large",
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
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not support the request's method",
        )
    }
}

impl From<RepoError> for ApiError {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::NotFound { .. } => Self::not_found(err.to_string()),
            RepoError::Conflict { .. } => Self::conflict(err.to_string()),
            RepoError::Invalid(message) => Self::invalid_body(message),
            RepoError::Unavailable(_) => {
                tracing::error!(error = %error_chain(&err), "admin request failed: database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable, try again later",
                )
            }
            RepoError::Internal(_) => {
                tracing::error!(error = %error_chain(&err), "admin request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
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
                Self::unprocessable("invalid_argument", message)
            }
            ServiceError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value_too_large",
                err.to_string(),
            ),
            ServiceError::Forbidden(_) => Self::forbidden(err.to_string()),
            ServiceError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable, try again later",
            ),
            ServiceError::Internal(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
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
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
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
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("request body is not valid JSON: {detail}"),
            ),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request body must be JSON with content-type application/json",
            ),
            JsonRejection::BytesRejection(ref bytes)
                if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is larger than this endpoint accepts",
                )
            }
            _ => Self::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
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
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
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
        let mut response = match self.position {
            Some((line, column)) => {
                let body = ValidationErrorEnvelope {
                    error: ValidationErrorBody {
                        code: self.code.to_owned(),
                        message: self.message,
                        line: Some(line),
                        column: Some(column),
                    },
                };
                (self.status, axum::Json(body)).into_response()
            }
            None => (
                self.status,
                axum::Json(ErrorEnvelope::new(self.code, self.message)),
            )
                .into_response(),
        };
        if let Some((name, value)) = header.map(|h| *h) {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

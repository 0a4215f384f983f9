//! The one JSON error envelope every HTTP surface answers with, and the one list of error
//! codes: a condition has one code and one status wherever it happens (the admin API, the
//! execute endpoints, the server's own fallbacks).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every error code PiCloud answers with. Each has exactly one HTTP status
/// ([`ErrorCode::status`]); the OpenAPI document lists them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request body is not valid JSON.
    MalformedJson,
    /// 400: the request body could not be read.
    UnreadableBody,
    /// 400: a path segment that should be an id is not a UUID.
    InvalidId,
    /// 400: the path could not be decoded.
    InvalidPath,
    /// 400: the query string does not fit the endpoint.
    InvalidQuery,
    /// 400: the request needs a login session, not an API token.
    NotASession,
    /// 401: no valid bearer token.
    Unauthorized,
    /// 401: wrong username or password.
    InvalidCredentials,
    /// 403: the caller may see the resource but lacks the scope or role.
    Forbidden,
    /// 404: no such resource, or one the caller may not see.
    NotFound,
    /// 405: the endpoint does not take the request's method.
    MethodNotAllowed,
    /// 409: a name or another unique value is taken.
    Conflict,
    /// 409: an app with scripts is deleted without `cascade=true`.
    AppNotEmpty,
    /// 409: the `default` app cannot be deleted or renamed away.
    DefaultApp,
    /// 409: an instance admin cannot delete themselves.
    CannotDeleteSelf,
    /// 409: an app must keep an owner.
    LastOwner,
    /// 409: a dead letter's trigger was deleted, so it cannot be replayed.
    TriggerGone,
    /// 409: the dead letter was already resolved for good.
    AlreadyResolved,
    /// 413: the request body is over the endpoint's limit.
    PayloadTooLarge,
    /// 413: a stored value is over its service's limit.
    ValueTooLarge,
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 422: well-formed JSON that does not fit the request.
    InvalidBody,
    /// 422: a name (app slug, script name, username, collection, key) that is not valid.
    InvalidName,
    /// 422: script limits outside the instance's ceiling.
    InvalidLimits,
    /// 422: the script does not compile; `line`/`column` say where, when known.
    CompileError,
    /// 422: the script's source is over the size limit.
    SourceTooLarge,
    /// 422: a scope name that is not one of the seven, or not the caller's to give.
    InvalidScope,
    /// 422: a password outside the allowed length.
    InvalidPassword,
    /// 422: a trigger's retry policy cannot be used.
    InvalidRetry,
    /// 422: a collection glob that cannot be used.
    InvalidGlob,
    /// 422: a `kv` trigger's operations are empty.
    InvalidOps,
    /// 422: a `dead_letter` trigger's source kinds cannot be used.
    InvalidSourceKinds,
    /// 422: a trigger's details that its kind refuses (the message names the field); what
    /// a new trigger kind answers without needing a code of its own.
    InvalidDetails,
    /// 422: a service call's argument cannot be used.
    InvalidArgument,
    /// 422: the script failed (`line`/`column` say where, when known).
    ScriptError,
    /// 429: too many failed logins; `Retry-After` says when to try again.
    TooManyAttempts,
    /// 500: a fault inside PiCloud, logged once; the body says no more.
    Internal,
    /// 502: the executor could not be reached.
    ExecutorUnavailable,
    /// 503: the database (or another dependency) is unavailable; try again later.
    Unavailable,
    /// 503: every execution slot is busy; `Retry-After` says when to try again.
    Overloaded,
    /// 503: the server is not ready (its database does not answer).
    NotReady,
    /// 504: the script ran past its time limit.
    Timeout,
    /// 507: the script went past a sandbox limit (operations, sizes, depth, memory).
    ResourceLimit,
}

impl ErrorCode {
    /// The code as it appears in the envelope.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::UnreadableBody => "unreadable_body",
            Self::InvalidId => "invalid_id",
            Self::InvalidPath => "invalid_path",
            Self::InvalidQuery => "invalid_query",
            Self::NotASession => "not_a_session",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::AppNotEmpty => "app_not_empty",
            Self::DefaultApp => "default_app",
            Self::CannotDeleteSelf => "cannot_delete_self",
            Self::LastOwner => "last_owner",
            Self::TriggerGone => "trigger_gone",
            Self::AlreadyResolved => "already_resolved",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ValueTooLarge => "value_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidBody => "invalid_body",
            Self::InvalidName => "invalid_name",
            Self::InvalidLimits => "invalid_limits",
            Self::CompileError => "compile_error",
            Self::SourceTooLarge => "source_too_large",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidPassword => "invalid_password",
            Self::InvalidRetry => "invalid_retry",
            Self::InvalidGlob => "invalid_glob",
            Self::InvalidOps => "invalid_ops",
            Self::InvalidSourceKinds => "invalid_source_kinds",
            Self::InvalidDetails => "invalid_details",
            Self::InvalidArgument => "invalid_argument",
            Self::ScriptError => "script_error",
            Self::TooManyAttempts => "too_many_attempts",
            Self::Internal => "internal",
            Self::ExecutorUnavailable => "executor_unavailable",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::NotReady => "not_ready",
            Self::Timeout => "timeout",
            Self::ResourceLimit => "resource_limit",
        }
    }

    /// The HTTP status every answer with this code has.
    pub fn status(&self) -> u16 {
        match self {
            Self::MalformedJson
            | Self::UnreadableBody
            | Self::InvalidId
            | Self::InvalidPath
            | Self::InvalidQuery
            | Self::NotASession => 400,
            Self::Unauthorized | Self::InvalidCredentials => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict
            | Self::AppNotEmpty
            | Self::DefaultApp
            | Self::CannotDeleteSelf
            | Self::LastOwner
            | Self::TriggerGone
            | Self::AlreadyResolved => 409,
            Self::PayloadTooLarge | Self::ValueTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::InvalidBody
            | Self::InvalidName
            | Self::InvalidLimits
            | Self::CompileError
            | Self::SourceTooLarge
            | Self::InvalidScope
            | Self::InvalidPassword
            | Self::InvalidRetry
            | Self::InvalidGlob
            | Self::InvalidOps
            | Self::InvalidSourceKinds
            | Self::InvalidDetails
            | Self::InvalidArgument
            | Self::ScriptError => 422,
            Self::TooManyAttempts => 429,
            Self::Internal => 500,
            Self::ExecutorUnavailable => 502,
            Self::Unavailable | Self::Overloaded | Self::NotReady => 503,
            Self::Timeout => 504,
            Self::ResourceLimit => 507,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Retry-After` of an answer that asks the client to wait `wait`: whole seconds,
/// rounded up (a client told to retry sooner would find the same answer), at least 1.
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// `{"error": {"code": "snake_case_code", "message": "…"}}`, with `line` and `column` for
/// compile and script errors whose position is known (absent otherwise, never `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    /// The error itself.
    pub error: ErrorBody,
}

/// The body of an [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// 1-based line of a compile or script error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column of a compile or script error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl ErrorEnvelope {
    /// An envelope without a position.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
                line: None,
                column: None,
            },
        }
    }

    /// The same envelope pointing at `line`/`column`, each given only when known.
    pub fn at(mut self, line: Option<u32>, column: Option<u32>) -> Self {
        self.error.line = line;
        self.error.column = column;
        self
    }

    /// The HTTP status this envelope is answered with.
    pub fn status(&self) -> u16 {
        self.error.code.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        use std::time::Duration;
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn codes_serialise_as_their_names_and_positions_only_when_known() {
        let plain = serde_json::to_value(ErrorEnvelope::new(ErrorCode::NotFound, "gone")).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({ "error": { "code": "not_found", "message": "gone" } })
        );
        let placed = ErrorEnvelope::new(ErrorCode::ScriptError, "boom").at(Some(2), None);
        assert_eq!(
            serde_json::to_value(&placed).unwrap(),
            serde_json::json!({ "error": { "code": "script_error", "message": "boom", "line": 2 } })
        );
        assert_eq!(placed.status(), 422);
        let name = serde_json::to_value(ErrorCode::InvalidSourceKinds).unwrap();
        assert_eq!(
            name,
            serde_json::json!(ErrorCode::InvalidSourceKinds.as_str())
        );
    }
}

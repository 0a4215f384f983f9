//! The one JSON error envelope every HTTP surface answers with, and the one list of error
//! codes: a condition has one code and one status wherever it happens (the admin API, the
//! execute endpoints, the server's own fallbacks).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Declares [`ErrorCode`] from one list: each code once, with its name and its status, so
/// the enum, [`ErrorCode::as_str`] and [`ErrorCode::status`] cannot drift (a test checks
/// each name against serde's snake_case one, which the OpenAPI document shows).
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = ($name:literal, $status:literal),)*) => {
        /// Every error code PiCloud answers with. Each has exactly one HTTP status
        /// ([`ErrorCode::status`]); the OpenAPI document lists them all.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant,)*];

            /// The code as it appears in the envelope.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The HTTP status every answer with this code has.
            pub fn status(&self) -> u16 {
                match self {
                    $(Self::$variant => $status,)*
                }
            }
        }
    };
}

error_codes! {
    /// 400: the request body is not valid JSON.
    MalformedJson = ("malformed_json", 400),
    /// 400: the request body could not be read.
    UnreadableBody = ("unreadable_body", 400),
    /// 400: a path segment that should be an id is not a UUID.
    InvalidId = ("invalid_id", 400),
    /// 400: the path could not be decoded.
    InvalidPath = ("invalid_path", 400),
    /// 400: the query string does not fit the endpoint.
    InvalidQuery = ("invalid_query", 400),
    /// 400: the request needs a login session, not an API token.
    NotASession = ("not_a_session", 400),
    /// 401: no valid bearer token.
    Unauthorized = ("unauthorized", 401),
    /// 401: wrong username or password.
    InvalidCredentials = ("invalid_credentials", 401),
    /// 403: the caller may see the resource but lacks the scope or role.
    Forbidden = ("forbidden", 403),
    /// 404: no such resource, or one the caller may not see.
    NotFound = ("not_found", 404),
    /// 405: the endpoint does not take the request's method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// 409: a name or another unique value is taken.
    Conflict = ("conflict", 409),
    /// 409: an app with scripts is deleted without `cascade=true`.
    AppNotEmpty = ("app_not_empty", 409),
    /// 409: the `default` app cannot be deleted or renamed away.
    DefaultApp = ("default_app", 409),
    /// 409: an instance admin cannot delete themselves.
    CannotDeleteSelf = ("cannot_delete_self", 409),
    /// 409: an app must keep an owner.
    LastOwner = ("last_owner", 409),
    /// 409: a dead letter's trigger was deleted, so it cannot be replayed.
    TriggerGone = ("trigger_gone", 409),
    /// 409: the dead letter was already resolved for good.
    AlreadyResolved = ("already_resolved", 409),
    /// 408: the request body did not arrive within the server's body timeout.
    RequestTimeout = ("request_timeout", 408),
    /// 412: a precondition (`If-None-Match: *`, `If-Match: *`) did not hold.
    PreconditionFailed = ("precondition_failed", 412),
    /// 416: the `Range` asked for lies outside the file.
    RangeNotSatisfiable = ("range_not_satisfiable", 416),
    /// 413: the request body is over the endpoint's limit.
    PayloadTooLarge = ("payload_too_large", 413),
    /// 413: a stored value is over its service's limit.
    ValueTooLarge = ("value_too_large", 413),
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType = ("unsupported_media_type", 415),
    /// 422: well-formed JSON that does not fit the request.
    InvalidBody = ("invalid_body", 422),
    /// 422: a name (app slug, script name, username, collection, key) that is not valid.
    InvalidName = ("invalid_name", 422),
    /// 422: script limits outside the instance's ceiling.
    InvalidLimits = ("invalid_limits", 422),
    /// 422: the script does not compile; `line`/`column` say where, when known.
    CompileError = ("compile_error", 422),
    /// 422: the script's source is over the size limit.
    SourceTooLarge = ("source_too_large", 422),
    /// 422: a scope name that is not one of the seven, or not the caller's to give.
    InvalidScope = ("invalid_scope", 422),
    /// 422: a password outside the allowed length.
    InvalidPassword = ("invalid_password", 422),
    /// 422: a trigger's retry policy cannot be used.
    InvalidRetry = ("invalid_retry", 422),
    /// 422: a collection glob that cannot be used.
    InvalidGlob = ("invalid_glob", 422),
    /// 422: a `kv` trigger's operations are empty.
    InvalidOps = ("invalid_ops", 422),
    /// 422: a `dead_letter` trigger's source kinds cannot be used.
    InvalidSourceKinds = ("invalid_source_kinds", 422),
    /// 422: a trigger's details that its kind refuses (the message names the field); what
    /// a new trigger kind answers without needing a code of its own.
    InvalidDetails = ("invalid_details", 422),
    /// 422: a service call's argument cannot be used.
    InvalidArgument = ("invalid_argument", 422),
    /// 422: the script failed (`line`/`column` say where, when known).
    ScriptError = ("script_error", 422),
    /// 429: too many failed logins; `Retry-After` says when to try again.
    TooManyAttempts = ("too_many_attempts", 429),
    /// 500: a fault inside PiCloud, logged once; the body says no more.
    Internal = ("internal", 500),
    /// 500: a stored file's bytes do not match their checksum, or are gone; none were sent.
    FileCorrupted = ("file_corrupted", 500),
    /// 502: the executor could not be reached.
    ExecutorUnavailable = ("executor_unavailable", 502),
    /// 503: the database (or another dependency) is unavailable; try again later.
    Unavailable = ("unavailable", 503),
    /// 503: every execution slot is busy; `Retry-After` says when to try again.
    Overloaded = ("overloaded", 503),
    /// 503: the server is not ready (its database does not answer).
    NotReady = ("not_ready", 503),
    /// 504: the script ran past its time limit.
    Timeout = ("timeout", 504),
    /// 507: the script went past a sandbox limit (operations, sizes, depth, memory).
    ResourceLimit = ("resource_limit", 507),
    /// 507: the write would take the app past its file quota.
    QuotaExceeded = ("quota_exceeded", 507),
    /// 507: the disk has no room for the write; nothing was kept.
    StorageFull = ("storage_full", 507),
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

/// A request body that did not arrive within the server's body timeout. The HTTP server
/// fails the body's read with it, and every surface answers it with `request_timeout`
/// (408), found by walking the read error's sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

impl BodyTimedOut {
    /// Whether `err`, or any error it wraps, is a body timeout.
    pub fn caused(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(err);
        while let Some(err) = cause {
            if err.is::<Self>() {
                return true;
            }
            cause = err.source();
        }
        false
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

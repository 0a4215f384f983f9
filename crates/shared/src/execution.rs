//! What an execution is asked to do and what it reports back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use crate::{
    AppId, Credential, CredentialKind, ExecutionId, Principal, RequestId, Scope, Script, ScriptId,
    TokenId, TriggerId, UserId, Username,
};

/// What caused a run; exposed to scripts as `ctx.invocation_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvocationType {
    /// A synchronous HTTP request to the execute endpoint.
    Http,
    /// An event delivered by the outbox dispatcher to a trigger's script.
    Trigger,
}

impl InvocationType {
    /// The name scripts and the database see.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Trigger => "trigger",
        }
    }
}

/// The HTTP request a script sees as `ctx.request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequestData {
    /// Upper-case method, e.g. `POST`.
    pub method: String,
    /// The sub-path after the script's route, always starting with `/` (`/` when none).
    pub path: String,
    /// Query parameters in order; a repeated key appears more than once.
    pub query: Vec<(String, String)>,
    /// Headers with lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Bytes,
}

impl HttpRequestData {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body is declared as JSON (`application/json` or any `+json` type).
    pub fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
    }
}

/// One request to run a script. It crosses to a remote executor as it is, so it holds no
/// secret: the caller's PiCloud token is stripped from `http` before it is built, and
/// `run_as` names a credential without carrying it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRequest {
    /// The id this run is recorded under.
    pub execution_id: ExecutionId,
    /// The script, at the version to run.
    pub script: Arc<Script>,
    /// What caused the run.
    pub invocation_type: InvocationType,
    /// Correlates this run with the request that caused it.
    pub request_id: RequestId,
    /// The HTTP request, for HTTP invocations.
    pub http: Option<HttpRequestData>,
    /// The trigger and event, for triggered runs (`ctx.event`).
    pub trigger: Option<TriggeredBy>,
    /// How many triggered runs led to this one: 0 for an HTTP run. Events this run causes
    /// carry `depth + 1`, which is how trigger loops are stopped.
    pub depth: u32,
    /// Who the run acts as for capability checks: `None` for HTTP runs (the script acts
    /// with its own app's authority), the registering principal for triggered runs.
    pub run_as: Option<Principal>,
    /// Who called, for an HTTP run of a script that requires a token (`ctx.caller`);
    /// `None` for public scripts and triggered runs.
    pub caller: Option<Caller>,
}

/// Who called a script that requires a token, as the script sees it in `ctx.caller`. It
/// names the credential and what it may do; the secret itself never reaches a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The user behind the token.
    pub user_id: UserId,
    /// Their login name.
    pub username: Username,
    /// A login session or an API token.
    pub credential: CredentialKind,
    /// The token's id, as the admin API lists it.
    pub token_id: TokenId,
    /// The token's name (`login session` for a session).
    pub token_name: String,
    /// The scopes the token carries.
    pub scopes: BTreeSet<Scope>,
}

impl Caller {
    /// The caller behind a principal that presented a token; `None` for a trigger's
    /// registration, which no one presented.
    pub fn from_principal(principal: &Principal) -> Option<Self> {
        let Credential::Token { kind, token_id } = principal.credential else {
            return None;
        };
        Some(Self {
            user_id: principal.user_id,
            username: principal.username.clone(),
            credential: kind,
            token_id,
            token_name: principal.token_name.clone().unwrap_or_default(),
            scopes: principal.scopes.clone(),
        })
    }
}

/// What a triggered run knows about why it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggeredBy {
    /// The trigger that matched.
    pub trigger_id: TriggerId,
    /// The event payload the script sees as `ctx.event`.
    pub event: serde_json::Value,
}

/// A script's answer, already in HTTP terms by the response convention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, including `content-type` when the body has one.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Bytes,
}

/// Severity of a captured `log::…` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// `log::trace`
    Trace,
    /// `log::info`
    Info,
    /// `log::warn`
    Warn,
    /// `log::error`
    Error,
}

/// One captured log line of an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// Severity.
    pub level: LogLevel,
    /// The text the script logged.
    pub message: String,
    /// When it was logged.
    pub at: DateTime<Utc>,
}

/// Why a run did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ExecutionError {
    /// The script failed: a runtime error, a thrown value, or source that no longer compiles.
    #[error("{message}")]
    Script {
        /// What the script did wrong.
        message: String,
        /// 1-based line, when known.
        line: Option<u32>,
        /// 1-based column, when known.
        column: Option<u32>,
    },
    /// The script ran past its wall-clock budget and was stopped.
    #[error("script exceeded its time limit of {} ms", limit.as_millis())]
    Timeout {
        /// The budget it had.
        limit: Duration,
    },
    /// The script hit a sandbox limit (operations, string/array/map size, call depth).
    #[error("{message}")]
    ResourceLimit {
        /// Which limit, in words.
        message: String,
    },
    /// Too many executions are running; the caller may retry after the given time.
    #[error("too many executions in progress, retry in {} s", retry_after.as_secs())]
    Overloaded {
        /// A hint for the `Retry-After` header.
        retry_after: Duration,
    },
    /// The executor could not be reached.
    #[error("executor unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// A fault inside PiCloud rather than the script.
    #[error("internal error: {message}")]
    Internal {
        /// Why (logged, never shown to the client).
        message: String,
    },
}

impl ExecutionError {
    /// The status recorded for this failure.
    pub fn status(&self) -> ExecutionStatus {
        match self {
            Self::Script { .. } => ExecutionStatus::ScriptError,
            Self::Timeout { .. } => ExecutionStatus::Timeout,
            Self::ResourceLimit { .. } => ExecutionStatus::ResourceLimit,
            Self::Overloaded { .. } => ExecutionStatus::Overloaded,
            Self::Unavailable { .. } => ExecutionStatus::Unavailable,
            Self::Internal { .. } => ExecutionStatus::Internal,
        }
    }
}

/// What an executor reports for one run: the outcome plus everything worth recording,
/// which is there even when the script failed (its logs explain the failure). A serde type,
/// so a remote executor's answer can come back over the wire as it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionReport {
    /// The run's id.
    pub execution_id: ExecutionId,
    /// The response, or why there is none.
    pub outcome: Result<ScriptResponse, ExecutionError>,
    /// Captured `log::…` lines.
    pub logs: Vec<LogEntry>,
    /// Time spent running (not waiting for a slot).
    pub duration: Duration,
    /// When the run began, or was refused when it never began.
    pub started_at: DateTime<Utc>,
}

/// How a run ended, as recorded in `execution_logs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// The script returned a response.
    Success,
    /// The script failed.
    ScriptError,
    /// Stopped by its time limit.
    Timeout,
    /// Stopped by a sandbox limit.
    ResourceLimit,
    /// Refused for lack of a free execution slot.
    Overloaded,
    /// The executor was unreachable.
    Unavailable,
    /// A fault inside PiCloud.
    Internal,
}

impl ExecutionStatus {
    /// Every status, in a stable order.
    pub const ALL: [Self; 7] = [
        Self::Success,
        Self::ScriptError,
        Self::Timeout,
        Self::ResourceLimit,
        Self::Overloaded,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ScriptError => "script_error",
            Self::Timeout => "timeout",
            Self::ResourceLimit => "resource_limit",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Parses a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One row of `execution_logs`, written off the request's critical path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionRecord {
    /// The run's id.
    pub id: ExecutionId,
    /// The script that ran.
    pub script_id: ScriptId,
    /// Its app.
    pub app_id: AppId,
    /// The script version that ran.
    pub script_version: i64,
    /// What caused the run.
    pub invocation_type: InvocationType,
    /// The trigger whose event the run handled, for triggered runs.
    #[serde(default)]
    pub trigger_id: Option<TriggerId>,
    /// The request that caused it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub request_id: RequestId,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The HTTP status answered, for HTTP invocations.
    pub http_status: Option<u16>,
    /// Time spent running, in milliseconds.
    pub duration_ms: u64,
    /// Captured log lines.
    pub logs: Vec<LogEntry>,
    /// The error message, for failed runs.
    pub error: Option<String>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_crosses_the_wire_as_it_was_made() {
        let reports = [
            Ok(ScriptResponse {
                status: 201,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: Bytes::from_static(b"\xffbytes"),
            }),
            Err(ExecutionError::Script {
                message: "boom".into(),
                line: Some(2),
                column: None,
            }),
            Err(ExecutionError::Overloaded {
                retry_after: Duration::from_millis(1500),
            }),
        ];
        for outcome in reports {
            let report = ExecutionReport {
                execution_id: ExecutionId::new(),
                outcome,
                logs: vec![LogEntry {
                    level: LogLevel::Warn,
                    message: "careful".into(),
                    at: Utc::now(),
                }],
                duration: Duration::from_micros(1234),
                started_at: Utc::now(),
            };
            let json = serde_json::to_string(&report).unwrap();
            let back: ExecutionReport = serde_json::from_str(&json).unwrap();
            assert_eq!(back.execution_id, report.execution_id);
            assert_eq!(back.outcome, report.outcome);
            assert_eq!(back.logs, report.logs);
            assert_eq!(back.duration, report.duration);
            assert_eq!(back.started_at, report.started_at);
        }
    }

    #[test]
    fn statuses_round_trip_through_their_stored_names() {
        for status in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ExecutionStatus::parse("exploded"), None);
    }

    #[test]
    fn json_bodies_are_recognised_by_content_type() {
        let with = |ct: &str| HttpRequestData {
            headers: vec![("content-type".into(), ct.into())],
            ..Default::default()
        };
        assert!(with("application/json").is_json());
        assert!(with("Application/JSON; charset=utf-8").is_json());
        assert!(with("application/vnd.api+json").is_json());
        assert!(!with("text/plain").is_json());
        assert!(!HttpRequestData::default().is_json());
    }

    #[test]
    fn a_request_survives_the_trip_to_a_remote_executor() {
        use std::collections::HashMap;

        use crate::{AppRole, ScriptLimits, ScriptName};

        let app = AppId::new();
        let now = Utc::now();
        let request = ExecutionRequest {
            execution_id: ExecutionId::new(),
            script: Arc::new(Script {
                id: ScriptId::new(),
                app_id: app,
                name: ScriptName::parse("on-change").unwrap(),
                source: "ctx.event".to_owned(),
                limits: ScriptLimits::default(),
                version: 4,
                require_token: true,
                created_at: now,
                updated_at: now,
            }),
            invocation_type: InvocationType::Trigger,
            request_id: RequestId::generate(),
            http: Some(HttpRequestData {
                method: "POST".to_owned(),
                path: "/a/b".to_owned(),
                query: vec![
                    ("k".to_owned(), "1".to_owned()),
                    ("k".to_owned(), "2".to_owned()),
                ],
                headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                body: Bytes::from_static(b"{\"not\": \"utf-8 \xff\"}"),
            }),
            trigger: Some(TriggeredBy {
                trigger_id: TriggerId::new(),
                event: serde_json::json!({ "kind": "kv", "key": "ada" }),
            }),
            depth: 2,
            run_as: Some(Principal {
                user_id: UserId::new(),
                username: Username::parse("ada").unwrap(),
                instance_admin: false,
                roles: HashMap::from([(app, AppRole::Developer), (AppId::new(), AppRole::Viewer)]),
                credential: Credential::Trigger {
                    trigger_id: TriggerId::new(),
                },
                scopes: Scope::ALL.into_iter().collect(),
                app_restriction: Some(app),
                token_name: None,
            }),
            caller: Some(Caller {
                user_id: UserId::new(),
                username: Username::parse("grace").unwrap(),
                credential: crate::CredentialKind::ApiToken,
                token_id: crate::TokenId::new(),
                token_name: "deploy".to_owned(),
                scopes: [Scope::ScriptExecute].into_iter().collect(),
            }),
        };

        let json = serde_json::to_string(&request).unwrap();
        let back: ExecutionRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, request);
    }
}

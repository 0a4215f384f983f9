//! Builders shared by the integration tests.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use picloud_executor_core::{ExecutorConfig, LocalExecutorClient};
use picloud_shared::{
    AppId, ExecutionError, ExecutionId, ExecutionReport, ExecutionRequest, ExecutorClient,
    HttpRequestData, InvocationType, RequestId, SandboxCeiling, SandboxLimits, Script, ScriptId,
    ScriptLimits, ScriptName, ScriptResponse,
};

/// A script with the ceiling's limits.
pub fn script(source: &str) -> Script {
    script_with_limits(source, ScriptLimits::default())
}

/// A script with limits of its own.
pub fn script_with_limits(source: &str, limits: ScriptLimits) -> Script {
    let now = Utc::now();
    Script {
        id: ScriptId::new(),
        app_id: AppId::new(),
        name: ScriptName::parse("handler").unwrap_or_else(|err| panic!("{err}")),
        source: source.to_owned(),
        limits,
        version: 1,
        require_token: false,
        created_at: now,
        updated_at: now,
    }
}

/// A plain `GET /` with no query, headers or body.
pub fn get() -> HttpRequestData {
    HttpRequestData {
        method: "GET".to_owned(),
        path: "/".to_owned(),
        ..HttpRequestData::default()
    }
}

/// A `POST /` with the given content type and body.
pub fn post(content_type: &str, body: impl Into<Bytes>) -> HttpRequestData {
    HttpRequestData {
        method: "POST".to_owned(),
        path: "/".to_owned(),
        headers: vec![("content-type".to_owned(), content_type.to_owned())],
        body: body.into(),
        ..HttpRequestData::default()
    }
}

/// An HTTP execution request for `script`.
pub fn request(script: Script, http: Option<HttpRequestData>) -> ExecutionRequest {
    ExecutionRequest {
        execution_id: ExecutionId::new(),
        script: Arc::new(script),
        invocation_type: InvocationType::Http,
        request_id: RequestId::generate(),
        http,
        trigger: None,
        depth: 0,
        run_as: None,
        caller: None,
    }
}

/// A client with the default ceiling and a roomy gate.
pub fn client() -> LocalExecutorClient {
    LocalExecutorClient::new(ExecutorConfig::default())
}

/// A client whose ceiling allows effectively unlimited operations, for time-based tests.
pub fn client_without_op_ceiling() -> LocalExecutorClient {
    LocalExecutorClient::new(ExecutorConfig {
        ceiling: SandboxCeiling::new(SandboxLimits {
            max_operations: u64::MAX,
            ..SandboxLimits::default()
        }),
        ..ExecutorConfig::default()
    })
}

/// Runs `source` as a `GET /`.
pub async fn run(client: &LocalExecutorClient, source: &str) -> ExecutionReport {
    client.execute(request(script(source), Some(get()))).await
}

/// Runs `source` with limits of its own as a `GET /`.
pub async fn run_limited(
    client: &LocalExecutorClient,
    source: &str,
    limits: ScriptLimits,
) -> ExecutionReport {
    client
        .execute(request(script_with_limits(source, limits), Some(get())))
        .await
}

/// Runs `source` against the given HTTP request.
pub async fn run_http(
    client: &LocalExecutorClient,
    source: &str,
    http: HttpRequestData,
) -> ExecutionReport {
    client.execute(request(script(source), Some(http))).await
}

/// The response of a run that must have succeeded.
pub fn ok(report: ExecutionReport) -> ScriptResponse {
    match report.outcome {
        Ok(response) => response,
        Err(err) => panic!("expected a response, got {err:?} (logs: {:?})", report.logs),
    }
}

/// The error of a run that must have failed.
pub fn failure(report: ExecutionReport) -> ExecutionError {
    match report.outcome {
        Ok(response) => panic!("expected a failure, got {response:?}"),
        Err(err) => err,
    }
}

/// The message of a resource-limit failure.
pub fn resource_limit(report: ExecutionReport) -> String {
    match failure(report) {
        ExecutionError::ResourceLimit { message } => message,
        other => panic!("expected a resource limit, got {other:?}"),
    }
}

/// The message and position of a script failure.
pub fn script_error(report: ExecutionReport) -> (String, Option<u32>, Option<u32>) {
    match failure(report) {
        ExecutionError::Script {
            message,
            line,
            column,
        } => (message, line, column),
        other => panic!("expected a script error, got {other:?}"),
    }
}

/// The body of a response as text.
pub fn text(response: &ScriptResponse) -> &str {
    std::str::from_utf8(&response.body).unwrap_or_else(|err| panic!("body is not UTF-8: {err}"))
}

/// The body of a JSON response, parsed.
pub fn json(response: &ScriptResponse) -> serde_json::Value {
    assert_eq!(header(response, "content-type"), Some("application/json"));
    serde_json::from_slice(&response.body).unwrap_or_else(|err| panic!("body is not JSON: {err}"))
}

/// A response header by lower-case name.
pub fn header<'a>(response: &'a ScriptResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Longest a quick script may take, generous for debug builds on a busy machine.
pub const QUICK: Duration = Duration::from_secs(10);

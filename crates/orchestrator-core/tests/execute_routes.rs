//! The execute routes driven in-process with stand-in seams: what a client sees for each
//! outcome, and what gets recorded.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::middleware::from_fn;
use chrono::Utc;
use http_body_util::BodyExt;
use picloud_orchestrator_core::{
    OrchestratorConfig, OrchestratorState, propagate_request_id, router,
};
use picloud_shared::{
    AppId, AppRole, AppSlug, AuthError, Authenticator, Credential, CredentialKind, ExecutionError,
    ExecutionRecord, ExecutionRecorder, ExecutionReport, ExecutionRequest, ExecutionStatus,
    ExecutorClient, Principal, ResolveError, Scope, Script, ScriptId, ScriptLimits, ScriptName,
    ScriptResolver, ScriptResponse, TokenId, UserId, Username,
};
use serde_json::{Value, json};
use tower::ServiceExt;

struct OneScript(Arc<Script>);

#[async_trait]
impl ScriptResolver for OneScript {
    async fn by_id(&self, id: ScriptId) -> Result<Option<Arc<Script>>, ResolveError> {
        Ok((id == self.0.id).then(|| Arc::clone(&self.0)))
    }

    async fn by_name(
        &self,
        app: &AppSlug,
        name: &ScriptName,
    ) -> Result<Option<Arc<Script>>, ResolveError> {
        Ok((app.as_str() == "default" && *name == self.0.name).then(|| Arc::clone(&self.0)))
    }
}

/// Knows two tokens: one allowed to call scripts of the test app, one of another app.
struct FakeAuthenticator {
    app: AppId,
}

#[async_trait]
impl Authenticator for FakeAuthenticator {
    async fn authenticate(&self, bearer_token: &str) -> Result<Principal, AuthError> {
        let app = match bearer_token {
            "caller-token" => self.app,
            "stranger-token" => AppId::new(),
            "down" => return Err(AuthError::Unavailable("database down".into())),
            _ => return Err(AuthError::Invalid),
        };
        Ok(Principal {
            user_id: UserId::new(),
            username: Username::parse("caller").unwrap(),
            instance_admin: false,
            roles: [(app, AppRole::Viewer)].into_iter().collect(),
            credential: Credential::Token {
                kind: CredentialKind::ApiToken,
                token_id: TokenId::new(),
            },
            scopes: [Scope::ScriptExecute].into_iter().collect(),
            app_restriction: None,
            token_name: Some("deploy".to_owned()),
        })
    }
}

struct BrokenResolver;

#[async_trait]
impl ScriptResolver for BrokenResolver {
    async fn by_id(&self, _: ScriptId) -> Result<Option<Arc<Script>>, ResolveError> {
        Err(ResolveError("connection refused".into()))
    }

    async fn by_name(
        &self,
        _: &AppSlug,
        _: &ScriptName,
    ) -> Result<Option<Arc<Script>>, ResolveError> {
        Err(ResolveError("connection refused".into()))
    }
}

/// Echoes what it was asked to run as JSON, or fails the way it is told to.
struct FakeExecutor {
    failure: Option<ExecutionError>,
}

#[async_trait]
impl ExecutorClient for FakeExecutor {
    async fn execute(&self, request: ExecutionRequest) -> ExecutionReport {
        let http = request.http.unwrap_or_default();
        let outcome = match &self.failure {
            Some(e) => Err(e.clone()),
            None => Ok(ScriptResponse {
                status: 201,
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::to_vec(&json!({
                    "method": http.method,
                    "path": http.path,
                    "query": http.query,
                    "body": String::from_utf8_lossy(&http.body),
                    "request_id": request.request_id.as_str(),
                    "agent": http.header("user-agent"),
                    "authorization": http.header("authorization"),
                    "proxy_authorization": http.header("proxy-authorization"),
                    "caller": request.caller,
                }))
                .unwrap()
                .into(),
            }),
        };
        ExecutionReport {
            execution_id: request.execution_id,
            outcome,
            logs: vec![],
            duration: Duration::from_millis(3),
            started_at: chrono::Utc::now(),
        }
    }
}

#[derive(Default)]
struct Records(Mutex<Vec<ExecutionRecord>>);

#[async_trait]
impl ExecutionRecorder for Records {
    async fn record(&self, record: ExecutionRecord) {
        self.0.lock().unwrap().push(record);
    }
}

fn script(require_token: bool) -> Arc<Script> {
    Arc::new(Script {
        require_token,
        id: ScriptId::new(),
        app_id: AppId::new(),
        name: ScriptName::parse("hello").unwrap(),
        source: "\"hello\"".into(),
        limits: ScriptLimits::default(),
        version: 3,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    })
}

struct Harness {
    app: Router,
    script: Arc<Script>,
    records: Arc<Records>,
}

fn harness(failure: Option<ExecutionError>) -> Harness {
    harness_for(script(false), failure)
}

fn harness_for(script: Arc<Script>, failure: Option<ExecutionError>) -> Harness {
    let records = Arc::new(Records::default());
    let state = OrchestratorState {
        resolver: Arc::new(OneScript(Arc::clone(&script))),
        executor: Arc::new(FakeExecutor { failure }),
        recorder: records.clone(),
        authenticator: Arc::new(FakeAuthenticator { app: script.app_id }),
        config: OrchestratorConfig { max_body_bytes: 16 },
    };
    let app = router(state).layer(from_fn(propagate_request_id));
    Harness {
        app,
        script,
        records,
    }
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn runs_a_script_by_id_with_sub_path_query_and_body() {
    let h = harness(None);
    let request = Request::post(format!("/api/execute/{}/users/42?x=1&x=2&y=z", h.script.id))
        .header("user-agent", "tests")
        .header("x-request-id", "req-7")
        .body(Body::from("hi"))
        .unwrap();
    let (status, headers, body) = send(&h.app, request).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/users/42");
    assert_eq!(body["query"], json!([["x", "1"], ["x", "2"], ["y", "z"]]));
    assert_eq!(body["body"], "hi");
    assert_eq!(body["agent"], "tests");
    assert_eq!(body["request_id"], "req-7");
    assert_eq!(headers["x-request-id"], "req-7");

    let records = h.records.0.lock().unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.script_id, h.script.id);
    assert_eq!(record.script_version, 3);
    assert_eq!(record.status, ExecutionStatus::Success);
    assert_eq!(record.http_status, Some(201));
    assert_eq!(record.request_id.as_str(), "req-7");
    assert_eq!(
        headers["x-picloud-execution-id"],
        record.id.to_string().as_str()
    );
}

#[tokio::test]
async fn runs_a_script_by_app_and_name_and_makes_a_request_id() {
    let h = harness(None);
    let (status, headers, body) = send(&h.app, get("/api/run/default/hello")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["path"], "/");
    let made = headers["x-request-id"].to_str().unwrap();
    assert_eq!(body["request_id"], made);

    let (status, _, body) = send(&h.app, get("/api/run/default/hello/a/b")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["path"], "/a/b");
}

#[tokio::test]
async fn unusable_client_request_ids_are_replaced() {
    let h = harness(None);
    let request = Request::get("/api/run/default/hello")
        .header("x-request-id", "x".repeat(500))
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(&h.app, request).await;
    assert_ne!(headers["x-request-id"].len(), 500);
}

#[tokio::test]
async fn unknown_and_malformed_scripts_are_named() {
    let h = harness(None);
    let (status, _, body) = send(&h.app, get(&format!("/api/execute/{}", ScriptId::new()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    let (status, _, body) = send(&h.app, get("/api/execute/not-a-uuid")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_id");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not-a-uuid")
    );

    // The same code and status as a bad name anywhere in the admin API.
    let (status, _, body) = send(&h.app, get("/api/run/Bad_App/hello")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_name");

    // A path that does not decode answers in the envelope like every other refusal.
    let (status, _, body) = send(&h.app, get("/api/run/%FF/hello")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_path");

    let (status, _, body) = send(&h.app, get("/api/run/default/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'nope'")
    );
    assert!(
        h.records.0.lock().unwrap().is_empty(),
        "nothing ran, nothing is recorded"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_declared_or_streamed() {
    let h = harness(None);
    let declared = Request::post(format!("/api/execute/{}", h.script.id))
        .body(Body::from("x".repeat(17)))
        .unwrap();
    let (status, _, body) = send(&h.app, declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");

    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok("0123456789"), Ok("0123456789")];
    let streamed = Request::post(format!("/api/execute/{}", h.script.id))
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let (status, _, _) = send(&h.app, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let at_limit = Request::post(format!("/api/execute/{}", h.script.id))
        .body(Body::from("x".repeat(16)))
        .unwrap();
    assert_eq!(send(&h.app, at_limit).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn each_failure_maps_to_its_status_and_is_recorded() {
    let cases = [
        (
            ExecutionError::Script {
                message: "boom".into(),
                line: Some(2),
                column: Some(5),
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "script_error",
        ),
        (
            ExecutionError::Script {
                message: "thrown".into(),
                line: None,
                column: None,
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "script_error",
        ),
        (
            ExecutionError::Timeout {
                limit: Duration::from_millis(200),
            },
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
        ),
        (
            ExecutionError::ResourceLimit {
                message: "string too large".into(),
            },
            StatusCode::INSUFFICIENT_STORAGE,
            "resource_limit",
        ),
        (
            ExecutionError::Overloaded {
                retry_after: Duration::from_secs(2),
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
        ),
        (
            ExecutionError::Unavailable {
                message: "connection refused".into(),
            },
            StatusCode::BAD_GATEWAY,
            "executor_unavailable",
        ),
        (
            ExecutionError::Internal {
                message: "secret detail".into(),
            },
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
    ];
    for (failure, expected_status, expected_code) in cases {
        let h = harness(Some(failure.clone()));
        let (status, headers, body) =
            send(&h.app, get(&format!("/api/execute/{}", h.script.id))).await;
        assert_eq!(status, expected_status, "{failure:?}");
        assert_eq!(body["error"]["code"], expected_code);
        let records = h.records.0.lock().unwrap();
        assert_eq!(records[0].status, failure.status());
        assert_eq!(records[0].http_status, Some(expected_status.as_u16()));
        match failure {
            ExecutionError::Script { line: Some(_), .. } => {
                assert_eq!(body["error"]["line"], 2);
                assert_eq!(body["error"]["column"], 5);
                assert_eq!(body["error"]["message"], "boom");
            }
            // An unknown position is left out, never `null`.
            ExecutionError::Script { line: None, .. } => {
                let error = body["error"].as_object().unwrap();
                assert!(!error.contains_key("line"), "{body}");
                assert!(!error.contains_key("column"), "{body}");
            }
            ExecutionError::Overloaded { .. } => assert_eq!(headers["retry-after"], "2"),
            ExecutionError::Internal { .. } => {
                assert!(
                    !body.to_string().contains("secret detail"),
                    "5xx bodies stay generic"
                );
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn lookup_outage_is_a_503() {
    let state = OrchestratorState {
        resolver: Arc::new(BrokenResolver),
        executor: Arc::new(FakeExecutor { failure: None }),
        recorder: Arc::new(Records::default()),
        authenticator: Arc::new(FakeAuthenticator { app: AppId::new() }),
        config: OrchestratorConfig::default(),
    };
    let (status, _, body) = send(
        &router(state),
        get(&format!("/api/execute/{}", ScriptId::new())),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "unavailable");
}

#[tokio::test]
async fn query_strings_are_decoded_leniently_like_browsers_do() {
    let h = harness(None);
    let (status, _, body) = send(
        &h.app,
        get(&format!("/api/execute/{}?a=%ZZ&b=%C3%A9&c", h.script.id)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["query"], json!([["a", "%ZZ"], ["b", "é"], ["c", ""]]));
}

#[tokio::test]
async fn public_scripts_ignore_credentials() {
    let h = harness(None);
    let request = Request::get(format!("/api/execute/{}", h.script.id))
        .header("authorization", "Bearer garbage")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&h.app, request).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["authorization"], "Bearer garbage",
        "a public script reads its own authorization header"
    );
    assert_eq!(body["caller"], Value::Null, "a public script has no caller");
}

#[tokio::test]
async fn no_script_ever_sees_a_picloud_credential() {
    let h = harness(None);
    let request = Request::get(format!("/api/execute/{}", h.script.id))
        .header("authorization", "Bearer pc_an-admin-session")
        .header("proxy-authorization", "Basic YWRtaW46c2VjcmV0")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&h.app, request).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["authorization"],
        Value::Null,
        "a PiCloud token sent to a public script is dropped, not handed over"
    );
    assert_eq!(body["proxy_authorization"], Value::Null);
}

#[tokio::test]
async fn scripts_that_require_a_token_check_it_before_running() {
    let h = harness_for(script(true), None);
    let call = |token: Option<&str>| {
        let mut request = Request::post(format!("/api/execute/{}", h.script.id));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::from("x")).unwrap()
    };

    let (status, headers, body) = send(&h.app, call(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");

    let (status, _, _) = send(&h.app, call(Some("wrong"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _, body) = send(&h.app, call(Some("stranger-token"))).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the script is public knowledge: 403, not 404"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("script:execute")
    );

    let (status, _, _) = send(&h.app, call(Some("down"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        h.records.0.lock().unwrap().is_empty(),
        "refused calls never ran"
    );

    let (status, _, body) = send(&h.app, call(Some("caller-token"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["body"], "x");
    assert_eq!(
        body["authorization"],
        Value::Null,
        "the token PiCloud checked never reaches the script"
    );
    assert_eq!(body["caller"]["username"], "caller");
    assert_eq!(body["caller"]["token_name"], "deploy");
    assert_eq!(body["caller"]["credential"], "api_token");
    assert_eq!(body["caller"]["scopes"], json!(["script:execute"]));
    assert_eq!(h.records.0.lock().unwrap().len(), 1);
}

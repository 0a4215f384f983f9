//! The admin API driven in-process through the real router, over PostgreSQL repositories
//! in a fresh database per test (from `DATABASE_URL`; the tests fail when it is unset).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod executions;
mod openapi;
mod scripts;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use picloud_manager_core::postgres::{
    PgAppRepository, PgExecutionLogRepository, PgScriptRepository,
};
use picloud_manager_core::{AdminState, router};
use picloud_shared::{
    AppId, CompileError, SandboxCeiling, SandboxLimits, ScriptChangeObserver, ScriptId,
    ScriptValidator,
};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

/// Treats `@@` as a syntax error at its position; everything else compiles. The ceiling
/// allows at most 1,000,000 operations.
#[derive(Debug)]
struct StubValidator;

impl ScriptValidator for StubValidator {
    fn validate(&self, source: &str) -> Result<(), CompileError> {
        let Some(at) = source.find("@@") else {
            return Ok(());
        };
        let before = &source[..at];
        let line = before.matches('\n').count() + 1;
        let column = at - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
        Err(CompileError {
            message: "unexpected '@'".to_owned(),
            line: u32::try_from(line).unwrap(),
            column: u32::try_from(column).unwrap(),
        })
    }

    fn ceiling(&self) -> SandboxCeiling {
        SandboxCeiling::new(SandboxLimits {
            max_operations: 1_000_000,
            ..SandboxLimits::default()
        })
    }
}

/// Remembers every change it is told about.
#[derive(Debug, Default)]
struct RecordingObserver {
    changed: Mutex<Vec<ScriptId>>,
}

impl ScriptChangeObserver for RecordingObserver {
    fn script_changed(&self, id: ScriptId) {
        self.changed.lock().unwrap().push(id);
    }
}

/// The admin router over a database, with two observers to check that all are told.
struct TestApp {
    router: Router,
    pool: PgPool,
    observers: [Arc<RecordingObserver>; 2],
}

/// What a request got back.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// The envelope's error code, asserting the envelope's shape on the way.
    fn code(&self) -> &str {
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        error["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap()
    }
}

impl TestApp {
    fn new(pool: PgPool) -> Self {
        let observers = [
            Arc::new(RecordingObserver::default()),
            Arc::new(RecordingObserver::default()),
        ];
        let state = AdminState {
            scripts: Arc::new(PgScriptRepository::new(pool.clone())),
            apps: Arc::new(PgAppRepository::new(pool.clone())),
            executions: Arc::new(PgExecutionLogRepository::new(pool.clone())),
            validator: Arc::new(StubValidator),
            observers: observers
                .iter()
                .map(|o| o.clone() as Arc<dyn ScriptChangeObserver>)
                .collect(),
        };
        Self {
            router: router(state),
            pool,
            observers,
        }
    }

    /// What every observer was told, asserting they were all told the same.
    fn changed(&self) -> Vec<ScriptId> {
        let first = self.observers[0].changed.lock().unwrap().clone();
        let second = self.observers[1].changed.lock().unwrap().clone();
        assert_eq!(first, second, "observers were told different things");
        first
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("body is not JSON ({e}): {bytes:?}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn delete(&self, uri: &str) -> Reply {
        self.send(Request::delete(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn json(&self, method: Method, uri: &str, body: &Value) -> Reply {
        self.raw_json(method, uri, body.to_string()).await
    }

    async fn raw_json(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        self.send(request).await
    }

    /// Creates a script in the default app, asserting it worked.
    async fn create(&self, name: &str, source: &str) -> Value {
        let reply = self
            .json(
                Method::POST,
                "/api/admin/scripts",
                &serde_json::json!({ "name": name, "source": source }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// Adds an app directly in the database (there is no apps API yet).
    async fn add_app(&self, slug: &str) -> AppId {
        let id = AppId::new();
        sqlx::query("INSERT INTO apps (id, slug, name) VALUES ($1, $2, 'Test app')")
            .bind(id.as_uuid())
            .bind(slug)
            .execute(&self.pool)
            .await
            .unwrap();
        id
    }
}

fn script_id(script: &Value) -> ScriptId {
    script["id"].as_str().unwrap().parse().unwrap()
}

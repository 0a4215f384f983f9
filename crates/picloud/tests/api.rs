//! The real server on port 0 against a fresh PostgreSQL database, driven over HTTP: the
//! script lifecycle, the execute endpoints, and every error path a client can hit.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]
#![expect(
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

#[allow(
    dead_code,
    reason = "each test target uses its own part of the support module"
)]
mod support;

use std::time::{Duration, Instant};

use picloud_manager_core::DEFAULT_APP_ID;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{error_code, spawn_app, spawn_app_with, wait_for_execution};

#[tokio::test]
async fn script_lifecycle_create_list_get_execute_update_delete() {
    let app = spawn_app().await;

    let created = app.create_script("greet", r#""hello""#).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "greet");
    assert_eq!(created["version"], 1);

    let list: Value = app
        .client
        .get(app.url("/api/admin/scripts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list.get("next_cursor").is_none(), "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());

    let fetched: Value = app
        .client
        .get(app.url(&format!("/api/admin/scripts/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["source"], r#""hello""#);

    let response = app.execute(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(response.text().await.unwrap(), "hello");

    let by_name = app
        .client
        .get(app.url("/api/run/default/greet"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.text().await.unwrap(), "hello");

    let updated = app
        .client
        .patch(app.url(&format!("/api/admin/scripts/{id}")))
        .json(&json!({ "source": r#"#{ greeting: "hi", version: 2 }"# }))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["version"], 2);
    let response = app.execute(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "greeting": "hi", "version": 2 }),
        "the new version runs"
    );

    let deleted = app
        .client
        .delete(app.url(&format!("/api/admin/scripts/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, code, _) = error_code(app.execute(&id).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _, _) = error_code(
        app.client
            .get(app.url(&format!("/api/admin/scripts/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_script_sees_the_request_and_answers_structured() {
    let app = spawn_app().await;
    let source = r#"
        log::info("handling " + ctx.request.method);
        #{
            statusCode: 202,
            headers: #{ "x-answer": "42" },
            body: #{
                path: ctx.request.path,
                q: ctx.request.query.q,
                name: ctx.request.json.name,
                script: ctx.script_name,
                request_id: ctx.request_id,
                kind: ctx.invocation_type,
            }
        }
    "#;
    let created = app.create_script("echo", source).await;
    let id = created["id"].as_str().unwrap();
    let response = app
        .client
        .post(app.url(&format!("/api/execute/{id}/items/7?q=find")))
        .header("x-request-id", "trace-me")
        .json(&json!({ "name": "pi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-answer"], "42");
    assert_eq!(response.headers()["x-request-id"], "trace-me");
    let execution_id = response.headers()["x-picloud-execution-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "path": "/items/7", "q": "find", "name": "pi", "script": "echo",
            "request_id": "trace-me", "kind": "http"
        })
    );

    // The record is written off the request path; it shows up shortly after.
    let record = wait_for_execution(&app, &execution_id).await;
    assert_eq!(record["status"], "success");
    assert_eq!(record["http_status"], 202);
    assert_eq!(record["request_id"], "trace-me");
    assert_eq!(record["logs"][0]["message"], "handling POST");
    assert_eq!(record["logs"][0]["level"], "info");
}

#[tokio::test]
async fn admin_errors_name_the_problem() {
    let app = spawn_app().await;
    let scripts = app.url("/api/admin/scripts");

    let syntax = app
        .client
        .post(&scripts)
        .json(&json!({ "app_id": DEFAULT_APP_ID, "name": "broken", "source": "let x = ;\nx" }))
        .send()
        .await
        .unwrap();
    let (status, code, body) = error_code(syntax).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "compile_error")
    );
    assert_eq!(body["error"]["line"], 1);
    assert!(body["error"]["column"].as_u64().unwrap() > 0);

    app.create_script("taken", "1").await;
    let duplicate = app
        .client
        .post(&scripts)
        .json(&json!({ "app_id": DEFAULT_APP_ID, "name": "taken", "source": "2" }))
        .send()
        .await
        .unwrap();
    let (status, code, body) = error_code(duplicate).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert!(body["error"]["message"].as_str().unwrap().contains("taken"));

    let unknown = app
        .client
        .get(app.url(&format!("/api/admin/scripts/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(unknown).await.0, StatusCode::NOT_FOUND);

    let bad_id = app
        .client
        .get(app.url("/api/admin/scripts/12345"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(bad_id).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_id")
    );

    let malformed = app
        .client
        .post(&scripts)
        .header("content-type", "application/json")
        .body("{\"name\": \"x\", ")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(malformed).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );

    let wrong_types = app
        .client
        .post(&scripts)
        .json(&json!({ "name": 7, "source": ["no"] }))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(wrong_types).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );

    let bad_name = app
        .client
        .post(&scripts)
        .json(&json!({ "app_id": DEFAULT_APP_ID, "name": "no spaces", "source": "1" }))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(bad_name).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name")
    );

    let unknown_route = app
        .client
        .get(app.url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(unknown_route).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM scripts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "no failed request left a row behind");
}

#[tokio::test]
async fn execute_errors_name_the_problem() {
    let app = spawn_app_with(&[("PICLOUD_MAX_BODY_BYTES", "1024")]).await;
    let id = app.create_script("echo", "ctx.request.body").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, code, _) = error_code(app.execute("not-a-uuid").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_id")
    );

    let oversized = app
        .client
        .post(app.url(&format!("/api/execute/{id}")))
        .body("x".repeat(1025))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(oversized).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    let fits = app
        .client
        .post(app.url(&format!("/api/execute/{id}")))
        .body("x".repeat(1024))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), StatusCode::OK);

    let failing = app
        .create_script("fails", "let a = 1;\nthrow \"nope\";")
        .await;
    let (status, code, body) = error_code(app.execute(failing["id"].as_str().unwrap()).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "script_error")
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));
    assert_eq!(body["error"]["line"], 2);
}

#[tokio::test]
async fn a_runaway_script_is_stopped_while_others_keep_being_served() {
    // A budget too large to run out first: the wall clock is what stops it.
    let app = spawn_app_with(&[
        ("PICLOUD_SANDBOX_TIMEOUT_MS", "1500"),
        ("PICLOUD_SANDBOX_MAX_OPERATIONS", "100000000000"),
    ])
    .await;
    let spin = app.create_script("spin", "loop { }").await;
    let hello = app.create_script("hello", r#""hello""#).await;
    let spin_id = spin["id"].as_str().unwrap().to_owned();
    let hello_id = hello["id"].as_str().unwrap().to_owned();

    let runaway = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/execute/{spin_id}"));
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    // While the runaway spins, ordinary requests are answered.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let response = app.execute(&hello_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "hello");
    }
    assert!(
        !runaway.is_finished(),
        "the runaway should still be running"
    );

    let (status, code, _) = error_code(runaway.await.unwrap()).await;
    assert!(
        matches!(
            (status, code.as_str()),
            (StatusCode::GATEWAY_TIMEOUT, "timeout")
                | (StatusCode::INSUFFICIENT_STORAGE, "resource_limit")
        ),
        "{status} {code}"
    );
    let after = app.execute(&hello_id).await;
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");

    // With the database gone, the process is up but not ready.
    app.pool.close().await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/admin/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    assert!(doc["paths"]["/api/admin/scripts"].is_object());
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_keeps_every_record() {
    let app = spawn_app().await;
    // Marks that it started, then stays in flight for half a second.
    let slow = app
        .create_script(
            "slow",
            r#"kv::collection("marks").set("started", true); sleep(0.5); "done""#,
        )
        .await;
    let slow_id = slow["id"].as_str().unwrap().to_owned();
    let in_flight = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/execute/{slow_id}"));
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    let waiting = Instant::now();
    loop {
        let marks: i64 =
            sqlx::query_scalar("SELECT count(*) FROM kv_entries WHERE collection = 'marks'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if marks == 1 {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the script never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shutdown_began = chrono::Utc::now();
    let pool = app.stop().await;

    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "done");
    let recorded: Vec<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT started_at, duration_ms FROM execution_logs WHERE status = 'success'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        recorded.len(),
        1,
        "the in-flight execution's record was flushed at shutdown"
    );
    let (started_at, duration_ms) = recorded[0];
    assert!(
        started_at + chrono::TimeDelta::milliseconds(duration_ms) > shutdown_began,
        "the run was still going when the shutdown began: started {started_at}, \
         took {duration_ms} ms, shutdown at {shutdown_began}"
    );
}

#[tokio::test]
async fn past_the_execution_gate_callers_get_a_503_with_retry_after() {
    let app = spawn_app_with(&[
        ("PICLOUD_MAX_CONCURRENT_EXECUTIONS", "1"),
        ("PICLOUD_EXECUTION_QUEUE_TIMEOUT_MS", "50"),
        ("PICLOUD_SANDBOX_TIMEOUT_MS", "1500"),
        ("PICLOUD_SANDBOX_MAX_OPERATIONS", "100000000000"),
    ])
    .await;
    let spin = app.create_script("spin", "loop { }").await;
    let hello = app.create_script("hello", r#""hello""#).await;
    let busy = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/execute/{}", spin["id"].as_str().unwrap()));
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let refused = app.execute(hello["id"].as_str().unwrap()).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, code, _) = error_code(refused).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );

    busy.await.unwrap();
    let served = app.execute(hello["id"].as_str().unwrap()).await;
    assert_eq!(served.status(), StatusCode::OK, "the slot is free again");
}

#[tokio::test]
async fn the_admin_api_needs_a_credential() {
    let app = spawn_app().await;
    let anonymous = app
        .anonymous
        .get(app.url("/api/admin/scripts"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let (status, code, _) = error_code(anonymous).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
}

#[tokio::test]
async fn a_script_that_requires_a_token_runs_only_for_callers_with_script_execute() {
    let app = spawn_app().await;
    let created = app
        .client
        .post(app.url("/api/admin/scripts"))
        .json(&json!({ "app_id": DEFAULT_APP_ID, "name": "private", "source": r#""secret sauce""#, "require_token": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["require_token"], true);
    let url = app.url("/api/run/default/private");

    let token_with = |scopes: Value| {
        let client = app.client.clone();
        let url = app.url("/api/admin/tokens");
        async move {
            let response = client
                .post(url)
                .json(&json!({ "name": "caller", "scopes": scopes }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let body: Value = response.json().await.unwrap();
            body["token"].as_str().unwrap().to_owned()
        }
    };
    let executor = token_with(json!(["script:execute"])).await;
    let reader = token_with(json!(["script:read"])).await;

    let (status, code, _) = error_code(app.anonymous.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let wrong_scope = app
        .anonymous
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(wrong_scope).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let allowed = app
        .anonymous
        .get(&url)
        .bearer_auth(&executor)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.text().await.unwrap(), "secret sauce");

    // Public scripts stay public.
    app.create_script("open", r#""hi""#).await;
    let public = app
        .anonymous
        .get(app.url("/api/run/default/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::OK);
}

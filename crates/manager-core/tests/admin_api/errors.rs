//! Every error path of the script endpoints: status and envelope code.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use picloud_shared::ScriptId;
use serde_json::json;
use sqlx::PgPool;

use picloud_manager_core::DEFAULT_APP_ID;

use crate::{TestApp, script_id, total};

const SCRIPTS: &str = "/api/admin/scripts";

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_syntax_error_is_422_with_line_and_column(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "broken", "source": "let x = 1;\nlet y = @@;" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "compile_error");
    assert_eq!(reply.body["error"]["line"], 2);
    assert_eq!(reply.body["error"]["column"], 9);
    assert!(
        reply.message().contains("line 2, column 9"),
        "{}",
        reply.message()
    );
    assert_eq!(total(&app.get(SCRIPTS).await.body), 0);

    // On update too, and the stored script is untouched.
    let created = app.create("fine", "1").await;
    let uri = format!("{SCRIPTS}/{}", script_id(&created));
    let reply = app
        .json(Method::PATCH, &uri, &json!({ "source": "@@" }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "compile_error");
    assert_eq!(reply.body["error"]["line"], 1);
    assert_eq!(reply.body["error"]["column"], 1);
    assert_eq!(app.get(&uri).await.body, created);
    assert!(app.changed().is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn limits_above_the_ceiling_are_422_invalid_limits(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "greedy", "source": "1", "limits": { "max_operations": 1_000_001 } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_limits");
    assert!(
        reply.message().contains("max_operations"),
        "{}",
        reply.message()
    );
    assert!(reply.body["error"].get("line").is_none());

    let created = app.create("modest", "1").await;
    let uri = format!("{SCRIPTS}/{}", script_id(&created));
    let reply = app
        .json(
            Method::PATCH,
            &uri,
            &json!({ "limits": { "timeout_ms": 0 } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_limits");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bad_names_and_slugs_are_422_invalid_name(pool: PgPool) {
    let app = TestApp::new(pool).await;
    for body in [
        json!({ "app_id": DEFAULT_APP_ID, "name": "has space", "source": "1" }),
        json!({ "app_id": DEFAULT_APP_ID, "name": "", "source": "1" }),
    ] {
        let reply = app.json(Method::POST, SCRIPTS, &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.code(), "invalid_name", "{body}");
    }
    // Apps are named by id; a slug where the id goes is a body that does not fit.
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "name": "ok", "source": "1", "app_id": "Not_A_Slug" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");
    let created = app.create("named", "1").await;
    let uri = format!("{SCRIPTS}/{}", script_id(&created));
    let reply = app
        .json(Method::PATCH, &uri, &json!({ "name": "a/b" }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_name");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_taken_name_is_409_naming_the_script_and_app(pool: PgPool) {
    let app = TestApp::new(pool).await;
    app.create("hello", "1").await;
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "hello", "source": "2" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "conflict");
    assert_eq!(
        reply.message(),
        "a script named 'hello' already exists in app 'default'"
    );

    let other = app.create("other", "1").await;
    let uri = format!("{SCRIPTS}/{}", script_id(&other));
    let reply = app
        .json(Method::PATCH, &uri, &json!({ "name": "hello" }))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "conflict");
    assert_eq!(
        reply.message(),
        "a script named 'hello' already exists in app 'default'"
    );
    assert!(app.changed().is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn unknown_apps_and_scripts_are_404(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let nowhere = picloud_shared::AppId::new();
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": nowhere, "name": "lost", "source": "1" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    assert_eq!(reply.message(), format!("app {nowhere} not found"));

    let reply = app.get(&format!("{SCRIPTS}?app_id={nowhere}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");

    let missing = ScriptId::new();
    let uri = format!("{SCRIPTS}/{missing}");
    let reply = app.get(&uri).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    assert_eq!(reply.message(), format!("script {missing} not found"));
    let reply = app
        .json(Method::PATCH, &uri, &json!({ "source": "1" }))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    assert!(app.changed().is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_path_id_that_is_not_a_uuid_is_400_invalid_id(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let bad = format!("{SCRIPTS}/not-a-uuid");
    let replies = [
        app.get(&bad).await,
        app.delete(&bad).await,
        app.json(Method::PATCH, &bad, &json!({ "source": "1" }))
            .await,
        app.get(&format!("{bad}/executions")).await,
        app.get("/api/admin/executions/12345").await,
    ];
    for reply in replies {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert_eq!(reply.code(), "invalid_id");
    }
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bodies_that_do_not_fit_are_refused_in_the_envelope(pool: PgPool) {
    let app = TestApp::new(pool).await;

    let reply = app.raw_json(Method::POST, SCRIPTS, "{\"name\": ").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "malformed_json");

    let reply = app
        .json(Method::POST, SCRIPTS, &json!({ "name": 5, "source": "1" }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");
    assert!(reply.message().contains("name"), "{}", reply.message());

    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "x", "source": "1", "colour": "blue" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");
    assert!(reply.message().contains("colour"), "{}", reply.message());

    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "x", "source": "1", "limits": { "max_ops": 1 } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");

    let reply = app
        .json(Method::POST, SCRIPTS, &json!({ "source": "1" }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");

    let created = app.create("target", "1").await;
    let uri = format!("{SCRIPTS}/{}", script_id(&created));
    let reply = app.json(Method::PATCH, &uri, &json!({})).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");
    assert_eq!(app.get(&uri).await.body["version"], 1);

    let reply = app
        .send(
            Request::post(SCRIPTS)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(
                    json!({ "app_id": DEFAULT_APP_ID, "name": "x", "source": "1" }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.code(), "unsupported_media_type");

    let reply = app
        .send(Request::post(SCRIPTS).body(Body::from("{}")).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.code(), "unsupported_media_type");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn oversized_sources_and_bodies_are_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let big_source = "1;".repeat(128 * 1024 + 1);
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "big", "source": big_source }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "source_too_large");

    let at_limit = "1".repeat(256 * 1024);
    app.create("just-fits", &at_limit).await;

    let huge = "x".repeat(1024 * 1024 + 1);
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "huge", "source": huge }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "payload_too_large");
    assert_eq!(total(&app.get(SCRIPTS).await.body), 1);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bad_query_parameters_are_400_invalid_query(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let id = script_id(&app.create("q", "1").await);
    for uri in [
        format!("{SCRIPTS}?limit=0"),
        format!("{SCRIPTS}?limit=201"),
        format!("{SCRIPTS}?limit=many"),
        format!("{SCRIPTS}?cursor=bogus"),
        format!("{SCRIPTS}?app_id=Bad_Slug"),
        format!("{SCRIPTS}/{id}/executions?limit=0"),
        format!("{SCRIPTS}/{id}/executions?cursor=yesterday"),
    ] {
        let reply = app.get(&uri).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_query", "{uri}");
    }
    assert_eq!(
        app.get(&format!("{SCRIPTS}?limit=200")).await.status,
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_database_outage_is_503_unavailable(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    pool.close().await;
    let reply = app.get(SCRIPTS).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "unavailable");
    let reply = app
        .json(
            Method::POST,
            SCRIPTS,
            &json!({ "app_id": DEFAULT_APP_ID, "name": "x", "source": "1" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "unavailable");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_fault_is_500_with_a_generic_message(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    // A row the domain types refuse (an unknown limit), as only a fault could leave behind.
    let id = ScriptId::new();
    sqlx::query(
        "INSERT INTO scripts (id, app_id, name, source, limits) \
         VALUES ($1, '00000000-0000-0000-0000-000000000001', 'corrupt', '1', \
         '{\"secret_field\": 1}')",
    )
    .bind(id.as_uuid())
    .execute(&pool)
    .await
    .unwrap();
    let reply = app.get(&format!("{SCRIPTS}/{id}")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.code(), "internal");
    assert_eq!(reply.message(), "internal error");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn unknown_routes_and_methods_answer_in_the_envelope(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app.get("/api/admin/nothing-here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");

    let reply = app
        .send(Request::patch(SCRIPTS).body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "method_not_allowed");
}

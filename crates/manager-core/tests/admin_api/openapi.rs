//! The OpenAPI document.

use axum::http::StatusCode;
use sqlx::PgPool;

use crate::TestApp;

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_document_lists_every_route_with_its_methods(pool: PgPool) {
    let app = TestApp::new(pool);
    let reply = app.get("/api/admin/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = &reply.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["info"]["title"], "PiCloud admin API");

    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/api/admin/scripts", &["get", "post"][..]),
        ("/api/admin/scripts/{id}", &["get", "put", "delete"][..]),
        ("/api/admin/scripts/{id}/executions", &["get"][..]),
        ("/api/admin/executions/{id}", &["get"][..]),
        ("/api/admin/openapi.json", &["get"][..]),
    ];
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys());
    for (path, methods) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", paths.keys()))
            .as_object()
            .unwrap();
        let mut listed: Vec<&str> = item
            .keys()
            .map(String::as_str)
            .filter(|k| ["get", "post", "put", "delete", "patch"].contains(k))
            .collect();
        listed.sort_unstable();
        let mut methods = methods.to_vec();
        methods.sort_unstable();
        assert_eq!(listed, methods, "{path}");
    }

    // The request and response bodies are described, so clients can be generated.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "CreateScriptRequest",
        "UpdateScriptRequest",
        "ScriptView",
        "ScriptPage",
        "ExecutionPage",
        "ExecutionRecord",
        "ErrorEnvelope",
        "ValidationErrorEnvelope",
        "ScriptLimits",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    let create = &doc["paths"]["/api/admin/scripts"]["post"]["responses"];
    for status in ["201", "404", "409", "413", "415", "422", "503"] {
        assert!(
            create.get(status).is_some(),
            "create lacks a {status} response"
        );
    }
}

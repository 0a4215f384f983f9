//! The OpenAPI document.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::TestApp;

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_document_lists_every_route_with_its_methods(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app.anonymous().get("/api/admin/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = &reply.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["info"]["title"], "PiCloud admin API");

    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/api/admin/auth/login", &["post"][..]),
        ("/api/admin/auth/logout", &["post"][..]),
        ("/api/admin/auth/me", &["get"][..]),
        ("/api/admin/apps", &["get", "post"][..]),
        ("/api/admin/apps/{id}", &["get", "patch", "delete"][..]),
        ("/api/admin/apps/{id}/members", &["get"][..]),
        (
            "/api/admin/apps/{id}/members/{user_id}",
            &["put", "delete"][..],
        ),
        ("/api/admin/scripts", &["get", "post"][..]),
        ("/api/admin/scripts/{id}", &["get", "patch", "delete"][..]),
        ("/api/admin/scripts/{id}/executions", &["get"][..]),
        ("/api/admin/executions/{id}", &["get"][..]),
        ("/api/admin/users", &["get", "post"][..]),
        ("/api/admin/users/{id}", &["get", "delete"][..]),
        ("/api/admin/users/{id}/password", &["put"][..]),
        ("/api/admin/tokens", &["get", "post"][..]),
        ("/api/admin/tokens/{id}", &["delete"][..]),
        ("/api/admin/apps/{id}/kv", &["get"][..]),
        ("/api/admin/apps/{id}/kv/{collection}", &["get"][..]),
        (
            "/api/admin/apps/{id}/kv/{collection}/{key}",
            &["get", "put", "delete"][..],
        ),
        ("/api/admin/apps/{id}/files", &["get"][..]),
        ("/api/admin/apps/{id}/files-usage", &["get"][..]),
        (
            "/api/admin/apps/{id}/files/{collection}/{name}",
            &["get", "put", "delete"][..],
        ),
        ("/api/admin/files/sweep", &["get", "post"][..]),
        ("/api/admin/triggers", &["get", "post"][..]),
        ("/api/admin/triggers/{id}", &["get", "patch", "delete"][..]),
        ("/api/admin/apps/{id}/dead-letters", &["get"][..]),
        ("/api/admin/apps/{id}/dead-letters/count", &["get"][..]),
        ("/api/admin/dead-letters/{id}/replay", &["post"][..]),
        ("/api/admin/dead-letters/{id}/ignore", &["post"][..]),
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
        "Script",
        "ScriptSummary",
        "ExecutionRecord",
        "ErrorEnvelope",
        "ErrorCode",
        "Page_AppView",
        "Page_ScriptSummary",
        "Page_ExecutionRecord",
        "Page_UserView",
        "Page_TokenView",
        "Page_MemberView",
        "Page_KvEntry",
        "Page_TriggerView",
        "Page_DeadLetter",
        "ScriptLimits",
        "LoginRequest",
        "LoginResponse",
        "MeView",
        "CreateAppRequest",
        "UpdateAppRequest",
        "AppView",
        "SetMemberRequest",
        "CreateUserRequest",
        "SetPasswordRequest",
        "UserView",
        "CreateTokenRequest",
        "CreatedTokenView",
        "Scope",
        "AppRole",
        "Page_CollectionInfo",
        "CreateTriggerRequest",
        "UpdateTriggerRequest",
        "TriggerDetails",
        "TriggerDetailsRequest",
        "KvDetails",
        "KvDetailsRequest",
        "DeadLetterDetails",
        "DeadLetterDetailsRequest",
        "TriggerView",
        "RetryPolicy",
        "DeadLetter",
        "DeadLetterCount",
        "Page_FileInfo",
        "FileInfo",
        "FilesUsage",
        "SweepReport",
        "MissingFile",
    ] {
        assert!(
            schemas.contains_key(name),
            "schema {name} missing from {:?}",
            schemas.keys()
        );
    }
    // Every error code is listed, so a generated client knows them all.
    let codes: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "not_found",
        "invalid_name",
        "invalid_glob",
        "compile_error",
        "script_error",
        "unreadable_body",
        "too_many_attempts",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    let create = &doc["paths"]["/api/admin/scripts"]["post"]["responses"];
    for status in ["201", "404", "409", "413", "415", "422", "503"] {
        assert!(
            create.get(status).is_some(),
            "create lacks a {status} response"
        );
    }

    // A KV entry's version is its entity tag, and a put's preconditions are described.
    let entry = &doc["paths"]["/api/admin/apps/{id}/kv/{collection}/{key}"];
    assert!(
        entry["get"]["responses"]["200"]["headers"]["etag"].is_object(),
        "{}",
        entry["get"]
    );
    let put = &entry["put"];
    assert!(
        put["responses"]["204"]["headers"]["etag"].is_object(),
        "{put}"
    );
    for status in ["204", "412", "413", "422"] {
        assert!(
            put["responses"].get(status).is_some(),
            "kv put lacks a {status} response"
        );
    }
    let description = format!(
        "{} {}",
        put["summary"].as_str().unwrap_or_default(),
        put["description"].as_str().unwrap_or_default()
    );
    assert!(
        description.contains("If-Match") && description.contains("If-None-Match"),
        "{put}"
    );
    assert!(
        schemas["KvEntry"]["properties"]["version"].is_object(),
        "{}",
        schemas["KvEntry"]
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_document_declares_bearer_auth_and_which_operations_are_public(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.anonymous().get("/api/admin/openapi.json").await.body;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));

    let mut public = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["security"] == json!([{}]) {
                public.push(format!("{method} {path}"));
            } else {
                assert!(
                    operation.get("security").is_none(),
                    "{method} {path} overrides the document's security"
                );
                let unauthorized = &operation["responses"]["401"];
                assert!(
                    unauthorized["description"].as_str().is_some(),
                    "{method} {path} does not document 401"
                );
            }
        }
    }
    public.sort();
    assert_eq!(
        public,
        ["get /api/admin/openapi.json", "post /api/admin/auth/login"]
    );
    // The scope enum lists exactly the seven scopes.
    let scopes = &doc["components"]["schemas"]["Scope"]["enum"];
    assert_eq!(
        scopes,
        &json!([
            "script:read",
            "script:write",
            "script:execute",
            "data:read",
            "data:write",
            "triggers:manage",
            "app:admin"
        ]),
        "{}",
        doc["components"]["schemas"]["Scope"]
    );
}

/// Request headers are described in an operation's prose, never as header parameters: a
/// header value with a control character is refused by hyper itself with a bare 400 (no
/// JSON body) before any route sees it, so a documented header parameter invites clients
/// and fuzzers to send values the document then cannot describe the answer to.
#[test]
fn no_operation_documents_a_header_parameter() {
    let document = serde_json::to_value(picloud_manager_core::http::openapi()).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let headers: Vec<&serde_json::Value> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "header")
                .collect();
            assert!(headers.is_empty(), "{method} {path} documents {headers:?}");
        }
    }
}

//! Triggers through the API: registering, listing, changing and deleting them.

use axum::http::{Method, StatusCode, header};
use picloud_manager_core::access::MembershipRepository;
use picloud_shared::{AppId, AppRole, Scope};
use serde_json::{Value, json};
use sqlx::PgPool;

use picloud_manager_core::DEFAULT_APP_ID;

use crate::{TestApp, script_id, total};

/// Creates a trigger as the admin, asserting it worked.
async fn create_trigger(app: &TestApp, body: &Value) -> Value {
    let reply = app.json(Method::POST, "/api/admin/triggers", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_kv_trigger_is_created_with_defaults_and_its_location(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let script = app.create("on-user", "1").await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/triggers",
            &json!({ "app_id": DEFAULT_APP_ID, "script_name": "on-user", "details": { "kind": "kv", "collection": "users" } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let trigger = &reply.body;
    assert_eq!(trigger["kind"], "kv");
    assert_eq!(trigger["script_id"], script["id"]);
    assert_eq!(trigger["app_id"], script["app_id"]);
    assert_eq!(
        trigger["details"],
        json!({ "kind": "kv", "collection": "users", "ops": ["set", "delete"] })
    );
    assert_eq!(trigger["enabled"], true);
    assert_eq!(trigger["registered_by"], app.admin.id.to_string());
    assert_eq!(
        trigger["retry"],
        json!({ "max_attempts": 5, "base_delay_ms": 1000, "max_delay_ms": 300000 })
    );
    assert!(trigger.get("collection").is_none(), "{trigger}");

    let location = reply.headers[header::LOCATION].to_str().unwrap();
    assert_eq!(
        location,
        format!("/api/admin/triggers/{}", trigger["id"].as_str().unwrap())
    );
    let fetched = app.get(location).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(&fetched.body, trigger);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_target_script_is_named_by_id_or_name_and_must_be_in_the_app(pool: PgPool) {
    let app = TestApp::new(pool).await;
    app.add_app("shop").await;
    let shop_script = app.create_in("shop", "on-order", "1").await;
    let default_script = app.create("elsewhere", "1").await;

    let by_id = create_trigger(
        &app,
        &json!({
            "app_id": app.app_id("shop").await, "script_id": shop_script["id"],
            "details": { "kind": "kv", "collection": "orders:*", "ops": ["delete"] },
            "enabled": false, "retry": { "max_attempts": 2, "base_delay_ms": 100 },
        }),
    )
    .await;
    assert_eq!(by_id["script_id"], shop_script["id"]);
    assert_eq!(by_id["details"]["ops"], json!(["delete"]));
    assert_eq!(by_id["enabled"], false);
    assert_eq!(
        by_id["retry"],
        json!({ "max_attempts": 2, "base_delay_ms": 100, "max_delay_ms": 300000 })
    );

    // Another app's script, by id or by name, is answered like a missing one.
    let shop = app.app_id("shop").await;
    for (field, script) in [
        ("script_id", default_script["id"].clone()),
        ("script_name", json!("elsewhere")),
        ("script_name", json!("nobody")),
    ] {
        let mut body = json!({ "app_id": shop, "details": { "kind": "kv", "collection": "*" } });
        body[field] = script.clone();
        let reply = app.json(Method::POST, "/api/admin/triggers", &body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
        assert_eq!(reply.code(), "not_found");
        let raw = script.as_str().unwrap();
        assert_eq!(
            reply.message(),
            format!("script '{raw}' not found in app 'shop'")
        );
    }
    // A script is named one way: by id or by name, never both.
    let both = app
        .json(
            Method::POST,
            "/api/admin/triggers",
            &json!({
                "app_id": shop, "script_id": shop_script["id"], "script_name": "on-order",
                "details": { "kind": "kv", "collection": "*" },
            }),
        )
        .await;
    assert_eq!(
        both.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        both.body
    );
    assert_eq!(both.code(), "invalid_body");

    let nowhere = AppId::new();
    let reply = app
        .json(
            Method::POST,
            "/api/admin/triggers",
            &json!({ "app_id": nowhere, "script_name": "on-order", "details": { "kind": "kv", "collection": "*" } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), format!("app {nowhere} not found"));
    let all = app.get("/api/admin/triggers").await;
    assert_eq!(total(&all.body), 1, "{}", all.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bad_globs_ops_and_retry_policies_are_refused_naming_the_problem(pool: PgPool) {
    let app = TestApp::new(pool).await;
    app.create("s", "1").await;
    let cases = [
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "or*ders" } }),
            "invalid_glob",
            "collection glob 'or*ders' has a '*' before its end",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "" } }),
            "invalid_glob",
            "collection glob must not be empty",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "has space" } }),
            "invalid_glob",
            "may contain only ASCII letters",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "*", "ops": [] } }),
            "invalid_ops",
            "ops must name at least one of set, delete",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "*", "ops": ["upsert"] } }),
            "invalid_body",
            "unknown variant `upsert`",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "*" },
                    "retry": { "max_attempts": 0 } }),
            "invalid_retry",
            "retry.max_attempts is 0, expected 1 to 100",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "*" },
                    "retry": { "base_delay_ms": 5000, "max_delay_ms": 10 } }),
            "invalid_retry",
            "retry.max_delay_ms (10) must not be below retry.base_delay_ms (5000)",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "*" }, "colour": "red" }),
            "invalid_body",
            "unknown field `colour`",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "*", "colour": "red" } }),
            "invalid_body",
            "unknown field `colour`",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "details": { "kind": "kv", "collection": "*" } }),
            "invalid_body",
            "name the script by exactly one of script_id or script_name",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "cron", "collection": "*" } }),
            "invalid_body",
            "unknown variant `cron`",
        ),
        (
            json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "collection": "*" } }),
            "invalid_body",
            "missing field `kind`",
        ),
    ];
    for (body, code, message) in cases {
        let reply = app.json(Method::POST, "/api/admin/triggers", &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.code(), code, "{body}");
        assert!(
            reply.message().contains(message),
            "{body}: {}",
            reply.message()
        );
    }
    let all = app.get("/api/admin/triggers").await;
    assert_eq!(total(&all.body), 0, "{}", all.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_files_trigger_is_created_read_and_patched(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let script = app.create("on-upload", "1").await;
    let trigger = create_trigger(
        &app,
        &json!({
            "app_id": DEFAULT_APP_ID, "script_name": "on-upload",
            "details": { "kind": "files", "collection": "avatars*", "ops": ["delete", "create"] },
        }),
    )
    .await;
    assert_eq!(trigger["kind"], "files");
    assert_eq!(trigger["script_id"], script["id"]);
    // The ops come back in canonical order, whatever order they were sent in.
    assert_eq!(
        trigger["details"],
        json!({ "kind": "files", "collection": "avatars*", "ops": ["create", "delete"] })
    );
    let uri = format!("/api/admin/triggers/{}", trigger["id"].as_str().unwrap());
    let fetched = app.get(&uri).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, trigger);

    // Without ops it watches all three.
    let every_op = create_trigger(
        &app,
        &json!({
            "app_id": DEFAULT_APP_ID, "script_name": "on-upload",
            "details": { "kind": "files", "collection": "docs" },
        }),
    )
    .await;
    assert_eq!(
        every_op["details"]["ops"],
        json!(["create", "update", "delete"])
    );
    let kv = create_trigger(
        &app,
        &json!({ "app_id": DEFAULT_APP_ID, "script_name": "on-upload", "details": { "kind": "kv", "collection": "*" } }),
    )
    .await;
    let files_only = app.get("/api/admin/triggers?kind=files").await;
    assert_eq!(files_only.status, StatusCode::OK);
    assert_eq!(
        ids(&files_only.body),
        vec![
            trigger["id"].as_str().unwrap(),
            every_op["id"].as_str().unwrap()
        ]
    );

    let changed = app
        .json(
            Method::PATCH,
            &uri,
            &json!({ "details": { "kind": "files", "collection": "avatars", "ops": ["update"] } }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["id"], trigger["id"]);
    assert_eq!(
        changed.body["details"],
        json!({ "kind": "files", "collection": "avatars", "ops": ["update"] })
    );
    assert_eq!(app.get(&uri).await.body, changed.body);

    // Refused changes name the problem and change nothing.
    let kv_uri = format!("/api/admin/triggers/{}", kv["id"].as_str().unwrap());
    for (uri, body, code, message) in [
        (
            &uri,
            json!({ "details": { "kind": "files", "collection": "*", "ops": [] } }),
            "invalid_ops",
            "ops must name at least one of create, update, delete",
        ),
        (
            &uri,
            json!({ "details": { "kind": "files", "collection": "ava*tars" } }),
            "invalid_glob",
            "collection glob 'ava*tars' has a '*' before its end",
        ),
        (
            &uri,
            json!({ "details": { "kind": "kv", "collection": "*" } }),
            "invalid_body",
            "is a files trigger, its kind cannot change",
        ),
        (
            &kv_uri,
            json!({ "details": { "kind": "files", "collection": "*" } }),
            "invalid_body",
            "is a kv trigger, its kind cannot change",
        ),
    ] {
        let reply = app.json(Method::PATCH, uri, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.code(), code, "{body}");
        assert!(
            reply.message().contains(message),
            "{body}: {}",
            reply.message()
        );
    }
    assert_eq!(app.get(&uri).await.body, changed.body);
    assert_eq!(app.get(&kv_uri).await.body, kv);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bad_files_details_are_refused_naming_the_problem(pool: PgPool) {
    let app = TestApp::new(pool).await;
    app.create("s", "1").await;
    let details = |details: Value| json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": details });
    let cases = [
        (
            details(json!({ "kind": "files", "collection": "avatars*", "ops": [] })),
            "invalid_ops",
            "ops must name at least one of create, update, delete",
        ),
        (
            details(json!({ "kind": "files", "collection": "ava*tars", "ops": ["create"] })),
            "invalid_glob",
            "collection glob 'ava*tars' has a '*' before its end",
        ),
        (
            details(json!({ "kind": "files", "collection": "" })),
            "invalid_glob",
            "collection glob must not be empty",
        ),
        (
            details(json!({ "kind": "files", "collection": "*", "ops": ["set"] })),
            "invalid_body",
            "unknown variant `set`",
        ),
        (
            details(json!({ "kind": "files", "collection": "*", "name": "a.png" })),
            "invalid_body",
            "unknown field `name`",
        ),
        (
            details(json!({ "kind": "files" })),
            "invalid_body",
            "missing field `collection`",
        ),
    ];
    for (body, code, message) in cases {
        let reply = app.json(Method::POST, "/api/admin/triggers", &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.code(), code, "{body}");
        assert!(
            reply.message().contains(message),
            "{body}: {}",
            reply.message()
        );
    }
    let all = app.get("/api/admin/triggers").await;
    assert_eq!(total(&all.body), 0, "{}", all.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_dead_letter_trigger_handles_kv_dead_letters_by_default(pool: PgPool) {
    let app = TestApp::new(pool).await;
    app.create("on-failure", "1").await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/triggers",
            &json!({ "app_id": DEFAULT_APP_ID, "script_name": "on-failure", "details": { "kind": "dead_letter" } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["kind"], "dead_letter");
    assert_eq!(
        reply.body["details"],
        json!({ "kind": "dead_letter", "source_kinds": ["kv"] })
    );
    // Files triggers' dead letters fan out too; the kinds come back in canonical order.
    let both = create_trigger(
        &app,
        &json!({
            "app_id": DEFAULT_APP_ID, "script_name": "on-failure",
            "details": { "kind": "dead_letter", "source_kinds": ["files", "kv"] },
        }),
    )
    .await;
    assert_eq!(
        both["details"],
        json!({ "kind": "dead_letter", "source_kinds": ["kv", "files"] })
    );

    for (source_kinds, message) in [
        (
            json!([]),
            "source_kinds must name at least one trigger kind",
        ),
        (
            json!(["dead_letter"]),
            "dead letters of dead_letter triggers are never handed to a dead-letter trigger",
        ),
    ] {
        let reply = app
            .json(
                Method::POST,
                "/api/admin/triggers",
                &json!({
                    "app_id": DEFAULT_APP_ID,
                    "script_name": "on-failure",
                    "details": { "kind": "dead_letter", "source_kinds": source_kinds },
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.code(), "invalid_source_kinds");
        assert_eq!(reply.message(), message);
    }
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn lists_filter_by_app_and_kind_and_show_only_apps_the_caller_manages(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let blog = app.add_app("blog").await;
    app.create_in("shop", "s", "1").await;
    app.create_in("blog", "b", "1").await;
    let shop_kv = create_trigger(
        &app,
        &json!({ "app_id": app.app_id("shop").await, "script_name": "s", "details": { "kind": "kv", "collection": "*" } }),
    )
    .await;
    let blog_kv = create_trigger(
        &app,
        &json!({ "app_id": app.app_id("blog").await, "script_name": "b", "details": { "kind": "kv", "collection": "*" } }),
    )
    .await;
    let shop_dl = create_trigger(
        &app,
        &json!({ "app_id": app.app_id("shop").await, "script_name": "s", "details": { "kind": "dead_letter" } }),
    )
    .await;

    let all = app.get("/api/admin/triggers").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(total(&all.body), 3);
    assert_eq!(
        ids(&all.body),
        vec![
            shop_kv["id"].as_str().unwrap(),
            blog_kv["id"].as_str().unwrap(),
            shop_dl["id"].as_str().unwrap()
        ]
    );
    let shop_only = app.get(&format!("/api/admin/triggers?app_id={shop}")).await;
    assert_eq!(total(&shop_only.body), 2);
    let shop_kv_only = app
        .get(&format!("/api/admin/triggers?app_id={shop}&kind=kv"))
        .await;
    assert_eq!(
        ids(&shop_kv_only.body),
        vec![shop_kv["id"].as_str().unwrap()]
    );
    let first = app.get("/api/admin/triggers?limit=1").await;
    assert_eq!(ids(&first.body), vec![shop_kv["id"].as_str().unwrap()]);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let paged = app
        .get(&format!("/api/admin/triggers?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(ids(&paged.body), vec![blog_kv["id"].as_str().unwrap()]);
    assert!(paged.body["next_cursor"].is_string(), "{}", paged.body);

    let bad = app.get("/api/admin/triggers?kind=cron").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "invalid_query");

    // A developer of the shop sees the shop's triggers only; a viewer may not manage any.
    let dev = app.user_with_role("dev", shop, AppRole::Developer).await;
    app.memberships
        .set_role(blog, dev.id, AppRole::Viewer)
        .await
        .unwrap();
    let dev_session = app.session(dev.id).await;
    let seen = app.caller(&dev_session).get("/api/admin/triggers").await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(total(&seen.body), 2, "{}", seen.body);
    let refused = app
        .caller(&dev_session)
        .get(&format!("/api/admin/triggers?app_id={blog}"))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let no_scope = app.token(dev.id, &[Scope::ScriptRead], None).await;
    let refused = app.caller(&no_scope).get("/api/admin/triggers").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.message().contains("triggers:manage"),
        "{}",
        refused.message()
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn triggers_are_changed_with_patch_and_deleted(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let script = app.create("s", "1").await;
    let trigger = create_trigger(
        &app,
        &json!({
            "app_id": DEFAULT_APP_ID,
            "script_id": script_id(&script).to_string(),
            "details": { "kind": "kv", "collection": "*" },
        }),
    )
    .await;
    let uri = format!("/api/admin/triggers/{}", trigger["id"].as_str().unwrap());

    let disabled = app
        .json(Method::PATCH, &uri, &json!({ "enabled": false }))
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
    assert_eq!(disabled.body["enabled"], false);
    assert_eq!(app.get(&uri).await.body["enabled"], false);
    let enabled = app
        .json(Method::PATCH, &uri, &json!({ "enabled": true }))
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    assert_eq!(enabled.body["enabled"], true);

    // Retry policy and details change in place: the id, and what points at it, stay.
    let changed = app
        .json(
            Method::PATCH,
            &uri,
            &json!({
                "retry": { "max_attempts": 9 },
                "details": { "kind": "kv", "collection": "orders:*", "ops": ["delete"] },
            }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["id"], trigger["id"]);
    assert_eq!(changed.body["enabled"], true);
    assert_eq!(
        changed.body["retry"],
        json!({ "max_attempts": 9, "base_delay_ms": 1000, "max_delay_ms": 300000 })
    );
    assert_eq!(
        changed.body["details"],
        json!({ "kind": "kv", "collection": "orders:*", "ops": ["delete"] })
    );
    // A retry change keeps the trigger's own settings it does not name.
    let changed = app
        .json(
            Method::PATCH,
            &uri,
            &json!({ "retry": { "base_delay_ms": 200 } }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(
        changed.body["retry"],
        json!({ "max_attempts": 9, "base_delay_ms": 200, "max_delay_ms": 300000 })
    );
    assert_eq!(app.get(&uri).await.body, changed.body);

    // Refused changes name the problem and change nothing.
    for (body, code, message) in [
        (
            json!({}),
            "invalid_body",
            "name at least one of enabled, retry, details",
        ),
        (
            json!({ "details": { "kind": "dead_letter" } }),
            "invalid_body",
            "is a kv trigger, its kind cannot change",
        ),
        (
            json!({ "details": { "kind": "kv", "collection": "a*b" } }),
            "invalid_glob",
            "has a '*' before its end",
        ),
        (
            json!({ "retry": { "max_attempts": 0 } }),
            "invalid_retry",
            "retry.max_attempts is 0",
        ),
    ] {
        let reply = app.json(Method::PATCH, &uri, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.code(), code, "{body}");
        assert!(
            reply.message().contains(message),
            "{body}: {}",
            reply.message()
        );
    }
    assert_eq!(app.get(&uri).await.body, changed.body);

    let deleted = app.delete(&uri).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    for reply in [
        app.get(&uri).await,
        app.delete(&uri).await,
        app.json(Method::PATCH, &uri, &json!({ "enabled": true }))
            .await,
    ] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
        assert_eq!(
            reply.message(),
            format!("trigger {} not found", trigger["id"].as_str().unwrap())
        );
    }
    let bad = app.get("/api/admin/triggers/not-a-uuid").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "invalid_id");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn deleting_the_script_deletes_its_triggers(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let script = app.create("s", "1").await;
    let trigger = create_trigger(
        &app,
        &json!({ "app_id": DEFAULT_APP_ID, "script_name": "s", "details": { "kind": "kv", "collection": "*" } }),
    )
    .await;
    let reply = app
        .delete(&format!("/api/admin/scripts/{}", script_id(&script)))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let gone = app
        .get(&format!(
            "/api/admin/triggers/{}",
            trigger["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_openapi_document_describes_files_details(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app.anonymous().get("/api/admin/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let schemas = &reply.body["components"]["schemas"];
    for name in ["FilesDetails", "FilesDetailsRequest", "FilesOps"] {
        assert!(schemas.get(name).is_some(), "schema {name} missing");
    }
    for tagged in ["TriggerDetails", "TriggerDetailsRequest"] {
        let text = schemas[tagged].to_string();
        assert!(text.contains("\"files\""), "{tagged}: {text}");
    }
}

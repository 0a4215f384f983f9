//! What each role may do in its app, and how a token's scopes cut that down.

use axum::http::{Method, StatusCode};
use picloud_shared::{AppId, AppRole, Scope, ScriptId};
use serde_json::json;
use sqlx::PgPool;

use crate::{Caller, TestApp, script_id, total};

/// App `shop` with one script.
async fn shop(pool: PgPool) -> (TestApp, AppId, ScriptId) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let script = script_id(&app.create_in("shop", "checkout", "1").await);
    (app, shop, script)
}

async fn status_of(
    caller: Caller<'_>,
    method: Method,
    uri: &str,
    body: Option<serde_json::Value>,
) -> StatusCode {
    let reply = match body {
        Some(body) => caller.json(method, uri, &body).await,
        None if method == Method::DELETE => caller.delete(uri).await,
        None => caller.get(uri).await,
    };
    reply.status
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_viewer_reads_but_does_not_write(pool: PgPool) {
    let (app, shop, script) = shop(pool).await;
    let viewer = app.user_with_role("vera", shop, AppRole::Viewer).await;
    let session = app.session(viewer.id).await;
    let caller = app.caller(&session);
    let script_uri = format!("/api/admin/scripts/{script}");
    let app_uri = format!("/api/admin/apps/{shop}");

    assert_eq!(caller.get(&script_uri).await.status, StatusCode::OK);
    assert_eq!(
        caller.get(&format!("{script_uri}/executions")).await.status,
        StatusCode::OK
    );
    assert_eq!(caller.get(&app_uri).await.body["role"], "viewer");
    assert_eq!(
        caller.get(&format!("{app_uri}/members")).await.status,
        StatusCode::OK
    );
    let page = caller.get("/api/admin/scripts").await;
    assert_eq!(total(&page.body), 1, "{}", page.body);

    let refused = [
        status_of(
            caller,
            Method::PATCH,
            &script_uri,
            Some(json!({ "source": "2" })),
        )
        .await,
        status_of(caller, Method::DELETE, &script_uri, None).await,
        status_of(
            caller,
            Method::POST,
            "/api/admin/scripts",
            Some(json!({ "name": "new", "source": "1", "app_id": app.app_id("shop").await })),
        )
        .await,
        status_of(
            caller,
            Method::PATCH,
            &app_uri,
            Some(json!({ "name": "Mine" })),
        )
        .await,
        status_of(
            caller,
            Method::PUT,
            &format!("{app_uri}/members/{}", viewer.id),
            Some(json!({ "role": "owner" })),
        )
        .await,
    ];
    assert_eq!(refused, [StatusCode::FORBIDDEN; 5]);
    assert_eq!(app.get(&script_uri).await.body["version"], 1);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_developer_writes_scripts_but_does_not_administer_the_app(pool: PgPool) {
    let (app, shop, script) = shop(pool).await;
    let developer = app.user_with_role("dev", shop, AppRole::Developer).await;
    let session = app.session(developer.id).await;
    let caller = app.caller(&session);
    let script_uri = format!("/api/admin/scripts/{script}");
    let app_uri = format!("/api/admin/apps/{shop}");

    let created = caller
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "name": "refund", "source": "1", "app_id": app.app_id("shop").await, "require_token": true }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["require_token"], true);
    let updated = caller
        .json(Method::PATCH, &script_uri, &json!({ "source": "2" }))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["version"], 2);
    assert_eq!(
        caller
            .delete(&format!("/api/admin/scripts/{}", script_id(&created.body)))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let refused = [
        status_of(
            caller,
            Method::PATCH,
            &app_uri,
            Some(json!({ "name": "Mine" })),
        )
        .await,
        status_of(
            caller,
            Method::DELETE,
            &format!("{app_uri}?cascade=true"),
            None,
        )
        .await,
        status_of(
            caller,
            Method::PUT,
            &format!("{app_uri}/members/{}", developer.id),
            Some(json!({ "role": "owner" })),
        )
        .await,
        status_of(caller, Method::GET, "/api/admin/users", None).await,
        status_of(
            caller,
            Method::POST,
            "/api/admin/apps",
            Some(json!({ "slug": "mine", "name": "Mine" })),
        )
        .await,
    ];
    assert_eq!(refused, [StatusCode::FORBIDDEN; 5]);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_owner_manages_members_renames_and_deletes_the_app(pool: PgPool) {
    let (app, shop, _) = shop(pool).await;
    let owner = app.user_with_role("olive", shop, AppRole::Owner).await;
    let newcomer = app.user("nico", false).await;
    let session = app.session(owner.id).await;
    let caller = app.caller(&session);
    let app_uri = format!("/api/admin/apps/{shop}");

    let added = caller
        .json(
            Method::PUT,
            &format!("{app_uri}/members/{}", newcomer.id),
            &json!({ "role": "developer" }),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    let renamed = caller
        .json(Method::PATCH, &app_uri, &json!({ "name": "The Shop" }))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "The Shop");
    assert_eq!(
        caller
            .delete(&format!("{app_uri}/members/{}", newcomer.id))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Still not an instance admin.
    assert_eq!(
        caller.get("/api/admin/users").await.status,
        StatusCode::FORBIDDEN
    );
    let deleted = caller.delete(&format!("{app_uri}?cascade=true")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(app.get(&app_uri).await.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_instance_admin_does_everything_without_being_a_member(pool: PgPool) {
    let (app, shop, script) = shop(pool).await;
    let members = app.get(&format!("/api/admin/apps/{shop}/members")).await;
    assert_eq!(members.body["items"], json!([]));
    let script_uri = format!("/api/admin/scripts/{script}");
    assert_eq!(
        app.json(Method::PATCH, &script_uri, &json!({ "source": "3" }))
            .await
            .status,
        StatusCode::OK
    );
    let renamed = app
        .json(
            Method::PATCH,
            &format!("/api/admin/apps/{shop}"),
            &json!({ "slug": "store" }),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["role"], "owner");
    assert_eq!(app.delete(&script_uri).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.delete(&format!("/api/admin/apps/{shop}")).await.status,
        StatusCode::NO_CONTENT
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_tokens_scopes_cut_the_owners_rights_down(pool: PgPool) {
    let (app, shop, script) = shop(pool).await;
    let owner = app.user_with_role("olive", shop, AppRole::Owner).await;
    let script_uri = format!("/api/admin/scripts/{script}");
    let app_uri = format!("/api/admin/apps/{shop}");

    let reader = app.token(owner.id, &[Scope::ScriptRead], None).await;
    let caller = app.caller(&reader);
    assert_eq!(caller.get(&script_uri).await.status, StatusCode::OK);
    assert_eq!(caller.get(&app_uri).await.status, StatusCode::OK);
    assert_eq!(
        status_of(
            caller,
            Method::PATCH,
            &script_uri,
            Some(json!({ "source": "2" }))
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_of(
            caller,
            Method::PATCH,
            &app_uri,
            Some(json!({ "name": "x" }))
        )
        .await,
        StatusCode::FORBIDDEN
    );

    let writer = app.token(owner.id, &[Scope::ScriptWrite], None).await;
    let caller = app.caller(&writer);
    // Writing does not imply reading: each capability checks its own scope.
    assert_eq!(caller.get(&script_uri).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        status_of(
            caller,
            Method::PATCH,
            &script_uri,
            Some(json!({ "source": "2" }))
        )
        .await,
        StatusCode::OK
    );

    let admin_scope = app.token(owner.id, &[Scope::AppAdmin], None).await;
    let caller = app.caller(&admin_scope);
    assert_eq!(
        status_of(
            caller,
            Method::PATCH,
            &app_uri,
            Some(json!({ "name": "Renamed" }))
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(
            caller,
            Method::PATCH,
            &script_uri,
            Some(json!({ "source": "3" }))
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // app:admin on an app is not instance administration.
    assert_eq!(
        status_of(caller, Method::GET, "/api/admin/users", None).await,
        StatusCode::FORBIDDEN
    );
}

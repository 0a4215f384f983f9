//! App members: add, change role, remove.

use axum::http::{Method, StatusCode};
use picloud_shared::{AppRole, UserId};
use serde_json::json;
use sqlx::PgPool;

use crate::TestApp;

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_owner_adds_changes_and_removes_members(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let owner = app.user_with_role("olive", shop, AppRole::Owner).await;
    let nico = app.user("nico", false).await;
    let session = app.session(owner.id).await;
    let caller = app.caller(&session);
    let members = format!("/api/admin/apps/{shop}/members");
    let nico_uri = format!("{members}/{}", nico.id);

    // Nico sees nothing of the shop yet.
    let nico_session = app.session(nico.id).await;
    let before = app
        .caller(&nico_session)
        .get(&format!("/api/admin/apps/{shop}"))
        .await;
    assert_eq!(before.status, StatusCode::NOT_FOUND);

    let added = caller
        .json(Method::PUT, &nico_uri, &json!({ "role": "viewer" }))
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(
        added.body,
        json!({ "user_id": nico.id, "username": "nico", "role": "viewer" })
    );
    let after = app
        .caller(&nico_session)
        .get(&format!("/api/admin/apps/{shop}"))
        .await;
    assert_eq!(
        after.status,
        StatusCode::OK,
        "roles apply from the next request"
    );
    assert_eq!(after.body["role"], "viewer");

    let changed = caller
        .json(Method::PUT, &nico_uri, &json!({ "role": "developer" }))
        .await;
    assert_eq!(changed.body["role"], "developer");
    let list = caller.get(&members).await;
    assert_eq!(
        list.body["items"],
        json!([
            { "user_id": nico.id, "username": "nico", "role": "developer" },
            { "user_id": owner.id, "username": "olive", "role": "owner" },
        ])
    );

    assert_eq!(
        caller.delete(&nico_uri).await.status,
        StatusCode::NO_CONTENT
    );
    let gone = app
        .caller(&nico_session)
        .get(&format!("/api/admin/apps/{shop}"))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = caller.delete(&nico_uri).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        again.message(),
        format!("user {} is not a member of app 'shop'", nico.id)
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_app_keeps_at_least_one_owner(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let owner = app.user_with_role("olive", shop, AppRole::Owner).await;
    let uri = format!("/api/admin/apps/{shop}/members/{}", owner.id);
    let demote = app
        .json(Method::PUT, &uri, &json!({ "role": "developer" }))
        .await;
    assert_eq!(demote.status, StatusCode::CONFLICT);
    assert_eq!(demote.code(), "last_owner");
    let remove = app.delete(&uri).await;
    assert_eq!(remove.status, StatusCode::CONFLICT);
    assert_eq!(remove.code(), "last_owner");

    // With a second owner, the first may step down.
    let other = app.user("otto", false).await;
    let promoted = app
        .json(
            Method::PUT,
            &format!("/api/admin/apps/{shop}/members/{}", other.id),
            &json!({ "role": "owner" }),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK);
    let demote = app
        .json(Method::PUT, &uri, &json!({ "role": "viewer" }))
        .await;
    assert_eq!(demote.status, StatusCode::OK, "{}", demote.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn member_requests_that_do_not_fit_are_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let nobody = UserId::new();
    let reply = app
        .json(
            Method::PUT,
            &format!("/api/admin/apps/{shop}/members/{nobody}"),
            &json!({ "role": "viewer" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), format!("user {nobody} not found"));

    let user = app.user("nico", false).await;
    let uri = format!("/api/admin/apps/{shop}/members/{}", user.id);
    let reply = app
        .json(Method::PUT, &uri, &json!({ "role": "superuser" }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");
    let reply = app
        .json(
            Method::PUT,
            &format!("/api/admin/apps/{shop}/members/not-a-uuid"),
            &json!({ "role": "viewer" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_id");
    let members = app.get(&format!("/api/admin/apps/{shop}/members")).await;
    assert_eq!(members.body["items"], json!([]));
}

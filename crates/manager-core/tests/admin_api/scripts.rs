//! The script lifecycle through the API.

use axum::http::{Method, StatusCode, header};
use picloud_manager_core::DEFAULT_APP_ID;
use picloud_manager_core::access::MembershipRepository;
use picloud_shared::AppRole;
use serde_json::json;
use sqlx::PgPool;

use crate::{TestApp, script_id, total};

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn create_answers_201_with_the_script_and_its_location(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "app_id": DEFAULT_APP_ID, "name": "hello", "source": "\"hi\"" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let script = &reply.body;
    assert_eq!(script["name"], "hello");
    assert_eq!(script["source"], "\"hi\"");
    assert_eq!(script["app_id"], DEFAULT_APP_ID.to_string());
    assert_eq!(script["version"], 1);
    assert_eq!(script["limits"], json!({}));
    assert_eq!(script["require_token"], false);
    assert_eq!(script["created_at"], script["updated_at"]);

    let location = reply.headers[header::LOCATION].to_str().unwrap();
    assert_eq!(
        location,
        format!("/api/admin/scripts/{}", script_id(script))
    );
    let fetched = app.get(location).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(&fetched.body, script);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn create_puts_the_script_in_the_named_app_with_its_limits(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({
                "name": "checkout",
                "source": "1",
                "app_id": shop,
                "limits": { "max_operations": 5000, "timeout_ms": 100 }
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["app_id"], shop.to_string());
    assert_eq!(
        reply.body["limits"],
        json!({ "max_operations": 5000, "timeout_ms": 100 })
    );
    // The same name is still free in the default app.
    app.create("checkout", "2").await;
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn list_pages_through_scripts_in_name_order_without_sources(pool: PgPool) {
    let app = TestApp::new(pool).await;
    for name in ["charlie", "alpha", "bravo"] {
        app.create(name, "1").await;
    }
    let first = app.get("/api/admin/scripts?limit=2").await;
    assert_eq!(first.status, StatusCode::OK);
    let items = first.body["items"].as_array().unwrap();
    let names: Vec<_> = items.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "bravo"]);
    assert!(items[0].get("source").is_none(), "{}", items[0]);
    assert_eq!(items[0]["version"], 1);

    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app
        .get(&format!("/api/admin/scripts?limit=2&cursor={cursor}"))
        .await;
    assert!(second.body.get("next_cursor").is_none(), "{}", second.body);
    let names: Vec<_> = second.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["charlie"]);

    // The default page (50) holds all three.
    let default_page = app.get("/api/admin/scripts").await;
    assert_eq!(total(&default_page.body), 3);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn list_can_be_limited_to_one_app(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop_id = app.add_app("shop").await;
    app.create("in-default", "1").await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "name": "in-shop", "source": "1", "app_id": shop_id }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);

    let shop = app
        .get(&format!("/api/admin/scripts?app_id={shop_id}"))
        .await;
    assert_eq!(shop.status, StatusCode::OK);
    assert_eq!(total(&shop.body), 1);
    assert_eq!(shop.body["items"][0]["name"], "in-shop");
    let default = app
        .get(&format!("/api/admin/scripts?app_id={DEFAULT_APP_ID}"))
        .await;
    assert_eq!(total(&default.body), 1);
    assert_eq!(default.body["items"][0]["name"], "in-default");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn update_changes_the_script_bumps_the_version_and_tells_observers(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let created = app.create("counter", "1").await;
    let id = script_id(&created);
    let uri = format!("/api/admin/scripts/{id}");

    let reply = app
        .json(Method::PATCH, &uri, &json!({ "source": "1 + 1" }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["source"], "1 + 1");
    assert_eq!(reply.body["name"], "counter");
    assert_eq!(app.changed(), [id]);

    let reply = app
        .json(
            Method::PATCH,
            &uri,
            &json!({ "name": "renamed", "limits": { "max_call_depth": 4 } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["version"], 3);
    assert_eq!(reply.body["name"], "renamed");
    assert_eq!(reply.body["limits"], json!({ "max_call_depth": 4 }));
    assert_eq!(reply.body["source"], "1 + 1");
    assert_eq!(app.changed(), [id, id]);

    let fetched = app.get(&uri).await;
    assert_eq!(fetched.body, reply.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn delete_answers_204_tells_observers_and_the_script_is_gone(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let id = script_id(&app.create("doomed", "1").await);
    let uri = format!("/api/admin/scripts/{id}");

    let reply = app.delete(&uri).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.body, serde_json::Value::Null);
    assert_eq!(app.changed(), [id]);

    let gone = app.get(&uri).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "not_found");
    let again = app.delete(&uri).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.code(), "not_found");
    // A failed delete tells nobody anything.
    assert_eq!(app.changed(), [id]);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_script_can_be_made_to_require_a_token_and_public_again(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "app_id": DEFAULT_APP_ID, "name": "private", "source": "1", "require_token": true }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["require_token"], true);
    let uri = format!("/api/admin/scripts/{}", script_id(&reply.body));

    let listed = app.get("/api/admin/scripts").await;
    assert_eq!(listed.body["items"][0]["require_token"], true);

    let reply = app
        .json(Method::PATCH, &uri, &json!({ "require_token": false }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["require_token"], false);
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["source"], "1");
    assert_eq!(app.get(&uri).await.body["require_token"], false);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_member_of_several_apps_pages_through_all_their_scripts_in_name_order(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let alpha = app.add_app("alpha").await;
    let beta = app.add_app("beta").await;
    app.add_app("gamma").await;
    for (slug, name) in [
        ("alpha", "bravo"),
        ("alpha", "delta"),
        ("beta", "alpha"),
        ("beta", "charlie"),
        ("gamma", "able"),
        ("default", "aaa"),
    ] {
        app.create_in(slug, name, "1").await;
    }
    let user = app.user_with_role("ada", alpha, AppRole::Viewer).await;
    app.memberships
        .set_role(beta, user.id, AppRole::Developer)
        .await
        .unwrap();
    let session = app.session(user.id).await;
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let first = app.caller(&session).get("/api/admin/scripts?limit=3").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(names(&first.body), ["alpha", "bravo", "charlie"]);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app
        .caller(&session)
        .get(&format!("/api/admin/scripts?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(names(&second.body), ["delta"]);
    assert_eq!(total(&second.body), 1, "the last page says so");
    assert_eq!(
        total(&app.caller(&session).get("/api/admin/scripts").await.body),
        4
    );
}

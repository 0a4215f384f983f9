//! The script lifecycle through the API.

use axum::http::{Method, StatusCode, header};
use picloud_manager_core::DEFAULT_APP_ID;
use picloud_manager_core::access::MembershipRepository;
use picloud_shared::AppRole;
use serde_json::json;
use sqlx::PgPool;

use crate::{TestApp, script_id};

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn create_answers_201_with_the_script_and_its_location(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "name": "hello", "source": "\"hi\"" }),
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
                "app": "shop",
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
    assert_eq!(first.body["total"], 3);
    assert_eq!(first.body["limit"], 2);
    assert_eq!(first.body["offset"], 0);
    let items = first.body["items"].as_array().unwrap();
    let names: Vec<_> = items.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "bravo"]);
    assert!(items[0].get("source").is_none(), "{}", items[0]);
    assert_eq!(items[0]["version"], 1);

    let second = app.get("/api/admin/scripts?limit=2&offset=2").await;
    assert_eq!(second.body["offset"], 2);
    let names: Vec<_> = second.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["charlie"]);

    let default_page = app.get("/api/admin/scripts").await;
    assert_eq!(default_page.body["limit"], 50);
    assert_eq!(default_page.body["items"].as_array().unwrap().len(), 3);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn list_can_be_limited_to_one_app(pool: PgPool) {
    let app = TestApp::new(pool).await;
    app.add_app("shop").await;
    app.create("in-default", "1").await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "name": "in-shop", "source": "1", "app": "shop" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);

    let shop = app.get("/api/admin/scripts?app=shop").await;
    assert_eq!(shop.status, StatusCode::OK);
    assert_eq!(shop.body["total"], 1);
    assert_eq!(shop.body["items"][0]["name"], "in-shop");
    let default = app.get("/api/admin/scripts?app=default").await;
    assert_eq!(default.body["total"], 1);
    assert_eq!(default.body["items"][0]["name"], "in-default");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn update_changes_the_script_bumps_the_version_and_tells_observers(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let created = app.create("counter", "1").await;
    let id = script_id(&created);
    let uri = format!("/api/admin/scripts/{id}");

    let reply = app
        .json(Method::PUT, &uri, &json!({ "source": "1 + 1" }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["source"], "1 + 1");
    assert_eq!(reply.body["name"], "counter");
    assert_eq!(app.changed(), [id]);

    let reply = app
        .json(
            Method::PUT,
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
            &json!({ "name": "private", "source": "1", "require_token": true }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["require_token"], true);
    let uri = format!("/api/admin/scripts/{}", script_id(&reply.body));

    let listed = app.get("/api/admin/scripts").await;
    assert_eq!(listed.body["items"][0]["require_token"], true);

    let reply = app
        .json(Method::PUT, &uri, &json!({ "require_token": false }))
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
    assert_eq!(first.body["total"], 4);
    assert_eq!(names(&first.body), ["alpha", "bravo", "charlie"]);
    let second = app
        .caller(&session)
        .get("/api/admin/scripts?limit=3&offset=3")
        .await;
    assert_eq!(names(&second.body), ["delta"]);
    assert_eq!(second.body["total"], 4);
    let beyond = app
        .caller(&session)
        .get("/api/admin/scripts?offset=10")
        .await;
    assert_eq!(names(&beyond.body), Vec::<String>::new());
}

//! The app lifecycle through the API.

use axum::http::{Method, StatusCode, header};
use picloud_manager_core::DEFAULT_APP_ID;
use picloud_shared::AppId;
use serde_json::json;
use sqlx::PgPool;

use crate::{TestApp, script_id, total};

const APPS: &str = "/api/admin/apps";

fn app_id(body: &serde_json::Value) -> AppId {
    body["id"].as_str().unwrap().parse().unwrap()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_admin_creates_an_app_and_becomes_its_owner(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .json(
            Method::POST,
            APPS,
            &json!({ "slug": "shop", "name": "The Shop" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["slug"], "shop");
    assert_eq!(reply.body["name"], "The Shop");
    assert_eq!(reply.body["role"], "owner");
    let id = app_id(&reply.body);
    let location = reply.headers[header::LOCATION].to_str().unwrap();
    assert_eq!(location, format!("{APPS}/{id}"));
    let fetched = app.get(location).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, reply.body);

    let members = app.get(&format!("{APPS}/{id}/members")).await;
    assert_eq!(
        members.body["items"],
        json!([{ "user_id": app.admin.id, "username": "admin", "role": "owner" }])
    );
    // Scripts can go into it by slug.
    let script = app.create_in("shop", "checkout", "1").await;
    assert_eq!(script["app_id"], id.to_string());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn app_requests_that_do_not_fit_are_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    app.add_app("shop").await;
    let taken = app
        .json(
            Method::POST,
            APPS,
            &json!({ "slug": "shop", "name": "Again" }),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.code(), "conflict");
    assert_eq!(taken.message(), "an app with slug 'shop' already exists");
    for body in [
        json!({ "slug": "Not_A_Slug", "name": "x" }),
        json!({ "slug": "-dash", "name": "x" }),
        json!({ "slug": "fine", "name": "  " }),
        json!({ "slug": "fine", "name": "x".repeat(101) }),
    ] {
        let reply = app.json(Method::POST, APPS, &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.code(), "invalid_name", "{body}");
    }
    let reply = app
        .json(Method::POST, APPS, &json!({ "slug": "fine" }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");
    assert_eq!(total(&app.get(APPS).await.body), 2);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn apps_are_listed_by_slug_page_by_page(pool: PgPool) {
    let app = TestApp::new(pool).await;
    for slug in ["charlie", "alpha", "bravo"] {
        app.add_app(slug).await;
    }
    let first = app.get(&format!("{APPS}?limit=2")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let slugs: Vec<_> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["alpha", "bravo"]);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app.get(&format!("{APPS}?limit=2&cursor={cursor}")).await;
    let slugs: Vec<_> = second.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["charlie", "default"]);
    assert_eq!(total(&app.get(APPS).await.body), 4);
    assert_eq!(
        app.get(&format!("{APPS}?limit=0")).await.code(),
        "invalid_query"
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn renaming_changes_the_slug_and_tells_observers(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    app.create_in("shop", "checkout", "1").await;
    let uri = format!("{APPS}/{shop}");
    let reply = app
        .json(
            Method::PATCH,
            &uri,
            &json!({ "slug": "store", "name": "Store" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["slug"], "store");
    assert_eq!(reply.body["name"], "Store");
    assert_eq!(app.apps_changed(), [shop]);
    // The scripts follow the new slug.
    let store = app.app_id("store").await;
    assert_eq!(store, shop);
    let listed = app.get(&format!("/api/admin/scripts?app_id={shop}")).await;
    assert_eq!(total(&listed.body), 1);
    assert_eq!(listed.body["items"][0]["name"], "checkout");

    app.add_app("taken").await;
    let clash = app
        .json(Method::PATCH, &uri, &json!({ "slug": "taken" }))
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert_eq!(clash.message(), "an app with slug 'taken' already exists");
    let empty = app.json(Method::PATCH, &uri, &json!({})).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty.code(), "invalid_body");
    assert_eq!(app.apps_changed(), [shop], "failed renames tell nobody");
    let missing = AppId::new();
    let reply = app
        .json(
            Method::PATCH,
            &format!("{APPS}/{missing}"),
            &json!({ "name": "x" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), format!("app {missing} not found"));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_default_app_keeps_its_slug_and_cannot_be_deleted(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let uri = format!("{APPS}/{DEFAULT_APP_ID}");
    let reply = app
        .json(Method::PATCH, &uri, &json!({ "slug": "main" }))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "default_app");
    let reply = app
        .json(Method::PATCH, &uri, &json!({ "name": "Main" }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["slug"], "default");
    let reply = app.delete(&format!("{uri}?cascade=true")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "default_app");
    assert_eq!(app.get(&uri).await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn deleting_an_app_with_scripts_needs_cascade(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let scripts = [
        script_id(&app.create_in("shop", "one", "1").await),
        script_id(&app.create_in("shop", "two", "1").await),
    ];
    let uri = format!("{APPS}/{shop}");
    for refused in [
        app.delete(&uri).await,
        app.delete(&format!("{uri}?cascade=false")).await,
    ] {
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert_eq!(refused.code(), "app_not_empty");
        assert_eq!(
            refused.message(),
            "app 'shop' still has 2 scripts; delete them first or pass cascade=true"
        );
    }
    assert_eq!(app.get(&uri).await.status, StatusCode::OK);
    assert!(app.changed().is_empty());
    assert_eq!(
        app.delete(&format!("{uri}?cascade=maybe")).await.code(),
        "invalid_query"
    );

    let reply = app.delete(&format!("{uri}?cascade=true")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(app.get(&uri).await.status, StatusCode::NOT_FOUND);
    for script in scripts {
        let gone = app.get(&format!("/api/admin/scripts/{script}")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }
    let mut told = app.changed();
    told.sort();
    let mut expected = scripts.to_vec();
    expected.sort();
    assert_eq!(told, expected);
    assert_eq!(app.apps_changed(), [shop]);

    // An empty app goes without cascade.
    let empty = app.add_app("empty").await;
    let reply = app.delete(&format!("{APPS}/{empty}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(app.apps_changed(), [shop, empty]);
}

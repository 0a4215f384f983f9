//! Users through the API: created by admins, passwords changed, deleted.

use axum::http::{Method, StatusCode, header};
use picloud_shared::{Scope, UserId};
use serde_json::json;
use sqlx::PgPool;

use crate::{ADMIN_PASSWORD, TestApp, USER_PASSWORD, total};

const USERS: &str = "/api/admin/users";

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_admin_creates_a_user_who_can_then_log_in(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let reply = app
        .json(
            Method::POST,
            USERS,
            &json!({ "username": "ada", "password": "analytical-engine" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["username"], "ada");
    assert_eq!(reply.body["instance_admin"], false);
    assert!(reply.body.get("password").is_none() && reply.body.get("password_hash").is_none());
    let location = reply.headers[header::LOCATION].to_str().unwrap();
    assert_eq!(app.get(location).await.body, reply.body);

    // Stored as an argon2id hash, never as given.
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'ada'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains("analytical-engine"));

    let login = app.login("ada", "analytical-engine").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);

    let list = app.get(USERS).await;
    let names: Vec<_> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "admin"]);
    assert_eq!(total(&list.body), 2);

    let admin = app
        .json(
            Method::POST,
            USERS,
            &json!({ "username": "grace", "password": "cobol-compiler", "instance_admin": true }),
        )
        .await;
    assert_eq!(admin.body["instance_admin"], true);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn user_requests_that_do_not_fit_are_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let cases = [
        (
            json!({ "username": "ada", "password": "short" }),
            "invalid_password",
        ),
        (
            json!({ "username": "ada", "password": "x".repeat(1025) }),
            "invalid_password",
        ),
        (
            json!({ "username": "Ada", "password": "long-enough" }),
            "invalid_name",
        ),
        (json!({ "username": "ada" }), "invalid_body"),
    ];
    for (body, code) in cases {
        let reply = app.json(Method::POST, USERS, &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.code(), code, "{body}");
    }
    let taken = app
        .json(
            Method::POST,
            USERS,
            &json!({ "username": "admin", "password": "long-enough" }),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.message(), "a user named 'admin' already exists");
    let missing = UserId::new();
    let reply = app.get(&format!("{USERS}/{missing}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), format!("user {missing} not found"));
    assert_eq!(total(&app.get(USERS).await.body), 1);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn deleting_a_user_ends_their_tokens_but_admins_cannot_delete_themselves(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let ada = app.user("ada", false).await;
    let token = app.token(ada.id, &[Scope::ScriptRead], None).await;
    assert_eq!(
        app.caller(&token).get("/api/admin/auth/me").await.status,
        StatusCode::OK
    );
    let reply = app.delete(&format!("{USERS}/{}", ada.id)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.caller(&token).get("/api/admin/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get(&format!("{USERS}/{}", ada.id)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("{USERS}/{}", ada.id)).await.status,
        StatusCode::NOT_FOUND
    );

    let reply = app.delete(&format!("{USERS}/{}", app.admin.id)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "cannot_delete_self");
    assert_eq!(app.get("/api/admin/auth/me").await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn changing_your_own_password_revokes_every_token_you_had(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let ada = app.user("ada", false).await;
    let session = app.session(ada.id).await;
    let other_session = app.session(ada.id).await;
    let token = app.token(ada.id, &Scope::ALL, None).await;
    let uri = format!("{USERS}/{}/password", ada.id);

    // Not through an API token: it could take over the account that issued it.
    let reply = app
        .caller(&token)
        .json(Method::PUT, &uri, &json!({ "password": "a-new-password" }))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = app
        .caller(&session)
        .json(Method::PUT, &uri, &json!({ "password": "short" }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_password");

    let reply = app
        .caller(&session)
        .json(Method::PUT, &uri, &json!({ "password": "a-new-password" }))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    for revoked in [&session, &other_session, &token] {
        let reply = app.caller(revoked).get("/api/admin/auth/me").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.login("ada", USER_PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("ada", "a-new-password").await.status,
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn only_an_admin_sets_someone_elses_password(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let ada = app.user("ada", false).await;
    let bob = app.user("bob", false).await;
    let bob_session = app.session(bob.id).await;
    let ada_token = app.token(ada.id, &[Scope::ScriptRead], None).await;
    let uri = format!("{USERS}/{}/password", ada.id);

    let reply = app
        .caller(&bob_session)
        .json(Method::PUT, &uri, &json!({ "password": "bob-was-here" }))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.caller(&ada_token)
            .get("/api/admin/auth/me")
            .await
            .status,
        StatusCode::OK
    );

    let reply = app
        .json(Method::PUT, &uri, &json!({ "password": "reset-by-admin" }))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.caller(&ada_token)
            .get("/api/admin/auth/me")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("ada", "reset-by-admin").await.status,
        StatusCode::OK
    );
    // The admin's own session is untouched.
    assert_eq!(app.get("/api/admin/auth/me").await.status, StatusCode::OK);
    let missing = format!("{USERS}/{}/password", UserId::new());
    let reply = app
        .json(
            Method::PUT,
            &missing,
            &json!({ "password": ADMIN_PASSWORD }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn no_api_token_sets_a_password_not_even_an_instance_admins(pool: PgPool) {
    // Review M5: an instance admin's `app:admin` token could reset any password, its maker's
    // included, and so turn a leaked token into a login.
    let app = TestApp::new(pool).await;
    let ada = app.user("ada", false).await;
    let admin_token = app.token(app.admin.id, &Scope::ALL, None).await;
    for target in [ada.id, app.admin.id] {
        let reply = app
            .caller(&admin_token)
            .json(
                Method::PUT,
                &format!("{USERS}/{target}/password"),
                &json!({ "password": "taken-over-1" }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        assert!(
            reply.message().contains("login session"),
            "{}",
            reply.message()
        );
    }
    assert_eq!(
        app.login("ada", USER_PASSWORD).await.status,
        StatusCode::OK,
        "ada's password is unchanged"
    );
    assert_eq!(
        app.caller(&admin_token)
            .get("/api/admin/auth/me")
            .await
            .status,
        StatusCode::OK,
        "nothing was revoked"
    );
}

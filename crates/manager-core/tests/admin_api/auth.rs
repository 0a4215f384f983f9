//! Logging in and out, `me`, and the failed-login limiter.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{StatusCode, header};
use chrono::{DateTime, TimeDelta, Utc};
use picloud_shared::{AppRole, Scope};
use serde_json::json;
use sqlx::PgPool;

use picloud_manager_core::access::PgUserRepository;
use picloud_manager_core::access::UserRepository;
use picloud_manager_core::access::{ADDRESS_FACTOR, USERNAME_FACTOR};
use picloud_manager_core::{Bootstrap, ensure_instance_admin};

use crate::{ADMIN_PASSWORD, TestApp, USER_PASSWORD};

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_first_start_creates_an_admin_and_later_starts_do_not(pool: PgPool) {
    let users = PgUserRepository::new(pool.clone());
    let first = ensure_instance_admin(&users, None).await.unwrap();
    let Bootstrap::Created {
        username,
        generated_password: Some(password),
    } = first
    else {
        panic!("expected a created admin with a generated password, got {first:?}");
    };
    assert_eq!(username.as_str(), "admin");
    let second = ensure_instance_admin(&users, Some("another-password".to_owned()))
        .await
        .unwrap();
    assert_eq!(second, Bootstrap::AlreadyInitialised);
    assert_eq!(users.list(10, None).await.unwrap().len(), 1);

    // The printed password is the one that logs in; the second start changed nothing.
    let app = TestApp::new(pool).await;
    assert_eq!(
        app.login("admin", "another-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("admin", ADMIN_PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = app.login("admin", &password).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user"]["instance_admin"], true);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_bootstrapped_admin_logs_in_and_gets_a_working_session(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let before = Utc::now();
    let reply = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let token = reply.body["token"].as_str().unwrap();
    assert!(token.starts_with("pc_") && token.len() == 46, "{token}");
    assert_eq!(
        reply.body["user"],
        json!({ "id": app.admin.id, "username": "admin", "instance_admin": true })
    );
    let after = Utc::now();
    let expires_at: DateTime<Utc> = reply.body["expires_at"].as_str().unwrap().parse().unwrap();
    // PostgreSQL keeps microseconds: allow for the truncation.
    let slack = TimeDelta::milliseconds(1);
    assert!(
        expires_at >= before + TimeDelta::hours(12) - slack
            && expires_at <= after + TimeDelta::hours(12),
        "{expires_at} not 12 h after the login"
    );

    let me = app.caller(token).get("/api/admin/auth/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["user"]["username"], "admin");
    assert_eq!(me.body["credential"], "session");
    assert_eq!(
        me.body["scopes"],
        json!([
            "script:read",
            "script:write",
            "script:execute",
            "data:read",
            "data:write",
            "triggers:manage",
            "app:admin"
        ])
    );
    assert_eq!(me.body["app_restriction"], json!(null));
    let users = app.caller(token).get("/api/admin/users").await;
    assert_eq!(users.status, StatusCode::OK);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let wrong = app.login("admin", "not-the-password").await;
    let unknown = app.login("nobody", ADMIN_PASSWORD).await;
    let invalid = app.login("Not A Username!", ADMIN_PASSWORD).await;
    for reply in [&wrong, &unknown, &invalid] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        assert_eq!(reply.code(), "invalid_credentials");
        assert!(reply.body.get("token").is_none());
    }
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, invalid.body);
    // The password is not echoed anywhere.
    assert!(!wrong.body.to_string().contains("not-the-password"));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn logging_out_revokes_the_session_at_once(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let token = app.login("admin", ADMIN_PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let caller = app.caller(&token);
    assert_eq!(
        caller.get("/api/admin/auth/me").await.status,
        StatusCode::OK
    );
    let reply = caller
        .send(
            axum::http::Request::post("/api/admin/auth/logout")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let after = caller.get("/api/admin/auth/me").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.code(), "unauthorized");
    // Other sessions of the same user are unaffected.
    assert_eq!(app.get("/api/admin/auth/me").await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_api_token_cannot_log_out(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let token = app.token(app.admin.id, &[Scope::ScriptRead], None).await;
    let reply = app
        .caller(&token)
        .send(
            axum::http::Request::post("/api/admin/auth/logout")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "not_a_session");
    // The token still works.
    let me = app.caller(&token).get("/api/admin/auth/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["credential"], "api_token");
    assert_eq!(me.body["scopes"], json!(["script:read"]));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn me_shows_roles_and_the_app_restriction(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let ada = app.user_with_role("ada", shop, AppRole::Developer).await;
    let token = app
        .token(ada.id, &[Scope::ScriptWrite, Scope::ScriptRead], Some(shop))
        .await;
    let me = app.caller(&token).get("/api/admin/auth/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(
        me.body["user"],
        json!({ "id": ada.id, "username": "ada", "instance_admin": false })
    );
    assert_eq!(me.body["scopes"], json!(["script:read", "script:write"]));
    assert_eq!(me.body["app_restriction"], json!(shop));
    assert_eq!(
        me.body["roles"],
        json!([{ "app_id": shop, "role": "developer" }])
    );
    // A user added by an admin logs in with their own password.
    let login = app.login("ada", USER_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(login.body["user"]["instance_admin"], false);
}

/// A window short enough to wait out in a test, long enough to hold a dozen logins.
const WINDOW: Duration = Duration::from_secs(2);

fn addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40_000)
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn failed_logins_for_one_username_are_limited_and_the_limit_recovers(pool: PgPool) {
    let app = TestApp::with_login_limits(pool, 1, WINDOW).await;
    // From a different address each time, so only the username's counter fills up: it
    // allows USERNAME_FACTOR times the per-address allowance.
    for i in 0..USERNAME_FACTOR {
        let reply = app
            .login_from(
                addr(&format!("198.51.100.{i}")),
                &[],
                "admin",
                "wrong-password",
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Refused before the password is checked: the right one does not help.
    let blocked = app
        .login_from(addr("198.51.100.250"), &[], "admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(
        blocked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        blocked.body
    );
    assert_eq!(blocked.code(), "too_many_attempts");
    assert!(blocked.headers.contains_key(header::RETRY_AFTER));
    // Another username is not affected.
    let other = app
        .login_from(addr("198.51.100.251"), &[], "someone", "wrong-password")
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);

    tokio::time::sleep(WINDOW + Duration::from_millis(100)).await;
    let recovered = app
        .login_from(addr("198.51.100.252"), &[], "admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(recovered.status, StatusCode::OK, "{}", recovered.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn failed_logins_from_one_address_are_limited_whatever_the_username(pool: PgPool) {
    let app = TestApp::with_login_limits(pool, 1, WINDOW).await;
    let guesser = addr("203.0.113.9");
    for i in 0..ADDRESS_FACTOR {
        let name = format!("user{i}");
        let reply = app.login_from(guesser, &[], &name, "guess-guess").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}");
    }
    let blocked = app.login_from(guesser, &[], "admin", ADMIN_PASSWORD).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.headers.contains_key(header::RETRY_AFTER));
    // Someone else, elsewhere, logs in fine.
    let elsewhere = app
        .login_from(addr("203.0.113.10"), &[], "admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(elsewhere.status, StatusCode::OK);

    tokio::time::sleep(WINDOW + Duration::from_millis(100)).await;
    let recovered = app.login_from(guesser, &[], "admin", ADMIN_PASSWORD).await;
    assert_eq!(recovered.status, StatusCode::OK, "{}", recovered.body);
}

/// M4: a guesser hammering one account cannot lock its owner out from elsewhere.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_flood_from_one_address_does_not_lock_the_user_out_from_another(pool: PgPool) {
    let app = TestApp::with_login_limits(pool, 3, Duration::from_secs(60)).await;
    let attacker = addr("203.0.113.66");
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(app.login_from(attacker, &[], "admin", "guess").await.status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        3,
        "the pair allows three guesses: {statuses:?}"
    );
    assert!(
        statuses[3..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS)
    );
    let owner = app
        .login_from(addr("198.51.100.7"), &[], "admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
}

/// H3: parallel guesses cannot all pass the check before the first failure is counted.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn parallel_guesses_are_held_to_the_failure_limit(pool: PgPool) {
    let app = TestApp::with_login_limits(pool, 3, Duration::from_secs(60)).await;
    let guesser = addr("203.0.113.40");
    let replies = futures_util::future::join_all(
        (0..40).map(|_| app.login_from(guesser, &[], "admin", "guess")),
    )
    .await;
    let unauthorized = replies
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((unauthorized, refused), (3, 37));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client(pool: PgPool) {
    let app = TestApp::with_login_limits(pool, 2, Duration::from_secs(60)).await;
    let proxy = addr("127.0.0.1");
    let client = [("x-forwarded-for", "spoofed, 192.0.2.1")];
    for _ in 0..2 {
        let reply = app.login_from(proxy, &client, "admin", "guess-guess").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let blocked = app
        .login_from(proxy, &client, "admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is a different key.
    let other = [("x-forwarded-for", "192.0.2.2")];
    let reply = app.login_from(proxy, &other, "admin", ADMIN_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // A remote peer's own X-Forwarded-For is not believed: its guesses count against it
    // whatever it claims.
    let remote = addr("192.0.2.200");
    for forged in ["10.9.9.1", "10.9.9.2"] {
        let reply = app
            .login_from(
                remote,
                &[("x-forwarded-for", forged)],
                "admin",
                "guess-guess",
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let blocked = app
        .login_from(
            remote,
            &[("x-forwarded-for", "10.0.0.1")],
            "admin",
            ADMIN_PASSWORD,
        )
        .await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_successful_login_clears_the_failures_from_its_address(pool: PgPool) {
    let app = TestApp::with_login_limits(pool, 3, Duration::from_secs(60)).await;
    let from = addr("198.51.100.1");
    for password in ["wrong-1", "wrong-2", ADMIN_PASSWORD, "wrong-3", "wrong-4"] {
        let reply = app.login_from(from, &[], "admin", password).await;
        let expected = if password == ADMIN_PASSWORD {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(reply.status, expected, "{password}: {}", reply.body);
    }
    // Without the reset these four failures would have blocked the pair.
    let reply = app.login_from(from, &[], "admin", ADMIN_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bad_login_bodies_are_refused_in_the_envelope(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .anonymous()
        .json(
            axum::http::Method::POST,
            "/api/admin/auth/login",
            &json!({ "username": "admin" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_body");
    assert!(reply.message().contains("password"), "{}", reply.message());
}

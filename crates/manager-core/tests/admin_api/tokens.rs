//! The API token lifecycle: created (the secret shown once), used, expired, revoked; what is
//! stored; and that a token cannot mint a stronger one.

use axum::http::{Method, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use picloud_shared::{AppRole, CredentialKind, Scope};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use picloud_manager_core::DEFAULT_APP_ID;

use crate::TestApp;

const TOKENS: &str = "/api/admin/tokens";

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_token_is_shown_once_works_and_stops_working_when_revoked(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let before = Utc::now();
    let created = app
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "ci deploy", "scopes": ["script:read", "script:read"], "expires_in_days": 30 }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["token"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("pc_") && secret.len() == 46, "{secret}");
    assert_eq!(created.body["name"], "ci deploy");
    assert_eq!(created.body["scopes"], json!(["script:read"]));
    assert_eq!(created.body["app_id"], Value::Null);
    assert_eq!(created.body["prefix"], &secret[..11]);
    let after = Utc::now();
    let expires_at: DateTime<Utc> = created.body["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let slack = TimeDelta::milliseconds(1);
    assert!(
        expires_at >= before + TimeDelta::days(30) - slack
            && expires_at <= after + TimeDelta::days(30),
        "{expires_at} not 30 days after creation"
    );

    // Listed without the secret; the list never shows it again.
    let list = app.get(TOKENS).await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "sessions are not listed: {}", list.body);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["prefix"], &secret[..11]);
    assert!(items[0].get("token").is_none());
    assert!(!list.body.to_string().contains(&secret[11..]));

    // Stored as SHA-256 of the secret, and the secret is nowhere in the table.
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_hash FROM api_tokens WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, Sha256::digest(secret.as_bytes()).to_vec());
    let leaks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens t WHERE row_to_json(t)::text LIKE '%' || $1 || '%'",
    )
    .bind(&secret[11..])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0);

    // Used: it reads, and it does only what its scope allows.
    let caller = app.caller(&secret);
    assert_eq!(
        caller.get("/api/admin/scripts").await.status,
        StatusCode::OK
    );
    let write = caller
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "app_id": DEFAULT_APP_ID, "name": "x", "source": "1" }),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);

    // Revoked: refused on the very next request.
    let revoked = app.delete(&format!("{TOKENS}/{id}")).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let after = caller.get("/api/admin/scripts").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.code(), "unauthorized");
    let list = app.get(TOKENS).await;
    assert!(
        list.body["items"][0]["revoked_at"].is_string(),
        "{}",
        list.body
    );
    // Revoking again is harmless.
    assert_eq!(
        app.delete(&format!("{TOKENS}/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_expired_token_is_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (expired, _) = app
        .issue(
            app.admin.id,
            CredentialKind::ApiToken,
            &Scope::ALL,
            None,
            Some(Utc::now() - TimeDelta::minutes(1)),
        )
        .await;
    let reply = app.caller(&expired).get("/api/admin/auth/me").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "unauthorized");
    let (expired_session, _) = app
        .issue(
            app.admin.id,
            CredentialKind::Session,
            &Scope::ALL,
            None,
            Some(Utc::now() - TimeDelta::seconds(1)),
        )
        .await;
    let reply = app.caller(&expired_session).get("/api/admin/auth/me").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let (fresh, _) = app
        .issue(
            app.admin.id,
            CredentialKind::ApiToken,
            &Scope::ALL,
            None,
            Some(Utc::now() + TimeDelta::minutes(1)),
        )
        .await;
    assert_eq!(
        app.caller(&fresh).get("/api/admin/auth/me").await.status,
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn token_requests_that_do_not_fit_are_422(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let unknown = app
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["script:read", "script:delete"] }),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.code(), "invalid_scope");
    assert!(
        unknown.message().contains("script:delete"),
        "{}",
        unknown.message()
    );

    let none = app
        .json(Method::POST, TOKENS, &json!({ "name": "t", "scopes": [] }))
        .await;
    assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(none.code(), "invalid_scope");

    for days in [0, 3651] {
        let reply = app
            .json(
                Method::POST,
                TOKENS,
                &json!({ "name": "t", "scopes": ["data:read"], "expires_in_days": days }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{days}");
        assert_eq!(reply.code(), "invalid_body");
    }
    let blank = app
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": " ", "scopes": ["data:read"] }),
        )
        .await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(blank.code(), "invalid_name");
    let nowhere = picloud_shared::AppId::new();
    let missing_app = app
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["data:read"], "app_id": nowhere }),
        )
        .await;
    assert_eq!(missing_app.status, StatusCode::NOT_FOUND);
    assert_eq!(missing_app.message(), format!("app {nowhere} not found"));
    assert_eq!(app.get(TOKENS).await.body["items"], json!([]));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_token_cannot_create_a_stronger_token(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    // Making tokens at all takes `app:admin`.
    let reader = app.token(app.admin.id, &[Scope::ScriptRead], None).await;
    let refused = app
        .caller(&reader)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["script:read"] }),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.message().contains("app:admin"),
        "{}",
        refused.message()
    );
    let reader = app
        .token(app.admin.id, &[Scope::ScriptRead, Scope::AppAdmin], None)
        .await;
    let wider = app
        .caller(&reader)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["script:read", "script:write"] }),
        )
        .await;
    assert_eq!(wider.status, StatusCode::FORBIDDEN);
    assert_eq!(wider.code(), "forbidden");
    assert!(
        wider.message().contains("script:write"),
        "{}",
        wider.message()
    );
    let same = app
        .caller(&reader)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["script:read"] }),
        )
        .await;
    assert_eq!(same.status, StatusCode::CREATED, "{}", same.body);

    let shop_only = app.token(app.admin.id, &Scope::ALL, Some(shop)).await;
    let unlimited = app
        .caller(&shop_only)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["data:read"] }),
        )
        .await;
    assert_eq!(unlimited.status, StatusCode::FORBIDDEN);
    let default_app = app
        .caller(&shop_only)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["data:read"], "app_id": app.app_id("default").await }),
        )
        .await;
    assert_eq!(default_app.status, StatusCode::NOT_FOUND);
    let limited = app
        .caller(&shop_only)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "t", "scopes": ["data:read"], "app_id": app.app_id("shop").await }),
        )
        .await;
    assert_eq!(limited.status, StatusCode::CREATED, "{}", limited.body);
    assert_eq!(limited.body["app_id"], json!(shop));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn only_the_owner_or_an_instance_admin_revokes_a_token(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let ada = app.user_with_role("ada", shop, AppRole::Owner).await;
    let bob = app.user_with_role("bob", shop, AppRole::Owner).await;
    let (ada_token, ada_token_id) = app
        .issue(ada.id, CredentialKind::ApiToken, &Scope::ALL, None, None)
        .await;
    let bob_session = app.session(bob.id).await;
    let uri = format!("{TOKENS}/{ada_token_id}");

    let reply = app.caller(&bob_session).delete(&uri).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), format!("token {ada_token_id} not found"));
    // Bob's list holds none of Ada's tokens.
    let bobs = app.caller(&bob_session).get(TOKENS).await;
    assert_eq!(bobs.body["items"], json!([]));
    assert_eq!(
        app.caller(&ada_token)
            .get("/api/admin/auth/me")
            .await
            .status,
        StatusCode::OK
    );

    // Ada may revoke her own, even with the token itself.
    let (second, second_id) = app
        .issue(
            ada.id,
            CredentialKind::ApiToken,
            &[Scope::DataRead],
            None,
            None,
        )
        .await;
    let reply = app
        .caller(&second)
        .delete(&format!("{TOKENS}/{second_id}"))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.caller(&second).get("/api/admin/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );

    // The instance admin may revoke anyone's.
    assert_eq!(app.delete(&uri).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.caller(&ada_token)
            .get("/api/admin/auth/me")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// M3: a token made through an API token cannot outlive it, in time or in revocation.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_token_made_by_a_token_expires_with_it_and_dies_with_it(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let parent_expiry = Utc::now() + TimeDelta::days(1);
    let (parent, parent_id) = app
        .issue(
            app.admin.id,
            CredentialKind::ApiToken,
            &Scope::ALL,
            None,
            Some(parent_expiry),
        )
        .await;
    let forever = app
        .caller(&parent)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "child", "scopes": ["script:read"] }),
        )
        .await;
    assert_eq!(forever.status, StatusCode::CREATED, "{}", forever.body);
    let expires: DateTime<Utc> = forever.body["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (expires - parent_expiry).num_seconds().abs() <= 1,
        "no expiry asked, the parent's given: {expires}"
    );
    let longer = app
        .caller(&parent)
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "child", "scopes": ["script:read"], "expires_in_days": 30 }),
        )
        .await;
    let expires: DateTime<Utc> = longer.body["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        expires <= parent_expiry + TimeDelta::seconds(1),
        "{expires}"
    );

    let child = forever.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.caller(&child).get("/api/admin/auth/me").await.status,
        StatusCode::OK
    );
    // A session may revoke the parent; its children stop working with it.
    let revoked = app.delete(&format!("{TOKENS}/{parent_id}")).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.caller(&child).get("/api/admin/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );

    // A token made through a login session stands on its own.
    let standalone = app
        .json(
            Method::POST,
            TOKENS,
            &json!({ "name": "ci", "scopes": ["script:read"] }),
        )
        .await;
    assert_eq!(standalone.body["expires_at"], Value::Null);
}

/// M3, second half: managing tokens takes `app:admin`, except a token revoking itself.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn listing_and_revoking_other_tokens_takes_app_admin(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (reader, reader_id) = app
        .issue(
            app.admin.id,
            CredentialKind::ApiToken,
            &[Scope::DataRead],
            None,
            None,
        )
        .await;
    let (_, other_id) = app
        .issue(
            app.admin.id,
            CredentialKind::ApiToken,
            &[Scope::DataRead],
            None,
            None,
        )
        .await;
    let list = app.caller(&reader).get(TOKENS).await;
    assert_eq!(list.status, StatusCode::FORBIDDEN);
    let other = app
        .caller(&reader)
        .delete(&format!("{TOKENS}/{other_id}"))
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(other.message().contains("app:admin"), "{}", other.message());
    let itself = app
        .caller(&reader)
        .delete(&format!("{TOKENS}/{reader_id}"))
        .await;
    assert_eq!(itself.status, StatusCode::NO_CONTENT);
}

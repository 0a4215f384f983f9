//! Cross-app isolation: a user of app `alpha`, or a token limited to it, cannot list, read,
//! change or delete anything of app `beta`, by id or by name; to them `beta` does not exist.

use axum::http::{Method, StatusCode};
use picloud_manager_core::ExecutionLogRepository;
use picloud_manager_core::access::MembershipRepository;
use picloud_manager_core::executions::PgExecutionLogRepository;
use picloud_shared::{AppRole, Scope};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{now, record};
use crate::{Caller, TestApp, script_id, total};

/// One field of every item of a page.
fn field<'a>(page: &'a Value, key: &str) -> Vec<&'a str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap())
        .collect()
}

/// Asserts that `caller` sees `alpha` and nothing of `beta`.
async fn assert_isolated(app: &TestApp, caller: Caller<'_>, who: &str, beta: &Beta) {
    let not_found = |reply: &crate::Reply, what: &str| {
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{who}: {what}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "not_found", "{who}: {what}");
    };

    // Lists show alpha's things only; naming beta is "not found", as a missing app is.
    let scripts = caller.get("/api/admin/scripts").await;
    assert_eq!(scripts.status, StatusCode::OK, "{who}: {}", scripts.body);
    assert_eq!(field(&scripts.body, "name"), ["alpha-script"], "{who}");
    assert_eq!(total(&scripts.body), 1, "{who}");
    let by_id = caller
        .get(&format!("/api/admin/scripts?app_id={}", beta.app))
        .await;
    not_found(&by_id, "list ?app_id=beta");
    assert_eq!(by_id.message(), format!("app {} not found", beta.app));
    let alpha = app.app_id("alpha").await;
    let mine = caller
        .get(&format!("/api/admin/scripts?app_id={alpha}"))
        .await;
    assert_eq!(field(&mine.body, "name"), ["alpha-script"], "{who}");
    let apps = caller.get("/api/admin/apps").await;
    assert_eq!(field(&apps.body, "slug"), ["alpha"], "{who}");
    assert_eq!(total(&apps.body), 1, "{who}");

    let app_uri = format!("/api/admin/apps/{}", beta.app);
    not_found(&caller.get(&app_uri).await, "read app");
    not_found(
        &caller
            .json(Method::PATCH, &app_uri, &json!({ "name": "mine now" }))
            .await,
        "rename app",
    );
    not_found(
        &caller.delete(&format!("{app_uri}?cascade=true")).await,
        "delete app",
    );
    not_found(&caller.get(&format!("{app_uri}/members")).await, "members");
    let member_uri = format!("{app_uri}/members/{}", beta.owner);
    not_found(
        &caller
            .json(Method::PUT, &member_uri, &json!({ "role": "viewer" }))
            .await,
        "change member",
    );
    not_found(&caller.delete(&member_uri).await, "remove member");

    let script_uri = format!("/api/admin/scripts/{}", beta.script);
    not_found(&caller.get(&script_uri).await, "read script");
    not_found(
        &caller
            .json(Method::PATCH, &script_uri, &json!({ "source": "2" }))
            .await,
        "update script",
    );
    not_found(&caller.delete(&script_uri).await, "delete script");
    not_found(
        &caller.get(&format!("{script_uri}/executions")).await,
        "list runs",
    );
    not_found(
        &caller
            .get(&format!("/api/admin/executions/{}", beta.execution))
            .await,
        "read run",
    );
    not_found(
        &caller
            .json(
                Method::POST,
                "/api/admin/scripts",
                &json!({ "name": "planted", "source": "1", "app_id": beta.app }),
            )
            .await,
        "create script in beta",
    );
    not_found(
        &caller
            .json(
                Method::POST,
                "/api/admin/tokens",
                &json!({ "name": "t", "scopes": ["script:read"], "app_id": beta.app }),
            )
            .await,
        "token for beta",
    );

    // The same caller does reach alpha.
    let own = caller
        .get(&format!("/api/admin/scripts/{}", beta.alpha_script))
        .await;
    assert_eq!(own.status, StatusCode::OK, "{who}: {}", own.body);

    // And beta is untouched.
    let script = app.get(&script_uri).await;
    assert_eq!(script.body["version"], 1);
    assert_eq!(app.get(&app_uri).await.body["name"], "App beta");
}

struct Beta {
    app: picloud_shared::AppId,
    script: picloud_shared::ScriptId,
    execution: picloud_shared::ExecutionId,
    owner: picloud_shared::UserId,
    alpha_script: picloud_shared::ScriptId,
}

async fn two_apps(pool: PgPool) -> (TestApp, picloud_shared::AppId, Beta) {
    let app = TestApp::new(pool.clone()).await;
    let alpha = app.add_app("alpha").await;
    let beta = app.add_app("beta").await;
    let alpha_script = script_id(&app.create_in("alpha", "alpha-script", "1").await);
    let script = script_id(&app.create_in("beta", "beta-script", "1").await);
    let run = record(script, beta, now());
    PgExecutionLogRepository::new(pool)
        .insert_batch(std::slice::from_ref(&run))
        .await
        .unwrap();
    let owner = app.user_with_role("beth", beta, AppRole::Owner).await;
    let fixture = Beta {
        app: beta,
        script,
        execution: run.id,
        owner: owner.id,
        alpha_script,
    };
    (app, alpha, fixture)
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_owner_of_one_app_sees_nothing_of_another(pool: PgPool) {
    let (app, alpha, beta) = two_apps(pool).await;
    let ada = app.user_with_role("ada", alpha, AppRole::Owner).await;
    let session = app.session(ada.id).await;
    assert_isolated(&app, app.caller(&session), "alpha's owner", &beta).await;
    let token = app.token(ada.id, &Scope::ALL, None).await;
    assert_isolated(&app, app.caller(&token), "alpha owner's token", &beta).await;
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_token_limited_to_one_app_sees_nothing_of_another_even_for_their_owner(pool: PgPool) {
    let (app, alpha, beta) = two_apps(pool).await;
    let bob = app.user_with_role("bob", alpha, AppRole::Owner).await;
    app.memberships
        .set_role(beta.app, bob.id, AppRole::Owner)
        .await
        .unwrap();
    let limited = app.token(bob.id, &Scope::ALL, Some(alpha)).await;
    assert_isolated(&app, app.caller(&limited), "bob's alpha-only token", &beta).await;
    // Bob himself, through a session, does see beta.
    let session = app.session(bob.id).await;
    let reply = app
        .caller(&session)
        .get(&format!("/api/admin/scripts/{}", beta.script))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_instance_admin_token_limited_to_one_app_is_cut_down_to_it(pool: PgPool) {
    let (app, alpha, beta) = two_apps(pool).await;
    let limited = app.token(app.admin.id, &Scope::ALL, Some(alpha)).await;
    assert_isolated(
        &app,
        app.caller(&limited),
        "admin's alpha-only token",
        &beta,
    )
    .await;
    // Instance administration needs an unlimited credential.
    let reply = app.caller(&limited).get("/api/admin/users").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

//! The 401/403/404 matrix over every operation of the OpenAPI document. The operations
//! come from the document itself, so a route added without an entry in [`expectations`]
//! fails this test, and so does a route that lets the wrong caller in.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use picloud_manager_core::ExecutionLogRepository;
use picloud_manager_core::access::secrets::generate_token;
use picloud_manager_core::dead_letters::PgDeadLetterRepository;
use picloud_manager_core::dead_letters::{DeadLetterRepository, NewDeadLetter};
use picloud_manager_core::executions::PgExecutionLogRepository;
use picloud_manager_core::outbox::OutboxSignal;
use picloud_shared::{AppId, AppRole, CredentialKind, ExecutionId, Scope, ScriptId, TokenId};
use picloud_shared::{DeadLetterId, TriggerKind};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{now, record};
use crate::{TestApp, TestUser, script_id, total};

/// The operations anyone may call.
const PUBLIC: [(&str, &str); 2] = [
    ("post", "/api/admin/auth/login"),
    ("get", "/api/admin/openapi.json"),
];

/// What one operation must answer to the two callers who hold a valid credential but not
/// the permission.
struct Expect {
    /// The request body, for operations that take one (valid, so that a refusal can only
    /// come from the access check).
    body: Option<Value>,
    /// A user with no role in app `beta` (a developer elsewhere), through a login session.
    outsider: StatusCode,
    /// The owner of `beta`, through an API token holding only `data:read`.
    scope_limited: StatusCode,
}

/// Takes the expectation of one operation out of the table.
fn take(
    table: &mut BTreeMap<(&'static str, &'static str), Expect>,
    method: &str,
    path: &str,
) -> Option<Expect> {
    let key = *table.keys().find(|(m, p)| *m == method && *p == path)?;
    table.remove(&key)
}

fn expect(body: Option<Value>, outsider: StatusCode, scope_limited: StatusCode) -> Expect {
    Expect {
        body,
        outsider,
        scope_limited,
    }
}

/// Stands for app `beta`'s id in a request body; [`Fixture::body`] fills it in.
const BETA: &str = "{beta}";

fn expectations() -> BTreeMap<(&'static str, &'static str), Expect> {
    use StatusCode as S;
    let hidden_or_forbidden = |body| expect(body, S::NOT_FOUND, S::FORBIDDEN);
    let admin_only = |body| expect(body, S::FORBIDDEN, S::FORBIDDEN);
    BTreeMap::from([
        // Lists show only what the caller can see: empty for the outsider, refused without
        // the scope.
        (
            ("get", "/api/admin/apps"),
            expect(None, S::OK, S::FORBIDDEN),
        ),
        (
            ("post", "/api/admin/apps"),
            admin_only(Some(json!({ "slug": "gamma", "name": "Gamma" }))),
        ),
        (("get", "/api/admin/apps/{id}"), hidden_or_forbidden(None)),
        (
            ("patch", "/api/admin/apps/{id}"),
            hidden_or_forbidden(Some(json!({ "name": "Renamed" }))),
        ),
        (
            ("delete", "/api/admin/apps/{id}"),
            hidden_or_forbidden(None),
        ),
        (
            ("get", "/api/admin/apps/{id}/members"),
            hidden_or_forbidden(None),
        ),
        (
            ("put", "/api/admin/apps/{id}/members/{user_id}"),
            hidden_or_forbidden(Some(json!({ "role": "viewer" }))),
        ),
        (
            ("delete", "/api/admin/apps/{id}/members/{user_id}"),
            hidden_or_forbidden(None),
        ),
        (
            ("get", "/api/admin/scripts"),
            expect(None, S::OK, S::FORBIDDEN),
        ),
        (
            ("post", "/api/admin/scripts"),
            hidden_or_forbidden(Some(
                json!({ "name": "new-one", "source": "1", "app_id": BETA }),
            )),
        ),
        (
            ("get", "/api/admin/scripts/{id}"),
            hidden_or_forbidden(None),
        ),
        (
            ("patch", "/api/admin/scripts/{id}"),
            hidden_or_forbidden(Some(json!({ "source": "2" }))),
        ),
        (
            ("delete", "/api/admin/scripts/{id}"),
            hidden_or_forbidden(None),
        ),
        (
            ("get", "/api/admin/scripts/{id}/executions"),
            hidden_or_forbidden(None),
        ),
        (
            ("get", "/api/admin/executions/{id}"),
            hidden_or_forbidden(None),
        ),
        (("get", "/api/admin/users"), admin_only(None)),
        (
            ("post", "/api/admin/users"),
            admin_only(Some(
                json!({ "username": "newbie", "password": "long-enough-1" }),
            )),
        ),
        (("get", "/api/admin/users/{id}"), admin_only(None)),
        (("delete", "/api/admin/users/{id}"), admin_only(None)),
        (
            ("put", "/api/admin/users/{id}/password"),
            admin_only(Some(json!({ "password": "long-enough-2" }))),
        ),
        // Tokens are the caller's own: listing works for any session, and for an API token
        // with `app:admin`; an app the caller cannot see is hidden; a token without
        // `app:admin` makes none; someone else's token is hidden from a session, and out
        // of reach of a token without `app:admin`.
        (
            ("get", "/api/admin/tokens"),
            expect(None, S::OK, S::FORBIDDEN),
        ),
        (
            ("post", "/api/admin/tokens"),
            expect(
                Some(json!({ "name": "t", "scopes": ["script:read"], "app_id": BETA })),
                S::NOT_FOUND,
                S::FORBIDDEN,
            ),
        ),
        (
            ("delete", "/api/admin/tokens/{id}"),
            expect(None, S::NOT_FOUND, S::FORBIDDEN),
        ),
        (
            ("post", "/api/admin/auth/logout"),
            expect(None, S::NO_CONTENT, S::BAD_REQUEST),
        ),
        (("get", "/api/admin/auth/me"), expect(None, S::OK, S::OK)),
        // KV: reading needs `data:read`, which the limited token has; changing needs
        // `data:write`.
        (
            ("get", "/api/admin/apps/{id}/kv"),
            expect(None, S::NOT_FOUND, S::OK),
        ),
        (
            ("get", "/api/admin/apps/{id}/kv/{collection}"),
            expect(None, S::NOT_FOUND, S::OK),
        ),
        (
            ("get", "/api/admin/apps/{id}/kv/{collection}/{key}"),
            expect(None, S::NOT_FOUND, S::OK),
        ),
        (
            ("put", "/api/admin/apps/{id}/kv/{collection}/{key}"),
            hidden_or_forbidden(Some(json!({ "changed": true }))),
        ),
        (
            ("delete", "/api/admin/apps/{id}/kv/{collection}/{key}"),
            hidden_or_forbidden(None),
        ),
        // Files: reading needs `data:read`, which the limited token has; changing needs
        // `data:write`. The sweep spans every app: instance admins only.
        (
            ("get", "/api/admin/apps/{id}/files"),
            expect(None, S::NOT_FOUND, S::OK),
        ),
        (
            ("get", "/api/admin/apps/{id}/files-usage"),
            expect(None, S::NOT_FOUND, S::OK),
        ),
        (
            ("get", "/api/admin/apps/{id}/files/{collection}/{name}"),
            expect(None, S::NOT_FOUND, S::OK),
        ),
        (
            ("put", "/api/admin/apps/{id}/files/{collection}/{name}"),
            hidden_or_forbidden(Some(json!({ "changed": true }))),
        ),
        (
            ("delete", "/api/admin/apps/{id}/files/{collection}/{name}"),
            hidden_or_forbidden(None),
        ),
        (("get", "/api/admin/files/sweep"), admin_only(None)),
        (("post", "/api/admin/files/sweep"), admin_only(None)),
        // Triggers need `triggers:manage`; the list shows the outsider its own apps' (none).
        (
            ("get", "/api/admin/triggers"),
            expect(None, S::OK, S::FORBIDDEN),
        ),
        (
            ("post", "/api/admin/triggers"),
            hidden_or_forbidden(Some(json!({
                "app_id": BETA, "script_name": "secret-sauce",
                "details": { "kind": "kv", "collection": "*" },
            }))),
        ),
        (
            ("get", "/api/admin/triggers/{id}"),
            hidden_or_forbidden(None),
        ),
        (
            ("delete", "/api/admin/triggers/{id}"),
            hidden_or_forbidden(None),
        ),
        (
            ("patch", "/api/admin/triggers/{id}"),
            hidden_or_forbidden(Some(json!({ "enabled": false }))),
        ),
        // Dead letters: the count needs `script:read` (the app itself); the list needs
        // `data:read` too (each carries an event's values), and acting on one needs
        // `triggers:manage` and `data:read`.
        (
            ("get", "/api/admin/apps/{id}/dead-letters"),
            hidden_or_forbidden(None),
        ),
        (
            ("get", "/api/admin/apps/{id}/dead-letters/count"),
            hidden_or_forbidden(None),
        ),
        (
            ("post", "/api/admin/dead-letters/{id}/replay"),
            hidden_or_forbidden(None),
        ),
        (
            ("post", "/api/admin/dead-letters/{id}/ignore"),
            hidden_or_forbidden(None),
        ),
    ])
}

/// App `beta` with a script, a run of it, its owner and a developer; an outsider who
/// develops app `alpha`.
struct Fixture {
    app: TestApp,
    beta: AppId,
    script: ScriptId,
    execution: ExecutionId,
    owner: TestUser,
    developer: TestUser,
    developer_token: TokenId,
    outsider: TestUser,
    trigger: String,
    dead_letter: DeadLetterId,
}

async fn fixture(pool: PgPool) -> Fixture {
    let app = TestApp::new(pool.clone()).await;
    let alpha = app.add_app("alpha").await;
    let beta = app.add_app("beta").await;
    let script = script_id(&app.create_in("beta", "secret-sauce", "1").await);
    let run = record(script, beta, now());
    PgExecutionLogRepository::new(pool.clone())
        .insert_batch(std::slice::from_ref(&run))
        .await
        .unwrap();
    let put = app
        .json(
            Method::PUT,
            &format!("/api/admin/apps/{beta}/kv/notes/first"),
            &json!({ "kept": true }),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.body);
    // A file whose bytes are JSON, so that every answer of the matrix reads as JSON.
    let upload = app
        .raw_json(
            Method::PUT,
            &format!("/api/admin/apps/{beta}/files/notes/first"),
            json!({ "kept": true }).to_string(),
        )
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.body);
    let owner = app.user_with_role("owner", beta, AppRole::Owner).await;
    let developer = app.user_with_role("dev", beta, AppRole::Developer).await;
    let (_, developer_token) = app
        .issue(
            developer.id,
            CredentialKind::ApiToken,
            &[Scope::ScriptRead],
            None,
            None,
        )
        .await;
    let outsider = app
        .user_with_role("outsider", alpha, AppRole::Developer)
        .await;
    let trigger = app
        .json(
            Method::POST,
            "/api/admin/triggers",
            &json!({
                "app_id": beta, "script_name": "secret-sauce",
                "details": { "kind": "kv", "collection": "notes" },
            }),
        )
        .await;
    assert_eq!(trigger.status, StatusCode::CREATED, "{}", trigger.body);
    let trigger = trigger.body["id"].as_str().unwrap().to_owned();
    let dead_letter = PgDeadLetterRepository::new(pool.clone(), OutboxSignal::spawn(pool.clone()))
        .record(NewDeadLetter {
            app_id: beta,
            trigger_id: Some(trigger.parse().unwrap()),
            trigger_kind: TriggerKind::Kv,
            script_id: Some(script),
            event: json!({ "kind": "kv", "collection": "notes", "key": "first" }),
            depth: 1,
            attempts: 5,
            last_error: "boom".to_owned(),
        })
        .await
        .unwrap()
        .id;
    Fixture {
        app,
        beta,
        script,
        execution: run.id,
        owner,
        developer,
        developer_token,
        outsider,
        trigger,
        dead_letter,
    }
}

impl Fixture {
    /// A request body with app `beta`'s real id in place of [`BETA`].
    fn body(&self, body: &Value) -> String {
        body.to_string().replace(BETA, &self.beta.to_string())
    }

    /// The path with its parameters filled with real ids of app `beta`'s resources.
    fn concrete(&self, path: &str) -> String {
        let families: [(&str, String); 7] = [
            ("/api/admin/apps/", self.beta.to_string()),
            ("/api/admin/scripts/", self.script.to_string()),
            ("/api/admin/executions/", self.execution.to_string()),
            ("/api/admin/users/", self.developer.id.to_string()),
            ("/api/admin/tokens/", self.developer_token.to_string()),
            ("/api/admin/triggers/", self.trigger.clone()),
            ("/api/admin/dead-letters/", self.dead_letter.to_string()),
        ];
        let id = families
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, id)| id.clone());
        if path.contains("{id}") {
            assert!(id.is_some(), "the matrix has no id for {path}");
        }
        let filled = path
            .replace("{id}", &id.unwrap_or_default())
            .replace("{user_id}", &self.developer.id.to_string())
            .replace("{collection}", "notes")
            .replace("{key}", "first")
            .replace("{name}", "first");
        assert!(!filled.contains('{'), "the matrix cannot fill {path}");
        filled
    }
}

fn request(method: &str, uri: &str, body: Option<String>, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// Every (method, path) of the document.
async fn operations(app: &TestApp) -> Vec<(String, String)> {
    let doc = app.anonymous().get("/api/admin/openapi.json").await.body;
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                operations.push((method.clone(), path.clone()));
            }
        }
    }
    assert!(operations.len() > PUBLIC.len(), "{operations:?}");
    operations
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn every_protected_operation_refuses_missing_and_bad_credentials(pool: PgPool) {
    let f = fixture(pool).await;
    let unknown = generate_token().secret;
    for (method, path) in operations(&f.app).await {
        if PUBLIC.contains(&(method.as_str(), path.as_str())) {
            continue;
        }
        let uri = f.concrete(&path);
        let body = take(&mut expectations(), &method, &path)
            .and_then(|e| e.body)
            .map(|b| f.body(&b));
        for token in [
            None,
            Some("garbage"),
            Some("pc_short"),
            Some(unknown.as_str()),
        ] {
            let reply = f
                .app
                .anonymous()
                .send(request(&method, &uri, body.clone(), token))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {}",
                reply.body
            );
            assert_eq!(reply.code(), "unauthorized", "{method} {path}");
            assert_eq!(
                reply.headers[header::WWW_AUTHENTICATE],
                "Bearer",
                "{method} {path}"
            );
        }
        // Not even a malformed body gets past the missing credential.
        let reply = f
            .app
            .anonymous()
            .send(request(&method, &uri, Some("{".to_owned()), None))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // The public operations answer without a credential.
    let reply = f.app.anonymous().get("/api/admin/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = f.app.login("admin", crate::ADMIN_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn every_protected_operation_hides_other_apps_and_refuses_missing_scopes(pool: PgPool) {
    let f = fixture(pool).await;
    let mut expectations = expectations();
    let limited = f.app.token(f.owner.id, &[Scope::DataRead], None).await;
    for (method, path) in operations(&f.app).await {
        if PUBLIC.contains(&(method.as_str(), path.as_str())) {
            continue;
        }
        let expect = take(&mut expectations, &method, &path).unwrap_or_else(|| {
            panic!("{method} {path} is missing from the access matrix's expectations")
        });
        let uri = f.concrete(&path);
        let body = expect.body.as_ref().map(|b| f.body(b));
        // A fresh session each time, since logging out is one of the operations.
        let outsider = f.app.session(f.outsider.id).await;
        let reply = f
            .app
            .anonymous()
            .send(request(&method, &uri, body.clone(), Some(&outsider)))
            .await;
        assert_eq!(
            reply.status, expect.outsider,
            "outsider: {method} {path}: {}",
            reply.body
        );
        if reply.status == StatusCode::NOT_FOUND {
            assert_eq!(reply.code(), "not_found", "{method} {path}");
        }
        if reply.status == StatusCode::FORBIDDEN {
            assert_eq!(reply.code(), "forbidden", "{method} {path}");
        }

        let reply = f
            .app
            .anonymous()
            .send(request(&method, &uri, body, Some(&limited)))
            .await;
        assert_eq!(
            reply.status, expect.scope_limited,
            "data:read token: {method} {path}: {}",
            reply.body
        );
        if reply.status == StatusCode::FORBIDDEN {
            assert_eq!(reply.code(), "forbidden", "{method} {path}");
        }
    }
    let stale: Vec<_> = expectations.keys().collect();
    assert!(
        stale.is_empty(),
        "expectations for operations the document does not have: {stale:?}"
    );

    // Nothing was changed by the refused requests.
    let script = f.app.get(&format!("/api/admin/scripts/{}", f.script)).await;
    assert_eq!(script.body["version"], 1, "{}", script.body);
    let trigger = f
        .app
        .get(&format!("/api/admin/triggers/{}", f.trigger))
        .await;
    assert_eq!(trigger.body["enabled"], true, "{}", trigger.body);
    let triggers = f.app.get("/api/admin/triggers").await;
    assert_eq!(total(&triggers.body), 1, "{}", triggers.body);
    let badge = f
        .app
        .get(&format!("/api/admin/apps/{}/dead-letters/count", f.beta))
        .await;
    assert_eq!(badge.body, json!({ "unresolved": 1 }));
    let beta = f.app.get(&format!("/api/admin/apps/{}", f.beta)).await;
    let note = f
        .app
        .get(&format!("/api/admin/apps/{}/kv/notes/first", f.beta))
        .await;
    assert_eq!(note.body, json!({ "kept": true }));
    let file = f
        .app
        .get(&format!("/api/admin/apps/{}/files/notes/first", f.beta))
        .await;
    assert_eq!(file.body, json!({ "kept": true }));
    assert_eq!(file.headers["x-picloud-file-version"], "1");
    assert_eq!(beta.body["name"], "App beta");
    let members = f
        .app
        .get(&format!("/api/admin/apps/{}/members", f.beta))
        .await;
    assert_eq!(
        members.body["items"],
        json!([
            { "user_id": f.developer.id, "username": "dev", "role": "developer" },
            { "user_id": f.owner.id, "username": "owner", "role": "owner" },
        ])
    );
    let users = f.app.get("/api/admin/users").await;
    assert_eq!(total(&users.body), 4, "{}", users.body);
    let apps = f.app.get("/api/admin/apps").await;
    assert_eq!(total(&apps.body), 3, "{}", apps.body);
    let developer = f
        .app
        .caller(&f.app.session(f.developer.id).await)
        .get("/api/admin/tokens")
        .await;
    assert_eq!(developer.body["items"][0]["revoked_at"], Value::Null);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_forbidden_answer_names_the_missing_scope(pool: PgPool) {
    let f = fixture(pool).await;
    let limited = f.app.token(f.owner.id, &[Scope::ScriptRead], None).await;
    let reply = f
        .app
        .caller(&limited)
        .json(
            Method::PATCH,
            &format!("/api/admin/scripts/{}", f.script),
            &json!({ "source": "2" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code(), "forbidden");
    assert!(
        reply.message().contains("script:write"),
        "{}",
        reply.message()
    );

    // The answer for another app's script is exactly the answer for a missing one.
    let outsider = f.app.session(f.outsider.id).await;
    let hidden = f
        .app
        .caller(&outsider)
        .get(&format!("/api/admin/scripts/{}", f.script))
        .await;
    let missing_id = ScriptId::new();
    let missing = f
        .app
        .caller(&outsider)
        .get(&format!("/api/admin/scripts/{missing_id}"))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        hidden.message(),
        missing
            .message()
            .replace(&missing_id.to_string(), &f.script.to_string())
    );
}

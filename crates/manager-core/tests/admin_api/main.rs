//! The admin API driven in-process through the real router, over PostgreSQL repositories
//! in a fresh database per test (from `DATABASE_URL`; the tests fail when it is unset).
//!
//! Every [`TestApp`] starts as a fresh instance does: the bootstrap creates the instance
//! admin, and requests go out with the admin's session unless a test picks another caller.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

#[path = "../common/mod.rs"]
mod common;

mod access_matrix;
mod apps;
mod auth;
mod dead_letters;
mod errors;
mod executions;
mod files;
mod hostile;
mod isolation;
mod kv;
mod members;
mod openapi;
mod roles;
mod scripts;
mod tokens;
mod triggers;
mod users;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use picloud_manager_core::access::secrets::{PasswordChecks, generate_token, hash_password};
use picloud_manager_core::access::{LoginDefences, LoginRateLimiter, TrustedProxies};
use picloud_manager_core::access::{
    MembershipRepository, NewToken, NewUser, TokenRepository, UserRepository,
};
use picloud_manager_core::files::{FileSweeper, FsBlobStore, PgFilesService};
use picloud_manager_core::kv::PgKvService;
use picloud_manager_core::outbox::{OutboxSignal, RecordingEmitter};
use picloud_manager_core::scripts::ScriptObservers;
use picloud_manager_core::{
    AdminDeps, AdminState, AppRepository, TokenAuthenticator, ensure_instance_admin, router,
};
use picloud_manager_core::{
    access::{PgMembershipRepository, PgTokenRepository, PgUserRepository},
    apps::PgAppRepository,
    executions::PgExecutionLogRepository,
    scripts::PgScriptRepository,
};
use picloud_manager_core::{dead_letters::PgDeadLetterRepository, triggers::PgTriggerRepository};
use picloud_shared::{
    AppId, AppRole, AppSlug, CompileError, CredentialKind, SandboxCeiling, SandboxLimits, Scope,
    ScriptChangeObserver, ScriptId, ScriptValidator, TokenId, UserId, Username,
};
use picloud_shared::{FileLimits, RetryPolicy, ServiceSet};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

/// How many items a list holds in all, asserting the page holds them all (no
/// `next_cursor`): lists no longer count, so a test counts what it was given.
fn total(page: &Value) -> usize {
    assert!(page.get("next_cursor").is_none(), "{page}");
    page["items"].as_array().map_or(0, Vec::len)
}

/// The instance admin's password in every test app.
const ADMIN_PASSWORD: &str = "admin-password-1";
/// The password of every user a test adds.
const USER_PASSWORD: &str = "user-password-1";

/// Hashing is deliberately slow: users added by tests share one hash of [`USER_PASSWORD`].
static USER_PASSWORD_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password(USER_PASSWORD).unwrap());

/// Treats `@@` as a syntax error at its position; everything else compiles. The ceiling
/// allows at most 1,000,000 operations.
#[derive(Debug)]
struct StubValidator;

#[async_trait::async_trait]
impl ScriptValidator for StubValidator {
    async fn validate(&self, source: &str) -> Result<(), CompileError> {
        let Some(at) = source.find("@@") else {
            return Ok(());
        };
        let before = &source[..at];
        let line = before.matches('\n').count() + 1;
        let column = at - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
        Err(CompileError {
            message: "unexpected '@'".to_owned(),
            line: u32::try_from(line).unwrap(),
            column: u32::try_from(column).unwrap(),
        })
    }

    fn ceiling(&self) -> SandboxCeiling {
        SandboxCeiling::new(SandboxLimits {
            max_operations: 1_000_000,
            ..SandboxLimits::default()
        })
    }
}

/// Remembers every change it is told about.
#[derive(Debug, Default)]
struct RecordingObserver {
    changed: Mutex<Vec<ScriptId>>,
    apps_changed: Mutex<Vec<AppId>>,
}

impl ScriptChangeObserver for RecordingObserver {
    fn script_changed(&self, id: ScriptId) {
        self.changed.lock().unwrap().push(id);
    }

    fn app_changed(&self, id: AppId) {
        self.apps_changed.lock().unwrap().push(id);
    }
}

/// The files limits of every test app unless a test picks others: small, so that tests
/// can go past them quickly.
const TEST_FILE_LIMITS: FileLimits = FileLimits {
    max_file_bytes: 1024 * 1024,
    app_quota_bytes: 3 * 1024 * 1024,
};

/// A directory of its own under the system's temporary directory, removed with everything
/// in it when dropped.
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "picloud-admin-api-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a test app differs from a fresh instance with the defaults.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// Failed logins allowed per `window`.
    max_failures: u32,
    window: Duration,
    files: FileLimits,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(300),
            files: TEST_FILE_LIMITS,
        }
    }
}

/// A user a test added.
#[derive(Debug, Clone)]
struct TestUser {
    id: UserId,
}

/// The admin router over a database, with two observers to check that all are told.
struct TestApp {
    router: Router,
    observers: [Arc<RecordingObserver>; 2],
    users: Arc<PgUserRepository>,
    tokens: Arc<PgTokenRepository>,
    memberships: Arc<PgMembershipRepository>,
    /// Every event the KV and files services emitted.
    kv_events: Arc<RecordingEmitter>,
    /// Where the files service keeps the bytes (removed with the app).
    files_root: ScratchDir,
    apps: Arc<PgAppRepository>,
    admin: TestUser,
    admin_token: String,
}

/// What a request got back.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// The envelope's error code, asserting the envelope's shape on the way.
    fn code(&self) -> &str {
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        error["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap()
    }
}

/// Who a request is sent as.
#[derive(Clone, Copy)]
struct Caller<'a> {
    app: &'a TestApp,
    token: Option<&'a str>,
}

impl TestApp {
    /// A fresh instance: bootstrapped admin, the default login limits (5 failures per 5
    /// minutes).
    async fn new(pool: PgPool) -> Self {
        Self::with_setup(pool, Setup::default()).await
    }

    /// A fresh instance whose login limiter allows `max_failures` per `window`.
    async fn with_login_limits(pool: PgPool, max_failures: u32, window: Duration) -> Self {
        let setup = Setup {
            max_failures,
            window,
            ..Setup::default()
        };
        Self::with_setup(pool, setup).await
    }

    /// A fresh instance whose files service enforces `limits`.
    async fn with_file_limits(pool: PgPool, limits: FileLimits) -> Self {
        let setup = Setup {
            files: limits,
            ..Setup::default()
        };
        Self::with_setup(pool, setup).await
    }

    async fn with_setup(pool: PgPool, setup: Setup) -> Self {
        let Setup {
            max_failures,
            window,
            files: file_limits,
        } = setup;
        let users = Arc::new(PgUserRepository::new(pool.clone()));
        let tokens = Arc::new(PgTokenRepository::new(pool.clone()));
        let memberships = Arc::new(PgMembershipRepository::new(pool.clone()));
        let apps = Arc::new(PgAppRepository::new(pool.clone()));
        // A test may have bootstrapped the database itself; then this finds the admin.
        ensure_instance_admin(users.as_ref(), Some(ADMIN_PASSWORD.to_owned()))
            .await
            .unwrap();
        let (admin, _) = users
            .credentials(&Username::parse("admin").unwrap())
            .await
            .unwrap()
            .unwrap();
        let observers = [
            Arc::new(RecordingObserver::default()),
            Arc::new(RecordingObserver::default()),
        ];
        let kv_events = Arc::new(RecordingEmitter::default());
        let files_root = ScratchDir::new();
        let blobs = Arc::new(FsBlobStore::open(&files_root.0).unwrap());
        let state = AdminState::new(AdminDeps {
            apps: apps.clone(),
            scripts: Arc::new(PgScriptRepository::new(pool.clone())),
            executions: Arc::new(PgExecutionLogRepository::new(pool.clone())),
            users: users.clone(),
            tokens: tokens.clone(),
            memberships: memberships.clone(),
            services: ServiceSet {
                kv: Arc::new(PgKvService::new(pool.clone(), kv_events.clone())),
                files: Arc::new(PgFilesService::new(
                    pool.clone(),
                    kv_events.clone(),
                    blobs.clone(),
                    file_limits,
                )),
            },
            file_sweeper: Arc::new(FileSweeper::new(pool.clone(), blobs, Duration::ZERO)),
            triggers: Arc::new(PgTriggerRepository::new(pool.clone())),
            dead_letters: Arc::new(PgDeadLetterRepository::new(
                pool.clone(),
                OutboxSignal::spawn(pool.clone()),
            )),
            trigger_defaults: RetryPolicy::default(),
            authenticator: Arc::new(TokenAuthenticator::new(
                tokens.clone(),
                users.clone(),
                memberships.clone(),
            )),
            login: Arc::new(LoginDefences {
                limiter: LoginRateLimiter::new(max_failures, window),
                password_checks: PasswordChecks::new(4, PasswordChecks::DEFAULT_WAIT),
                trusted_proxies: TrustedProxies::loopback(),
            }),
            session_ttl: Duration::from_secs(12 * 3600),
            validator: Arc::new(StubValidator),
            observers: ScriptObservers::new(
                observers
                    .iter()
                    .map(|o| o.clone() as Arc<dyn ScriptChangeObserver>)
                    .collect(),
            ),
        });
        let mut app = Self {
            router: router(state),
            observers,
            users,
            tokens,
            memberships,
            kv_events,
            files_root,
            apps,
            admin: TestUser { id: admin.id },
            admin_token: String::new(),
        };
        app.admin_token = app.session(app.admin.id).await;
        app
    }

    /// The root of the files service's blob store.
    fn blob_root(&self) -> &Path {
        &self.files_root.0
    }

    /// What every observer was told about scripts, asserting they were all told the same.
    fn changed(&self) -> Vec<ScriptId> {
        let first = self.observers[0].changed.lock().unwrap().clone();
        let second = self.observers[1].changed.lock().unwrap().clone();
        assert_eq!(first, second, "observers were told different things");
        first
    }

    /// What every observer was told about apps, asserting they were all told the same.
    fn apps_changed(&self) -> Vec<AppId> {
        let first = self.observers[0].apps_changed.lock().unwrap().clone();
        let second = self.observers[1].apps_changed.lock().unwrap().clone();
        assert_eq!(first, second, "observers were told different things");
        first
    }

    /// Requests as the instance admin (through a login session).
    fn admin(&self) -> Caller<'_> {
        self.caller(&self.admin_token)
    }

    /// Requests with this bearer token.
    fn caller<'a>(&'a self, token: &'a str) -> Caller<'a> {
        Caller {
            app: self,
            token: Some(token),
        }
    }

    /// Requests without any credential.
    fn anonymous(&self) -> Caller<'_> {
        Caller {
            app: self,
            token: None,
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        self.admin().send(request).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.admin().get(uri).await
    }

    async fn delete(&self, uri: &str) -> Reply {
        self.admin().delete(uri).await
    }

    async fn json(&self, method: Method, uri: &str, body: &Value) -> Reply {
        self.admin().json(method, uri, body).await
    }

    async fn raw_json(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        self.admin().raw_json(method, uri, body).await
    }

    /// Logs in through the API, from no particular address.
    async fn login(&self, username: &str, password: &str) -> Reply {
        self.anonymous()
            .json(
                Method::POST,
                "/api/admin/auth/login",
                &serde_json::json!({ "username": username, "password": password }),
            )
            .await
    }

    /// Logs in through the API from `addr`, as a server with connection info sees it.
    async fn login_from(
        &self,
        addr: SocketAddr,
        headers: &[(&str, &str)],
        username: &str,
        password: &str,
    ) -> Reply {
        let mut request = Request::post("/api/admin/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({ "username": username, "password": password }).to_string(),
            ))
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        request.extensions_mut().insert(ConnectInfo(addr));
        self.anonymous().send(request).await
    }

    /// Creates a script in the default app as the admin, asserting it worked.
    async fn create(&self, name: &str, source: &str) -> Value {
        self.create_in("default", name, source).await
    }

    /// Creates a script in the app `slug` as the admin, asserting it worked.
    async fn create_in(&self, slug: &str, name: &str, source: &str) -> Value {
        let app_id = self.app_id(slug).await;
        let reply = self
            .json(
                Method::POST,
                "/api/admin/scripts",
                &serde_json::json!({ "name": name, "source": source, "app_id": app_id }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// The id of the app `slug` (the API addresses apps by id).
    async fn app_id(&self, slug: &str) -> AppId {
        self.apps
            .get_by_slug(&AppSlug::parse(slug).unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no app '{slug}'"))
            .id
    }

    /// Adds an app without members directly through the repository.
    async fn add_app(&self, slug: &str) -> AppId {
        self.apps
            .create(AppSlug::parse(slug).unwrap(), format!("App {slug}"), None)
            .await
            .unwrap()
            .id
    }

    /// Adds a user (password [`USER_PASSWORD`]) directly through the repository.
    async fn user(&self, username: &str, instance_admin: bool) -> TestUser {
        let user = self
            .users
            .create(NewUser {
                username: Username::parse(username).unwrap(),
                password_hash: USER_PASSWORD_HASH.clone(),
                instance_admin,
            })
            .await
            .unwrap();
        TestUser { id: user.id }
    }

    /// Adds a user holding `role` in `app`.
    async fn user_with_role(&self, username: &str, app: AppId, role: AppRole) -> TestUser {
        let user = self.user(username, false).await;
        self.memberships.set_role(app, user.id, role).await.unwrap();
        user
    }

    /// A login session's token for `user`, issued directly through the repository.
    async fn session(&self, user: UserId) -> String {
        self.issue(user, CredentialKind::Session, &Scope::ALL, None, None)
            .await
            .0
    }

    /// An API token of `user` with `scopes`, limited to `app` when given.
    async fn token(&self, user: UserId, scopes: &[Scope], app: Option<AppId>) -> String {
        self.issue(user, CredentialKind::ApiToken, scopes, app, None)
            .await
            .0
    }

    /// Issues a token through the repository; returns its secret and id.
    async fn issue(
        &self,
        user: UserId,
        kind: CredentialKind,
        scopes: &[Scope],
        app: Option<AppId>,
        expires_at: Option<DateTime<Utc>>,
    ) -> (String, TokenId) {
        let generated = generate_token();
        let token = self
            .tokens
            .create(NewToken {
                user_id: user,
                name: "test token".to_owned(),
                kind,
                scopes: scopes.iter().copied().collect(),
                app_id: app,
                secret_hash: generated.hash,
                prefix: generated.prefix,
                expires_at,
                parent_id: None,
            })
            .await
            .unwrap();
        (generated.secret, token.id)
    }
}

impl Caller<'_> {
    async fn send(&self, mut request: Request<Body>) -> Reply {
        if let Some(token) = self.token
            && !request.headers().contains_key(header::AUTHORIZATION)
        {
            request.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        let response = self.app.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("body is not JSON ({e}): {bytes:?}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn delete(&self, uri: &str) -> Reply {
        self.send(Request::delete(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn json(&self, method: Method, uri: &str, body: &Value) -> Reply {
        self.raw_json(method, uri, body.to_string()).await
    }

    async fn raw_json(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        self.send(request).await
    }
}

fn script_id(script: &Value) -> ScriptId {
    script["id"].as_str().unwrap().parse().unwrap()
}

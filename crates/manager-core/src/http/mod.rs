//! The admin API at `/api/admin`: a router per resource, composed in [`router`].
//!
//! Every route but logging in and the OpenAPI document sits behind one guard that
//! authenticates the bearer token; handlers then check a capability through
//! `Auth::require`, so access is decided the same way everywhere.

pub(crate) mod error;
pub(crate) mod extract;
mod openapi;
mod page;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::from_fn_with_state;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use openapi::ApiDoc;
pub use page::{Page, PageQuery};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use picloud_shared::{Authenticator, RetryPolicy, ScriptValidator, ServiceSet};

use self::error::ApiError;
use crate::access::{
    AccessState, LoginDefences, MembershipRepository, MembershipService, TokenRepository,
    UserRepository, UserService, auth, members, tokens, users,
};
use crate::apps::{self, AppRepository, AppService, AppsState};
use crate::config::ManagerConfig;
use crate::dead_letters::{self, DeadLetterRepository, DeadLettersState};
use crate::executions::{self, ExecutionLogRepository, ExecutionsState};
use crate::files::{self, FileSweeper, FilesState};
use crate::kv::{self, KvState};
use crate::scripts::{self, ScriptObservers, ScriptRepository, ScriptService, ScriptsState};
use crate::triggers::{self, TriggerRepository, TriggerService, TriggersState};

/// What the admin API works with: one state per feature, each holding only what its
/// routes need. A handler takes its feature's state (axum's `FromRef`), so a new service
/// adds a field here and touches no other feature.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Users, tokens, memberships, authentication and login limits.
    pub access: AccessState,
    /// Apps.
    pub apps: AppsState,
    /// Scripts.
    pub scripts: ScriptsState,
    /// Execution records.
    pub executions: ExecutionsState,
    /// Apps' KV entries.
    pub kv: KvState,
    /// Apps' files and the file sweep.
    pub files: FilesState,
    /// Triggers.
    pub triggers: TriggersState,
    /// Dead letters.
    pub dead_letters: DeadLettersState,
}

/// Everything the admin API is built from: the stores and services the binary chose.
pub struct AdminDeps {
    /// Apps.
    pub apps: Arc<dyn AppRepository>,
    /// Scripts.
    pub scripts: Arc<dyn ScriptRepository>,
    /// Execution records.
    pub executions: Arc<dyn ExecutionLogRepository>,
    /// Users.
    pub users: Arc<dyn UserRepository>,
    /// Login sessions and API tokens.
    pub tokens: Arc<dyn TokenRepository>,
    /// Who belongs to which app.
    pub memberships: Arc<dyn MembershipRepository>,
    /// The script-facing services the admin API also serves (the KV browser, files).
    pub services: ServiceSet,
    /// The file sweep, whose report the admin API shows and which it can run on request.
    pub file_sweeper: Arc<FileSweeper>,
    /// Triggers.
    pub triggers: Arc<dyn TriggerRepository>,
    /// Dead letters.
    pub dead_letters: Arc<dyn DeadLetterRepository>,
    /// The retry policy of triggers created without one (`TriggerConfig::retry`).
    pub trigger_defaults: RetryPolicy,
    /// Turns the bearer token of every protected request into its principal.
    pub authenticator: Arc<dyn Authenticator>,
    /// The login limiter, the password-check bound and the trusted proxies.
    pub login: Arc<LoginDefences>,
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// Compiles sources and holds the sandbox ceiling limits are checked against.
    pub validator: Arc<dyn ScriptValidator>,
    /// Told of every committed change to scripts and apps (caches of compiled code and
    /// lookups).
    pub observers: ScriptObservers,
}

impl fmt::Debug for AdminDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminDeps").finish_non_exhaustive()
    }
}

impl AdminState {
    /// Each feature's state, from `deps`.
    pub fn new(deps: AdminDeps) -> Self {
        let AdminDeps {
            apps,
            scripts,
            executions,
            users,
            tokens,
            memberships,
            services,
            file_sweeper,
            triggers,
            dead_letters,
            trigger_defaults,
            authenticator,
            login,
            session_ttl,
            validator,
            observers,
        } = deps;
        Self {
            access: AccessState {
                users: UserService::new(users, tokens.clone()),
                tokens,
                memberships: MembershipService::new(memberships),
                apps: apps.clone(),
                authenticator,
                login,
                session_ttl,
            },
            apps: AppsState {
                apps: AppService::new(apps.clone(), observers.clone()),
                scripts: scripts.clone(),
            },
            scripts: ScriptsState {
                scripts: ScriptService::new(scripts.clone(), validator, observers),
                apps: apps.clone(),
            },
            executions: ExecutionsState {
                executions,
                scripts: scripts.clone(),
            },
            kv: KvState {
                kv: services.kv,
                apps: apps.clone(),
            },
            files: FilesState {
                files: services.files,
                apps: apps.clone(),
                sweeper: file_sweeper,
            },
            triggers: TriggersState {
                triggers: TriggerService::new(triggers, scripts, trigger_defaults),
                apps: apps.clone(),
            },
            dead_letters: DeadLettersState { dead_letters, apps },
        }
    }
}

/// Lets a handler extract its feature's part of [`AdminState`].
macro_rules! feature_states {
    ($($field:ident: $state:ty),* $(,)?) => {
        $(
            impl FromRef<AdminState> for $state {
                fn from_ref(state: &AdminState) -> Self {
                    state.$field.clone()
                }
            }
        )*
    };
}

/// Feature states print as their name only: they hold stores and services, nothing worth
/// a log line.
macro_rules! debug_by_name {
    ($($state:ty),* $(,)?) => {
        $(
            impl fmt::Debug for $state {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct(stringify!($state)).finish_non_exhaustive()
                }
            }
        )*
    };
}

debug_by_name!(
    AppsState,
    ScriptsState,
    ExecutionsState,
    KvState,
    FilesState,
    TriggersState,
    DeadLettersState,
);

feature_states!(
    access: AccessState,
    apps: AppsState,
    scripts: ScriptsState,
    executions: ExecutionsState,
    kv: KvState,
    files: FilesState,
    triggers: TriggersState,
    dead_letters: DeadLettersState,
);

/// 201 with the new resource's URL (`/api/admin/<collection>/<id>`) and the resource.
pub(crate) fn created<T: serde::Serialize>(
    collection: &str,
    id: impl fmt::Display,
    body: T,
) -> (StatusCode, [(HeaderName, String); 1], axum::Json<T>) {
    let location = format!("/api/admin/{collection}/{id}");
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
}

/// The admin API with the default 1 MiB body limit, at `/api/admin/...`, ready to be
/// merged into the binary's router.
pub fn router(state: AdminState) -> Router {
    router_with_body_limit(state, ManagerConfig::DEFAULT_ADMIN_MAX_BODY_BYTES)
}

/// Every protected route of the admin API with its OpenAPI operation: one list, so a route
/// cannot exist undocumented (nor be documented without existing).
fn protected_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .merge(scripts::http::routes())
        .merge(executions::http::routes())
        .merge(apps::http::routes())
        .merge(members::http::routes())
        .merge(kv::http::routes())
        .merge(files::http::routes())
        .merge(triggers::http::routes())
        .merge(dead_letters::http::routes())
        .merge(users::http::routes())
        .merge(tokens::http::routes())
        .merge(auth::routes())
}

/// The routes anyone may call: logging in and this API's OpenAPI document.
fn public_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .merge(auth::public_routes())
        .merge(openapi::routes())
}

/// The admin API's OpenAPI document, built from the very routes [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/admin", protected_routes().merge(public_routes()))
        .split_for_parts();
    openapi::finish(doc)
}

/// The admin API answering 413 `payload_too_large` to bodies over `max_body_bytes`.
///
/// The server should put the peer's `ConnectInfo<SocketAddr>` in each request's
/// extensions (the `picloud` binary's server does), so that failed logins are counted per
/// client address.
pub fn router_with_body_limit(state: AdminState, max_body_bytes: usize) -> Router {
    let (api, _) = protected_routes()
        // Every protected route, and only those, needs a valid bearer token.
        .route_layer(from_fn_with_state(
            state.access.clone(),
            auth::require_principal,
        ))
        .merge(public_routes())
        .split_for_parts();
    let api = api
        // Set after the routes exist: it applies to the routes registered so far.
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(|| async { ApiError::no_route() })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state);
    Router::new().nest("/api/admin", api)
}

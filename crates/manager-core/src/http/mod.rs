//! The admin API at `/api/admin`: a router per resource, composed in [`router`].
//!
//! Every route but logging in and the OpenAPI document sits behind one guard that
//! authenticates the bearer token; handlers then check a capability through
//! `Auth::require`, so access is decided the same way everywhere.

pub(crate) mod error;
pub(crate) mod extract;
mod openapi;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use picloud_shared::{
    AppId, Authenticator, KvService, RetryPolicy, Script, ScriptChangeObserver, ScriptId,
    ScriptValidator,
};

pub use openapi::ApiDoc;

use self::error::ApiError;
use crate::access::{
    LoginRateLimiter, MembershipRepository, TokenRepository, UserRepository, auth, members, tokens,
    users,
};
use crate::apps::{self, AppRepository};
use crate::config::ManagerConfig;
use crate::dead_letters::{self, DeadLetterRepository};
use crate::executions::{self, ExecutionLogRepository};
use crate::kv;
use crate::scripts::{self, ScriptRepository};
use crate::triggers::{self, TriggerRepository};

/// What the admin handlers work with.
#[derive(Clone)]
pub struct AdminState {
    /// Script storage.
    pub scripts: Arc<dyn ScriptRepository>,
    /// Apps.
    pub apps: Arc<dyn AppRepository>,
    /// Execution records.
    pub executions: Arc<dyn ExecutionLogRepository>,
    /// Users.
    pub users: Arc<dyn UserRepository>,
    /// Login sessions and API tokens.
    pub tokens: Arc<dyn TokenRepository>,
    /// Who belongs to which app.
    pub memberships: Arc<dyn MembershipRepository>,
    /// Apps' KV entries (the KV browser reads and changes them as the caller).
    pub kv: Arc<dyn KvService>,
    /// Triggers.
    pub triggers: Arc<dyn TriggerRepository>,
    /// Dead letters.
    pub dead_letters: Arc<dyn DeadLetterRepository>,
    /// The retry policy of triggers created without one (`TriggerConfig::retry`).
    pub trigger_defaults: RetryPolicy,
    /// Turns the bearer token of every protected request into its principal.
    pub authenticator: Arc<dyn Authenticator>,
    /// Counts failed logins per username and client address.
    pub login_limiter: Arc<LoginRateLimiter>,
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// Compiles sources and holds the sandbox ceiling limits are checked against.
    pub validator: Arc<dyn ScriptValidator>,
    /// Told after a script is updated or deleted, and after an app is renamed or deleted
    /// (caches of compiled code and lookups).
    pub observers: Vec<Arc<dyn ScriptChangeObserver>>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("session_ttl", &self.session_ttl)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Tells every observer that a script changed; called only after the change committed.
    pub(crate) fn notify(&self, id: ScriptId) {
        for observer in &self.observers {
            observer.script_changed(id);
        }
    }

    /// Tells every observer that a script was created or updated; called only after the
    /// change committed (after [`Self::notify`] for an update).
    pub(crate) fn notify_saved(&self, script: &Script) {
        for observer in &self.observers {
            observer.script_saved(script);
        }
    }

    /// Tells every observer that an app was renamed or deleted; called only after the
    /// change committed.
    pub(crate) fn notify_app(&self, id: AppId) {
        for observer in &self.observers {
            observer.app_changed(id);
        }
    }
}

/// Page size when the request names none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page a request may ask for.
const MAX_PAGE_SIZE: u32 = 200;

/// The page size a list request asked for: 400 `invalid_query` outside 1..=200.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if (1..=MAX_PAGE_SIZE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        )))
    }
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
/// The binary should serve it with `into_make_service_with_connect_info::<SocketAddr>()`,
/// so that failed logins are counted per client address.
pub fn router_with_body_limit(state: AdminState, max_body_bytes: usize) -> Router {
    let (api, _) = protected_routes()
        // Every protected route, and only those, needs a valid bearer token.
        .route_layer(from_fn_with_state(state.clone(), auth::require_principal))
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

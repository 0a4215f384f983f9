//! The admin REST API at `/api/admin`: a router per resource, composed in [`router`].

mod error;
mod executions;
mod extract;
mod openapi;
mod scripts;

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use picloud_shared::{ScriptChangeObserver, ScriptId, ScriptValidator};

pub use error::{ValidationErrorBody, ValidationErrorEnvelope};
pub use executions::{ExecutionPage, ListExecutionsQuery};
pub use openapi::ApiDoc;
pub use scripts::{
    CreateScriptRequest, ListScriptsQuery, MAX_SOURCE_BYTES, ScriptPage, ScriptSummaryView,
    ScriptView, UpdateScriptRequest,
};

use self::error::ApiError;
use crate::config::ManagerConfig;
use crate::repo::{AppRepository, ExecutionLogRepository, ScriptRepository};

/// What the admin handlers work with.
#[derive(Clone)]
pub struct AdminState {
    /// Script storage.
    pub scripts: Arc<dyn ScriptRepository>,
    /// App lookups.
    pub apps: Arc<dyn AppRepository>,
    /// Execution records.
    pub executions: Arc<dyn ExecutionLogRepository>,
    /// Compiles sources and holds the sandbox ceiling limits are checked against.
    pub validator: Arc<dyn ScriptValidator>,
    /// Told after a script is updated or deleted (caches of compiled code and lookups).
    pub observers: Vec<Arc<dyn ScriptChangeObserver>>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Tells every observer that a script changed; called only after the change committed.
    fn notify(&self, id: ScriptId) {
        for observer in &self.observers {
            observer.script_changed(id);
        }
    }
}

/// The admin API with the default 1 MiB body limit, at `/api/admin/...`, ready to be
/// merged into the binary's router.
pub fn router(state: AdminState) -> Router {
    router_with_body_limit(state, ManagerConfig::DEFAULT_ADMIN_MAX_BODY_BYTES)
}

/// The admin API answering 413 `payload_too_large` to bodies over `max_body_bytes`.
pub fn router_with_body_limit(state: AdminState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .merge(scripts::routes())
        .merge(executions::routes())
        .merge(openapi::routes())
        // Set after the routes exist: it applies to the routes registered so far.
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(|| async { ApiError::no_route() })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state);
    Router::new().nest("/api/admin", api)
}

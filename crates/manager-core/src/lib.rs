//! PiCloud's control plane: the database schema ([`MIGRATOR`]) and one folder per feature
//! (`access`, `apps`, `scripts`, `executions`, `kv`, `triggers`, `outbox`,
//! `dead_letters`), each holding its types and repository trait, its PostgreSQL and
//! in-memory (`testsuite` feature) implementations and its admin routes; `http` composes
//! the routes into the admin REST API mounted at `/api/admin`. The routes, the auth guard
//! and everything else HTTP sit behind the `admin-api` feature (on by default), so a node
//! that only needs the PostgreSQL implementations links no axum or utoipa.
//!
//! Nothing here reads the process environment or opens a pool: the binaries do that and
//! hand in what this crate needs.

pub mod access;
pub mod apps;
pub mod config;
mod db;
pub mod dead_letters;
pub mod executions;
pub mod files;
#[cfg(feature = "admin-api")]
pub mod http;
pub mod kv;
#[cfg(feature = "testsuite")]
pub mod memory;
pub mod outbox;
pub mod repository;
pub mod retention;
pub mod scripts;
pub mod triggers;

use picloud_shared::AppId;
use uuid::Uuid;

pub use access::{Bootstrap, BootstrapError, TokenAuthenticator, ensure_instance_admin};
pub use apps::{App, AppRepository};
pub use config::ManagerConfig;
pub use executions::{
    BatchingExecutionRecorder, ExecutionCursor, ExecutionLogRepository, RecorderHandle,
    RecorderOptions,
};
#[cfg(feature = "admin-api")]
pub use http::{AdminDeps, AdminState, router, router_with_body_limit};
pub use outbox::{OutboxSignal, PgOutboxWaker};
pub use repository::{RepoError, RepoResult};
pub use retention::{
    EventRetention, EventsPruned, PrunerHandle, spawn_event_retention_pruner,
    spawn_retention_pruner,
};
pub use scripts::{
    CachedScriptResolver, ListScripts, NewScript, ScriptRepository, ScriptSummary, ScriptUpdate,
};

/// The schema, embedded from the top-level `migrations/` directory.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The id of the `default` app every instance starts with (inserted by the first migration).
pub const DEFAULT_APP_ID: AppId = AppId::from_uuid(Uuid::from_u128(1));

/// An error and its sources as one line (`outer: inner: root`), for log fields: the
/// `Display` of a wrapping error alone often hides the cause.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

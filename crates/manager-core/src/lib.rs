//! PiCloud's control plane: the database schema ([`MIGRATOR`]), the repositories over it
//! (PostgreSQL, and in-memory ones behind the `testsuite` feature), the batching
//! execution-record writer and its retention pruner, the cached script resolver the data
//! plane looks scripts up through, and the admin REST API mounted at `/api/admin`.
//!
//! Nothing here reads the process environment or opens a pool: the binaries do that and
//! hand in what this crate needs.

pub mod authenticator;
pub mod bootstrap;
pub mod config;
pub mod events;
pub mod http;
#[cfg(feature = "testsuite")]
pub mod memory;
pub mod outbox_waker;
pub mod postgres;
pub mod recorder;
pub mod repo;
pub mod resolver;
pub mod retention;
pub mod secrets;

use picloud_shared::AppId;
use uuid::Uuid;

pub use authenticator::TokenAuthenticator;
pub use bootstrap::{Bootstrap, BootstrapError, ensure_instance_admin};
pub use config::ManagerConfig;
pub use http::{AdminState, router, router_with_body_limit};
pub use outbox_waker::{OutboxSignal, PgOutboxWaker};
pub use recorder::{BatchingExecutionRecorder, RecorderHandle, RecorderOptions};
pub use repo::{
    App, AppRepository, ExecutionCursor, ExecutionLogRepository, ListScripts, NewScript, Page,
    RepoError, RepoResult, ScriptRepository, ScriptSummary, ScriptUpdate,
};
pub use resolver::CachedScriptResolver;
pub use retention::{
    EventRetention, EventsPruned, PrunerHandle, spawn_event_retention_pruner,
    spawn_retention_pruner,
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

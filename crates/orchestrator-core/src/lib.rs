//! PiCloud's data plane: the execute endpoints in front of the executor.
//!
//! `ANY /api/execute/{script_id}[/{*path}]` and `ANY /api/run/{app}/{script}[/{*path}]` resolve
//! a script through [`ScriptResolver`](picloud_shared::ScriptResolver), run it through
//! [`ExecutorClient`](picloud_shared::ExecutorClient) and hand the record to an
//! [`ExecutionRecorder`](picloud_shared::ExecutionRecorder), which writes it later: no database
//! write sits on the request's path.
//!
//! The outbox [`Dispatcher`] is the same data plane driven by events instead of requests:
//! it claims due outbox rows, runs each trigger's script with the event as `ctx.event`,
//! and retries, dead-letters or completes each one.

/// Logs a finished run: at `debug` when it succeeded, since its execution record says
/// as much and a line per run would cost a quarter of a short script's CPU (and, on a
/// Pi, an SD-card write through the journal); at `info` when it did not.
macro_rules! log_finished_run {
    ($status:expr, $($fields:tt)+) => {
        if $status == picloud_shared::ExecutionStatus::Success {
            tracing::debug!($($fields)+);
        } else {
            tracing::info!($($fields)+);
        }
    };
}

mod config;
mod dispatcher;
mod error;
mod execute;
mod request_id;

pub use config::OrchestratorConfig;
pub use dispatcher::{
    Dispatcher, DispatcherConfig, DispatcherDeps, DispatcherHandle, SAFETY_RECHECK,
};
pub use error::ApiError;
pub use execute::{EXECUTION_ID_HEADER, OrchestratorState, SCRIPT_RESPONSE_POLICY, router};
pub use request_id::{REQUEST_ID_HEADER, propagate_request_id};

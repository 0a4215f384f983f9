//! The trait seams between layers. Each is narrow, named for its role, `Send + Sync`, and
//! held as `Arc<dyn …>` by whoever uses it; only the binaries choose implementations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{
    AppId, AppSlug, ExecutionRecord, ExecutionReport, ExecutionRequest, SandboxCeiling, Script,
    ScriptId, ScriptName,
};

/// A compile error with its position, as the admin API reports it (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct CompileError {
    /// What the compiler said.
    pub message: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// Checks that a script compiles, without the caller linking the engine: the manager holds
/// one of these, implemented by the executor. Validation is async because in cluster mode
/// it is a call to a remote executor, which must not hold a runtime thread while it waits.
#[async_trait]
pub trait ScriptValidator: Send + Sync {
    /// Compiles `source` and reports the first error with its position.
    async fn validate(&self, source: &str) -> Result<(), CompileError>;

    /// The instance ceiling per-script limits are checked against.
    fn ceiling(&self) -> SandboxCeiling;
}

/// Runs scripts. In-process today (`LocalExecutorClient`); over HTTP in cluster mode.
#[async_trait]
pub trait ExecutorClient: Send + Sync {
    /// Runs one script to completion (or to its limits) and reports how it went.
    async fn execute(&self, request: ExecutionRequest) -> ExecutionReport;

    /// Runs `requests` one after another, each under its own limits, and reports each in
    /// order. A request not started within `start_within` of the call is not run at all:
    /// its report is `None` (`Some(Duration::ZERO)` runs none). The budget is relative
    /// because a remote executor cannot read the caller's clock. An executor may run a
    /// whole batch in one execution slot on one thread, handing over once for all of them
    /// (the in-process one does), which is what lets a dispatcher work off a queue of
    /// triggered events without a thread hand-over per event; this default runs each
    /// through [`Self::execute`].
    async fn execute_batch(
        &self,
        requests: Vec<ExecutionRequest>,
        start_within: Option<Duration>,
    ) -> Vec<Option<ExecutionReport>> {
        execute_each(self, requests, start_within).await
    }
}

/// Runs `requests` one at a time through [`ExecutorClient::execute`], skipping those not
/// started within `start_within` of the call: the default [`ExecutorClient::execute_batch`],
/// for executors that gain nothing from running a batch together.
pub async fn execute_each<E: ExecutorClient + ?Sized>(
    executor: &E,
    requests: Vec<ExecutionRequest>,
    start_within: Option<Duration>,
) -> Vec<Option<ExecutionReport>> {
    let called = Instant::now();
    let mut reports = Vec::with_capacity(requests.len());
    for request in requests {
        if too_late(called, start_within) {
            reports.push(None);
        } else {
            reports.push(Some(executor.execute(request).await));
        }
    }
    reports
}

/// Whether a request of a batch called at `called` may no longer start: its budget, if it
/// has one, is used up.
pub fn too_late(called: Instant, start_within: Option<Duration>) -> bool {
    start_within.is_some_and(|budget| called.elapsed() >= budget)
}

/// The script store could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("script lookup unavailable: {0}")]
pub struct ResolveError(pub String);

/// Finds the script an execute request names. Implementations cache: this is on every
/// request's path.
#[async_trait]
pub trait ScriptResolver: Send + Sync {
    /// The current version of a script by id, `None` when there is no such script.
    async fn by_id(&self, id: ScriptId) -> Result<Option<Arc<Script>>, ResolveError>;

    /// The current version of a script by its app's slug and its name.
    async fn by_name(
        &self,
        app: &AppSlug,
        name: &ScriptName,
    ) -> Result<Option<Arc<Script>>, ResolveError>;
}

/// Takes execution records for writing later, in batches, so that no database write sits
/// on a request's critical path.
#[async_trait]
pub trait ExecutionRecorder: Send + Sync {
    /// Queues a record. Waits only for buffer space, never for the database.
    async fn record(&self, record: ExecutionRecord);
}

/// Told when a script changes or goes away, so caches keyed on it drop their entries.
pub trait ScriptChangeObserver: Send + Sync {
    /// The script was updated or deleted.
    fn script_changed(&self, id: ScriptId);

    /// The script was created or updated and the change committed: a cache may take this
    /// version now, so the first call after an upload does not wait for a lookup.
    fn script_saved(&self, _script: &Script) {}

    /// The app was renamed or deleted: entries looked up through its slug are stale.
    /// Caches keyed by script id alone need not care.
    fn app_changed(&self, _id: AppId) {}
}

//! The execution log: one record per run, written in batches, read newest first, pruned by
//! age.

#[cfg(feature = "admin-api")]
pub(crate) mod http;
#[cfg(feature = "testsuite")]
mod memory;
mod pg;
pub mod recorder;

#[cfg(feature = "admin-api")]
pub use http::ExecutionsState;
#[cfg(feature = "testsuite")]
pub use memory::InMemoryExecutionLogRepository;
pub use pg::PgExecutionLogRepository;
pub use recorder::{BatchingExecutionRecorder, RecorderHandle, RecorderOptions};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::{ExecutionId, ExecutionRecord, ScriptId};

use crate::repository::RepoResult;

/// A position in a script's newest-first execution list: the page continues with runs
/// strictly older than this one (by start time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionCursor {
    /// When the last run seen started.
    pub started_at: DateTime<Utc>,
    /// Its id, which breaks ties between runs that started at the same instant.
    pub id: ExecutionId,
}

impl From<&ExecutionRecord> for ExecutionCursor {
    fn from(record: &ExecutionRecord) -> Self {
        Self {
            started_at: record.started_at,
            id: record.id,
        }
    }
}

/// Stores execution records.
#[async_trait]
pub trait ExecutionLogRepository: Send + Sync {
    /// Writes all `records` at once. Idempotent on the record id: a record already stored
    /// (a retried batch) is skipped. Returns how many were newly written.
    async fn insert_batch(&self, records: &[ExecutionRecord]) -> RepoResult<u64>;

    /// Up to `limit` runs of a script, newest first, starting after `before` when given.
    async fn list_for_script(
        &self,
        script: ScriptId,
        limit: u32,
        before: Option<ExecutionCursor>,
    ) -> RepoResult<Vec<ExecutionRecord>>;

    /// One run by id, `None` when there is none.
    async fn get(&self, id: ExecutionId) -> RepoResult<Option<ExecutionRecord>>;

    /// Deletes runs that started before `cutoff`. Returns how many were deleted.
    async fn prune_older_than(&self, cutoff: DateTime<Utc>) -> RepoResult<u64>;
}

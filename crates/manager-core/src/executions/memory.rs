//! [`ExecutionLogRepository`] in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use picloud_shared::{ExecutionId, ExecutionRecord, ScriptId};

use crate::memory::lock;
use crate::{
    executions::{ExecutionCursor, ExecutionLogRepository},
    repository::RepoResult,
};

/// Execution records held in a map.
#[derive(Debug, Default)]
pub struct InMemoryExecutionLogRepository {
    records: Mutex<HashMap<ExecutionId, ExecutionRecord>>,
}

impl InMemoryExecutionLogRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records are stored.
    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ExecutionLogRepository for InMemoryExecutionLogRepository {
    async fn insert_batch(&self, records: &[ExecutionRecord]) -> RepoResult<u64> {
        let mut stored = lock(&self.records);
        let mut written = 0;
        for record in records {
            if stored.contains_key(&record.id) {
                continue;
            }
            let mut record = record.clone();
            // PostgreSQL keeps microseconds; keep the two implementations interchangeable.
            record.started_at = record.started_at.trunc_subsecs(6);
            stored.insert(record.id, record);
            written += 1;
        }
        Ok(written)
    }

    async fn list_for_script(
        &self,
        script: ScriptId,
        limit: u32,
        before: Option<ExecutionCursor>,
    ) -> RepoResult<Vec<ExecutionRecord>> {
        let stored = lock(&self.records);
        let mut runs: Vec<&ExecutionRecord> = stored
            .values()
            .filter(|r| r.script_id == script)
            .filter(|r| before.is_none_or(|c| (r.started_at, r.id) < (c.started_at, c.id)))
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse((r.started_at, r.id)));
        Ok(runs
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn get(&self, id: ExecutionId) -> RepoResult<Option<ExecutionRecord>> {
        Ok(lock(&self.records).get(&id).cloned())
    }

    async fn prune_older_than(&self, cutoff: DateTime<Utc>) -> RepoResult<u64> {
        let mut stored = lock(&self.records);
        let before = stored.len();
        stored.retain(|_, r| r.started_at >= cutoff);
        Ok(u64::try_from(before - stored.len()).unwrap_or(u64::MAX))
    }
}

//! Retention of execution records: a task that prunes once at start, then sleeps an hour
//! between prunes. An hourly delete is cheap and keeps the table near its retention size
//! without any short polling.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;

use crate::error_chain;
use crate::repo::{ExecutionLogRepository, RepoResult};

/// Time between two prunes.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Controls the task started by [`spawn_retention_pruner`].
#[derive(Debug)]
pub struct PrunerHandle {
    task: JoinHandle<()>,
}

impl PrunerHandle {
    /// Stops the pruner. A prune in progress is abandoned; its delete is a single
    /// statement, so it either committed or did nothing.
    pub async fn shutdown(self) {
        self.task.abort();
        // Cancellation is the expected outcome; only a panic is worth reporting.
        if let Err(err) = self.task.await
            && err.is_panic()
        {
            tracing::error!(error = %err, "retention pruner task failed");
        }
    }
}

/// Starts pruning records older than `retention` now and every [`PRUNE_INTERVAL`] after.
/// Must be called inside a tokio runtime.
pub fn spawn_retention_pruner(
    repo: Arc<dyn ExecutionLogRepository>,
    retention: Duration,
) -> PrunerHandle {
    let task = tokio::spawn(async move {
        loop {
            match prune_once(repo.as_ref(), retention, Utc::now()).await {
                Ok(deleted) => tracing::info!(deleted, "pruned old execution records"),
                // The next round retries; one failed prune only delays the cleanup.
                Err(err) => {
                    tracing::error!(error = %error_chain(&err), "pruning execution records failed")
                }
            }
            tokio::time::sleep(PRUNE_INTERVAL).await;
        }
    });
    PrunerHandle { task }
}

/// Deletes records that started more than `retention` before `now`; returns how many.
pub async fn prune_once(
    repo: &dyn ExecutionLogRepository,
    retention: Duration,
    now: DateTime<Utc>,
) -> RepoResult<u64> {
    let cutoff = TimeDelta::from_std(retention)
        .ok()
        .and_then(|age| now.checked_sub_signed(age));
    match cutoff {
        Some(cutoff) => repo.prune_older_than(cutoff).await,
        // A retention reaching before the representable past keeps everything.
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use picloud_shared::{
        AppId, ExecutionId, ExecutionRecord, ExecutionStatus, InvocationType, RequestId, ScriptId,
    };

    use super::*;
    use crate::memory::InMemoryExecutionLogRepository;

    fn started(at: DateTime<Utc>) -> ExecutionRecord {
        ExecutionRecord {
            id: ExecutionId::new(),
            script_id: ScriptId::new(),
            app_id: AppId::new(),
            script_version: 1,
            invocation_type: InvocationType::Http,
            request_id: RequestId::generate(),
            status: ExecutionStatus::Success,
            http_status: Some(200),
            duration_ms: 1,
            logs: Vec::new(),
            error: None,
            started_at: at,
        }
    }

    #[tokio::test]
    async fn prune_once_keeps_records_inside_the_retention() {
        let repo = InMemoryExecutionLogRepository::new();
        let now = Utc::now();
        let old = started(now - TimeDelta::days(8));
        let recent = started(now - TimeDelta::days(6));
        repo.insert_batch(&[old.clone(), recent.clone()])
            .await
            .unwrap();

        let deleted = prune_once(&repo, Duration::from_secs(7 * 86_400), now)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        assert!(repo.get(old.id).await.unwrap().is_none());
        assert!(repo.get(recent.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_unrepresentable_retention_keeps_everything() {
        let repo = InMemoryExecutionLogRepository::new();
        repo.insert_batch(&[started(DateTime::<Utc>::MIN_UTC)])
            .await
            .unwrap();
        let deleted = prune_once(&repo, Duration::MAX, Utc::now()).await.unwrap();
        assert_eq!(deleted, 0);
        assert_eq!(repo.len(), 1);
    }

    #[tokio::test]
    async fn the_pruner_prunes_as_soon_as_it_starts() {
        let repo = Arc::new(InMemoryExecutionLogRepository::new());
        repo.insert_batch(&[started(Utc::now() - TimeDelta::days(30))])
            .await
            .unwrap();

        let handle = spawn_retention_pruner(repo.clone(), Duration::from_secs(86_400));
        let pruned = tokio::time::timeout(Duration::from_secs(5), async {
            while !repo.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        handle.shutdown().await;
        assert!(pruned.is_ok(), "the old record was not pruned at start");
    }
}

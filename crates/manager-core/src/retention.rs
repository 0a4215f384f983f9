//! Retention of execution records, and of the event core's leftovers (resolved dead
//! letters, abandoned synchronous results): tasks that prune once at start, then sleep an
//! hour between prunes. An hourly delete is cheap and keeps the tables near their retention
//! size without any short polling.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;

use crate::error_chain;
use crate::{
    dead_letters::{AbandonedExecutionRepository, DeadLetterRepository},
    executions::ExecutionLogRepository,
    repository::RepoResult,
};

/// Time between two prunes.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Controls the task started by [`spawn_retention_pruner`].
#[derive(Debug)]
pub struct PrunerHandle {
    task: JoinHandle<()>,
}

impl PrunerHandle {
    /// The handle of a background task of this crate that runs until shut down.
    pub(crate) fn new(task: JoinHandle<()>) -> Self {
        Self { task }
    }

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
    match cutoff(retention, now) {
        Some(cutoff) => repo.prune_older_than(cutoff).await,
        // A retention reaching before the representable past keeps everything.
        None => Ok(0),
    }
}

/// `now - retention`, `None` when that is before the representable past.
fn cutoff(retention: Duration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    TimeDelta::from_std(retention)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
}

/// What the event-core pruner keeps, and for how long.
#[derive(Clone)]
pub struct EventRetention {
    /// Dead letters; only resolved ones are ever pruned.
    pub dead_letters: Arc<dyn DeadLetterRepository>,
    /// How long resolved dead letters stay (`PICLOUD_DEAD_LETTER_RETENTION_DAYS`).
    pub dead_letter_retention: Duration,
    /// Abandoned synchronous results.
    pub abandoned: Arc<dyn AbandonedExecutionRepository>,
    /// How long they stay (`PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS`).
    pub abandoned_retention: Duration,
}

impl std::fmt::Debug for EventRetention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRetention")
            .field("dead_letter_retention", &self.dead_letter_retention)
            .field("abandoned_retention", &self.abandoned_retention)
            .finish_non_exhaustive()
    }
}

/// How many rows one event-core prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsPruned {
    /// Resolved dead letters.
    pub dead_letters: u64,
    /// Abandoned results.
    pub abandoned: u64,
}

/// Deletes dead letters resolved more than their retention before `now`, and abandoned
/// results older than theirs. Unresolved dead letters are never deleted: they wait for
/// someone to look at them.
pub async fn prune_events_once(
    retention: &EventRetention,
    now: DateTime<Utc>,
) -> RepoResult<EventsPruned> {
    let dead_letters = match cutoff(retention.dead_letter_retention, now) {
        Some(cutoff) => retention.dead_letters.prune_resolved_before(cutoff).await?,
        None => 0,
    };
    let abandoned = match cutoff(retention.abandoned_retention, now) {
        Some(cutoff) => retention.abandoned.prune_before(cutoff).await?,
        None => 0,
    };
    Ok(EventsPruned {
        dead_letters,
        abandoned,
    })
}

/// Starts pruning the event core's leftovers now and every [`PRUNE_INTERVAL`] after.
/// Must be called inside a tokio runtime.
pub fn spawn_event_retention_pruner(retention: EventRetention) -> PrunerHandle {
    let task = tokio::spawn(async move {
        loop {
            match prune_events_once(&retention, Utc::now()).await {
                Ok(pruned) => tracing::info!(
                    dead_letters = pruned.dead_letters,
                    abandoned_executions = pruned.abandoned,
                    "pruned resolved dead letters and abandoned results"
                ),
                // The next round retries; one failed prune only delays the cleanup.
                Err(err) => tracing::error!(
                    error = %error_chain(&err),
                    "pruning dead letters and abandoned results failed"
                ),
            }
            tokio::time::sleep(PRUNE_INTERVAL).await;
        }
    });
    PrunerHandle { task }
}

#[cfg(test)]
mod tests {
    use picloud_shared::{
        AppId, ExecutionId, ExecutionRecord, ExecutionStatus, InvocationType, RequestId, ScriptId,
    };

    use super::*;
    use crate::executions::InMemoryExecutionLogRepository;

    fn started(at: DateTime<Utc>) -> ExecutionRecord {
        ExecutionRecord {
            id: ExecutionId::new(),
            script_id: ScriptId::new(),
            app_id: AppId::new(),
            script_version: 1,
            invocation_type: InvocationType::Http,
            trigger_id: None,
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

    fn event_retention(
        dead_letters: Arc<crate::dead_letters::InMemoryDeadLetterRepository>,
        abandoned: Arc<crate::dead_letters::InMemoryAbandonedExecutionRepository>,
    ) -> EventRetention {
        EventRetention {
            dead_letters,
            dead_letter_retention: Duration::from_secs(30 * 86_400),
            abandoned,
            abandoned_retention: Duration::from_secs(7 * 86_400),
        }
    }

    async fn dead_letter(
        repo: &crate::dead_letters::InMemoryDeadLetterRepository,
    ) -> crate::dead_letters::DeadLetter {
        repo.record(crate::dead_letters::NewDeadLetter {
            app_id: crate::DEFAULT_APP_ID,
            trigger_id: None,
            trigger_kind: picloud_shared::TriggerKind::Kv,
            script_id: None,
            event: serde_json::json!({ "kind": "kv" }),
            depth: 1,
            attempts: 5,
            last_error: "boom".to_owned(),
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn event_pruning_keeps_unresolved_dead_letters_and_recent_results() {
        use crate::dead_letters::Resolution;
        use crate::{
            dead_letters::InMemoryAbandonedExecutionRepository, memory::InMemoryRepositories,
        };

        let repos = InMemoryRepositories::new();
        let abandoned = Arc::new(InMemoryAbandonedExecutionRepository::new());
        let unresolved = dead_letter(&repos.dead_letters).await;
        let ignored = dead_letter(&repos.dead_letters).await;
        repos.dead_letters.resolve(ignored.id, Resolution::Ignored);
        let now = Utc::now();
        abandoned.add(now - TimeDelta::days(8));
        abandoned.add(now - TimeDelta::days(6));
        let retention = event_retention(repos.dead_letters.clone(), abandoned.clone());

        // Today: the dead letter was resolved moments ago, so it stays.
        let pruned = prune_events_once(&retention, now).await.unwrap();
        assert_eq!(
            pruned,
            EventsPruned {
                dead_letters: 0,
                abandoned: 1
            }
        );
        assert_eq!(abandoned.len(), 1);

        // A month and a day later: the resolved one goes, the unresolved one never does.
        let later = now + TimeDelta::days(31);
        let pruned = prune_events_once(&retention, later).await.unwrap();
        assert_eq!(pruned.dead_letters, 1);
        assert!(repos.dead_letters.get(ignored.id).await.unwrap().is_none());
        assert!(
            repos
                .dead_letters
                .get(unresolved.id)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn the_event_pruner_prunes_as_soon_as_it_starts() {
        use crate::{
            dead_letters::InMemoryAbandonedExecutionRepository, memory::InMemoryRepositories,
        };

        let repos = InMemoryRepositories::new();
        let abandoned = Arc::new(InMemoryAbandonedExecutionRepository::new());
        abandoned.add(Utc::now() - TimeDelta::days(30));
        let handle =
            spawn_event_retention_pruner(event_retention(repos.dead_letters, abandoned.clone()));
        let pruned = tokio::time::timeout(Duration::from_secs(5), async {
            while !abandoned.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        handle.shutdown().await;
        assert!(pruned.is_ok(), "the old result was not pruned at start");
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

//! The execution-record writer: executions hand records to a bounded channel and return;
//! one background task writes them in batches. No timers and no polling: the task sleeps
//! in `recv` until a record arrives, then takes whatever else is already queued.
//!
//! The queue is bounded twice: in records, and in bytes (a record costs its error, its
//! log lines and a fixed overhead). A record holds its share of the byte budget until its
//! batch is written, so a stalled database backs runs up at `record` rather than letting
//! queued records grow the process by gigabytes (review L9).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use picloud_shared::{ExecutionRecord, ExecutionRecorder};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error_chain;
use crate::executions::ExecutionLogRepository;

/// How the writer buffers, batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderOptions {
    /// Records the channel holds before `record` waits for space.
    pub capacity: usize,
    /// Bytes the queued records may take before `record` waits for space (a record larger
    /// than the whole budget takes all of it).
    pub capacity_bytes: usize,
    /// Most records written by one insert.
    pub max_batch: usize,
    /// Further attempts after a failed write before the batch is dropped.
    pub retries: u32,
    /// Wait before the first retry; doubled before each next one.
    pub initial_backoff: Duration,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            capacity: 4096,
            capacity_bytes: 16 * 1024 * 1024,
            max_batch: 256,
            retries: 3,
            initial_backoff: Duration::from_millis(200),
        }
    }
}

/// An [`ExecutionRecorder`] that queues records for a background writer. Cheap to clone;
/// every clone feeds the same writer.
#[derive(Debug, Clone)]
pub struct BatchingExecutionRecorder {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    capacity_bytes: u32,
}

/// A queued record with its share of the byte budget, given back once it is written.
type Queued = (ExecutionRecord, OwnedSemaphorePermit);

/// What a record costs the queue: its error and log text, and a fixed overhead for the
/// rest of it.
fn queued_bytes(record: &ExecutionRecord) -> usize {
    const OVERHEAD: usize = 256;
    const PER_LINE: usize = 32;
    let logs: usize = record
        .logs
        .iter()
        .map(|line| line.message.len() + PER_LINE)
        .sum();
    OVERHEAD + logs + record.error.as_ref().map_or(0, String::len)
}

/// Controls the background writer started by [`BatchingExecutionRecorder::spawn`].
#[derive(Debug)]
pub struct RecorderHandle {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl BatchingExecutionRecorder {
    /// Starts the writer over `repo` with [`RecorderOptions::default`]. Must be called
    /// inside a tokio runtime.
    pub fn spawn(repo: Arc<dyn ExecutionLogRepository>) -> (Self, RecorderHandle) {
        Self::spawn_with(repo, RecorderOptions::default())
    }

    /// Starts the writer over `repo` with the given options (zero sizes are raised to 1).
    pub fn spawn_with(
        repo: Arc<dyn ExecutionLogRepository>,
        options: RecorderOptions,
    ) -> (Self, RecorderHandle) {
        let capacity_bytes = u32::try_from(options.capacity_bytes.clamp(1, Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX);
        let options = RecorderOptions {
            capacity: options.capacity.max(1),
            max_batch: options.max_batch.max(1),
            ..options
        };
        let (tx, rx) = mpsc::channel(options.capacity);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(run(rx, shutdown_rx, repo, options));
        let bytes = Arc::new(Semaphore::new(capacity_bytes as usize));
        (
            Self {
                tx,
                bytes,
                capacity_bytes,
            },
            RecorderHandle { shutdown, task },
        )
    }
}

#[async_trait]
impl ExecutionRecorder for BatchingExecutionRecorder {
    async fn record(&self, record: ExecutionRecord) {
        let cost = u32::try_from(queued_bytes(&record))
            .unwrap_or(u32::MAX)
            .min(self.capacity_bytes);
        let Ok(share) = Arc::clone(&self.bytes).acquire_many_owned(cost).await else {
            return;
        };
        if let Err(mpsc::error::SendError((record, _))) = self.tx.send((record, share)).await {
            tracing::warn!(
                execution_id = %record.id,
                script_id = %record.script_id,
                "execution recorder is shut down; record dropped"
            );
        }
    }
}

impl RecorderHandle {
    /// Stops taking records and returns once every record queued before the call has been
    /// written (or, after its retries, given up on and logged). Records offered afterwards
    /// are dropped with a warning.
    pub async fn shutdown(self) {
        // An error means the writer already stopped, which the join below reports.
        let _ = self.shutdown.send(());
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "execution recorder task failed");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Queued>,
    mut shutdown: oneshot::Receiver<()>,
    repo: Arc<dyn ExecutionLogRepository>,
    options: RecorderOptions,
) {
    let mut batch = Vec::with_capacity(options.max_batch);
    let mut shares = Vec::with_capacity(options.max_batch);
    let mut listening = true;
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            signal = &mut shutdown, if listening => {
                listening = false;
                // A dropped handle is not a shutdown request: keep writing until every
                // recorder is dropped. A real request closes the channel, after which
                // `recv` hands out what is queued and then ends the loop.
                if signal.is_ok() {
                    rx.close();
                }
                continue;
            }
        };
        let Some((record, share)) = first else {
            break;
        };
        batch.push(record);
        shares.push(share);
        while batch.len() < options.max_batch {
            match rx.try_recv() {
                Ok((record, share)) => {
                    batch.push(record);
                    shares.push(share);
                }
                Err(_) => break,
            }
        }
        write(repo.as_ref(), &batch, &options).await;
        batch.clear();
        // Written (or given up on): their bytes are free for the next records.
        shares.clear();
    }
    tracing::debug!("execution recorder stopped");
}

/// Writes one batch, retrying with doubling backoff; the insert is idempotent on record
/// ids, so a retry after a write that did land duplicates nothing.
async fn write(
    repo: &dyn ExecutionLogRepository,
    batch: &[ExecutionRecord],
    options: &RecorderOptions,
) {
    let mut backoff = options.initial_backoff;
    let mut attempt = 0;
    loop {
        match repo.insert_batch(batch).await {
            Ok(_) => return,
            Err(err) if attempt < options.retries => {
                attempt += 1;
                tracing::error!(
                    count = batch.len(),
                    attempt,
                    error = %error_chain(&err),
                    "writing execution records failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            Err(err) => {
                tracing::error!(
                    count = batch.len(),
                    error = %error_chain(&err),
                    "writing execution records failed; records dropped"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use chrono::{DateTime, Utc};
    use picloud_shared::{
        AppId, ExecutionId, ExecutionStatus, InvocationType, RequestId, ScriptId,
    };

    use super::*;
    use crate::executions::InMemoryExecutionLogRepository;
    use crate::{
        executions::ExecutionCursor,
        repository::{RepoError, RepoResult},
    };

    fn record() -> ExecutionRecord {
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
            duration_ms: 3,
            logs: Vec::new(),
            error: None,
            started_at: Utc::now(),
        }
    }

    fn fast(retries: u32) -> RecorderOptions {
        RecorderOptions {
            retries,
            initial_backoff: Duration::from_millis(1),
            ..RecorderOptions::default()
        }
    }

    /// Fails the first `failures` inserts, then stores into an in-memory repository, and
    /// remembers the size of every batch it was handed.
    struct Flaky {
        failures: AtomicU32,
        inner: InMemoryExecutionLogRepository,
        batches: Mutex<Vec<usize>>,
        /// Every write waits for a permit: with none, the database has stalled.
        gate: tokio::sync::Semaphore,
    }

    impl Flaky {
        fn new(failures: u32) -> Self {
            Self {
                failures: AtomicU32::new(failures),
                inner: InMemoryExecutionLogRepository::new(),
                batches: Mutex::new(Vec::new()),
                gate: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
            }
        }

        /// A repository whose writes wait until the test adds permits to its gate.
        fn stalled() -> Self {
            Self {
                gate: tokio::sync::Semaphore::new(0),
                ..Self::new(0)
            }
        }
    }

    #[async_trait]
    impl ExecutionLogRepository for Flaky {
        async fn insert_batch(&self, records: &[ExecutionRecord]) -> RepoResult<u64> {
            let _open = self.gate.acquire().await;
            self.batches.lock().unwrap().push(records.len());
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(RepoError::Invalid("simulated failure".to_owned()));
            }
            self.inner.insert_batch(records).await
        }

        async fn list_for_script(
            &self,
            script: ScriptId,
            limit: u32,
            before: Option<ExecutionCursor>,
        ) -> RepoResult<Vec<ExecutionRecord>> {
            self.inner.list_for_script(script, limit, before).await
        }

        async fn get(&self, id: ExecutionId) -> RepoResult<Option<ExecutionRecord>> {
            self.inner.get(id).await
        }

        async fn prune_older_than(&self, cutoff: DateTime<Utc>) -> RepoResult<u64> {
            self.inner.prune_older_than(cutoff).await
        }
    }

    #[tokio::test]
    async fn queued_records_are_written_in_batches_no_larger_than_the_limit() {
        let repo = Arc::new(Flaky::new(0));
        let options = RecorderOptions {
            max_batch: 10,
            ..fast(0)
        };
        let (recorder, handle) = BatchingExecutionRecorder::spawn_with(repo.clone(), options);
        for _ in 0..95 {
            recorder.record(record()).await;
        }
        handle.shutdown().await;
        assert_eq!(repo.inner.len(), 95);
        let batches = repo.batches.lock().unwrap().clone();
        assert!(
            batches.iter().all(|&n| (1..=10).contains(&n)),
            "{batches:?}"
        );
        assert_eq!(batches.iter().sum::<usize>(), 95);
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_until_it_succeeds() {
        let repo = Arc::new(Flaky::new(2));
        let (recorder, handle) = BatchingExecutionRecorder::spawn_with(repo.clone(), fast(3));
        let r = record();
        recorder.record(r.clone()).await;
        handle.shutdown().await;
        assert!(repo.inner.get(r.id).await.unwrap().is_some());
        assert_eq!(*repo.batches.lock().unwrap(), vec![1, 1, 1]);
    }

    #[tokio::test]
    async fn a_batch_that_keeps_failing_is_dropped_and_shutdown_still_returns() {
        let repo = Arc::new(Flaky::new(u32::MAX));
        let (recorder, handle) = BatchingExecutionRecorder::spawn_with(repo.clone(), fast(2));
        recorder.record(record()).await;
        handle.shutdown().await;
        assert!(repo.inner.is_empty());
        assert_eq!(
            repo.batches.lock().unwrap().len(),
            3,
            "one try and two retries"
        );
    }

    #[tokio::test]
    async fn records_offered_after_shutdown_are_dropped() {
        let repo = Arc::new(Flaky::new(0));
        let (recorder, handle) = BatchingExecutionRecorder::spawn_with(repo.clone(), fast(0));
        recorder.record(record()).await;
        handle.shutdown().await;
        recorder.record(record()).await;
        assert_eq!(repo.inner.len(), 1);
    }

    #[tokio::test]
    async fn dropping_the_handle_keeps_the_writer_running() {
        let repo = Arc::new(Flaky::new(0));
        let (recorder, handle) = BatchingExecutionRecorder::spawn_with(repo.clone(), fast(0));
        drop(handle);
        let r = record();
        recorder.record(r.clone()).await;
        let written = tokio::time::timeout(Duration::from_secs(5), async {
            while repo.inner.get(r.id).await.unwrap().is_none() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(written.is_ok(), "the record was never written");
    }

    #[tokio::test]
    async fn a_stalled_database_holds_queued_records_to_the_byte_budget() {
        let repo = Arc::new(Flaky::stalled());
        let (recorder, handle) = BatchingExecutionRecorder::spawn_with(
            repo.clone(),
            RecorderOptions {
                capacity_bytes: 4096,
                ..fast(0)
            },
        );
        let large = || ExecutionRecord {
            error: Some("e".repeat(3000)),
            ..record()
        };
        let first = large();
        recorder.record(first.clone()).await;
        // The first holds 3,256 of the 4,096 bytes until it is written, which the stalled
        // database does not do: the second waits, its run with it.
        let second = large();
        let waited =
            tokio::time::timeout(Duration::from_millis(200), recorder.record(second.clone())).await;
        assert!(waited.is_err(), "a record past the budget waits for space");
        repo.gate.add_permits(1000);
        recorder.record(second.clone()).await;
        handle.shutdown().await;
        for written in [first, second] {
            assert!(repo.inner.get(written.id).await.unwrap().is_some());
        }
    }
}

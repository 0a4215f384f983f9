//! The outbox dispatcher: claims due outbox rows, runs each trigger's script with the
//! event as `ctx.event`, and settles every claim: complete on success, retry with
//! exponential backoff and jitter on failure, a dead letter after the last attempt.
//!
//! It never polls. With nothing due it sleeps until the next row's due time (or the end of
//! a lease another dispatcher holds), until the [`OutboxWaker`] reports new rows, or until
//! one of its own runs finishes, whichever comes first. Because notifications can be lost
//! (a reconnecting listener, a notification from another node's retry), it also looks at
//! the outbox at least once every [`SAFETY_RECHECK`] even when it believes nothing is due:
//! one cheap query every few minutes, the only timer it has.
//!
//! At most `batch` runs are in flight per dispatcher; the executor's `ExecutionGate` bounds
//! every run of the process together (HTTP and triggered). A busy dispatcher claims rows
//! ahead of its free slots (see [`DispatcherConfig::claim_ahead`]) so that one statement
//! claims many rows, and it deletes the rows of the runs that succeeded together, when it
//! next claims or goes idle; the other outcomes are rare and each run settles its own.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use picloud_shared::{
    ExecutionError, ExecutionId, ExecutionRecord, ExecutionRecorder, ExecutionReport,
    ExecutionRequest, ExecutionStatus, ExecutorClient, InvocationType, OutboxItem, OutboxStore,
    OutboxWaker, RequestId, ScriptResolver, TriggeredBy,
};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The longest the dispatcher sleeps without looking at the outbox, whatever it expects.
pub const SAFETY_RECHECK: Duration = Duration::from_secs(300);

/// The shortest sleep after finding nothing to claim: a row due "now" that another
/// dispatcher is claiming at this very moment is skipped, not waited for, and must not turn
/// the loop into a spin until that claim commits.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(20);

/// Wait before looking again after the outbox store failed; doubled on each further
/// failure up to [`STORE_RETRY_MAX`].
const STORE_RETRY_MIN: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Wait before a run that could not start because the script store was unreachable or the
/// executor unavailable is tried again (with jitter); such a wait costs no attempt.
const DEFER_DELAY: Duration = Duration::from_secs(5);

/// How many rounds of `batch` runs a dispatcher holds claimed at most: the one running
/// and this many less one waiting. Claiming ahead is what lets a busy dispatcher take
/// rows by the dozen in one statement rather than one per finished run.
const CLAIM_ROUNDS: u32 = 8;

/// How a dispatcher claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// Names this dispatcher's claims; unique per process (see [`Self::worker_id`]).
    pub worker_id: String,
    /// Most runs in flight at once.
    pub batch: u32,
    /// How long a claim lasts. Longer than the sandbox's timeout, or a run still going
    /// could be started a second time by another dispatcher.
    pub lease: Duration,
    /// The longest one run can take once started, its wait for an execution slot
    /// included: the sandbox timeout plus the gate's queue timeout. Rows are claimed
    /// ahead of the free slots only while a row can wait its turn and still finish within
    /// its lease; one that waited longer is handed back unrun.
    pub max_run: Duration,
}

impl DispatcherConfig {
    /// How long a row claimed ahead may wait for a slot and still be run.
    pub fn queue_allowance(&self) -> Duration {
        self.lease.saturating_sub(self.max_run)
    }

    /// How many rows a dispatcher claims beyond its free slots: none when a waiting row
    /// could not be run within its lease.
    pub fn claim_ahead(&self) -> u32 {
        if self.queue_allowance().is_zero() {
            0
        } else {
            self.batch
                .max(1)
                .saturating_mul(CLAIM_ROUNDS.saturating_sub(1))
        }
    }

    /// A worker id unique to this process: `host:pid:random`, so claims in the outbox say
    /// which node and process holds them, and a restarted process never mistakes an old
    /// claim for its own.
    pub fn worker_id(host: &str) -> String {
        format!(
            "{host}:{pid}:{nonce:08x}",
            pid = std::process::id(),
            nonce = rand::random::<u32>()
        )
    }
}

/// What a dispatcher works with.
pub struct DispatcherDeps {
    /// The outbox it claims from.
    pub store: Arc<dyn OutboxStore>,
    /// Wakes it when rows may be due.
    pub waker: Arc<dyn OutboxWaker>,
    /// Finds the trigger's script.
    pub resolver: Arc<dyn ScriptResolver>,
    /// Runs it.
    pub executor: Arc<dyn ExecutorClient>,
    /// Takes the execution records.
    pub recorder: Arc<dyn ExecutionRecorder>,
    /// How it claims.
    pub config: DispatcherConfig,
}

impl fmt::Debug for DispatcherDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherDeps")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Starts dispatchers.
#[derive(Debug)]
pub struct Dispatcher;

impl Dispatcher {
    /// Starts a dispatcher loop in the background. Must be called inside a tokio runtime.
    pub fn spawn(deps: DispatcherDeps) -> DispatcherHandle {
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(deps, stopping));
        DispatcherHandle { stop, task }
    }
}

/// Stops a running dispatcher. Dropping it without [`Self::shutdown`] stops the dispatcher
/// too, without waiting for it.
#[derive(Debug)]
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops claiming, waits for the runs in flight to finish and settle (at most one
    /// lease: a run still going then is abandoned and its row comes back), then releases
    /// the claims this dispatcher still holds so other dispatchers can take them at once.
    pub async fn shutdown(self) {
        // An error means the loop has already stopped, which the join below reports.
        let _ = self.stop.send(true);
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "outbox dispatcher task failed");
        }
    }
}

/// The part of the dispatcher each run needs.
struct Runner {
    store: Arc<dyn OutboxStore>,
    resolver: Arc<dyn ScriptResolver>,
    executor: Arc<dyn ExecutorClient>,
    recorder: Arc<dyn ExecutionRecorder>,
}

async fn run(deps: DispatcherDeps, mut stopping: watch::Receiver<bool>) {
    let DispatcherDeps {
        store,
        waker,
        resolver,
        executor,
        recorder,
        config,
    } = deps;
    let batch = usize::try_from(config.batch.max(1)).unwrap_or(usize::MAX);
    let claim_ahead = usize::try_from(config.claim_ahead()).unwrap_or(usize::MAX);
    let runner = Arc::new(Runner {
        store: Arc::clone(&store),
        resolver,
        executor,
        recorder,
    });
    // Claimed rows waiting for a free slot, oldest claim first.
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut in_flight: JoinSet<Option<OutboxItem>> = JoinSet::new();
    let mut succeeded: Vec<OutboxItem> = Vec::new();
    let mut store_failures = 0_u32;
    // The last claim found fewer rows than it asked for: none is due until something
    // wakes the loop (the waker, or the deadline it computed).
    let mut drained = false;
    tracing::info!(
        worker = %config.worker_id,
        batch,
        claim_ahead,
        "outbox dispatcher started"
    );

    loop {
        if stop_requested(&stopping) {
            break;
        }
        reap(&mut in_flight, &mut succeeded);
        if start_queued(&runner, &config, &mut queue, &mut in_flight, batch).await {
            // Rows handed back are due again now.
            drained = false;
        }

        let mut failed_wait = None;
        // Claim when less than one round of runs is queued, and only what the free slots
        // and the allowance to claim ahead can take.
        let limit =
            (batch.saturating_sub(in_flight.len()) + claim_ahead).saturating_sub(queue.len());
        if !drained && queue.len() < batch && limit > 0 {
            // Settling first costs nothing extra: the claim waits for the database anyway.
            complete(store.as_ref(), &mut succeeded).await;
            match claim(store.as_ref(), &config, limit).await {
                Ok(items) => {
                    store_failures = 0;
                    drained = items.len() < limit;
                    let claimed_at = Instant::now();
                    let claimed = items.len();
                    let mut items = items.into_iter();
                    let free = batch.saturating_sub(in_flight.len());
                    for item in items.by_ref().take(free) {
                        in_flight.spawn(Arc::clone(&runner).deliver(item));
                    }
                    queue.extend(items.map(|item| Queued { item, claimed_at }));
                    if claimed > 0 {
                        continue;
                    }
                }
                Err(err) => {
                    store_failures += 1;
                    failed_wait = Some(store_retry_wait(store_failures, &err));
                }
            }
        }

        let wait = match failed_wait {
            Some(wait) => wait,
            None if in_flight.is_empty() && queue.is_empty() => {
                // Idle from here on: nothing delivered may wait to be settled.
                complete(store.as_ref(), &mut succeeded).await;
                match store.next_due_in().await {
                    Ok(next) => next.map_or(SAFETY_RECHECK, |next| {
                        next.clamp(MIN_IDLE_WAIT, SAFETY_RECHECK)
                    }),
                    Err(err) => {
                        store_failures += 1;
                        store_retry_wait(store_failures, &err)
                    }
                }
            }
            None => {
                // Busy: the rows are deleted with the next claim, unless that is far off.
                if succeeded.len() >= batch + claim_ahead {
                    complete(store.as_ref(), &mut succeeded).await;
                }
                // Each run in flight wakes the loop when it ends, and the loop looks
                // again then: asking for the next due time now would be a wasted query.
                SAFETY_RECHECK
            }
        };

        // A store failure is waited out too; a wake-up cannot fix the database, so only a
        // healthy dispatcher listens for one.
        let deadline = Instant::now() + wait;
        let healthy = store_failures == 0;
        tokio::select! {
            () = waker.wait_until(Some(deadline.into_std())), if healthy => drained = false,
            () = tokio::time::sleep_until(deadline), if !healthy => drained = false,
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                report_join(done, &mut succeeded);
            }
            _ = stopping.wait_for(|stop| *stop) => break,
        }
    }

    drain(&mut in_flight, &mut succeeded, config.lease).await;
    complete(store.as_ref(), &mut succeeded).await;
    // The queued rows' claims are released with the rest.
    match store.release(&config.worker_id).await {
        Ok(0) => {}
        Ok(released) => {
            tracing::info!(worker = %config.worker_id, released, "released outbox claims");
        }
        Err(err) => tracing::warn!(
            worker = %config.worker_id,
            error = %err,
            "could not release outbox claims; they come back when their lease ends"
        ),
    }
    tracing::info!(worker = %config.worker_id, "outbox dispatcher stopped");
}

/// A row claimed ahead, waiting for a free slot.
struct Queued {
    item: OutboxItem,
    claimed_at: Instant,
}

/// Starts queued rows while slots are free. A row that has waited so long that its run
/// might outlast its lease is handed back unrun (its attempt uncounted), to be claimed
/// afresh; returns whether any was.
async fn start_queued(
    runner: &Arc<Runner>,
    config: &DispatcherConfig,
    queue: &mut VecDeque<Queued>,
    in_flight: &mut JoinSet<Option<OutboxItem>>,
    batch: usize,
) -> bool {
    let allowance = config.queue_allowance();
    let mut handed_back = false;
    while in_flight.len() < batch {
        let Some(Queued { item, claimed_at }) = queue.pop_front() else {
            break;
        };
        if claimed_at.elapsed() <= allowance {
            in_flight.spawn(Arc::clone(runner).deliver(item));
            continue;
        }
        tracing::info!(
            outbox_id = %item.id,
            waited_ms = u64::try_from(claimed_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            "claimed outbox row waited too long for a free slot; handing it back"
        );
        handed_back = true;
        if let Err(err) = runner
            .store
            .defer(&item, Duration::ZERO, "waited too long for a free slot")
            .await
        {
            tracing::error!(
                outbox_id = %item.id,
                error = %err,
                "could not hand an outbox claim back; the row comes back after its lease"
            );
        }
    }
    handed_back
}

fn stop_requested(stopping: &watch::Receiver<bool>) -> bool {
    // A dropped handle also means stop: nobody could ask any more.
    *stopping.borrow() || stopping.has_changed().is_err()
}

async fn claim(
    store: &dyn OutboxStore,
    config: &DispatcherConfig,
    limit: usize,
) -> Result<Vec<OutboxItem>, picloud_shared::OutboxError> {
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    let items = store
        .claim_due(&config.worker_id, limit, config.lease)
        .await?;
    if !items.is_empty() {
        tracing::debug!(worker = %config.worker_id, claimed = items.len(), "claimed outbox rows");
    }
    Ok(items)
}

fn store_retry_wait(failures: u32, err: &picloud_shared::OutboxError) -> Duration {
    let wait = STORE_RETRY_MIN
        .saturating_mul(1_u32 << failures.saturating_sub(1).min(16))
        .min(STORE_RETRY_MAX);
    tracing::error!(
        error = %err,
        failures,
        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        "outbox store unavailable"
    );
    wait
}

/// Collects finished runs without waiting: the successful ones into `succeeded`, and
/// any that panicked reported.
fn reap(in_flight: &mut JoinSet<Option<OutboxItem>>, succeeded: &mut Vec<OutboxItem>) {
    while let Some(done) = in_flight.try_join_next() {
        report_join(done, succeeded);
    }
}

fn report_join(
    done: Result<Option<OutboxItem>, tokio::task::JoinError>,
    succeeded: &mut Vec<OutboxItem>,
) {
    match done {
        Ok(Some(item)) => succeeded.push(item),
        Ok(None) => {}
        Err(err) if err.is_panic() => tracing::error!(
            error = %err,
            "an outbox delivery panicked; its row comes back after its lease"
        ),
        // Cancelled: only at shutdown, past the lease, and reported there.
        Err(_) => {}
    }
}

/// Deletes the rows of the runs that succeeded, emptying `succeeded`.
async fn complete(store: &dyn OutboxStore, succeeded: &mut Vec<OutboxItem>) {
    if succeeded.is_empty() {
        return;
    }
    if let Err(err) = store.complete(succeeded).await {
        tracing::error!(
            rows = succeeded.len(),
            error = %err,
            "could not complete delivered outbox rows; they come back after their lease"
        );
    }
    succeeded.clear();
}

/// Waits for the runs in flight, at most `limit`; runs still going then are abandoned
/// (their rows come back after the lease, or at once through the release that follows).
async fn drain(
    in_flight: &mut JoinSet<Option<OutboxItem>>,
    succeeded: &mut Vec<OutboxItem>,
    limit: Duration,
) {
    if in_flight.is_empty() {
        return;
    }
    tracing::info!(
        in_flight = in_flight.len(),
        "waiting for triggered runs to finish"
    );
    let all = async {
        while let Some(done) = in_flight.join_next().await {
            report_join(done, succeeded);
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!(
            abandoned = in_flight.len(),
            "triggered runs still going at shutdown were abandoned"
        );
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
    }
}

/// How one delivery went.
enum Delivery {
    /// The script ran to completion.
    Succeeded,
    /// The script failed; the attempt counts.
    Failed(String),
    /// The script could not be run through no fault of the event; the attempt does not
    /// count and the row is due again after the delay.
    NotAttempted { reason: String, delay: Duration },
    /// The row can never be delivered (its script is gone): a dead letter at once.
    Undeliverable(String),
}

impl Runner {
    /// Runs `item` and settles its claim, except after a success: the item is returned
    /// for the loop to complete together with the others.
    async fn deliver(self: Arc<Self>, item: OutboxItem) -> Option<OutboxItem> {
        let delivery = self.attempt(&item).await;
        let settled = match &delivery {
            Delivery::Succeeded => return Some(item),
            Delivery::Failed(error) if item.can_retry() => {
                let delay = item.retry_delay(rand::random::<f64>());
                tracing::warn!(
                    outbox_id = %item.id,
                    trigger_id = %item.trigger_id,
                    attempt = item.attempt(),
                    max_attempts = item.max_attempts,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %error,
                    "triggered run failed; retrying later"
                );
                self.store.retry(&item, delay, error).await
            }
            Delivery::Failed(error) | Delivery::Undeliverable(error) => {
                tracing::warn!(
                    outbox_id = %item.id,
                    trigger_id = %item.trigger_id,
                    attempt = item.attempt(),
                    error = %error,
                    "triggered run failed for good; recording a dead letter"
                );
                self.store.give_up(&item, error).await
            }
            Delivery::NotAttempted { reason, delay } => {
                let delay = picloud_shared::outbox::jittered(*delay, rand::random::<f64>());
                tracing::info!(
                    outbox_id = %item.id,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    reason = %reason,
                    "triggered run postponed"
                );
                self.store.defer(&item, delay, reason).await
            }
        };
        if let Err(err) = settled {
            tracing::error!(
                outbox_id = %item.id,
                error = %err,
                "could not settle an outbox claim; the row comes back after its lease"
            );
        }
        None
    }

    async fn attempt(&self, item: &OutboxItem) -> Delivery {
        let script = match self.resolver.by_id(item.script_id).await {
            Ok(Some(script)) if script.app_id == item.app_id => script,
            Ok(Some(_)) => {
                return Delivery::Undeliverable(
                    "the trigger's script belongs to another app".to_owned(),
                );
            }
            Ok(None) => return Delivery::Undeliverable("script deleted".to_owned()),
            Err(err) => {
                return Delivery::NotAttempted {
                    reason: err.to_string(),
                    delay: DEFER_DELAY,
                };
            }
        };
        let execution_id = ExecutionId::new();
        // Every attempt at one outbox row shares its request id, so their logs line up.
        let request_id = RequestId::parse(&item.id.to_string()).unwrap_or_else(RequestId::generate);
        let started_at = Utc::now();
        let report = self
            .executor
            .execute(ExecutionRequest {
                execution_id,
                script: Arc::clone(&script),
                invocation_type: InvocationType::Trigger,
                request_id: request_id.clone(),
                http: None,
                trigger: Some(TriggeredBy {
                    trigger_id: item.trigger_id,
                    event: item.event.clone(),
                }),
                depth: item.depth,
                run_as: item.run_as.clone(),
            })
            .await;
        let ExecutionReport {
            outcome,
            logs,
            duration,
            ..
        } = report;
        let (status, error) = match &outcome {
            Ok(_) => (ExecutionStatus::Success, None),
            Err(err) => (err.status(), Some(err.to_string())),
        };
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            script_id = %script.id,
            execution_id = %execution_id,
            trigger_id = %item.trigger_id,
            outbox_id = %item.id,
            attempt = item.attempt(),
            status = status.as_str(),
            duration_ms,
            "triggered script executed"
        );
        self.recorder
            .record(ExecutionRecord {
                id: execution_id,
                script_id: script.id,
                app_id: script.app_id,
                script_version: script.version,
                invocation_type: InvocationType::Trigger,
                trigger_id: Some(item.trigger_id),
                request_id,
                status,
                http_status: None,
                duration_ms,
                logs,
                error,
                started_at,
            })
            .await;
        match outcome {
            // Whatever the script answers, it ran: a triggered run has no caller to read
            // a status code.
            Ok(_) => Delivery::Succeeded,
            Err(ExecutionError::Overloaded { retry_after }) => Delivery::NotAttempted {
                reason: "no free execution slot".to_owned(),
                delay: retry_after.max(Duration::from_secs(1)),
            },
            Err(ExecutionError::Unavailable { message }) => Delivery::NotAttempted {
                reason: format!("executor unavailable: {message}"),
                delay: DEFER_DELAY,
            },
            Err(err) => Delivery::Failed(err.to_string()),
        }
    }
}

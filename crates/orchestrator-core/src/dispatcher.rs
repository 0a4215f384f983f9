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
//! At most `max_in_flight` runs are in flight per dispatcher; the executor's
//! `ExecutionGate` bounds every run of the process together (HTTP and triggered). A busy
//! dispatcher claims rows ahead of its free slots (see [`DispatcherConfig::claim_ahead`])
//! so that one statement claims many rows; up to `max_in_flight` lanes run them one after
//! another, so the next run starts without a round trip through the loop; and each lane
//! deletes the rows of the runs that succeeded in one hand-over together, right after it.
//! The other outcomes are rare and each run settles its own.
//!
//! A row is settled before its lease ends, so no other dispatcher can claim it while its
//! run is going or done: every run starts within its claim's allowance
//! ([`DispatcherConfig::queue_allowance`]) and ends within `max_run`, which covers the
//! slot wait, the sandbox timeout and the time to settle. A row claimed again after its
//! attempts are spent (its runs crashed or were lost each time) becomes a dead letter
//! instead of running once more.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use picloud_shared::{
    ExecutionError, ExecutionId, ExecutionRecord, ExecutionRecorder, ExecutionReport,
    ExecutionRequest, ExecutionStatus, ExecutorClient, InvocationType, LogText, OutboxItem,
    OutboxStore, OutboxWaker, RequestId, Script, ScriptResolver, TriggeredBy,
};
use tokio::sync::{Notify, watch};
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

/// Most queued rows a lane hands the executor at once (see
/// [`ExecutorClient::execute_batch`]): one hand-over to a script worker for all of them.
const MAX_RUNS_PER_HAND_OVER: usize = 8;

/// How many rounds of `max_in_flight` runs a dispatcher holds claimed at most: the one
/// running and this many less one waiting. Claiming ahead is what lets a busy dispatcher take
/// rows by the dozen in one statement rather than one per finished run.
const CLAIM_ROUNDS: u32 = 8;

/// How a dispatcher claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// Names this dispatcher's claims; unique per process (see [`Self::worker_id`]).
    pub worker_id: String,
    /// Most runs in flight at once: the number of lanes.
    pub max_in_flight: u32,
    /// How long a claim lasts. Longer than the sandbox's timeout, or a run still going
    /// could be started a second time by another dispatcher.
    pub lease: Duration,
    /// The longest one run can take from its start to its row's settlement, its wait for
    /// an execution slot included: `TriggerConfig::longest_run` (the sandbox timeout, the
    /// gate's queue timeout and `LEASE_GRACE`). Rows are claimed ahead of the free slots
    /// only while a row can wait its turn and still be settled within its lease; one that
    /// waited longer is handed back unrun.
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
            self.max_in_flight
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
    let max_in_flight = usize::try_from(config.max_in_flight.max(1)).unwrap_or(usize::MAX);
    let claim_ahead = usize::try_from(config.claim_ahead()).unwrap_or(usize::MAX);
    let runner = Arc::new(Runner {
        store: Arc::clone(&store),
        resolver,
        executor,
        recorder,
    });
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        running_low: Notify::new(),
        handed_back: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        max_in_flight,
        allowance: config.queue_allowance(),
    });
    let mut lanes: JoinSet<()> = JoinSet::new();
    let mut store_failures = 0_u32;
    // The last claim found fewer rows than it asked for: none is due until something
    // wakes the loop (the waker, or the deadline it computed).
    let mut drained = false;
    tracing::info!(
        worker = %config.worker_id,
        max_in_flight,
        claim_ahead,
        "outbox dispatcher started"
    );

    loop {
        if stop_requested(&stopping) {
            break;
        }
        reap(&mut lanes);
        if shared.handed_back.swap(false, Ordering::AcqRel) {
            // Rows handed back are due again now.
            drained = false;
        }
        let queued = shared.queued();
        while lanes.len() < max_in_flight.min(queued) {
            lanes.spawn(lane(Arc::clone(&runner), Arc::clone(&shared)));
        }

        let mut failed_wait = None;
        // Claim when a lane is free, or when the queue is empty (a lane soon will be): as
        // many rows as the lanes and the allowance to claim ahead can take. Claiming only
        // then lets rows that trickle in gather into fewer, larger claims.
        let limit = (max_in_flight + claim_ahead).saturating_sub(queued + lanes.len());
        if !drained && (queued == 0 || lanes.len() < max_in_flight) && limit > 0 {
            match claim(store.as_ref(), &config, limit).await {
                Ok(items) => {
                    store_failures = 0;
                    drained = items.len() < limit;
                    if !items.is_empty() {
                        shared.enqueue(items);
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
            None if lanes.is_empty() && queued == 0 => match store.next_due_in().await {
                Ok(next) => next.map_or(SAFETY_RECHECK, |next| {
                    next.clamp(MIN_IDLE_WAIT, SAFETY_RECHECK)
                }),
                Err(err) => {
                    store_failures += 1;
                    store_retry_wait(store_failures, &err)
                }
            },
            None => {
                // The lanes wake the loop when the queue runs low or they run out of
                // work: asking for the next due time now would be a wasted query.
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
            () = shared.running_low.notified(), if !lanes.is_empty() => {}
            Some(done) = lanes.join_next(), if !lanes.is_empty() => report_join(done),
            _ = stopping.wait_for(|stop| *stop) => break,
        }
    }

    // Lanes finish the batch they are running and take no other.
    shared.stopping.store(true, Ordering::Release);
    drain(&mut lanes, config.lease).await;
    // The rows still queued are released with the rest of this worker's claims.
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

/// A claimed row waiting for a lane.
struct Queued {
    item: OutboxItem,
    claimed_at: Instant,
}

/// What the loop and its lanes share. The loop claims rows into the queue; up to
/// `max_in_flight` lanes take their share of it, one batch after another, so a busy
/// dispatcher starts the next run without a round trip through the loop.
struct Shared {
    /// Claimed rows, oldest claim first.
    queue: Mutex<VecDeque<Queued>>,
    /// Rung by a lane that leaves fewer rows queued than there are lanes: time to claim
    /// more.
    running_low: Notify,
    /// A lane handed a row back: rows are due that the last claim did not see.
    handed_back: AtomicBool,
    /// Shutting down: lanes take no further batch.
    stopping: AtomicBool,
    max_in_flight: usize,
    /// How long a row may wait in the queue and still be run (zero: no limit, because
    /// nothing is claimed ahead and every row has a lane waiting for it).
    allowance: Duration,
}

impl Shared {
    // The queue is only pushed to and popped from under its lock; one left by a
    // panicking lane is still consistent.
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queued(&self) -> usize {
        self.lock_queue().len()
    }

    fn enqueue(&self, items: Vec<OutboxItem>) {
        let claimed_at = Instant::now();
        self.lock_queue()
            .extend(items.into_iter().map(|item| Queued { item, claimed_at }));
    }

    /// The next rows for a lane: its share of the queue (split over `max_in_flight`
    /// lanes), at least one and at most [`MAX_RUNS_PER_HAND_OVER`]; none when the queue is
    /// empty.
    fn next_rows(&self) -> Vec<Queued> {
        let mut queue = self.lock_queue();
        let share = (queue.len() / self.max_in_flight)
            .clamp(1, MAX_RUNS_PER_HAND_OVER)
            .min(queue.len());
        let rows: Vec<Queued> = queue.drain(..share).collect();
        if queue.len() < self.max_in_flight {
            self.running_low.notify_one();
        }
        rows
    }
}

/// Runs queued rows until the queue is empty or the dispatcher stops, handing the
/// executor its share of the queue at a time (one row when the queue is short, several
/// when there is a backlog) and completing the rows that succeeded after each hand-over. The batch must start by its oldest claim plus the allowance:
/// a row not started by then might outlast its lease, so it is handed back unrun (its
/// attempt uncounted), to be claimed afresh.
async fn lane(runner: Arc<Runner>, shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::Acquire) {
        let rows = shared.next_rows();
        let Some(oldest_claim) = rows.iter().map(|row| row.claimed_at).min() else {
            return;
        };
        // A zero allowance means no row waits: there is no start deadline to keep.
        let start_by = (!shared.allowance.is_zero()).then(|| oldest_claim + shared.allowance);
        let items = rows.into_iter().map(|row| row.item).collect();
        let delivered = runner.deliver(items, start_by).await;
        // Deleted now, within the claim's lease: a success left for later could outlive
        // it and be claimed and run again by another dispatcher.
        complete(runner.store.as_ref(), delivered.succeeded).await;
        if delivered.not_started > 0 {
            shared.handed_back.store(true, Ordering::Release);
            shared.running_low.notify_one();
        }
    }
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

/// Collects finished lanes without waiting, reporting any that panicked.
fn reap(lanes: &mut JoinSet<()>) {
    while let Some(done) = lanes.try_join_next() {
        report_join(done);
    }
}

fn report_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(err) = done
        && err.is_panic()
    {
        tracing::error!(
            error = %err,
            "an outbox delivery panicked; its row comes back after its lease"
        );
    }
}

/// Deletes the rows of the runs that succeeded.
async fn complete(store: &dyn OutboxStore, succeeded: Vec<OutboxItem>) {
    if succeeded.is_empty() {
        return;
    }
    if let Err(err) = store.complete(&succeeded).await {
        tracing::error!(
            rows = succeeded.len(),
            error = %err,
            "could not complete delivered outbox rows; they come back after their lease"
        );
    }
}

/// Waits for the lanes, at most `limit`; runs still going then are abandoned (their rows
/// come back after the lease, or at once through the release that follows).
async fn drain(lanes: &mut JoinSet<()>, limit: Duration) {
    if lanes.is_empty() {
        return;
    }
    tracing::info!(lanes = lanes.len(), "waiting for triggered runs to finish");
    let all = async {
        while let Some(done) = lanes.join_next().await {
            report_join(done);
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!(
            abandoned = lanes.len(),
            "triggered runs still going at shutdown were abandoned"
        );
        lanes.abort_all();
        while lanes.join_next().await.is_some() {}
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
    /// Runs `items` as one batch (see [`ExecutorClient::execute_batch`]) and settles each
    /// claim, except after a success: those items are returned for the loop to complete
    /// together. Rows that could not start before `start_by` are handed back unrun.
    async fn deliver(&self, items: Vec<OutboxItem>, start_by: Option<Instant>) -> Delivered {
        let mut outcomes: Vec<Option<Delivery>> = Vec::with_capacity(items.len());
        let mut requests = Vec::new();
        let mut runs = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if item.exhausted() {
                // Claimed once more than it may run: every earlier attempt was claimed and
                // never settled, so its run crashed or was lost each time. Running it again
                // would most likely crash again.
                outcomes.push(Some(Delivery::Undeliverable(format!(
                    "claimed {} times without a settled run (max_attempts is {}): its runs \
                     crashed or were lost",
                    item.attempts.saturating_sub(1),
                    item.max_attempts
                ))));
                continue;
            }
            match self.prepare(item).await {
                Ok((request, script)) => {
                    runs.push((index, script, request.request_id.clone()));
                    requests.push(request);
                    outcomes.push(None);
                }
                Err(delivery) => outcomes.push(Some(delivery)),
            }
        }
        let reports = if requests.is_empty() {
            Vec::new()
        } else {
            // Measured now, after the lookups, so they count against the allowance.
            let start_within = start_by.map(|by| by.saturating_duration_since(Instant::now()));
            self.executor.execute_batch(requests, start_within).await
        };
        let mut not_started = 0;
        for ((index, script, request_id), report) in runs.into_iter().zip(reports) {
            outcomes[index] = Some(match report {
                Some(report) => {
                    self.conclude(&items[index], &script, request_id, report)
                        .await
                }
                None => {
                    not_started += 1;
                    Delivery::NotAttempted {
                        reason: "waited too long for a free slot".to_owned(),
                        delay: Duration::ZERO,
                    }
                }
            });
        }
        let mut succeeded = Vec::new();
        for (item, outcome) in items.into_iter().zip(outcomes) {
            // Every run was prepared or refused, and every prepared one reported or not.
            let delivery = outcome.unwrap_or_else(|| Delivery::NotAttempted {
                reason: "the executor reported no run".to_owned(),
                delay: DEFER_DELAY,
            });
            if let Some(item) = self.settle(item, delivery).await {
                succeeded.push(item);
            }
        }
        Delivered {
            succeeded,
            not_started,
        }
    }

    /// Settles `item`'s claim by how its delivery went; a success is returned instead,
    /// for the loop to complete with the others.
    async fn settle(&self, item: OutboxItem, delivery: Delivery) -> Option<OutboxItem> {
        let settled = match &delivery {
            Delivery::Succeeded => return Some(item),
            Delivery::Failed(error) if item.can_retry() => {
                let delay = item.retry_delay(rand::random::<f64>());
                tracing::warn!(
                    outbox_id = %item.id,
                    trigger_id = %item.trigger_id,
                    attempt = item.attempts,
                    max_attempts = item.max_attempts,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %LogText(error),
                    "triggered run failed; retrying later"
                );
                self.store.retry(&item, delay, error).await
            }
            Delivery::Failed(error) | Delivery::Undeliverable(error) => {
                tracing::warn!(
                    outbox_id = %item.id,
                    trigger_id = %item.trigger_id,
                    attempt = item.attempts,
                    error = %LogText(error),
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

    /// The request that runs `item`'s script, or why there is none.
    async fn prepare(
        &self,
        item: &OutboxItem,
    ) -> Result<(ExecutionRequest, Arc<Script>), Delivery> {
        let script = match self.resolver.by_id(item.script_id).await {
            Ok(Some(script)) if script.app_id == item.app_id => script,
            Ok(Some(_)) => {
                return Err(Delivery::Undeliverable(
                    "the trigger's script belongs to another app".to_owned(),
                ));
            }
            Ok(None) => return Err(Delivery::Undeliverable("script deleted".to_owned())),
            Err(err) => {
                return Err(Delivery::NotAttempted {
                    reason: err.to_string(),
                    delay: DEFER_DELAY,
                });
            }
        };
        // Every attempt at one outbox row shares its request id, so their logs line up.
        let request_id = RequestId::parse(&item.id.to_string()).unwrap_or_else(RequestId::generate);
        let request = ExecutionRequest {
            execution_id: ExecutionId::new(),
            script: Arc::clone(&script),
            invocation_type: InvocationType::Trigger,
            request_id,
            http: None,
            trigger: Some(TriggeredBy {
                trigger_id: item.trigger_id,
                event: item.event.clone(),
            }),
            depth: item.depth,
            run_as: item.run_as.clone(),
            caller: None,
        };
        Ok((request, script))
    }

    /// Logs and records a run that happened, and says what it means for the row.
    async fn conclude(
        &self,
        item: &OutboxItem,
        script: &Script,
        request_id: RequestId,
        report: ExecutionReport,
    ) -> Delivery {
        let ExecutionReport {
            execution_id,
            outcome,
            logs,
            duration,
            started_at,
        } = report;
        let (status, error) = match &outcome {
            Ok(_) => (ExecutionStatus::Success, None),
            Err(err) => (err.status(), Some(err.to_string())),
        };
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        log_finished_run!(
            status,
            script_id = %script.id,
            execution_id = %execution_id,
            trigger_id = %item.trigger_id,
            outbox_id = %item.id,
            attempt = item.attempts,
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

/// What one batch came to.
struct Delivered {
    /// Rows whose runs succeeded, to be completed.
    succeeded: Vec<OutboxItem>,
    /// Rows handed back because they could not start in time.
    not_started: usize,
}

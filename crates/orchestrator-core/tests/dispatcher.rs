//! The outbox dispatcher's loop with stand-in seams and a paused clock: how each outcome
//! settles its claim, the backoff between attempts, the bound on runs in flight, graceful
//! shutdown, and that an idle dispatcher does not poll.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use picloud_orchestrator_core::{
    Dispatcher, DispatcherConfig, DispatcherDeps, DispatcherHandle, SAFETY_RECHECK,
};
use picloud_shared::{
    AppId, AppRole, AppSlug, Credential, CredentialKind, ExecutionError, ExecutionId,
    ExecutionRecord, ExecutionRecorder, ExecutionReport, ExecutionRequest, ExecutionStatus,
    ExecutorClient, InvocationType, OutboxItem, OutboxStore, OutboxWaker, Principal, ResolveError,
    Scope, Script, ScriptId, ScriptLimits, ScriptName, ScriptResolver, ScriptResponse, TokenId,
    TriggerId, TriggerKind, UserId, Username,
};
use picloud_testkit::outbox::{FakeOutboxStore, Settled};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct FakeWaker(Notify);

impl FakeWaker {
    fn wake(&self) {
        self.0.notify_waiters();
        self.0.notify_one();
    }
}

#[async_trait]
impl OutboxWaker for FakeWaker {
    async fn wait_until(&self, deadline: Option<std::time::Instant>) {
        let notified = self.0.notified();
        match deadline {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline.into(), notified).await;
            }
            None => notified.await,
        }
    }
}

struct Scripts(HashMap<ScriptId, Arc<Script>>);

#[async_trait]
impl ScriptResolver for Scripts {
    async fn by_id(&self, id: ScriptId) -> Result<Option<Arc<Script>>, ResolveError> {
        Ok(self.0.get(&id).cloned())
    }

    async fn by_name(
        &self,
        _: &AppSlug,
        _: &ScriptName,
    ) -> Result<Option<Arc<Script>>, ResolveError> {
        Ok(None)
    }
}

type Behaviour = dyn Fn(&ExecutionRequest) -> Result<ScriptResponse, ExecutionError> + Send + Sync;

/// Runs nothing: answers by the given behaviour after `takes`, counting concurrency.
struct FakeExecutor {
    behaviour: Box<Behaviour>,
    takes: Duration,
    requests: Mutex<Vec<ExecutionRequest>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    gate: Option<Arc<Notify>>,
    /// The size of every batch handed over.
    batches: Mutex<Vec<usize>>,
}

impl FakeExecutor {
    fn new(
        behaviour: impl Fn(&ExecutionRequest) -> Result<ScriptResponse, ExecutionError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            behaviour: Box::new(behaviour),
            takes: Duration::ZERO,
            requests: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
            gate: None,
            batches: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl ExecutorClient for FakeExecutor {
    async fn execute(&self, request: ExecutionRequest) -> ExecutionReport {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        tokio::time::sleep(self.takes).await;
        let outcome = (self.behaviour)(&request);
        self.requests.lock().unwrap().push(request.clone());
        self.running.fetch_sub(1, Ordering::SeqCst);
        ExecutionReport {
            execution_id: request.execution_id,
            outcome,
            logs: Vec::new(),
            duration: Duration::from_millis(3),
            started_at: chrono::Utc::now(),
        }
    }

    /// The default, on tokio's paused clock rather than the wall clock.
    async fn execute_batch(
        &self,
        requests: Vec<ExecutionRequest>,
        start_within: Option<Duration>,
    ) -> Vec<Option<ExecutionReport>> {
        self.batches.lock().unwrap().push(requests.len());
        let called = Instant::now();
        let mut reports = Vec::new();
        for request in requests {
            if start_within.is_some_and(|budget| called.elapsed() >= budget) {
                reports.push(None);
            } else {
                reports.push(Some(self.execute(request).await));
            }
        }
        reports
    }
}

#[derive(Default)]
struct Records(Mutex<Vec<ExecutionRecord>>);

#[async_trait]
impl ExecutionRecorder for Records {
    async fn record(&self, record: ExecutionRecord) {
        self.0.lock().unwrap().push(record);
    }
}

fn ok() -> Result<ScriptResponse, ExecutionError> {
    Ok(ScriptResponse {
        status: 200,
        headers: Vec::new(),
        body: Bytes::new(),
    })
}

fn boom() -> Result<ScriptResponse, ExecutionError> {
    Err(ExecutionError::Script {
        message: "boom".to_owned(),
        line: Some(1),
        column: Some(1),
    })
}

fn script(app: AppId) -> Arc<Script> {
    let now = Utc::now();
    Arc::new(Script {
        id: ScriptId::new(),
        app_id: app,
        name: ScriptName::parse("on-change").unwrap(),
        source: "()".to_owned(),
        limits: ScriptLimits::default(),
        version: 3,
        require_token: false,
        created_at: now,
        updated_at: now,
    })
}

fn principal(app: AppId) -> Principal {
    Principal {
        user_id: UserId::new(),
        username: Username::parse("ada").unwrap(),
        instance_admin: false,
        roles: HashMap::from([(app, AppRole::Developer)]),
        credential: Credential::Token {
            kind: CredentialKind::Session,
            token_id: TokenId::new(),
        },
        scopes: Scope::ALL.into_iter().collect::<BTreeSet<_>>(),
        app_restriction: Some(app),
        token_name: None,
    }
}

fn item(script: &Script, max_attempts: u32) -> OutboxItem {
    OutboxItem {
        id: ExecutionId::new().as_uuid(),
        app_id: script.app_id,
        trigger_id: TriggerId::new(),
        trigger_kind: TriggerKind::Kv,
        script_id: script.id,
        event: json!({ "kind": "kv", "collection": "users", "key": "ada", "op": "set" }),
        depth: 2,
        attempts: 0,
        max_attempts,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        run_as: Some(principal(script.app_id)),
        dead_letter_id: None,
        claimed_by: String::new(),
    }
}

struct Harness {
    store: Arc<FakeOutboxStore>,
    waker: Arc<FakeWaker>,
    executor: Arc<FakeExecutor>,
    records: Arc<Records>,
    handle: DispatcherHandle,
}

fn start(
    store: Arc<FakeOutboxStore>,
    scripts: &[Arc<Script>],
    executor: FakeExecutor,
    max_in_flight: u32,
) -> Harness {
    start_with(
        store,
        scripts,
        executor,
        DispatcherConfig {
            worker_id: "test-worker".to_owned(),
            max_in_flight,
            lease: Duration::from_secs(60),
            max_run: Duration::from_secs(35),
        },
    )
}

fn start_with(
    store: Arc<FakeOutboxStore>,
    scripts: &[Arc<Script>],
    executor: FakeExecutor,
    config: DispatcherConfig,
) -> Harness {
    let waker = Arc::new(FakeWaker::default());
    let executor = Arc::new(executor);
    let records = Arc::new(Records::default());
    let handle = Dispatcher::spawn(DispatcherDeps {
        store: store.clone(),
        waker: waker.clone(),
        resolver: Arc::new(Scripts(
            scripts.iter().map(|s| (s.id, Arc::clone(s))).collect(),
        )),
        executor: executor.clone(),
        recorder: records.clone(),
        config,
    });
    Harness {
        store,
        waker,
        executor,
        records,
        handle,
    }
}

#[tokio::test(start_paused = true)]
async fn a_successful_run_completes_its_row_and_is_recorded_as_triggered() {
    let app = AppId::new();
    let script = script(app);
    let store = Arc::new(FakeOutboxStore::default());
    let row = item(&script, 5);
    store.push(row.clone(), Duration::ZERO);
    let h = start(
        store,
        std::slice::from_ref(&script),
        FakeExecutor::new(|_| ok()),
        4,
    );

    h.store
        .until(|s| s.contains(&(0, Settled::Complete { attempt: 1 })))
        .await;
    h.handle.shutdown().await;

    let requests = h.executor.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.invocation_type, InvocationType::Trigger);
    assert_eq!(request.script.id, script.id);
    assert_eq!(request.depth, 2, "the run carries its event's depth");
    assert_eq!(
        request.run_as, row.run_as,
        "it runs as the registering user"
    );
    assert!(request.http.is_none());
    let trigger = request.trigger.as_ref().unwrap();
    assert_eq!(trigger.trigger_id, row.trigger_id);
    assert_eq!(trigger.event, row.event);
    assert_eq!(request.request_id.as_str(), row.id.to_string());

    let records = h.records.0.lock().unwrap().clone();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, request.execution_id);
    assert_eq!(records[0].invocation_type, InvocationType::Trigger);
    assert_eq!(records[0].trigger_id, Some(row.trigger_id));
    assert_eq!(records[0].status, ExecutionStatus::Success);
    assert_eq!(records[0].script_version, 3);
    assert_eq!(records[0].http_status, None);
}

#[tokio::test(start_paused = true)]
async fn a_failing_run_is_retried_with_growing_delays_then_given_up() {
    let script = script(AppId::new());
    let store = Arc::new(FakeOutboxStore::default());
    store.push(item(&script, 4), Duration::ZERO);
    let started = Instant::now();
    let h = start(
        store,
        std::slice::from_ref(&script),
        FakeExecutor::new(|_| boom()),
        4,
    );

    h.store
        .until(|s| {
            s.iter()
                .any(|(_, how)| matches!(how, Settled::GiveUp { .. }))
        })
        .await;
    let elapsed = started.elapsed();
    h.handle.shutdown().await;

    let settled = h.store.settled();
    assert_eq!(settled.len(), 4, "{settled:?}");
    let expected_ms = [1000, 2000, 4000];
    for (n, (_, how)) in settled.iter().take(3).enumerate() {
        let Settled::Retry {
            attempt,
            delay,
            error,
        } = how
        else {
            panic!("attempt {} was not retried: {how:?}", n + 1);
        };
        assert_eq!(*attempt, u32::try_from(n).unwrap() + 1);
        assert_eq!(error, "boom");
        let nominal = Duration::from_millis(expected_ms[n]);
        assert!(
            *delay >= nominal.mul_f64(0.8) && *delay <= nominal.mul_f64(1.2),
            "attempt {attempt}: {delay:?} is not within 20% of {nominal:?}"
        );
    }
    assert_eq!(
        settled[3].1,
        Settled::GiveUp {
            attempt: 4,
            error: "boom".to_owned()
        }
    );
    assert!(
        elapsed >= Duration::from_millis(5600),
        "the retries waited out their delays: {elapsed:?}"
    );
    assert_eq!(h.executor.requests.lock().unwrap().len(), 4);
    let records = h.records.0.lock().unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.status == ExecutionStatus::ScriptError
                && r.error.as_deref() == Some("boom")),
        "every failed attempt is recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_script_becomes_a_dead_letter_at_once() {
    let store = Arc::new(FakeOutboxStore::default());
    let gone = script(AppId::new());
    store.push(item(&gone, 5), Duration::ZERO);
    let h = start(store, &[], FakeExecutor::new(|_| ok()), 4);

    h.store
        .until(|s| {
            s.contains(&(
                0,
                Settled::GiveUp {
                    attempt: 1,
                    error: "script deleted".to_owned(),
                },
            ))
        })
        .await;
    h.handle.shutdown().await;
    assert!(h.executor.requests.lock().unwrap().is_empty());
}

/// H4: a run that kills its process never settles its row. Attempts are counted at
/// claim, so once they are spent the row becomes a dead letter instead of a crash loop.
#[tokio::test(start_paused = true)]
async fn a_row_whose_runs_never_settled_becomes_a_dead_letter_when_its_attempts_are_spent() {
    let store = Arc::new(FakeOutboxStore::default());
    let script = script(AppId::new());
    store.push(item(&script, 2), Duration::ZERO);
    // Two processes claim it and die mid-run, each after its lease ends.
    for crashed in ["crashed-1", "crashed-2"] {
        let claimed = store
            .claim_due(crashed, 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        tokio::time::sleep(Duration::from_secs(61)).await;
    }
    let h = start(store, &[script], FakeExecutor::new(|_| ok()), 4);

    h.store
        .until(|s| matches!(s, [(0, Settled::GiveUp { attempt: 3, .. })]))
        .await;
    let settled = h.store.settled();
    let Settled::GiveUp { error, .. } = &settled[0].1 else {
        unreachable!()
    };
    assert!(
        error.contains("claimed 2 times without a settled run"),
        "{error}"
    );
    h.handle.shutdown().await;
    assert!(
        h.executor.requests.lock().unwrap().is_empty(),
        "a spent row is not run a third time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_script_of_another_app_is_never_run() {
    let store = Arc::new(FakeOutboxStore::default());
    let foreign = script(AppId::new());
    let mut row = item(&foreign, 5);
    row.app_id = AppId::new();
    store.push(row, Duration::ZERO);
    let h = start(store, &[foreign], FakeExecutor::new(|_| ok()), 4);

    h.store
        .until(|s| {
            s.iter()
                .any(|(_, how)| matches!(how, Settled::GiveUp { .. }))
        })
        .await;
    h.handle.shutdown().await;
    assert!(h.executor.requests.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_executor_postpones_the_run_without_spending_an_attempt() {
    let script = script(AppId::new());
    let store = Arc::new(FakeOutboxStore::default());
    store.push(item(&script, 1), Duration::ZERO);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let executor = FakeExecutor::new(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            Err(ExecutionError::Overloaded {
                retry_after: Duration::from_secs(2),
            })
        } else {
            ok()
        }
    });
    let h = start(store, &[script], executor, 4);

    h.store
        .until(|s| {
            s.iter()
                .any(|(_, how)| matches!(how, Settled::Complete { .. }))
        })
        .await;
    h.handle.shutdown().await;

    let settled = h.store.settled();
    assert_eq!(settled.len(), 3, "{settled:?}");
    for (_, how) in &settled[..2] {
        let Settled::Defer { attempt, delay } = how else {
            panic!("expected a deferral, got {how:?}");
        };
        assert_eq!(*attempt, 1);
        assert!(*delay >= Duration::from_millis(1600) && *delay <= Duration::from_millis(2400));
    }
    assert_eq!(
        settled[2].1,
        Settled::Complete { attempt: 1 },
        "a one-attempt trigger still got its one attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn at_most_max_in_flight_runs_are_in_flight() {
    let script = script(AppId::new());
    let store = Arc::new(FakeOutboxStore::default());
    for _ in 0..10 {
        store.push(item(&script, 5), Duration::ZERO);
    }
    let mut executor = FakeExecutor::new(|_| ok());
    executor.takes = Duration::from_millis(100);
    let h = start(store, &[script], executor, 3);

    h.store.until(|s| s.len() == 10).await;
    h.handle.shutdown().await;
    assert_eq!(h.executor.most_running.load(Ordering::SeqCst), 3);
    let completed: BTreeSet<usize> = h.store.settled().iter().map(|(i, _)| *i).collect();
    assert_eq!(completed, (0..10).collect(), "every row ran exactly once");
}

#[tokio::test(start_paused = true)]
async fn an_idle_dispatcher_looks_at_the_outbox_only_when_woken_or_every_few_minutes() {
    let store = Arc::new(FakeOutboxStore::default());
    let script = script(AppId::new());
    let h = start(
        store,
        std::slice::from_ref(&script),
        FakeExecutor::new(|_| ok()),
        4,
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.store.claims(), 1);
    tokio::time::sleep(SAFETY_RECHECK - Duration::from_secs(2)).await;
    assert_eq!(h.store.claims(), 1, "no polling while idle");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.store.claims(),
        2,
        "one safety re-check after {SAFETY_RECHECK:?}"
    );

    // A wake-up makes it look at once; afterwards it is idle again.
    h.store.push(item(&script, 5), Duration::ZERO);
    let woken_at = Instant::now();
    h.waker.wake();
    h.store.until(|s| s.len() == 1).await;
    assert!(woken_at.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled_claims = h.store.claims();
    tokio::time::sleep(SAFETY_RECHECK - Duration::from_secs(2)).await;
    assert_eq!(
        h.store.claims(),
        settled_claims,
        "no polling once idle again"
    );
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn it_sleeps_until_the_next_due_row_and_then_runs_it() {
    let store = Arc::new(FakeOutboxStore::default());
    let script = script(AppId::new());
    store.push(item(&script, 5), Duration::from_secs(30));
    let started = Instant::now();
    let h = start(store, &[script], FakeExecutor::new(|_| ok()), 4);

    h.store.until(|s| s.len() == 1).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30) && elapsed < Duration::from_secs(31),
        "ran at {elapsed:?}"
    );
    assert_eq!(
        h.store.claims(),
        2,
        "one look at the start and one at the due time; the run finishing with nothing \
         else due costs no claim"
    );
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_runs_in_flight_then_releases_claims() {
    let store = Arc::new(FakeOutboxStore::default());
    let script = script(AppId::new());
    store.push(item(&script, 5), Duration::ZERO);
    let gate = Arc::new(Notify::new());
    let mut executor = FakeExecutor::new(|_| ok());
    executor.gate = Some(gate.clone());
    let h = start(store, &[script], executor, 4);

    // The run has started and is held at the gate.
    tokio::time::timeout(Duration::from_secs(10), async {
        while h.executor.running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let store = h.store.clone();
    let shutdown = tokio::spawn(h.handle.shutdown());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the run");
    assert!(store.released().is_empty());

    gate.notify_one();
    shutdown.await.unwrap();
    assert_eq!(store.settled(), vec![(0, Settled::Complete { attempt: 1 })]);
    assert_eq!(store.released(), vec!["test-worker".to_owned()]);
}

#[test]
fn worker_ids_name_the_host_and_process_and_never_repeat() {
    let a = DispatcherConfig::worker_id("pi-1");
    let b = DispatcherConfig::worker_id("pi-1");
    assert!(
        a.starts_with(&format!("pi-1:{}:", std::process::id())),
        "{a}"
    );
    assert_ne!(a, b);
}

#[tokio::test(start_paused = true)]
async fn a_busy_dispatcher_claims_ahead_and_completes_many_rows_per_call() {
    let store = Arc::new(FakeOutboxStore::default());
    let script = script(AppId::new());
    for _ in 0..12 {
        store.push(item(&script, 5), Duration::ZERO);
    }
    let mut executor = FakeExecutor::new(|_| ok());
    executor.takes = Duration::from_millis(10);
    let h = start(store, &[script], executor, 2);

    h.store.until(|s| s.len() == 12).await;
    assert!(
        h.store
            .settled()
            .iter()
            .all(|(_, how)| *how == Settled::Complete { attempt: 1 })
    );
    assert_eq!(h.executor.most_running.load(Ordering::SeqCst), 2);
    assert_eq!(
        h.store.claims(),
        1,
        "twelve rows fit in one claim of two slots and fourteen ahead"
    );
    let completions = h.store.completions();
    assert!(
        completions <= 6,
        "{completions} calls to complete twelve rows run two at a time"
    );
    let batches = h.executor.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 12, "{batches:?}");
    assert!(
        batches.iter().any(|&size| size > 1),
        "a backlog is handed over several rows at a time: {batches:?}"
    );
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_row_that_waited_too_long_for_a_slot_is_handed_back_and_run_afresh() {
    let store = Arc::new(FakeOutboxStore::default());
    let script = script(AppId::new());
    for _ in 0..3 {
        store.push(item(&script, 5), Duration::ZERO);
    }
    let mut executor = FakeExecutor::new(|_| ok());
    executor.takes = Duration::from_secs(2);
    // A row may wait one second for its slot; each run takes two.
    let h = start_with(
        store,
        &[script],
        executor,
        DispatcherConfig {
            worker_id: "test-worker".to_owned(),
            max_in_flight: 1,
            lease: Duration::from_secs(10),
            max_run: Duration::from_secs(9),
        },
    );

    h.store
        .until(|s| {
            s.iter()
                .filter(|(_, how)| matches!(how, Settled::Complete { .. }))
                .count()
                == 3
        })
        .await;
    let settled = h.store.settled();
    let handed_back: Vec<usize> = settled
        .iter()
        .filter(|(_, how)| {
            *how == Settled::Defer {
                attempt: 1,
                delay: Duration::ZERO,
            }
        })
        .map(|(row, _)| *row)
        .collect();
    assert!(
        handed_back.contains(&1) && handed_back.contains(&2),
        "the rows queued behind the first were handed back: {settled:?}"
    );
    assert!(
        settled.contains(&(0, Settled::Complete { attempt: 1 })),
        "{settled:?}"
    );
    assert_eq!(h.executor.most_running.load(Ordering::SeqCst), 1);
    h.handle.shutdown().await;
}

//! The in-process executor: the async face of the synchronous engine.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use picloud_shared::config::{ConfigError, EnvLookup};
use picloud_shared::seams::too_late;
use picloud_shared::{
    CompileError, ExecutionError, ExecutionReport, ExecutionRequest, ExecutorClient,
    SandboxCeiling, SandboxLimits, Script, ScriptChangeObserver, ScriptId, ScriptValidator,
};

use tokio::sync::oneshot;

use crate::compiled_cache::{CompiledCache, DEFAULT_COMPILED_CACHE_BYTES};
use crate::engine::{CompiledScript, RunOutput, ScriptEngine, execution_stack_size};
use crate::gate::{ExecutionGate, ExecutionPermit, GateConfig};
use crate::pool::WorkerPool;
use crate::sdk::ScriptServices;

/// How long past a run's own timeout the async side waits before giving up on the
/// blocking thread. The deadline check inside the engine is the real stop; this only
/// covers a thread stuck where the check cannot reach (and the time to compile).
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// The longest source compiled inline, on the thread that asked for its first run
/// (compiling 2 KiB takes well under a tenth of a millisecond); a longer one is compiled
/// on a script worker.
pub const INLINE_COMPILE_MAX_SOURCE: usize = 2 * 1024;

/// Everything the in-process executor is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// The instance-wide sandbox ceiling.
    pub ceiling: SandboxCeiling,
    /// Concurrency bound and queue wait.
    pub gate: GateConfig,
    /// The compiled-script cache's budget, in estimated bytes (see
    /// [`crate::compiled_cache`]).
    pub compiled_cache_bytes: usize,
    /// How long a run may go on inline, on a runtime made by
    /// [`inline_runtime`](crate::inline_runtime), before it moves to a script worker;
    /// zero runs everything on the workers.
    pub inline_slice: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            ceiling: SandboxCeiling::default(),
            gate: GateConfig::default(),
            compiled_cache_bytes: DEFAULT_COMPILED_CACHE_BYTES,
            inline_slice: crate::INLINE_SLICE,
        }
    }
}

impl ExecutorConfig {
    /// Reads the `PICLOUD_SANDBOX_*` ceiling and the gate variables
    /// (`PICLOUD_MAX_CONCURRENT_EXECUTIONS`, `PICLOUD_EXECUTION_QUEUE_TIMEOUT_MS`).
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        Ok(Self {
            ceiling: SandboxCeiling::from_env(env)?,
            gate: GateConfig::from_env(env)?,
            ..Self::default()
        })
    }
}

/// Runs scripts in this process: bounded by the [`ExecutionGate`], compiled once per script
/// version (the code kept in a cache bounded in bytes). On a runtime made by
/// [`inline_runtime`](crate::inline_runtime), a script first runs inline, on the thread
/// that asked, for at most its slice ([`crate::INLINE_SLICE`]); a run that outgrows it,
/// and every run elsewhere, is handed to a long-lived script worker thread under a
/// wall-clock deadline. Clones share the engine, the gate, the workers and the
/// compiled-script cache.
#[derive(Debug, Clone)]
pub struct LocalExecutorClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: ScriptEngine,
    gate: ExecutionGate,
    workers: WorkerPool,
    compiled: CompiledCache,
    compiles: AtomicU64,
    inline_slice: Duration,
    inline_runs: AtomicU64,
    inline_moves: AtomicU64,
    /// What scripts' SDK calls (`kv::…`) reach; set once, at construction.
    services: OnceLock<ScriptServices>,
}

impl LocalExecutorClient {
    /// Builds the engine for the ceiling and the gate. Script workers start on demand, up
    /// to one per gate slot (a run holds its slot until it ends, so no run ever waits for
    /// a worker), each with the stack a run at the ceiling's limits needs.
    pub fn new(config: ExecutorConfig) -> Self {
        if !crate::allocator_installed() {
            tracing::warn!(
                "the binary does not install RunMemoryAllocator: a run's memory is not \
                 bounded by max_memory_bytes"
            );
        }
        let gate = ExecutionGate::new(config.gate);
        let workers = WorkerPool::new(
            gate.capacity(),
            execution_stack_size(&config.ceiling.limits()),
        );
        Self {
            inner: Arc::new(Inner {
                engine: ScriptEngine::new(config.ceiling),
                gate,
                workers,
                compiled: CompiledCache::new(config.compiled_cache_bytes),
                compiles: AtomicU64::new(0),
                inline_slice: config.inline_slice,
                inline_runs: AtomicU64::new(0),
                inline_moves: AtomicU64::new(0),
                services: OnceLock::new(),
            }),
        }
    }

    /// Like [`new`](Self::new), with the services scripts can call (`kv::collection(…)`),
    /// driven on `services.runtime` from each run's own thread. Without them, every
    /// service call throws, saying the service is not available.
    pub fn with_services(config: ExecutorConfig, services: ScriptServices) -> Self {
        let client = Self::new(config);
        // A fresh client: nothing can have set the cell yet.
        let _ = client.inner.services.set(services);
        client
    }

    /// The engine, for validation and direct use.
    pub fn engine(&self) -> &ScriptEngine {
        &self.inner.engine
    }

    /// The gate bounding concurrent executions.
    pub fn gate(&self) -> &ExecutionGate {
        &self.inner.gate
    }

    /// How many times a script was compiled for execution since start-up (a cache miss
    /// each); a metric of how well the compiled-script cache works.
    pub fn compile_count(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    /// How many runs finished inline, on the thread that asked for them, since start-up.
    pub fn inline_runs(&self) -> u64 {
        self.inner.inline_runs.load(Ordering::Relaxed)
    }

    /// How many inline attempts outgrew their slice and ran again on a worker.
    pub fn runs_moved_to_workers(&self) -> u64 {
        self.inner.inline_moves.load(Ordering::Relaxed)
    }

    /// How many script worker threads are alive (started on demand, retired when idle).
    pub fn worker_threads(&self) -> usize {
        self.inner.workers.workers()
    }

    /// How many scripts have compiled code cached.
    pub fn cached_scripts(&self) -> usize {
        self.inner.compiled.len()
    }

    /// The estimated bytes the cached compiled code holds; at most the configured
    /// [`ExecutorConfig::compiled_cache_bytes`].
    pub fn cached_bytes(&self) -> usize {
        self.inner.compiled.bytes()
    }
}

impl Inner {
    fn compiled(
        &self,
        script: &Script,
        limits: SandboxLimits,
    ) -> Result<Arc<CompiledScript>, CompileError> {
        if let Some(compiled) = self.compiled.get(script.id, script.version) {
            return Ok(compiled);
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let compiled = Arc::new(self.engine.compile(&script.source, limits)?);
        self.compiled.insert(
            script.id,
            script.version,
            Arc::clone(&compiled),
            script.source.len(),
        );
        Ok(compiled)
    }

    /// Runs `request` on this thread if its script is short enough
    /// ([`CompiledScript::run_inline`]). A script not compiled yet is compiled here only
    /// if its source is at most [`INLINE_COMPILE_MAX_SOURCE`]: compiling takes time in
    /// proportion to the source (tens of milliseconds near the size limit). `None` when
    /// the run belongs on a worker.
    fn run_inline(
        &self,
        request: &ExecutionRequest,
        limits: SandboxLimits,
    ) -> Option<Result<RunOutput, Failure>> {
        let script = &request.script;
        if self.inline_slice.is_zero() || !crate::engine::inline_stack_fits(&limits) {
            return None;
        }
        let compiled = match self.compiled.get(script.id, script.version) {
            Some(compiled) => compiled,
            None if script.source.len() <= INLINE_COMPILE_MAX_SOURCE => {
                // A compile error is the run's answer, the same as on a worker.
                match self.compiled(script, limits) {
                    Ok(compiled) => compiled,
                    Err(err) => return Some(Ok(compile_failed(err))),
                }
            }
            None => return None,
        };
        if !compiled.fits_inline() {
            return None;
        }
        let output = std::panic::catch_unwind(AssertUnwindSafe(|| {
            compiled.run_inline(request, self.services.get(), self.inline_slice)
        }));
        match output {
            Ok(Some(output)) => {
                self.inline_runs.fetch_add(1, Ordering::Relaxed);
                Some(Ok(output))
            }
            Ok(None) => {
                self.inline_moves.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(panic) => Some(Err(Failure::Internal(panic_message(panic.as_ref())))),
        }
    }

    fn run(&self, request: &ExecutionRequest, limits: SandboxLimits) -> RunOutput {
        match self.compiled(&request.script, limits) {
            Ok(compiled) => compiled.run_with_services(request, self.services.get()),
            Err(err) => compile_failed(err),
        }
    }
}

/// The output of a run whose script does not compile.
fn compile_failed(err: CompileError) -> RunOutput {
    RunOutput {
        outcome: Err(ExecutionError::Script {
            message: err.message,
            line: Some(err.line),
            column: Some(err.column),
        }),
        logs: Vec::new(),
    }
}

#[async_trait]
impl ExecutorClient for LocalExecutorClient {
    async fn execute(&self, request: ExecutionRequest) -> ExecutionReport {
        let execution_id = request.execution_id;
        let permit = match self.inner.gate.acquire().await {
            Ok(permit) => permit,
            Err(err) => return refused(execution_id, err),
        };

        let limits = self.inner.engine.effective_limits(&request.script.limits);
        let script_id = request.script.id;
        let started_at = Utc::now();
        let started = Instant::now();
        let ran = match self.inner.run_inline(&request, limits) {
            Some(inline) => {
                drop(permit);
                inline
            }
            None => {
                let inner = Arc::clone(&self.inner);
                run_on_worker(&self.inner.workers, permit, limits.timeout, move || {
                    inner.run(&request, limits)
                })
                .await
            }
        };
        let (outcome, logs) = match ran {
            Ok(output) => (output.outcome, output.logs),
            Err(failure) => failed(script_id, execution_id, limits, failure),
        };
        ExecutionReport {
            execution_id,
            outcome,
            logs,
            duration: started.elapsed(),
            started_at,
        }
    }

    /// Runs the batch in one execution slot, as one job on one worker: one hand-over for
    /// all of it. The backstop is the sum of the runs' timeouts plus [`TIMEOUT_GRACE`];
    /// if it fires, the run in progress is reported as timed out and the rest are not
    /// started.
    async fn execute_batch(
        &self,
        requests: Vec<ExecutionRequest>,
        start_within: Option<Duration>,
    ) -> Vec<Option<ExecutionReport>> {
        if requests.len() < 2 {
            // Nothing to save: the single path, with its own backstop.
            return picloud_shared::seams::execute_each(self, requests, start_within).await;
        }
        let called = Instant::now();
        let permit = match self.inner.gate.acquire().await {
            Ok(permit) => permit,
            Err(err) => {
                return requests
                    .iter()
                    .map(|request| Some(refused(request.execution_id, err.clone())))
                    .collect();
            }
        };
        let runs: Vec<(ExecutionRequest, SandboxLimits)> = requests
            .into_iter()
            .map(|request| {
                let limits = self.inner.engine.effective_limits(&request.script.limits);
                (request, limits)
            })
            .collect();
        let heads: Vec<(ScriptId, picloud_shared::ExecutionId, SandboxLimits)> = runs
            .iter()
            .map(|(request, limits)| (request.script.id, request.execution_id, *limits))
            .collect();
        let backstop = heads.iter().fold(TIMEOUT_GRACE, |sum, (_, _, limits)| {
            sum.saturating_add(limits.timeout)
        });

        let progress = Arc::new(BatchProgress::default());
        let (done, finished) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let worker_progress = Arc::clone(&progress);
        let submitted = self.inner.workers.submit(Box::new(move || {
            for (request, limits) in &runs {
                if too_late(called, start_within)
                    || worker_progress.cancelled.load(Ordering::Acquire)
                {
                    worker_progress.push(None);
                    continue;
                }
                let started_at = Utc::now();
                let started = Instant::now();
                let output =
                    std::panic::catch_unwind(AssertUnwindSafe(|| inner.run(request, *limits)))
                        .map_err(|panic| Failure::Internal(panic_message(panic.as_ref())));
                worker_progress.push(Some(Finished {
                    output,
                    started_at,
                    duration: started.elapsed(),
                }));
            }
            Box::new(move || {
                drop(permit);
                let _ = done.send(());
            })
        }));
        let timed_out = match submitted {
            Err(err) => {
                let message = err.to_string();
                return heads
                    .iter()
                    .map(|(script_id, execution_id, limits)| {
                        let (outcome, logs) = failed(
                            *script_id,
                            *execution_id,
                            *limits,
                            Failure::Internal(message.clone()),
                        );
                        Some(report(
                            *execution_id,
                            outcome,
                            logs,
                            Duration::ZERO,
                            Utc::now(),
                        ))
                    })
                    .collect();
            }
            Ok(()) => tokio::time::timeout(backstop, finished).await.is_err(),
        };
        if timed_out {
            progress.cancelled.store(true, Ordering::Release);
        }
        let finished = progress.take();
        let in_progress = finished.len();
        let mut finished = finished.into_iter();
        heads
            .iter()
            .enumerate()
            .map(
                |(index, (script_id, execution_id, limits))| match finished.next() {
                    Some(Some(Finished {
                        output,
                        started_at,
                        duration,
                    })) => {
                        let (outcome, logs) = match output {
                            Ok(output) => (output.outcome, output.logs),
                            Err(failure) => failed(*script_id, *execution_id, *limits, failure),
                        };
                        Some(report(*execution_id, outcome, logs, duration, started_at))
                    }
                    Some(None) => None,
                    None if timed_out && index == in_progress => {
                        let (outcome, logs) =
                            failed(*script_id, *execution_id, *limits, Failure::Timeout);
                        Some(report(*execution_id, outcome, logs, backstop, Utc::now()))
                    }
                    None => None,
                },
            )
            .collect()
    }
}

/// What a batch's worker has done so far, shared with the caller so that a backstop can
/// tell the runs that finished from those that never started.
#[derive(Default)]
struct BatchProgress {
    finished: Mutex<Vec<Option<Finished>>>,
    /// The caller gave up: the worker starts no further run.
    cancelled: AtomicBool,
}

impl BatchProgress {
    // Pushes and takes are whole under the lock; one left by a panic is still usable.
    fn push(&self, run: Option<Finished>) {
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(run);
    }

    fn take(&self) -> Vec<Option<Finished>> {
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One run of a batch that ended.
struct Finished {
    output: Result<RunOutput, Failure>,
    started_at: DateTime<Utc>,
    duration: Duration,
}

fn report(
    execution_id: picloud_shared::ExecutionId,
    outcome: Result<picloud_shared::ScriptResponse, ExecutionError>,
    logs: Vec<picloud_shared::LogEntry>,
    duration: Duration,
    started_at: DateTime<Utc>,
) -> ExecutionReport {
    ExecutionReport {
        execution_id,
        outcome,
        logs,
        duration,
        started_at,
    }
}

/// The report of a run the gate turned away.
fn refused(execution_id: picloud_shared::ExecutionId, err: ExecutionError) -> ExecutionReport {
    report(
        execution_id,
        Err(err),
        Vec::new(),
        Duration::ZERO,
        Utc::now(),
    )
}

/// The outcome of a run that produced no output, logged once here.
fn failed(
    script_id: ScriptId,
    execution_id: picloud_shared::ExecutionId,
    limits: SandboxLimits,
    failure: Failure,
) -> (
    Result<picloud_shared::ScriptResponse, ExecutionError>,
    Vec<picloud_shared::LogEntry>,
) {
    match failure {
        Failure::Timeout => {
            tracing::warn!(%script_id, %execution_id, "script outran its deadline check; abandoning its thread");
            let limit = limits.timeout;
            (Err(ExecutionError::Timeout { limit }), Vec::new())
        }
        Failure::Internal(message) => {
            tracing::error!(%script_id, %execution_id, %message, "script execution failed");
            (Err(ExecutionError::Internal { message }), Vec::new())
        }
    }
}

/// Why [`run_on_worker`] has no output.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The backstop fired before the run finished.
    Timeout,
    /// The run could not start, or panicked.
    Internal(String),
}

/// Runs `run` on one of the script workers (threads whose stack fits the deepest value
/// the ceiling allows; see [`crate::pool`]). Waits at most `timeout` plus
/// [`TIMEOUT_GRACE`]; past that the worker is left to finish the run on its own. The
/// permit travels with the job, so the slot stays taken until the work has really stopped.
async fn run_on_worker(
    workers: &WorkerPool,
    permit: ExecutionPermit,
    timeout: Duration,
    run: impl FnOnce() -> RunOutput + Send + 'static,
) -> Result<RunOutput, Failure> {
    let (done, finished) = oneshot::channel();
    workers
        .submit(Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(run))
                .map_err(|panic| Failure::Internal(panic_message(panic.as_ref())));
            Box::new(move || {
                // The work has stopped: free the slot before the caller hears of it, so
                // the caller never sees its own run still holding it.
                drop(permit);
                // The caller may have stopped waiting; nobody is left to tell.
                let _ = done.send(result);
            })
        }))
        .map_err(|err| Failure::Internal(err.to_string()))?;

    match tokio::time::timeout(timeout + TIMEOUT_GRACE, finished).await {
        Ok(Ok(result)) => result,
        Ok(Err(_closed)) => Err(Failure::Internal(
            "script thread ended without a result".to_owned(),
        )),
        Err(_elapsed) => Err(Failure::Timeout),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text payload".to_owned());
    format!("script execution panicked: {text}")
}

impl ScriptChangeObserver for LocalExecutorClient {
    fn script_changed(&self, id: ScriptId) {
        self.inner.compiled.remove(id);
    }
}

#[async_trait]
impl ScriptValidator for LocalExecutorClient {
    /// [`ScriptEngine`]'s validation, which does not pass the gate: saving a script is
    /// never refused because scripts are running.
    async fn validate(&self, source: &str) -> Result<(), CompileError> {
        self.inner.engine.validate(source).await
    }

    fn ceiling(&self) -> SandboxCeiling {
        self.inner.engine.ceiling()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn gate() -> ExecutionGate {
        ExecutionGate::new(GateConfig {
            max_concurrent: 1,
            max_wait: Duration::ZERO,
        })
    }

    fn workers() -> WorkerPool {
        WorkerPool::new(1, 1024 * 1024)
    }

    fn hello_request() -> ExecutionRequest {
        let now = chrono::Utc::now();
        ExecutionRequest {
            execution_id: picloud_shared::ExecutionId::new(),
            script: Arc::new(Script {
                id: ScriptId::new(),
                app_id: picloud_shared::AppId::new(),
                name: picloud_shared::ScriptName::parse("hello").unwrap(),
                source: r#""hello""#.to_owned(),
                limits: picloud_shared::ScriptLimits::default(),
                version: 1,
                require_token: false,
                created_at: now,
                updated_at: now,
            }),
            invocation_type: picloud_shared::InvocationType::Http,
            request_id: picloud_shared::RequestId::generate(),
            http: None,
            trigger: None,
            depth: 0,
            run_as: None,
            caller: None,
        }
    }

    #[tokio::test]
    async fn runs_one_after_another_share_one_worker() {
        let client = LocalExecutorClient::new(ExecutorConfig::default());
        assert_eq!(client.worker_threads(), 0, "no thread before the first run");
        for _ in 0..50 {
            let report = client.execute(hello_request()).await;
            assert_eq!(report.outcome.unwrap().body.as_ref(), b"hello");
        }
        assert_eq!(
            client.worker_threads(),
            1,
            "each run reuses the worker the previous one left free"
        );
        assert_eq!(client.gate().available(), client.gate().capacity());
    }

    #[tokio::test]
    async fn a_panicking_run_becomes_an_internal_failure() {
        let gate = gate();
        let permit = gate.acquire().await.unwrap();
        let result = run_on_worker(&workers(), permit, Duration::from_secs(5), || {
            panic!("engine bug")
        })
        .await;
        assert_eq!(
            result.unwrap_err(),
            Failure::Internal("script execution panicked: engine bug".to_owned())
        );
        assert_eq!(gate.available(), 1, "the slot is released");
    }

    #[tokio::test]
    async fn the_backstop_gives_up_but_the_slot_stays_taken_until_the_thread_ends() {
        let gate = gate();
        let permit = gate.acquire().await.unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let result = run_on_worker(&workers(), permit, Duration::ZERO, move || {
            // Stands in for work the deadline check cannot reach.
            let _ = released.recv();
            RunOutput {
                outcome: Err(ExecutionError::Internal {
                    message: "unused".to_owned(),
                }),
                logs: Vec::new(),
            }
        })
        .await;
        assert_eq!(result.unwrap_err(), Failure::Timeout);
        assert_eq!(
            gate.available(),
            0,
            "the abandoned thread still holds its slot"
        );
        release.send(()).unwrap();
        let reacquired = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if gate.available() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(reacquired.is_ok(), "the slot frees once the thread ends");
    }

    #[test]
    fn config_reads_the_sandbox_and_gate_variables() {
        let env: HashMap<String, String> = [
            ("PICLOUD_SANDBOX_MAX_OPERATIONS", "1234"),
            ("PICLOUD_MAX_CONCURRENT_EXECUTIONS", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = ExecutorConfig::from_env(&env).unwrap();
        assert_eq!(config.ceiling.limits().max_operations, 1234);
        assert_eq!(config.gate.max_concurrent, 3);
        assert_eq!(
            ExecutorConfig::from_env(&HashMap::new()).unwrap(),
            ExecutorConfig::default()
        );
    }
}

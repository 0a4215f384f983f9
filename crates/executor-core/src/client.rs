//! The in-process executor: the async face of the synchronous engine.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use picloud_shared::config::{ConfigError, EnvLookup};
use picloud_shared::{
    CompileError, ExecutionError, ExecutionReport, ExecutionRequest, ExecutorClient,
    SandboxCeiling, SandboxLimits, Script, ScriptChangeObserver, ScriptId, ScriptValidator,
};

use crate::engine::{CompiledScript, RunOutput, ScriptEngine};
use crate::gate::{ExecutionGate, GateConfig};

/// How long past a run's own timeout the async side waits before giving up on the
/// blocking thread. The deadline check inside the engine is the real stop; this only
/// covers a thread stuck where the check cannot reach (and the time to compile).
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// Everything the in-process executor is configured with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// The instance-wide sandbox ceiling.
    pub ceiling: SandboxCeiling,
    /// Concurrency bound and queue wait.
    pub gate: GateConfig,
}

impl ExecutorConfig {
    /// Reads the `PICLOUD_SANDBOX_*` ceiling and the gate variables
    /// (`PICLOUD_MAX_CONCURRENT_EXECUTIONS`, `PICLOUD_EXECUTION_QUEUE_TIMEOUT_MS`).
    pub fn from_env(env: &impl EnvLookup) -> Result<Self, ConfigError> {
        Ok(Self {
            ceiling: SandboxCeiling::from_env(env)?,
            gate: GateConfig::from_env(env)?,
        })
    }
}

/// Runs scripts in this process: bounded by the [`ExecutionGate`], compiled once per script
/// version, executed on tokio's blocking pool under a wall-clock deadline. Clones share
/// the engine, the gate and the compiled-script cache.
#[derive(Debug, Clone)]
pub struct LocalExecutorClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: ScriptEngine,
    gate: ExecutionGate,
    compiled: RwLock<HashMap<ScriptId, CachedScript>>,
    compiles: AtomicU64,
}

#[derive(Debug)]
struct CachedScript {
    version: i64,
    compiled: Arc<CompiledScript>,
}

impl LocalExecutorClient {
    /// Builds the engine for the ceiling and the gate.
    pub fn new(config: ExecutorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: ScriptEngine::new(config.ceiling),
                gate: ExecutionGate::new(config.gate),
                compiled: RwLock::new(HashMap::new()),
                compiles: AtomicU64::new(0),
            }),
        }
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

    /// How many scripts have compiled code cached.
    pub fn cached_scripts(&self) -> usize {
        self.inner
            .compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Inner {
    fn compiled(
        &self,
        script: &Script,
        limits: SandboxLimits,
    ) -> Result<Arc<CompiledScript>, CompileError> {
        let cached = self
            .compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&script.id)
            .filter(|cached| cached.version == script.version)
            .map(|cached| Arc::clone(&cached.compiled));
        if let Some(compiled) = cached {
            return Ok(compiled);
        }

        self.compiles.fetch_add(1, Ordering::Relaxed);
        let compiled = Arc::new(self.engine.compile(&script.source, limits)?);
        let mut cache = self
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // A slow run of an older version must not replace a newer version's code.
        let newer_cached = cache
            .get(&script.id)
            .is_some_and(|cached| cached.version > script.version);
        if !newer_cached {
            cache.insert(
                script.id,
                CachedScript {
                    version: script.version,
                    compiled: Arc::clone(&compiled),
                },
            );
        }
        Ok(compiled)
    }

    fn run(&self, request: &ExecutionRequest, limits: SandboxLimits) -> RunOutput {
        match self.compiled(&request.script, limits) {
            Ok(compiled) => compiled.run(request),
            Err(err) => RunOutput {
                outcome: Err(ExecutionError::Script {
                    message: err.message,
                    line: Some(err.line),
                    column: Some(err.column),
                }),
                logs: Vec::new(),
            },
        }
    }
}

#[async_trait]
impl ExecutorClient for LocalExecutorClient {
    async fn execute(&self, request: ExecutionRequest) -> ExecutionReport {
        let execution_id = request.execution_id;
        let permit = match self.inner.gate.acquire().await {
            Ok(permit) => permit,
            Err(err) => {
                return ExecutionReport {
                    execution_id,
                    outcome: Err(err),
                    logs: Vec::new(),
                    duration: Duration::ZERO,
                };
            }
        };

        let limits = self.inner.engine.effective_limits(&request.script.limits);
        let script_id = request.script.id;
        let started = Instant::now();
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || {
            // The slot stays taken until the thread is really done, even when the caller
            // has stopped waiting for it.
            let _permit = permit;
            std::panic::catch_unwind(AssertUnwindSafe(|| inner.run(&request, limits)))
        });

        let (outcome, logs) = match tokio::time::timeout(limits.timeout + TIMEOUT_GRACE, task).await
        {
            Ok(Ok(Ok(output))) => (output.outcome, output.logs),
            Ok(Ok(Err(panic))) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(%script_id, %execution_id, %message, "script execution panicked");
                (Err(internal("script execution panicked")), Vec::new())
            }
            Ok(Err(join_error)) => {
                tracing::error!(%script_id, %execution_id, error = %join_error, "script execution task failed");
                (Err(internal("script execution task failed")), Vec::new())
            }
            Err(_elapsed) => {
                tracing::warn!(%script_id, %execution_id, "script outran its deadline check; abandoning its thread");
                (
                    Err(ExecutionError::Timeout {
                        limit: limits.timeout,
                    }),
                    Vec::new(),
                )
            }
        };
        ExecutionReport {
            execution_id,
            outcome,
            logs,
            duration: started.elapsed(),
        }
    }
}

fn internal(message: &str) -> ExecutionError {
    ExecutionError::Internal {
        message: message.to_owned(),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned())
}

impl ScriptChangeObserver for LocalExecutorClient {
    fn script_changed(&self, id: ScriptId) {
        self.inner
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

impl ScriptValidator for LocalExecutorClient {
    fn validate(&self, source: &str) -> Result<(), CompileError> {
        self.inner.engine.validate(source)
    }

    fn ceiling(&self) -> SandboxCeiling {
        self.inner.engine.ceiling()
    }
}

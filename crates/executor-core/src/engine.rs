//! The Rhai engine and its sandbox.
//!
//! Rhai applies its structural limits (string, array and map size, call depth, expression
//! depth) engine-wide, so there is one shared engine per distinct set of those five
//! values: the instance ceiling's engine is built at start-up, and a script that lowers any
//! of them gets an engine built once for its profile and cached. Per-run limits (the
//! operation budget and the wall-clock deadline) differ between runs of the same engine
//! and are enforced by the progress callback against the thread-local run state.
//!
//! The sandbox: `print`, `debug`, `eval` and `import` are disabled symbols, so a script
//! using them does not compile; the module resolver resolves nothing and no module may be
//! loaded, should `import` ever get through; `sleep` never outlasts the run's deadline.
//!
//! Rhai's size checks miss values grown through `a[i] = v` and `m[k] = v` (they measure
//! the assigned value, not the container), so the memory a run holds is counted by the
//! allocator instead ([`crate::memory`]) and checked on every operation.
//!
//! Known gap, Rhai's: a single native call walking a deeply nested value (printing or
//! comparing it) is not interrupted by the deadline, so the run's thread and slot stay
//! busy until it returns, although the caller is answered at the backstop.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use picloud_shared::{
    CompileError, ExecutionError, ExecutionRequest, LogEntry, SandboxCeiling, SandboxLimits,
    ScriptLimits, ScriptResponse, ScriptValidator, ServiceContext,
};
use rhai::module_resolvers::DummyModuleResolver;
use rhai::{AST, Dynamic, Engine, FLOAT, FuncRegistration, INT, Scope, Shared};

use crate::json::SizeLimits;
use crate::run_state::{self, RunState, SliceEnd, StopReason};
use crate::sdk::{RunServices, ScriptServices};
use crate::{ctx, error, log, memory, response, sdk};

/// Most engines kept for per-script profiles. Past it an arbitrary one is dropped from the
/// cache (scripts compiled with it keep it alive until they are dropped themselves).
pub const MAX_ENGINE_PROFILES: usize = 64;

/// Stack for everything but walking nested data: the evaluator itself at the deepest call
/// depth, the compiler, the response conversion.
const BASE_STACK: usize = 16 * 1024 * 1024;

/// Stack one level of nested data can take while Rhai walks it recursively (cloning,
/// dropping, measuring, printing, comparing). Measured at about 2.6 KiB in release builds
/// and 13 KiB in debug builds for the hungriest walk (printing), plus headroom.
const STACK_PER_NESTING_LEVEL: usize = if cfg!(debug_assertions) {
    16 * 1024
} else {
    4 * 1024
};

/// The most stack reserved for one run. It is address space, not memory: only the pages
/// a run actually touches are ever backed, and they are returned when its thread exits.
const MAX_STACK: usize = 1024 * 1024 * 1024;

/// The longest an inline run may hold a runtime thread by default
/// ([`ExecutorConfig::inline_slice`](crate::ExecutorConfig::inline_slice)): past it, the
/// run is abandoned and started again on a script worker. The clock is read every 32
/// operations, and an inline run holds at most [`INLINE_MAX_HEAP`], so no operation in
/// between takes long.
pub const INLINE_SLICE: Duration = Duration::from_micros(500);

/// The most heap an inline run may hold. Past it the run moves to a worker: besides
/// keeping inline runs small, this bounds how deeply nested a value an inline run can
/// build, and so the stack a runtime thread needs ([`inline_stack_size`]).
pub const INLINE_MAX_HEAP: usize = 256 * 1024;

/// How many times an inline attempt of a script may run out of time before the script's
/// runs go straight to a worker. One is not enough: a short script's thread can be
/// preempted in the middle of its slice.
const INLINE_CLOCK_STRIKES: u8 = 3;

/// The least heap one more level of nesting takes: a value (16 bytes) in an allocation of
/// its own, the array or map it sits in.
const MIN_BYTES_PER_NESTING_LEVEL: usize = 16;

/// Symbols a script may not use at all.
const DISABLED_SYMBOLS: [&str; 4] = ["print", "debug", "eval", "import"];

/// The five limits Rhai applies engine-wide; one engine is built per distinct profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EngineProfile {
    /// Longest string, in bytes.
    pub max_string_size: usize,
    /// Most elements in arrays (and bytes in blobs).
    pub max_array_size: usize,
    /// Most entries in object maps.
    pub max_map_size: usize,
    /// Deepest chain of nested function calls.
    pub max_call_depth: usize,
    /// Deepest expression nesting.
    pub max_expr_depth: usize,
}

impl From<&SandboxLimits> for EngineProfile {
    fn from(limits: &SandboxLimits) -> Self {
        Self {
            max_string_size: limits.max_string_size,
            max_array_size: limits.max_array_size,
            max_map_size: limits.max_map_size,
            max_call_depth: limits.max_call_depth,
            max_expr_depth: limits.max_expr_depth,
        }
    }
}

fn build_engine(profile: &EngineProfile) -> Engine {
    let mut engine = Engine::new();
    // Rhai reads 0 as "unlimited" for these; a limit of 0 from the environment must not
    // turn into no limit at all.
    engine
        .set_max_string_size(profile.max_string_size.max(1))
        .set_max_array_size(profile.max_array_size.max(1))
        .set_max_map_size(profile.max_map_size.max(1))
        .set_max_call_levels(profile.max_call_depth)
        .set_max_expr_depths(profile.max_expr_depth.max(1), profile.max_expr_depth.max(1))
        // The operation budget is per run, so the progress callback enforces it.
        .set_max_operations(0)
        .set_max_modules(0)
        .set_module_resolver(DummyModuleResolver::new())
        .on_print(|_| {})
        .on_debug(|_, _, _| {})
        .on_progress(run_state::on_progress);
    for symbol in DISABLED_SYMBOLS {
        engine.disable_symbol(symbol);
    }
    engine.register_static_module("log", Shared::new(log::module()));
    // Stateful modules too are registered once: they find their run's context in the
    // per-run state.
    sdk::register(&mut engine);

    // Registered in the engine's own namespace, these shadow the standard `sleep`.
    FuncRegistration::new("sleep")
        .with_volatility(true)
        .register_into_engine(&mut engine, |seconds: INT| {
            run_state::sleep(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
        });
    FuncRegistration::new("sleep")
        .with_volatility(true)
        .register_into_engine(&mut engine, |seconds: FLOAT| {
            let requested = if seconds.is_finite() && seconds > 0.0 {
                Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
            } else {
                Duration::ZERO
            };
            run_state::sleep(requested)
        });
    engine
}

/// The stack a thread running a script under `limits` needs so that no value the script
/// can build overflows it.
///
/// Rhai walks nested values recursively, and a script can nest arrays and maps as deep as
/// their size limits allow (each level is one element or entry). A stack overflow aborts
/// the whole process, so the thread gets room for the deepest value those limits permit,
/// capped at 1 GiB.
pub fn execution_stack_size(limits: &SandboxLimits) -> usize {
    let max_nesting = limits
        .max_array_size
        .saturating_add(limits.max_map_size)
        .saturating_add(1);
    max_nesting
        .saturating_mul(STACK_PER_NESTING_LEVEL)
        .saturating_add(BASE_STACK)
        .min(MAX_STACK)
}

/// The stack a runtime thread needs to run scripts under `limits` inline: values an
/// inline run can reach before [`INLINE_MAX_HEAP`] stops it are at most one level per
/// [`MIN_BYTES_PER_NESTING_LEVEL`] deep, plus what a single operation adds at once
/// (`parse_json` of a literal, bounded by the expression depth). Never more than
/// [`execution_stack_size`], which fits any value at all.
pub fn inline_stack_size(limits: &SandboxLimits) -> usize {
    let max_nesting = (INLINE_MAX_HEAP / MIN_BYTES_PER_NESTING_LEVEL)
        .saturating_add(limits.max_expr_depth)
        .saturating_add(1);
    max_nesting
        .saturating_mul(STACK_PER_NESTING_LEVEL)
        .saturating_add(BASE_STACK)
        .min(execution_stack_size(limits))
}

thread_local! {
    /// The stack this thread was created with, when it was made for inline runs
    /// ([`inline_runtime`]); 0 on every other thread, which never runs a script inline.
    static INLINE_STACK: Cell<usize> = const { Cell::new(0) };
}

/// A multi-threaded tokio runtime (I/O and time enabled) whose threads, workers and
/// blocking ones alike, have the stack to run scripts under `limits` inline
/// ([`inline_stack_size`]): on it, the executor runs a short script on the thread that
/// received its request instead of handing it to a script worker. Like any stack, it is
/// address space: only the pages a run touches are ever backed.
pub fn inline_runtime(limits: &SandboxLimits) -> std::io::Result<tokio::runtime::Runtime> {
    let stack = inline_stack_size(limits);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(stack)
        .on_thread_start(move || INLINE_STACK.set(stack))
        .build()
}

/// Whether this thread has the stack to run a script under `limits` inline.
pub(crate) fn inline_stack_fits(limits: &SandboxLimits) -> bool {
    INLINE_STACK.get() >= inline_stack_size(limits)
}

/// Compiles and runs scripts inside the sandbox. Holds the shared engines; cheap to share
/// behind an `Arc`.
#[derive(Debug)]
pub struct ScriptEngine {
    ceiling: SandboxCeiling,
    ceiling_profile: EngineProfile,
    ceiling_engine: Arc<Engine>,
    profiles: Mutex<HashMap<EngineProfile, Arc<Engine>>>,
}

impl ScriptEngine {
    /// Builds the ceiling's engine up front.
    pub fn new(ceiling: SandboxCeiling) -> Self {
        let ceiling_profile = EngineProfile::from(&ceiling.limits());
        Self {
            ceiling,
            ceiling_profile,
            ceiling_engine: Arc::new(build_engine(&ceiling_profile)),
            profiles: Mutex::new(HashMap::new()),
        }
    }

    /// The instance ceiling.
    pub fn ceiling(&self) -> SandboxCeiling {
        self.ceiling
    }

    /// The limits a script runs under: its own where lower than the ceiling, and never a
    /// timeout beyond [`SandboxLimits::HARD_TIMEOUT`].
    pub fn effective_limits(&self, script: &ScriptLimits) -> SandboxLimits {
        let mut limits = self.ceiling.effective(script);
        limits.timeout = limits.timeout.min(SandboxLimits::HARD_TIMEOUT);
        limits
    }

    /// How many engines are cached for per-script profiles (the ceiling's is not counted).
    pub fn cached_profiles(&self) -> usize {
        self.profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn engine_for(&self, profile: EngineProfile) -> Arc<Engine> {
        if profile == self.ceiling_profile {
            return Arc::clone(&self.ceiling_engine);
        }
        let cached = self
            .profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&profile)
            .cloned();
        if let Some(engine) = cached {
            return engine;
        }
        // Built outside the lock: building takes a while and other profiles need not wait.
        let built = Arc::new(build_engine(&profile));
        let mut profiles = self.profiles.lock().unwrap_or_else(PoisonError::into_inner);
        if !profiles.contains_key(&profile) && profiles.len() >= MAX_ENGINE_PROFILES {
            let evicted = profiles.keys().next().copied();
            if let Some(evicted) = evicted {
                profiles.remove(&evicted);
            }
        }
        Arc::clone(profiles.entry(profile).or_insert(built))
    }

    /// Compiles `source` with the engine of `limits`' profile, so the compile-time limits
    /// (expression depth, literal sizes) are the script's own.
    pub fn compile(
        &self,
        source: &str,
        limits: SandboxLimits,
    ) -> Result<CompiledScript, CompileError> {
        let engine = self.engine_for(EngineProfile::from(&limits));
        let ast = engine
            .compile(source)
            .map_err(|err| error::compile_error(&err, &limits))?;
        Ok(CompiledScript {
            ast,
            engine,
            limits,
            inline_strikes: AtomicU8::new(0),
        })
    }
}

#[async_trait]
impl ScriptValidator for ScriptEngine {
    /// Compiles with the ceiling's engine on tokio's blocking pool: a source near the
    /// manager's size limit takes tens of milliseconds to compile (about 40 in a release
    /// build), long enough to hold up every other task of a runtime thread, while the
    /// hand-off costs one copy of the source.
    /// Blocking threads get the runtime's stack size, as its workers do, so the compiler
    /// has the stack it would have had in place. Outside a tokio runtime, or when the pool
    /// takes no more work (the runtime is shutting down), it compiles on the calling thread.
    async fn validate(&self, source: &str) -> Result<(), CompileError> {
        let limits = self.ceiling.limits();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return check_compiles(&self.ceiling_engine, source, &limits);
        };
        let engine = Arc::clone(&self.ceiling_engine);
        let owned = source.to_owned();
        let compiled = runtime
            .spawn_blocking(move || check_compiles(&engine, &owned, &limits))
            .await;
        match compiled {
            Ok(result) => result,
            // A compiler panic stays the caller's panic, as it was when compiling in place.
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_cancelled) => check_compiles(&self.ceiling_engine, source, &limits),
            },
        }
    }

    fn ceiling(&self) -> SandboxCeiling {
        self.ceiling
    }
}

fn check_compiles(
    engine: &Engine,
    source: &str,
    limits: &SandboxLimits,
) -> Result<(), CompileError> {
    engine
        .compile(source)
        .map(|_| ())
        .map_err(|err| error::compile_error(&err, limits))
}

/// What one run produced: its outcome and its captured logs (kept even on failure).
#[derive(Debug)]
pub struct RunOutput {
    /// The response, or why there is none.
    pub outcome: Result<ScriptResponse, ExecutionError>,
    /// Captured `log::…` lines.
    pub logs: Vec<LogEntry>,
}

/// A compiled script, bound to the engine it was compiled for and the limits it runs under.
#[derive(Debug)]
pub struct CompiledScript {
    ast: AST,
    engine: Arc<Engine>,
    limits: SandboxLimits,
    /// How often an inline attempt outgrew its slice; at [`INLINE_CLOCK_STRIKES`] the
    /// script's later runs go straight to a worker (until it is compiled again, as a new
    /// version or after eviction). Outgrowing the heap or blocking counts as all of them.
    inline_strikes: AtomicU8,
}

impl CompiledScript {
    /// The limits every run of this script gets.
    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// Runs the script to completion or to its limits, on the calling thread. This blocks
    /// for up to the script's timeout, and the thread should have at least
    /// [`execution_stack_size`] of stack ([`LocalExecutorClient`](crate::LocalExecutorClient)
    /// runs each script on such a thread).
    pub fn run(&self, request: &ExecutionRequest) -> RunOutput {
        self.run_with_services(request, None)
    }

    /// [`run`](Self::run), with `services` for the script's SDK calls (`kv::…`). The calls
    /// act for the request's app, execution, depth and `run_as` identity; without services
    /// they throw, saying the service is not available.
    pub fn run_with_services(
        &self,
        request: &ExecutionRequest,
        services: Option<&ScriptServices>,
    ) -> RunOutput {
        self.run_state(request, services, None).0
    }

    /// Runs the script on the calling thread if it is short: at most `slice` (the
    /// executor's is [`INLINE_SLICE`]) and [`INLINE_MAX_HEAP`], and no blocking call
    /// (service calls, `sleep`). `None` when
    /// it is not: either it outgrew the slice this time (the attempt is dropped with
    /// whatever it built and logged, before any effect, and counted against the script:
    /// a script that blocks or holds too much, or runs out of time three times, runs on a
    /// worker from then on), or it was marked so before, or this thread lacks the stack an
    /// inline run needs (it was not made by [`inline_runtime`]).
    pub fn run_inline(
        &self,
        request: &ExecutionRequest,
        services: Option<&ScriptServices>,
        slice: Duration,
    ) -> Option<RunOutput> {
        if !self.fits_inline() {
            return None;
        }
        let (output, stop) = self.run_state(request, services, Some(slice));
        match stop {
            Some(StopReason::SliceEnded(SliceEnd::Clock)) => {
                // A lost update only delays the mark by one attempt.
                let strikes = self.inline_strikes.load(Ordering::Relaxed);
                self.inline_strikes
                    .store(strikes.saturating_add(1), Ordering::Relaxed);
                None
            }
            Some(StopReason::SliceEnded(SliceEnd::Heap | SliceEnd::Blocking)) => {
                self.inline_strikes
                    .store(INLINE_CLOCK_STRIKES, Ordering::Relaxed);
                None
            }
            _ => Some(output),
        }
    }

    /// Whether [`run_inline`](Self::run_inline) would try the script on this thread.
    pub fn fits_inline(&self) -> bool {
        self.inline_strikes.load(Ordering::Relaxed) < INLINE_CLOCK_STRIKES
            && inline_stack_fits(&self.limits)
    }

    fn run_state(
        &self,
        request: &ExecutionRequest,
        services: Option<&ScriptServices>,
        inline_slice: Option<Duration>,
    ) -> (RunOutput, Option<StopReason>) {
        let sizes = SizeLimits {
            max_array_size: self.limits.max_array_size,
            max_map_size: self.limits.max_map_size,
            max_string_size: self.limits.max_string_size,
        };
        // Metered from before `ctx` is built to after the response is made: the request
        // a script is handed and the answer it gives count against its memory too.
        let max_memory = self.limits.max_memory_bytes;
        memory::metered(|| {
            let mut scope = Scope::new();
            scope.push_constant("ctx", ctx::build(request, &sizes));

            let mut state = RunState::new(self.limits.max_operations, self.limits.timeout)
                .with_memory_limit(max_memory)
                .with_services(RunServices::new(
                    ServiceContext {
                        app_id: request.script.app_id,
                        execution_id: Some(request.execution_id),
                        depth: request.depth,
                        run_as: request.run_as.clone(),
                    },
                    services,
                    sizes,
                ));
            if let Some(slice) = inline_slice {
                state = state.inline(slice, INLINE_MAX_HEAP);
            }
            let (result, state) = run_state::scoped(state, || {
                self.engine
                    .eval_ast_with_scope::<Dynamic>(&mut scope, &self.ast)
            });
            let (logs, stop) = state.map_or_else(
                || (Vec::new(), None),
                |state| (state.logs.finish(), state.stop),
            );
            let outcome = match result {
                Ok(value) => response::into_response(value).and_then(|response| {
                    // No operation runs while the value becomes a response, so the
                    // limit is checked once more with the response built.
                    if memory::run_bytes() > max_memory {
                        Err(ExecutionError::ResourceLimit {
                            message: error::memory_message(&self.limits),
                        })
                    } else {
                        Ok(response)
                    }
                }),
                Err(err) => Err(error::execution_error(&err, &self.limits, stop)),
            };
            (RunOutput { outcome, logs }, stop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_grows_with_the_nesting_the_limits_allow() {
        let small = SandboxLimits {
            max_array_size: 10,
            max_map_size: 10,
            ..SandboxLimits::default()
        };
        let default = SandboxLimits::default();
        let huge = SandboxLimits {
            max_array_size: usize::MAX,
            ..SandboxLimits::default()
        };
        assert!(execution_stack_size(&small) >= BASE_STACK);
        assert!(execution_stack_size(&small) < execution_stack_size(&default));
        assert!(
            execution_stack_size(&default)
                >= (default.max_array_size + default.max_map_size) * STACK_PER_NESTING_LEVEL
                || execution_stack_size(&default) == MAX_STACK
        );
        assert_eq!(execution_stack_size(&huge), MAX_STACK);
    }
}

//! PiCloud's executor: the Rhai engine and its sandbox, the script SDK modules, and
//! [`LocalExecutorClient`], the in-process [`ExecutorClient`](picloud_shared::ExecutorClient).
//!
//! The pieces, from the inside out:
//! - [`ScriptEngine`] holds the shared Rhai engines (one per structural-limit profile) and
//!   compiles scripts; it is also the [`ScriptValidator`](picloud_shared::ScriptValidator)
//!   the manager checks sources with.
//! - [`CompiledScript::run`] runs one script synchronously: `ctx` in scope, per-run
//!   operation budget, deadline and log buffer, the final value turned into a response by
//!   the response convention.
//! - [`RunMemoryAllocator`] counts what each run holds, so its memory limit binds whatever
//!   the script does (the binary installs it as the global allocator).
//! - [`ExecutionGate`] bounds concurrent runs.
//! - [`LocalExecutorClient`] puts it together: gate, compiled-code cache per script
//!   version (bounded in estimated bytes, see [`compiled_cache`]), long-lived script worker threads with a stack sized to the sandbox ceiling,
//!   wall-clock backstop.

mod base64;
mod client;
pub mod compiled_cache;
mod ctx;
mod engine;
mod error;
mod gate;
pub mod json;
mod log;
mod memory;
mod pool;
mod response;
mod run_state;
mod sdk;

pub use client::{ExecutorConfig, INLINE_COMPILE_MAX_SOURCE, LocalExecutorClient, TIMEOUT_GRACE};
pub use engine::{
    CompiledScript, EngineProfile, INLINE_MAX_HEAP, INLINE_SLICE, MAX_ENGINE_PROFILES, RunOutput,
    ScriptEngine, execution_stack_size, inline_runtime, inline_stack_size,
};
pub use gate::{ExecutionGate, ExecutionPermit, GateConfig, MAX_CONCURRENT_VAR, QUEUE_TIMEOUT_VAR};
pub use log::{MAX_LOG_BYTES, MAX_LOG_ENTRIES};
pub use memory::{RunMemoryAllocator, allocator_installed};
pub use pool::WORKER_IDLE_RETIREMENT;
pub use sdk::ScriptServices;

//! The script SDK's service modules and the bridge they cross to reach async services.
//!
//! Every module is registered once on each shared engine. A call finds what it needs for
//! this run (the run's [`ServiceContext`], the services, the size limits) in the per-run
//! state on the run's thread, so the engine never has to be rebuilt to give a module its
//! context.
//!
//! The bridge: scripts are synchronous and run on a script worker thread, which is not a
//! runtime worker, so a service call runs its async implementation to completion with
//! [`Handle::block_on`] there. The wait counts against the run's deadline: it is bounded
//! by the time the run has left, and a run whose deadline passed during the call ends as
//! timed out.

mod args;
pub(crate) mod files;
pub(crate) mod kv;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use picloud_shared::{CollectionName, ServiceContext, ServiceError, ServiceSet};
use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, Module, Position, Shared};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::json::{SizeLimits, json_to_dynamic};
use crate::run_state;

/// What a service module's functions answer a script: a value, or a thrown error.
pub(crate) type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The services scripts can call, and the runtime their async implementations run on.
#[derive(Debug, Clone)]
pub struct ScriptServices {
    /// Every service a script reaches (`kv::collection(…)`, …).
    pub services: ServiceSet,
    /// The runtime service calls are driven on, from the run's own thread.
    pub runtime: Handle,
}

/// What a run's service calls need: who they act for and with what.
#[derive(Debug)]
pub(crate) struct RunServices {
    /// The run's context: its app, execution, depth and identity.
    ctx: ServiceContext,
    /// The executor's services, or [`ServiceSet::unavailable`] when it has none.
    services: ServiceSet,
    /// `None` exactly when `services` is [`ServiceSet::unavailable`], whose answers need
    /// no runtime.
    runtime: Option<Handle>,
    /// Values handed to the script must fit the sandbox like any other value.
    sizes: SizeLimits,
}

impl RunServices {
    /// A run's view of `services`; without any, every call is refused as unavailable.
    pub(crate) fn new(
        ctx: ServiceContext,
        services: Option<&ScriptServices>,
        sizes: SizeLimits,
    ) -> Self {
        let (services, runtime) = match services {
            Some(s) => (s.services.clone(), Some(s.runtime.clone())),
            None => (ServiceSet::unavailable(), None),
        };
        Self {
            ctx,
            services,
            runtime,
            sizes,
        }
    }
}

/// Registers every service module on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    kv::register(engine);
    files::register(engine);
}

/// A handle on one collection of the running script's app, as a module's
/// `collection(name)` returns it. It holds only the validated name: the app always comes
/// from the run, never from the script.
pub(crate) trait CollectionHandle: Clone + Send + Sync + 'static {
    /// The module scripts call, e.g. `kv`.
    const MODULE: &'static str;
    /// The handle's type as scripts see it, e.g. `KvCollection`.
    const TYPE_NAME: &'static str;

    /// The collection.
    fn name(&self) -> &CollectionName;
}

/// Registers the module `H::MODULE` with its `collection(name)` (`open`) beside the
/// functions already in `module`, and the handle's type with its `name` and how it is
/// shown (`kv collection 'users'`); the handle's methods are the module's own to register.
fn register_collection<H: CollectionHandle>(
    engine: &mut Engine,
    open: fn(Dynamic) -> RhaiResult<H>,
    mut module: Module,
) {
    FuncRegistration::new("collection")
        .with_volatility(true)
        .set_into_module(&mut module, open);
    engine.register_static_module(H::MODULE, Shared::new(module));

    engine.register_type_with_name::<H>(H::TYPE_NAME);
    engine.register_get("name", |c: &mut H| c.name().to_string());
    let shown = |c: &mut H| format!("{} collection '{}'", H::MODULE, c.name());
    engine.register_fn("to_string", shown);
    engine.register_fn("to_debug", shown);
}

/// A thrown error carrying `message`, as a script's own `throw` would: `catch (e)` gets
/// the message as a string.
pub(crate) fn throw(message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), Position::NONE).into()
}

/// The current run's services, for the duration of one call.
#[derive(Debug)]
pub(crate) struct Call {
    run: Arc<RunServices>,
    deadline: Instant,
}

/// The services of the run on this thread. Every call starts here, before it has any
/// effect, so an inline run (which must not block) ends here and starts again on a worker.
pub(crate) fn current() -> Result<Call, Box<EvalAltResult>> {
    run_state::leave_inline()?;
    run_state::services()
        .map(|(run, deadline)| Call { run, deadline })
        .ok_or_else(|| throw("services can only be called while a script runs"))
}

impl Call {
    /// Who the call acts for.
    pub(crate) fn ctx(&self) -> &ServiceContext {
        &self.run.ctx
    }

    /// The size limits values handed to the script must fit.
    pub(crate) fn sizes(&self) -> &SizeLimits {
        &self.run.sizes
    }

    /// The executor's services.
    pub(crate) fn services(&self) -> &ServiceSet {
        &self.run.services
    }

    /// `value` (a service's answer, described as `what` in messages) as a script value,
    /// which must fit the sandbox's size limits like any other.
    pub(crate) fn to_script(&self, value: &Value, what: &str) -> RhaiResult<Dynamic> {
        json_to_dynamic(value, self.sizes())
            .map_err(|e| throw(format!("{what} is too large for this script: {e}")))
    }

    /// Drives `future` (a service call) to completion from the run's thread. A service
    /// error is thrown with its message; running out of time ends the run as timed out.
    pub(crate) fn block_on<T>(
        &self,
        future: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, Box<EvalAltResult>> {
        let Some(runtime) = &self.run.runtime else {
            // The unavailable set answers at once; anything else would need the runtime.
            return match ready_now(future) {
                Some(result) => result.map_err(|err| throw(err.to_string())),
                None => Err(throw("services are not available")),
            };
        };
        // Blocking a thread that drives the runtime on that runtime would deadlock it.
        if Handle::try_current().is_ok() {
            return Err(throw(
                "services cannot be called from a thread that drives the async runtime",
            ));
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(run_state::timed_out());
        }
        let outcome =
            runtime.block_on(async move { tokio::time::timeout(remaining, future).await });
        match outcome {
            Ok(_) if Instant::now() >= self.deadline => Err(run_state::timed_out()),
            Ok(result) => result.map_err(|err| throw(err.to_string())),
            Err(_elapsed) => Err(run_state::timed_out()),
        }
    }
}

/// The output of `future` if it is ready on its first poll, without any runtime.
fn ready_now<T>(future: impl Future<Output = T>) -> Option<T> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// What the modules' unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use rhai::{Dynamic, EvalAltResult, Map};

    /// The message a [`throw`](super::throw) carries.
    pub(crate) fn message(err: &EvalAltResult) -> String {
        match err {
            EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
            other => panic!("expected a thrown message, got {other:?}"),
        }
    }

    /// A script's map of `pairs`.
    pub(crate) fn map(pairs: &[(&str, Dynamic)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }
}

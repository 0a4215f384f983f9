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

pub(crate) mod kv;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use picloud_shared::{KvService, ServiceContext, ServiceError};
use rhai::{Dynamic, Engine, EvalAltResult, Position};
use tokio::runtime::Handle;

use crate::json::SizeLimits;
use crate::run_state;

/// The services scripts can call, and the runtime their async implementations run on.
#[derive(Clone)]
pub struct ScriptServices {
    /// The KV service (`kv::collection(...)`); `None` makes every KV call throw
    /// "kv is not available".
    pub kv: Option<Arc<dyn KvService>>,
    /// The runtime service calls are driven on, from the run's own thread.
    pub runtime: Handle,
}

impl fmt::Debug for ScriptServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptServices")
            .field("kv", &self.kv.is_some())
            .finish_non_exhaustive()
    }
}

/// What a run's service calls need: who they act for and with what.
#[derive(Debug)]
pub(crate) struct RunServices {
    /// The run's context: its app, execution, depth and identity.
    pub(crate) ctx: ServiceContext,
    /// The services, when the executor has any.
    pub(crate) services: Option<ScriptServices>,
    /// Values handed to the script must fit the sandbox like any other value.
    pub(crate) sizes: SizeLimits,
}

/// Registers every service module on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    kv::register(engine);
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

/// The services of the run on this thread.
pub(crate) fn current() -> Result<Call, Box<EvalAltResult>> {
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

    /// The executor's services, if it has any.
    pub(crate) fn services(&self) -> Option<&ScriptServices> {
        self.run.services.as_ref()
    }

    /// Drives `future` (a service call) to completion from the run's thread. A service
    /// error is thrown with its message; running out of time ends the run as timed out.
    pub(crate) fn block_on<T>(
        &self,
        future: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, Box<EvalAltResult>> {
        let Some(services) = self.services() else {
            return Err(throw("services are not available"));
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
        let outcome = services
            .runtime
            .block_on(async move { tokio::time::timeout(remaining, future).await });
        match outcome {
            Ok(_) if Instant::now() >= self.deadline => Err(run_state::timed_out()),
            Ok(result) => result.map_err(|err| throw(err.to_string())),
            Err(_elapsed) => Err(run_state::timed_out()),
        }
    }
}

//! What every service call carries and can fail with: the context of the run that makes
//! it (app, identity, causation, depth) and the one error type scripts see as a throw.

use crate::{AccessDenied, AppId, Capability, ExecutionId, Principal};

/// The context of a service call: whose data, on whose behalf, caused by what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContext {
    /// Every call is keyed on this app; no argument can name another.
    pub app_id: AppId,
    /// The run making the call (`None` for admin API calls); events it causes carry it as
    /// their causation id.
    pub execution_id: Option<ExecutionId>,
    /// The run's trigger depth; events it causes carry `depth + 1`.
    pub depth: u32,
    /// Who the call acts as: `None` means the script's own app authority (an HTTP run),
    /// which holds every data capability of `app_id` and nothing outside it.
    pub run_as: Option<Principal>,
}

impl ServiceContext {
    /// Checks `capability` for this call.
    pub fn authorize(&self, capability: &Capability) -> Result<(), ServiceError> {
        let denied = |why: String| ServiceError::Forbidden(why);
        if capability.app() != Some(self.app_id) {
            return Err(denied(
                "a script can only use its own app's data".to_owned(),
            ));
        }
        match &self.run_as {
            None => Ok(()),
            Some(principal) => principal.authorize(capability).map_err(|e| match e {
                AccessDenied::Hidden => denied(format!(
                    "{} has no access to this app any more",
                    principal.username
                )),
                AccessDenied::Forbidden { scope } => {
                    denied(format!("{} lacks {scope} in this app", principal.username))
                }
            }),
        }
    }
}

/// Why a service call failed. Scripts see the message as the thrown value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// An argument is unusable (a bad collection name, a non-JSON value, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// A value is over a size limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large, e.g. `value for key 'k'`.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The identity the call acts as may not do this.
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// The store could not be reached; a retry later may succeed.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A fault inside PiCloud.
    #[error("internal error")]
    Internal(String),
}

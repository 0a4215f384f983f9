//! The script-facing services as one set, what every service call carries (the context
//! of the run that makes it: app, identity, causation, depth) and the one error type
//! scripts see as a throw.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::files::{
    ByteStream, FileDownload, FileInfo, FileListOptions, FileName, FilePage, FileWrite,
    FilesService, FilesUsage,
};
use crate::kv::{
    CollectionInfo, CollectionName, KvAtomic, KvCondition, KvIncrement, KvKey, KvListOptions,
    KvPage, KvService, KvVersioned,
};
use crate::{AccessDenied, AppId, Capability, ExecutionId, Principal};

/// Every service scripts can call, one field each, held by whoever hands calls to them
/// (the executor's SDK, the admin API).
///
/// No field is optional: a process without some service holds one that refuses every
/// call (see [`ServiceSet::unavailable`]), so a new service is one more field and callers
/// never branch on whether it is there.
#[derive(Clone)]
pub struct ServiceSet {
    /// Key-value collections (`kv::collection(…)`).
    pub kv: Arc<dyn KvService>,
    /// Files (`files::collection(…)`).
    pub files: Arc<dyn FilesService>,
}

impl ServiceSet {
    /// A set whose every service answers every call with [`ServiceError::Unavailable`],
    /// naming the service: for an executor that only validates scripts, and for tests.
    /// Start from it and replace the services a test needs.
    pub fn unavailable() -> Self {
        Self {
            kv: Arc::new(Unavailable { service: "kv" }),
            files: Arc::new(Unavailable { service: "files" }),
        }
    }
}

impl fmt::Debug for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The services are trait objects with nothing useful to show.
        f.debug_struct("ServiceSet").finish_non_exhaustive()
    }
}

/// A service this process does not have.
#[derive(Debug, Clone, Copy)]
struct Unavailable {
    service: &'static str,
}

impl Unavailable {
    fn refuse(&self) -> ServiceError {
        ServiceError::Unavailable(format!("{} is not available in this process", self.service))
    }
}

#[async_trait]
impl KvService for Unavailable {
    async fn get(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &KvKey,
    ) -> Result<Option<Value>, ServiceError> {
        Err(self.refuse())
    }

    async fn get_entry(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &KvKey,
    ) -> Result<Option<KvVersioned>, ServiceError> {
        Err(self.refuse())
    }

    async fn set(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &KvKey,
        _: Value,
    ) -> Result<i64, ServiceError> {
        Err(self.refuse())
    }

    async fn set_if(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &KvKey,
        _: Value,
        _: KvCondition,
    ) -> Result<Option<i64>, ServiceError> {
        Err(self.refuse())
    }

    async fn incr(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &KvKey,
        _: KvIncrement,
    ) -> Result<KvVersioned, ServiceError> {
        Err(self.refuse())
    }

    async fn commit(&self, _: &ServiceContext, _: KvAtomic) -> Result<bool, ServiceError> {
        Err(self.refuse())
    }

    async fn delete(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &KvKey,
    ) -> Result<bool, ServiceError> {
        Err(self.refuse())
    }

    async fn list(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: KvListOptions,
    ) -> Result<KvPage, ServiceError> {
        Err(self.refuse())
    }

    async fn collections(&self, _: &ServiceContext) -> Result<Vec<CollectionInfo>, ServiceError> {
        Err(self.refuse())
    }
}

#[async_trait]
impl FilesService for Unavailable {
    async fn head(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &FileName,
    ) -> Result<Option<FileInfo>, ServiceError> {
        Err(self.refuse())
    }

    async fn open(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &FileName,
    ) -> Result<Option<FileDownload>, ServiceError> {
        Err(self.refuse())
    }

    async fn write(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &FileName,
        _: FileWrite,
        _: ByteStream,
    ) -> Result<FileInfo, ServiceError> {
        Err(self.refuse())
    }

    async fn delete(
        &self,
        _: &ServiceContext,
        _: &CollectionName,
        _: &FileName,
    ) -> Result<bool, ServiceError> {
        Err(self.refuse())
    }

    async fn list(&self, _: &ServiceContext, _: FileListOptions) -> Result<FilePage, ServiceError> {
        Err(self.refuse())
    }

    async fn usage(&self, _: &ServiceContext) -> Result<FilesUsage, ServiceError> {
        Err(self.refuse())
    }
}

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
    /// What the call needs is not there (an update of a missing file).
    #[error("{0}")]
    NotFound(String),
    /// The call conflicts with what is stored (creating a file that exists).
    #[error("{0}")]
    Conflict(String),
    /// The write would take the app past its storage quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The disk (or the store behind it) has no room for the write; nothing was kept.
    #[error("storage is full: {0}")]
    StorageFull(String),
    /// Stored bytes do not match their checksum, or are gone; none were returned.
    #[error("{0}")]
    Corrupted(String),
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
    /// The store could not be reached (a retry later may succeed), or this process has no
    /// such service.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A fault inside PiCloud.
    #[error("internal error")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unavailable_service_refuses_every_call_naming_itself() {
        let set = ServiceSet::unavailable();
        let ctx = ServiceContext {
            app_id: AppId::new(),
            execution_id: None,
            depth: 0,
            run_as: None,
        };
        let (Ok(collection), Ok(key)) = (CollectionName::parse("c"), KvKey::parse("k")) else {
            panic!("valid names were refused");
        };
        let refused = ServiceError::Unavailable("kv is not available in this process".to_owned());
        assert_eq!(
            set.kv.get(&ctx, &collection, &key).await,
            Err(refused.clone())
        );
        assert_eq!(
            set.kv.set(&ctx, &collection, &key, Value::Null).await,
            Err(refused.clone())
        );
        assert_eq!(
            set.kv.delete(&ctx, &collection, &key).await,
            Err(refused.clone())
        );
        assert_eq!(
            set.kv
                .list(&ctx, &collection, KvListOptions::default())
                .await,
            Err(refused.clone())
        );
        assert_eq!(set.kv.collections(&ctx).await, Err(refused));
        let files = ServiceError::Unavailable("files is not available in this process".to_owned());
        assert_eq!(set.files.usage(&ctx).await, Err(files));
    }
}

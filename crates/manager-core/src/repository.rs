//! What every repository reports besides success. Each feature folder holds its own repository trait with a PostgreSQL
//! implementation (`pg.rs`) and an in-memory one (`memory.rs`, `testsuite` feature).

/// What a repository call can come to besides success.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The thing named does not exist (also: a referenced row is missing).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `script 0190…` or `app 0190…`.
        what: String,
    },
    /// The change would break a uniqueness rule.
    #[error("{what} already exists")]
    Conflict {
        /// What clashed, e.g. `script 'hello' in app 0190…`.
        what: String,
    },
    /// The request is not one the store can carry out (for example an update that changes
    /// nothing, or a value a database constraint refuses).
    #[error("{0}")]
    Invalid(String),
    /// The store could not be reached (pool timeout, connection lost, shutting down); a
    /// retry later may succeed.
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A fault inside the store or its data; the cause is for the logs, not for clients.
    #[error("internal repository error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result of a repository call.
pub type RepoResult<T> = Result<T, RepoError>;

impl RepoError {
    /// What a service caller (a script, the admin API) sees of this outcome, `doing` naming
    /// the step for the log. Faults are logged here, once; their message stays generic.
    pub fn into_service_error(self, doing: &str) -> picloud_shared::ServiceError {
        use picloud_shared::ServiceError;
        match self {
            Self::NotFound { .. } | Self::Conflict { .. } => {
                ServiceError::InvalidArgument(self.to_string())
            }
            // The services check every argument first: a value the store still refuses
            // (a CHECK constraint) is a fault here, not the caller's, and its name stays
            // in the log.
            Self::Invalid(_) => {
                tracing::error!(error = %crate::error_chain(&self), "{doing}: the store refused a value that passed validation");
                ServiceError::Internal(doing.to_owned())
            }
            Self::Unavailable(_) => {
                tracing::warn!(error = %crate::error_chain(&self), "{doing}: database unavailable");
                ServiceError::Unavailable("the database is unavailable, try again later".to_owned())
            }
            Self::Internal(_) => {
                tracing::error!(error = %crate::error_chain(&self), "{doing} failed");
                ServiceError::Internal(doing.to_owned())
            }
        }
    }
}

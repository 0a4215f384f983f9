//! What every repository reports besides success, and the offset page some of them
//! return. Each feature folder holds its own repository trait with a PostgreSQL
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
    Unavailable(#[source] sqlx::Error),
    /// A fault inside the store or its data; the cause is for the logs, not for clients.
    #[error("internal repository error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result of a repository call.
pub type RepoResult<T> = Result<T, RepoError>;

/// One page of a longer, offset-paged list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items on this page, in the list's order.
    pub items: Vec<T>,
    /// How many items the whole list holds.
    pub total: u64,
}

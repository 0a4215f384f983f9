//! What the in-memory repositories (each in its feature's `memory.rs`, for tests that
//! need no database) share. They keep the same rules as the PostgreSQL ones (uniqueness, references and cascades,
//! ordering, microsecond timestamps), which the shared repository test suite checks
//! against both.
//!
//! The repositories that PostgreSQL ties together with foreign keys (apps, scripts, users,
//! memberships, tokens) share one [`InMemoryStore`], so a cascade in one is seen by all.

pub(crate) mod store;

use std::sync::Arc;

pub use store::InMemoryStore;

use crate::access::{
    InMemoryMembershipRepository, InMemoryTokenRepository, InMemoryUserRepository,
};
use crate::apps::InMemoryAppRepository;
use crate::dead_letters::InMemoryDeadLetterRepository;
use crate::executions::InMemoryExecutionLogRepository;
use crate::scripts::InMemoryScriptRepository;
use crate::triggers::InMemoryTriggerRepository;

use chrono::{DateTime, SubsecRound, Utc};

/// Every in-memory repository, over one shared store.
#[derive(Debug, Clone)]
pub struct InMemoryRepositories {
    /// The store they share.
    pub store: InMemoryStore,
    /// Apps (starting with the `default` app).
    pub apps: Arc<InMemoryAppRepository>,
    /// Scripts.
    pub scripts: Arc<InMemoryScriptRepository>,
    /// Execution records.
    pub executions: Arc<InMemoryExecutionLogRepository>,
    /// Users.
    pub users: Arc<InMemoryUserRepository>,
    /// Tokens and sessions.
    pub tokens: Arc<InMemoryTokenRepository>,
    /// App memberships.
    pub memberships: Arc<InMemoryMembershipRepository>,
    /// Triggers.
    pub triggers: Arc<InMemoryTriggerRepository>,
    /// Dead letters.
    pub dead_letters: Arc<InMemoryDeadLetterRepository>,
}

impl Default for InMemoryRepositories {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRepositories {
    /// A fresh set: the `default` app and nothing else.
    pub fn new() -> Self {
        let store = InMemoryStore::new();
        let apps = Arc::new(InMemoryAppRepository::over(store.clone()));
        let triggers = Arc::new(InMemoryTriggerRepository::new(store.clone()));
        Self {
            scripts: Arc::new(InMemoryScriptRepository::new(apps.clone())),
            apps,
            executions: Arc::new(InMemoryExecutionLogRepository::new()),
            users: Arc::new(InMemoryUserRepository::new(store.clone())),
            tokens: Arc::new(InMemoryTokenRepository::new(store.clone())),
            memberships: Arc::new(InMemoryMembershipRepository::new(store.clone())),
            dead_letters: Arc::new(InMemoryDeadLetterRepository::new(
                store.clone(),
                triggers.clone(),
            )),
            triggers,
            store,
        }
    }
}

/// The current time at the precision PostgreSQL stores (`timestamptz` keeps microseconds),
/// so values read back compare equal to what was returned on write.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A caller's timestamp at the precision PostgreSQL stores.
pub(crate) fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the maps consistent before it can panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

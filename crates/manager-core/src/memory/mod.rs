//! In-memory implementations of the repositories, for tests that need no database. They
//! keep the same rules as the PostgreSQL ones (uniqueness, references and cascades,
//! ordering, microsecond timestamps), which the shared repository test suite checks
//! against both.
//!
//! The repositories that PostgreSQL ties together with foreign keys (apps, scripts, users,
//! memberships, tokens) share one [`InMemoryStore`], so a cascade in one is seen by all.

mod apps;
mod dead_letters;
mod executions;
mod kv;
mod memberships;
mod scripts;
mod store;
mod tokens;
mod triggers;
mod users;

use std::sync::Arc;

pub use apps::InMemoryAppRepository;
pub use dead_letters::{
    EnqueuedReplay, InMemoryAbandonedExecutionRepository, InMemoryDeadLetterRepository,
};
pub use executions::InMemoryExecutionLogRepository;
pub use kv::InMemoryKvService;
pub use memberships::InMemoryMembershipRepository;
pub use scripts::InMemoryScriptRepository;
pub use store::InMemoryStore;
pub use tokens::InMemoryTokenRepository;
pub use triggers::InMemoryTriggerRepository;
pub use users::InMemoryUserRepository;

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
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A caller's timestamp at the precision PostgreSQL stores.
fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the maps consistent before it can panic.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Items `offset..offset + limit` of a sorted list, as a page.
fn page<T>(items: Vec<T>, limit: u32, offset: u64) -> crate::repo::Page<T> {
    let total = u64::try_from(items.len()).unwrap_or(u64::MAX);
    let items = items
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    crate::repo::Page { items, total }
}

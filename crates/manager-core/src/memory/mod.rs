//! In-memory implementations of the repositories, for tests that need no database. They
//! keep the same rules as the PostgreSQL ones (uniqueness, the app reference, ordering,
//! microsecond timestamps), which the shared repository test suite checks against both.

mod apps;
mod executions;
mod scripts;

pub use apps::InMemoryAppRepository;
pub use executions::InMemoryExecutionLogRepository;
pub use scripts::InMemoryScriptRepository;

use chrono::{DateTime, SubsecRound, Utc};

/// The current time at the precision PostgreSQL stores (`timestamptz` keeps microseconds),
/// so values read back compare equal to what was returned on write.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the maps consistent before it can panic.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! PostgreSQL implementations of the repositories. Runtime-checked queries (`query_as` +
//! `bind`); every driver error goes through one translation in `error.rs`.

mod apps;
mod error;
mod executions;
mod memberships;
mod scripts;
mod tokens;
mod users;

pub use apps::PgAppRepository;
pub use executions::PgExecutionLogRepository;
pub use memberships::PgMembershipRepository;
pub use scripts::PgScriptRepository;
pub use tokens::PgTokenRepository;
pub use users::PgUserRepository;

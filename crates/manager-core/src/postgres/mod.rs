//! PostgreSQL implementations of the repositories. Runtime-checked queries (`query_as` +
//! `bind`); every driver error goes through one translation in `error.rs`.

mod apps;
mod error;
mod executions;
mod scripts;

pub use apps::PgAppRepository;
pub use executions::PgExecutionLogRepository;
pub use scripts::PgScriptRepository;

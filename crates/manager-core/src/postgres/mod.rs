//! PostgreSQL implementations of the repositories. Runtime-checked queries (`query_as` +
//! `bind`); every driver error goes through one translation in `error.rs`.

mod apps;
mod dead_letters;
mod error;
mod executions;
mod kv;
mod memberships;
mod outbox_emitter;
mod outbox_store;
mod scripts;
mod tokens;
mod triggers;
mod users;

pub use apps::PgAppRepository;
pub use dead_letters::{
    PgAbandonedExecutionRepository, PgDeadLetterRepository, insert_dead_letter,
};
pub use executions::PgExecutionLogRepository;
pub use kv::PgKvService;
pub use memberships::PgMembershipRepository;
pub use outbox_emitter::{OutboxEmitter, dead_letter_payload, fan_out_dead_letter};
pub use outbox_store::{OUTBOX_CHANNEL, PgOutboxStore};
pub use scripts::PgScriptRepository;
pub use tokens::PgTokenRepository;
pub use triggers::PgTriggerRepository;
pub use users::PgUserRepository;

//! The transactional outbox's write side: services hand their events to a
//! [`ServiceEventEmitter`] inside the transaction that changes the data, so a committed
//! change always has its trigger rows and a rolled-back one never does.

mod emitter;
mod store;
mod waker;

pub use emitter::{OutboxEmitter, dead_letter_payload, fan_out_dead_letter};
pub use store::{OUTBOX_CHANNEL, PgOutboxStore};
pub use waker::{OutboxSignal, PgOutboxWaker};

use async_trait::async_trait;
use picloud_shared::ServiceEvent;
use sqlx::PgConnection;

use crate::repository::RepoResult;

/// Writes the outbox rows of an event: one per matching enabled trigger of the event's
/// app, in the caller's transaction. Implemented over the triggers and outbox tables.
#[async_trait]
pub trait ServiceEventEmitter: Send + Sync {
    /// Emits `event` inside `tx`; returns how many outbox rows were written (0 when no
    /// trigger matches, which is a silent success). An event past the depth limit writes
    /// no rows and is recorded where an operator sees it.
    async fn emit(&self, tx: &mut PgConnection, event: &ServiceEvent) -> RepoResult<u64>;

    /// Called once the transaction in which `emit` wrote rows has committed: wakes the
    /// dispatchers. Never called for a transaction that rolled back or wrote no rows.
    fn rows_committed(&self);
}

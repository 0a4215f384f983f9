//! The transactional outbox: services write their change and its events' outbox rows in
//! one transaction through a [`ServiceEventEmitter`] (the seam, in `picloud_shared`), so a
//! committed change always has its trigger rows and a rolled-back one never does.
//!
//! - `emitter.rs`: [`OutboxEmitter`], the fan-out over PostgreSQL: one row per trigger the
//!   event's kind matches, the depth limit.
//! - `store.rs`: [`PgOutboxStore`], the dispatcher's side: claims under a lease, settles.
//! - `waker.rs`: [`OutboxSignal`] (announces committed rows) and [`PgOutboxWaker`]
//!   (wakes a sleeping dispatcher).
//! - `orphans.rs`: queued deliveries of triggers being deleted become dead letters.
//! - `memory.rs`: the in-memory stand-ins (`testsuite` feature), which run the same
//!   trigger matching.

mod emitter;
#[cfg(feature = "testsuite")]
mod memory;
mod orphans;
mod store;
mod waker;

use std::ops::{Deref, DerefMut};

use async_trait::async_trait;
pub use emitter::OutboxEmitter;
#[cfg(feature = "testsuite")]
pub use memory::{InMemoryOutbox, InMemoryTx, OutboxRow, RecordingEmitter};
pub(crate) use orphans::{DoomedTriggers, dead_letter_queued};
pub use picloud_shared::ServiceEventEmitter;
use picloud_shared::{ServiceError, ServiceEvent, Transaction, TriggerKind, UnitOfWork};
use sqlx::{PgConnection, PgPool, Postgres};
pub use store::{OUTBOX_CHANNEL, PgOutboxStore};
pub use waker::{OutboxSignal, PgOutboxWaker};

use crate::db::db_error;
use crate::dead_letters::NewDeadLetter;

/// A PostgreSQL transaction as a [`Transaction`] for [`UnitOfWork`]; it derefs to the
/// connection the service's own statements run on.
#[derive(Debug)]
pub struct PgTx(sqlx::Transaction<'static, Postgres>);

impl PgTx {
    /// Opens a transaction on `pool`.
    pub async fn begin(pool: &PgPool) -> Result<Self, ServiceError> {
        pool.begin()
            .await
            .map(Self)
            .map_err(|err| db_error(err).into_service_error("starting a transaction"))
    }
}

impl Deref for PgTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl DerefMut for PgTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

#[async_trait]
impl Transaction for PgTx {
    async fn commit(self) -> Result<(), ServiceError> {
        self.0
            .commit()
            .await
            .map_err(|err| db_error(err).into_service_error("committing a change"))
    }
}

/// Starts a change on `pool` whose events go through `emitter`.
pub async fn begin<'e>(
    pool: &PgPool,
    emitter: &'e dyn ServiceEventEmitter<PgTx>,
) -> Result<UnitOfWork<'e, PgTx>, ServiceError> {
    Ok(UnitOfWork::new(PgTx::begin(pool).await?, emitter))
}

/// The dead letter that records `event` refused at the depth limit, when it is past
/// `max_depth`: a trigger loop (or a very long chain) is stopped visibly, as one unresolved
/// dead letter the dashboard badge counts, while the data change itself commits. Every
/// emitter asks this once some trigger matched the event.
fn refused_at_depth(event: &ServiceEvent, max_depth: u32, matched: usize) -> Option<NewDeadLetter> {
    if event.depth <= max_depth {
        return None;
    }
    tracing::warn!(
        app_id = %event.app_id,
        depth = event.depth,
        max_depth,
        triggers = matched,
        "event refused at the trigger depth limit"
    );
    let kind: TriggerKind = event.subject.kind();
    Some(NewDeadLetter {
        app_id: event.app_id,
        trigger_id: None,
        trigger_kind: kind,
        script_id: None,
        event: event.payload(),
        depth: event.depth,
        attempts: 0,
        last_error: format!("trigger depth limit of {max_depth} reached"),
    })
}

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
use std::sync::Arc;

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
/// Trigger deliveries one run may queue in all, whatever it writes (review M6): a run
/// writing many keys that each match many triggers would otherwise multiply into an
/// outbox flood, which the depth limit alone does not stop.
pub const MAX_DELIVERIES_PER_RUN: u64 = 10_000;

/// Runs whose spending is remembered at once; past it the memory starts afresh (each run
/// is short, so a run whose count is forgotten could at most spend its budget again).
const RUNS_REMEMBERED: usize = 4096;

/// How many deliveries each recent run has queued, so an event a run causes is refused
/// once it would pass [`MAX_DELIVERIES_PER_RUN`]. Shared by every clone of an emitter.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryBudget {
    per_run: u64,
    spent: Arc<std::sync::Mutex<std::collections::HashMap<picloud_shared::ExecutionId, u64>>>,
}

impl DeliveryBudget {
    pub(crate) fn new(per_run: u64) -> Self {
        Self {
            per_run,
            spent: Arc::default(),
        }
    }

    /// Charges `deliveries` to the run that caused `event`, or refuses them, naming the
    /// limit, when the run would pass it. Events no run caused (an admin's change, a dead
    /// letter) are not charged.
    pub(crate) fn charge(
        &self,
        event: &ServiceEvent,
        deliveries: usize,
    ) -> Result<(), ServiceError> {
        let Some(run) = event.causation_id else {
            return Ok(());
        };
        let deliveries = u64::try_from(deliveries).unwrap_or(u64::MAX);
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spent.len() >= RUNS_REMEMBERED && !spent.contains_key(&run) {
            spent.clear();
        }
        let so_far = spent.entry(run).or_insert(0);
        if so_far.saturating_add(deliveries) > self.per_run {
            return Err(ServiceError::InvalidArgument(format!(
                "this change would queue {deliveries} trigger deliveries after the {so_far} \
                 this run queued already; one run may queue at most {}",
                self.per_run
            )));
        }
        *so_far += deliveries;
        Ok(())
    }
}

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

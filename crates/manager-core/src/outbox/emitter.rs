//! The transactional outbox's write side over PostgreSQL: [`OutboxEmitter`] turns an event
//! into one outbox row per trigger it concerns, inside the caller's transaction. Which
//! triggers an event concerns is the event's kind's business (`triggers::kinds`); this
//! file names no kind. A dead letter reaches `dead_letter` triggers the same way, as an
//! event of its own.
//!
//! Rows are announced after the commit through the [`OutboxSignal`]
//! ([`ServiceEventEmitter::rows_committed`]), so a dispatcher is never woken for rows that
//! do not exist, and the commit itself takes no notification lock.

use async_trait::async_trait;
use picloud_shared::{ServiceError, ServiceEvent, ServiceEventEmitter};
use uuid::Uuid;

use super::{DeliveryBudget, MAX_DELIVERIES_PER_RUN, OutboxSignal, PgTx, refused_at_depth};
use crate::db::db_error;
use crate::dead_letters::insert_dead_letter;
use crate::triggers::{Target, kinds};

/// Writes the outbox rows of events in the caller's transaction, refuses events past the
/// trigger depth limit, and announces committed rows.
#[derive(Debug, Clone)]
pub struct OutboxEmitter {
    max_depth: u32,
    signal: OutboxSignal,
    budget: DeliveryBudget,
}

impl OutboxEmitter {
    /// An emitter refusing events deeper than `max_depth` (`PICLOUD_MAX_TRIGGER_DEPTH`)
    /// and announcing committed rows through `signal`.
    pub fn new(max_depth: u32, signal: OutboxSignal) -> Self {
        Self {
            max_depth,
            signal,
            budget: DeliveryBudget::new(MAX_DELIVERIES_PER_RUN),
        }
    }

    /// The same, letting one run queue at most `deliveries` trigger deliveries in all
    /// (tests use a small budget; [`MAX_DELIVERIES_PER_RUN`] otherwise).
    pub fn with_deliveries_per_run(mut self, deliveries: u64) -> Self {
        self.budget = DeliveryBudget::new(deliveries);
        self
    }

    /// The signal committed rows are announced through.
    pub fn signal(&self) -> &OutboxSignal {
        &self.signal
    }
}

#[async_trait]
impl ServiceEventEmitter<PgTx> for OutboxEmitter {
    #[tracing::instrument(skip_all, fields(app_id = %event.app_id, kind = %event.subject.kind(), depth = event.depth))]
    async fn emit(&self, tx: &mut PgTx, event: &ServiceEvent) -> Result<u64, ServiceError> {
        let doing = "emitting an event";
        let targets = kinds::targets(tx, event.app_id, &event.subject)
            .await
            .map_err(|err| err.into_service_error(doing))?;
        if targets.is_empty() {
            return Ok(0);
        }
        if let Some(refused) = refused_at_depth(event, self.max_depth, targets.len()) {
            insert_dead_letter(tx, &refused)
                .await
                .map_err(|err| err.into_service_error(doing))?;
            return Ok(0);
        }
        self.budget.charge(event, targets.len())?;
        let written = insert_rows(tx, event, &targets)
            .await
            .map_err(|err| db_error(err).into_service_error(doing))?;
        tracing::debug!(rows = written, "event written to the outbox");
        Ok(written)
    }

    fn rows_committed(&self) {
        self.signal.rows_committed();
    }
}

/// The `depth` column is an `integer` with CHECK `depth >= 1`.
fn depth_column(depth: u32) -> i32 {
    i32::try_from(depth.max(1)).unwrap_or(i32::MAX)
}

/// Inserts one due outbox row per target, all carrying `event`'s payload with the row's own
/// id as `id`: the delivery's id, kept in the event, so it stays the same on every retry
/// and on a replay (whose new row copies the event), which a script can record to act
/// once per event; and, for a dead letter, its id, so the handler's outcome
/// can resolve it.
async fn insert_rows(
    tx: &mut PgTx,
    event: &ServiceEvent,
    targets: &[Target],
) -> Result<u64, sqlx::Error> {
    let ids: Vec<Uuid> = targets.iter().map(|_| Uuid::now_v7()).collect();
    let triggers: Vec<Uuid> = targets.iter().map(|t| t.trigger_id.as_uuid()).collect();
    let scripts: Vec<Uuid> = targets.iter().map(|t| t.script_id.as_uuid()).collect();
    let written = sqlx::query(
        "INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth, dead_letter_id) \
         SELECT id, $4, trigger_id, script_id, $5 || jsonb_build_object('id', id), $6, $7 \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS m(id, trigger_id, script_id)",
    )
    .bind(&ids)
    .bind(&triggers)
    .bind(&scripts)
    .bind(event.app_id.as_uuid())
    .bind(event.payload())
    .bind(depth_column(event.depth))
    .bind(event.subject.dead_letter_id().map(|id| id.as_uuid()))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(written)
}

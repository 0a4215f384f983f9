//! The outbox in memory, for tests that need no database: [`InMemoryOutbox`] fans events
//! out to the in-memory triggers with the same matcher the PostgreSQL emitter uses, and
//! keeps the rows it would have written; [`InMemoryTx`] stands in for a transaction.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use picloud_shared::{
    DeadLetterId, ScriptId, ServiceError, ServiceEvent, ServiceEventEmitter, Transaction, TriggerId,
};
use serde_json::Value;

use super::refused_at_depth;
use super::{DeliveryBudget, MAX_DELIVERIES_PER_RUN};
use crate::dead_letters::InMemoryDeadLetterRepository;
use crate::memory::lock;
use crate::triggers::InMemoryTriggerRepository;

type Staged = Box<dyn FnOnce() + Send>;

/// A transaction in memory: the changes staged in it are applied, in order, when it
/// commits; dropping it uncommitted applies none, as a rollback would.
#[derive(Default)]
pub struct InMemoryTx {
    staged: Vec<Staged>,
}

impl fmt::Debug for InMemoryTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryTx")
            .field("staged", &self.staged.len())
            .finish()
    }
}

impl InMemoryTx {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages a change, applied at commit.
    pub fn stage(&mut self, change: impl FnOnce() + Send + 'static) {
        self.staged.push(Box::new(change));
    }
}

#[async_trait]
impl Transaction for InMemoryTx {
    async fn commit(self) -> Result<(), ServiceError> {
        for change in self.staged {
            change();
        }
        Ok(())
    }
}

/// A row the in-memory outbox holds: what PostgreSQL's `outbox` table would.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The trigger it is for.
    pub trigger_id: TriggerId,
    /// The script it runs.
    pub script_id: ScriptId,
    /// The payload the script sees as `ctx.event`, with the row's id as `id`.
    pub event: Value,
    /// The event's depth.
    pub depth: u32,
    /// For a dead-letter handler's delivery: the dead letter.
    pub dead_letter_id: Option<DeadLetterId>,
}

/// The emitter and outbox in memory.
#[derive(Debug)]
pub struct InMemoryOutbox {
    triggers: Arc<InMemoryTriggerRepository>,
    dead_letters: Arc<InMemoryDeadLetterRepository>,
    max_depth: u32,
    rows: Arc<Mutex<Vec<OutboxRow>>>,
    announcements: AtomicU64,
    budget: DeliveryBudget,
}

impl InMemoryOutbox {
    /// An outbox fanning events out to `triggers`, refusing those deeper than `max_depth`
    /// into `dead_letters`.
    pub fn new(
        triggers: Arc<InMemoryTriggerRepository>,
        dead_letters: Arc<InMemoryDeadLetterRepository>,
        max_depth: u32,
    ) -> Self {
        Self {
            triggers,
            dead_letters,
            max_depth,
            rows: Arc::default(),
            announcements: AtomicU64::new(0),
            budget: DeliveryBudget::new(MAX_DELIVERIES_PER_RUN),
        }
    }

    /// The same, letting one run queue at most `deliveries` trigger deliveries in all.
    pub fn with_deliveries_per_run(mut self, deliveries: u64) -> Self {
        self.budget = DeliveryBudget::new(deliveries);
        self
    }

    /// Every committed row, oldest first.
    pub fn rows(&self) -> Vec<OutboxRow> {
        lock(&self.rows).clone()
    }

    /// Forgets every row, as if a dispatcher had delivered them all.
    pub fn clear(&self) {
        lock(&self.rows).clear();
    }

    /// How many times committed rows were announced.
    pub fn announcements(&self) -> u64 {
        self.announcements.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ServiceEventEmitter<InMemoryTx> for InMemoryOutbox {
    async fn emit(&self, tx: &mut InMemoryTx, event: &ServiceEvent) -> Result<u64, ServiceError> {
        let targets = self.triggers.targets_now(event.app_id, &event.subject);
        if targets.is_empty() {
            return Ok(0);
        }
        if let Some(refused) = refused_at_depth(event, self.max_depth, targets.len()) {
            let dead_letters = Arc::clone(&self.dead_letters);
            tx.stage(move || {
                // The app exists: the change being committed belongs to it.
                let _recorded = dead_letters.record_now(refused);
            });
            return Ok(0);
        }
        self.budget.charge(event, targets.len())?;
        let payload = event.payload();
        let new_rows: Vec<OutboxRow> = targets
            .iter()
            .map(|target| OutboxRow {
                trigger_id: target.trigger_id,
                script_id: target.script_id,
                event: {
                    let mut event = payload.clone();
                    event["id"] = serde_json::json!(uuid::Uuid::now_v7());
                    event
                },
                depth: event.depth,
                dead_letter_id: event.subject.dead_letter_id(),
            })
            .collect();
        let written = u64::try_from(new_rows.len()).unwrap_or(u64::MAX);
        let rows = Arc::clone(&self.rows);
        tx.stage(move || lock(&rows).extend(new_rows));
        Ok(written)
    }

    fn rows_committed(&self) {
        self.announcements.fetch_add(1, Ordering::Relaxed);
    }
}

/// An emitter for tests of a service alone: remembers every event emitted, writes no rows
/// (so there is never anything to announce). Works for both stores' transactions.
#[derive(Debug, Default)]
pub struct RecordingEmitter {
    events: Mutex<Vec<ServiceEvent>>,
}

impl RecordingEmitter {
    /// Every event emitted so far, oldest first, rolled back or not.
    pub fn events(&self) -> Vec<ServiceEvent> {
        lock(&self.events).clone()
    }

    fn record(&self, event: &ServiceEvent) -> Result<u64, ServiceError> {
        lock(&self.events).push(event.clone());
        Ok(0)
    }
}

#[async_trait]
impl ServiceEventEmitter<InMemoryTx> for RecordingEmitter {
    async fn emit(&self, _tx: &mut InMemoryTx, event: &ServiceEvent) -> Result<u64, ServiceError> {
        self.record(event)
    }

    fn rows_committed(&self) {}
}

#[async_trait]
impl ServiceEventEmitter<super::PgTx> for RecordingEmitter {
    async fn emit(&self, _tx: &mut super::PgTx, event: &ServiceEvent) -> Result<u64, ServiceError> {
        self.record(event)
    }

    fn rows_committed(&self) {}
}

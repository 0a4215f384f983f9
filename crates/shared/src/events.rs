//! Events services emit when data changes, and the seam they emit through. Each event is
//! written to the outbox in the same transaction as the change (transactional outbox), once
//! per matching trigger: [`ServiceEventEmitter`] writes the rows, and [`UnitOfWork`] is the
//! one place the sequence change → emit → commit → announce is written.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    AppId, DeadLetterId, ExecutionId, FileOp, ScriptId, ServiceError, TriggerId, TriggerKind,
};

/// A change to a KV entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KvOp {
    /// A key was written (created or replaced).
    Set,
    /// A key was deleted.
    Delete,
}

impl KvOp {
    /// The op's stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Delete => "delete",
        }
    }
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSubject {
    /// A KV entry.
    Kv {
        /// Its collection.
        collection: String,
        /// Its key.
        key: String,
        /// Set or delete.
        op: KvOp,
        /// The new value (`None` for a delete).
        value: Option<Value>,
    },
    /// A file.
    Files {
        /// Its collection.
        collection: String,
        /// Its name.
        name: String,
        /// Create, update or delete.
        op: FileOp,
        /// Its metadata as stored by the change (`None` for a delete); never its bytes.
        file: Option<Value>,
    },
    /// A delivery failed for good and became a dead letter.
    DeadLetter {
        /// The dead letter.
        dead_letter_id: DeadLetterId,
        /// The kind of the trigger whose delivery failed; `dead_letter` triggers choose the
        /// kinds they handle.
        source_kind: TriggerKind,
        /// That trigger (`None` once it was deleted).
        trigger_id: Option<TriggerId>,
        /// The script that failed.
        script_id: Option<ScriptId>,
        /// The failed event, as its script saw it.
        event: Value,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last_error: String,
    },
}

impl EventSubject {
    /// The trigger kind whose triggers this event can match.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Self::Kv { .. } => TriggerKind::Kv,
            Self::Files { .. } => TriggerKind::Files,
            Self::DeadLetter { .. } => TriggerKind::DeadLetter,
        }
    }

    /// The dead letter a delivery of this event handles, for a dead-letter event.
    pub fn dead_letter_id(&self) -> Option<DeadLetterId> {
        match self {
            Self::DeadLetter { dead_letter_id, .. } => Some(*dead_letter_id),
            Self::Kv { .. } | Self::Files { .. } => None,
        }
    }
}

/// One event a service emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEvent {
    /// The app whose data changed; only that app's triggers can match.
    pub app_id: AppId,
    /// What changed.
    pub subject: EventSubject,
    /// The emitting run's depth + 1 (1 for a change made over the admin API or by an HTTP
    /// run); past `PICLOUD_MAX_TRIGGER_DEPTH` the event is refused, visibly.
    pub depth: u32,
    /// The run whose change caused the event, when a script made it.
    pub causation_id: Option<ExecutionId>,
}

impl ServiceEvent {
    /// The payload a triggered script sees as `ctx.event`.
    pub fn payload(&self) -> Value {
        let mut payload = match &self.subject {
            EventSubject::Kv {
                collection,
                key,
                op,
                value,
            } => json!({
                "kind": "kv",
                "collection": collection,
                "key": key,
                "op": op.as_str(),
                "value": value,
            }),
            EventSubject::Files {
                collection,
                name,
                op,
                file,
            } => json!({
                "kind": "files",
                "collection": collection,
                "name": name,
                "op": op.as_str(),
                "file": file,
            }),
            EventSubject::DeadLetter {
                dead_letter_id,
                source_kind,
                trigger_id,
                script_id,
                event,
                attempts,
                last_error,
            } => json!({
                "kind": "dead_letter",
                "dead_letter_id": dead_letter_id,
                "source_kind": source_kind,
                "trigger_id": trigger_id,
                "script_id": script_id,
                "event": event,
                "attempts": attempts,
                "last_error": last_error,
            }),
        };
        payload["app_id"] = json!(self.app_id);
        payload["depth"] = json!(self.depth);
        payload["causation_id"] = json!(self.causation_id);
        payload
    }
}

/// Writes the outbox rows of events inside the transaction `Tx` that makes the change: one
/// row per matching enabled trigger of the event's app, found by the trigger kind's own
/// matcher. `Tx` is the store's transaction (a PostgreSQL transaction, or the in-memory
/// stand-in), so this seam knows nothing of any driver.
#[async_trait]
pub trait ServiceEventEmitter<Tx: Send>: Send + Sync {
    /// Emits `event` inside `tx`; returns how many outbox rows were written (0 when no
    /// trigger matches, which is a silent success). An event past the depth limit writes
    /// no rows and is recorded where an operator sees it.
    async fn emit(&self, tx: &mut Tx, event: &ServiceEvent) -> Result<u64, ServiceError>;

    /// Called once the transaction in which `emit` wrote rows has committed: wakes the
    /// dispatchers. Never called for a transaction that rolled back or wrote no rows.
    fn rows_committed(&self);
}

/// A store's transaction, as far as [`UnitOfWork`] needs it. Dropping it uncommitted
/// rolls it back.
#[async_trait]
pub trait Transaction: Send {
    /// Makes every change made in it, and every outbox row written in it, durable at once.
    async fn commit(self) -> Result<(), ServiceError>;
}

/// A change in progress: a transaction and the emitter its events go through. Every
/// service writes its data through [`Self::tx`], emits with [`Self::emit`] and ends with
/// [`Self::commit`], which announces the rows only after they committed; dropping it
/// instead rolls everything back, data and rows alike.
pub struct UnitOfWork<'e, Tx: Transaction> {
    tx: Tx,
    emitter: &'e dyn ServiceEventEmitter<Tx>,
    rows: u64,
}

impl<Tx: Transaction> std::fmt::Debug for UnitOfWork<'_, Tx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<'e, Tx: Transaction> UnitOfWork<'e, Tx> {
    /// A unit over an open transaction.
    pub fn new(tx: Tx, emitter: &'e dyn ServiceEventEmitter<Tx>) -> Self {
        Self {
            tx,
            emitter,
            rows: 0,
        }
    }

    /// The transaction, for the service's own writes.
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// Writes `event`'s outbox rows in this unit's transaction; a failure fails the change
    /// (the caller drops the unit, which rolls it back).
    pub async fn emit(&mut self, event: &ServiceEvent) -> Result<(), ServiceError> {
        self.rows += self.emitter.emit(&mut self.tx, event).await?;
        Ok(())
    }

    /// Commits the change and its outbox rows together, then wakes the dispatchers if
    /// there are rows.
    pub async fn commit(self) -> Result<(), ServiceError> {
        self.tx.commit().await?;
        if self.rows > 0 {
            self.emitter.rows_committed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A transaction that reports whether it committed.
    struct FakeTx(Arc<Mutex<bool>>);

    #[async_trait]
    impl Transaction for FakeTx {
        async fn commit(self) -> Result<(), ServiceError> {
            *self.0.lock().unwrap() = true;
            Ok(())
        }
    }

    /// Writes `rows` rows per event, or fails; counts announcements.
    struct FakeEmitter {
        rows: Option<u64>,
        announced: AtomicU32,
    }

    #[async_trait]
    impl ServiceEventEmitter<FakeTx> for FakeEmitter {
        async fn emit(&self, _tx: &mut FakeTx, _event: &ServiceEvent) -> Result<u64, ServiceError> {
            self.rows
                .ok_or_else(|| ServiceError::Unavailable("the outbox is down".to_owned()))
        }

        fn rows_committed(&self) {
            self.announced.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn event() -> ServiceEvent {
        ServiceEvent {
            app_id: AppId::new(),
            subject: EventSubject::Kv {
                collection: "c".into(),
                key: "k".into(),
                op: KvOp::Delete,
                value: None,
            },
            depth: 1,
            causation_id: None,
        }
    }

    async fn run(rows: Option<u64>, commit: bool) -> (bool, u32, Result<(), ServiceError>) {
        let committed = Arc::new(Mutex::new(false));
        let emitter = FakeEmitter {
            rows,
            announced: AtomicU32::new(0),
        };
        let mut unit = UnitOfWork::new(FakeTx(Arc::clone(&committed)), &emitter);
        let mut outcome = unit.emit(&event()).await;
        if outcome.is_ok() && commit {
            outcome = unit.commit().await;
        } else {
            drop(unit);
        }
        let committed = *committed.lock().unwrap();
        (committed, emitter.announced.load(Ordering::SeqCst), outcome)
    }

    #[tokio::test]
    async fn a_unit_announces_its_rows_only_after_it_committed_them() {
        assert_eq!(run(Some(2), true).await, (true, 1, Ok(())));
        // No rows: committed, nothing to announce.
        assert_eq!(run(Some(0), true).await, (true, 0, Ok(())));
        // Dropped: neither committed nor announced.
        assert_eq!(run(Some(2), false).await, (false, 0, Ok(())));
        // A failed emit fails the change, which the caller then drops.
        let (committed, announced, outcome) = run(None, true).await;
        assert!(!committed);
        assert_eq!(announced, 0);
        assert_eq!(
            outcome,
            Err(ServiceError::Unavailable("the outbox is down".to_owned()))
        );
    }

    #[test]
    fn the_dead_letter_payload_names_the_failure_and_carries_the_event() {
        let app = AppId::new();
        let dead_letter_id = DeadLetterId::new();
        let trigger_id = TriggerId::new();
        let event = ServiceEvent {
            app_id: app,
            subject: EventSubject::DeadLetter {
                dead_letter_id,
                source_kind: TriggerKind::Kv,
                trigger_id: Some(trigger_id),
                script_id: None,
                event: json!({ "kind": "kv", "key": "ada" }),
                attempts: 5,
                last_error: "boom".into(),
            },
            depth: 3,
            causation_id: None,
        };
        assert_eq!(event.subject.kind(), TriggerKind::DeadLetter);
        assert_eq!(event.subject.dead_letter_id(), Some(dead_letter_id));
        assert_eq!(
            event.payload(),
            json!({
                "kind": "dead_letter", "dead_letter_id": dead_letter_id, "source_kind": "kv",
                "trigger_id": trigger_id, "script_id": null,
                "event": { "kind": "kv", "key": "ada" }, "attempts": 5, "last_error": "boom",
                "app_id": app, "depth": 3, "causation_id": null,
            })
        );
    }

    #[test]
    fn the_kv_payload_carries_everything_a_handler_needs() {
        let app = AppId::new();
        let cause = ExecutionId::new();
        let event = ServiceEvent {
            app_id: app,
            subject: EventSubject::Kv {
                collection: "users".into(),
                key: "ada".into(),
                op: KvOp::Set,
                value: Some(json!({ "age": 36 })),
            },
            depth: 2,
            causation_id: Some(cause),
        };
        assert_eq!(
            event.payload(),
            json!({
                "kind": "kv", "collection": "users", "key": "ada", "op": "set",
                "value": { "age": 36 }, "app_id": app, "depth": 2, "causation_id": cause,
            })
        );
    }
}

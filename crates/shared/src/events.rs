//! Events services emit when data changes. Each is written to the outbox in the same
//! database transaction as the change (transactional outbox), once per matching trigger.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{AppId, ExecutionId};

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
        };
        payload["app_id"] = json!(self.app_id);
        payload["depth"] = json!(self.depth);
        payload["causation_id"] = json!(self.causation_id);
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

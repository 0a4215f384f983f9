//! The transactional outbox's write side over PostgreSQL: [`OutboxEmitter`] turns a
//! service's event into one outbox row per matching enabled trigger inside the service's
//! own transaction, and [`fan_out_dead_letter`] does the same for a new dead letter and the
//! app's `dead_letter` triggers.
//!
//! A service's rows are announced after its commit through the [`OutboxSignal`]
//! ([`ServiceEventEmitter::rows_committed`]), so a dispatcher is never woken for rows that
//! do not exist, and the commit itself takes no notification lock. Dead-letter fan-out, a
//! rare path inside the dispatcher's own transaction, notifies in that transaction.

use async_trait::async_trait;
use picloud_shared::{
    AppId, DeadLetterId, EventSubject, KvOp, ScriptId, ServiceEvent, TriggerId, TriggerKind,
    collection_matches,
};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::db_error;
use crate::dead_letters::insert_dead_letter;
use crate::outbox::OUTBOX_CHANNEL;
use crate::outbox::OutboxSignal;
use crate::outbox::ServiceEventEmitter;
use crate::{dead_letters::NewDeadLetter, repository::RepoResult};

/// Writes the outbox rows of service events, in the caller's transaction, refuses events
/// past the trigger depth limit, and announces committed rows.
#[derive(Debug, Clone)]
pub struct OutboxEmitter {
    max_depth: u32,
    signal: OutboxSignal,
}

impl OutboxEmitter {
    /// An emitter refusing events deeper than `max_depth` (`PICLOUD_MAX_TRIGGER_DEPTH`)
    /// and announcing committed rows through `signal`.
    pub fn new(max_depth: u32, signal: OutboxSignal) -> Self {
        Self { max_depth, signal }
    }

    /// The depth limit.
    pub fn max_depth(&self) -> u32 {
        self.max_depth
    }
}

/// A candidate KV trigger of the event's app, matched in Rust with the same
/// `collection_matches` every other layer uses.
#[derive(sqlx::FromRow)]
struct KvCandidate {
    id: Uuid,
    script_id: Uuid,
    collection_glob: String,
    ops: Vec<String>,
}

#[async_trait]
impl ServiceEventEmitter for OutboxEmitter {
    #[tracing::instrument(skip_all, fields(app_id = %event.app_id, depth = event.depth))]
    async fn emit(&self, tx: &mut PgConnection, event: &ServiceEvent) -> RepoResult<u64> {
        let EventSubject::Kv { collection, op, .. } = &event.subject;
        // KEY SHARE keeps the matched triggers from being deleted before this transaction
        // ends (their outbox rows reference them), without blocking enable/disable.
        let candidates: Vec<KvCandidate> = sqlx::query_as(
            "SELECT t.id, t.script_id, d.collection_glob, d.ops \
             FROM triggers t JOIN kv_trigger_details d ON d.trigger_id = t.id \
             WHERE t.app_id = $1 AND t.kind = 'kv' AND t.enabled \
             ORDER BY t.created_at, t.id \
             FOR KEY SHARE OF t",
        )
        .bind(event.app_id.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let matched: Vec<&KvCandidate> = candidates
            .iter()
            .filter(|c| watches(c, collection, *op))
            .collect();
        if matched.is_empty() {
            return Ok(0);
        }
        let payload = event.payload();
        if event.depth > self.max_depth {
            // A trigger loop (or a very long chain): refuse visibly, as one unresolved dead
            // letter the dashboard badge counts, while the data change itself commits.
            let last_error = format!("trigger depth limit of {} reached", self.max_depth);
            tracing::warn!(
                app_id = %event.app_id,
                depth = event.depth,
                max_depth = self.max_depth,
                triggers = matched.len(),
                "event refused at the trigger depth limit"
            );
            insert_dead_letter(
                tx,
                &NewDeadLetter {
                    app_id: event.app_id,
                    trigger_id: None,
                    trigger_kind: TriggerKind::Kv,
                    script_id: None,
                    event: payload,
                    depth: event.depth,
                    attempts: 0,
                    last_error,
                },
            )
            .await?;
            return Ok(0);
        }
        let targets: Vec<(Uuid, Uuid)> = matched.iter().map(|c| (c.id, c.script_id)).collect();
        let written = insert_rows(tx, event.app_id, &targets, &payload, event.depth, None).await?;
        tracing::debug!(app_id = %event.app_id, rows = written, "event written to the outbox");
        Ok(written)
    }

    fn rows_committed(&self) {
        self.signal.rows_committed();
    }
}

fn watches(candidate: &KvCandidate, collection: &str, op: KvOp) -> bool {
    candidate.ops.iter().any(|o| o == op.as_str())
        && collection_matches(&candidate.collection_glob, collection)
}

/// The `depth` column is an `integer` with CHECK `depth >= 1`.
fn depth_column(depth: u32) -> i32 {
    i32::try_from(depth.max(1)).unwrap_or(i32::MAX)
}

/// Inserts one due outbox row per `(trigger, script)` target, all carrying `event`; writes
/// nothing for no targets.
async fn insert_rows(
    conn: &mut PgConnection,
    app: AppId,
    targets: &[(Uuid, Uuid)],
    event: &Value,
    depth: u32,
    dead_letter_id: Option<Uuid>,
) -> RepoResult<u64> {
    if targets.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = targets.iter().map(|_| Uuid::now_v7()).collect();
    let (triggers, scripts): (Vec<Uuid>, Vec<Uuid>) = targets.iter().copied().unzip();
    let written = sqlx::query(
        "INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth, dead_letter_id) \
         SELECT id, $4, trigger_id, script_id, $5, $6, $7 \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS m(id, trigger_id, script_id)",
    )
    .bind(&ids)
    .bind(&triggers)
    .bind(&scripts)
    .bind(app.as_uuid())
    .bind(event)
    .bind(depth_column(depth))
    .bind(dead_letter_id)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?
    .rows_affected();
    Ok(written)
}

/// Wakes the dispatchers when the transaction commits.
async fn notify(conn: &mut PgConnection) -> RepoResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Fans a new dead letter out to the `dead_letter` triggers of `app` that handle
/// `source_kind`: one outbox row each, in the caller's transaction, with `dead_letter_id`
/// set so that the handler's outcome can resolve it, and `payload` as the event
/// (`{"kind": "dead_letter", "dead_letter_id", "trigger_id", "script_id", "event",
/// "attempts", "last_error"}`, see [`dead_letter_payload`]). Returns how many rows were
/// written; kinds whose dead letters never fan out (a failed handler's) write none.
pub async fn fan_out_dead_letter(
    conn: &mut PgConnection,
    dead_letter_id: Uuid,
    app: AppId,
    source_kind: TriggerKind,
    depth: u32,
    payload: &Value,
) -> RepoResult<u64> {
    if !source_kind.dead_letters_fan_out() {
        return Ok(0);
    }
    // KEY SHARE, as in `emit`: a handler cannot vanish before the rows naming it commit.
    let handlers: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT t.id, t.script_id FROM triggers t \
         JOIN dead_letter_trigger_details d ON d.trigger_id = t.id \
         WHERE t.app_id = $1 AND t.kind = 'dead_letter' AND t.enabled \
           AND $2 = ANY (d.source_kinds) \
         ORDER BY t.created_at, t.id \
         FOR KEY SHARE OF t",
    )
    .bind(app.as_uuid())
    .bind(source_kind.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let written = insert_rows(conn, app, &handlers, payload, depth, Some(dead_letter_id)).await?;
    if written == 0 {
        return Ok(0);
    }
    notify(conn).await?;
    tracing::info!(
        %dead_letter_id,
        app_id = %app,
        handlers = written,
        "dead letter handed to dead-letter triggers"
    );
    Ok(written)
}

/// The event a `dead_letter` trigger's script sees as `ctx.event` for a dead letter.
pub fn dead_letter_payload(
    dead_letter_id: DeadLetterId,
    trigger_id: Option<TriggerId>,
    script_id: Option<ScriptId>,
    event: &Value,
    attempts: u32,
    last_error: &str,
) -> Value {
    serde_json::json!({
        "kind": "dead_letter",
        "dead_letter_id": dead_letter_id,
        "trigger_id": trigger_id,
        "script_id": script_id,
        "event": event,
        "attempts": attempts,
        "last_error": last_error,
    })
}
